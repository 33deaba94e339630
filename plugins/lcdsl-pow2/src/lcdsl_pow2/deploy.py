"""How a ``pow2`` layer deploys: a codebook layer whose codebook is the signed levels."""

from __future__ import annotations

import torch
from torch import nn

from lcdsl.operators import CodebookConv2d, CodebookLinear, Operator, Theta, View
from lcdsl_pow2.operator import Pow2

__all__ = ["signed_levels", "deployed_layer"]


def signed_levels(levels: torch.Tensor) -> torch.Tensor:
    """``[−2^emax, …, −2^emin, 0, 2^emin, …, 2^emax]`` ``(2E + 1,)`` from ``levels``
    ``[0, 2^emin, …, 2^emax]`` ``(E + 1,)``: code ``c`` (in ``[−E, E]``) is entry ``c + E``."""
    return torch.cat([-levels[1:].flip(0), levels])


def deployed_layer(
    module: nn.Module, parameter: str, operator: Operator, theta: Theta, view: View, index: int
) -> nn.Module | None:
    """A ``pow2`` ``nn.Linear`` or ``nn.Conv2d`` weight as a :class:`CodebookLinear` or
    :class:`CodebookConv2d` (at most 255 signed levels: codes fit a byte); None for anything else."""
    if not isinstance(operator, Pow2) or parameter != "weight":
        return None
    levels = theta["levels"]  # (E + 1,)
    codebook = signed_levels(levels).to(module.weight.dtype)
    codes = view.split(theta["codes"].long() + (levels.numel() - 1))[index]  # (out, in, …) in [0, 2E]
    bias = None if module.bias is None else module.bias.detach()
    if type(module) is nn.Linear:
        return CodebookLinear(codebook, codes, bias)
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return CodebookConv2d(module, codebook, codes, bias)
    return None
