"""Choice arguments: a rule's ranges (``bits=1..8``) and ``auto`` values become one concrete
operator per value, the options of a :class:`~lcdsl.operators.choice.Choice` for each task.

A rule's calls are *expanded* per task: every choice argument takes each of its values (a
range's integers, or what the operator class's :meth:`~lcdsl.operators.base.Operator.auto_values`
says ``auto`` means for the task's view), the product of them when a rule has several, each
combination written back into plain calls that :mod:`.calls` builds like any other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs

from lcdsl.errors import Diagnostics, Span
from lcdsl.language.spec import Argument, Call, Range
from lcdsl.plugins.manager import plugin_code
from lcdsl.plugins.registry import Registry

__all__ = ["AUTO", "ChoiceArgument", "choice_arguments", "choice_values", "expand"]

AUTO = "auto"
"""The word that means "every value this operator allows for this tensor"."""


@attrs.frozen
class ChoiceArgument:
    """One argument of a rule's calls given as a range or ``auto``."""

    term: int
    """The index of its call in the rule's terms."""
    name: str
    """The argument's name (``bits``)."""
    value: Range | str
    """The range, or :data:`AUTO`."""
    span: Span | None = attrs.field(default=None, eq=False)
    """Where the argument stands."""


def _is_choice(value: object) -> bool:
    return isinstance(value, Range) or (isinstance(value, str) and value == AUTO)


def choice_arguments(terms: Sequence[Call], registry: Registry, diags: Diagnostics) -> list[ChoiceArgument] | None:
    """The choice arguments of a rule's calls, in order; None (with ``not-a-choice`` errors added)
    when one stands on an argument its operator cannot choose. Unknown operators are left to
    :mod:`.calls` to report."""
    found: list[ChoiceArgument] = []
    ok = True
    for i, call in enumerate(terms):
        for arg in call.args:
            if arg.name is None or not _is_choice(arg.value):
                continue
            cls = registry.operators.get(call.name)
            if cls is None:
                ok = False
                continue
            with plugin_code():
                allowed = cls.auto_values(arg.name, (1,)) is not None
            if not allowed:
                written = "auto" if isinstance(arg.value, str) else f"{arg.value.low}..{arg.value.high}"
                diags.add(
                    "not-a-choice",
                    f"{call.name}() cannot choose '{arg.name}': a range or auto ('{written}') is for an integer size",
                    arg.span,
                    hint=_choosable_hint(call.name, cls),
                )
                ok = False
                continue
            found.append(ChoiceArgument(i, arg.name, arg.value, span=arg.span))
    return found if ok else None


def _choosable_hint(name: str, cls: type) -> str:
    fields = [f.name for f in attrs.fields(cls)] if attrs.has(cls) else []
    with plugin_code():
        choosable = [f for f in fields if cls.auto_values(f, (1,)) is not None]
    if not choosable:
        return f"{name}() has no argument to choose under a budget"
    return f"{name}() chooses " + ", ".join(choosable)


def choice_values(
    terms: Sequence[Call], choices: Sequence[ChoiceArgument], registry: Registry, shape: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Each choice argument's values for a task of view ``shape``: a range's, or ``auto_values``."""
    out = []
    for choice in choices:
        if isinstance(choice.value, Range):
            out.append(choice.value.values)
            continue
        cls = registry.operator(terms[choice.term].name)
        with plugin_code():
            values = cls.auto_values(choice.name, tuple(shape))
        out.append(tuple(int(v) for v in values or ()))
    return out


def expand(
    terms: Sequence[Call], choices: Sequence[ChoiceArgument], values: Sequence[tuple[int, ...]]
) -> list[tuple[str, tuple[Call, ...]]]:
    """Every combination of the values as (label, plain calls): ``("bits=3", (quant(bits=3),))``;
    with several choice arguments the label joins them (``bits=3, l0=100``)."""
    out = []
    for combination in itertools.product(*values):
        chosen = {(c.term, c.name): v for c, v in zip(choices, combination)}
        calls = tuple(
            attrs.evolve(
                call,
                args=tuple(
                    attrs.evolve(a, value=chosen[(i, a.name)]) if (i, a.name) in chosen else a for a in call.args
                ),
            )
            for i, call in enumerate(terms)
        )
        label = ", ".join(f"{c.name}={v}" for c, v in zip(choices, combination))
        out.append((label, calls))
    return out
