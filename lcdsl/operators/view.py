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
- ``"tensor"``: one tensor in its own shape (e.g. structured pruning of conv channels).

A joint group of several tensors is only possible for ``"vector"`` operators.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs
import torch

__all__ = ["View", "ViewKind", "VIEW_KINDS", "view_shape", "split_view"]

ViewKind = Literal["vector", "matrix", "tensor"]
"""How an operator sees a task's weights: the value of :attr:`Operator.view`."""

VIEW_KINDS: tuple[str, ...] = ("vector", "matrix", "tensor")
"""Every :data:`ViewKind`."""


def _to_shapes(shapes: Iterable[Iterable[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(n) for n in s) for s in shapes)


def _shape_of(kind: str, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The view's shape; ValueError (the message the binder shows) for shapes the kind cannot take."""
    if kind not in VIEW_KINDS:
        raise ValueError(f"unknown view {kind!r}; a view is one of {', '.join(map(repr, VIEW_KINDS))}")
    if kind == "vector":
        return (sum(math.prod(s) for s in shapes),)
    if len(shapes) != 1:
        raise ValueError(f"a '{kind}' operator takes one tensor, got {len(shapes)}")
    shape = shapes[0]
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
    two tensors). Parameters handed to :meth:`gather` and :meth:`scatter` must have
    :attr:`shapes`, in order (not checked on the hot path).
    """

    kind: ViewKind
    """``"vector"``, ``"matrix"`` or ``"tensor"``."""
    shapes: tuple[tuple[int, ...], ...] = attrs.field(converter=_to_shapes)
    """The shape of each parameter of the task, in order."""
    shape: tuple[int, ...] = attrs.field(init=False)
    """The shape the operator sees: ``(Σ numel,)``, ``(out, in·kh·kw)``, or the tensor's shape."""

    @shape.default
    def _shape(self) -> tuple[int, ...]:
        return _shape_of(self.kind, self.shapes)

    @classmethod
    def of(cls, operator: Any, shapes: Iterable[Iterable[int]]) -> View:
        """The view ``operator`` declares (``operator.view``, read on the instance) of tensors of ``shapes``.

        Raises:
            ValueError: the operator declares an unknown view, or one that cannot take ``shapes``.
        """
        kind = operator.view  # may be an instance property (structured pruning)
        if not isinstance(kind, str) or kind not in VIEW_KINDS:
            name = getattr(operator, "name", type(operator).__name__)
            raise ValueError(f"operator {name} has unknown view {kind!r}")
        return cls(kind, shapes)  # type: ignore[arg-type]

    @property
    def numel(self) -> int:
        """How many numbers the view holds (all the task's weights)."""
        return math.prod(self.shape)

    def gather(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The parameters as one view-shaped tensor: a reshape (no copy) of a single parameter,
        a ``torch.cat`` of several (a vector view). Differentiable when grad is on."""
        if self.kind == "tensor":
            return params[0]
        if len(params) == 1:
            return params[0].reshape(self.shape)  # (n,) or (out, in·kh·kw)
        return torch.cat([p.reshape(-1) for p in params])  # (Σ n,)

    def split(self, value: torch.Tensor) -> list[torch.Tensor]:
        """A view-shaped ``value`` cut into one piece a parameter, each of its parameter's shape;
        the pieces are views into ``value`` where its layout allows (always for a contiguous one).

        Raises:
            ValueError: ``value`` does not hold :attr:`numel` numbers.
        """
        if value.numel() != self.numel:
            raise ValueError(f"a tensor of shape {tuple(value.shape)} does not fit the {self.kind} view {self.shape}")
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
