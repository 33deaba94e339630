"""The unit pass: units (a layer's outputs) that do nothing, removed from two layers at once.

A layer ``A`` feeding a layer ``B`` through functions that act on each unit alone (element-wise
activations, and BatchNorm between convolutions) loses the units that do nothing:

- a unit whose input column in ``B`` is all zero is never read: it is dropped from ``A``, from the
  BatchNorms between, and from ``B``;
- a unit whose row in ``A`` is all zero always outputs the constant ``c_j = chain(b_j)``: it is
  dropped likewise after its contribution is added to ``B``: ``B_{:,j}·c_j`` into the bias of a
  Linear; for a convolution, ``c_j`` times the sum of its kernel into the bias when ``B`` does not
  pad, else a one-channel convolution of a map of ones by ``Σ_j c_j·B_{:,j}`` beside ``B``
  (:class:`ConstantInputs`: at the borders zero padding makes the constant map non-constant, and
  this is exact there too).

Linear-like pairs are ``nn.Linear``, HF ``Conv1D`` and what the deploy hook made of them
(codebook layers, factored pairs); convolution pairs ``nn.Conv2d`` (ungrouped) and theirs. The
zeros are read from the weights, so it does not matter which operator made them
(``prune(by=rows)``, ``by=filters``, ``by=channels``, or plain sparsity that happens to empty a row).

The pairs are found in a ``torch.fx`` graph. A model that fx cannot trace (a ``forward`` that
branches on its input) is searched submodule by submodule: each child that traces is a graph of
its own (a ResNet's blocks, a GPT-2's MLPs), and the others are searched inside.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator

import attrs
import torch
import torch.nn.functional as F
from torch import fx, nn

from lcdsl.operators.compact import (
    CodebookConv2d,
    CodebookLayer,
    CodebookLinear,
    factored_conv2d,
    factored_linear,
)  # fmt: skip

__all__ = ["ELEMENTWISE", "ELEMENTWISE_CLASS_NAMES", "ConstantInputs", "UnitCut", "remove_units", "is_hf_conv1d"]

ELEMENTWISE: tuple[object, ...] = (
    torch.tanh, torch.relu, torch.sigmoid, F.relu, F.tanh, F.sigmoid, F.gelu, F.silu, F.elu, F.leaky_relu,
    nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Identity,
    "tanh", "relu", "sigmoid",
)  # fmt: skip
"""Functions, module classes and tensor methods that act on each entry alone: a unit whose input
is constant stays constant through them. Dropout is not one (it is random while training)."""

ELEMENTWISE_CLASS_NAMES: frozenset[str] = frozenset({
    "NewGELUActivation", "GELUActivation", "FastGELUActivation", "QuickGELUActivation", "GELUTanh",
    "SiLUActivation", "MishActivation", "ReLUSquaredActivation", "ClassInstantier",
})  # fmt: skip
"""Activation modules of Hugging Face transformers, by class name (it need not be installed)."""


def is_hf_conv1d(module: nn.Module) -> bool:
    """HF ``Conv1D`` (``x @ W + b`` with ``W`` stored ``(in, out)``), known by its class."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


class ConstantInputs(nn.Module):
    """``layer(x) + conv(1, kernel)``: a convolution whose removed input channels were constant
    maps ``c_j``; ``kernel = Σ_j c_j·W_{:,j}`` ``(out, 1, kh, kw)`` run on a map of ones with the
    layer's stride, padding and dilation gives their contribution, borders included."""

    def __init__(self, layer: nn.Module, kernel: torch.Tensor, template: nn.Conv2d) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("kernel", kernel.detach().clone())  # (out, 1, kh, kw)
        self.stride, self.padding, self.dilation = template.stride, template.padding, template.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(x[:, :1])  # (N, 1, H, W)
        return self.layer(x) + F.conv2d(ones, self.kernel, None, self.stride, self.padding, self.dilation)


@attrs.define
class _Layer:
    """A layer being rebuilt, its weight as ``(out, in, kernel…)`` in one of three forms."""

    conv: nn.Conv2d | None  # the template of a convolution; None for a Linear-like layer
    weight: torch.Tensor | None = None  # dense (out, in, kernel…)
    u: torch.Tensor | None = None  # factored: (out, r)
    v: torch.Tensor | None = None  # factored: (r, in, kernel…)
    codebook: torch.Tensor | None = None  # codebook: (k,)
    codes: torch.Tensor | None = None  # codebook: (out, in, kernel…)
    cache: bool = False
    bias: torch.Tensor | None = None  # (out,)
    constant_kernel: torch.Tensor | None = None  # (out, 1, kh, kw): removed constant input channels
    changed: bool = False

    def matrix(self) -> torch.Tensor:
        """The weight, ``(out, in, kernel…)``."""
        if self.weight is not None:
            return self.weight
        if self.u is not None:
            return (self.u @ self.v.reshape(self.v.shape[0], -1)).reshape(self.u.shape[0], *self.v.shape[1:])
        return self.codebook[self.codes]

    def keep_outputs(self, keep: torch.Tensor) -> None:
        for field in ("weight", "u", "codes", "bias", "constant_kernel"):
            value = getattr(self, field)
            if value is not None:
                setattr(self, field, value[keep])
        self.changed = True

    def keep_inputs(self, keep: torch.Tensor) -> None:
        for field in ("weight", "v", "codes"):
            value = getattr(self, field)
            if value is not None:
                setattr(self, field, value[:, keep])
        self.changed = True

    def add_bias(self, value: torch.Tensor) -> None:
        self.bias = value if self.bias is None else self.bias + value

    def build(self) -> nn.Module:
        """The module this layer now is."""
        if self.u is not None:
            (m, r), n = self.u.shape, self.v[0].numel()
            if r * (m + n) >= m * n:  # shrinking made the factors no cheaper than the matrix
                self.weight, self.u, self.v = self.matrix(), None, None
        if self.conv is None:
            if self.codes is not None:
                return CodebookLinear(self.codebook, self.codes, self.bias, cache=self.cache)
            if self.u is not None:
                return factored_linear(self.u, self.v, self.bias)
            out, inp = self.weight.shape
            layer = nn.Linear(inp, out, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
            _fill(layer, self.weight, self.bias)
            return layer
        template = self.conv
        if self.codes is not None:
            built: nn.Module = CodebookConv2d(template, self.codebook, self.codes, self.bias, cache=self.cache)
        elif self.u is not None:
            built = factored_conv2d(template, self.u, self.v.reshape(self.v.shape[0], -1), self.bias)
        else:
            out, inp = self.weight.shape[:2]
            built = nn.Conv2d(inp, out, template.kernel_size, stride=template.stride, padding=template.padding,
                              dilation=template.dilation, bias=self.bias is not None,
                              padding_mode=template.padding_mode, device=self.weight.device,
                              dtype=self.weight.dtype)  # fmt: skip
            _fill(built, self.weight, self.bias)
        if self.constant_kernel is not None:
            built = ConstantInputs(built, self.constant_kernel, template)
        return built


def _fill(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.requires_grad_(False)


def _bias_of(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach().clone() if isinstance(bias, torch.Tensor) else None


def _layer_of(module: nn.Module) -> _Layer | None:
    """``module`` (an original layer or what the deploy hook made of it) as a :class:`_Layer`,
    or None for a type the unit pass does not know."""
    if type(module) is nn.Linear:
        return _Layer(None, weight=module.weight.detach().clone(), bias=_bias_of(module))
    if is_hf_conv1d(module):
        return _Layer(None, weight=module.weight.detach().T.clone(), bias=_bias_of(module))  # (in, out) → (out, in)
    if type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros":
        return _Layer(module, weight=module.weight.detach().clone(), bias=_bias_of(module))
    if isinstance(module, (CodebookLinear, CodebookConv2d)) and getattr(module, "groups", 1) == 1:
        conv = None
        if isinstance(module, CodebookConv2d):
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                             padding=module.padding, dilation=module.dilation, bias=False, device="meta")  # fmt: skip
        return _Layer(conv, codebook=module.codebook, codes=module.codes(), cache=module.cache, bias=_bias_of(module))
    if isinstance(module, nn.Sequential) and len(module) == 2:
        first, second = module
        if type(first) is nn.Linear and type(second) is nn.Linear and first.bias is None:
            return _Layer(None, u=second.weight.detach().clone(), v=first.weight.detach().clone(), bias=_bias_of(second))
        if type(first) is nn.Conv2d and type(second) is nn.Conv2d and first.bias is None and second.kernel_size == (1, 1):
            u = second.weight.detach().reshape(second.out_channels, -1).clone()  # (out, r)
            return _Layer(first, u=u, v=first.weight.detach().clone(), bias=_bias_of(second))
    return None


@attrs.frozen
class UnitCut:
    """Units removed between two layers."""

    first: str
    """The layer whose outputs were removed."""
    second: str
    """The layer whose inputs were removed."""
    kept: torch.Tensor = attrs.field(eq=False)
    """The indices of ``first``'s outputs that remain, ``(kept,)``."""
    unread: int
    """Units removed because ``second`` never reads them."""
    constant: int
    """Units removed because they are constant (folded into ``second``)."""
    between: tuple[str, ...] = ()
    """The BatchNorms between the two, which lost the same channels."""


class _Tracer(fx.Tracer):
    """fx's tracer, with HF ``Conv1D``, HF activations and deployed layers kept as calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            is_hf_conv1d(m)
            or type(m).__name__ in ELEMENTWISE_CLASS_NAMES
            or isinstance(m, CodebookLayer)
            or super().is_leaf_module(m, module_qualified_name)
        )


def _trace(module: nn.Module) -> fx.Graph:
    """The graph of ``module``'s forward, arguments with defaults taken at their defaults (the
    call its parent makes most often; a pair found on another path is undone by the output check
    of :func:`lcdsl.deploy.deploy`)."""
    params = inspect.signature(module.forward).parameters.values()
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return _Tracer().trace(module, concrete_args=concrete or None)


def graphs(model: nn.Module, notes: list[str]) -> Iterator[tuple[str, fx.Graph]]:
    """(prefix, graph) of ``model``, or of the largest submodules that trace when it does not."""
    try:
        yield "", _trace(model)
        return
    except Exception as exc:  # tracing user models fails in many ways
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        notes.append(f"torch.fx cannot trace the model ({type(exc).__name__}: {message[:160]}); "
                     "units were searched in the submodules that trace")  # fmt: skip

    def search(module: nn.Module, prefix: str) -> Iterator[tuple[str, fx.Graph]]:
        for name, child in module.named_children():
            if not any(True for _ in child.children()):  # a layer: no pair inside
                continue
            try:
                graph = _trace(child)
            except Exception:  # noqa: BLE001 - a child that does not trace is searched inside
                yield from search(child, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}.", graph

    yield from search(model, "")


def _is_elementwise(node: fx.Node, modules: dict[str, nn.Module], prefix: str) -> bool:
    others = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, fx.Node)]
    if others or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        module = modules[prefix + str(node.target)]
        classes = tuple(t for t in ELEMENTWISE if isinstance(t, type))
        return isinstance(module, classes) or type(module).__name__ in ELEMENTWISE_CLASS_NAMES
    if node.op == "call_method":
        return node.target in ELEMENTWISE
    return node.op == "call_function" and any(node.target is f for f in ELEMENTWISE if callable(f))


def _is_batchnorm(node: fx.Node, modules: dict[str, nn.Module], prefix: str) -> bool:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    module = modules[prefix + str(node.target)]
    return type(module) is nn.BatchNorm2d and module.track_running_stats and module.running_mean is not None


def _is_layer(node: fx.Node, modules: dict[str, nn.Module], prefix: str, conv: bool) -> bool:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    module = modules[prefix + str(node.target)]
    return (type(module) is nn.Conv2d) if conv else (type(module) is nn.Linear or is_hf_conv1d(module))


def _chain(start: fx.Node, modules: dict[str, nn.Module], prefix: str, conv: bool) -> tuple[list[fx.Node], str] | None:
    """The per-unit nodes from ``start`` (a layer) to the next layer of its kind, and that layer's name."""
    chain, node = [], start
    while len(node.users) == 1:
        (user,) = node.users
        if _is_layer(user, modules, prefix, conv) and user.args[0] is node:
            return chain, prefix + str(user.target)
        if not (_is_elementwise(user, modules, prefix) or (conv and _is_batchnorm(user, modules, prefix))):
            return None
        chain.append(user)
        node = user
    return None


def _run_chain(
    chain: list[fx.Node], modules: dict[str, nn.Module], prefix: str, x: torch.Tensor, channels: torch.Tensor
) -> torch.Tensor:
    """The chain applied to ``x`` (``(1, units)``, or ``(1, units, 1, 1)`` for convolutions) as the
    model applies it in eval mode; BatchNorms use the statistics of ``channels`` only."""
    for node in chain:
        if node.op == "call_module":
            module = modules[prefix + str(node.target)]
            if isinstance(module, nn.BatchNorm2d):
                weight = None if module.weight is None else module.weight[channels]
                bias = None if module.bias is None else module.bias[channels]
                x = F.batch_norm(x, module.running_mean[channels], module.running_var[channels], weight, bias,
                                 False, 0.0, module.eps)  # fmt: skip
            else:
                x = module(x)
        elif node.op == "call_method":
            x = getattr(x, node.target)(*node.args[1:], **dict(node.kwargs))
        else:
            x = node.target(x, *node.args[1:], **dict(node.kwargs))
    return x


def _slice_batchnorm(module: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(int(keep.numel()), eps=module.eps, momentum=module.momentum, affine=module.affine,
                        device=module.running_mean.device, dtype=module.running_mean.dtype)  # fmt: skip
    with torch.no_grad():
        bn.running_mean.copy_(module.running_mean[keep])
        bn.running_var.copy_(module.running_var[keep])
        bn.num_batches_tracked.copy_(module.num_batches_tracked)
        if module.affine:
            bn.weight.copy_(module.weight[keep])
            bn.bias.copy_(module.bias[keep])
    return bn.requires_grad_(False).train(module.training)


def _fold_constants(b: _Layer, constant: torch.Tensor, value: torch.Tensor) -> None:
    """Add what ``b`` reads from its constant inputs (``value`` ``(#constant,)``) to ``b``."""
    wb = b.matrix()[:, constant]  # (out, #constant, kernel…)
    if b.conv is None:
        b.add_bias(wb @ value)  # (out,)
        return
    kernel = (wb * value.reshape(1, -1, 1, 1)).sum(1, keepdim=True)  # (out, 1, kh, kw)
    if all(p == 0 for p in b.conv.padding):  # every output position sees the whole kernel
        b.add_bias(kernel.sum((1, 2, 3)))
    else:
        b.constant_kernel = kernel if b.constant_kernel is None else b.constant_kernel + kernel


def _shared(model: nn.Module) -> set[str]:
    """Names of modules whose weight another module holds too (tied weights keep their shape)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is not None:
            owners.setdefault(id(weight), []).append(name)
    return {name for names in owners.values() if len(set(names)) > 1 for name in names}


@torch.no_grad()
def remove_units(
    model: nn.Module, deployed: dict[str, nn.Module], notes: list[str]
) -> tuple[dict[str, nn.Module], dict[str, nn.Module], list[UnitCut]]:
    """Find the pairs of ``model`` (the original, for its graph) and shrink them.

    Args:
        model: the model holding ``Δ(θ)``, in eval mode (BatchNorm statistics are read).
        deployed: module name → what the deploy hook put there; other layers are read from
            ``model``.
        notes: where to say what could not be searched.

    Returns:
        The rebuilt layers by name, the sliced BatchNorms by name, and the cuts made.
    """
    modules = dict(model.named_modules())
    shared = _shared(model)
    layers: dict[str, _Layer] = {}
    norms: dict[str, nn.Module] = {}
    cuts: list[UnitCut] = []
    for prefix, graph in graphs(model, notes):
        calls = Counter(prefix + str(node.target) for node in graph.nodes if node.op == "call_module")
        for node in graph.nodes:
            for conv in (False, True):
                if not _is_layer(node, modules, prefix, conv):
                    continue
                found = _chain(node, modules, prefix, conv)
                if found is None:
                    continue
                chain, b_name = found
                a_name = prefix + str(node.target)
                between = [prefix + str(n.target) for n in chain if _is_batchnorm(n, modules, prefix)]
                if any(calls[name] > 1 for name in (a_name, b_name, *between)) or {a_name, b_name} & shared:
                    continue  # a layer called twice, or whose weight another holds, keeps its shape
                for name in (a_name, b_name):
                    if name not in layers:
                        layer = _layer_of(deployed.get(name, modules[name]))
                        if layer is None:
                            break
                        layers[name] = layer
                else:
                    cut = _cut(layers[a_name], layers[b_name], chain, modules, prefix, a_name, b_name, between)
                    if cut is not None:
                        for bn_name in between:
                            norms[bn_name] = _slice_batchnorm(norms.get(bn_name, modules[bn_name]), cut.kept)
                        cuts.append(cut)
    return {name: layer.build() for name, layer in layers.items() if layer.changed}, norms, cuts


def _cut(
    a: _Layer, b: _Layer, chain: list[fx.Node], modules: dict[str, nn.Module], prefix: str, a_name: str, b_name: str,
    between: list[str],
) -> UnitCut | None:  # fmt: skip
    wa, wb = a.matrix(), b.matrix()  # (h, in, kernel…), (out, h, kernel…)
    h = wa.shape[0]
    if wb.shape[1] != h:
        return None
    unread = (wb.transpose(0, 1).reshape(h, -1) == 0).all(1)  # (h,)
    constant = (wa.reshape(h, -1) == 0).all(1) & ~unread  # (h,)
    keep = ~(unread | constant)
    if bool(keep.all()) or not bool(keep.any()):
        return None
    if bool(constant.any()):
        bias_a = a.bias if a.bias is not None else torch.zeros(h, dtype=wa.dtype, device=wa.device)
        index = constant.nonzero().reshape(-1)
        shape = (1, -1) if a.conv is None else (1, -1, 1, 1)
        value = _run_chain(chain, modules, prefix, bias_a[constant].reshape(shape), index).reshape(-1)  # (#constant,)
        _fold_constants(b, constant, value)
    kept = keep.nonzero().reshape(-1)
    a.keep_outputs(kept)
    b.keep_inputs(kept)
    return UnitCut(a_name, b_name, kept, int(unread.sum()), int(constant.sum()), tuple(between))
