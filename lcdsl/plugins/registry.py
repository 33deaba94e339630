"""Finding operators: the plugin manager and the registry of operator names.

Plugins are the entry points of the group ``lcdsl`` (see :mod:`lcdsl.hookspecs`); lcdsl's own
operators come through its own entry point ``builtin = "lcdsl.operators"``. Nothing is loaded at
import time: :func:`default_registry` loads once, on first use.

Two environment variables choose plugins by entry-point name (comma-separated):

- ``LCDSL_BLOCK_PLUGINS=a,b``: never load ``a`` and ``b`` (``builtin`` too, if named);
- ``LCDSL_ALLOW_PLUGINS=a,b``: load only ``a``, ``b`` and ``builtin``.

A plugin that cannot be loaded is recorded in :attr:`Registry.problems` (with its distribution,
version and the cause) and the others keep working; ``lcdsl plugins`` shows the problems.

Example::

    from lcdsl.plugins.registry import default_registry

    Quant = default_registry().operator("quant")
    op = Quant(k=4)
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import pluggy

from lcdsl._version import __version__
from lcdsl.errors import PluginError, did_you_mean
from lcdsl.operators.base import Operator
from lcdsl.plugins import hookspecs

__all__ = [
    "GROUP",
    "BUILTIN",
    "BLOCK_ENV",
    "ALLOW_ENV",
    "PluginInfo",
    "PluginProblem",
    "PluginManager",
    "UnknownOperatorError",
    "Registry",
    "get_plugin_manager",
    "default_registry",
]

GROUP = hookspecs.PROJECT
"""The entry-point group plugins declare."""
BUILTIN = "builtin"
"""The entry-point name of lcdsl's own operators."""
BUILTIN_MODULE = "lcdsl.operators.builtin"
"""The module the built-in entry point names."""
BLOCK_ENV = "LCDSL_BLOCK_PLUGINS"
"""Comma-separated entry-point names never to load."""
ALLOW_ENV = "LCDSL_ALLOW_PLUGINS"
"""Comma-separated entry-point names to load exclusively (``builtin`` is always allowed)."""

_UNKNOWN = "unknown"


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

    def label(self) -> str:
        """``name (distribution version)``, for messages."""
        return f"'{self.name}' ({self.distribution} {self.version})"


@attrs.frozen
class PluginProblem:
    """A plugin that could not be used, and why."""

    name: str
    """The entry-point name."""
    distribution: str
    """The distribution that declares the entry point."""
    version: str
    """That distribution's version."""
    error: PluginError = attrs.field(eq=False)
    """What went wrong; its ``__cause__`` is the original exception, if any."""

    @property
    def message(self) -> str:
        """The problem as one line: what failed, then the cause."""
        cause = self.error.__cause__
        if cause is None:
            return str(self.error)
        return f"{self.error}: {type(cause).__name__}: {cause}"


class UnknownOperatorError(KeyError):
    """No installed plugin provides an operator of this name."""

    def __str__(self) -> str:
        # KeyError's own __str__ quotes its argument; the message reads better plain
        return str(self.args[0]) if self.args else ""


class PluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that remembers where each plugin came from and which
    entry points failed to load."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, tuple[str, str]] = {}
        """Plugin name → (distribution, version)."""
        self.problems: list[PluginProblem] = []
        """Entry points that could not be loaded or registered."""

    def source(self, name: str) -> tuple[str, str]:
        """(distribution, version) of a registered plugin, ``("unknown", "unknown")`` if not known."""
        return self.sources.get(name, (_UNKNOWN, _UNKNOWN))

    def add_plugin(
        self, plugin: object, name: str, distribution: str = _UNKNOWN, version: str = _UNKNOWN
    ) -> None:
        """Register ``plugin`` (a module or object with hook implementations) by hand.

        A plugin that cannot be registered is recorded in :attr:`problems`, as from an entry point."""
        self.sources[name] = (distribution, version)
        _register(self, plugin, name)

    def add_problem(self, name: str, message: str, cause: BaseException | None = None) -> None:
        """Record that plugin ``name`` is broken, with ``cause`` chained."""
        distribution, version = self.source(name)
        error = PluginError(f"plugin '{name}' ({distribution} {version}): {message}")
        error.__cause__ = cause
        self.problems.append(PluginProblem(name, distribution, version, error))


def _names(value: Iterable[str] | None, env: str) -> frozenset[str] | None:
    """Entry-point names from an argument, else from an environment variable, else None."""
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return None
        value = text.split(",")
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(v.strip() for v in value if v.strip())


def _distribution(entry_point: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return _UNKNOWN, _UNKNOWN
    return str(getattr(dist, "name", None) or _UNKNOWN), str(getattr(dist, "version", None) or _UNKNOWN)


def _own_version() -> str:
    try:
        return importlib.metadata.version("lcdsl")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def get_plugin_manager(
    *, block: Iterable[str] | None = None, allow: Iterable[str] | None = None
) -> PluginManager:
    """A fresh plugin manager with every allowed ``lcdsl`` entry point loaded and registered.

    Args:
        block: entry-point names not to load; ``None`` reads ``LCDSL_BLOCK_PLUGINS``.
        allow: the only entry-point names to load (``builtin`` is always allowed unless
            blocked); ``None`` reads ``LCDSL_ALLOW_PLUGINS``, and no value there loads all.

    Returns:
        The manager; entry points that failed to import or register are in its ``problems``.
    """
    blocked = _names(block, BLOCK_ENV) or frozenset()
    allowed = _names(allow, ALLOW_ENV)
    if allowed is not None:
        allowed = allowed | {BUILTIN}
    pm = PluginManager()
    # the built-ins first, then the others in a fixed order, whatever order the installer left
    found = sorted(
        importlib.metadata.entry_points(group=GROUP),
        key=lambda ep: (ep.name != BUILTIN, ep.name, _distribution(ep)),
    )
    builtin_seen = any(ep.name == BUILTIN and ep.value == BUILTIN_MODULE for ep in found)
    if not builtin_seen and BUILTIN not in blocked:
        # running from a source tree without installed metadata: the built-ins still work
        pm.sources[BUILTIN] = ("lcdsl", _own_version())
        try:
            plugin = importlib.import_module(BUILTIN_MODULE)
        except Exception as exc:
            pm.add_problem(BUILTIN, f"cannot import {BUILTIN_MODULE}", exc)
        else:
            _register(pm, plugin, BUILTIN)
    for entry_point in found:
        name = entry_point.name
        if name in blocked or (allowed is not None and name not in allowed):
            continue
        if name in pm.sources:
            first = pm.source(name)
            distribution, version = _distribution(entry_point)
            error = PluginError(
                f"plugin '{name}' ({distribution} {version}): another distribution "
                f"({first[0]} {first[1]}) already declares an entry point of this name"
            )
            pm.problems.append(PluginProblem(name, distribution, version, error))
            continue
        pm.sources[name] = _distribution(entry_point)
        try:
            plugin = entry_point.load()
        except Exception as exc:  # any failure inside a third-party import
            pm.add_problem(name, f"cannot import {entry_point.value}", exc)
            continue
        _register(pm, plugin, name)
    return pm


def _register(pm: PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # pluggy's validation errors, or one object under two names
        pm.add_problem(name, "cannot be registered", exc)
        return
    if not pm.get_hookcallers(plugin):
        pm.unregister(plugin)
        pm.add_problem(name, "implements no lcdsl hook (is @hookimpl from lcdsl.hookspecs missing?)")


def _operators_of(result: Any) -> tuple[type[Operator], ...]:
    """A hook result checked to be operator classes; raises PluginError naming the culprit."""
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        raise PluginError(f"lcdsl_register_operators returned {result!r}, not a list of operator classes")
    classes = []
    for item in result:
        if not (isinstance(item, type) and issubclass(item, Operator)):
            raise PluginError(
                f"lcdsl_register_operators returned {item!r}, which is not an Operator subclass"
            )
        op_name = getattr(item, "name", None)
        if not isinstance(op_name, str) or not op_name.isidentifier():
            raise PluginError(
                f"operator class {item.__qualname__} has no valid 'name' (got {op_name!r}); "
                "set name: ClassVar[str] = 'keyword'"
            )
        classes.append(item)
    return tuple(classes)


def _collect(pm: PluginManager) -> tuple[dict[str, type[Operator]], list[PluginInfo], list[PluginProblem]]:
    """Call each plugin's hook separately, so one that raises does not hide the others."""
    operators: dict[str, type[Operator]] = {}
    providers: dict[str, PluginInfo] = {}
    infos: list[PluginInfo] = []
    for impl in pm.hook.lcdsl_register_operators.get_hookimpls():  # in registration order
        name = impl.plugin_name
        distribution, version = pm.source(name)
        try:
            classes = _operators_of(impl.function())
        except Exception as exc:
            pm.add_problem(name, "lcdsl_register_operators failed", exc)
            continue
        info = PluginInfo(name, distribution, version, tuple(dict.fromkeys(c.name for c in classes)))
        for cls in classes:
            other = providers.get(cls.name)
            if other is not None and operators[cls.name] is not cls:
                where = "twice" if other.name == name else f"by {other.label()} and by {info.label()}"
                raise PluginError(
                    f"operator '{cls.name}' is provided {where}; uninstall one, or block one with "
                    f"{BLOCK_ENV}={other.name if other.name != name else name}"
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
            PluginError: two plugins (or one plugin twice) provide the same operator name.
        """
        pm = plugin_manager if plugin_manager is not None else get_plugin_manager(block=block, allow=allow)
        operators, infos, problems = _collect(pm)
        return cls(operators=operators, plugins=infos, problems=problems)

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

    def versions(self) -> dict[str, str]:
        """Plugin name → distribution version, for checkpoints."""
        return {p.name: p.version for p in self.plugins}


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, loaded on first call and cached.

    ``default_registry.cache_clear()`` forgets it (e.g. after installing a plugin in-process).
    """
    return Registry.load()
