"""Pruning: L0/L1 constraints and penalties on the weights, and structured L0 on groups.

Every form is an exact projection:

- ``prune(l0=κ)``: keep the κ largest magnitudes;
- ``prune(l1=κ)``: Euclidean projection on the L1 ball of radius κ (Duchi et al., 2008);
- ``prune(l0_penalty=α)``: hard threshold ``√(2α/μ)``;
- ``prune(l1_penalty=α)``: soft threshold ``α/μ``;
- ``prune(l0=κ, by=rows|filters|channels)``: keep the κ groups of largest L2 norm.

The two penalty forms keep nothing at μ = 0, the limit μ → 0⁺ (the convention of
:meth:`lcdsl.operators.base.Operator.project`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from lcdsl.operators.base import (
    FLOAT_BITS,
    Operator,
    Storage,
    Theta,
    ViewKind,
    expect,
    expect_codes,
    index_bits,
    position_dtype,
)  # fmt: skip
from lcdsl.operators.units import Amount, check_amount, optional_amount, positive_number, resolve_amount, to_float

__all__ = ["Prune", "OPERATORS", "top_k_mask", "project_l1_ball"]

_FORMS = ("l0", "l1", "l0_penalty", "l1_penalty")
_BY = ("weights", "rows", "filters", "channels")


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A boolean mask of the ``k`` largest entries of the 1-D ``scores``.

    Ties are broken by position (the lower index wins), so the mask is the same on every device
    (``torch.topk`` makes no such promise). O(n): one selection, no sort.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    t = torch.kthvalue(scores, n - k + 1).values  # the k-th largest value
    above = scores > t
    need = k - above.sum()  # how many entries equal to t still fit (≥ 1), as a tensor: no sync
    tied = scores == t
    return above | (tied & (torch.cumsum(tied, 0) <= need))


def _accumulation_dtype(w: torch.Tensor) -> torch.dtype:
    # Sums of many magnitudes lose digits in float32; MPS has no float64.
    return torch.float32 if w.device.type == "mps" else torch.float64


def project_l1_ball(w: torch.Tensor, radius: float) -> torch.Tensor:
    """argmin_θ ‖w − θ‖² s.t. ‖θ‖₁ ≤ radius, for a 1-D ``w`` (exact, sort-based).

    Duchi et al. (2008): with ``u`` the magnitudes sorted in decreasing order and
    ``ρ = max{j : u_j − (Σ_{i≤j} u_i − radius)/j > 0}``, the threshold is
    ``τ = max(0, (Σ_{i≤ρ} u_i − radius)/ρ)`` and ``θ = sign(w)·max(|w| − τ, 0)``. Inside the ball
    τ is clamped to 0, so no branch (and no device sync) is needed. The threshold is computed in
    float64 (float32 on MPS); θ is returned in ``w``'s dtype.
    """
    acc = _accumulation_dtype(w)
    a = w.abs().to(acc)  # (n,)
    u = torch.sort(a, descending=True).values  # (n,)
    css = torch.cumsum(u, 0)  # (n,)
    j = torch.arange(1, a.numel() + 1, device=w.device, dtype=acc)  # (n,)
    cond = u - (css - radius) / j > 0  # true on a prefix
    rho = torch.clamp((cond * j).max(), min=1)  # last j where cond holds
    tau = torch.clamp((css[rho.long() - 1] - radius) / rho, min=0)
    return (torch.sign(w).to(acc) * torch.clamp(a - tau, min=0)).to(w.dtype)


def _positions(keep: torch.Tensor) -> torch.Tensor:
    """The positions of a 1-D mask's true entries, ascending, in :func:`position_dtype` (int32
    below 2³¹ entries)."""
    return torch.nonzero(keep, as_tuple=False).reshape(-1).to(position_dtype(keep.numel()))


def _sparse_theta(dense: torch.Tensor) -> Theta:
    # (n,) → non-zeros: indices ascending (int32 below 2³¹ entries) and their values.
    indices = _positions(dense != 0)  # (nnz,)
    return {"indices": indices, "values": dense[indices]}


def _check_by(instance: Any, attribute: Any, value: Any) -> None:
    if value not in _BY:
        raise ValueError(f"by must be one of {', '.join(_BY)}, got {value!r}")


@attrs.frozen
class Prune(Operator):
    """argmin_θ ‖w − θ‖² s.t. ‖θ‖₀ ≤ κ or ‖θ‖₁ ≤ κ (or + (2α/μ)·‖θ‖₀ or ‖θ‖₁; or κ groups): exact.

    Exactly one of ``l0``, ``l1``, ``l0_penalty``, ``l1_penalty`` is given:

    - ``l0=κ`` (a count, or a fraction of the weights): the κ largest magnitudes, ties broken
      by position (lower index kept) so every device keeps the same set;
    - ``l1=κ`` (the L1-ball radius, a positive real, not a count): Euclidean projection on the
      L1 ball, sort-based (Duchi et al., 2008);
    - ``l0_penalty=α``: argmin ‖w − θ‖² + (2α/μ)·‖θ‖₀, the hard threshold: keep ``w_i`` when
      ``w_i² > 2α/μ`` (α is the loss one kept weight is worth); at μ = 0, the limit μ → 0⁺,
      nothing is kept;
    - ``l1_penalty=α``: argmin ‖w − θ‖² + (2α/μ)·‖θ‖₁, the soft threshold α/μ; at μ = 0
      nothing is kept.

    ``by`` makes ``l0`` structured: keep the κ groups of largest L2 norm, κ a count or a fraction
    of the groups. ``rows`` and ``filters`` are the same groups, the layer's output units
    ``w[i]`` (rows of the ``(out, in·kh·kw)`` matrix); ``channels`` are its input channels
    ``w[:, c]`` (columns of a Linear weight). Structured forms see the tensor with its axes in
    the order ``(out, in, kernel…)`` (view ``"tensor"``, which puts them there from the layer's
    layout: HF ``Conv1D`` stores ``(in, out)``), the others a flat vector: :attr:`view` is a
    property of the instance.

    ``θ`` is ``{"indices": int32 (nnz,), "values": (nnz,)}`` for weights, and for groups
    ``{"indices": int32 (κ,), "values": w.index_select(dim, indices)}`` (indices are ``int64``
    only past 2³¹ positions; :func:`~lcdsl.operators.base.position_dtype`). Storage: non-zeros at
    32 bits plus the cheaper of a bitmask and an index list; groups: kept values at 32 bits plus
    one bit per group.
    """

    name: ClassVar[str] = "prune"

    l0: Amount | None = attrs.field(
        default=None, converter=optional_amount, validator=attrs.validators.optional(check_amount)
    )
    """Keep this many weights (or groups): a count, or a fraction (``5%``, ``0.05``)."""
    l1: float | None = attrs.field(default=None, converter=to_float, validator=attrs.validators.optional(positive_number))
    """Radius of the L1 ball θ must lie in."""
    l0_penalty: float | None = attrs.field(default=None, converter=to_float, validator=attrs.validators.optional(positive_number))
    """α of the penalty α·‖θ‖₀."""
    l1_penalty: float | None = attrs.field(default=None, converter=to_float, validator=attrs.validators.optional(positive_number))
    """α of the penalty α·‖θ‖₁."""
    by: str = attrs.field(default="weights", validator=_check_by)
    """What is kept or dropped: single ``weights``, or whole ``rows``/``filters`` (output units) or
    ``channels`` (input channels)."""

    def __attrs_post_init__(self) -> None:
        given = [f for f in _FORMS if getattr(self, f) is not None]
        if len(given) != 1:
            which = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"prune takes exactly one of l0, l1, l0_penalty, l1_penalty; {which}")
        if self.by != "weights" and given[0] != "l0":
            raise ValueError(f"by={self.by} needs l0 (the number of groups to keep), got {given[0]}")

    @property
    def view(self) -> ViewKind:  # type: ignore[override]
        """``"vector"`` for single weights, ``"tensor"`` for groups."""
        return "vector" if self.by == "weights" else "tensor"

    # ---------------------------------------------------------------- sizes

    @property
    def penalty_form(self) -> bool:
        """True for ``l0_penalty`` and ``l1_penalty``: the answer depends on μ."""
        return self.l0_penalty is not None or self.l1_penalty is not None

    def _group_dim(self, shape: tuple[int, ...]) -> int:
        """The axis of the groups in the ``"tensor"`` view ``(out, in, kernel…)``: 0 for output
        units (rows, filters), 1 for input channels."""
        if len(shape) < 2:
            raise ValueError(f"by={self.by} needs a weight of 2 or more dimensions, got shape {tuple(shape)}")
        return 1 if self.by == "channels" else 0

    def axes(self, shape: tuple[int, ...]) -> str | None:
        """``keeps 64 of 256 output units`` (rows, filters) or ``… input channels``; None for weights."""
        if self.by == "weights" or self.l0 is None:
            return None
        shape = tuple(shape)
        what = "input channels" if self.by == "channels" else "output units"
        return f"keeps {self._count(shape)} of {shape[self._group_dim(shape)]} {what}"

    def _count(self, shape: tuple[int, ...]) -> int:
        """κ resolved against the number of weights (or groups) of ``shape``."""
        if self.by == "weights":
            return resolve_amount(self.l0, math.prod(shape), "l0")
        return resolve_amount(self.l0, shape[self._group_dim(shape)], "l0")

    AUTO_STEPS: ClassVar[int] = 32
    """How many counts ``l0=auto`` offers: a geometric ladder from 1 to all."""

    @classmethod
    def auto_values(cls, argument: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """``auto`` for ``l0``: about :attr:`AUTO_STEPS` counts in geometric steps from 1 to ``n``
        (every count when ``n`` is small), where ``n`` is the number of weights of a flat view,
        or of output groups (``shape[0]``) of a ``"tensor"`` view; the other forms are not choices."""
        if argument != "l0":
            return None
        n = int(shape[0]) if len(shape) > 1 else int(math.prod(shape))
        n = max(n, 1)
        if n <= cls.AUTO_STEPS:
            return tuple(range(1, n + 1))
        ratio = n ** (1.0 / (cls.AUTO_STEPS - 1))
        ladder = {min(n, max(1, round(ratio**i))) for i in range(cls.AUTO_STEPS)}
        return tuple(sorted(ladder | {n}))

    def resolve(self, shape: tuple[int, ...]) -> Prune:
        """``l0`` as an absolute count for a task of view ``shape``; other forms unchanged."""
        if self.l0 is None:
            return self
        return attrs.evolve(self, l0=self._count(tuple(shape)))

    def multiply_adds(self, shape: tuple[int, ...]) -> int:
        """Multiply-adds per output position of the layer (a flops budget's price): the kept weights.

        Raises:
            ValueError: a pruning penalty, which keeps what its C step finds."""
        storage = self.storage(tuple(shape))
        if storage is None:
            raise ValueError("a pruning penalty keeps what its C step finds, so its multiply-adds have no price")
        return min(storage.params, math.prod(shape))

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage | None:
        """Kept values at 32 bits plus their positions; ``None`` before training unless ``l0``."""
        shape = tuple(shape)
        n = math.prod(shape)
        if self.by != "weights":
            groups = shape[self._group_dim(shape)]
            kept = theta["values"].numel() if theta is not None else self._count(shape) * (n // groups)
            return Storage(params=kept, bits=FLOAT_BITS * kept + groups)
        if theta is not None:
            nnz = theta["values"].numel()
        elif self.l0 is not None:
            nnz = self._count(shape)
        else:
            return None
        return Storage(params=nnz, bits=FLOAT_BITS * nnz + index_bits(nnz, n))

    def chosen(self, theta: Theta, shape: tuple[int, ...]) -> str:
        """``keeps 4,210 of 235,200`` weights (or groups)."""
        shape = tuple(shape)
        total = math.prod(shape) if self.by == "weights" else shape[self._group_dim(shape)]
        return f"keeps {theta['indices'].numel():,} of {total:,}"

    # ------------------------------------------------------------ the C step

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ for target ``w`` (flat for weights, own shape for groups); ``warm`` is unused."""
        if self.by != "weights":
            return self._project_groups(w)
        x = w.reshape(-1)  # (n,)
        if self.l0 is not None:
            keep = top_k_mask(x.abs(), self._count(tuple(w.shape)))  # (n,)
            indices = _positions(keep)  # (κ,) ascending
            return {"indices": indices, "values": x[indices]}
        if self.l1 is not None:
            return _sparse_theta(project_l1_ball(x, self.l1))
        if not mu >= 0:
            raise ValueError(f"μ must be ≥ 0, got {mu}")
        if self.l0_penalty is not None:
            threshold = 2.0 * self.l0_penalty / mu if mu > 0 else math.inf  # on w_i²; μ → 0⁺: keep none
            keep = x.to(_accumulation_dtype(x)).square() > threshold  # (n,)
            indices = _positions(keep)
            return {"indices": indices, "values": x[indices]}
        shrink = self.l1_penalty / mu if mu > 0 else math.inf  # μ → 0⁺: everything shrinks to 0
        soft = torch.sign(x) * torch.clamp(x.abs() - shrink, min=0)  # (n,)
        return _sparse_theta(soft)

    @classmethod
    def distortion_table(cls, w: torch.Tensor, options: tuple[Prune, ...], mu: float = 0.0) -> torch.Tensor | None:
        """``‖w − θ‖²`` of each ``l0`` option (every one of one ``by``) from one sort: the squares
        (or groups' squared norms) left out of the κ largest. None for other forms."""
        if not options or not all(o.l0 is not None for o in options) or len({o.by for o in options}) != 1:
            return None
        first = options[0]
        acc = _accumulation_dtype(w)
        if first.by == "weights":
            scores = w.reshape(-1).to(acc).square()  # (n,)
        else:
            dim = first._group_dim(tuple(w.shape))
            scores = w.movedim(dim, 0).reshape(w.shape[dim], -1).to(acc).square().sum(1)  # (G,)
        ordered = torch.sort(scores, descending=True).values.cpu().to(torch.float64)  # (N,)
        # left[κ] = Σ_{i≥κ} ordered[i], summed from the small end to keep digits; left[N] = 0
        left = torch.cat([torch.flip(torch.cumsum(torch.flip(ordered, (0,)), 0), (0,)), ordered.new_zeros(1)])
        counts = [min(o._count(tuple(w.shape)), ordered.numel()) for o in options]
        return torch.stack([left[c] for c in counts])

    def _project_groups(self, w: torch.Tensor) -> Theta:
        dim = self._group_dim(tuple(w.shape))
        groups = w.movedim(dim, 0).reshape(w.shape[dim], -1)  # (G, rest)
        norms = groups.to(_accumulation_dtype(w)).square().sum(1)  # (G,) squared L2 norms
        keep = top_k_mask(norms, self._count(tuple(w.shape)))
        indices = _positions(keep)  # (κ,) ascending
        return {"indices": indices, "values": w.index_select(dim, indices)}

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """Distinct integer ``indices`` below ``n`` (or the number of groups) and one value (or
        group) for each."""
        shape = tuple(shape)
        indices = expect(theta, "indices", integer=True)
        values = expect(theta, "values", integer=False)
        if indices.dim() != 1:
            raise ValueError(f"indices has shape {tuple(indices.shape)}, expected one dimension")
        if self.by == "weights":
            high, expected, what = math.prod(shape), (indices.numel(),), "positions"
        else:
            dim = self._group_dim(shape)
            high, what = shape[dim], "groups"
            expected = shape[:dim] + (indices.numel(),) + shape[dim + 1 :]
        expect_codes(indices, "indices", high, what)
        if torch.unique(indices).numel() != indices.numel():
            raise ValueError("indices holds a position twice")
        if self.by == "weights" and indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
            raise ValueError("indices are not in ascending order")  # decompress_range relies on it
        if tuple(values.shape) != expected:
            raise ValueError(f"values has shape {tuple(values.shape)}, expected {expected}")

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """Zeros of ``shape`` with the kept values (or groups) put back (the indices widened to
        ``int64``, which ``index_copy_`` needs)."""
        shape = tuple(shape)
        values, indices = theta["values"], theta["indices"].long()
        out = torch.zeros(shape, dtype=values.dtype, device=values.device)
        if self.by != "weights":
            return out.index_copy_(self._group_dim(shape), indices, values)
        return out.reshape(-1).index_copy_(0, indices, values).reshape(shape)

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """Entries ``start:stop`` of ``Δ(θ)``: zeros with the kept values whose positions fall in
        the range (found by binary search in the ascending ``indices``). Groups: the default
        (the whole ``Δ(θ)``, cut)."""
        if self.by != "weights":
            return super().decompress_range(theta, shape, start, stop)
        values, indices = theta["values"], theta["indices"]
        bounds = torch.tensor([start, stop], dtype=indices.dtype, device=indices.device)
        lo, hi = torch.searchsorted(indices, bounds).tolist()  # kept positions in [start, stop)
        out = torch.zeros(stop - start, dtype=values.dtype, device=values.device)
        return out.index_copy_(0, (indices[lo:hi] - start).long(), values[lo:hi])

    @property
    def ranged(self) -> bool:
        """True for single weights (a range holds its own kept values); False for groups."""
        return self.by == "weights"


OPERATORS: tuple[type[Operator], ...] = (Prune,)
