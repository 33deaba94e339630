"""A task's view: its parameters' tensors seen as the one tensor an operator works on.

An operator declares the kind of view it needs (``view: ClassVar[ViewKind] = "vector"``); a
:class:`View` is that kind together with the shapes of the task's parameters. It knows the shape
the operator sees, gathers the live parameters into it, and cuts a view-shaped tensor (``Δ(θ)``,
``λ``) back into parameter-shaped pieces. The binder, the engine, additive terms, the saved
model and :func:`lcdsl.project` all go through it::

    view = View.of(LowRank(rank=4), [(16, 3, 5, 5)])
    view.shape                       # (16, 75): (out, in·kh·kw)
    w = view.gather([conv.weight])   # (16, 75), a reshape of the weight (no copy)
    view.scatter(delta, [conv.weight])

The kinds:

- ``"vector"``: all tensors of the task flattened and concatenated, shape ``(Σ numel,)``;
- ``"matrix"``: one tensor as ``(out, in·kh·kw)`` (rows are the output axis, columns all the
  input axes);
- ``"tensor"``: one tensor with its axes in the order ``(out, in, kh, kw)`` (e.g. structured
  pruning of conv channels).

A joint group of several tensors is only possible for ``"vector"`` operators.

**Layouts.** Rows are the layer's outputs whatever the order the layer stores its weight in: a
``"matrix"`` or ``"tensor"`` view has the :class:`~lcdsl.operators.layout.Layout` of its tensor
(the binder finds it from the module that owns the parameter), and puts the output axis first
and the input axis second. HF ``Conv1D`` stores ``(in, out)``::

    view = View("matrix", [(32, 128)], Layout(outputs=1, inputs=0))
    view.shape                        # (128, 32): (out, in)
    w = view.gather([c_fc.weight])    # c_fc.weight.T, a view (no copy)

:meth:`split` (and so :meth:`scatter`) always gives views of a view-shaped tensor back in each
parameter's own shape; :meth:`gather` is a view too except for a matrix of a tensor whose
outputs do not come first and that has more than two axes (a transposed convolution), where the
reshape copies. Without a layout a view takes the storage order to be ``(out, in, kernel…)``
(PyTorch's). A ``"vector"`` view ignores layouts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs
import torch

from lcdsl.operators.layout import Layout

__all__ = ["View", "ViewKind", "VIEW_KINDS", "view_shape", "split_view"]

ViewKind = Literal["vector", "matrix", "tensor"]
"""How an operator sees a task's weights: the value of :attr:`Operator.view`."""

VIEW_KINDS: tuple[str, ...] = ("vector", "matrix", "tensor")
"""Every :data:`ViewKind`."""


def _to_shapes(shapes: Iterable[Iterable[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(n) for n in s) for s in shapes)


def _shape_of(
    kind: str, shapes: tuple[tuple[int, ...], ...], order: tuple[int, ...] | None
) -> tuple[int, ...]:
    """The view's shape; ValueError (the message the binder shows) for shapes the kind cannot take."""
    if kind not in VIEW_KINDS:
        raise ValueError(f"unknown view {kind!r}; a view is one of {', '.join(map(repr, VIEW_KINDS))}")
    if kind == "vector":
        return (sum(math.prod(s) for s in shapes),)
    if len(shapes) != 1:
        raise ValueError(f"a '{kind}' operator takes one tensor, got {len(shapes)}")
    shape = shapes[0] if order is None else tuple(shapes[0][axis] for axis in order)  # (out, in, kernel…)
    if kind == "matrix":
        if len(shape) < 2:
            raise ValueError(f"a matrix operator needs a tensor of 2 or more dimensions, got shape {tuple(shape)}")
        return (shape[0], math.prod(shape[1:]))
    return shape


@attrs.frozen
class View:
    """The shape of a task's tensors as its operator sees them, and the way there and back.

    Built with :meth:`of` (from an operator) or directly; either raises ``ValueError`` when the
    kind is unknown or cannot take the shapes (a ``"matrix"`` of a 1-D tensor, a ``"tensor"`` of
    two tensors, a layout whose axes the tensor lacks). Parameters handed to :meth:`gather` and
    :meth:`scatter` must have :attr:`shapes`, in order (not checked on the hot path).
    """

    kind: ViewKind
    """``"vector"``, ``"matrix"`` or ``"tensor"``."""
    shapes: tuple[tuple[int, ...], ...] = attrs.field(converter=_to_shapes)
    """The shape of each parameter of the task, in order."""
    layout: Layout | None = None
    """Which axes of the (one) tensor are the outputs and the inputs; None: outputs first,
    inputs second (PyTorch's order). Ignored by a ``"vector"`` view."""
    order: tuple[int, ...] | None = attrs.field(init=False, repr=False, eq=False)
    """The storage axes in the order the operator sees them, None when that is the storage order."""
    shape: tuple[int, ...] = attrs.field(init=False)
    """The shape the operator sees: ``(Σ numel,)``, ``(out, in·kh·kw)``, or the tensor's shape
    with its axes in the order ``(out, in, kernel…)``."""

    @order.default
    def _order(self) -> tuple[int, ...] | None:
        if self.layout is None or self.kind == "vector" or len(self.shapes) != 1:
            return None
        order = self.layout.permutation(len(self.shapes[0]))
        return None if order == tuple(range(len(order))) else order

    @shape.default
    def _shape(self) -> tuple[int, ...]:
        return _shape_of(self.kind, self.shapes, self.order)

    @classmethod
    def of(cls, operator: Any, shapes: Iterable[Iterable[int]], layout: Layout | None = None) -> View:
        """The view ``operator`` declares (``operator.view``, read on the instance) of tensors of
        ``shapes``, with the tensor's ``layout`` (used by ``"matrix"`` and ``"tensor"`` views).

        Raises:
            ValueError: the operator declares an unknown view, or one that cannot take ``shapes``.
        """
        kind = operator.view  # may be an instance property (structured pruning)
        if not isinstance(kind, str) or kind not in VIEW_KINDS:
            name = getattr(operator, "name", type(operator).__name__)
            raise ValueError(f"operator {name} has unknown view {kind!r}")
        return cls(kind, shapes, layout if kind != "vector" else None)  # type: ignore[arg-type]

    @property
    def outputs(self) -> int | None:
        """How many output units the tensor has (rows of the matrix view); None for a vector view."""
        return None if self.kind == "vector" else self.shape[0]

    @property
    def numel(self) -> int:
        """How many numbers the view holds (all the task's weights)."""
        return math.prod(self.shape)

    def gather(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The parameters as one view-shaped tensor: a reshape (no copy) of a single parameter,
        a ``torch.cat`` of several (a vector view). Differentiable when grad is on."""
        if self.kind == "tensor":
            return params[0] if self.order is None else params[0].permute(self.order)  # (out, in, kernel…)
        if len(params) == 1:
            p = params[0] if self.order is None else params[0].permute(self.order)
            return p.reshape(self.shape)  # (n,) or (out, in·kh·kw)
        return torch.cat([p.reshape(-1) for p in params])  # (Σ n,)

    def split(self, value: torch.Tensor) -> list[torch.Tensor]:
        """A view-shaped ``value`` cut into one piece a parameter, each of its parameter's shape;
        the pieces are views into ``value`` where its layout allows (always for a contiguous one).

        Raises:
            ValueError: ``value`` does not hold :attr:`numel` numbers.
        """
        if value.numel() != self.numel:
            raise ValueError(f"a tensor of shape {tuple(value.shape)} does not fit the {self.kind} view {self.shape}")
        if len(self.shapes) == 1 and self.order is not None:
            seen = tuple(self.shapes[0][axis] for axis in self.order)  # (out, in, kernel…)
            back = tuple(sorted(range(len(self.order)), key=self.order.__getitem__))  # the inverse permutation
            return [value.reshape(seen).permute(back)]
        if len(self.shapes) == 1:
            return [value.reshape(self.shapes[0])]
        pieces = torch.split(value.reshape(-1), [math.prod(s) for s in self.shapes])
        return [piece.reshape(s) for piece, s in zip(pieces, self.shapes)]

    @torch.no_grad()
    def scatter(self, value: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Copy a view-shaped ``value`` into ``params`` in place (under ``no_grad``; ``copy_``
        converts dtype and device).

        Raises:
            ValueError: ``value`` does not fit the view, or ``params`` are not one a shape.
        """
        if len(params) != len(self.shapes):
            raise ValueError(f"the view has {len(self.shapes)} parameters, got {len(params)}")
        for p, piece in zip(params, self.split(value)):
            p.copy_(piece)


def view_shape(view: str, shapes: Iterable[Iterable[int]]) -> tuple[int, ...]:
    """The shape an operator of ``view`` sees for tensors of ``shapes``: :attr:`View.shape`."""
    return View(view, shapes).shape  # type: ignore[arg-type]


def split_view(view: str, params: Sequence[torch.Tensor], value: torch.Tensor) -> list[torch.Tensor]:
    """A task's view-shaped ``value`` cut into pieces shaped like ``params``: :meth:`View.split`."""
    return View(view, [p.shape for p in params]).split(value)  # type: ignore[arg-type]
