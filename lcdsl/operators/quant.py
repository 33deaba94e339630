"""Quantization: weights from a small codebook, learned (``quant(k=…)``, ``quant(bits=…)``) or
given (``quant(codebook=[…])``)."""

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
    bits_per_index,
    code_dtype,
    expect,
    expect_codes,
)  # fmt: skip
from lcdsl.operators.kmeans1d.dp import kmeans1d, kmeans1d_costs
from lcdsl.operators.units import int_at_least

__all__ = ["Quant", "OPERATORS"]


def _to_codebook(value: Any) -> Any:
    """A list of numbers as a tuple of floats; anything else is left for the validator."""
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(float(v) for v in value)
    return value


def _check_codebook(inst: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple):
        raise TypeError(f"codebook must be a list of numbers, got {value!r}")
    if not value:
        raise ValueError("codebook must hold at least one number, got []")
    bad = [v for v in value if not math.isfinite(v)]
    if bad:
        raise ValueError(f"codebook entries must be finite numbers, got {bad[0]}")
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        raise ValueError(f"codebook entries must be distinct, got {dup:g} twice")


def _lookup(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[codes]`` for 1-D ``codes`` of any integer dtype: widened to ``int32`` (codes are
    below 2³¹), which ``index_select`` takes; it copies the codewords, so the numbers are exact."""
    return codebook.index_select(0, codes.reshape(-1).to(torch.int32))


@attrs.frozen
class Quant(Operator):
    """argmin_θ ‖w − Δ(θ)‖² s.t. every entry of Δ(θ) is one of k codewords (exact).

    Adaptive (``k`` or ``bits``, ``k = 2**bits``): θ = codebook ``(k,)`` and assignments ``(n,)``
    (the smallest integer dtype that holds ``0 … k−1``: ``uint8`` for ``k ≤ 256``, then ``int16``,
    ``int32``; :func:`~lcdsl.operators.base.code_dtype`), the global optimum of 1-D k-means
    found by dynamic programming (not Lloyd's local search).
    Fixed (``codebook=[…]``): θ = assignments to the nearest codeword (ties: the smaller one),
    plus the codebook in ``w``'s dtype so Δ(θ) keeps it; the codebook is in the spec, so its
    storage is not counted.

    Example spec lines::

        fc1 : quant(k=4)
        fc2 : quant(bits=1)
        fc3 : quant(codebook=[-0.1, 0, 0.1])
    """

    name: ClassVar[str] = "quant"

    k: int | None = attrs.field(default=None, validator=attrs.validators.optional(int_at_least(2)))
    """Codebook size, ``≥ 2``."""
    bits: int | None = attrs.field(default=None, validator=attrs.validators.optional(int_at_least(1, 31)))
    """Bits per weight: the codebook holds ``2**bits`` entries."""
    codebook: tuple[float, ...] | None = attrs.field(
        default=None, converter=_to_codebook, validator=_check_codebook
    )
    """A fixed codebook: distinct finite numbers."""

    def __attrs_post_init__(self) -> None:
        given = [n for n in ("k", "bits", "codebook") if getattr(self, n) is not None]
        if len(given) != 1:
            shown = " and ".join(given) if given else "none"
            raise ValueError(f"quant() takes exactly one of k, bits, codebook; got {shown}")

    @property
    def size(self) -> int:
        """The number of codewords."""
        if self.codebook is not None:
            return len(self.codebook)
        if self.bits is not None:
            return 2**self.bits
        return int(self.k)  # type: ignore[arg-type]

    @property
    def adaptive(self) -> bool:
        """Whether the codebook is learned (``k``/``bits``) rather than given."""
        return self.codebook is None

    def c_step_cost(self, shape: tuple[int, ...]) -> float:
        """The C step's cost, in units of sorting one weight (``n·log₂ n`` for ``n`` weights),
        for sharing C steps across ranks: the k-means DP's layers add about one ``log₂ k``
        factor (measured on the CPU kernel for k = 2 … 16, ``bench/cstep_ranks.py``)."""
        n = math.prod(shape)
        sort = n * max(1.0, math.log2(max(n, 1)))
        return sort * max(1.0, math.log2(self.size)) if self.adaptive else sort

    @classmethod
    def distortion_table(cls, w: torch.Tensor, options: tuple[Quant, ...], mu: float = 0.0) -> torch.Tensor | None:
        """``‖w − Δ(Π(w))‖²`` of each learned-codebook option (``quant(bits=1)`` … ``quant(k=16)``);
        None when an option has a fixed codebook (the generic table projects on it).

        A float32/float64 CPU tensor gets each distinct codebook size solved once by the compiled
        kernel's Lagrangian method, whose time hardly grows with ``k``, and measured. Elsewhere
        one k-means dynamic programme yields every ``k`` up to the largest
        (:func:`~lcdsl.operators.kmeans1d.kmeans1d_costs`): on the CPU it costs one torch DP
        layer per ``k`` up to 256, measured 136 s for ``quant(bits=1..8)`` on 300×100 weights and
        430 s on 784×300, against 0.7 s (the kernel's first call included) and 1.0 s for the
        sizes solved apart."""
        if not options or not all(o.adaptive for o in options):
            return None
        flat = w.detach().reshape(-1)  # (n,)
        if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
            exact = flat.to(torch.float64)
            by_size = {}
            for size in sorted({o.size for o in options}):
                codebook, assignments = kmeans1d(flat, size)  # (size,), (n,)
                by_size[size] = (exact - codebook.to(torch.float64)[assignments]).square().sum()
            return torch.stack([by_size[o.size] for o in options])
        costs = kmeans1d_costs(w, max(o.size for o in options))  # (K,) entry k − 1 for k
        return torch.stack([costs[o.size - 1] for o in options])

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ for the flat target ``w`` (``(n,)``); ``mu`` and ``warm`` do not change the answer
        and are not used."""
        if self.adaptive:
            codebook, assignments = kmeans1d(w, self.size)
            return {"codebook": codebook, "assignments": assignments.to(code_dtype(self.size))}
        given = torch.tensor(self.codebook, dtype=w.dtype, device=w.device)  # (K,)
        return {"codebook": given, "assignments": self._nearest(w).to(code_dtype(self.size))}

    def _nearest(self, w: torch.Tensor) -> torch.Tensor:
        """Index into ``self.codebook`` of the nearest codeword to each entry (ties: smaller)."""
        flat = w.detach().reshape(-1).to(torch.float64)  # (n,)
        given = torch.tensor(self.codebook, dtype=torch.float64, device=w.device)  # (K,)
        sorted_cb, order = torch.sort(given)
        hi = torch.searchsorted(sorted_cb, flat).clamp(max=sorted_cb.numel() - 1)  # first ≥ w
        lo = (hi - 1).clamp(min=0)
        # the upper neighbour wins only when strictly closer
        take_hi = (sorted_cb[hi] - flat).abs() < (flat - sorted_cb[lo]).abs()
        return order[torch.where(take_hi, hi, lo)]

    @classmethod
    def auto_values(cls, argument: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """``auto`` for ``bits``: 1…8; for ``k``: the powers of two 2…256 (each a whole number of
        index bits); both without codebooks larger than the task's ``n`` weights (but never
        empty); ``codebook`` is not a choice."""
        if argument not in ("bits", "k"):
            return None
        n = math.prod(shape)
        bits = [b for b in range(1, 9) if 2**b <= n] or [1]
        return tuple(bits) if argument == "bits" else tuple(2**b for b in bits)

    def resolve(self, shape: tuple[int, ...]) -> Quant:
        """Refuses a learned codebook with more codewords than the task has weights."""
        n = math.prod(shape)
        if self.adaptive and self.size > n:
            given = f"k={self.k}" if self.k is not None else f"bits={self.bits} (k={self.size})"
            raise ValueError(f"{given} is more codewords than the {n:,} weights to quantize")
        return self

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """A codebook of ``k`` floats and ``n`` integer assignments in ``[0, k)``."""
        codebook = expect(theta, "codebook", (self.size,), integer=False)
        assignments = expect(theta, "assignments", (math.prod(shape),), integer=True)
        expect_codes(assignments, "assignments", codebook.numel(), f"codes of quant(k={self.size})")

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``codebook[assignments]`` in ``shape``."""
        return _lookup(theta["codebook"], theta["assignments"]).reshape(shape)

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """``codebook[assignments[start:stop]]``: the codes of the range only."""
        return _lookup(theta["codebook"], theta["assignments"][start:stop])

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage:
        """Adaptive: ``k`` floats plus ``⌈log₂ k⌉`` bits a weight; fixed: the index bits only."""
        n = math.prod(shape)
        index = n * bits_per_index(self.size)
        if self.adaptive:
            return Storage(params=self.size, bits=FLOAT_BITS * self.size + index)
        return Storage(params=0, bits=index)


OPERATORS: tuple[type[Operator], ...] = (Quant,)
