"""Operators from a rule's calls: each call's operator from the registry, a sum as an additive combination.

A plugin's code runs here (the operator's constructor and validators) inside
:func:`~lcdsl.plugins.manager.plugin_code`, so what it raises becomes a located diagnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from lcdsl.errors import Diagnostics, did_you_mean, exception_message
from lcdsl.language.spec import Call
from lcdsl.operators.additive import Additive
from lcdsl.operators.base import Operator
from lcdsl.plugins.manager import PluginRaised, plugin_code
from lcdsl.plugins.registry import Registry, default_registry

__all__ = ["build_operator", "build_terms", "registry_or_default", "broken_message", "operator_name"]


def registry_or_default(registry: Registry | None) -> Registry:
    return registry if registry is not None else default_registry()

def _origin(op: Any, registry: Registry) -> str:
    """``plugin 'x' (dist version)`` for each term of an operator (or operator class), for messages."""
    parts = []
    for term in getattr(op, "terms", None) or (op,):
        name = getattr(term, "name", type(term).__name__)
        cls = term if isinstance(term, type) else type(term)
        label = "an unknown plugin"
        if registry.operators.get(name) is cls:
            label = f"plugin {registry.provider(name).label()}"
        if label not in parts:
            parts.append(label)
    return ", ".join(parts)

def broken_message(what: str, op: Any, exc: Exception, registry: Registry) -> str:
    """The message for plugin code that raised something other than ValueError/TypeError: a bug
    in the plugin, not in the spec, so it names the plugin."""
    raised = exc.original if isinstance(exc, PluginRaised) else exc
    return f"{what} raised {type(raised).__name__}: {raised} (a bug in {_origin(op, registry)})"

def _build_call(call: Call, registry: Registry, diags: Diagnostics) -> Operator | None:
    """One operator from one call, or None with the problems added to ``diags``."""
    try:
        cls = registry.operator(call.name)
    except KeyError:
        names = sorted(registry.operators)
        diags.add(
            "unknown-operator",
            f"unknown operator '{call.name}'{did_you_mean(call.name, names)}",
            call.span,
            hint="operators: " + ", ".join(names) + " (`lcdsl plugins` lists where each comes from)",
        )
        return None
    fields = [a.name for a in attrs.fields(cls)] if attrs.has(cls) else []
    kwargs: dict[str, Any] = {}
    ok = True
    for arg in call.args:
        if arg.name is None:
            diags.add(
                "positional-argument",
                f"{call.name}() takes keyword arguments, e.g. {call.name}({fields[0] if fields else 'x'}=…)",
                arg.span,
            )
            ok = False
        elif arg.name not in fields:
            hint = f"{call.name}() takes " + (", ".join(fields) if fields else "no arguments")
            message = f"{call.name}() has no argument '{arg.name}'{did_you_mean(arg.name, fields)}"
            diags.add("unknown-argument", message, arg.span, hint)
            ok = False
        elif arg.name in kwargs:
            diags.add("repeated-argument", f"{call.name}() got '{arg.name}' twice", arg.span)
            ok = False
        elif isinstance(arg.value, Call):
            diags.add("bad-value", f"{call.name}() argument '{arg.name}' must be a value, not a call", arg.span)
            ok = False
        else:
            kwargs[arg.name] = arg.value
    if not ok:
        return None
    try:
        with plugin_code():
            return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        diags.add("bad-value", f"{call.name}(): {exception_message(exc)}", call.span)
    except Exception as exc:  # a plugin's validator may raise anything
        diags.add("broken-operator", broken_message(f"{call.name}()", cls, exc, registry), call.span)
    return None

def build_operator(
    terms: Sequence[Call], *, registry: Registry | None = None, rounds: int = 10
) -> Operator:
    """The operator for a rule's right-hand side: one call, or the additive combination of several.

    Raises:
        SpecError: unknown operators, unknown or repeated arguments, bad values; all together.
    """
    diags = Diagnostics()
    op = build_terms(terms, registry_or_default(registry), rounds, diags)
    if op is None and not diags:
        diags.add("empty-expression", "empty expression")
    diags.raise_if_any()
    return op

def build_terms(terms: Sequence[Call], registry: Registry, rounds: int, diags: Diagnostics) -> Operator | None:
    ops = [_build_call(call, registry, diags) for call in terms]
    if any(op is None for op in ops) or not ops:
        return None
    if len(ops) == 1:
        return ops[0]
    return Additive(terms=tuple(ops), rounds=rounds)

def operator_name(op: Operator) -> str:
    return getattr(op, "name", type(op).__name__)
