"""Sharing C steps and sharded parameters, in one process: the assignment of tasks to ranks
(deterministic, balanced within Graham's bound, by the cost model), and the engine on
``fully_shard`` ed parameters of a one-rank job equal to the engine on plain ones (its state
round-trips between the two layouts). The two-rank runs are in tests/test_fsdp.py."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lcdsl import parse
from lcdsl.engine.core import Engine
from lcdsl.engine.sharing import assign_tasks, c_step_cost
from lcdsl.errors import EngineError

costs_strategy = st.lists(st.integers(min_value=0, max_value=50).map(float), min_size=0, max_size=7)
"""Task costs: small integers, so that ties happen and sums are exact."""


def loads(costs: list[float], owners: list[int], world: int) -> list[float]:
    return [sum(c for c, o in zip(costs, owners) if o == rank) for rank in range(world)]


@given(costs_strategy, st.integers(min_value=1, max_value=4))
@settings(max_examples=60, deadline=None)
def test_the_assignment_is_within_graham_bound_of_the_best(costs: list[float], world: int) -> None:
    owners = assign_tasks(costs, world)
    assert len(owners) == len(costs) and all(0 <= o < world for o in owners)
    assert owners == assign_tasks(list(costs), world)  # the same on every rank
    best = min(
        (max(loads(costs, list(choice), world)) for choice in itertools.product(range(world), repeat=len(costs))),
        default=0.0,
    )
    assert max(loads(costs, owners, world), default=0.0) <= 4 / 3 * best + 1e-9


def test_ties_go_to_the_earlier_task_and_the_lower_rank() -> None:
    assert assign_tasks([1.0, 1.0, 1.0, 1.0], 2) == [0, 1, 0, 1]
    assert assign_tasks([5.0, 1.0, 1.0, 3.0], 2) == [0, 1, 1, 1]
    assert assign_tasks([2.0, 2.0], 1) == [0, 0]
    with pytest.raises(EngineError, match="at least 1"):
        assign_tasks([1.0], 0)


def test_the_cost_model_counts_an_svd_above_a_sort_and_takes_an_operator_cost() -> None:
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(64, 32), fc2=nn.Linear(32, 64)))
    plan = parse("fc1 : lowrank(rank=4)\nfc2 : prune(l0=10)").bind(model)
    svd, sort = (c_step_cost(task) for task in plan.tasks)
    assert svd == 32 * 64 * 32 / 32 and sort == pytest.approx(2048 * 11)

    class Priced:
        def __init__(self, op):
            self.op, self.view = op, op.view

        def c_step_cost(self, shape):
            return 7.0 * math.prod(shape)

    class Task:
        operator = Priced(plan.tasks[1].operator)
        view = plan.tasks[1].view

    assert c_step_cost(Task()) == 7.0 * 2048


SPEC = """
mu = geometric(start=1e-2, factor=2.0, steps=2)
fc1 : quant(k=2)
fc2 : lowrank(rank=3)
[fc1.bias, fc2.bias] : prune(l0=5)
"""


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """A gloo process group of one rank, in this process (FSDP needs one)."""
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(6, 8), act=nn.Tanh(), fc2=nn.Linear(8, 5)))


def run(model: nn.Module, plan) -> Engine:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g), torch.randn(32, 5, generator=g)
    engine = Engine(model, plan)

    def l_step(engine: Engine, k: int) -> None:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            engine.add_penalty_grad()
            opt.step()

    def evaluate(engine: Engine) -> dict[str, float]:
        with torch.no_grad():  # a forward without backward: FSDP keeps the root's gathered weights
            return {"loss": float(nn.functional.mse_loss(model(x), y))}

    engine.run(l_step, evaluate)
    return engine


def test_sharded_parameters_of_one_rank_compress_as_plain_ones(one_rank) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    plain = network()
    plan = parse(SPEC).bind(plain)
    expected = run(plain, plan)

    sharded = network()
    fully_shard(sharded.fc1)
    fully_shard(sharded)
    assert isinstance(sharded.fc1.weight, DTensor)
    engine = run(sharded, parse(SPEC).bind(network()))  # the plan's names: FSDP adds no prefix
    for (name, a), b in zip(plain.named_parameters(), sharded.parameters()):
        torch.testing.assert_close(b.full_tensor(), a, rtol=0, atol=1e-6, msg=name)
    for task, theta in expected.thetas.items():
        for key, value in theta.items():
            torch.testing.assert_close(engine.thetas[task][key], value, rtol=0, atol=1e-6)
    losses = [r.metrics["loss"] for r in engine.history]
    assert losses == pytest.approx([r.metrics["loss"] for r in expected.history], abs=1e-6)

    # the state in both forms, into the other layout
    whole_state, pieces_state = engine.state_dict(), engine.state_dict(shards=True)
    assert all(isinstance(p, DTensor) for pieces in pieces_state["lambdas"].values() for p in pieces)
    again = Engine(plain, plan)
    again.load_state_dict(whole_state)
    for task, lam in expected.state_dict()["lambdas"].items():
        torch.testing.assert_close(again.state_dict()["lambdas"][task], lam, rtol=0, atol=1e-6)
    back = Engine(sharded, plan)
    back.load_state_dict(pieces_state)
    assert back.distortion() == pytest.approx(engine.distortion(), rel=1e-12)
    broken = dict(pieces_state, lambdas={**pieces_state["lambdas"], "fc2.weight": [torch.zeros(3)]})
    with pytest.raises(EngineError, match=r"engine.lambdas\['fc2.weight'\]"):
        back.load_state_dict(broken)


def test_a_joint_task_half_sharded_is_refused(one_rank) -> None:
    from torch.distributed.fsdp import fully_shard

    model = network()
    fully_shard(model.fc1)  # fc2 stays a plain module: its bias is not a DTensor
    with pytest.raises(EngineError, match=r"task \[fc1.bias, fc2.bias\]: some of its parameters are sharded"):
        Engine(model, parse(SPEC).bind(network()))


def test_a_sharded_checkpoint_loads_into_plain_modules_and_refuses_another_plan(one_rank, tmp_path) -> None:
    from torch.distributed.fsdp import fully_shard

    from lcdsl.store.sharded import load_sharded, save_sharded

    sharded = network()
    fully_shard(sharded.fc1)
    fully_shard(sharded)
    plan = parse(SPEC).bind(network())
    engine = run(sharded, plan)
    save_sharded(tmp_path / "ck", sharded, engine)
    save_sharded(tmp_path / "ck", sharded, engine)  # again at the same step: replaces its data folder
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["data-2", "manifest.pt"]

    plain = network()
    restored = Engine(plain, plan)
    manifest = load_sharded(tmp_path / "ck", plain, restored)
    assert manifest["world_size"] == 1 and restored.step == engine.step == 2
    for a, b in zip(plain.parameters(), sharded.parameters()):
        assert torch.equal(a, b.full_tensor())
    ours, theirs = restored.state_dict(), engine.state_dict()
    for task in ours["lambdas"]:
        assert torch.equal(ours["lambdas"][task], theirs["lambdas"][task])
        assert all(torch.equal(v, theirs["thetas"][task][k]) for k, v in ours["thetas"][task].items())

    other = network()
    with pytest.raises(EngineError, match="cannot resume: the checkpoint was made for other tasks"):
        load_sharded(tmp_path / "ck", other, Engine(other, parse("fc1 : quant(k=3)").bind(other)))
    with pytest.raises(EngineError, match="no such file"):
        load_sharded(tmp_path / "nothing", other, Engine(other, plan))
