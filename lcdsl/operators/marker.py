"""The marker a plugin puts on its hook implementations: ``@hookimpl``.

It lives with the operators (not with the hook specifications in :mod:`lcdsl.plugins`) so that a
plugin author's one import, :mod:`lcdsl.operators`, has it, and the built-in operators can use it
without importing the layer above them.
"""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl"]

PROJECT = "lcdsl"
"""The pluggy project name, and the entry-point group plugins declare."""

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's hook implementations: ``@hookimpl def lcdsl_register_operators(): …``."""
