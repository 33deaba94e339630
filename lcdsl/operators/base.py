"""The operator contract: what a C step is, for built-ins and plugins alike.

An operator is a small frozen attrs class. Its fields are exactly its spec keywords
(``quant(k=4)`` builds ``Quant(k=4)``); attrs validators reject bad values with a
``ValueError``/``TypeError`` whose message the plan builder shows at the call's span. Its
docstring opens with the problem it solves. It offers:

- :meth:`Operator.project`: the C step ``θ = argmin_θ ‖w − Δ(θ)‖²`` (plus the penalty term of
  penalty forms, which needs ``μ``; ``μ = 0`` is the limit ``μ → 0⁺``, the cheapest ``θ``).
  Pure: the previous ``θ`` may be passed as a warm start, nothing is stored on the operator.
- :attr:`Operator.penalty_form`: whether the answer depends on ``μ`` (a penalty form).
- :meth:`Operator.decompress`: ``Δ(θ)``, a tensor of the view's shape; optionally
  :meth:`Operator.decompress_range`, a range of its entries alone (so the engine can rebuild
  ``Δ(θ)`` per use rather than keep it).
- :meth:`Operator.storage`: the size of ``θ`` in parameters and bits.
- :meth:`Operator.resolve`: relative amounts (``l0=5%``) turned into absolute ones once the
  task's size is known.
- optionally :meth:`Operator.encode` / :meth:`Operator.decode`: ``θ`` in a compact form for
  ``lcdsl export``. Without them the exporter stores each tensor of ``θ`` in the smallest exact
  encoding its content allows (:func:`lcdsl.operators.bitpack.encode_tensor`: codebook assignments
  bit-packed, kept positions as a bitmask or packed indices, ±1 signs as bits, reals as raw
  little-endian bytes), which already meets :meth:`Operator.storage` for every built-in
  operator; an operator implements the pair only when it knows better (e.g. a fixed codebook that
  the spec already holds, or an entropy code).

``θ`` is a ``dict[str, Tensor]`` (:data:`Theta`), so it saves with ``torch.save`` and loads with
``torch.load(weights_only=True)``, and moves between devices like any tensor.

**Views.** The engine hands an operator the task's weights in the view it declares
(:data:`ViewKind`); a :class:`View` (:mod:`.view`) gathers them there and scatters back:

- ``"vector"``: all tensors of the task flattened and concatenated, shape ``(n,)``;
- ``"matrix"``: one tensor as ``(out, in·kh·kw)``;
- ``"tensor"``: one tensor with its axes in the order ``(out, in, kh, kw)`` (e.g. structured
  pruning of conv channels).

A joint group of several tensors is only possible for ``"vector"`` operators. Rows are the
layer's outputs on every layer, whatever order it stores its weight in (HF ``Conv1D`` stores
``(in, out)``): the view puts the axes in this order from the layer's
:class:`~lcdsl.operators.layout.Layout`, so an operator never needs to know the module.

All work happens on ``w``'s device and dtype with torch ops.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from lcdsl.language.fmt import format_expression
from lcdsl.language.spec import Argument, Call
from lcdsl.operators.view import View, ViewKind, view_shape

__all__ = [
    "Theta", "Encoded", "View", "ViewKind", "Storage", "Operator", "index_bits", "bits_per_index", "view_shape",
    "describe", "code_dtype", "position_dtype", "expect", "expect_codes", "check_saved_theta",
]  # fmt: skip

Theta = dict[str, torch.Tensor]
"""The compressed representation of one task: named tensors (codebook, assignments, …)."""

Encoded = dict[str, "torch.Tensor | bytes"]
"""``θ`` as :meth:`Operator.encode` gives it: bytes the operator packed itself (stored as they
are) and tensors (stored by the exporter's content-based codec), by field name."""

FLOAT_BITS = 32
"""Bits of one stored real number (codebook entries, sparse values, factors)."""


@attrs.frozen
class Storage:
    """The size of a compressed representation."""

    params: int
    """How many numbers are stored (codebook entries, non-zeros, factor entries, …)."""
    bits: int
    """How many bits they take, including indices and assignments."""

    def __add__(self, other: Storage) -> Storage:
        return Storage(self.params + other.params, self.bits + other.bits)


def bits_per_index(count: int) -> int:
    """Bits to store one index into ``count`` choices: ``⌈log₂ count⌉`` (0 for one choice)."""
    return 0 if count <= 1 else (int(count) - 1).bit_length()  # exact, also past 2**53


def code_dtype(count: int) -> torch.dtype:
    """The smallest integer dtype that holds the codes ``0 … count − 1`` (codebook assignments):
    ``uint8`` up to 256 choices, then ``int16``, ``int32``, ``int64``.

    θ keeps its integer fields this small in memory, in checkpoints and in ``compressed.pt``; an
    operator converts to ``int64`` at the point of use where a torch op needs it (``index_copy_``,
    embedding-style gathers), not in θ."""
    if count <= 2**8:
        return torch.uint8
    if count <= 2**15:
        return torch.int16
    return torch.int32 if count <= 2**31 else torch.int64


def position_dtype(n: int) -> torch.dtype:
    """The dtype of positions into ``n`` entries (kept indices of a pruned tensor): ``int32``
    while ``n ≤ 2³¹``, ``int64`` past that. Not narrower: ``index_select`` and ``gather`` take
    ``int32`` or ``int64`` indices only."""
    return torch.int32 if n <= 2**31 else torch.int64


def index_bits(nonzeros: int, n: int) -> int:
    """Bits to store which ``nonzeros`` of ``n`` positions are kept: the cheaper of a bitmask
    (``n`` bits) and a list of indices (``nonzeros · ⌈log₂ n⌉`` bits)."""
    return min(n, nonzeros * bits_per_index(n))


class Operator:
    """Base class of C-step operators. Subclasses are ``@attrs.frozen`` and set :attr:`name`.

    Example (a plugin's whole operator)::

        @attrs.frozen
        class Sign(Operator):
            \"\"\"argmin_θ ‖w − θ‖² s.t. θ ∈ {−1, +1}ⁿ: θ = sign(w) (exact).\"\"\"

            name: ClassVar[str] = "sign"

            def project(self, w, mu=0.0, warm=None):
                return {"signs": torch.where(w >= 0, 1.0, -1.0).to(w.dtype)}

            def decompress(self, theta, shape):
                return theta["signs"].reshape(shape)

            def storage(self, shape, theta=None):
                n = math.prod(shape)
                return Storage(params=0, bits=n)
    """

    name: ClassVar[str]
    """The spec keyword, e.g. ``"quant"``."""
    view: ClassVar[ViewKind] = "vector"
    """The shape the engine hands to :meth:`project`. A subclass may make it a property of the
    instance when the view depends on a field (``prune(by=channels)`` needs ``"tensor"``,
    ``prune(l0=…)`` a ``"vector"``); the plan and the engine read ``operator.view`` on instances."""

    @property
    def penalty_form(self) -> bool:
        """Whether this is a *penalty form*: its C step solves
        ``argmin_θ ‖w − Δ(θ)‖² + (2/μ)·α·C(θ)`` (a cost ``C`` priced at ``α`` in units of the loss)
        instead of a constraint, so its answer depends on ``μ`` and its size is known only from
        ``θ``. ``False`` by default; ``prune(l0_penalty=…)``, ``prune(l1_penalty=…)`` and
        ``lowrank(alpha=…)`` say ``True``. ``lcdsl check`` shows what a penalty form keeps at the
        schedule's first and last ``μ``, and :func:`lcdsl.testing.check_operator` checks the
        convention of :meth:`project` on it."""
        return False

    @classmethod
    def auto_values(cls, argument: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The values a spec's ``auto`` (``lowrank(rank=auto)``) means for ``argument`` on a task
        of view ``shape``, in increasing order; None when ``argument`` is not an integer size this
        operator can choose under a budget (a range ``1..8`` is refused for it too).

        The binder asks twice: first with the task's flat shape ``(numel,)``, to build one
        option and learn the task's view, then with the view's shape. The answer must hold at
        least one value for any shape. The default: no argument is a choice."""
        return None

    def resolve(self, shape: tuple[int, ...]) -> Operator:
        """This operator with relative amounts made absolute for a task of view ``shape``.

        ``prune(l0=5%)`` on 266,200 weights resolves to ``prune(l0=13310)``. Raises
        ``ValueError`` when the amount does not fit the task (e.g. ``rank`` above the matrix's
        smaller side). The default returns ``self``."""
        return self

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """Optional: raise ``ValueError`` when ``θ`` read from a file cannot be this operator's θ
        for a task of view ``shape`` (a key missing, a tensor of another shape or dtype, a code
        out of range: quantization assignments ≥ k, pruning indices ≥ n).

        Called by the store and the engine on every θ they load, before :meth:`decompress`
        (:func:`check_saved_theta`), so a damaged file is a clear error instead of an indexing
        failure deep in torch. The message names the key (``assignments holds 7, expected codes
        below k=4``). The default checks nothing."""
        return None

    def axes(self, shape: tuple[int, ...]) -> str | None:
        """What this operator does along a layer's output and input axes, for a task of view
        ``shape``, as ``lcdsl check`` shows it (``keeps 64 of 256 output units``).

        The default names the rows and columns of a ``"matrix"`` view (``rows = 16 outputs,
        columns = 75 inputs``; a conv's columns are its inputs times its kernel positions) and
        says nothing (None) for other views."""
        if self.view == "matrix" and len(shape) == 2:
            return f"rows = {shape[0]} outputs, columns = {shape[1]} inputs"
        return None

    def chosen(self, theta: Theta, shape: tuple[int, ...]) -> str | None:
        """What ``θ`` of a task of view ``shape`` kept, in the operator's own words, for a
        penalty form whose size only ``θ`` tells (``rank 50``, ``keeps 4,210 of 235,200``);
        ``lcdsl check`` shows it beside the size. The default says nothing (None)."""
        return None

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """The C step: ``θ`` minimising ``‖w − Δ(θ)‖²`` (plus ``2/μ·α·C(θ)`` for penalties).

        **μ and penalty forms.** Constraint forms ignore ``μ``. A penalty form
        (:attr:`penalty_form`) minimises ``‖w − Δ(θ)‖² + (2/μ)·α·C(θ)``: the larger ``μ``, the
        more it keeps. ``μ = 0`` means the limit ``μ → 0⁺``, where the cost alone decides: return
        the cheapest ``θ`` (rank 0, no weight kept), never ``w`` itself. That is what the
        engine's direct compression (step 0, ``μ = 0``) gets, as in the LC papers: the first L
        step then pulls the weights towards the cheapest model, and the later C steps keep what
        the loss makes worth its price ``α`` (reading ``μ = 0`` as "no penalty" instead keeps
        everything at step 0, and the run keeps nearly everything; ``docs/language.md``, penalty
        forms). An exact penalty form's ``‖w − Δ(θ)‖²`` never grows and its ``C(θ)`` never
        falls as ``μ`` grows (what :func:`lcdsl.testing.check_operator` verifies).

        Args:
            w: the target in this operator's view (``w − λ/μ`` in the LC iteration). Not
                modified.
            mu: the current penalty parameter, ``≥ 0``; only penalty forms use it.
            warm: the ``θ`` of the previous C step, if any; an exact operator may use it only to
                go faster, never to change the answer.

        Returns:
            ``θ`` as named tensors on ``w``'s device.
        """
        raise NotImplementedError

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``Δ(θ)``: the compressed weights as a tensor of the view's ``shape``."""
        raise NotImplementedError

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """Entries ``start:stop`` of ``Δ(θ)`` flattened (row-major in the view's ``shape``), as a 1-D
        tensor: exactly ``decompress(theta, shape).reshape(-1)[start:stop]``, the same numbers.

        The engine uses it to rebuild ``Δ(θ)`` a block at a time instead of keeping it (the
        ``delta`` setting). The default decompresses everything and cuts the range: right for
        every operator, cheap for none. An operator whose ``Δ(θ)`` is a lookup per entry (a
        codebook, signs, kept positions) overrides it to build the range alone, and the engine
        then recomputes instead of keeping (:attr:`ranged`)."""
        return self.decompress(theta, shape).reshape(-1)[start:stop]

    @property
    def ranged(self) -> bool:
        """Whether :meth:`decompress_range` builds a range without the rest of ``Δ(θ)`` (the
        operator overrides it), so that rebuilding ``Δ(θ)`` per use costs about as much as reading
        it: ``delta = "auto"`` then recomputes rather than keeps."""
        return type(self).decompress_range is not Operator.decompress_range

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage | None:
        """Parameters and bits of ``θ`` for a task of view ``shape``.

        Without ``theta`` this is the size predicted before training, or ``None`` when only
        ``θ`` can tell (penalty forms, rank selection)."""
        raise NotImplementedError

    def encode(self, theta: Theta, shape: tuple[int, ...]) -> Encoded | None:
        """Optional: ``θ`` of a task of view ``shape`` as compact fields for ``lcdsl export``.

        Return ``None`` (the default) to let the exporter encode every tensor of ``θ`` by its
        content (:func:`lcdsl.operators.bitpack.encode_tensor`). Otherwise return named fields: ``bytes``
        are stored as they are, tensors through the content-based codec; :meth:`decode` gets the
        same fields back and must return ``θ`` exactly (:mod:`lcdsl.operators.bitpack` has the packers)."""
        return None

    def decode(self, fields: Encoded, shape: tuple[int, ...]) -> Theta:
        """The ``θ`` that :meth:`encode` turned into ``fields``; called only for operators whose
        :meth:`encode` returns fields."""
        raise NotImplementedError(f"{type(self).__name__}.encode returned fields but decode is missing")

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring: the argmin this operator solves."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def expect(
    theta: Theta, key: str, shape: tuple[int, ...] | None = None, *, integer: bool | None = None
) -> torch.Tensor:
    """``theta[key]``, checked to be a tensor (of ``shape``; of an integer dtype when ``integer``,
    a floating one when ``integer`` is False); ``ValueError`` naming the key otherwise. A helper
    for :meth:`Operator.check_theta`."""
    value = theta.get(key)
    if not isinstance(value, torch.Tensor):
        found = "missing" if key not in theta else type(value).__name__
        raise ValueError(f"{key} is {found}, expected a tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if integer is True and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ValueError(f"{key} has dtype {value.dtype}, expected an integer dtype")
    if integer is False and not value.is_floating_point():
        raise ValueError(f"{key} has dtype {value.dtype}, expected a floating-point dtype")
    return value


def expect_codes(value: torch.Tensor, key: str, high: int, what: str) -> None:
    """``ValueError`` unless every entry of the integer tensor ``value`` is in ``[0, high)``."""
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= high):
        bad = int(value.min()) if int(value.min()) < 0 else int(value.max())
        raise ValueError(f"{key} holds {bad}, expected {what} in [0, {high})")


def check_saved_theta(op: Operator, theta: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """``Δ(θ)`` of a θ read from a file, after checking it: a dict of named tensors, finite,
    accepted by ``op.check_theta``, and decompressing to a finite tensor of view ``shape``.

    Raises:
        ValueError: naming what is wrong (the caller adds the file and the task).
    """
    if not isinstance(theta, dict) or not all(isinstance(k, str) for k in theta):
        raise ValueError(f"θ is {type(theta).__name__}, expected a dict of named tensors")
    for key, value in theta.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"θ['{key}'] is {type(value).__name__}, expected a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"θ['{key}'] holds NaN or infinite values")
    op.check_theta(theta, tuple(shape))
    try:
        delta = op.decompress(theta, tuple(shape))
    except Exception as exc:  # noqa: BLE001 - a θ that check_theta let through but decompress cannot use
        raise ValueError(f"θ does not decompress ({type(exc).__name__}: {exc})") from exc
    if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != tuple(shape):
        found = tuple(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__
        raise ValueError(f"θ decompresses to {found}, expected shape {tuple(shape)}")
    if delta.is_floating_point() and not bool(torch.isfinite(delta).all()):
        raise ValueError("θ decompresses to NaN or infinite values")
    return delta


def _calls(op: Operator) -> tuple[Call, ...]:
    """The spec calls that build ``op``: one per term of an additive combination (an operator
    with ``terms``), each with the fields that differ from their defaults, in field order.

    Fields that are not spec keywords are left out: those the constructor does not take
    (``init=False``) and those equality ignores (``eq=False``, e.g. a record an operator keeps
    for its own tests), since they are no part of what the operator computes."""
    terms = getattr(op, "terms", None)
    if terms is not None:
        return tuple(call for term in terms for call in _calls(term))
    args = []
    if attrs.has(type(op)):
        for field in attrs.fields(type(op)):
            if not field.init or not field.eq:
                continue
            value = getattr(op, field.name)
            default = field.default
            if isinstance(default, attrs.Factory) and not default.takes_self:
                default = default.factory()
            if default is not attrs.NOTHING and value == default:
                continue
            args.append(Argument(field.name, value))
    return (Call(op.name, tuple(args)),)


def describe(op: Operator) -> str:
    """An operator as spec text, with its non-default fields: ``prune(l0=13310)``.

    An additive combination (an operator with ``terms``) is its terms joined by ``+``. The text
    is :func:`lcdsl.language.fmt.format_expression`'s canonical form (floats in their shortest
    form, ``lowrank(alpha=1e-4)``), so ``parse_expression(describe(op))`` builds ``op`` again.

    Raises:
        SpecError: a field holds a value that a spec cannot spell (fields are spec keywords, so
            only an operator that converts its values to something else can get here).

    An operator that is not one call or a sum of them (a :class:`~lcdsl.operators.choice.Choice`
    among options) writes itself through its own ``spec_text()`` method.
    """
    spec_text = getattr(op, "spec_text", None)
    if callable(spec_text):
        return str(spec_text())
    return format_expression(_calls(op))
