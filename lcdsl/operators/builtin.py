"""The built-in C-step operators and layer layouts, registered like any plugin.

lcdsl's ``pyproject.toml`` declares the entry point ``builtin = "lcdsl.operators.builtin"`` in the
group ``lcdsl``, so :mod:`lcdsl.plugins.registry` finds this module exactly as it finds a
third-party plugin and calls :func:`lcdsl_register_operators`, :func:`lcdsl_register_layouts` and
:func:`lcdsl_deploy_layer` below. Like a third-party plugin, it imports only :mod:`lcdsl.operators` (the families it collects
live beside it).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from lcdsl.operators import (
    CodebookConv2d,
    CodebookEmbedding,
    CodebookLinear,
    Layout,
    LayoutRule,
    Operator,
    Theta,
    View,
    factored_conv2d,
    factored_linear,
    hookimpl,
)  # fmt: skip

__all__ = ["FAMILIES", "lcdsl_register_operators", "lcdsl_register_layouts", "lcdsl_deploy_layer"]

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


def _is_hf_conv1d(module: nn.Module) -> bool:
    """HF ``Conv1D`` (GPT-2's layers, ``x @ W + b``, ``W`` ``(in, out)``), known by name: transformers
    need not be installed."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def _codebook(operator: Operator, theta: Theta, view: View, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(codebook ``(k,)``, codes in the parameter's shape) of a built-in quantizer's θ, or None."""
    name = operator.name
    if name == "quant":
        return theta["codebook"], view.split(theta["assignments"])[index]
    if name == "ternarize":
        scale = theta["scale"]
        codebook = torch.stack([-scale, torch.zeros_like(scale), scale])  # codes −1, 0, 1 → 0, 1, 2
        return codebook, view.split(theta["ternary"].reshape(-1).long() + 1)[index]
    if name == "binarize":
        like = theta["scale"] if getattr(operator, "scale", False) else theta["dtype"]
        one = theta["scale"] if getattr(operator, "scale", False) else torch.ones((), dtype=like.dtype)
        codebook = torch.stack([-one, one]).to(like.device)
        signs = theta["signs"].reshape(-1)
        codes = signs.long() if signs.dtype == torch.bool else (signs > 0).long()
        return codebook, view.split(codes)[index]
    return None


def _additive(operator: Operator, theta: Theta, view: View, index: int) -> tuple[Any, ...] | None:
    """A codebook term plus an element-wise ``prune`` term (``quant(k=2) + prune(l0=1%)``):
    (codebook, codes, sparse correction in the parameter's shape), or None for other sums."""
    terms = getattr(operator, "terms", None)
    if terms is None or len(terms) != 2 or operator.view != "vector":
        return None
    names = [term.name for term in terms]
    if "prune" not in names or terms[names.index("prune")].view != "vector":
        return None
    q, p = (0, 1) if names[1] == "prune" else (1, 0)
    part = {key.split(".", 1)[1]: value for key, value in theta.items() if key.startswith(f"{q}.")}
    found = _codebook(terms[q], part, view, index)
    if found is None:
        return None
    indices, values = theta[f"{p}.indices"].long(), theta[f"{p}.values"]
    correction = torch.zeros(view.numel, dtype=values.dtype, device=values.device).index_put_((indices,), values)
    return (*found, view.split(correction)[index])  # (k,), codes and correction in the parameter's shape


def _codebook_layer(
    module: nn.Module, codebook: torch.Tensor, codes: torch.Tensor, correction: torch.Tensor | None = None
) -> nn.Module | None:
    bias = getattr(module, "bias", None)
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    codebook = codebook.detach().to(module.weight.dtype)
    if _is_hf_conv1d(module):  # (in, out) stored: the Linear's (out, in) is its transpose
        codes = codes.T
        correction = None if correction is None else correction.T
    sparse = None
    if correction is not None:
        flat = correction.reshape(-1)  # (n,) in the deployed layer's order
        positions = flat.nonzero().reshape(-1)
        sparse = (positions, flat[positions]) if positions.numel() else None
    if type(module) is nn.Linear or _is_hf_conv1d(module):
        return CodebookLinear(codebook, codes, bias, sparse=sparse)
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return CodebookConv2d(module, codebook, codes, bias, sparse=sparse)
    if type(module) is nn.Embedding and module.max_norm is None:
        return CodebookEmbedding(module, codebook, codes, sparse=sparse)
    return None


def _factored_layer(module: nn.Module, theta: Theta) -> nn.Module | None:
    """Two layers from ``U`` ``(m, r)`` and ``V`` ``(r, n)``, when they cost fewer multiply-adds."""
    u, v = theta["U"], theta["V"]
    (m, r), n = u.shape, v.shape[1]
    if r * (m + n) >= m * n:  # the pair would be no cheaper than the matrix
        return None
    bias = getattr(module, "bias", None)
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    dtype = module.weight.dtype
    u, v = u.to(dtype), v.to(dtype)
    if type(module) is nn.Linear or _is_hf_conv1d(module):  # both have the matrix view (out, in)
        return factored_linear(u, v, bias)
    if type(module) is nn.Conv2d and module.groups == 1:
        return factored_conv2d(module, u, v, bias)
    return None


@hookimpl
def lcdsl_deploy_layer(
    module: nn.Module, parameter: str, operator: Operator, theta: Theta, view: View, index: int
) -> nn.Module | None:
    """``quant``, ``binarize``, ``ternarize``: a codebook layer (``nn.Linear``, HF ``Conv1D``,
    ``nn.Conv2d``, ``nn.Embedding``; at most 256 codewords), with a sparse correction for one of
    them plus an element-wise ``prune``; ``lowrank``: two layers (``nn.Linear``,
    HF ``Conv1D``, ungrouped ``nn.Conv2d``) when ``r·(m + n) < m·n``. Only exact layer types
    (a subclass may read its weight elsewhere, as ``nn.MultiheadAttention`` does its ``out_proj``'s),
    only the ``weight``. Pruned layers shrink in :func:`lcdsl.deploy.deploy`'s unit pass instead,
    which needs the next layer too."""
    if parameter != "weight" or not isinstance(getattr(module, "weight", None), torch.Tensor):
        return None
    if operator.name == "lowrank":
        return _factored_layer(module, theta)
    found = _codebook(operator, theta, view, index) or _additive(operator, theta, view, index)
    if found is None or found[0].numel() > 256:
        return None
    return _codebook_layer(module, *found)
