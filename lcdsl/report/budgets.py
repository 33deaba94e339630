"""A run's budgets in the end-of-run summary and in curves.png: each ``within …``'s final
allocation (task → option, cost against the limit) and how it moved over the LC steps.

Everything is read from the step records (:attr:`StepRecord.budgets`, also in report.json's
``steps``), so a finished run's report can be redrawn from its JSON alone.
"""

from __future__ import annotations

from typing import Any

from lcdsl.engine.events import StepRecord
from lcdsl.report.console import human_bits

__all__ = ["budget_amount", "budget_names", "budget_lines", "budget_series", "plot_budget"]

_FLOP_PREFIXES = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def budget_amount(value: float, unit: str) -> str:
    """A budget's amount, readable: bits as bytes (``39.2 kB``), ``20,000 params``,
    ``1.25 Mflops``."""
    if unit == "bits":
        return human_bits(value)
    if unit == "params":
        return f"{int(value):,} params"
    if unit == "flops":
        for prefix, scale in _FLOP_PREFIXES:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}flops"
        return f"{int(value)} flops"
    return f"{value:g} {unit}"


def budget_names(history: list[StepRecord]) -> list[str]:
    """Each budget's text, in the order of the plan, from the records that have any."""
    names: list[str] = []
    for record in history:
        for entry in record.budgets:
            if entry["budget"] not in names:
                names.append(entry["budget"])
    return names


def _entries(history: list[StepRecord], name: str) -> list[tuple[int, dict[str, Any]]]:
    """``(step, entry)`` of budget ``name`` at every step that recorded it."""
    return [(r.step, e) for r in history for e in r.budgets if e["budget"] == name]


def _width(names: Any) -> int:
    return max((len(n) for n in names), default=0)


def budget_lines(history: list[StepRecord]) -> list[str]:
    """The summary of every budget of a run, as lines of text (none without budgets)::

        budget 'within 40kB': 39.2 kB of 40.0 kB (98%)
          fc1.weight  bits=2  29.5 kB
          fc2.weight  bits=3   9.7 kB
          step 0: fc1.weight bits=3, fc2.weight bits=2 (39.9 kB)
          step 3: fc1.weight bits=2, fc2.weight bits=3 (39.2 kB)
          unchanged since step 3 (last step 10)

    The step lines show the allocation at the first step and then only where it changed
    (only the tasks whose option changed)."""
    lines: list[str] = []
    for name in budget_names(history):
        entries = _entries(history, name)
        last_step, last = entries[-1]
        unit, limit, cost = last["unit"], last["limit"], last["cost"]
        share = f" ({100 * cost / limit:.0f}%)" if limit else ""
        lines.append(f"budget '{name}': {budget_amount(cost, unit)} of {budget_amount(limit, unit)}{share}")
        tasks = list(last["choices"])
        spent = {t: budget_amount(c, unit) for t, c in last.get("costs", {}).items()}
        widths = _width(tasks), _width(last["choices"].values()), _width(spent.values())
        for task in tasks:
            label, amount = last["choices"][task], spent.get(task, "")
            lines.append(f"  {task:<{widths[0]}}  {label:<{widths[1]}}  {amount:>{widths[2]}}".rstrip())
        previous: dict[str, str] = {}
        changed_at = entries[0][0]
        for step, entry in entries:
            moved = {t: c for t, c in entry["choices"].items() if previous.get(t) != c}
            if moved:
                what = ", ".join(f"{t} {c}" for t, c in moved.items())
                lines.append(f"  step {step}: {what} ({budget_amount(entry['cost'], unit)})")
                changed_at = step
            previous = dict(entry["choices"])
        if len(entries) > 1:
            lines.append(f"  unchanged since step {changed_at} (last step {last_step})")
    return lines


def budget_series(history: list[StepRecord], name: str) -> tuple[list[int], dict[str, list[float]], int, str]:
    """Budget ``name`` over the LC steps: the steps, each task's chosen option cost at each of
    them (NaN where a record lacks it), the last limit and the unit."""
    entries = _entries(history, name)
    steps = [step for step, _ in entries]
    tasks: list[str] = []
    for _, entry in entries:
        tasks += [t for t in entry["choices"] if t not in tasks]
    series = {t: [float(e.get("costs", {}).get(t, float("nan"))) for _, e in entries] for t in tasks}
    return steps, series, int(entries[-1][1]["limit"]), str(entries[-1][1]["unit"])


def plot_budget(ax: Any, history: list[StepRecord], name: str) -> None:
    """Draw budget ``name`` on the matplotlib axes ``ax``: each task's chosen option cost over
    the LC steps, stacked (their sum is the budget's cost), and the limit as a dashed line;
    bits are drawn as kB."""
    steps, series, limit, unit = budget_series(history, name)
    scale, axis_unit = (8000.0, "kB") if unit == "bits" else (1.0, unit)
    ax.stackplot(steps, *[[v / scale for v in values] for values in series.values()], labels=list(series),
                 step="post", alpha=0.8)  # fmt: skip
    ax.axhline(limit / scale, color="black", linestyle="--", linewidth=1, label=f"limit ({budget_amount(limit, unit)})")
    ax.set_xlabel("LC step")
    ax.set_ylabel(f"chosen options' cost ({axis_unit})")
    ax.set_title(f"budget '{name}'", fontsize=9)
    totals = [sum(v for v in at if v == v) for at in zip(*series.values())]  # NaN (unknown) counts 0
    ax.set_ylim(0, max([limit / scale, *(t / scale for t in totals)]) * 1.1 or 1.0)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
