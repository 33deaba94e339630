"""Budget sweeps: ``--vary 'SEL : within = 10kB, 20kB'`` read as a spec's ``within``, located errors,
the variants' spec texts and folders, each run's limit against what it achieved, and ``lcdsl sweep``
over two budgets of a tiny LeNet-300 on digits."""

from __future__ import annotations

import json

import pytest

import lcdsl
from lcdsl.cli import main
from lcdsl.errors import EngineError, SpecError
from lcdsl.language.spec import Within
from lcdsl.report.sweep import BudgetVariation, collect, parse_variation, plot_tradeoff, slug, variants
from lcdsl.report.sweep_budgets import budget_results

BASE = """\
mu = geometric(start=1e-3, factor=2, steps=2)

fc1, fc2 : quant(bits=1..4) within 20kB   # the hidden layers
fc3      : prune(l0=10)
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_budget_variation_reads_amounts_as_the_spec_does():
    v = parse_variation(" fc1,  fc2 : within = 10kB, 2 KiB, 20000 params, 30% flops")
    assert isinstance(v, BudgetVariation) and v.selector == "fc1, fc2"
    assert v.values == (Within(80_000, "bits"), Within(2 * 8 * 1024, "bits"), Within(20_000, "params"),
                        Within(0.3, "flops", relative=True))  # fmt: skip
    assert [w.text for w in v.values] == ["10kB", "2KiB", "20000 params", "30% flops"]
    assert v.key == "fc1, fc2: within" and v.label(v.values[1]) == "fc1, fc2: within 2KiB"


def test_variants_replace_the_rules_within_and_nothing_else():
    spec = lcdsl.parse(BASE)
    out = variants(spec, [parse_variation("fc1,fc2 : within = 10kB, 30% flops")])
    assert [v.label for v in out] == ["fc1, fc2: within 10kB", "fc1, fc2: within 30% flops"]
    assert out[0].spec.source == BASE.replace("within 20kB", "within 10kB")
    assert out[1].spec.source == BASE.replace("within 20kB", "within 30% flops")
    assert out[1].spec.rules[0].budget == Within(0.3, "flops", relative=True)
    assert [slug(i, v) for i, v in enumerate(out)] == ["00-fc1-fc2-within-10kB", "01-fc1-fc2-within-30pct-flops"]


def test_a_budget_and_an_argument_make_a_grid():
    spec = lcdsl.parse(BASE)
    out = variants(spec, [parse_variation("fc1, fc2 : within = 10kB, 40kB"), parse_variation("fc3 : prune.l0 = 5, 20")])
    assert len(out) == 4
    assert out[3].values == {"fc1, fc2: within": Within(320_000, "bits"), "fc3: prune.l0": 20}
    assert "within 40kB" in out[3].spec.source and "prune(l0=20)" in out[3].spec.source
    assert slug(3, out[3]) == "03-fc1-fc2-within-40kB_prune.l0-20"


@pytest.mark.parametrize(
    "text, code, column, carets, message",
    [
        ("fc* : within = 10kB, 20kb", "unknown-unit", 24, "^^", "unknown unit 'kb'"),
        ("fc* : within = 10kB, 20", "unknown-unit", 22, "^^", "a budget needs a unit"),
        ("fc* : within = 0kB", "bad-budget", 16, "^", "a budget must be more than zero"),
        ("fc* : within = 5% bits", "unknown-unit", 19, "^^^^", "a percentage budget is a share"),
        ("fc* : within = 10kB, 10000B", "bad-variation", 22, "^^^^^^", "'10000B' is the same budget as '10kB'"),
        ("fc* : within = 10kB, , 20kB", "bad-variation", 22, "^", "a budget amount is missing"),
        ("fc* : within = big", "missing-value", 16, "^^^", "expected an amount after 'within'"),
    ],
)
def test_bad_amounts_are_located_in_the_vary_text(text, code, column, carets, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_variation(text)
    error = info.value
    assert error.filename == "--vary" and error.codes[0] == code
    assert error.diagnostics[0].span.column == column
    rendered = error.render().splitlines()
    assert rendered[0].startswith(f"--vary:1:{column}: error: ")
    assert rendered[1].strip() == text and rendered[2] == " " * (column + 1) + carets


def test_a_budget_needs_the_equals_sign():
    with pytest.raises(SpecError, match="SELECTOR : within = AMOUNT1, AMOUNT2"):
        parse_variation("fc* : within 10kB, 20kB")


@pytest.mark.parametrize("text", ["fc* : within = 10kB\nfc3 : x() within 1kB", "fc* : within = 10kB\r20kB"])
def test_amounts_cannot_smuggle_in_more_lines(text):
    with pytest.raises(SpecError, match="a --vary option is one line"):
        parse_variation(text)


def test_the_rule_must_have_a_budget_and_be_varied_once():
    spec = lcdsl.parse(BASE)
    with pytest.raises(SpecError, match=r"the rule 'fc3 : prune\(l0=10\)' has no budget to vary") as info:
        variants(spec, [parse_variation("fc3 : within = 1kB")])
    assert "hint: give the rule a 'within …'" in info.value.render()
    with pytest.raises(SpecError, match="no rule has the selector 'fc9'"):
        variants(spec, [parse_variation("fc9 : within = 1kB")])
    with pytest.raises(SpecError, match="same argument"):
        variants(spec, [parse_variation("fc1, fc2 : within = 1kB"), parse_variation("fc1,fc2 : within = 2kB")])


def _report(limit: int, cost: int, stored: tuple[int, int], unit: str = "bits", text: str = "within 10kB") -> dict:
    """A run's report.json as far as budget_results reads it: the last step's allocation and the size rows."""
    allocation = {"budget": text, "unit": unit, "limit": limit, "cost": cost, "distortion": 1.0,
                  "choices": {"fc1.weight": "bits=1", "fc2.weight": "bits=2"}}  # fmt: skip
    rows = [{"task": "fc1.weight", "bits_after": stored[0], "params_after": 2},
            {"task": "fc2.weight", "bits_after": stored[1], "params_after": 4},
            {"task": "fc3.weight", "bits_after": 10**6, "params_after": 10}]  # fmt: skip
    return {"steps": [{"budgets": []}, {"budgets": [allocation]}], "size": {"tasks": rows}}


def test_budget_results_measure_the_stored_tasks_against_the_limit():
    (variant,) = variants(lcdsl.parse(BASE), [parse_variation("fc1, fc2 : within = 10kB")])
    variation = parse_variation("fc1, fc2 : within = 10kB")
    (inside,) = budget_results(_report(80_000, 70_000, (30_000, 40_000)), variant.spec, [variation], path="r.json")
    assert inside == {"selector": "fc1, fc2", "within": "10kB", "unit": "bits", "limit": 80_000, "allocated": 70_000,
                      "achieved": 70_000, "within_budget": True}  # fmt: skip
    # what the tasks really store counts, not what the allocation says they would
    (over,) = budget_results(_report(80_000, 70_000, (30_000, 50_001)), variant.spec, [variation], path="r.json")
    assert over["achieved"] == 80_001 and over["within_budget"] is False
    # flops are not in the size table: the allocation's cost is what was achieved
    (flops,) = budget_results(_report(500, 600, (1, 1), unit="flops"), variant.spec, [variation], path="r.json")
    assert flops["achieved"] == 600 and flops["within_budget"] is False


def test_budget_results_need_the_runs_allocation():
    variation = parse_variation("fc1, fc2 : within = 10kB")
    (variant,) = variants(lcdsl.parse(BASE), [variation])
    without = {"steps": [{"budgets": []}], "size": {"tasks": []}}
    with pytest.raises(EngineError, match="records no allocation for 'fc1, fc2 : … within 10kB'"):
        budget_results(without, variant.spec, [variation], path="r.json")
    with pytest.raises(EngineError, match="is 'within 20kB', not 'within 10kB'"):
        budget_results(_report(1, 1, (1, 1), text="within 20kB"), variant.spec, [variation], path="r.json")


def test_the_plot_ticks_the_size_a_storage_budget_allows(tmp_path):
    result = {
        "reference": {"bits": 1_000_000, "test_error": 0.05},
        "runs": [
            {"bits": 40_000, "test_error": 0.2, "direct_test_error": None, "values": {"a": "10kB"},
             "budgets": [{"unit": "bits", "limit": 80_000, "achieved": 30_000}]},
            {"bits": 90_000, "test_error": 0.1, "direct_test_error": None, "values": {"a": "50% flops"},
             "budgets": [{"unit": "flops", "limit": 10, "achieved": 9}]},
        ],
    }  # fmt: skip
    assert plot_tradeoff(result, tmp_path / "s.png") is None
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TINY = ["--steps", "1", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]


def test_cli_budget_sweep_runs_each_budget_and_records_its_limit(tmp_path, capsys):
    spec_path = tmp_path / "base.lc"
    spec_path.write_text("fc1, fc2 : quant(bits=1..4) within 20kB\n")
    reference = tmp_path / "ref.pt"
    assert main(["train", "--model", "lenet300", "--data", "digits", "--out", str(reference), "--epochs", "1"]) == 0
    out = tmp_path / "sweep"
    argv = ["sweep", str(spec_path), "--vary", "fc1,fc2 : within = 10kB, 20kB", "--out", str(out),
            "--reference", str(reference), *TINY]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fc1, fc2: within 10kB" in printed and " of 10 kB" in printed and "OVER" not in printed
    result = json.loads((out / "sweep.json").read_text())
    assert result["variations"] == [{"selector": "fc1, fc2", "operator": None, "argument": "within",
                                     "values": ["10kB", "20kB"]}]  # fmt: skip
    small, large = result["runs"]
    assert [r["dir"].split("/")[-1] for r in (small, large)] == ["00-fc1-fc2-within-10kB", "01-fc1-fc2-within-20kB"]
    assert small["spec"] == "fc1, fc2 : quant(bits=1..4) within 10kB\n"
    assert (out / "01-fc1-fc2-within-20kB" / "spec.lc").read_text() == "fc1, fc2 : quant(bits=1..4) within 20kB\n"
    for run, limit in ((small, 80_000), (large, 160_000)):
        (budget,) = run["budgets"]
        assert budget["limit"] == limit and budget["unit"] == "bits"
        assert budget["within"] == run["values"]["fc1, fc2: within"]
        report = json.loads((out / run["dir"].split("/")[-1] / "report.json").read_text())
        rows = report["size"]["tasks"]
        stored = sum(row["bits_after"] for row in rows if row["task"] in ("fc1.weight", "fc2.weight"))
        assert budget["achieved"] == stored <= limit and budget["within_budget"] is True
    assert small["bits"] < large["bits"]  # a larger budget buys a larger model
    assert (out / "sweep.png").is_file()


def test_cli_a_bad_budget_stops_the_sweep_before_training(tmp_path, capsys):
    spec_path = tmp_path / "base.lc"
    spec_path.write_text("fc1, fc2 : quant(bits=1..4) within 20kB\nfc3 : prune(l0=10)\n")
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec_path), "--vary", "fc1, fc2 : within = 10kB, 20 kb", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--vary:1:30: error: unknown unit 'kb'" in err and "Traceback" not in err
    assert main(["sweep", str(spec_path), "--vary", "fc3 : within = 1kB", "--out", str(out), *TINY]) == 2
    assert "the rule 'fc3 : prune(l0=10)' has no budget to vary" in capsys.readouterr().err
    # a budget below the cheapest choices is found when the variants bind, before any reference is trained
    assert main(["sweep", str(spec_path), "--vary", "fc1, fc2 : within = 1kB", "--out", str(out), *TINY]) == 2
    assert "the cheapest choices take" in capsys.readouterr().err
    assert not (out / "reference.pt").exists()
