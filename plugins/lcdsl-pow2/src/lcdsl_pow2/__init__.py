"""lcdsl-pow2: power-of-two quantization as an lcdsl plugin.

The entry point ``pow2 = "lcdsl_pow2"`` (group ``lcdsl``) names this module; lcdsl calls the
hook below and the spec keyword ``pow2`` becomes available::

    fc1 : pow2(bits=4)
"""

from __future__ import annotations

from lcdsl.operators import Operator, hookimpl
from lcdsl_pow2.operator import Pow2

__all__ = ["Pow2", "lcdsl_register_operators"]
__version__ = "0.1.0"


@hookimpl
def lcdsl_register_operators() -> list[type[Operator]]:
    """The operators of this plugin: :class:`Pow2`."""
    return [Pow2]
