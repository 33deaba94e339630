"""What an option costs, in a budget's unit: storage bits, stored numbers, or multiply-adds.

- ``"bits"``: ``op.storage(view_shape).bits``, exactly what ``lcdsl check`` counts (codebooks'
  floats, index bits, kept positions …);
- ``"params"``: ``op.storage(view_shape).params``, the numbers stored;
- ``"flops"``: the multiply-adds of the layer for one forward example: ``positions`` output
  positions (1 for a Linear or HF Conv1D, ``H_out·W_out`` for a conv) times the multiply-adds per
  position. Dense: every weight once. Low rank ``r`` of an ``(m, n)`` matrix: ``r·(m + n)`` (the
  two factors). Pruning to ``κ`` weights (or groups): the kept weights. Quantization and every
  other operator that keeps one value per weight: dense (a codebook does not cut multiply-adds).
  An operator says otherwise with a method ``multiply_adds(view_shape) -> int`` (per output
  position), as ``lowrank`` and ``prune`` do; a plugin's operator can too.
"""

from __future__ import annotations

import math

from lcdsl.operators.base import Operator
from lcdsl.operators.choice import Choice

__all__ = ["UNITS", "option_cost", "choice_costs", "dense_cost"]

UNITS = ("bits", "params", "flops")
"""The units a budget counts in."""

DENSE_BITS = 32
"""Bits of one dense weight, for ``30%`` budgets (a fraction of the dense storage)."""


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"a budget counts one of {', '.join(UNITS)}, got {unit!r}")


def _check_positions(positions: int) -> int:
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions is a count of output positions, ≥ 1, got {positions!r}")
    return positions


def dense_cost(view_shape: tuple[int, ...], unit: str, positions: int = 1) -> int:
    """The cost of the uncompressed weights of view ``view_shape``: 32 bits, one number, or one
    multiply-add per position, per weight (what a ``30%`` budget is a fraction of)."""
    _check_unit(unit)
    n = math.prod(view_shape)
    if unit == "bits":
        return DENSE_BITS * n
    if unit == "params":
        return n
    return n * _check_positions(positions)


def _multiply_adds(op: Operator, view_shape: tuple[int, ...]) -> int:
    """Multiply-adds per output position of a layer whose weight ``op`` compresses: the
    operator's own ``multiply_adds(view_shape)`` (low rank and pruning have one), else dense."""
    custom = getattr(op, "multiply_adds", None)
    if callable(custom):
        return int(custom(view_shape))
    return math.prod(view_shape)


def option_cost(op: Operator, view_shape: tuple[int, ...], unit: str, positions: int = 1) -> int:
    """What operator ``op`` on a task of view ``view_shape`` costs in ``unit``.

    Args:
        op: a resolved operator (not a :class:`Choice`: price its options, :func:`choice_costs`).
        view_shape: the shape the operator sees.
        unit: ``"bits"``, ``"params"`` or ``"flops"``.
        positions: output positions of the layer per example (``"flops"`` only).

    Raises:
        ValueError: an unknown unit, or an operator whose size only its C step tells (a penalty
            form), or a Choice.
    """
    _check_unit(unit)
    if isinstance(op, Choice):
        raise ValueError("a choice has one cost per option: use choice_costs")
    view_shape = tuple(int(s) for s in view_shape)
    if unit == "flops":
        return _multiply_adds(op, view_shape) * _check_positions(positions)
    storage = op.storage(view_shape)
    if storage is None:
        raise ValueError(f"{op.name} here is sized by its C step (a penalty form), so a budget cannot price it")
    return int(storage.bits if unit == "bits" else storage.params)


def choice_costs(choice: Choice, view_shape: tuple[int, ...], unit: str, positions: int = 1) -> tuple[int, ...]:
    """:func:`option_cost` of each option of ``choice``: one row of :attr:`Budget.costs`."""
    return tuple(option_cost(o, view_shape, unit, positions) for o in choice.options)
