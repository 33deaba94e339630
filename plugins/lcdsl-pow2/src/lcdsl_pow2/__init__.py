"""lcdsl-pow2: power-of-two quantization as an lcdsl plugin.

The entry point ``pow2 = "lcdsl_pow2"`` (group ``lcdsl``) names this module; lcdsl calls the
hooks below: the spec keyword ``pow2`` becomes available::

    fc1 : pow2(bits=4)

and ``lcdsl.deploy.deploy`` (``lcdsl export --format onnx``) turns a ``pow2`` Linear or Conv2d
into a codebook layer of its signed levels (:mod:`lcdsl_pow2.deploy`).
"""

from __future__ import annotations

from torch import nn

from lcdsl.operators import Operator, Theta, View, hookimpl
from lcdsl_pow2.deploy import deployed_layer
from lcdsl_pow2.operator import Pow2

__all__ = ["Pow2", "lcdsl_register_operators", "lcdsl_deploy_layer"]
__version__ = "0.1.0"


@hookimpl
def lcdsl_register_operators() -> list[type[Operator]]:
    """The operators of this plugin: :class:`Pow2`."""
    return [Pow2]


@hookimpl
def lcdsl_deploy_layer(
    module: nn.Module, parameter: str, operator: Operator, theta: Theta, view: View, index: int
) -> nn.Module | None:
    """A ``pow2`` layer as a codebook layer (:func:`lcdsl_pow2.deploy.deployed_layer`)."""
    return deployed_layer(module, parameter, operator, theta, view, index)
