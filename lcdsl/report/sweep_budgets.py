"""Sweeps over a rule's budget: ``--vary 'fc* : within = 10kB, 20kB, 40kB'``.

The amounts are read by the spec parser itself, each as the ``within`` of a rule, so they take
the same units and pass the same checks as a spec's budgets (``40kB``, ``3.5MiB``, ``20000 params``,
``2 Mflops``, ``30%``, ``30% flops``); a bad one is a located error whose carets point into the
``--vary`` text. Each variant is the base spec with that rule's ``within`` replaced.

After the runs, :func:`budget_results` reads, from a variant's ``report.json``, the limit of the
varied budget (absolute, so ``30%`` is resolved), what the run's final allocation of it costs
(the engine's ``cost``), what the compressed tasks really take (their stored bits or params; for
flops the allocation's cost), and whether that is within the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from lcdsl.errors import Diagnostic, EngineError, SpecError, Span
from lcdsl.language.fmt import format_budget, format_selector
from lcdsl.language.parser import parse
from lcdsl.language.spec import Rule, Spec, Within

__all__ = ["BudgetVariation", "parse_amounts", "selector_text", "budget_results"]

_PROBE = "x : x() within "
"""The rule each amount is parsed behind, one a line: the grammar knows no operator names, so
``x()`` reads as a call, and the amount is read exactly as a spec's ``within``."""


@attrs.frozen
class BudgetVariation:
    """The ``within`` of one rule, and the amounts it takes."""

    selector: str
    """The rule's selector text, e.g. ``fc*`` or ``[fc1, fc2]``."""
    values: tuple[Within, ...] = attrs.field(converter=tuple)
    """The budgets, as the parser reads them (``Within.text`` is their canonical spelling)."""

    @property
    def key(self) -> str:
        """``fc*: within``: the variation's name in :attr:`Variant.values` and sweep.json."""
        return f"{self.selector}: within"

    def label(self, value: Within) -> str:
        """``fc*: within 10kB``."""
        return f"{self.selector}: {format_budget(value)}"


def _span(start: int, end: int) -> Span:
    """Characters ``[start, end)`` of the one-line ``--vary`` text."""
    end = max(end, start + 1)
    return Span(1, start + 1, 1, end + 1, start, end)


def _pieces(text: str, start: int) -> list[tuple[int, str]]:
    """``(offset in text, amount)`` of each comma-separated amount of ``text[start:]``."""
    out = []
    offset = start
    for part in text[start:].split(","):
        lead = len(part) - len(part.lstrip())
        out.append((offset + lead, part.strip()))
        offset += len(part) + 1
    return out


def _moved(span: Span | None, pieces: list[tuple[int, str]]) -> Span | None:
    """A span of the probe text (line ``i`` holds amount ``i`` behind :data:`_PROBE`) as one of the
    ``--vary`` text; a place inside the probe's own words is the amount's start."""
    if span is None:
        return None
    base, piece = pieces[min(max(span.line, 1), len(pieces)) - 1]
    first = min(max(span.column - 1 - len(_PROBE), 0), len(piece))
    last = len(piece) if span.end_line != span.line else min(max(span.end_column - 1 - len(_PROBE), first), len(piece))
    return _span(base + first, base + last)


def parse_amounts(text: str, start: int) -> tuple[Within, ...]:
    """The comma-separated budgets of ``text[start:]`` (``10kB, 20kB, 30% flops``).

    Args:
        text: the whole ``--vary`` text; errors point into it.
        start: where the amounts begin (after the ``=``).

    Raises:
        SpecError: an amount is missing, does not read as a ``within`` amount (no unit, an unknown
            one, zero or less), or is given twice (``10kB, 10000B``); each located in ``text``.
    """

    def error(diagnostics: Sequence[Diagnostic]) -> SpecError:
        return SpecError(diagnostics, source=text, filename="--vary")

    if "\n" in text or "\r" in text:
        raise error([Diagnostic("a --vary option is one line", code="bad-variation")])
    pieces = _pieces(text, start)
    empty = [offset for offset, piece in pieces if not piece]
    if empty:
        raise error([Diagnostic("a budget amount is missing here", _span(at, at), hint="e.g. 10kB, 20kB, 40kB",
                                code="bad-variation") for at in empty])  # fmt: skip
    probe = "".join(f"{_PROBE}{piece}\n" for _, piece in pieces)
    try:
        spec = parse(probe, filename="--vary")
    except SpecError as exc:
        raise error([attrs.evolve(d, span=_moved(d.span, pieces)) for d in exc.diagnostics]) from None
    values = tuple(attrs.evolve(rule.budget, span=None) for rule in spec.rules)
    twice = []
    for i, value in enumerate(values):
        first = next(j for j, other in enumerate(values) if other == value)
        if first != i:
            offset, piece = pieces[i]
            message = f"'{piece}' is the same budget as '{pieces[first][1]}'"
            twice.append(Diagnostic(message, _span(offset, offset + len(piece)), code="bad-variation"))
    if twice:
        raise error(twice)
    return values


def selector_text(rule: Rule) -> str:
    """A rule's selectors as ``fmt`` writes them (``@Linear, !fc2``): how variations name rules."""
    return ", ".join(format_selector(s) for s in rule.selectors)


def _budgeted_position(spec: Spec, selector: str) -> int:
    """How many rules with a budget come before the rule of ``selector`` in ``spec``: the index of
    its budget in the plan's budgets, and in each step record's (the binder keeps rule order)."""
    budgeted = [rule for rule in spec.rules if rule.budget is not None]
    for position, rule in enumerate(budgeted):
        if selector_text(rule) == selector:
            return position
    raise EngineError(f"the variant spec has no rule '{selector} : …' with a budget")


def _stored(report: dict[str, Any], tasks: Sequence[str], unit: str) -> int | None:
    """What the compressed ``tasks`` take in ``unit`` as stored (the size table's rows); None for
    flops, which a size table does not count, or when a row lacks it."""
    if unit not in ("bits", "params"):
        return None
    rows = {row.get("task"): row for row in report["size"].get("tasks", [])}
    values = [rows.get(task, {}).get(f"{unit}_after") for task in tasks]
    return None if any(v is None for v in values) else sum(values)


def budget_results(
    report: dict[str, Any], spec: Spec, variations: Sequence[BudgetVariation], *, path: str
) -> list[dict[str, Any]]:
    """Per budget variation, what the run at ``path`` made of its budget: ``selector``, ``within``
    (as written), ``unit``, ``limit`` (absolute), ``allocated`` (the final allocation's cost),
    ``achieved`` (stored bits or params of the budget's tasks; the allocated cost for flops) and
    ``within_budget`` (``achieved ≤ limit``).

    Args:
        report: the variant's report.json.
        spec: the variant's spec.
        path: the report's path, for messages.

    Raises:
        EngineError: the report records no allocation of that budget (an engine without budgets),
            or one for another budget than the spec's.
    """
    steps = report.get("steps")
    last = steps[-1].get("budgets") if isinstance(steps, list) and steps and isinstance(steps[-1], dict) else None
    out = []
    for variation in variations:
        position = _budgeted_position(spec, variation.selector)
        rule = [r for r in spec.rules if r.budget is not None][position]
        written = format_budget(rule.budget)
        if not isinstance(last, list) or position >= len(last) or not isinstance(last[position], dict):
            raise EngineError(f"{path}: the last step records no allocation for '{variation.selector} : … {written}'"
                              " (was it made by an lcdsl without budgets in the C step?)")  # fmt: skip
        entry = last[position]
        if entry.get("budget") != written or any(k not in entry for k in ("unit", "limit", "cost", "choices")):
            raise EngineError(f"{path}: the last step's budget {position + 1} is {entry.get('budget')!r}, "
                              f"not '{written}' of the rule '{variation.selector}'")  # fmt: skip
        unit, limit, allocated = entry["unit"], entry["limit"], entry["cost"]
        stored = _stored(report, list(entry["choices"]), unit)
        achieved = allocated if stored is None else stored
        out.append({
            "selector": variation.selector, "within": rule.budget.text, "unit": unit, "limit": limit,
            "allocated": allocated, "achieved": achieved, "within_budget": achieved <= limit,
        })  # fmt: skip
    return out

