"""Plugins: the hook specifications, the registry of operator names, and where each came from.

Plugins are the entry points of the group ``lcdsl``; :func:`default_registry` loads them on first
use (never at import). A plugin author needs only :mod:`lcdsl.operators`.
"""

from lcdsl.plugins.hookspecs import PROJECT, hookimpl, hookspec
from lcdsl.plugins.origin import operator_origin, operator_plugin, plugin_versions, versions
from lcdsl.plugins.registry import (
    BlockedPlugin,
    PluginInfo,
    PluginManager,
    PluginProblem,
    Registry,
    UnknownOperatorError,
    default_registry,
    get_plugin_manager,
)  # fmt: skip

__all__ = [
    "PROJECT", "hookimpl", "hookspec", "Registry", "PluginInfo", "PluginProblem", "BlockedPlugin", "PluginManager",
    "UnknownOperatorError", "default_registry", "get_plugin_manager", "operator_origin", "operator_plugin",
    "plugin_versions", "versions",
]  # fmt: skip
