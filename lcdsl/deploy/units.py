"""Deploy modules: a compressed model rebuilt from smaller layers, so it also runs faster.

:func:`deploy` takes a model that holds ``Δ(θ)`` (after :meth:`Engine.finalize`,
:func:`lcdsl.store.model.load_compressed` or :func:`lcdsl.store.lcz.load_lcz`) and returns a copy in
which

- every ``lowrank`` Linear of rank ``r`` is two Linears ``in → r → out`` (``V`` then ``U``), and
  every ``lowrank`` Conv2d a ``kh×kw`` convolution to ``r`` channels followed by a 1×1 one, when
  ``r·(m + n) < m·n`` (fewer multiply-adds, not only fewer stored numbers);
- a Linear ``A`` feeding a Linear ``B`` through element-wise activations only (``tanh``,
  ``relu``, …, as a ``torch.fx`` trace shows) loses the units that do nothing: an all-zero
  column of ``B`` (the unit is never read) is dropped from both; an all-zero row of ``A`` (the
  unit always outputs ``act(b_j)``) is dropped from both after ``B_{:,j}·act(b_j)`` is added to
  ``B``'s bias. Rows-pruned (``prune(l0=…, by=rows)``) and channels-pruned layers shrink this way;
  the zeros are read from the weights, so it does not matter which operator made them.

Outputs agree with the model's to float rounding (folded biases change the order of sums).
A model that ``torch.fx`` cannot trace still gets its low-rank layers factored.
"""

from __future__ import annotations

import copy
from collections import Counter

import attrs
import torch
import torch.nn.functional as F
from torch import fx, nn

from lcdsl.operators.base import Theta, View
from lcdsl.operators.lowrank import LowRank
from lcdsl.plan.model import Plan
from lcdsl.plan.names import unwrap

__all__ = ["Change", "Deployment", "deploy", "ELEMENTWISE"]

ELEMENTWISE: tuple[object, ...] = (
    torch.tanh, torch.relu, torch.sigmoid, F.relu, F.tanh, F.sigmoid, F.gelu, F.silu, F.elu, F.leaky_relu,
    nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Identity,
    "tanh", "relu", "sigmoid",
)  # fmt: skip
"""Functions, module classes and tensor methods that act on each entry alone: a unit whose input
is constant stays constant through them. Dropout is not one (it is random while training)."""


@attrs.frozen
class Change:
    """One layer of the deployed model that differs from the original."""

    module: str
    """The module's name in the model."""
    before: str
    """What it was, e.g. ``Linear(300→100)``."""
    after: str
    """What it is now, e.g. ``Linear(300→10) · Linear(10→100)``."""


@attrs.frozen
class Deployment:
    """What :func:`deploy` returns."""

    module: nn.Module
    """The deployed copy of the model."""
    changes: tuple[Change, ...] = attrs.field(converter=tuple)
    """The layers that changed, in model order."""
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Why some step could not be done (e.g. a model that ``torch.fx`` cannot trace)."""


@attrs.define
class _Layer:
    """A Linear or Conv2d being rebuilt: its weight as a matrix or as factors, and its bias."""

    module: nn.Module
    weight: torch.Tensor | None  # (out, in·kh·kw), or None when factored
    u: torch.Tensor | None  # (out, r)
    v: torch.Tensor | None  # (r, in·kh·kw)
    bias: torch.Tensor | None  # (out,)

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight if self.weight is not None else self.u @ self.v  # (out, in·kh·kw)

    def keep_outputs(self, keep: torch.Tensor) -> None:
        if self.weight is not None:
            self.weight = self.weight[keep]
        else:
            self.u = self.u[keep]
        if self.bias is not None:
            self.bias = self.bias[keep]

    def keep_inputs(self, keep: torch.Tensor) -> None:
        if self.weight is not None:
            self.weight = self.weight[:, keep]
        else:
            self.v = self.v[:, keep]


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}→{module.out_features})"
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return f"Conv2d({module.in_channels}→{module.out_channels}, {kh}×{kw})"
    if isinstance(module, nn.Sequential):
        return " · ".join(_describe(m) for m in module)
    return type(module).__name__


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out, inp = weight.shape
    layer = nn.Linear(inp, out, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


def _conv(template: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, first: bool) -> nn.Conv2d:
    """The first (kh×kw, stride, padding of ``template``) or second (1×1) conv of a factored one."""
    out = weight.shape[0]
    if first:
        layer = nn.Conv2d(template.in_channels, out, template.kernel_size, stride=template.stride,
                          padding=template.padding, dilation=template.dilation, bias=False,
                          padding_mode=template.padding_mode, device=weight.device, dtype=weight.dtype)  # fmt: skip
    else:
        layer = nn.Conv2d(weight.shape[1], out, 1, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    View("matrix", (layer.weight.shape,)).scatter(weight, [layer.weight])  # (out, in·kh·kw) into the conv weight
    if bias is not None and not first:
        layer.bias.copy_(bias)
    return layer


def _build(layer: _Layer) -> nn.Module:
    module = layer.module
    if layer.u is not None:
        (m, r), n = layer.u.shape, layer.v.shape[1]
        if r * (m + n) >= m * n:  # shrinking made the factors no cheaper than the matrix
            layer.weight, layer.u, layer.v = layer.u @ layer.v, None, None
    if isinstance(module, nn.Linear):
        if layer.u is None:
            return _linear(layer.weight, layer.bias)
        return nn.Sequential(_linear(layer.v, None), _linear(layer.u, layer.bias))
    if layer.u is None:
        return module
    return nn.Sequential(_conv(module, layer.v, None, True), _conv(module, layer.u, layer.bias, False))


def _factor_tasks(model: nn.Module, plan: Plan, thetas: dict[str, Theta]) -> dict[str, _Layer]:
    """The low-rank tasks worth factoring, by module name."""
    layers = {}
    for task in plan.tasks:
        if not isinstance(task.operator, LowRank) or task.name not in thetas:
            continue
        owner, _, leaf = task.parameters[0].rpartition(".")
        module = model.get_submodule(owner) if leaf == "weight" else None
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            continue
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        u, v = thetas[task.name]["U"], thetas[task.name]["V"]  # (m, r), (r, n)
        (m, r), n = u.shape, v.shape[1]
        if r * (m + n) >= m * n:
            continue
        dtype, device = module.weight.dtype, module.weight.device
        bias = None if module.bias is None else module.bias.detach().clone()
        layers[owner] = _Layer(module, None, u.to(device, dtype), v.to(device, dtype), bias)
    return layers


def _is_elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    others = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, fx.Node)]
    if others or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(modules[node.target], tuple(t for t in ELEMENTWISE if isinstance(t, type)))
    if node.op == "call_method":
        return node.target in ELEMENTWISE
    return node.op == "call_function" and any(node.target is f for f in ELEMENTWISE if callable(f))


def _chain_to_linear(start: fx.Node, modules: dict[str, nn.Module]) -> tuple[list[fx.Node], str] | None:
    """The element-wise nodes from ``start`` (a Linear) to the next Linear, and its name."""
    chain, node = [], start
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_module" and isinstance(modules[user.target], nn.Linear) and user.args[0] is node:
            return chain, str(user.target)
        if not _is_elementwise(user, modules):
            return None
        chain.append(user)
        node = user
    return None


def _run_chain(chain: list[fx.Node], modules: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply the element-wise ``chain`` to ``x`` as the traced model would."""
    for node in chain:
        kwargs = dict(node.kwargs)
        if node.op == "call_module":
            x = modules[node.target](x)
        elif node.op == "call_method":
            x = getattr(x, node.target)(*node.args[1:], **kwargs)
        else:
            x = node.target(x, *node.args[1:], **kwargs)
    return x


def _shrink_pairs(model: nn.Module, layers: dict[str, _Layer], notes: list[str]) -> None:
    """Drop the units between Linear pairs that are never read or always constant."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # tracing user models fails in many ways
        notes.append(f"units were not pruned: torch.fx cannot trace the model ({type(exc).__name__}: {exc})")
        return
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Linear):
            continue
        found = _chain_to_linear(node, modules)
        if found is None:
            continue
        chain, b_name = found
        if calls[node.target] > 1 or calls[b_name] > 1:  # a layer called twice keeps its shape
            continue
        for name in (str(node.target), b_name):  # a factored or already shrunk layer stays as it is
            if name not in layers:
                layers[name] = _from_module(modules[name])
        a, b = layers[str(node.target)], layers[b_name]
        wa, wb = a.matrix, b.matrix  # (h, in), (out, h)
        unread = (wb == 0).all(0)  # (h,)
        constant = (wa == 0).all(1) & ~unread  # (h,)
        keep = ~(unread | constant)
        if bool(keep.all()) or not bool(keep.any()):
            continue
        if bool(constant.any()):
            bias_a = a.bias if a.bias is not None else torch.zeros(wa.shape[0], dtype=wa.dtype, device=wa.device)
            value = _run_chain(chain, modules, bias_a[constant].reshape(1, -1)).reshape(-1)  # (#constant,)
            fold = wb[:, constant] @ value  # (out,)
            b.bias = fold if b.bias is None else b.bias + fold
        a.keep_outputs(keep)
        b.keep_inputs(keep)


def _from_module(module: nn.Module) -> _Layer:
    bias = None if module.bias is None else module.bias.detach().clone()
    weight = View("matrix", (module.weight.shape,)).gather([module.weight.detach()]).clone()  # (out, in·kh·kw)
    return _Layer(module, weight, None, None, bias)


def deploy(
    model: nn.Module, plan: Plan | None = None, thetas: dict[str, Theta] | None = None, *, shrink: bool = True
) -> Deployment:
    """A copy of ``model`` built from smaller layers; see the module docstring.

    Args:
        model: the model, holding ``Δ(θ)`` (it is not modified).
        plan: the plan it was compressed with; its ``lowrank`` tasks are factored using ``thetas``.
        thetas: ``θ`` by task name (``U``, ``V`` of the low-rank tasks).
        shrink: drop unread and constant units between Linear layers.

    Returns:
        The deployed copy, the layers that changed, and notes on what could not be done.
    """
    notes: list[str] = []
    model = unwrap(model)  # a DDP/torch.compile wrapper's model: the copy is of the model inside
    with torch.no_grad():
        layers = _factor_tasks(model, plan, thetas) if plan is not None and thetas is not None else {}
        if shrink:
            _shrink_pairs(model, layers, notes)
        deployed = copy.deepcopy(model)
        changes = []
        for name, module in model.named_modules():
            if name not in layers:
                continue
            built = _build(layers[name])
            if built is module:
                continue
            deployed.set_submodule(name, built)
            if _describe(built) != _describe(module) or isinstance(built, nn.Sequential):
                changes.append(Change(name, _describe(module), _describe(built)))
    return Deployment(deployed, changes, notes)

