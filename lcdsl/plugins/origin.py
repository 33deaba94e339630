"""Where operators come from: the plugin that provides each, and the versions a saved file records."""

from __future__ import annotations

import platform
from typing import Any

import torch

from lcdsl._version import __version__
from lcdsl.operators.base import Operator
from lcdsl.plugins.registry import default_registry

__all__ = ["plugin_versions", "operator_origin", "versions"]


def plugin_versions() -> dict[str, str]:
    """Installed plugin distributions and their versions."""
    return {str(k): str(v) for k, v in default_registry().versions().items()}


def operator_origin(op: Operator) -> str:
    """Where an operator comes from, for messages: ``plugin 'builtin' (lcdsl 0.1.0)``.

    An additive combination names each term's plugin."""
    try:
        registry = default_registry()
    except Exception:  # a broken plugin set must not hide the error being reported
        registry = None
    terms = getattr(op, "terms", None) or (op,)
    parts = []
    for term in terms:
        name = getattr(term, "name", type(term).__name__)
        label = "an unknown plugin"
        if registry is not None and registry.operators.get(name) is type(term):
            label = f"plugin {registry.provider(name).label()}"
        parts.append(f"'{name}' from {label}" if len(terms) > 1 else label)
    return ", ".join(parts)


def versions() -> dict[str, Any]:
    """Versions of Python, torch, lcdsl and the installed operator plugins."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lcdsl": __version__,
        "plugins": plugin_versions(),
    }
