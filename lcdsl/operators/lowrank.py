"""Low-rank: truncated SVD at a given rank, or the rank chosen by a storage/flops trade-off."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from lcdsl.operators.base import FLOAT_BITS, Operator, Storage, Theta, ViewKind, expect
from lcdsl.operators.units import int_at_least, positive_number, to_float

__all__ = ["LowRank", "OPERATORS", "svd", "select_rank"]

_COSTS = ("storage", "flops")


def svd(w: torch.Tensor, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD ``w = U·diag(S)·Vh`` of an (m, n) matrix, its ``rank`` leading components
    (all k = min(m, n) when None), with a canonical sign per component.

    Exact through the Gram matrix of the short side: the eigenvectors of ``w·wᵀ`` (m ≤ n) or
    ``wᵀ·w`` (m > n), in float64, are the singular vectors, its eigenvalues the squared singular
    values; the other side is ``wᵀ·U/σ`` (or ``w·V/σ``), for the leading ``rank`` components only.
    Forming the (k, k) Gram matrix costs k²·max(m, n) and its eigendecomposition k³, against the
    ~4·k²·max(m, n) + 8k³ of a full SVD, and float64 squares a float32 matrix's condition number
    without losing what matters: the rank-r subspace is found to ~1e-16·σ₁²/gap, far below
    float32's own 1e-7 (on a 512×4608 float32 matrix, 8× faster than ``torch.linalg.svd``; see
    ``bench/cstep_other.py``). Components whose σ is 0 to float64 precision get zero rows of
    ``Vh`` (or columns of ``U``): they add nothing to ``U·diag(S)·Vh`` either way.

    Each singular pair is flipped so that the largest-magnitude entry of its column of ``U`` is
    positive, so ``θ`` does not depend on the eigensolver's sign choice.

    Returns:
        ``U`` (m, r), ``S`` (k,) decreasing (every singular value, for rank selection), ``Vh``
        (r, n), in float64.
    """
    m, n = w.shape
    x = w.to(torch.float64)
    left = m <= n  # the Gram matrix of the shorter side
    gram = x @ x.T if left else x.T @ x  # (k, k)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    s = eigenvalues.flip(0).clamp_min(0).sqrt()  # (k,) decreasing
    r = s.numel() if rank is None else rank
    q = eigenvectors.flip(1)[:, :r]  # (k, r): the leading singular vectors of the short side
    s_r = s[:r]
    tiny = s_r <= s[0] * 1e-15  # σ = 0 to float64 precision
    inverse = torch.where(tiny, torch.zeros_like(s_r), 1.0 / torch.where(tiny, torch.ones_like(s_r), s_r))
    if left:
        u, vh = q, (q.T @ x) * inverse[:, None]  # (m, r), (r, n)
    else:
        u, vh = (x @ q) * inverse, q.T  # (m, r), (r, n)
    pivot = u.abs().argmax(0, keepdim=True)  # (1, r): row of the largest |U| per column
    sign = torch.sign(torch.gather(u, 0, pivot)).reshape(-1)  # (r,)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign, s, vh * sign[:, None]


def rank_costs(m: int, n: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """cost(r) = r·(m + n) for r = 0..k, as float64 (k+1,).

    The same number serves ``cost=storage`` (entries of U and V) and ``cost=flops`` (a product
    ``x·Wᵀ`` costs m·n multiply-adds per input by ``W``, r·(m + n) by the factors)."""
    return torch.arange(k + 1, device=device, dtype=torch.float64) * (m + n)


def select_rank(s: torch.Tensor, m: int, n: int, alpha: float, mu: float) -> int:
    """argmin over r = 0..k of α·cost(r) + μ/2·Σ_{i>r} σ_i² (exact; the smallest r on ties).

    At μ = 0 (the limit μ → 0⁺ of the LC paper's direct compression) the cost alone decides and
    the answer is rank 0; the formula gives it without a special case.

    Args:
        s: singular values (k,), decreasing.
        m, n: the matrix's shape.
        alpha: weight of the cost.
        mu: the LC penalty parameter, ≥ 0.
    """
    if not mu >= 0:
        raise ValueError(f"μ must be ≥ 0, got {mu}")
    k = s.numel()
    s2 = s.to(torch.float64).square()  # (k,)
    # tail[r] = Σ_{i≥r} σ_i² (0-based), summed from the small end to keep digits; tail[k] = 0
    tail = torch.cat([torch.flip(torch.cumsum(torch.flip(s2, (0,)), 0), (0,)), s2.new_zeros(1)])  # (k+1,)
    objective = alpha * rank_costs(m, n, k, s.device) + 0.5 * mu * tail  # (k+1,)
    return int(torch.argmin(objective).item())  # the first minimum: the smallest rank on ties


def _check_cost(instance: Any, attribute: Any, value: Any) -> None:
    if value not in _COSTS:
        raise ValueError(f"cost must be one of {', '.join(_COSTS)}, got {value!r}")


@attrs.frozen
class LowRank(Operator):
    """argmin_{U,V} ‖W − UV‖² s.t. rank ≤ r (or + (2α/μ)·cost(rank)): truncated SVD, exact.

    Exactly one of:

    - ``rank=r``: the r leading singular triplets (Eckart–Young); ``r`` must not exceed
      min(m, n) of the task's matrix;
    - ``alpha=α`` (rank selection, a penalty form): the rank minimising
      α·cost(r) + μ/2·Σ_{i>r} σ_i² over r = 0..min(m, n), from one SVD, all ranks compared at
      once. α is in units of the loss per stored number (the LC rank-selection paper's α, its
      λ·10⁻⁶); rank r + 1 is kept when σ²_{r+1} > 2α(m + n)/μ. At μ = 0 (the limit μ → 0⁺)
      rank 0 (see :meth:`~lcdsl.operators.base.Operator.project` for the convention).
      ``cost`` is ``storage`` or ``flops``; both equal r·(m + n) (see :func:`rank_costs`).

    The weight is seen as the matrix ``(out, in·kh·kw)``. ``θ = {"U": (m, r) scaled by the
    singular values, "V": (r, n)}`` in ``w``'s dtype, with canonical signs (see :func:`svd`).
    Storage: r·(m + n) numbers at 32 bits.
    """

    name: ClassVar[str] = "lowrank"
    view: ClassVar[ViewKind] = "matrix"

    rank: int | None = attrs.field(default=None, validator=attrs.validators.optional(int_at_least(1)))
    """Keep this many singular triplets."""
    alpha: float | None = attrs.field(
        default=None,
        converter=to_float,
        validator=attrs.validators.optional(positive_number),
    )
    """Weight of the rank's cost: larger α, smaller ranks."""
    cost: str = attrs.field(default="storage", validator=_check_cost)
    """What a rank costs with ``alpha``: ``storage`` or ``flops`` (both r·(m + n))."""

    def __attrs_post_init__(self) -> None:
        if (self.rank is None) == (self.alpha is None):
            raise ValueError("lowrank takes exactly one of rank, alpha")

    @staticmethod
    def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
        if len(shape) != 2:
            raise ValueError(f"lowrank needs a matrix, got shape {tuple(shape)}")
        return int(shape[0]), int(shape[1])

    @property
    def penalty_form(self) -> bool:
        """True for rank selection (``alpha``): the answer depends on μ."""
        return self.alpha is not None

    @classmethod
    def auto_values(cls, argument: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """``auto`` for ``rank``: every rank 1…min(m, n) of an ``(m, n)`` view (1 alone for a flat
        shape); ``alpha`` is not a choice."""
        if argument != "rank":
            return None
        if len(shape) < 2:
            return (1,)
        return tuple(range(1, min(int(shape[0]), int(math.prod(shape[1:]))) + 1))

    def resolve(self, shape: tuple[int, ...]) -> LowRank:
        """Checks that ``rank`` fits the ``(m, n)`` matrix; nothing is relative here."""
        m, n = self._matrix(tuple(shape))
        if self.rank is not None and self.rank > min(m, n):
            raise ValueError(f"rank={self.rank} is above min(m, n) = {min(m, n)} of a {m}×{n} matrix")
        return self

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """``U`` of shape ``(m, r)`` and ``V`` of ``(r, n)``, ``r ≤ min(m, n)`` (``r`` = the rank when fixed)."""
        m, n = self._matrix(tuple(shape))
        u = expect(theta, "U", integer=False)
        r = u.shape[1] if u.dim() == 2 else -1
        expected = self.rank if self.rank is not None else r
        if u.dim() != 2 or u.shape[0] != m or not 0 <= r <= min(m, n) or r != min(expected, m, n):
            wanted = self.rank if self.rank is not None else f"r ≤ {min(m, n)}"
            raise ValueError(f"U has shape {tuple(u.shape)}, expected ({m}, r) with r = {wanted}")
        expect(theta, "V", (r, n), integer=False)

    def multiply_adds(self, shape: tuple[int, ...]) -> int:
        """Multiply-adds per output position of the layer (a flops budget's price): ``r·(m + n)``
        for the two factors of rank ``r`` of an ``(m, n)`` matrix.

        Raises:
            ValueError: a penalty form, whose rank only its C step tells."""
        if self.rank is None:
            raise ValueError("lowrank(alpha=…) chooses its rank in the C step, so its multiply-adds have no price")
        m, n = int(shape[0]), int(math.prod(shape[1:]))
        return min(self.rank, m, n) * (m + n)

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage | None:
        """r·(m + n) numbers at 32 bits; ``None`` before training for rank selection."""
        m, n = self._matrix(tuple(shape))
        if theta is not None:
            r = theta["V"].shape[0]
        elif self.rank is not None:
            r = min(self.rank, m, n)
        else:
            return None
        return Storage(params=r * (m + n), bits=FLOAT_BITS * r * (m + n))

    def chosen(self, theta: Theta, shape: tuple[int, ...]) -> str:
        """``rank r of k``."""
        return f"rank {theta['V'].shape[0]} of {min(self._matrix(tuple(shape)))}"

    @classmethod
    def distortion_table(cls, w: torch.Tensor, options: tuple[LowRank, ...], mu: float = 0.0) -> torch.Tensor | None:
        """``‖W − U·V‖²`` of each fixed-rank option from one SVD: the squared singular values past
        the rank (Eckart–Young); None when an option selects its rank (``alpha``)."""
        if not options or not all(o.rank is not None for o in options) or w.dim() != 2:
            return None
        s = svd(w, 0)[1]  # (k,) every singular value, decreasing; no vectors needed
        s2 = s.square().cpu()  # (k,)
        # tail[r] = Σ_{i≥r} σ_i² (0-based), summed from the small end; tail[k] = 0
        tail = torch.cat([torch.flip(torch.cumsum(torch.flip(s2, (0,)), 0), (0,)), s2.new_zeros(1)])  # (k+1,)
        return torch.stack([tail[min(o.rank, s2.numel())] for o in options])

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ for the (m, n) target ``w``; ``warm`` is unused (one SVD is exact and cheap enough)."""
        self.resolve(tuple(w.shape))  # the rank must fit
        m, n = self._matrix(tuple(w.shape))
        if self.rank is not None:
            u, s, vh = svd(w, self.rank)  # (m, r), (k,), (r, n)
            r = self.rank
        else:
            u, s, vh = svd(w)  # (m, k), (k,), (k, n)
            r = select_rank(s, m, n, self.alpha, mu)
        return {"U": (u[:, :r] * s[:r]).to(w.dtype), "V": vh[:r].to(w.dtype)}

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``U·V`` (zeros at rank 0) reshaped to ``shape``."""
        return (theta["U"] @ theta["V"]).reshape(shape)


OPERATORS: tuple[type[Operator], ...] = (LowRank,)
