"""Binarization and ternarization: weights in ``{−1, +1}`` (optionally scaled) or ``{−c, 0, c}``."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

from lcdsl.operators.base import FLOAT_BITS, Operator, Storage, Theta, expect

__all__ = ["Binarize", "Ternarize", "OPERATORS"]


def _mean_of_magnitudes(magnitude: torch.Tensor) -> torch.Tensor:
    """The mean, exactly the common value when all are equal (a sum of equal float64 numbers
    may round, and projecting ``c·t`` must give back ``c`` exactly)."""
    top = magnitude.max()
    return torch.where(magnitude.min() == top, top, magnitude.mean())


@attrs.frozen
class Binarize(Operator):
    """argmin_θ ‖w − θ‖² s.t. θ ∈ {−1, +1}ⁿ (θ = sign(w)), or with ``scale=true``
    θ ∈ {−c, +c}ⁿ over c ≥ 0 too (θ = c·sign(w), c = mean |w|); exact.

    ``sign(0)`` is ``+1``. θ holds the signs as booleans (one byte a weight in memory, one bit in a
    file). Example spec lines::

        fc1 : binarize()
        fc2 : binarize(scale=true)
    """

    name: ClassVar[str] = "binarize"

    scale: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Learn a scale ``c`` (stored as one extra float)."""

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ = ``{"signs": (n,) bool, True for +1}``, plus ``{"scale"}`` (0-dim, ``w``'s dtype) when
        scaled, else ``{"dtype"}``: an empty tensor of ``w``'s dtype, so Δ(θ) comes back in it."""
        w = w.detach()
        theta = {"signs": w >= 0}
        if self.scale:
            # for fixed signs s, Σ (w − c s)² is minimised at c = Σ w s / n = mean |w|
            magnitude = w.to(torch.float64).abs()
            theta["scale"] = _mean_of_magnitudes(magnitude).to(w.dtype)
        else:
            theta["dtype"] = torch.empty(0, dtype=w.dtype, device=w.device)
        return theta

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``c · signs`` (``c = 1`` unscaled) in ``shape``.

        Also reads the θ of earlier versions, whose signs were ``±1`` in the weights' dtype."""
        signs = theta["signs"].reshape(shape)
        if signs.dtype == torch.bool:
            like = theta["scale"] if self.scale else theta["dtype"]
            one = torch.ones((), dtype=like.dtype, device=signs.device)
            signs = torch.where(signs, one, -one)
        if self.scale:
            return theta["scale"] * signs
        return signs.clone()

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """``c · signs[start:stop]``."""
        part = {**theta, "signs": theta["signs"].reshape(-1)[start:stop]}
        return self.decompress(part, (stop - start,))

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """``n`` signs (bool, or ±1 from earlier versions) and the scale (0-dim) or the dtype."""
        signs = expect(theta, "signs")
        if signs.numel() != math.prod(shape):
            raise ValueError(f"signs has {signs.numel()} entries, expected {math.prod(shape)}")
        if self.scale:
            expect(theta, "scale", (), integer=False)
        elif signs.dtype == torch.bool:
            expect(theta, "dtype", integer=False)

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage:
        """One bit a weight, plus one float for the scale."""
        n = math.prod(shape)
        if self.scale:
            return Storage(params=1, bits=n + FLOAT_BITS)
        return Storage(params=0, bits=n)


@attrs.frozen
class Ternarize(Operator):
    """argmin over c ≥ 0, t ∈ {−1, 0, 1}ⁿ of ‖w − c·t‖² (exact).

    For a support of the ``j`` largest magnitudes, the best ``c`` is their mean and the objective
    drops by ``(Σ_top-j |w|)² / j``; every ``j`` is tried at once from one sort and one cumsum.
    Example spec line::

        fc1 : ternarize()
    """

    name: ClassVar[str] = "ternarize"

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ = ``{"ternary": (n,) int8 in {−1, 0, 1}, "scale": 0-dim in w's dtype}``."""
        w = w.detach()
        flat = w.reshape(-1)  # (n,)
        magnitude = flat.to(torch.float64).abs()
        sorted_mag, order = torch.sort(magnitude, descending=True, stable=True)  # (n,)
        top = torch.cumsum(sorted_mag, 0)  # (n,) Σ of the j largest, j = 1 … n
        sizes = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=w.device)
        gain = top * top / sizes  # (n,) objective reduction of support size j
        last = torch.argmax(gain)  # 0-dim, first maximum: the smallest best support is last + 1
        # the exact common value when the support's magnitudes are all equal (idempotence);
        # kept as tensors: no host sync on an accelerator
        scale = torch.where(sorted_mag[0] == sorted_mag[last], sorted_mag[0], top[last] / sizes[last])
        in_support = torch.arange(flat.numel(), device=w.device) <= last  # (n,) in sorted order
        support = torch.empty_like(in_support).scatter_(0, order, in_support)  # (n,) in w's order
        signs = torch.where(flat >= 0, 1, -1).to(torch.int8)
        ternary = torch.where(support, signs, torch.zeros_like(signs))
        return {"ternary": ternary.reshape(w.shape), "scale": scale.to(w.dtype)}

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """``n`` integer codes in {−1, 0, 1} and a 0-dim scale."""
        ternary = expect(theta, "ternary", integer=True)
        if ternary.numel() != math.prod(shape):
            raise ValueError(f"ternary has {ternary.numel()} entries, expected {math.prod(shape)}")
        if ternary.numel() and (int(ternary.min()) < -1 or int(ternary.max()) > 1):
            raise ValueError("ternary holds a value outside {-1, 0, 1}")
        expect(theta, "scale", (), integer=False)

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``c · t`` in ``shape`` and the scale's dtype."""
        scale = theta["scale"]
        return (scale * theta["ternary"].to(scale.dtype)).reshape(shape)

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """``c · t[start:stop]``."""
        part = {**theta, "ternary": theta["ternary"].reshape(-1)[start:stop]}
        return self.decompress(part, (stop - start,))

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage:
        """Two bits a weight (``⌈log₂ 3⌉``) and one float for ``c``."""
        n = math.prod(shape)
        return Storage(params=1, bits=FLOAT_BITS + 2 * n)


OPERATORS: tuple[type[Operator], ...] = (Binarize, Ternarize)
