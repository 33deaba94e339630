"""What ``lcdsl compress`` shows and saves: the step rows, the size table, the budgets'
allocations (:mod:`lcdsl.report.budgets`), report.json, curves.png.

Computing (:func:`build_report`, :func:`~lcdsl.plan.summary.plan_summary`) is kept apart from printing
(:class:`StepPrinter`, :func:`size_table`) and from writing files (:func:`write_report`,
:func:`plot_curves`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lcdsl.engine.events import StepRecord
from lcdsl.engine.schedule import Convergence, auto_rules, fixed_schedule_warnings
from lcdsl.formats import REPORT_FORMAT
from lcdsl.operators.base import FLOAT_BITS, Storage
from lcdsl.plan.model import Plan
from lcdsl.plan.settings import Auto, Settings, settings_data
from lcdsl.plan.summary import plan_summary
from lcdsl.plugins.origin import versions
from lcdsl.report.budgets import budget_lines, budget_names, plot_budget
from lcdsl.report.console import human_bits
from lcdsl.report.plan import buffer_text
from lcdsl.store.atomic import write_atomic

__all__ = [
    "REPORT_FORMAT",
    "StepPrinter",
    "size_table",
    "versions",
    "build_report",
    "write_report",
    "settings_json",
    "schedule_line",
    "schedule_lines",
    "plot_curves",
    "budget_lines",
    "pyplot",
    "save_figure",
]

# (header, width, justify) of the per-step rows.
_STEP_COLUMNS = (
    ("step", 4, "right"),
    ("μ", 9, "right"),
    ("L-step loss", 11, "right"),
    ("‖w − Δ(θ)‖²", 11, "right"),
    ("train err", 9, "right"),
    ("test err", 8, "right"),
    ("size", 9, "right"),
    ("ratio", 7, "right"),
    ("time", 6, "right"),
)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


class StepPrinter:
    """Prints one row per LC step as it comes, in columns that line up across rows.

    Args:
        console: where to print.
        dense_bits: bits of the parameters no task compresses and of the buffers (added to each step's size).
        bits_before: bits of the whole model at 32 bits a number (the ratio's numerator).
    """

    def __init__(self, console: Console, *, dense_bits: int, bits_before: int) -> None:
        self.console = console
        self.dense_bits = dense_bits
        self.bits_before = bits_before
        self._header_shown = False

        self._loss_column = False  # "test loss" instead of "test err": a model that is no classifier

    def _table(self, header: bool) -> Table:
        table = Table(show_header=header, box=None, pad_edge=False, padding=(0, 1))
        for name, width, justify in _STEP_COLUMNS:
            if name == "test err" and self._loss_column:
                name, width = "test loss", 9
            table.add_column(name, width=width, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        return table

    def row(self, record: StepRecord) -> list[str]:
        """The texts of one record's row (the test column holds the mean test loss of a model
        measured by loss, :func:`lcdsl.training.epochs.evaluate`)."""
        total = None if record.bits is None else record.bits + self.dense_bits
        test_loss = record.metrics.get("test_loss")
        if "test_error" in record.metrics or test_loss is None:
            test = _percent(record.metrics.get("test_error"))
        else:
            test = f"{test_loss:.4f}"
        return [
            str(record.step),
            "direct" if record.step == 0 else f"{record.mu:.3g}",
            "" if record.loss is None else f"{record.loss:.4f}",
            f"{record.distortion:.4g}",
            _percent(record.metrics.get("train_error")),
            test,
            "?" if total is None else human_bits(total),
            "?" if not total else f"×{self.bits_before / total:.1f}",
            f"{record.seconds_l_step + record.seconds_c_step:.1f}s",
        ]

    def print(self, record: StepRecord) -> None:
        """Print ``record``'s row (with the header before the first row)."""
        if not self._header_shown:
            self._loss_column = "test_error" not in record.metrics and "test_loss" in record.metrics
        table = self._table(header=not self._header_shown)
        table.add_row(*self.row(record))
        self._header_shown = True
        self.console.print(table)


def size_table(summary: dict[str, Any], title: str = "compressed model") -> Table:
    """The final table of a :func:`~lcdsl.plan.summary.plan_summary`: one row a task, the dense
    parameters, the buffers, the total (buffers included)."""
    table = Table(title=title, title_justify="left")
    for column in ("task", "operator", "params before", "params after", "bits before", "bits after", "ratio"):
        table.add_column(column, justify="left" if column in ("task", "operator") else "right")

    def ratio(value: float | None) -> str:
        return "?" if value is None else f"×{value:.1f}"

    def count(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    for row in summary["tasks"]:
        table.add_row(
            row["task"], row["operator"], count(row["params_before"]), count(row["params_after"]),
            human_bits(row["bits_before"]), "?" if row["bits_after"] is None else human_bits(row["bits_after"]),
            ratio(row["ratio"]),
        )  # fmt: skip
    if summary["dense"]:
        dense_bits = summary["dense_params"] * FLOAT_BITS
        table.add_row(
            "dense: " + ", ".join(summary["dense"]), "(left as is, 32-bit)", count(summary["dense_params"]),
            count(summary["dense_params"]), human_bits(dense_bits), human_bits(dense_bits), "×1.0",
            end_section=not summary.get("buffers"),
        )  # fmt: skip
    if summary.get("buffers"):
        values, bits = summary["buffer_values"], summary["buffer_bits"]
        table.add_row(
            f"buffers: {buffer_text(summary['buffers'])}, {values:,} values", "(stored as they are)", "", "",
            human_bits(bits), human_bits(bits), "×1.0", end_section=True,
        )  # fmt: skip
    table.add_row(
        "total", "", count(summary["params_before"]), count(summary["params_after"]),
        human_bits(summary.get("total_bits_before", summary["bits_before"])),
        "?" if summary.get("total_bits_after") is None else human_bits(summary["total_bits_after"]),
        ratio(summary["ratio"]), style="bold",
    )  # fmt: skip
    return table


def settings_json(settings: Settings) -> dict[str, Any]:
    """Settings as plain data, the μ schedule with its kind and every value
    (:func:`~lcdsl.plan.settings.settings_data`)."""
    return settings_data(settings)


def schedule_line(settings: Settings) -> str:
    """The μ schedule a run follows, in one line: ``20 LC steps, μ 9e-05 → 0.00337, 42 epochs`` or
    ``auto: at most 20 LC steps (42 epochs), μ from the model, …``."""
    mu = settings.mu

    def epochs(steps: int) -> int:
        return settings.first_epochs + (steps - 1) * settings.epochs

    if isinstance(mu, Auto):
        start = "μ₀ from the model" if mu.start is None else f"μ₀ = {mu.start:g}"
        return (
            f"μ auto: at most {mu.steps} LC steps ({epochs(mu.steps)} epochs, + {mu.retries} retries of "
            f"{settings.epochs}), {start}, until ‖w − Δ(θ)‖² ≤ {mu.tolerance:g} × direct compression's"
        )
    values = mu.values()
    return f"{len(values)} LC steps ({epochs(len(values))} epochs), μ {values[0]:.3g} → {values[-1]:.3g}"


def schedule_lines(settings: Settings) -> list[str]:
    """:func:`schedule_line` and, for ``auto``, its rules; for a fixed schedule, a warning when
    some step's ``lr·μ`` is past the optimizer's stable limit (what ``lcdsl check`` prints)."""
    mu = settings.mu
    lines = [f"schedule: {schedule_line(settings)}"]
    if isinstance(mu, Auto):
        lines += [f"  - {rule}" for rule in auto_rules(mu, settings)]
    else:
        lines += [f"  warning: {line}" for line in fixed_schedule_warnings(settings)]
    return lines


def build_report(
    *,
    spec_path: str,
    spec_text: str,
    model: str,
    data: str,
    settings: Settings,
    plan: Plan,
    history: list[StepRecord],
    storages: list[Storage | None],
    reference: dict[str, Any],
    final: dict[str, float],
    convergence: Convergence | None = None,
    warnings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything about a finished run, as JSON-ready data.

    Args:
        reference: what is known of the reference model (path, test and train error).
        final: the errors of the final compressed model.
        convergence: how the run ended against ``w = Δ(θ)`` (:meth:`Engine.convergence`).
        warnings: the run's warnings (diverged, rolled-back, unstable steps).
    """
    steps = [r.to_dict() for r in history]
    direct = history[0].metrics if history and history[0].step == 0 else {}
    return {
        "format": REPORT_FORMAT,
        "spec": {"path": spec_path, "text": spec_text},
        "model": model,
        "data": data,
        "settings": settings_json(settings),
        "plan": plan_summary(plan),
        "reference": reference,
        "steps": steps,
        "final": {**final, "direct_compression": dict(direct)},
        "convergence": None if convergence is None else convergence.to_dict(),
        "warnings": list(warnings or []),
        "size": plan_summary(plan, storages),
        "seconds": {
            "l_steps": sum(r.seconds_l_step for r in history),
            "c_steps": sum(r.seconds_c_step for r in history),
        },
        "versions": versions(),
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed), or None when
    matplotlib cannot be imported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """Write a matplotlib figure as PNG, atomically, and free it."""
    fig.tight_layout()
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        pyplot().close(fig)


def plot_curves(
    history: list[StepRecord], path: str | Path, title: str = "", convergence: Convergence | None = None
) -> str | None:
    """Plot test/train error (test loss for a model measured by loss) and ``‖w − Δ(θ)‖²`` against
    the LC step into ``path`` (PNG), with μ on a second axis and, for a run that did not reach
    ``w = Δ(θ)``, the "not converged" line; for a run with budgets, one panel more per budget:
    its tasks' chosen option costs over the LC steps, stacked, against its limit
    (:func:`~lcdsl.report.budgets.plot_budget`).

    Returns:
        None when the plot was written; a one-line note when matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return "curves.png skipped: matplotlib is not installed (pip install matplotlib)"
    steps = [r.step for r in history]
    budgets = budget_names(history)  # one more panel each: its tasks' chosen costs against the limit
    fig, axes = plt.subplots(1, 2 + len(budgets), figsize=(10 + 5 * len(budgets), 4), squeeze=False)
    ax_err, ax_dist = axes[0][0], axes[0][1]
    for ax, name in zip(axes[0][2:], budgets):
        plot_budget(ax, history, name)
    by_loss = any("test_loss" in r.metrics for r in history) and not any("test_error" in r.metrics for r in history)
    if by_loss:  # a model measured by its loss (a language model)
        ax_err.plot(steps, [r.metrics.get("test_loss", float("nan")) for r in history], marker="o", label="test")
    for key, label in () if by_loss else (("test_error", "test"), ("train_error", "train")):
        values = [100 * r.metrics[key] if key in r.metrics else float("nan") for r in history]
        ax_err.plot(steps, values, marker="o", label=label)
    ax_err.set_xlabel("LC step (0 = direct compression)")
    ax_err.set_ylabel("test loss of the compressed model" if by_loss else "error of the compressed model (%)")
    ax_err.legend()
    ax_err.grid(alpha=0.3)
    distortions = [max(r.distortion, 1e-30) for r in history]
    ax_dist.semilogy(steps, distortions, marker="o", color="tab:red")
    ax_dist.set_xlabel("LC step")
    ax_dist.set_ylabel("‖w − Δ(θ)‖²", color="tab:red")
    ax_dist.grid(alpha=0.3, which="both")
    if convergence is not None:
        ax_dist.axhline(convergence.target, color="tab:red", linestyle=":", linewidth=1, label="feasible")
    if len(history) > 1:
        ax_mu = ax_dist.twinx()
        ax_mu.semilogy(steps[1:], [r.mu for r in history[1:]], marker=".", color="tab:blue", alpha=0.6)
        ax_mu.set_ylabel("μ", color="tab:blue")
    if convergence is not None and not convergence.converged:
        ax_dist.set_title(convergence.message.split(" (")[0], color="tab:red", fontsize=9)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return None
