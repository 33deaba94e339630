"""One C step from spec text on one tensor: the language, usable outside the engine."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lcdsl.errors import Diagnostic, SpecError
from lcdsl.language.parser import parse_expression
from lcdsl.operators.base import Operator, Theta, View
from lcdsl.operators.layout import Layout
from lcdsl.plan.binder import build_operator
from lcdsl.plugins.registry import Registry

__all__ = ["Projection", "project"]


class Projection(NamedTuple):
    """What :func:`project` returns."""

    delta: torch.Tensor
    """``Δ(θ)``, in the input tensor's shape, dtype and device."""
    theta: Theta
    """The compressed representation."""
    operator: Operator
    """The operator, with amounts resolved against the tensor."""


def project(
    expression: str,
    tensor: torch.Tensor,
    mu: float = 0.0,
    *,
    registry: Registry | None = None,
    layout: Layout | None = None,
) -> Projection:
    """Compress ``tensor`` with the operator(s) of ``expression``: ``θ = argmin ‖w − Δ(θ)‖²``.

    Example::

        >>> w = torch.randn(300, 100)
        >>> delta, theta, op = lcdsl.project("quant(k=4) + prune(l0=1%)", w)
        >>> delta.unique().numel() <= 4 + 300   # 4 codewords, plus 300 sparse corrections
        True

    Args:
        expression: the right-hand side of a rule, e.g. ``"quant(k=4)"``.
        tensor: the weights; not modified.
        mu: the penalty parameter (only penalty forms such as ``prune(l0_penalty=…)`` use it;
            at the default 0, the limit μ → 0⁺, they return their cheapest θ: give the μ you
            mean).
        registry: where operators are looked up; the installed plugins by default.
        layout: which axes of ``tensor`` are a layer's outputs and inputs, for structured
            operators (``Layout(outputs=1, inputs=0)`` for an HF ``Conv1D`` weight); by default
            outputs first, as ``nn.Linear`` and ``nn.Conv2d`` store them.

    Raises:
        SpecError: the expression does not parse, names an unknown operator, or does not fit the
            tensor (e.g. a rank above the matrix's smaller side).
    """
    source, filename = expression, "<expression>"
    try:
        terms = parse_expression(expression)
        op = build_operator(terms, registry=registry)
    except SpecError as exc:
        raise exc.with_source(source, filename) from None
    try:
        view = View.of(op, (tensor.shape,), layout)
        op = op.resolve(view.shape)
    except (ValueError, TypeError) as exc:
        message = f"cannot apply to a tensor of shape {tuple(tensor.shape)}: {exc}"
        diag = Diagnostic(message, terms[0].span, code="does-not-fit")
        raise SpecError(diag, source=source, filename=filename) from None
    with torch.no_grad():
        w = view.gather([tensor.detach()])
        theta = op.project(w, mu)
        (delta,) = view.split(op.decompress(theta, view.shape))  # the tensor's shape
    return Projection(delta, theta, op)
