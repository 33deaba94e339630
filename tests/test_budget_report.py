"""The budgets in the end-of-run summary (final allocation, cost against the limit in readable
units, the steps where it moved) and in curves.png (one panel more per budget)."""

from __future__ import annotations

import pytest

import lcdsl.report.run as run_report
from lcdsl.engine import Engine
from lcdsl.engine.events import StepRecord
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.quant import Quant
from lcdsl.report import budget_amount, budget_lines, plot_curves
from tests.budget_plans import budget_plan, choice_of, two_layer_model

pytestmark = pytest.mark.usefixtures("one_thread")


def record(step: int, *budgets: dict) -> StepRecord:
    return StepRecord(step=step, mu=0.1 * step, loss=None, distortion=1.0, budgets=list(budgets))


def quant_entry(first: str, second: str, costs: tuple[int, int]) -> dict:
    return {
        "budget": "within 40kB", "unit": "bits", "limit": 320_000, "cost": sum(costs), "distortion": 0.5,
        "choices": {"fc1.weight": first, "fc2.weight": second},
        "costs": {"fc1.weight": costs[0], "fc2.weight": costs[1]},
    }  # fmt: skip


def rank_entry(rank: int) -> dict:
    return {
        "budget": "within 30% flops", "unit": "flops", "limit": 2_500_000, "cost": rank * 100_000,
        "distortion": 0.1, "choices": {"conv1.weight": f"rank={rank}"}, "costs": {"conv1.weight": rank * 100_000},
    }  # fmt: skip


HISTORY = [
    record(0, quant_entry("bits=3", "bits=2", (236_000, 60_000)), rank_entry(12)),
    record(1, quant_entry("bits=3", "bits=2", (236_000, 60_000)), rank_entry(12)),
    record(2, quant_entry("bits=2", "bits=4", (157_000, 120_000)), rank_entry(12)),
    record(3, quant_entry("bits=2", "bits=4", (157_000, 120_000)), rank_entry(10)),
    record(4, quant_entry("bits=2", "bits=4", (157_000, 120_000)), rank_entry(10)),
]


def test_amounts_are_readable_in_each_unit():
    assert budget_amount(320_000, "bits") == "40.0 kB"
    assert budget_amount(812 * 8, "bits") == "812 B"
    assert budget_amount(20_000, "params") == "20,000 params"
    assert budget_amount(2_500_000, "flops") == "2.5 Mflops"
    assert budget_amount(3_100_000_000, "flops") == "3.1 Gflops"
    assert budget_amount(640, "flops") == "640 flops"


def test_the_summary_shows_the_final_allocation_and_where_it_moved():
    lines = budget_lines(HISTORY)
    assert lines == [
        "budget 'within 40kB': 34.6 kB of 40.0 kB (87%)",
        "  fc1.weight  bits=2  19.6 kB",
        "  fc2.weight  bits=4  15.0 kB",
        "  step 0: fc1.weight bits=3, fc2.weight bits=2 (37.0 kB)",
        "  step 2: fc1.weight bits=2, fc2.weight bits=4 (34.6 kB)",
        "  unchanged since step 2 (last step 4)",
        "budget 'within 30% flops': 1 Mflops of 2.5 Mflops (40%)",
        "  conv1.weight  rank=10  1 Mflops",
        "  step 0: conv1.weight rank=12 (1.2 Mflops)",
        "  step 3: conv1.weight rank=10 (1 Mflops)",
        "  unchanged since step 3 (last step 4)",
    ]


def test_a_run_without_budgets_has_no_budget_lines():
    assert budget_lines([record(0), record(1)]) == []


def test_the_summary_of_a_real_budgeted_run_names_every_task_within_the_limit():
    model = two_layer_model()
    quant = choice_of([Quant(bits=b) for b in (1, 2, 3)], ["bits=1", "bits=2", "bits=3"])
    lowrank = choice_of([LowRank(rank=r) for r in (1, 2, 3)], ["rank=1", "rank=2", "rank=3"])
    plan = budget_plan(model, [(["0.weight"], quant, 4 * 32 + 320 * 2, "bits"),
                               (["2.weight"], lowrank, 2 * (12 + 16), "params")])  # fmt: skip
    engine = Engine(model, plan)
    engine.run(lambda engine, step: 0.0)
    lines = budget_lines(engine.history)
    assert lines[0] == "budget 'within 768 bits': 96 B of 96 B (100%)"
    assert lines[1] == "  0.weight  bits=2  96 B"
    second = lines.index("budget 'within 56 params': 56 params of 56 params (100%)")
    assert lines[second + 1] == "  2.weight  rank=2  56 params"
    assert lines[second - 1] == lines[-1] == "  unchanged since step 0 (last step 2)"
    assert engine.history[-1].to_dict()["budgets"][1]["costs"] == {"2.weight": 56}


def test_curves_gain_one_panel_per_budget(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = []
    save = run_report.save_figure

    def keep(fig, path):
        drawn.append([(ax.get_title(), ax.get_ylabel(), [line.get_ydata()[0] for line in ax.get_lines()])
                      for ax in fig.axes if ax.get_title().startswith("budget")])  # fmt: skip
        save(fig, path)

    monkeypatch.setattr(run_report, "save_figure", keep)
    path = tmp_path / "curves.png"
    assert plot_curves(HISTORY, path, title="budgets") is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (panels,) = drawn
    assert [(title, ylabel) for title, ylabel, _ in panels] == [
        ("budget 'within 40kB'", "chosen options' cost (kB)"),
        ("budget 'within 30% flops'", "chosen options' cost (flops)"),
    ]
    assert panels[0][2] == [40.0] and panels[1][2] == [2_500_000]  # the limit lines
    plot_curves([record(0), record(1)], tmp_path / "plain.png")
    assert drawn[1] == []
