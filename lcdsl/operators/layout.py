"""Layer layouts: which axis of a layer's weight holds its outputs, and which its inputs.

A structured operator (``prune(by=rows|filters|channels)``, ``lowrank``) must know what a row is.
PyTorch's ``nn.Linear`` and ``nn.Conv2d`` store outputs first, ``(out, in, kh, kw)``; Hugging
Face's ``Conv1D`` (GPT-2) stores ``(in, out)``; a transposed convolution ``(in, out, kh, kw)``. A
:class:`Layout` says where the two axes are, so that a :class:`~lcdsl.operators.View` can show
every layer to its operator in the one order ``(outputs, inputs, kernel…)``: the ``"matrix"``
view is ``(outputs, inputs·kernel)`` and the ``"tensor"`` view the weight with its axes put in
that order, whatever the storage order (transposes are views: no copy).

Layouts are declared by module class through the hook ``lcdsl_register_layouts`` (built-ins and
plugins alike, see :mod:`lcdsl.plugins.hookspecs`), as a mapping from a module class (or its
name) to a :class:`Layout` (for the module's ``weight``) or to a function
``(module, parameter name) → Layout | None`` (for other parameters, or layouts that depend on the
instance; it may raise ``ValueError`` to say why an instance has none)::

    @hookimpl
    def lcdsl_register_layouts():
        return {MyDense: Layout(outputs=1, inputs=0)}   # MyDense.weight is (in, out)

Element-wise operators (quantization, pruning of single weights, binarization, …) need no layout
and work on any parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import attrs

__all__ = ["Layout", "LayoutRule", "STORAGE_ORDER", "find_layout", "layout_key"]


def _axis(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a layout's {attribute.name} must be an axis (an integer ≥ 0), got {value!r}")


@attrs.frozen
class Layout:
    """Which axis of a weight is the layer's outputs and which its inputs; the other axes
    (a convolution's kernel) follow in their storage order.

    ``Layout(outputs=0, inputs=1)`` is PyTorch's own order (``nn.Linear``, ``nn.Conv*d``);
    ``Layout(outputs=1, inputs=0)`` that of HF ``Conv1D`` and ``nn.ConvTranspose*d``.
    """

    outputs: int = attrs.field(default=0, validator=_axis)
    """The axis of the output units (a Linear's rows, a conv's filters)."""
    inputs: int = attrs.field(default=1, validator=_axis)
    """The axis of the input channels (a Linear's columns)."""

    def __attrs_post_init__(self) -> None:
        if self.outputs == self.inputs:
            raise ValueError(f"a layout needs two different axes for outputs and inputs, got {self.outputs} twice")

    def permutation(self, ndim: int) -> tuple[int, ...]:
        """The storage axes in the order ``(outputs, inputs, kernel…)``, for ``tensor.permute``.

        Raises:
            ValueError: a weight of ``ndim`` dimensions has no such axes.
        """
        if max(self.outputs, self.inputs) >= ndim:
            raise ValueError(
                f"the layout puts outputs on axis {self.outputs} and inputs on axis {self.inputs}, "
                f"but the weight has {ndim} dimension{'s' if ndim != 1 else ''}"
            )
        rest = [axis for axis in range(ndim) if axis not in (self.outputs, self.inputs)]
        return (self.outputs, self.inputs, *rest)

    def describe(self) -> str:
        """``outputs on axis 1, inputs on axis 0``, for messages."""
        return f"outputs on axis {self.outputs}, inputs on axis {self.inputs}"


STORAGE_ORDER = Layout(0, 1)
"""PyTorch's order, outputs first: what a :class:`~lcdsl.operators.View` without a layout assumes."""

LayoutRule = Union[Layout, Callable[[Any, str], "Layout | None"]]
"""What ``lcdsl_register_layouts`` maps a module class to: the layout of its ``weight``, or a
function of the module and a parameter's name (``"weight"``, ``"weight_ih_l0"``) returning the
parameter's layout, or None when it has none."""


def layout_key(key: Any) -> str:
    """A mapping key of ``lcdsl_register_layouts`` as text: a class by its qualified name."""
    return f"{key.__module__}.{key.__qualname__}" if isinstance(key, type) else str(key)


def find_layout(layouts: Mapping[Any, LayoutRule], module: Any, parameter: str) -> Layout | None:
    """The layout of ``module``'s parameter ``parameter`` (a name without dots), or None.

    The module's class and then its bases are looked up, each as the class itself, then by its
    qualified name (``"transformers.pytorch_utils.Conv1D"``), then by its bare name
    (``"Conv1D"``); the first class found decides (a subclass of ``nn.Linear`` has its layout
    unless it declares its own). A :class:`Layout` applies to the ``weight`` only.

    Raises:
        ValueError: the rule found says why this module has no layout (e.g. a grouped
            transposed convolution).
    """
    for cls in type(module).__mro__:
        for key in (cls, f"{cls.__module__}.{cls.__qualname__}", cls.__name__):
            rule = layouts.get(key)
            if rule is None:
                continue
            if isinstance(rule, Layout):
                return rule if parameter == "weight" else None
            found = rule(module, parameter)
            if found is not None and not isinstance(found, Layout):
                raise TypeError(f"the layout rule of {layout_key(key)} returned {found!r}, not a Layout")
            return found
    return None
