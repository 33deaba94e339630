"""The built-in C-step operators and layer layouts, registered like any plugin.

lcdsl's ``pyproject.toml`` declares the entry point ``builtin = "lcdsl.operators.builtin"`` in the
group ``lcdsl``, so :mod:`lcdsl.plugins.registry` finds this module exactly as it finds a
third-party plugin and calls :func:`lcdsl_register_operators` and :func:`lcdsl_register_layouts`
below. Like a third-party plugin, it imports only :mod:`lcdsl.operators` (the families it collects
live beside it).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from lcdsl.operators import Layout, LayoutRule, Operator, hookimpl

__all__ = ["FAMILIES", "lcdsl_register_operators", "lcdsl_register_layouts"]

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


OUTPUTS_FIRST = Layout(outputs=0, inputs=1)
"""``(out, in, kernel…)``: nn.Linear, nn.Conv*d, and PyTorch's other layers."""
INPUTS_FIRST = Layout(outputs=1, inputs=0)
"""``(in, out, …)``: HF Conv1D (``x @ weight``) and transposed convolutions."""


def _transposed_conv(module: Any, parameter: str) -> Layout | None:
    """``(in, out/groups, k…)``: outputs on axis 1, when the convolution is not grouped."""
    if parameter != "weight":
        return None
    if module.groups != 1:
        raise ValueError(
            f"a grouped transposed convolution (groups={module.groups}) has no single output axis: "
            "axis 1 of its weight holds one group's outputs"
        )
    return INPUTS_FIRST


def _matrices_named_weight(module: Any, parameter: str) -> Layout | None:
    """RNN ``weight_ih_l0``/``weight_hh_l0`` (``(gates·hidden, in)``) and attention's
    ``in_proj_weight``/``q_proj_weight``…: outputs first, as a Linear's."""
    return OUTPUTS_FIRST if parameter.startswith("weight_") or parameter.endswith("_weight") else None


@hookimpl
def lcdsl_register_layouts() -> dict[type | str, LayoutRule]:
    """The layouts of PyTorch's layers and of Hugging Face's ``Conv1D`` (by name: transformers
    need not be installed).

    An ``nn.Embedding`` is seen as the table it stores, ``(num_embeddings, embedding_dim)``: its
    rows (``by=rows``) are the tokens and its columns (``by=channels``) the embedding
    dimensions, which is also the layout of an output ``nn.Linear`` tied to it (GPT-2's
    ``lm_head``), so a tied tensor has one layout."""
    layouts: dict[type | str, LayoutRule] = {
        nn.Linear: OUTPUTS_FIRST,
        nn.Bilinear: OUTPUTS_FIRST,  # (out, in1, in2): columns are in1·in2
        nn.Conv1d: OUTPUTS_FIRST,
        nn.Conv2d: OUTPUTS_FIRST,
        nn.Conv3d: OUTPUTS_FIRST,
        nn.ConvTranspose1d: _transposed_conv,
        nn.ConvTranspose2d: _transposed_conv,
        nn.ConvTranspose3d: _transposed_conv,
        nn.Embedding: OUTPUTS_FIRST,
        nn.EmbeddingBag: OUTPUTS_FIRST,
        nn.RNNBase: _matrices_named_weight,
        nn.MultiheadAttention: _matrices_named_weight,
        "transformers.pytorch_utils.Conv1D": INPUTS_FIRST,
    }
    return layouts
