"""The built-in C-step operators, registered like any plugin.

lcdsl's ``pyproject.toml`` declares the entry point ``builtin = "lcdsl.operators.builtin"`` in the
group ``lcdsl``, so :mod:`lcdsl.plugins.registry` finds this module exactly as it finds a
third-party plugin and calls :func:`lcdsl_register_operators` below. Like a third-party plugin, it
imports only :mod:`lcdsl.operators` (the families it collects live beside it).
"""

from __future__ import annotations

import importlib

from lcdsl.operators import Operator, hookimpl

__all__ = ["FAMILIES", "lcdsl_register_operators"]

FAMILIES = ("quant", "binary", "prune", "lowrank")
"""The modules under :mod:`lcdsl.operators` whose ``OPERATORS`` tuples are the built-ins."""


@hookimpl
def lcdsl_register_operators() -> list[type[Operator]]:
    """Every family's ``OPERATORS``, imported here (not at module import) so that a family
    that fails to import is reported as a problem of the ``builtin`` plugin, with the cause."""
    operators: list[type[Operator]] = []
    for family in FAMILIES:
        module = importlib.import_module(f"lcdsl.operators.{family}")
        operators.extend(module.OPERATORS)
    return operators
