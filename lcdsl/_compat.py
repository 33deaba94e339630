"""Old import paths, kept working: ``import lcdsl.spec`` is :mod:`lcdsl.language.spec`, and so on.

Before the package had subpackages, its modules lay side by side (``lcdsl.spec``, ``lcdsl.parser``,
``lcdsl.checkpoint``, …). :data:`MOVED` maps each old path to where its names are now; a finder on
``sys.meta_path`` answers an import of an old path with the new module itself (so ``lcdsl.spec is
lcdsl.language.spec``), or, for a module whose names went to several places, with a module that
holds all of them. The first import of an old path says where to import from instead
(:class:`DeprecationWarning`). Paths that are packages now (``lcdsl.engine``, ``lcdsl.plan``,
``lcdsl.report``, ``lcdsl.training``, ``lcdsl.integrations``) need no alias: their ``__init__``
re-exports what the old module had.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

__all__ = ["MOVED", "install"]

MOVED: dict[str, tuple[str, ...]] = {
    "lcdsl.grammar": ("lcdsl.language.grammar",),
    "lcdsl.parser": ("lcdsl.language.parser",),
    "lcdsl.syntax_errors": ("lcdsl.language.syntax_errors",),
    "lcdsl.spec": ("lcdsl.language.spec",),
    "lcdsl.fmt": ("lcdsl.language.fmt",),
    "lcdsl.units": ("lcdsl.operators.units",),
    "lcdsl.bitpack": ("lcdsl.operators.bitpack",),
    "lcdsl.operators._kmeans1d": ("lcdsl.operators.kmeans1d.dp",),
    "lcdsl.operators._kmeans1d_cpu": ("lcdsl.operators.kmeans1d.cpu",),
    "lcdsl.hookspecs": ("lcdsl.plugins.hookspecs",),
    "lcdsl.registry": ("lcdsl.plugins.registry",),
    "lcdsl.selectors": ("lcdsl.plan.selectors",),
    "lcdsl.settings": ("lcdsl.plan.settings",),
    "lcdsl.binding": ("lcdsl.plan.binder",),
    "lcdsl.plan_report": ("lcdsl.plan.summary", "lcdsl.report.plan"),
    "lcdsl.events": ("lcdsl.engine.events",),
    "lcdsl.distributed": ("lcdsl.engine.distributed",),
    "lcdsl.checkpoint": ("lcdsl.store.atomic", "lcdsl.store.model", "lcdsl.faults"),
    "lcdsl.export": ("lcdsl.store.lcz",),
    "lcdsl.console": ("lcdsl.report.console",),
    "lcdsl.sweep": ("lcdsl.report.sweep",),
    "lcdsl.data": ("lcdsl.training.data",),
    "lcdsl.zoo": ("lcdsl.training.zoo",),
}
"""Old module path → the module(s) that hold its names now."""


class _Alias(importlib.abc.Loader):
    def __init__(self, targets: tuple[str, ...]) -> None:
        self.targets = targets

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a plain module; exec_module replaces or fills it

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        warnings.warn(
            f"{name} moved; import from {' / '.join(self.targets)} (or from lcdsl) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        found = [importlib.import_module(t) for t in self.targets]
        if len(found) == 1:
            sys.modules[name] = found[0]  # the import system returns what sys.modules holds
            return
        for target in found:
            for attr in getattr(target, "__all__", ()):
                setattr(module, attr, getattr(target, attr))
        module.__all__ = [a for t in found for a in getattr(t, "__all__", ())]
        module.__doc__ = f"Compatibility: the names of {', '.join(self.targets)}."


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        targets = MOVED.get(fullname)
        if targets is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(targets))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
