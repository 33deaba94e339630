"""The plan as a table: one row a task, then the dense parameters, the buffers, then the totals.

Buffers (BatchNorm's running statistics, …) are counted at their own dtype's bits, as every saved
file stores them, and are part of the totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from lcdsl.operators.base import FLOAT_BITS, Storage
from lcdsl.plan.model import Plan
from lcdsl.plan.summary import plan_summary
from lcdsl.report.console import human_bits

__all__ = ["plan_table", "buffer_text", "penalty_table", "PENALTY_NOTE"]

PENALTY_NOTE = (
    "A penalty form's size comes from θ: one C step on these weights at each μ (λ = 0). Direct "
    "compression (step 0) is the limit μ → 0⁺, where the cost wins (rank 0, nothing kept); the "
    "run then keeps what the L steps make worth its price α."
)


def _shape_text(shapes: tuple[tuple[int, ...], ...]) -> str:
    return ", ".join("×".join(map(str, s)) for s in shapes)


def buffer_text(names: list[str], shown: int = 3) -> str:
    """How many buffers, and the first few names: ``60 (bn1.running_mean, bn1.running_var, …)``."""
    more = ", …" if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"


def _fmt_ratio(ratio: float | None) -> str:
    return f"×{ratio:.1f}" if ratio is not None else "after training"


def _with_ties(plan: Plan, names: list[str]) -> str:
    """`` (tied: lm_head.weight)`` for the tied ones among ``names``, or ``""``."""
    tied = [alias for name in names for alias in plan.tied(name)]
    return f" (tied: {', '.join(tied)})" if tied else ""


def plan_table(plan: Plan, storages: list[Storage | None] | None = None, title: str = "plan") -> Table:
    """A rich table of :func:`plan_summary`: one row a task, then the dense ones, then totals."""
    summary = plan_summary(plan, storages)
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("line", "right"),
        ("task", "left"),
        ("shape", "left"),
        ("weights", "right"),
        ("operator", "left"),
        ("params", "right"),
        ("size", "right"),
        ("ratio", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in summary["tasks"]:
        table.add_row(
            str(row["line"] or ""),
            row["task"] + _with_ties(plan, row["parameters"]),
            _shape_text(tuple(tuple(s) for s in row["shapes"])),
            f"{row['weights']:,}",
            row["operator"] + (f"\n{row['axes']}" if row["axes"] else ""),  # the axis a structured operator works on
            f"{row['params_after']:,}" if row["params_after"] is not None else "?",
            human_bits(row["bits_after"]) if row["bits_after"] is not None else "?",
            "by budget" if row["ratio"] is None and row.get("budgeted") else _fmt_ratio(row["ratio"]),
        )
    if summary["dense"]:
        table.add_row(
            "",
            "dense: " + ", ".join(name + _with_ties(plan, [name]) for name in summary["dense"]),
            "",
            f"{summary['dense_params']:,}",
            "(left as is, 32-bit)",
            f"{summary['dense_params']:,}",
            human_bits(summary["dense_params"] * FLOAT_BITS),
            "×1.0",
            end_section=not summary["buffers"],
        )
    if summary["buffers"]:
        table.add_row(
            "",
            f"buffers: {buffer_text(summary['buffers'])}, {summary['buffer_values']:,} values",
            "",
            "",
            "(stored as they are)",
            "",
            human_bits(summary["buffer_bits"]),
            "×1.0",
            end_section=True,
        )
    table.add_row(
        "",
        "total",
        "",
        f"{summary['params_before']:,}",
        f"{human_bits(summary['total_bits_before'])} dense",
        f"{summary['params_after']:,}" if summary["params_after"] is not None else "?",
        human_bits(summary["total_bits_after"]) if summary["total_bits_after"] is not None else "?",
        _fmt_ratio(summary["ratio"]),
        style="bold",
    )
    return table


def _kept_text(at: dict[str, Any]) -> str:
    """``rank 50 of 300 · 54,200 params ×4.3``."""
    size = f"{at['params']:,} params" if at["params"] is not None else "? params"
    ratio = f" {_fmt_ratio(at['ratio'])}" if at["ratio"] is not None else ""
    return f"{at['kept']} · {size}{ratio}" if at["kept"] else f"{size}{ratio}"


def penalty_table(rows: list[dict[str, Any]], mus: Sequence[float], weights: str, *, ends: bool = True) -> Table:
    """What each penalty form keeps at each μ of ``mus`` (rows of
    :func:`lcdsl.plan.summary.penalty_sizes` at ``mus``), on ``weights`` (where they came from):
    the schedule's first and last μ (``ends``), or the μ an ``auto`` run may pass through."""
    table = Table(title=f"penalty forms on {weights}", title_justify="left")
    table.add_column("task", justify="left")
    table.add_column("operator", justify="left")
    table.add_column("weights", justify="right")
    labels = [f"at the first μ = {mus[0]:.3g}", f"at the last μ = {mus[-1]:.3g}"] if ends else [
        f"at μ = {mu:.3g}" for mu in mus
    ]
    for label in labels:
        table.add_column(label, justify="left")
    for row in rows:
        table.add_row(row["task"], row["operator"], f"{row['weights']:,}", *(_kept_text(at) for at in row["at"]))
    if len(rows) > 1:
        weights_total = sum(row["weights"] for row in rows)
        totals = []
        for i in range(len(mus)):
            ats = [row["at"][i] for row in rows]
            known = all(at["bits"] is not None for at in ats)
            bits = sum(at["bits"] for at in ats) if known else None
            totals.append({
                "params": sum(at["params"] for at in ats) if known else None,
                "ratio": weights_total * FLOAT_BITS / bits if bits else None,
                "kept": None,
            })  # fmt: skip
        table.add_row("total", "", f"{weights_total:,}", *(_kept_text(t) for t in totals), style="bold")
    return table


def _budget_amount(value: int, unit: str) -> str:
    return human_bits(value) if unit == "bits" else f"{value:,} {unit}"


def budget_table(row: dict[str, Any], weights: str) -> Table:
    """One budget of ``lcdsl check``: what each task would choose by direct compression of
    ``weights``, its cost, and the total against the limit (a row of
    :func:`lcdsl.plan.summary.budget_choices`)."""
    unit = row["unit"]
    where = f" (line {row['line']})" if row.get("line") else ""
    table = Table(title=f"{row['budget']}{where}: limit {_budget_amount(row['limit'], unit)}, choices on {weights}")
    for column in ("task", "choice", "size", "options from … to"):
        table.add_column(column, justify="left" if column in ("task", "choice") else "right")
    for task in row["tasks"]:
        span = f"{_budget_amount(task['cheapest'], unit)} … {_budget_amount(task['dearest'], unit)}"
        table.add_row(task["task"], task["choice"], _budget_amount(task["cost"], unit), span)
    share = row["total"] / row["limit"] if row["limit"] else 0.0
    table.add_row("total", "", _budget_amount(row["total"], unit), f"{share:.0%} of the limit")
    return table
