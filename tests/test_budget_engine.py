"""A budgeted LC run: the C step against brute force, the limit at every step, the allocation in
the history, resume from a state dict, and the refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lcdsl.budget import choice_costs
from lcdsl.engine import Engine
from lcdsl.errors import BudgetError, EngineError
from lcdsl.operators import Choice
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.quant import Quant
from lcdsl.plan.model import Budget, Plan, Task
from lcdsl.plan.settings import Geometric, Settings
from lcdsl.store.fields import decode_theta


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))


def budgeted_plan(model: nn.Module, limit: int, unit: str = "bits") -> Plan:
    """fc0 and fc2 as quant(bits=1..3) within ``limit``, built in code as the binder would."""
    tasks, costs = [], []
    for name in ("0.weight", "2.weight"):
        shape = tuple(dict(model.named_parameters())[name].shape)
        n = shape[0] * shape[1]
        choice = Choice(options=tuple(Quant(bits=b) for b in (1, 2, 3)), labels=("bits=1", "bits=2", "bits=3"))
        tasks.append(Task(parameters=(name,), shapes=(shape,), operator=choice))
        costs.append(choice_costs(choice, (n,), unit))
    budget = Budget(tasks=tuple(t.name for t in tasks), limit=limit, unit=unit, costs=costs, text=f"within {limit} {unit}")
    settings = Settings(mu=Geometric(start=1e-2, factor=2.0, steps=3))
    return Plan(tasks=tasks, dense=("0.bias", "2.bias"), dense_numel=9, settings=settings, budgets=(budget,))


def l_step(engine: Engine, k: int) -> float:
    optimizer = torch.optim.SGD(engine.model.parameters(), lr=0.05)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(k))
    for _ in range(3):
        optimizer.zero_grad()
        loss = engine.model(x).square().mean()
        loss.backward()
        engine.add_penalty_grad()
        optimizer.step()
    return float(loss.detach())


LIMIT = 2 * 32 * 4 + 30 * 2 + 20 * 1  # 4 codewords' floats each, then 2 bits on fc0 and 1 bit on fc2


def brute_force(plan: Plan, targets: dict[str, torch.Tensor]) -> float:
    """The least ``Σ_t ‖target_t − Δ_t‖²`` over every combination of options within the budget,
    each option by its own exact projection."""
    budget = plan.budgets[0]
    best = None
    for combo in itertools.product(*(range(len(row)) for row in budget.costs)):
        if sum(row[i] for row, i in zip(budget.costs, combo)) > budget.limit:
            continue
        total = 0.0
        for task, i in zip(plan.tasks, combo):
            w = targets[task.parameters[0]].reshape(-1)
            op = task.operator.options[i]
            total += float((w.double() - op.decompress(op.project(w), w.shape).double()).square().sum())
        best = total if best is None else min(best, total)
    assert best is not None
    return best


# every limit from the cheapest combination (1 bit on both) to the dearest (3 bits on both)
CHEAPEST, DEAREST = 2 * 32 * 2 + 30 + 20, 2 * 32 * 8 + 30 * 3 + 20 * 3


def directly_compressed(seed: int, limit: int) -> tuple[nn.Module, Plan, Engine]:
    """A fresh MLP under ``quant(bits=1..3) within limit``, after direct compression."""
    model = mlp(seed)
    plan = budgeted_plan(model, limit)
    engine = Engine(model, plan)
    engine.direct_compression()
    return model, plan, engine


@given(seed=st.integers(0, 2**16), limit=st.integers(CHEAPEST, DEAREST))
def test_direct_compression_equals_brute_force_over_every_combination(seed: int, limit: int):
    model, plan, engine = directly_compressed(seed, limit)
    targets = {name: p.detach() for name, p in model.named_parameters()}
    assert engine.distortion() == pytest.approx(brute_force(plan, targets), rel=1e-6, abs=1e-9)


@given(seed=st.integers(0, 2**16), limit=st.integers(CHEAPEST, DEAREST))
def test_a_c_step_with_multipliers_equals_brute_force_on_its_targets(seed: int, limit: int):
    # after an L step and a multiplier step the C step's targets are w − λ/μ, not w
    model, plan, engine = directly_compressed(seed, limit)
    engine.begin_step(0)
    l_step(engine, 0)
    engine.c_step()
    engine.multiplier_step()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))  # the next L step moved the weights
    mu = engine.mu
    lams = {s.task.parameters[0]: s.lam.reshape(-1).clone() for s in engine._tasks}
    targets = {name: p.detach().reshape(-1) - lams[name] / mu for name, p in model.named_parameters() if name in lams}
    engine.c_step()
    got = 0.0
    for task in engine.tasks:
        delta = task.operator.decompress(engine.thetas[task.name], task.view_shape)
        got += float((targets[task.parameters[0]].double() - delta.reshape(-1).double()).square().sum())
    assert got == pytest.approx(brute_force(plan, targets), rel=1e-6, abs=1e-9)


def test_run_respects_the_limit_at_every_step_and_records_the_allocation():
    model = mlp()
    engine = Engine(model, budgeted_plan(model, LIMIT))
    history = engine.run(l_step)
    assert len(history) == 4
    for record in history:
        (entry,) = record.budgets
        assert entry["cost"] <= entry["limit"] == LIMIT
        assert set(entry["choices"]) == {"0.weight", "2.weight"}
        assert record.bits is not None and record.bits <= LIMIT
        assert record.bits == entry["cost"]
    assert record.to_dict()["budgets"][0]["choices"]["0.weight"].startswith("bits=")
    for task, theta in engine.thetas.items():
        op = next(t.operator for t in engine.tasks if t.name == task)
        assert op.labels[op.selected(theta)] == history[-1].budgets[0]["choices"][task]


def test_state_dict_round_trip_resumes_the_choice():
    model = mlp()
    plan = budgeted_plan(model, LIMIT)
    engine = Engine(model, plan)
    engine.run(l_step)
    state = engine.state_dict()
    again = Engine(model, plan)
    again.load_state_dict(state)
    for name, theta in engine.thetas.items():
        assert torch.equal(theta["choice"], again.thetas[name]["choice"])
    assert [r.budgets for r in again.history] == [r.budgets for r in engine.history]


def test_theta_of_a_choice_round_trips_through_the_generic_field_codec():
    from lcdsl.operators.bitpack import decode_tensor, encode_tensor

    choice = Choice(options=(Quant(bits=1), Quant(bits=2)), labels=("bits=1", "bits=2"))
    w = torch.randn(30)
    theta = choice.project_option(w, 1)
    assert choice.encode(theta, (30,)) is None  # quant encodes by content: every tensor, the index too
    restored = {}
    for key, value in theta.items():
        meta, data = encode_tensor(value)
        restored[key] = decode_tensor(meta, data)
    assert torch.equal(restored["choice"], theta["choice"])
    assert torch.equal(choice.decompress(restored, (30,)), choice.decompress(theta, (30,)))


def test_infeasible_budget_is_a_budget_error_naming_it():
    model = mlp()
    engine = Engine(model, budgeted_plan(model, 100))
    with pytest.raises(BudgetError, match="budget 'within 100 bits' cannot be met"):
        engine.direct_compression()


def test_budget_over_a_task_that_is_not_a_choice_is_refused_when_the_engine_is_built():
    model = mlp()
    plan = budgeted_plan(model, LIMIT)
    tasks = (plan.tasks[0], Task(parameters=("2.weight",), shapes=((4, 5),), operator=LowRank(rank=1)))
    with pytest.raises(EngineError, match="not a Choice"):
        Engine(model, Plan(tasks=tasks, dense=plan.dense, settings=plan.settings, budgets=plan.budgets))


def test_budget_changes_the_fingerprint():
    model = mlp()
    assert Engine(model, budgeted_plan(model, LIMIT)).fingerprint != Engine(model, budgeted_plan(model, LIMIT + 1)).fingerprint
