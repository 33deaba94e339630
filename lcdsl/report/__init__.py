"""What lcdsl shows and saves about a plan and a run: tables, report.json, plots, sweeps.

Computing (:func:`build_report`, :func:`lcdsl.plan.plan_summary`) is kept apart from printing
(:class:`StepPrinter`, :func:`size_table`, :func:`plan_table`, :func:`budget_lines`) and from
writing files.
"""

from lcdsl.plugins.origin import versions
from lcdsl.report.budgets import budget_amount, budget_lines, plot_budget
from lcdsl.report.console import console, human_bits
from lcdsl.report.plan import plan_table
from lcdsl.report.run import (
    REPORT_FORMAT,
    StepPrinter,
    build_report,
    plot_curves,
    pyplot,
    save_figure,
    settings_json,
    size_table,
    write_report,
)  # fmt: skip

__all__ = [
    "REPORT_FORMAT", "StepPrinter", "size_table", "versions", "build_report", "write_report", "settings_json",
    "plot_curves", "pyplot", "save_figure", "plan_table", "console", "human_bits", "budget_amount", "budget_lines",
    "plot_budget",
]  # fmt: skip
