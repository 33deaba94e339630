"""``deploy``: a compressed model rebuilt from compact and smaller layers, with a per-layer report.

Two passes over a model that holds ``Δ(θ)``:

1. **Layers** (no graph needed): each module that owns a compressed parameter is offered to the
   plugins' ``lcdsl_deploy_layer`` hook (:meth:`lcdsl.plugins.registry.Registry.deploy_layer`);
   the built-ins turn ``quant``/``binarize``/``ternarize`` layers into codebook layers and
   ``lowrank`` ones into two layers. A task of a budget (a ``Choice``) deploys as the option its
   C step chose (:func:`deployed_operator`). This works on any model, fx-traceable or not.
2. **Units** (a graph needed, :mod:`lcdsl.deploy.units`): units that are never read or always
   constant are removed from pairs of layers, BatchNorms between convolutions included.

Every compressed layer is accounted for: rewritten (a :class:`Change`, with what did it) or left
as is (a :class:`Kept`, with why). Given example inputs, each change carries the relative
difference of that layer's outputs in the deployed model against the original's,
``max |y' − y| / max |y|``, and the deployment the same for the model's outputs; when the unit
pass would make the model's outputs differ by more than :data:`TOLERANCE` (a pair found on a
path the traced graph did not take), it is undone and a note says so.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
from torch import nn

from lcdsl.deploy.units import UnitCut, is_hf_conv1d, remove_units
from lcdsl.errors import PluginError
from lcdsl.operators.base import Operator, Theta, View, describe
from lcdsl.operators.choice import Choice
from lcdsl.operators.compact import CodebookLayer, set_cache
from lcdsl.plan.model import Plan
from lcdsl.plan.names import unwrap
from lcdsl.plugins.registry import Registry, default_registry
from lcdsl.store.probe import logits_of

__all__ = [
    "Change", "Kept", "Deployment", "deploy", "deployed_operator", "TOLERANCE", "describe_module",
    "relative_difference",
]  # fmt: skip

TOLERANCE = 1e-4
"""The largest relative output difference the unit pass may cause before it is undone."""


@attrs.frozen
class Change:
    """One layer of the deployed model that differs from the original."""

    module: str
    """The module's name in the model."""
    before: str
    """What it was, e.g. ``Linear(300→100)``."""
    after: str
    """What it is now, e.g. ``Linear(300→10) · Linear(10→100)``."""
    by: str = ""
    """What rewrote it: ``quant(k=2), plugin 'builtin'`` or ``unit pass: 210 constant units``."""
    relative_difference: float | None = None
    """``max |y' − y| / max |y|`` of this layer's outputs on the example inputs (over the units
    it kept), None without example inputs."""


@attrs.frozen
class Kept:
    """A compressed layer left as it is, and why."""

    module: str
    """The module's name (or the parameter's, when no module owns it alone)."""
    what: str
    """The layer, e.g. ``Linear(784→300)``, and its operator."""
    reason: str
    """Why it was not rewritten."""


@attrs.frozen
class Deployment:
    """What :func:`deploy` returns."""

    module: nn.Module
    """The deployed copy of the model."""
    changes: tuple[Change, ...] = attrs.field(converter=tuple)
    """The layers that changed, in model order."""
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """What could not be done for the model as a whole (e.g. it cannot be traced)."""
    kept: tuple[Kept, ...] = attrs.field(default=(), converter=tuple)
    """The compressed layers left as they are, with the reason."""
    relative_difference: float | None = None
    """``max |y' − y| / max |y|`` of the model's outputs on the example inputs."""

    def lines(self) -> list[str]:
        """The report as lines of text: each change, each layer kept, the notes."""
        out = []
        for c in self.changes:
            gap = "" if c.relative_difference is None else f" (relative output difference {c.relative_difference:.1e})"
            out.append(f"{c.module}: {c.before} → {c.after} [{c.by}]{gap}")
        out += [f"{k.module}: {k.what}: left as is: {k.reason}" for k in self.kept]
        out += list(self.notes)
        if self.relative_difference is not None:
            out.append(f"model outputs: relative difference {self.relative_difference:.1e}")
        return out


def describe_module(module: nn.Module) -> str:
    """A layer in a few words: ``Linear(784→300)``, ``CodebookLinear(784→300, k=2, 1-bit codes)``."""
    if isinstance(module, CodebookLayer):
        return f"{type(module).__name__}({module.extra_repr().split(', bias=')[0]})"
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}→{module.out_features})"
    if is_hf_conv1d(module):
        inp, out = module.weight.shape
        return f"Conv1D({inp}→{out})"
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return f"Conv2d({module.in_channels}→{module.out_channels}, {kh}×{kw})"
    if isinstance(module, nn.BatchNorm2d):
        return f"BatchNorm2d({module.num_features})"
    if isinstance(module, nn.Embedding):
        return f"Embedding({module.num_embeddings}×{module.embedding_dim})"
    if isinstance(module, nn.Sequential):
        return " · ".join(describe_module(m) for m in module)
    if type(module).__name__ == "ConstantInputs":
        return f"{describe_module(module.layer)} + constant inputs"
    return type(module).__name__


def relative_difference(original: torch.Tensor, deployed: torch.Tensor) -> float:
    """``max |deployed − original| / max |original|`` (the absolute difference when ``original`` is 0)."""
    scale = float(original.abs().max()) if original.numel() else 0.0
    gap = float((deployed.to(original.dtype) - original).abs().max()) if original.numel() else 0.0
    return gap / scale if scale > 0 else gap


def _owners(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """Parameter identity → every (module name, parameter name in it) that holds it."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for leaf, param in module._parameters.items():
            if param is not None and (name, leaf) not in owners.get(id(param), []):
                owners.setdefault(id(param), []).append((name, leaf))
    return owners


def _deploy_layers(
    model: nn.Module, plan: Plan, thetas: dict[str, Theta], registry: Registry, cache: bool
) -> tuple[dict[str, nn.Module], dict[str, str], list[Kept]]:
    """Pass 1: each owner of a compressed parameter offered to the plugins' hook."""
    owners = _owners(model)
    deployed: dict[str, nn.Module] = {}
    by: dict[str, str] = {}
    kept: list[Kept] = []
    for task in plan.tasks:
        theta = thetas.get(task.name)
        try:
            operator, theta = deployed_operator(task.operator, theta)
        except ValueError as exc:
            kept += [Kept(name, describe(task.operator), f"its θ chooses no option: {exc}") for name in task.parameters]
            continue
        op_text = describe(operator)
        view = View.of(operator, task.shapes, task.layout)
        for index, name in enumerate(task.parameters):
            try:
                param = model.get_parameter(name)
            except AttributeError:
                kept.append(Kept(name, op_text, "the model has no parameter of this name"))
                continue
            for module_name, leaf in owners.get(id(param), []):
                module = model.get_submodule(module_name)
                what = f"{describe_module(module)}, {op_text}"
                if theta is None:
                    kept.append(Kept(module_name, what, "no θ was given for its task"))
                    continue
                device = param.device
                on_device = {key: value.to(device) for key, value in theta.items()}
                try:
                    found = registry.deploy_layer(module=module, parameter=leaf, operator=operator,
                                                  theta=on_device, view=view, index=index)  # fmt: skip
                except PluginError as exc:
                    kept.append(Kept(module_name, what, str(exc)))
                    continue
                if found is None:
                    kept.append(Kept(module_name, what, _why_not(operator.name, module, leaf)))
                    continue
                new, plugin = found
                deployed[module_name] = set_cache(new.to(device), cache)
                by[module_name] = f"{op_text}, plugin '{plugin}'"
    return deployed, by, kept


def deployed_operator(operator: Operator, theta: Theta | None) -> tuple[Operator, Theta | None]:
    """The operator and θ a task deploys as: a :class:`~lcdsl.operators.choice.Choice` as the
    option its θ selected, with that option's own θ (so the option's plugin is asked first and
    the layer becomes what that option's layers become); any other operator as it is.

    Raises:
        ValueError: a Choice's θ holds no valid option index.
    """
    if isinstance(operator, Choice) and theta is not None:
        return operator.option_of(theta)
    return operator, theta


def _why_not(operator: str, module: nn.Module, leaf: str) -> str:
    if leaf != "weight":
        return f"its {leaf} is not a weight that a compact layer replaces; it holds Δ(θ) densely"
    if operator == "lowrank":
        return "two layers of this rank would cost as many multiply-adds as one (r·(m + n) ≥ m·n), or the layer type has none"
    if operator == "prune":
        return "zeros stay in the dense layer (no sparse kernel); whole units are removed only between layers, by the unit pass"
    return f"no installed plugin deploys '{operator}' on a {type(module).__name__}; it holds Δ(θ) densely"  # fmt: skip


def _outputs(model: nn.Module, names: list[str], example: Any) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The model's outputs on ``example`` and those of the modules ``names`` (last call each)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(module: nn.Module, args: Any, out: Any, name: str = name) -> None:
            tensor = logits_of(out)
            if tensor is not None:
                seen[name] = tensor.detach()
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            out = model(**example) if isinstance(example, dict) else model(example)
    finally:
        for handle in handles:
            handle.remove()
    result = logits_of(out)
    return (None if result is None else result.detach()), seen


def _unit_words(cut: UnitCut, side: str) -> str:
    words = []
    if cut.unread:
        words.append(f"{cut.unread} unread")
    if cut.constant:
        words.append(f"{cut.constant} constant")
    where = f"outputs, inputs of {cut.second}" if side == "first" else f"inputs, outputs of {cut.first}"
    return f"unit pass: {' and '.join(words)} units removed ({where})"


def deploy(
    model: nn.Module,
    plan: Plan | None = None,
    thetas: dict[str, Theta] | None = None,
    *,
    shrink: bool = True,
    cache: bool = False,
    example: Any = None,
    registry: Registry | None = None,
) -> Deployment:
    """A copy of ``model`` built from compact and smaller layers; see the module docstring.

    Args:
        model: the model, holding ``Δ(θ)`` (it is not modified); put it in eval mode first
            when it has BatchNorms (their statistics are folded).
        plan: the plan it was compressed with; its tasks' layers go to the deploy hook.
        thetas: ``θ`` by task name.
        shrink: remove units that are never read or always constant (the unit pass).
        cache: codebook layers keep their expanded weight after the first forward (faster,
            more memory) instead of expanding it at every forward.
        example: inputs (a tensor, or a dict of keyword inputs) to measure output differences on.
        registry: the plugins to ask (default: :func:`~lcdsl.plugins.registry.default_registry`).

    Returns:
        The deployed copy, the layers changed and kept (with why), notes, and the differences.
    """
    model = unwrap(model)  # a DDP/torch.compile wrapper's model: the copy is of the model inside
    notes: list[str] = []
    deployed_layers: dict[str, nn.Module] = {}
    by: dict[str, str] = {}
    kept: list[Kept] = []
    with torch.no_grad():
        if plan is not None and thetas is not None:
            deployed_layers, by, kept = _deploy_layers(model, plan, thetas, registry or default_registry(), cache)
        cuts: list[UnitCut] = []
        shrunk: dict[str, nn.Module] = {}
        norms: dict[str, nn.Module] = {}
        if shrink:
            shrunk, norms, cuts = remove_units(model, deployed_layers, notes)
    result = _assemble(model, {**deployed_layers, **shrunk}, norms, by, cuts, kept, notes, cache, example)
    if cuts and result.relative_difference is not None and result.relative_difference > TOLERANCE:
        undone = deploy(model, plan, thetas, shrink=False, cache=cache, example=example, registry=registry)
        note = (f"the unit pass was undone: it made the outputs differ by {result.relative_difference:.1e} "
                f"(relative), more than {TOLERANCE:g}, so a pair it found is not one the model runs")  # fmt: skip
        return attrs.evolve(undone, notes=(*undone.notes, *notes, note))
    return result


def _assemble(
    model: nn.Module, replaced: dict[str, nn.Module], norms: dict[str, nn.Module], by: dict[str, str],
    cuts: list[UnitCut], kept: list[Kept], notes: list[str], cache: bool, example: Any,
) -> Deployment:  # fmt: skip
    deployed = copy.deepcopy(model)
    for name, module in {**replaced, **norms}.items():
        deployed.set_submodule(name, set_cache(module, cache))
    set_cache(deployed, cache)
    unit_by: dict[str, list[str]] = {}
    kept_outputs: dict[str, torch.Tensor] = {}
    for cut in cuts:
        unit_by.setdefault(cut.first, []).append(_unit_words(cut, "first"))
        unit_by.setdefault(cut.second, []).append(_unit_words(cut, "second"))
        kept_outputs[cut.first] = cut.kept
        for bn in cut.between:
            unit_by.setdefault(bn, []).append(f"unit pass: channels of {cut.first} removed")
            kept_outputs[bn] = cut.kept
    names = [name for name, _ in model.named_modules() if name in replaced or name in norms]
    overall, differences = _differences(model, deployed, names, kept_outputs, example)
    changes = []
    for name in names:
        before, after = describe_module(model.get_submodule(name)), describe_module(deployed.get_submodule(name))
        what = "; ".join(filter(None, [by.get(name, ""), *unit_by.get(name, [])]))
        changes.append(Change(name, before, after, what, differences.get(name)))
    rewritten = set(names)
    kept = [k for k in kept if k.module not in rewritten]
    return Deployment(deployed, changes, notes, kept, overall)


def _differences(
    model: nn.Module, deployed: nn.Module, names: list[str], kept_outputs: dict[str, torch.Tensor], example: Any
) -> tuple[float | None, dict[str, float]]:
    if example is None:
        return None, {}
    was = model.training
    model.eval(), deployed.eval()
    try:
        y, before = _outputs(model, names, example)
        y_new, after = _outputs(deployed, names, example)
    finally:
        model.train(was)
    differences = {}
    for name in names:
        if name not in before or name not in after:
            continue
        original, new = before[name], after[name]
        if name in kept_outputs and original.shape != new.shape:
            axis = 1 if original.dim() == 4 else original.dim() - 1  # conv channels, else the last axis
            original = original.index_select(axis, kept_outputs[name].to(original.device))
        if original.shape == new.shape:
            differences[name] = relative_difference(original, new)
    overall = relative_difference(y, y_new) if y is not None and y_new is not None and y.shape == y_new.shape else None
    return overall, differences

