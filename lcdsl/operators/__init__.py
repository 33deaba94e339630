"""The built-in C-step operators, one family a module, registered like any plugin.

lcdsl's ``pyproject.toml`` declares the entry point ``builtin = "lcdsl.operators"`` in the group
``lcdsl``, so :mod:`lcdsl.registry` finds this module exactly as it finds a third-party plugin
and calls :func:`lcdsl_register_operators` below.
"""

from __future__ import annotations

import importlib

from lcdsl.hookspecs import hookimpl
from lcdsl.operators.base import Operator

__all__ = ["FAMILIES", "lcdsl_register_operators"]

FAMILIES = ("quant", "binary", "prune", "lowrank")
"""The modules under ``lcdsl.operators`` whose ``OPERATORS`` tuples are the built-ins."""


@hookimpl
def lcdsl_register_operators() -> list[type[Operator]]:
    """Every family's ``OPERATORS``, imported here (not at module import) so that a family
    that fails to import is reported as a problem of the ``builtin`` plugin, with the cause."""
    operators: list[type[Operator]] = []
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        operators.extend(module.OPERATORS)
    return operators
