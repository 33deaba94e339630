"""Where operators come from: the plugin that provides each, and the versions a saved file records."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any

import torch

from lcdsl._version import __version__
from lcdsl.operators.base import Operator
from lcdsl.plugins.registry import default_registry

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = ["plugin_versions", "operator_origin", "operator_plugin", "versions", "UNKNOWN_PLUGIN"]

UNKNOWN_PLUGIN = "unknown"
"""What :func:`operator_plugin` says of an operator no installed plugin provides (one built in code)."""


def plugin_versions() -> dict[str, str]:
    """Installed plugin distributions and their versions."""
    return {str(k): str(v) for k, v in default_registry().versions().items()}


def _leaves(op: Operator) -> tuple[Operator, ...]:
    """The operators a plugin provides inside ``op``: an additive combination's terms, a choice's
    options (each expanded the same way; one operator of each class), or ``op`` itself."""
    inner = getattr(op, "terms", None) or getattr(op, "options", None)
    if not inner:
        return (op,)
    leaves: dict[type, Operator] = {}
    for part in inner:
        for leaf in _leaves(part):
            leaves.setdefault(type(leaf), leaf)
    return tuple(leaves.values())


def operator_origin(op: Operator) -> str:
    """Where an operator comes from, for messages: ``plugin 'builtin' (lcdsl 0.1.0)``.

    An additive combination names each term's plugin."""
    try:
        registry = default_registry()
    except Exception:  # a broken plugin set must not hide the error being reported
        registry = None
    terms = _leaves(op)
    parts = []
    for term in terms:
        name = getattr(term, "name", type(term).__name__)
        label = "an unknown plugin"
        if registry is not None and registry.operators.get(name) is type(term):
            label = f"plugin {registry.provider(name).label()}"
        parts.append(f"'{name}' from {label}" if len(terms) > 1 else label)
    return ", ".join(parts)


def operator_plugin(op: Operator, registry: Registry | None = None) -> str:
    """The entry-point name of the plugin that provides ``op``: ``builtin`` for lcdsl's own.

    Saved files record it beside the operator's spec text (:func:`~lcdsl.operators.base.describe`),
    so that together they say which operator made ``θ``. An additive combination names its terms'
    plugins once each, in term order, joined by ``", "``; an operator whose class the registry
    does not hold under its name is :data:`UNKNOWN_PLUGIN`.

    Args:
        op: the operator.
        registry: where ``op`` came from (default: the installed plugins).
    """
    if registry is None:
        try:
            registry = default_registry()
        except Exception:  # a broken plugin set must not stop a file from being written
            return UNKNOWN_PLUGIN
    names: list[str] = []
    for term in _leaves(op):
        name = getattr(term, "name", type(term).__name__)
        plugin = UNKNOWN_PLUGIN
        if registry.operators.get(name) is type(term):
            plugin = next((p.name for p in registry.plugins if name in p.operators), UNKNOWN_PLUGIN)
        if plugin not in names:
            names.append(plugin)
    return ", ".join(names)


def versions() -> dict[str, Any]:
    """Versions of Python, torch, lcdsl and the installed operator plugins."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lcdsl": __version__,
        "plugins": plugin_versions(),
    }
