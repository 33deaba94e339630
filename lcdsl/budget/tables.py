"""A task's distortion table: every option's ``‖target − Δ(Π_i(target))‖²``, checked, for the
allocation of a budget (the engine's C step and ``lcdsl check`` use the same one)."""

from __future__ import annotations

import torch

from lcdsl.errors import LcdslError, PluginError
from lcdsl.operators.choice import Choice

__all__ = ["checked_table"]


def checked_table(choice: Choice, target: torch.Tensor, mu: float, where: str) -> torch.Tensor:
    """``choice.distortions(target, mu)``: one finite number per option.

    Args:
        where: the task and budget, for messages (``task fc1.weight (budget 'within 40kB')``).

    Raises:
        PluginError: an operator's ``distortion_table`` hook raised (also for the wrong number of
            values, which :meth:`Choice.distortions` refuses), or gave a value that is not finite.
    """
    try:
        table = choice.distortions(target, mu)
    except LcdslError:
        raise
    except Exception as exc:  # a plugin's distortion_table hook may raise anything
        raise PluginError(f"the distortion table of {where} raised {type(exc).__name__}: {exc}") from exc
    if not bool(torch.isfinite(table).all()):
        raise PluginError(f"the distortion table of {where} holds values that are not finite: {table.tolist()}")
    return table
