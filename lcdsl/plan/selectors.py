"""Selectors: which of a model's parameters a rule's left-hand side names.

- A glob is dot-aware: ``*`` (and ``?``) stay inside one dotted segment, ``**`` spans any number
  of segments (including none).
- A glob whose last segment is a wildcard (``conv*``, ``features.**``) names *modules*, and so
  their ``weight``; a glob ending in a literal segment may also name parameters directly
  (``fc1.bias``, ``**.bias``). A literal naming a module means its ``weight``. Biases are never
  taken unless named.
- ``@Linear`` names the weight of every module of that class; ``layer4.**@Conv2d`` keeps what the
  glob matches where the owning module is of that class.
- Tied parameters (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) answer to every name
  they have; a match is always the *canonical* name, the one ``model.named_parameters()`` keeps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import torch
from torch import nn

from lcdsl.language.spec import NameSelector, TypeSelector
from lcdsl.plan.names import unwrap

__all__ = ["ModelIndex", "glob_regex", "names_module_weights", "is_norm_layer", "is_literal"]

_NORM_NAME = re.compile(r"(Batch|Layer|Group|Instance|RMS)Norm")
_NORM_TYPES: tuple[type, ...] = tuple(
    t for t in (
        nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, getattr(nn, "RMSNorm", None),
    ) if t is not None
)  # fmt: skip


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (BatchNorm*, InstanceNorm*, LayerNorm, GroupNorm,
    RMSNorm, or a class of that name such as Hugging Face's ``T5LayerNorm``): its ``weight`` and
    ``bias`` are a scale γ and shift β per feature, not a layer's weights."""
    return isinstance(module, _NORM_TYPES) or any(_NORM_NAME.search(c.__name__) for c in type(module).__mro__)


def is_literal(pattern: str) -> bool:
    """Whether a glob has no wildcard: it names one module or parameter."""
    return not any(c in pattern for c in "*?")


@functools.lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression a dot-aware glob stands for, anchored at both ends."""
    parts: list[str] = []
    segments = pattern.split(".")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            # any number of whole segments, with their separating dots
            parts.append(r"(?:[^.]+(?:\.[^.]+)*)?" if last else r"(?:[^.]+\.)*")
            continue
        body = "".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in segment)
        parts.append(body + ("" if last else r"\."))
    return re.compile("".join(parts) + r"\Z")


def names_module_weights(pattern: str) -> bool:
    """True when the glob's last segment is a wildcard: it then names modules, not parameters."""
    last = pattern.split(".")[-1]
    return "*" in last or "?" in last


class ModelIndex:
    """The names a model offers to selectors: parameters (each tensor once, under its canonical
    name, with the other names of a tied tensor as aliases), modules that own a ``weight``, and
    buffers (for the errors that say a name is one)."""

    def __init__(self, model: nn.Module) -> None:
        model = unwrap(model)  # names as the model inside a DDP/torch.compile wrapper has them
        self.parameters: dict[str, nn.Parameter] = {}
        canonical: dict[int, str] = {}
        for name, param in model.named_parameters():
            if name not in self.parameters:
                self.parameters[name] = param
                canonical.setdefault(id(param), name)
        self.aliases: dict[str, str] = {}
        """The other names of tied parameters: alias → canonical name."""
        for name, param in model.named_parameters(remove_duplicate=False):
            first = canonical.get(id(param))
            if first is not None and name != first and name not in self.parameters:
                self.aliases.setdefault(name, first)
        self.ties: dict[str, tuple[str, ...]] = {}
        """Canonical name → its aliases, for the tied parameters only."""
        for alias, name in self.aliases.items():
            self.ties[name] = (*self.ties.get(name, ()), alias)
        self.modules: dict[str, nn.Module] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            if name:
                self.modules.setdefault(name, module)
        # modules that hold a parameter called `weight` themselves: what a module name stands for
        self.weighted: dict[str, str] = {}
        for name, module in self.modules.items():
            weight = module._parameters.get("weight")
            if isinstance(weight, torch.Tensor) and id(weight) in canonical:
                self.weighted[name] = canonical[id(weight)]
        self.buffers: set[str] = {n for n, _ in model.named_buffers()}
        self.order = {name: i for i, name in enumerate(self.parameters)}
        # the module that holds each parameter itself, and the parameter's name there: its layout's key
        self.owners: dict[str, tuple[nn.Module, str]] = {}
        for module_name, module in model.named_modules():
            for leaf, param in module._parameters.items():
                full = f"{module_name}.{leaf}" if module_name else leaf
                if param is not None and self.parameters.get(full) is param:
                    self.owners.setdefault(full, (module, leaf))
        # every name a parameter answers to: its own and its aliases, and the module owning each
        self._names: dict[str, str] = {**{n: n for n in self.parameters}, **self.aliases}

    def _sorted(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names), key=self.order.__getitem__)

    def _owner_types(self, name: str) -> set[str]:
        """Class names of the modules a parameter name (or an alias of its tensor) belongs to."""
        owners = set()
        for full in (name, *self.ties.get(name, ())):
            module = self.modules.get(full.rpartition(".")[0]) if "." in full else None
            if module is not None:
                owners.add(type(module).__name__)
        return owners

    def match_name(self, selector: NameSelector) -> list[str]:
        """Canonical parameter names matched by a glob (and its type filter), in model order (may be empty)."""
        regex = glob_regex(selector.pattern)
        wanted = selector.type_name
        found = {
            weight
            for module, weight in self.weighted.items()
            if regex.match(module) and (wanted is None or type(self.modules[module]).__name__ == wanted)
        }
        if not names_module_weights(selector.pattern):
            for name, target in self._names.items():
                if not regex.match(name):
                    continue
                owner = self.modules.get(name.rpartition(".")[0]) if "." in name else None
                if wanted is None or (owner is not None and type(owner).__name__ == wanted):
                    found.add(target)
        return self._sorted(found)

    def match_type(self, selector: TypeSelector) -> list[str]:
        """Weights of the modules of a class name, in model order (may be empty)."""
        return self._sorted(w for m, w in self.weighted.items() if type(self.modules[m]).__name__ == selector.type_name)

    def module_types(self, under: NameSelector | None = None) -> list[str]:
        """Class names of the modules that own a weight (those ``under``'s glob matches), each once."""
        if under is None:
            return sorted({type(self.modules[m]).__name__ for m in self.weighted})
        plain = NameSelector(under.pattern)
        types = set()
        for name in self.match_name(plain):
            types |= self._owner_types(name)
        return sorted(types)

    def is_norm(self, name: str) -> bool:
        """Whether a parameter belongs to a normalization layer (:func:`is_norm_layer`)."""
        return any(
            is_norm_layer(self.modules[full.rpartition(".")[0]])
            for full in (name, *self.ties.get(name, ()))
            if "." in full and full.rpartition(".")[0] in self.modules
        )

    def owner_type(self, name: str) -> str:
        """The class name of the module that holds a parameter (``""`` at the root)."""
        module = self.modules.get(name.rpartition(".")[0]) if "." in name else None
        return type(module).__name__ if module is not None else ""

    def describe(self, name: str, quote: str = "") -> str:
        """A canonical name with its ties: ``transformer.wte.weight (tied: lm_head.weight)``; with
        ``quote="'"`` the names are quoted as messages quote them."""
        tied = self.ties.get(name)
        named = f"{quote}{name}{quote}"
        return f"{named} (tied: {', '.join(quote + t + quote for t in tied)})" if tied else named

    def matching_buffers(self, selector: NameSelector) -> list[str]:
        """The buffers a glob names (BatchNorm's ``running_mean``, …), in model order."""
        regex = glob_regex(selector.pattern)
        return [b for b in sorted(self.buffers) if regex.match(b)]

    def children(self, module: str) -> list[str]:
        """The names (last segment) of a module's direct children."""
        found = self.modules.get(module)
        return [n for n, _ in found.named_children()] if found is not None else []

    def owner(self, name: str) -> tuple[nn.Module, str]:
        """The module that holds parameter ``name`` itself, and the parameter's name in it
        (``(Conv1D, "weight")`` for ``transformer.h.0.mlp.c_fc.weight``)."""
        return self.owners[name]

    def suggestions(self) -> list[str]:
        """Names worth suggesting for a glob that matched nothing: modules with weights, parameters,
        other modules (containers)."""
        return list(self.weighted) + list(self._names) + [m for m in self.modules if m not in self.weighted]
