"""The ``pow2`` operator: nearest power of two (or zero) per weight."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from lcdsl.operators import Operator, Storage, Theta, int_at_least

__all__ = ["Pow2", "MAX_BITS", "MIN_EXPONENT", "MAX_EXPONENT"]

MAX_BITS = 8
"""Codes are stored as int8: one sign bit and up to 127 exponents."""
MIN_EXPONENT = -126
"""Smallest exponent allowed: 2^−126 is float32's smallest normal number."""
MAX_EXPONENT = 127
"""Largest exponent allowed: 2^127 is float32's largest power of two."""


def _check_emax(inst: Pow2, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"emax must be an integer, got {value!r}")
    if value > MAX_EXPONENT or inst.emin < MIN_EXPONENT:
        raise ValueError(
            f"with bits={inst.bits}, emax must be from {MIN_EXPONENT + inst.exponents - 1} to "
            f"{MAX_EXPONENT} so that every 2^e is a normal float32, got {value}"
        )


@attrs.frozen
class Pow2(Operator):
    """argmin_θ ‖w − θ‖² s.t. θ_i ∈ {0} ∪ {±2^e : emin ≤ e ≤ emax} (exact, per weight).

    ``bits`` is one sign bit plus the exponent code: ``2^(bits−1) − 1`` exponents ending at
    ``emax`` (``emin = emax − 2^(bits−1) + 2``), and zero. Each weight goes to its nearest
    level; between ``2^e`` and ``2^(e+1)`` the boundary is the midpoint ``1.5·2^e`` (not the
    geometric mean), between ``0`` and ``2^emin`` it is ``2^(emin−1)``. A weight exactly on a
    boundary goes to the level of larger magnitude. Example spec lines::

        fc1 : pow2(bits=4)            # {0, ±2^−6, …, ±2^0}
        fc2 : pow2(bits=3, emax=-2)   # {0, ±2^−4, ±2^−3, ±2^−2}

    ``θ`` is ``{"codes": int8 (n,), "levels": (2^(bits−1),)}``: code ``±j`` means ``±levels[j]``;
    ``levels`` (``0, 2^emin, …, 2^emax`` in ``w``'s dtype) follow from ``bits`` and ``emax``, so
    only the codes are counted in storage: ``n·bits`` bits.
    """

    name: ClassVar[str] = "pow2"

    bits: int = attrs.field(validator=int_at_least(2, MAX_BITS))
    """Bits per weight: one sign bit and ``bits − 1`` bits of exponent code (2 to 8)."""
    emax: int = attrs.field(default=0, validator=_check_emax)
    """The largest exponent: the largest magnitude is ``2^emax``."""

    @property
    def exponents(self) -> int:
        """How many powers of two there are: ``2^(bits−1) − 1``."""
        return 2 ** (self.bits - 1) - 1

    @property
    def emin(self) -> int:
        """The smallest exponent."""
        return self.emax - self.exponents + 1

    def levels(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[0, 2^emin, …, 2^emax]`` as a tensor, exact (powers of two are exact floats)."""
        values = [0.0] + [math.ldexp(1.0, self.emin + j) for j in range(self.exponents)]
        return torch.tensor(values, dtype=dtype, device=device)  # (2^(bits−1),)

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ for target ``w`` (flat); ``mu`` and ``warm`` are unused (a constraint, exact)."""
        w = w.detach()
        a = w.abs()  # (n,)
        # a = m·2^x with m ∈ [0.5, 1), so a ∈ [2^(x−1), 2^x); integer exponents keep it exact
        mantissa, x = torch.frexp(a)
        # the midpoint of [2^(x−1), 2^x] is 1.5·2^(x−1), i.e. m = 0.75
        e = x - 1 + (mantissa >= 0.75).to(x.dtype)
        # above 2^emax the nearest level is 2^emax; in [2^(emin−1), 2^emin) it is 2^emin
        e = e.clamp(min=self.emin, max=self.emax)
        # below 2^(emin−1) (x < emin), zero is nearer than 2^emin
        to_zero = (a == 0) | (x < self.emin)
        code = torch.where(to_zero, torch.zeros_like(e), e - self.emin + 1)
        code = torch.where(w < 0, -code, code).to(torch.int8)  # (n,) in [−E, E]
        return {"codes": code, "levels": self.levels(w.dtype, w.device)}

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``sign(code) · levels[|code|]`` in ``shape``."""
        codes = theta["codes"]
        magnitude = theta["levels"][codes.abs().long()]  # (n,)
        return torch.where(codes < 0, -magnitude, magnitude).reshape(shape)

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage:
        """``bits`` per weight; the levels follow from ``bits`` and ``emax``."""
        return Storage(params=0, bits=math.prod(shape) * self.bits)
