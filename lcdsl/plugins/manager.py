"""Loading plugins: entry points, blocking, and the checks each plugin gets as it is registered.

Plugins are the entry points of the group ``lcdsl`` (see :mod:`lcdsl.plugins.hookspecs`); lcdsl's
own operators come through its own entry point ``builtin = "lcdsl.operators.builtin"``.

Two environment variables choose plugins by entry-point name (comma-separated); both block
through pluggy (:meth:`pluggy.PluginManager.set_blocked`), and a blocked plugin is never imported:

- ``LCDSL_BLOCK_PLUGINS=a,b``: never load ``a`` and ``b`` (``builtin`` too, if named);
- ``LCDSL_ALLOW_PLUGINS=a,b``: load only ``a``, ``b`` and ``builtin``.

Each plugin is checked on its own as it is registered: an entry point that cannot be imported, a
hook pluggy does not know (``lcdsl_register_operator``, a letter short), or a hook implementation
with an argument the specification lacks makes that plugin a broken one (a :class:`PluginProblem`),
and the others keep working. :mod:`lcdsl.plugins.registry` then calls the hooks.

Plugins are identified by distribution: only lcdsl's own distribution may provide ``builtin``.
Another distribution declaring an entry point ``builtin`` is a broken plugin, named by that
distribution, and is never imported (so ``LCDSL_ALLOW_PLUGINS``, which always allows
``builtin``, cannot let it in either). A name in ``LCDSL_BLOCK_PLUGINS`` or
``LCDSL_ALLOW_PLUGINS`` that no installed entry point has is a :class:`UserWarning`
("… names 'pwo2', which no installed plugin has; did you mean 'pow2'?").

Plugin code runs inside :func:`plugin_code`: a ``BaseException`` that is not an ``Exception``
(``SystemExit``, a ``KeyboardInterrupt`` the plugin raises itself, a ``BaseException``
subclass) comes out as a :class:`PluginRaised`, an ``Exception``, so it is reported like any
other broken plugin. A ``KeyboardInterrupt`` from a real Ctrl-C is told apart by the SIGINT
handler :func:`plugin_code` wraps around the call (in the main thread) and passes through.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import pluggy

from lcdsl._version import __version__
from lcdsl.errors import PluginError, did_you_mean
from lcdsl.plugins import hookspecs

__all__ = [
    "GROUP", "BUILTIN", "BUILTIN_MODULE", "BLOCK_ENV", "ALLOW_ENV", "REGISTER_OPERATORS", "REGISTER_LAYOUTS", "DEPLOY_LAYER",
    "PluginProblem", "BlockedPlugin", "PluginManager", "get_plugin_manager", "blocked_plugins", "PluginRaised",
    "plugin_code", "OWN_DISTRIBUTION",
]  # fmt: skip

GROUP = hookspecs.PROJECT
"""The entry-point group plugins declare."""
BUILTIN = "builtin"
"""The entry-point name of lcdsl's own operators."""
BUILTIN_MODULE = "lcdsl.operators.builtin"
"""The module the built-in entry point names."""
OWN_DISTRIBUTION = "lcdsl"
"""The one distribution whose ``builtin`` entry point is the built-ins."""
BLOCK_ENV = "LCDSL_BLOCK_PLUGINS"
"""Comma-separated entry-point names never to load."""
ALLOW_ENV = "LCDSL_ALLOW_PLUGINS"
"""Comma-separated entry-point names to load exclusively (``builtin`` is always allowed)."""
REGISTER_OPERATORS = "lcdsl_register_operators"
"""The hook that provides operator classes."""
REGISTER_LAYOUTS = "lcdsl_register_layouts"
"""The hook that declares the layouts of module types."""
DEPLOY_LAYER = "lcdsl_deploy_layer"
"""The hook that turns a compressed layer into a deployed module."""

_UNKNOWN = "unknown"


class PluginRaised(Exception):
    """Plugin code raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``, its
    own ``KeyboardInterrupt``, …); the original is the ``__cause__``."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}" if str(original) else type(original).__name__)
        self.original = original


@contextlib.contextmanager
def plugin_code() -> Iterator[None]:
    """Run plugin code (an import, a hook, an operator's constructor, ``resolve``, ``storage``,
    ``view``): a non-``Exception`` ``BaseException`` it raises is re-raised as
    :class:`PluginRaised`, except a ``KeyboardInterrupt`` that a real SIGINT (the user's Ctrl-C)
    caused while it ran, which passes through as it is. Off the main thread no handler can be
    wrapped, and every ``KeyboardInterrupt`` passes through."""
    interrupted = False
    previous = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal interrupted
            interrupted = True
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not allowed here (an embedded interpreter): leave the handler be
            main = False
    try:
        yield
    except Exception:
        raise
    except KeyboardInterrupt as exc:
        if interrupted or not main:
            raise
        raise PluginRaised(exc) from exc
    except GeneratorExit:
        raise
    except BaseException as exc:
        raise PluginRaised(exc) from exc
    finally:
        if main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


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
        error.__cause__ = cause.original if isinstance(cause, PluginRaised) else cause
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
            Exception: whatever the implementation raises (:class:`PluginRaised` for a
                ``SystemExit`` or the like, see :func:`plugin_code`).
        """
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            raise KeyError(f"no plugin '{plugin_name}' is registered")
        others = [p for p in self.get_plugins() if p is not plugin]
        with plugin_code():
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


def _is_own_builtin(entry_point: importlib.metadata.EntryPoint) -> bool:
    """Whether ``entry_point`` is lcdsl's own ``builtin``: that name, from lcdsl's distribution."""
    distribution = _distribution(entry_point)[0].lower().replace("_", "-")
    return entry_point.name == BUILTIN and distribution == OWN_DISTRIBUTION and entry_point.value == BUILTIN_MODULE


def _warn_unknown(names: frozenset[str] | None, by: str, installed: set[str]) -> None:
    """A warning for each name of a block/allow list that no installed entry point has."""
    for name in sorted((names or frozenset()) - installed - {BUILTIN}):
        hint = did_you_mean(name, sorted(installed))
        warnings.warn(f"lcdsl: {by} names '{name}', which no installed plugin has{hint}", UserWarning, stacklevel=3)


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
    # lcdsl's built-ins first, then the others in a fixed order, whatever order the installer left
    found = sorted(
        importlib.metadata.entry_points(group=GROUP),
        key=lambda ep: (not _is_own_builtin(ep), ep.name, _distribution(ep)),
    )
    _warn_unknown(blocked, blocked_by, {ep.name for ep in found})
    _warn_unknown(allowed, allowed_by, {ep.name for ep in found})
    builtin_seen = any(_is_own_builtin(ep) for ep in found)
    if not builtin_seen:
        # running from a source tree without installed metadata: the built-ins still work
        pm.sources[BUILTIN] = ("lcdsl", _own_version())
        if not pm.is_blocked(BUILTIN):
            try:
                with plugin_code():
                    plugin = importlib.import_module(BUILTIN_MODULE)
            except Exception as exc:
                pm.add_problem(BUILTIN, f"cannot import {BUILTIN_MODULE}", exc)
            else:
                _register(pm, plugin, BUILTIN)
    for entry_point in found:
        name = entry_point.name
        if name == BUILTIN and not _is_own_builtin(entry_point):
            distribution, version = _distribution(entry_point)
            error = PluginError(
                f"plugin '{name}' ({distribution} {version}): only lcdsl itself provides the built-in operators; "
                f"{distribution} declares an entry point '{BUILTIN}' = {entry_point.value!r}, which is not loaded "
                "(the plugin must use another entry-point name)"
            )
            pm.problems.append(PluginProblem(name, distribution, version, error))
            continue  # never imported, whatever the allow list says
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
            with plugin_code():
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


def blocked_plugins(pm: PluginManager) -> list[BlockedPlugin]:
    """What the manager blocked, with the distribution when one declares the name."""
    return [
        BlockedPlugin(name, *pm.source(name), pm.block_reasons.get(name, "blocked"), name in pm.sources)
        for name in pm.blocked()
    ]
