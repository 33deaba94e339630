"""Selectors: which of a model's parameters a rule's left-hand side names.

- A glob is dot-aware: ``*`` (and ``?``) stay inside one dotted segment, ``**`` spans any number
  of segments (including none).
- A glob whose last segment is a wildcard (``conv*``, ``features.**``) names *modules*, and so
  their ``weight``; a glob ending in a literal segment may also name parameters directly
  (``fc1.bias``, ``**.bias``). A literal naming a module means its ``weight``. Biases are never
  taken unless named.
- ``@Linear`` names the weight of every module of that class.
"""

from __future__ import annotations

import functools
import re

import torch
from torch import nn

from lcdsl.language.spec import NameSelector, TypeSelector
from lcdsl.plan.names import strip_ddp_prefix

__all__ = ["ModelIndex", "glob_regex", "names_module_weights"]


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
    """The names a model offers to selectors: parameters, and modules that own a ``weight``."""

    def __init__(self, model: nn.Module) -> None:
        self.parameters: dict[str, nn.Parameter] = {}
        for name, param in model.named_parameters():
            self.parameters.setdefault(strip_ddp_prefix(name), param)
        self.modules: dict[str, nn.Module] = {}
        for name, module in model.named_modules():
            name = strip_ddp_prefix(name)
            if name and name != "module":
                self.modules.setdefault(name, module)
        # modules that hold a parameter called `weight` themselves: what a module name stands for
        self.weighted: dict[str, str] = {
            name: f"{name}.weight"
            for name, module in self.modules.items()
            if isinstance(module._parameters.get("weight"), torch.Tensor)
            and f"{name}.weight" in self.parameters
        }
        self.order = {name: i for i, name in enumerate(self.parameters)}
        # the module that holds each parameter itself, and the parameter's name there: its layout's key
        self.owners: dict[str, tuple[nn.Module, str]] = {}
        for module_name, module in model.named_modules():
            for leaf, param in module._parameters.items():
                full = strip_ddp_prefix(f"{module_name}.{leaf}" if module_name else leaf)
                if param is not None and self.parameters.get(full) is param:
                    self.owners.setdefault(full, (module, leaf))

    def match_name(self, selector: NameSelector) -> list[str]:
        """Parameter names matched by a glob, in model order (may be empty)."""
        regex = glob_regex(selector.pattern)
        found = {weight for module, weight in self.weighted.items() if regex.match(module)}
        if not names_module_weights(selector.pattern):
            found.update(name for name in self.parameters if regex.match(name))
        return sorted(found, key=self.order.__getitem__)

    def match_type(self, selector: TypeSelector) -> list[str]:
        """Weights of the modules of a class name, in model order (may be empty)."""
        found = [w for m, w in self.weighted.items() if type(self.modules[m]).__name__ == selector.type_name]
        return sorted(found, key=self.order.__getitem__)

    def module_types(self) -> list[str]:
        """Class names of the modules that own a weight, each once."""
        return sorted({type(self.modules[m]).__name__ for m in self.weighted})

    def owner(self, name: str) -> tuple[nn.Module, str]:
        """The module that holds parameter ``name`` itself, and the parameter's name in it
        (``(Conv1D, "weight")`` for ``transformer.h.0.mlp.c_fc.weight``)."""
        return self.owners[name]

    def suggestions(self) -> list[str]:
        """Names worth suggesting for a glob that matched nothing: modules with weights, parameters."""
        return list(self.weighted) + list(self.parameters)
