"""Finding operators: the registry of operator names (and of layer layouts) the plugins provide.

Plugins are the entry points of the group ``lcdsl`` (see :mod:`lcdsl.plugins.hookspecs`); lcdsl's
own operators come through its own entry point ``builtin = "lcdsl.operators.builtin"``. Nothing is
loaded at import time: :func:`default_registry` loads once, on first use.

Which plugins load, and the checks each gets as it registers, are :mod:`lcdsl.plugins.manager`'s
(``LCDSL_BLOCK_PLUGINS`` / ``LCDSL_ALLOW_PLUGINS``). Here each plugin's hook is called on its own:
one that raises or returns something other than operator classes with spec-callable names is a
broken plugin, recorded in :attr:`Registry.problems` (with its distribution, version and the
cause), and the others keep working; ``lcdsl plugins`` shows the problems and what was blocked.

At deploy time, :meth:`Registry.deploy_layer` asks the plugins, one at a time, how a compressed
layer becomes a deployed module (``lcdsl_deploy_layer``): the operator's own plugin first, the
built-ins last.

The layouts plugins declare (``lcdsl_register_layouts``: which axis of a module type's weight is
its outputs) are collected the same way, after the operators, into :attr:`Registry.layouts`; a
plugin that returns something else than a mapping of module classes to layouts is a broken one.

Hooks are called through pluggy, once per plugin (:meth:`PluginManager.call_one`), so pluggy's
argument filtering applies: a hook can be given new arguments later and an implementation that
names fewer of them keeps working.

Example::

    from lcdsl.plugins.registry import default_registry

    Quant = default_registry().operator("quant")
    op = Quant(k=4)
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from torch import nn

from lcdsl.errors import PluginError, did_you_mean
from lcdsl.language.grammar import identifier_pattern
from lcdsl.operators.base import Operator
from lcdsl.operators.layout import Layout, LayoutRule, find_layout, layout_key
from lcdsl.plugins.manager import (
    ALLOW_ENV,
    BLOCK_ENV,
    BUILTIN,
    BUILTIN_MODULE,
    DEPLOY_LAYER,
    GROUP,
    REGISTER_LAYOUTS,
    REGISTER_OPERATORS,
    BlockedPlugin,
    PluginManager,
    PluginProblem,
    blocked_plugins,
    get_plugin_manager,
)  # fmt: skip

__all__ = [
    "GROUP", "BUILTIN", "BUILTIN_MODULE", "BLOCK_ENV", "ALLOW_ENV", "PluginInfo", "PluginProblem", "BlockedPlugin",
    "PluginManager", "UnknownOperatorError", "Registry", "get_plugin_manager", "default_registry",
]  # fmt: skip


@attrs.frozen
class PluginInfo:
    """A plugin that loaded, and what it provides."""

    name: str
    """The entry-point name, e.g. ``"builtin"`` or ``"pow2"``."""
    distribution: str
    """The distribution that declares the entry point, e.g. ``"lcdsl-pow2"``."""
    version: str
    """That distribution's version."""
    operators: tuple[str, ...] = ()
    """The operator names it provides, in the order it returned them."""
    layouts: tuple[str, ...] = ()
    """The module types it declares layouts for (classes by qualified name), in its order."""

    def label(self) -> str:
        """``name (distribution version)``, for messages."""
        return f"'{self.name}' ({self.distribution} {self.version})"


class UnknownOperatorError(KeyError):
    """No installed plugin provides an operator of this name."""

    def __str__(self) -> str:
        # KeyError's own __str__ quotes its argument; the message reads better plain
        return str(self.args[0]) if self.args else ""


def _operators_of(result: Any) -> tuple[type[Operator], ...]:
    """A hook result checked to be operator classes; raises PluginError naming the culprit."""
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        raise PluginError(f"{REGISTER_OPERATORS} returned {result!r}, not a list of operator classes")
    classes = []
    for item in result:
        if not (isinstance(item, type) and issubclass(item, Operator)):
            raise PluginError(f"{REGISTER_OPERATORS} returned {item!r}, which is not an Operator subclass")
        op_name = getattr(item, "name", None)
        if not isinstance(op_name, str) or not op_name:
            raise PluginError(
                f"operator class {item.__qualname__} has no valid 'name' (got {op_name!r}); "
                "set name: ClassVar[str] = 'keyword'"
            )
        if not identifier_pattern().fullmatch(op_name):
            raise PluginError(
                f"operator class {item.__qualname__} is named {op_name!r}, which no spec can call: "
                "an operator name is ASCII letters, digits and '_', not starting with a digit"
            )
        classes.append(item)
    return tuple(classes)


def _layouts_of(result: Any) -> dict[Any, LayoutRule]:
    """A layouts hook result checked to map module classes (or names) to layouts; raises
    PluginError naming the culprit."""
    if not isinstance(result, Mapping):
        raise PluginError(f"{REGISTER_LAYOUTS} returned {result!r}, not a mapping of module classes to layouts")
    for key, rule in result.items():
        if not (isinstance(key, type) or (isinstance(key, str) and key)):
            raise PluginError(f"{REGISTER_LAYOUTS} maps {key!r}, which is neither a module class nor a class name")
        if not (isinstance(rule, Layout) or callable(rule)):
            raise PluginError(
                f"{REGISTER_LAYOUTS} maps {layout_key(key)} to {rule!r}, which is neither a Layout nor a function "
                "(module, parameter name) -> Layout"
            )
    return dict(result)


def _to_block(first: PluginInfo, second: PluginInfo) -> str:
    """The plugin a name-clash message suggests blocking: never the built-ins, else the later one."""
    return first.name if second.name == BUILTIN else second.name


def _collect_layouts(pm: PluginManager, infos: list[PluginInfo]) -> dict[Any, LayoutRule]:
    """Call each plugin's layouts hook separately; its module types are added to its info."""
    layouts: dict[Any, LayoutRule] = {}
    declared_by: dict[Any, PluginInfo] = {}
    if getattr(pm.hook, REGISTER_LAYOUTS, None) is None:  # a manager made with other specifications
        return layouts
    for name in pm.implementers(REGISTER_LAYOUTS):
        distribution, version = pm.source(name)
        try:
            found: dict[Any, LayoutRule] = {}
            for result in pm.call_one(REGISTER_LAYOUTS, name) or [None]:
                found.update(_layouts_of(result))
        except Exception as exc:
            pm.add_problem(name, f"{REGISTER_LAYOUTS} failed", exc)
            continue
        index = next((i for i, info in enumerate(infos) if info.name == name), None)
        info = infos[index] if index is not None else PluginInfo(name, distribution, version)
        info = attrs.evolve(info, layouts=tuple(layout_key(key) for key in found))
        for key, rule in found.items():
            other = declared_by.get(key)
            if other is not None and layouts[key] != rule:
                raise PluginError(
                    f"the layout of {layout_key(key)} is declared by {other.label()} and by {info.label()}, "
                    f"differently; uninstall one, or block one with {BLOCK_ENV}={_to_block(other, info)}"
                )
            layouts[key] = rule
            declared_by[key] = info
        if index is not None:
            infos[index] = info
        else:
            infos.append(info)
    return layouts


def _collect(pm: PluginManager) -> tuple[dict[str, type[Operator]], list[PluginInfo], list[PluginProblem]]:
    """Call each plugin's hook separately, so one that raises does not hide the others."""
    operators: dict[str, type[Operator]] = {}
    providers: dict[str, PluginInfo] = {}
    infos: list[PluginInfo] = []
    for name in pm.implementers(REGISTER_OPERATORS):  # in registration order
        distribution, version = pm.source(name)
        try:
            # pluggy leaves out None results: a hook that returned None gave no result at all
            results = pm.call_one(REGISTER_OPERATORS, name) or [None]
            classes = tuple(cls for result in results for cls in _operators_of(result))
        except Exception as exc:
            pm.add_problem(name, f"{REGISTER_OPERATORS} failed", exc)
            continue
        info = PluginInfo(name, distribution, version, tuple(dict.fromkeys(c.name for c in classes)))
        for cls in classes:
            other = providers.get(cls.name)
            if other is not None and operators[cls.name] is not cls:
                where = "twice" if other.name == name else f"by {other.label()} and by {info.label()}"
                raise PluginError(
                    f"operator '{cls.name}' is provided {where}; uninstall one, or block one with "
                    f"{BLOCK_ENV}={_to_block(other, info)}"
                )
            operators[cls.name] = cls
            providers[cls.name] = info
        infos.append(info)
    return operators, infos, list(pm.problems)


@attrs.frozen
class Registry:
    """The operators the installed plugins provide, by spec keyword.

    Build one with :meth:`load` (fresh) or :func:`default_registry` (loaded once and cached).
    """

    operators: Mapping[str, type[Operator]] = attrs.field(
        factory=dict, converter=lambda m: types.MappingProxyType(dict(m))
    )
    """Operator classes by name, read-only."""
    plugins: tuple[PluginInfo, ...] = attrs.field(default=(), converter=tuple)
    """The plugins that loaded, in load order."""
    problems: tuple[PluginProblem, ...] = attrs.field(default=(), converter=tuple)
    """The plugins that could not be used, with the reason."""
    blocked: tuple[BlockedPlugin, ...] = attrs.field(default=(), converter=tuple)
    """The plugin names that were blocked (never imported), with the reason."""
    layouts: Mapping[Any, LayoutRule] = attrs.field(
        factory=dict, converter=lambda m: types.MappingProxyType(dict(m))
    )
    """Layer layouts by module class (or class name), read-only: :func:`layout` looks them up."""
    manager: PluginManager | None = attrs.field(default=None, eq=False, repr=False)
    """The plugin manager the registry was loaded from, for the hooks called later
    (:meth:`deploy_layer`); None for a registry built by hand."""

    @classmethod
    def load(
        cls,
        *,
        block: Iterable[str] | None = None,
        allow: Iterable[str] | None = None,
        plugin_manager: PluginManager | None = None,
    ) -> Registry:
        """Load the installed plugins into a new registry.

        Args:
            block: entry-point names not to load; ``None`` reads ``LCDSL_BLOCK_PLUGINS``.
            allow: the only entry-point names to load (plus ``builtin``); ``None`` reads
                ``LCDSL_ALLOW_PLUGINS``.
            plugin_manager: use this manager (e.g. one with plugins registered by hand through
                :meth:`PluginManager.add_plugin`) instead of loading entry points; ``block``
                and ``allow`` are then ignored.

        Raises:
            PluginError: two plugins (or one plugin twice) provide the same operator name, or
                declare different layouts for one module type.
        """
        pm = plugin_manager if plugin_manager is not None else get_plugin_manager(block=block, allow=allow)
        operators, infos, _ = _collect(pm)
        layouts = _collect_layouts(pm, infos)
        return cls(operators=operators, plugins=infos, problems=pm.problems, blocked=blocked_plugins(pm), layouts=layouts,
                   manager=pm)  # fmt: skip

    def layout(self, module: Any, parameter: str = "weight") -> Layout | None:
        """The layout the plugins declare for ``module``'s parameter ``parameter`` (its name in
        the module, without dots), or None (:func:`lcdsl.operators.layout.find_layout`).

        Raises:
            ValueError: the declaration says why this module has no layout.
        """
        return find_layout(self.layouts, module, parameter)

    def operator(self, name: str) -> type[Operator]:
        """The operator class called ``name`` in specs.

        Raises:
            UnknownOperatorError: (a ``KeyError``) no plugin provides it; the message suggests
                close names.
        """
        try:
            return self.operators[name]
        except KeyError:
            known = sorted(self.operators)
            hint = did_you_mean(name, known) or f"; known operators: {', '.join(known) or 'none'}"
            raise UnknownOperatorError(f"unknown operator '{name}'{hint}") from None

    def provider(self, name: str) -> PluginInfo:
        """The plugin that provides operator ``name``."""
        self.operator(name)
        return next(p for p in self.plugins if name in p.operators)

    def deploy_layer(self, **kwargs: Any) -> tuple[Any, str] | None:
        """The deployed module the plugins give for one compressed layer (hook
        ``lcdsl_deploy_layer``; ``kwargs`` are its arguments), and the name of the plugin that gave it.

        Plugins are asked one at a time: the one that provides ``kwargs["operator"]`` first,
        then the others in load order, the built-ins last (also for their own operators, so a
        plugin can deploy built-in layers its own way); the first module returned wins.

        Returns:
            ``(module, plugin name)``, or None when no plugin deploys the layer (or the registry
            has no plugin manager).

        Raises:
            PluginError: a plugin's hook raised or returned something that is not an
                ``nn.Module``; the message names the plugin and its distribution, the cause is
                chained.
        """
        pm = self.manager
        if pm is None or getattr(pm.hook, DEPLOY_LAYER, None) is None:
            return None
        implementers = pm.implementers(DEPLOY_LAYER)
        op_name = getattr(kwargs.get("operator"), "name", None)
        owner = next((p.name for p in self.plugins if op_name in p.operators), None)
        # the operator's own plugin, then the others, the built-ins last (even for their own
        # operators: a plugin may deploy built-in layers its own way)
        order = sorted(implementers, key=lambda name: (name != owner or name == BUILTIN, name == BUILTIN))
        for name in order:
            distribution, version = pm.source(name)
            try:
                results = pm.call_one(DEPLOY_LAYER, name, **kwargs)
            except Exception as exc:
                raise PluginError(f"plugin '{name}' ({distribution} {version}): {DEPLOY_LAYER} raised "
                                  f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
            for result in results:
                if not isinstance(result, nn.Module):
                    raise PluginError(f"plugin '{name}' ({distribution} {version}): {DEPLOY_LAYER} returned "
                                      f"{type(result).__name__}, not an nn.Module or None")  # fmt: skip
                return result, name
        return None

    def versions(self) -> dict[str, str]:
        """Plugin name → distribution version, for checkpoints."""
        return {p.name: p.version for p in self.plugins}


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, loaded on first call and cached.

    ``default_registry.cache_clear()`` forgets it (e.g. after installing a plugin in-process).
    """
    return Registry.load()
