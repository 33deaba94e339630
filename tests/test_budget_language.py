"""Budgets in the language and the plan: ranges and ``within`` parse, format and round-trip; every
new error points at its place; the binder makes a Choice per task and one Budget per rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lcdsl.errors import SpecError
from lcdsl.language import Range, Within, format_spec, parse
from lcdsl.language.fmt import format_budget
from lcdsl.operators.choice import Choice
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant
from lcdsl.plan.summary import budget_choices


def _error(text: str, model: nn.Module | None = None, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as caught:
        spec = parse(text)
        if model is not None:
            spec.bind(model, **kwargs)
    return caught.value


def _where(error: SpecError) -> tuple[str, int, int]:
    d = error.diagnostics[0]
    return d.code, d.span.line, d.span.column


# ---- parsing and fmt


@pytest.mark.parametrize(
    "text, amount, unit, relative, canonical",
    [
        ("40kB", 320_000.0, "bits", False, "40kB"),
        ("40 kB", 320_000.0, "bits", False, "40kB"),
        ("3.5MiB", 3.5 * 8 * 1024**2, "bits", False, "3.5MiB"),
        ("2 KiB", 2 * 8 * 1024, "bits", False, "2KiB"),
        ("12B", 96.0, "bits", False, "12B"),
        ("320000 bits", 320_000.0, "bits", False, "320000 bits"),
        ("20000 params", 20_000.0, "params", False, "20000 params"),
        ("2Mflops", 2e6, "flops", False, "2 Mflops"),
        ("5 kflops", 5e3, "flops", False, "5 kflops"),
        ("30%", 0.3, "bits", True, "30%"),
        ("30% flops", 0.3, "flops", True, "30% flops"),
        ("2.5% params", 0.025, "params", True, "2.5% params"),
    ],
)
def test_within_reads_units_and_writes_them_canonically(text, amount, unit, relative, canonical):
    rule = parse(f"fc1 : quant(bits=1..8) within {text}").rules[0]
    assert rule.budget == Within(amount, unit, relative)
    assert rule.budget.text == canonical
    assert format_spec(parse(f"fc1 : quant(bits=1..8) within {text}")) == f"fc1 : quant(bits=1..8) within {canonical}\n"


def test_a_range_is_a_value_and_round_trips():
    rule = parse("fc1 : quant(bits=1..8) + prune(l0=10..12) within 1kB").rules[0]
    assert rule.terms[0].kwargs() == {"bits": Range(1, 8)}
    assert rule.terms[1].kwargs()["l0"].values == (10, 11, 12)
    assert rule.terms[0].args[0].value.span.column == 18
    assert parse(format_spec(parse("a : quant(k=2..16) within 1kB"))).rules[0].terms[0].kwargs() == {"k": Range(2, 16)}


def test_fmt_keeps_the_colon_column_with_budgets():
    text = "fc1, fc2 : quant(bits=1..4) within 40 kB   # mixed\nconv* : lowrank(rank=auto) within 30% flops\n"
    assert format_spec(parse(text)) == (
        "fc1, fc2 : quant(bits=1..4) within 40kB   # mixed\n"
        "conv*    : lowrank(rank=auto) within 30% flops\n"
    )


@pytest.mark.parametrize(
    "within, written",
    [
        (Within(320_000, "bits"), "within 320000 bits"),
        (Within(0.3, "flops", relative=True), "within 30% flops"),
        (Within(0.25, "bits", relative=True), "within 25%"),
        (Within(1500, "params"), "within 1500 params"),
        (Within(320_000, "bits", text="40kB"), "within 40kB"),
        (Within(320_000, "bits", text="41kB"), "within 320000 bits"),  # a text that disagrees is not trusted
    ],
)
def test_budgets_built_in_code_are_written_so_they_read_back(within, written):
    assert format_budget(within) == written
    assert parse(f"x : quant(bits=1..2) {written}").rules[0].budget == within


# ---- located syntax and value errors


@pytest.mark.parametrize(
    "text, code, column",
    [
        ("fc1 : quant(bits=8..1) within 1kB", "empty-range", 18),
        ("fc1 : quant(bits=1..8) within 0kB", "bad-budget", 31),
        ("fc1 : quant(bits=1..8) within -3 params", "bad-budget", 31),
        ("fc1 : quant(bits=1..8) within 40 kb", "unknown-unit", 34),
        ("fc1 : quant(bits=1..8) within 40", "unknown-unit", 24),
        ("fc1 : quant(bits=1..8) within 30% bytes", "unknown-unit", 35),
        ("fc1 : quant(bits=1..8) within 1kB within 2kB", "repeated-budget", 35),
        ("fc1 : quant(bits=1..8) within", "missing-value", 30),
        ("fc1 : quant(bits=1..8) within kB", "missing-value", 31),
    ],
)
def test_language_errors_point_at_their_place(text, code, column):
    assert _where(_error(text)) == (code, 1, column)


def test_unknown_unit_lists_the_units():
    error = _error("fc1 : quant(bits=1..8) within 4 Kb")
    assert "kB" in error.diagnostics[0].hint and "Mflops" in error.diagnostics[0].hint


# ---- binding


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))


def _convs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))


def test_a_range_makes_one_choice_a_task_and_one_budget_a_rule():
    plan = parse("0, 2 : quant(bits=1..3) within 2kB").bind(_mlp())
    assert [t.name for t in plan.tasks] == ["0.weight", "2.weight"]
    for task in plan.tasks:
        assert isinstance(task.operator, Choice)
        assert task.operator.options == (Quant(bits=1), Quant(bits=2), Quant(bits=3))
        assert task.operator.labels == ("bits=1", "bits=2", "bits=3")
    (budget,) = plan.budgets
    assert (budget.tasks, budget.limit, budget.unit, budget.text) == (("0.weight", "2.weight"), 16_000, "bits", "within 2kB")
    for task, row in zip(plan.tasks, budget.costs):
        assert row == tuple(o.storage(task.view_shape).bits for o in task.operator.options)


def test_auto_rank_is_every_rank_and_a_relative_flops_budget_is_of_the_dense_flops():
    plan = parse("0, 2 : lowrank(rank=auto) within 30% flops").bind(_mlp())
    first, second = plan.tasks
    assert first.operator.options == tuple(LowRank(rank=r) for r in range(1, 21))  # (30, 20)
    assert second.operator.labels[-1] == "rank=10"  # (10, 30)
    (budget,) = plan.budgets
    assert budget.limit == int(0.3 * (600 + 300))
    assert budget.costs[0][:2] == (50, 100)  # r·(m + n)


def test_auto_prune_is_a_geometric_ladder_from_one_to_all_over_a_joint_task():
    plan = parse("[0, 2] : prune(l0=auto) within 200 params").bind(_mlp())
    (task,) = plan.tasks
    counts = [o.l0 for o in task.operator.options]
    assert counts[0] == 1 and counts[-1] == 900 and counts == sorted(set(counts))
    assert 20 <= len(counts) <= Prune.AUTO_STEPS
    assert plan.budgets[0].tasks == ("[0.weight, 2.weight]",)


def test_auto_quant_offers_no_codebook_larger_than_the_task():
    model = nn.Sequential(nn.Linear(5, 4))  # 20 weights: at most 16 codewords
    plan = parse("0 : quant(bits=auto) within 100 B").bind(model)
    assert plan.tasks[0].operator.labels == ("bits=1", "bits=2", "bits=3", "bits=4")


def test_a_flops_budget_over_a_convolution_counts_output_positions_of_an_example():
    plan = parse("0, 2 : lowrank(rank=auto) within 50% flops").bind(_convs(), example_input=torch.zeros(2, 3, 10, 10))
    (budget,) = plan.budgets
    # conv 0: 8×27 weights at 8·8 positions; conv 2: 4×72 at 6·6
    assert budget.limit == (216 * 64 + 288 * 36) // 2
    assert budget.costs[0][0] == 1 * (8 + 27) * 64


def test_a_flops_budget_over_a_convolution_without_an_example_is_located():
    assert _where(_error("0, 2 : lowrank(rank=auto) within 50% flops", _convs())) == ("flops-need-example", 1, 27)


def test_a_storage_budget_over_a_convolution_needs_no_example():
    plan = parse("0 : quant(bits=1..2) within 50%").bind(_convs())
    assert plan.budgets[0].limit == 216 * 32 // 2


@pytest.mark.parametrize(
    "text, code, column",
    [
        ("0 : quant(bits=1..4)", "range-needs-budget", 16),
        ("0 : lowrank(rank=auto)", "range-needs-budget", 13),
        ("0 : quant(k=4) within 1kB", "budget-without-choice", 16),
        ("0 : quant(codebook=1..3) within 1kB", "not-a-choice", 11),
        ("0 : prune(l1=auto) within 1kB", "not-a-choice", 11),
        ("0 : quant(bits=1..4) within 10 B", "budget-too-small", 22),
        ("0 : lowrank(rank=1..40) within 1kB", "does-not-fit", 5),
        ("0 : prune(l0_penalty=1e-3) + quant(bits=1..2) within 1kB", "unmeasurable", 1),
    ],
)
def test_binding_errors_point_at_their_place(text, code, column):
    error = _error(text, _mlp())
    assert _where(error) == (code, 1, column), error.render()
    assert error.codes == [code]


def test_a_too_small_budget_says_what_the_cheapest_choices_take():
    message = _error("0, 2 : quant(bits=1..4) within 10 B", _mlp()).diagnostics[0].message
    assert message.startswith("within 10B: the cheapest choices take ")
    assert message.endswith("128.5 B")  # 900 one-bit codes (112.5 B) and two 2-float codebooks (16 B)


def test_check_chooses_by_direct_compression_within_the_limit():
    model = _mlp()
    plan = parse("0, 2 : quant(bits=1..6) within 3kB").bind(model)
    (row,) = budget_choices(plan, model)
    assert row["limit"] == 24_000 and row["unit"] == "bits"
    assert row["total"] <= row["limit"] and row["total"] == sum(t["cost"] for t in row["tasks"])
    assert [t["task"] for t in row["tasks"]] == ["0.weight", "2.weight"]
    assert all(t["choice"].startswith("bits=") for t in row["tasks"])
    # the larger layer can afford fewer bits than the smaller one within a shared limit
    bits = [int(t["choice"].split("=")[1]) for t in row["tasks"]]
    assert bits[0] <= bits[1]


def test_a_spec_with_choices_checks_without_a_model_and_a_bad_range_value_is_said_once():
    from lcdsl.plan.binder import check_spec

    ops = check_spec(parse("fc* : quant(bits=1..8) within 40kB\nfc9 : prune(l0=5%)\n"))
    assert list(ops) == [1]  # the choice has no operator before its tensors are known
    with pytest.raises(SpecError) as caught:
        check_spec(parse("fc* : quant(bits=1..40) within 10kB\n"))
    assert len(caught.value.diagnostics) == 1 and "got 32" in str(caught.value)
