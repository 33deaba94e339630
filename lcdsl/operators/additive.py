"""The additive combination ``A + B + …``: Δ(θ) = Σ_i Δ_i(θ_i), solved by alternating C steps.

Not registered as an operator: the plan builder makes an :class:`Additive` for a rule whose
right-hand side is a sum. It composes like ``optax.chain``: each term stays a plain operator.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from lcdsl.operators.base import Operator, Storage, Theta, ViewKind
from lcdsl.operators.units import int_at_least
from lcdsl.operators.view import View

__all__ = ["Additive", "additive_project", "term_shape", "RELATIVE_TOLERANCE"]

RELATIVE_TOLERANCE = 1e-9
"""The alternation stops when a round lowers the distortion by less than this fraction."""


def term_shape(view: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a term of ``view`` sees when the combination's view has ``shape``."""
    return View(view, (shape,)).shape  # type: ignore[arg-type]


def _term_views(terms: tuple[Operator, ...], shape: tuple[int, ...]) -> list[View]:
    """Each term's view of the combination's view-shaped tensor (of ``shape``)."""
    return [View.of(t, (shape,)) for t in terms]


def _split(theta: Theta, count: int) -> list[Theta] | None:
    """A flat ``{"0.codebook": …, "1.indices": …}`` as one dict per term; None if a term is missing."""
    parts: list[Theta] = [{} for _ in range(count)]
    for key, value in theta.items():
        head, _, rest = key.partition(".")
        if not head.isdigit() or int(head) >= count or not rest:
            return None
        parts[int(head)][rest] = value
    return parts if all(parts) else None


def _join(parts: list[Theta]) -> Theta:
    return {f"{i}.{key}": value for i, part in enumerate(parts) for key, value in part.items()}


def _distortion(w: torch.Tensor, total: torch.Tensor) -> float:
    return float(torch.sum((w - total).to(torch.float64).square()))


def additive_project(
    terms: tuple[Operator, ...],
    w: torch.Tensor,
    mu: float = 0.0,
    warm: Theta | None = None,
    rounds: int = 10,
) -> tuple[Theta, list[float]]:
    """Alternating C steps for Δ(θ) = Σ_i Δ_i(θ_i): θ_i = P_i(w − Σ_{j≠i} Δ_j(θ_j)), term by term.

    Starts from ``warm`` (a previous flat θ) when it holds every term, else from all-zero terms;
    runs at most ``rounds`` rounds and stops when a round lowers the distortion ‖w − Δ(θ)‖² by
    less than :data:`RELATIVE_TOLERANCE` of its value. Each step solves its term exactly, so for
    constraint terms the distortion never increases; with penalty terms the quantity that never
    increases is the distortion plus the penalties.

    Args:
        terms: the operators, each resolved for its own view of ``w``.
        w: the target, in the combination's view.
        mu: passed to every term (penalty forms use it).
        warm: the previous θ (keys ``"<term>.<name>"``), or None.
        rounds: the most rounds.

    Returns:
        The flat θ, and the distortion before the first round followed by the distortion after
        each round (float64 sums, as Python floats).
    """
    views = _term_views(terms, tuple(w.shape))
    parts = _split(warm, len(terms)) if warm else None
    if parts is not None:
        deltas = [v.split(t.decompress(p, v.shape))[0].to(w.dtype) for t, p, v in zip(terms, parts, views)]
    else:
        parts = [None] * len(terms)  # type: ignore[list-item]
        deltas = [torch.zeros_like(w) for _ in terms]
    total = torch.stack(deltas).sum(0) if len(deltas) > 1 else deltas[0].clone()  # shape of w
    trace = [_distortion(w, total)]
    for _ in range(rounds):
        for i, (term, view) in enumerate(zip(terms, views)):
            others = total - deltas[i]
            target = view.gather([w - others])  # the term's view of the residual
            parts[i] = term.project(target, mu=mu, warm=parts[i])
            deltas[i] = view.split(term.decompress(parts[i], view.shape))[0].to(w.dtype)  # shape of w
            total = others + deltas[i]
        trace.append(_distortion(w, total))
        before, after = trace[-2], trace[-1]
        if before - after <= RELATIVE_TOLERANCE * before:
            break
    return _join(parts), trace


def _check_terms(instance: Any, attribute: Any, value: Any) -> None:
    if not value:
        raise ValueError("an additive combination needs at least one term")
    for term in value:
        if not isinstance(term, Operator):
            raise TypeError(f"every term must be an Operator, got {type(term).__name__}")


@attrs.frozen
class Additive(Operator):
    """argmin_{θ_1…θ_T} ‖w − Σ_i Δ_i(θ_i)‖² (+ the terms' penalties): alternating exact C steps.

    Not a projection: each round solves every term exactly given the others (block coordinate
    descent), so the distortion never increases, and once the alternation has converged (a round
    gains less than :data:`RELATIVE_TOLERANCE`) each term is optimal given the others; the joint
    optimum is not guaranteed, and some combinations (several sparse terms beside a low-rank one)
    converge slowly, so ``rounds`` may end the alternation first. ``θ`` is one flat dict whose keys carry the
    term's index: ``"0.indices"``, ``"1.U"``, …

    The view is ``"tensor"`` if any term needs the tensor's own shape (structured pruning), else
    ``"matrix"`` if any term needs a matrix, else ``"vector"``; each term gets the target
    reshaped to its own view (flattened for vector terms, ``(out, in·kh·kw)`` for matrix terms)
    and its Δ is reshaped back.
    """

    name: ClassVar[str] = "additive"

    terms: tuple[Operator, ...] = attrs.field(converter=tuple, validator=_check_terms)
    """The operators added together, in the order they are solved."""
    rounds: int = attrs.field(default=10, validator=int_at_least(1))
    """Most alternation rounds per C step."""

    @property
    def view(self) -> ViewKind:  # type: ignore[override]
        """The most shaped view any term needs: tensor, then matrix, then vector."""
        views = {t.view for t in self.terms}
        for view in ("tensor", "matrix"):
            if view in views:
                return view  # type: ignore[return-value]
        return "vector"

    @property
    def penalty_form(self) -> bool:
        """True when any term is a penalty form (the sum's answer then depends on μ)."""
        return any(t.penalty_form for t in self.terms)

    def resolve(self, shape: tuple[int, ...]) -> Additive:
        """Every term resolved against its view of the same task."""
        views = _term_views(self.terms, tuple(shape))
        return attrs.evolve(self, terms=tuple(t.resolve(v.shape) for t, v in zip(self.terms, views)))

    def axes(self, shape: tuple[int, ...]) -> str | None:
        """The terms' notes (:meth:`Operator.axes`), joined by ``; ``; None if no term has one."""
        notes = [t.axes(v.shape) for t, v in zip(self.terms, _term_views(self.terms, tuple(shape)))]
        return "; ".join(n for n in notes if n) or None

    def chosen(self, theta: Theta, shape: tuple[int, ...]) -> str | None:
        """The terms' words (:meth:`Operator.chosen`), joined by `` + ``; None if no term has any."""
        parts = _split(theta, len(self.terms)) or []
        words = [t.chosen(p, v.shape) for t, p, v in zip(self.terms, parts, _term_views(self.terms, tuple(shape)))]
        return " + ".join(w for w in words if w) or None

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """The flat θ of :func:`additive_project`."""
        theta, _ = additive_project(self.terms, w, mu=mu, warm=warm, rounds=self.rounds)
        return theta

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """Every term's θ (keys ``i.key``) checked by that term."""
        parts = _split(theta, len(self.terms))
        if parts is None:
            raise ValueError(f"θ does not hold every term of {len(self.terms)}: keys {sorted(theta)}")
        for i, (term, part, view) in enumerate(zip(self.terms, parts, _term_views(self.terms, tuple(shape)))):
            try:
                term.check_theta(part, view.shape)
            except ValueError as exc:
                raise ValueError(f"term {i}: {exc}") from None

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """Σ_i Δ_i(θ_i), of ``shape``."""
        shape = tuple(shape)
        parts = _split(theta, len(self.terms))
        if parts is None:
            raise ValueError(f"θ does not hold every term of {len(self.terms)}: keys {sorted(theta)}")
        out = None
        for term, part, view in zip(self.terms, parts, _term_views(self.terms, shape)):
            delta = view.split(term.decompress(part, view.shape))[0]  # of shape
            out = delta if out is None else out + delta
        return out

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage | None:
        """The sum of the terms' sizes; None if any term cannot tell."""
        shape = tuple(shape)
        parts = _split(theta, len(self.terms)) if theta is not None else [None] * len(self.terms)
        if parts is None:
            raise ValueError(f"θ does not hold every term of {len(self.terms)}: keys {sorted(theta)}")
        total = Storage(0, 0)
        for term, part, view in zip(self.terms, parts, _term_views(self.terms, shape)):
            size = term.storage(view.shape, part)
            if size is None:
                return None
            total = total + size
        return total
