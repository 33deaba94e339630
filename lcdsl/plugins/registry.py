"""Finding operators: the plugin manager and the registry of operator names (and of layer layouts).

Plugins are the entry points of the group ``lcdsl`` (see :mod:`lcdsl.plugins.hookspecs`); lcdsl's
own operators come through its own entry point ``builtin = "lcdsl.operators.builtin"``. Nothing is
loaded at import time: :func:`default_registry` loads once, on first use.

Two environment variables choose plugins by entry-point name (comma-separated); both block
through pluggy (:meth:`pluggy.PluginManager.set_blocked`), and a blocked plugin is never imported:

- ``LCDSL_BLOCK_PLUGINS=a,b``: never load ``a`` and ``b`` (``builtin`` too, if named);
- ``LCDSL_ALLOW_PLUGINS=a,b``: load only ``a``, ``b`` and ``builtin``.

Each plugin is checked on its own as it is registered: an entry point that cannot be imported, a
hook pluggy does not know (``lcdsl_register_operator``, a letter short), a hook implementation with
an argument the specification lacks, or a hook that raises or returns something other than
operator classes with spec-callable names makes that plugin a broken one. It is recorded in
:attr:`Registry.problems` (with its distribution, version and the cause) and the others keep
working; ``lcdsl plugins`` shows the problems and what was blocked.

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
import importlib.metadata
import inspect
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import pluggy

from lcdsl._version import __version__
from lcdsl.errors import PluginError, did_you_mean
from lcdsl.language.grammar import identifier_pattern
from lcdsl.operators.base import Operator
from lcdsl.operators.layout import Layout, LayoutRule, find_layout, layout_key
from lcdsl.plugins import hookspecs

__all__ = [
    "GROUP",
    "BUILTIN",
    "BLOCK_ENV",
    "ALLOW_ENV",
    "PluginInfo",
    "PluginProblem",
    "BlockedPlugin",
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
REGISTER_OPERATORS = "lcdsl_register_operators"
"""The hook that provides operator classes."""
REGISTER_LAYOUTS = "lcdsl_register_layouts"
"""The hook that declares the layouts of module types."""

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
    layouts: tuple[str, ...] = ()
    """The module types it declares layouts for (classes by qualified name), in its order."""

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


@attrs.frozen
class BlockedPlugin:
    """A plugin name that was blocked: never imported, so what it would provide is unknown."""

    name: str
    """The entry-point name."""
    distribution: str
    """The distribution that declares it (``"unknown"`` when none does)."""
    version: str
    """That distribution's version."""
    reason: str
    """Why, e.g. ``"by LCDSL_BLOCK_PLUGINS"`` or ``"not in LCDSL_ALLOW_PLUGINS"``."""
    installed: bool = True
    """Whether an installed entry point has this name (a misspelled block list blocks nothing)."""


class UnknownOperatorError(KeyError):
    """No installed plugin provides an operator of this name."""

    def __str__(self) -> str:
        # KeyError's own __str__ quotes its argument; the message reads better plain
        return str(self.args[0]) if self.args else ""


class PluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that remembers where each plugin came from, which plugins
    are broken, and why a name was blocked.

    Args:
        specs: the module or class holding the hook specifications (:mod:`lcdsl.plugins.hookspecs`;
            a test can pass another to try a future hook).
    """

    def __init__(self, specs: object = hookspecs) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(specs)
        self.sources: dict[str, tuple[str, str]] = {}
        """Plugin name → (distribution, version)."""
        self.problems: list[PluginProblem] = []
        """Plugins that could not be loaded, registered or called."""
        self.block_reasons: dict[str, str] = {}
        """Blocked plugin name → why it was blocked."""

    def source(self, name: str) -> tuple[str, str]:
        """(distribution, version) of a registered plugin, ``("unknown", "unknown")`` if not known."""
        return self.sources.get(name, (_UNKNOWN, _UNKNOWN))

    def add_plugin(
        self, plugin: object, name: str, distribution: str = _UNKNOWN, version: str = _UNKNOWN
    ) -> None:
        """Register ``plugin`` (a module or object with hook implementations) by hand.

        It is checked as a plugin from an entry point is: one that fails is recorded in
        :attr:`problems` and left unregistered. A blocked name is not registered."""
        self.sources[name] = (distribution, version)
        _register(self, plugin, name)

    def add_problem(self, name: str, message: str, cause: BaseException | None = None) -> None:
        """Record that plugin ``name`` is broken, with ``cause`` chained."""
        distribution, version = self.source(name)
        error = PluginError(f"plugin '{name}' ({distribution} {version}): {message}")
        error.__cause__ = cause
        self.problems.append(PluginProblem(name, distribution, version, error))

    def block(self, name: str, reason: str = "blocked") -> None:
        """Block plugin ``name`` through pluggy (:meth:`set_blocked`): it is unregistered if it was
        registered, and never registered (nor, by :func:`get_plugin_manager`, imported) after."""
        self.set_blocked(name)
        self.block_reasons.setdefault(name, reason)

    def blocked(self) -> list[str]:
        """The names pluggy blocks, in the order they were blocked."""
        return [name for name, plugin in self.list_name_plugin() if plugin is None]

    def spec_names(self) -> list[str]:
        """The names of the hooks that have a specification, sorted."""
        return sorted(name for name, caller in vars(self.hook).items() if caller.has_spec())

    def implementers(self, hook_name: str) -> list[str]:
        """The names of the registered plugins that implement ``hook_name``, in registration order."""
        impls = getattr(self.hook, hook_name).get_hookimpls()
        return [
            name
            for name, plugin in self.list_name_plugin()
            if plugin is not None and any(impl.plugin is plugin for impl in impls)
        ]

    def call_one(self, hook_name: str, plugin_name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``hook_name`` of one plugin only, through pluggy.

        pluggy passes each implementation only the arguments it names (so a hook that gains an
        argument does not break implementations written before), and checks the call against
        the specification. One plugin's hook runs alone, so one that raises hides no other.

        Returns:
            pluggy's results: what the plugin's implementations returned, ``None`` left out.

        Raises:
            KeyError: no plugin of that name is registered.
            Exception: whatever the implementation raises.
        """
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            raise KeyError(f"no plugin '{plugin_name}' is registered")
        others = [p for p in self.get_plugins() if p is not plugin]
        return self.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)


def _names(value: Iterable[str] | None, env: str, argument: str) -> tuple[frozenset[str] | None, str]:
    """Entry-point names from an argument, else from an environment variable, else None; and
    where they came from, for messages."""
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return None, env
        value, argument = text.split(","), env
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(v.strip() for v in value if v.strip()), argument


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
        The manager; the names it blocked are pluggy-blocked (:meth:`PluginManager.blocked`),
        entry points that failed to import or register are in its ``problems``.
    """
    blocked, blocked_by = _names(block, BLOCK_ENV, "the block argument")
    allowed, allowed_by = _names(allow, ALLOW_ENV, "the allow argument")
    if allowed is not None:
        allowed = allowed | {BUILTIN}
    pm = PluginManager()
    for name in sorted(blocked or ()):
        pm.block(name, f"by {blocked_by}")
    # the built-ins first, then the others in a fixed order, whatever order the installer left
    found = sorted(
        importlib.metadata.entry_points(group=GROUP),
        key=lambda ep: (ep.name != BUILTIN, ep.name, _distribution(ep)),
    )
    builtin_seen = any(ep.name == BUILTIN and ep.value == BUILTIN_MODULE for ep in found)
    if not builtin_seen:
        # running from a source tree without installed metadata: the built-ins still work
        pm.sources[BUILTIN] = ("lcdsl", _own_version())
        if not pm.is_blocked(BUILTIN):
            try:
                plugin = importlib.import_module(BUILTIN_MODULE)
            except Exception as exc:
                pm.add_problem(BUILTIN, f"cannot import {BUILTIN_MODULE}", exc)
            else:
                _register(pm, plugin, BUILTIN)
    for entry_point in found:
        name = entry_point.name
        if allowed is not None and name not in allowed and not pm.is_blocked(name):
            pm.block(name, f"not in {allowed_by}")
        if pm.is_blocked(name):
            pm.sources.setdefault(name, _distribution(entry_point))
            continue  # never imported
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


# ---------------------------------------------------------------- checking one plugin


def _register(pm: PluginManager, plugin: object, name: str) -> None:
    """Register ``plugin`` and validate it alone with pluggy; a broken one is recorded in the
    manager's problems and left unregistered, so the others keep working."""
    try:
        hash(plugin)
    except TypeError:  # pluggy keeps plugins in sets to call one at a time
        pm.add_problem(name, f"the plugin object {plugin!r} is not hashable: use a module or a hashable object")
        return
    try:
        registered = pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # an implementation that does not fit its spec
        if pm.get_plugin(name) is plugin:  # older pluggy versions leave it half registered
            pm.unregister(plugin)
        pm.add_problem(name, _mismatch(pm, plugin, exc))
        return
    except Exception as exc:  # one object under two names, a name registered twice
        pm.add_problem(name, "cannot be registered", exc)
        return
    if registered is None:  # a blocked name
        return
    problem = _unknown_hooks(pm, plugin) or _keyword_only(pm, plugin) or _no_hooks(pm, plugin)
    if problem:
        pm.unregister(plugin)
        pm.add_problem(name, problem)


def _hint(name: str, known: list[str], what: str, n: int = 3) -> str:
    return did_you_mean(name, known, n=n) or f" ({what}: {', '.join(known) or 'none'})"


def _mismatch(pm: PluginManager, plugin: object, exc: pluggy.PluginValidationError) -> str:
    """What pluggy's validation found wrong in ``plugin``, said plainly."""
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        caller = getattr(pm.hook, (opts or {}).get("specname") or attr, None)
        if opts is None or caller is None or not caller.has_spec():
            continue
        spec_args = [*caller.spec.argnames, *caller.spec.kwargnames]
        params = inspect.signature(getattr(plugin, attr)).parameters.values()
        unknown = [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            and p.name not in spec_args
        ]
        if unknown:
            words = ", ".join(f"'{u}'{_hint(u, spec_args, 'its arguments')}" for u in unknown)
            what = "arguments" if len(unknown) > 1 else "an argument"
            return f"hook {caller.name} takes {what} the hook specification does not have: {words}"
    return "does not fit lcdsl's hook specifications: " + " ".join(str(exc).split())


def _unknown_hooks(pm: PluginManager, plugin: object) -> str | None:
    """pluggy's :meth:`~pluggy.PluginManager.check_pending`, for the plugin just registered: a
    hook implementation with no specification (a misspelled hook name) and not optional."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pass
    else:
        return None
    unknown = [
        caller.name
        for caller in pm.get_hookcallers(plugin) or ()
        if not caller.has_spec()
        and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
    ]
    known = pm.spec_names()
    return "; ".join(f"implements unknown hook '{u}'{_hint(u, known, 'lcdsl hooks', n=1)}" for u in unknown) or None


def _keyword_only(pm: PluginManager, plugin: object) -> str | None:
    """A parameter after ``*``: pluggy passes hook arguments only to ordinary parameters."""
    for caller in pm.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            params = inspect.signature(impl.function).parameters.values()
            keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
            if keyword_only:
                names = ", ".join(f"'{k}'" for k in keyword_only)
                return (
                    f"hook {caller.name} has keyword-only parameters ({names}), which pluggy never "
                    "fills: declare them before any '*'"
                )
    return None


def _no_hooks(pm: PluginManager, plugin: object) -> str | None:
    if pm.get_hookcallers(plugin):
        return None
    unmarked = [
        a for a in dir(plugin) if a.startswith(f"{GROUP}_") and callable(inspect.getattr_static(plugin, a, None))
    ]
    if unmarked:
        return (
            f"implements no lcdsl hook: {', '.join(unmarked)} lacks @hookimpl "
            "(from lcdsl.operators import hookimpl)"
        )
    return "implements no lcdsl hook (is @hookimpl from lcdsl.operators missing?)"


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
                    f"differently; uninstall one, or block one with {BLOCK_ENV}={name}"
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
                    f"{BLOCK_ENV}={other.name if other.name != name else name}"
                )
            operators[cls.name] = cls
            providers[cls.name] = info
        infos.append(info)
    return operators, infos, list(pm.problems)


def _blocked(pm: PluginManager) -> list[BlockedPlugin]:
    """What the manager blocked, with the distribution when one declares the name."""
    return [
        BlockedPlugin(name, *pm.source(name), pm.block_reasons.get(name, "blocked"), name in pm.sources)
        for name in pm.blocked()
    ]


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
        return cls(operators=operators, plugins=infos, problems=pm.problems, blocked=_blocked(pm), layouts=layouts)

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

    def versions(self) -> dict[str, str]:
        """Plugin name → distribution version, for checkpoints."""
        return {p.name: p.version for p in self.plugins}


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, loaded on first call and cached.

    ``default_registry.cache_clear()`` forgets it (e.g. after installing a plugin in-process).
    """
    return Registry.load()
