"""The LC engine on tiny models, with small exact operators defined here (no plugins needed)."""

from __future__ import annotations

import io
import math
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.events import EVENTS, EventBus, StepRecord
from lcdsl.engine.state import plan_fingerprint
from lcdsl.errors import EngineError, PluginError
from lcdsl.operators.base import Operator, Storage
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.settings import Explicit, Geometric, Settings

# ----------------------------------------------------------------- test operators


@attrs.frozen
class RoundHalf(Operator):
    """argmin_θ ‖w − θ‖² s.t. θ ∈ ½ℤⁿ: θ = round(2w)/2 (exact)."""

    name: ClassVar[str] = "round_half"

    def project(self, w, mu=0.0, warm=None):
        return {"values": torch.round(w * 2) / 2}

    def decompress(self, theta, shape):
        return theta["values"].reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(params=0, bits=8 * math.prod(shape))


@attrs.frozen
class TopK(Operator):
    """argmin_θ ‖w − θ‖² s.t. ‖θ‖₀ ≤ κ: keep the κ largest magnitudes (exact)."""

    name: ClassVar[str] = "topk"
    kappa: int

    def project(self, w, mu=0.0, warm=None):
        index = torch.topk(w.abs(), self.kappa, sorted=True).indices.sort().values
        return {"index": index, "values": w[index]}

    def decompress(self, theta, shape):
        out = torch.zeros(math.prod(shape), dtype=theta["values"].dtype, device=theta["values"].device)
        out[theta["index"]] = theta["values"]
        return out.reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(params=self.kappa, bits=self.kappa * 64)


@attrs.frozen
class RankOne(Operator):
    """argmin_θ ‖W − θ‖² s.t. rank θ ≤ 1: the leading singular triple (Eckart–Young)."""

    name: ClassVar[str] = "rank_one"
    view: ClassVar[str] = "matrix"

    def project(self, w, mu=0.0, warm=None):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return {"u": u[:, :1] * s[:1], "v": vh[:1]}

    def decompress(self, theta, shape):
        return (theta["u"] @ theta["v"]).reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(params=sum(shape), bits=32 * sum(shape))


@attrs.frozen
class HardThreshold(Operator):
    """argmin_θ ‖w − θ‖² + (2α/μ)‖θ‖₀: keep |w| > √(2α/μ); keep nothing at μ = 0 (μ → 0⁺)."""

    name: ClassVar[str] = "hard"
    alpha: float
    seen_mus: list = attrs.field(factory=list, eq=False, repr=False)

    def project(self, w, mu=0.0, warm=None):
        self.seen_mus.append((mu, warm is not None))
        if mu == 0:
            return {"values": torch.zeros_like(w)}
        return {"values": torch.where(w.abs() > math.sqrt(2 * self.alpha / mu), w, torch.zeros_like(w))}

    def decompress(self, theta, shape):
        return theta["values"].reshape(shape)

    def storage(self, shape, theta=None):
        if theta is None:
            return None
        nnz = int((theta["values"] != 0).sum())
        return Storage(params=nnz, bits=nnz * 32)


# ------------------------------------------------------------------- fixtures


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    return x, y


def task(model: nn.Module, names: list[str], operator: Operator, joint: bool = False) -> Task:
    params = dict(model.named_parameters())
    return Task(parameters=names, shapes=[params[n].shape for n in names], operator=operator, joint=joint)


def plan_for(model: nn.Module, settings: Settings | None = None) -> Plan:
    tasks = (task(model, ["0.weight"], RoundHalf()), task(model, ["2.weight"], TopK(kappa=9)))
    return Plan(tasks=tasks, dense=("0.bias", "2.bias"), dense_numel=15, settings=settings or Settings())


def full_batch_l_step(iterations: int = 15, lr: float = 0.05):
    """An L step: plain full-batch gradient descent on cross-entropy + the engine's penalty."""
    x, y = data()

    def l_step(engine: Engine, k: int) -> float:
        opt = torch.optim.SGD(engine.model.parameters(), lr=lr)
        for _ in range(iterations):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(engine.model(x), y)
            (loss + engine.penalty()).backward()
            opt.step()
        return loss.item()

    return l_step


def accuracy(engine: Engine) -> dict[str, float]:
    x, y = data()
    with torch.no_grad():
        return {"accuracy": float((engine.model(x).argmax(1) == y).float().mean())}


SCHEDULE = Geometric(start=0.05, factor=1.8, steps=10)  # μ up to ≈ 9: lr·μ stays < 2


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("penalty", ["augmented-lagrangian", "quadratic"])
def test_run_converges_and_finalize_is_feasible(penalty: str) -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE, penalty=penalty)))
    records = engine.run(full_batch_l_step(), accuracy)
    assert [r.step for r in records] == list(range(11))
    assert records is not engine.history and records == engine.history
    assert records[0].mu == 0.0 and records[0].loss is None
    assert records[-1].distortion < 1e-3 * records[0].distortion
    assert records[-1].distortion < records[1].distortion
    assert all(0.0 <= r.metrics["accuracy"] <= 1.0 for r in records)
    assert records[-1].bits == 8 * 72 + 9 * 64 and records[-1].params == 9
    if penalty == "quadratic":
        assert all(bool((lam == 0).all()) for lam in engine.state_dict()["lambdas"].values())
    before = [p.detach().clone() for p in model.parameters()]
    thetas = engine.finalize()
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    assert torch.equal(torch.round(w1 * 2) / 2, w1)  # every value a multiple of ½
    assert int((w2 != 0).sum()) <= 9
    assert torch.equal(model[0].bias, before[1]) and torch.equal(model[2].bias, before[3])  # dense untouched
    assert set(thetas) == {"0.weight", "2.weight"}
    assert engine.distortion() == 0.0


def test_direct_compression_is_step_zero() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model))
    assert engine.step == 0 and engine.mu == 0.0 and engine.thetas == {}
    engine.direct_compression()
    w1 = model[0].weight.detach()
    assert torch.equal(engine.thetas["0.weight"]["values"], torch.round(w1 * 2).reshape(-1) / 2)  # (72,)
    assert float(engine.penalty()) == 0.0
    expected = float(((w1 - torch.round(w1 * 2) / 2) ** 2).sum().double())
    w2 = model[2].weight.detach().reshape(-1)
    kept = torch.topk(w2.abs(), 9).values
    expected += float((w2.double() ** 2).sum() - (kept.double() ** 2).sum())
    assert engine.distortion() == pytest.approx(expected, rel=1e-6)


def test_penalty_gradient_is_mu_times_residual() -> None:
    model = mlp()
    p = dict(model.named_parameters())
    tasks = (
        task(model, ["0.weight", "2.weight"], RoundHalf(), joint=True),  # joint vector: split on write
        task(model, ["0.bias"], TopK(kappa=4)),
    )
    engine = Engine(model, Plan(tasks=tasks, dense=("2.bias",), settings=Settings(mu=SCHEDULE)))
    engine.direct_compression()
    engine.mu = 0.7
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    engine.multiplier_step()  # a non-zero λ
    engine.mu = 1.3
    state = engine.state_dict()
    lam_joint, lam_bias = state["lambdas"]["[0.weight, 2.weight]"], state["lambdas"]["0.bias"]
    assert float(lam_joint.abs().sum()) > 0
    model.zero_grad()
    value = engine.penalty()
    assert value.dim() == 0
    value.backward()
    w = torch.cat([p["0.weight"].detach().reshape(-1), p["2.weight"].detach().reshape(-1)])
    delta = torch.round(engine.thetas["[0.weight, 2.weight]"]["values"] * 2) / 2
    grad = 1.3 * (w - delta - lam_joint / 1.3)
    torch.testing.assert_close(p["0.weight"].grad.reshape(-1), grad[:72])
    torch.testing.assert_close(p["2.weight"].grad.reshape(-1), grad[72:])
    bias_delta = TopK(kappa=4).decompress(engine.thetas["0.bias"], (12,))
    torch.testing.assert_close(p["0.bias"].grad, 1.3 * (p["0.bias"].detach() - bias_delta) - lam_bias)
    assert p["2.bias"].grad is None
    expected = 1.3 / 2 * (float(((w - delta - lam_joint / 1.3) ** 2).sum()) + float(
        ((p["0.bias"].detach() - bias_delta - lam_bias / 1.3) ** 2).sum()
    ))
    assert value.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("penalty", ["augmented-lagrangian", "quadratic"])
def test_in_place_penalty_gradient_equals_autograd(penalty: str) -> None:
    model = mlp()
    tasks = (
        task(model, ["0.weight", "2.weight"], RoundHalf(), joint=True),
        task(model, ["0.bias"], TopK(kappa=4)),
        task(model, ["2.bias"], TopK(kappa=1)),
    )
    engine = Engine(model, Plan(tasks=tasks, dense=(), settings=Settings(mu=SCHEDULE, penalty=penalty)))
    model.zero_grad()
    engine.add_penalty_grad()  # μ = 0: nothing, not even a zero .grad
    assert all(p.grad is None for p in model.parameters())
    engine.direct_compression()
    engine.mu = 0.7
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    engine.multiplier_step()
    engine.c_step()
    for mu in (1.3, 2.9):  # a new μ must not reuse the old targets
        engine.mu = mu
        model[2].bias.requires_grad_(False)
        model.zero_grad()
        engine.penalty().backward()
        expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        base = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        model[0].weight.grad = base["0.weight"].clone()  # one with a gradient already, the rest None
        engine.add_penalty_grad()
        torch.testing.assert_close(model[0].weight.grad, base["0.weight"] + expected["0.weight"])
        for name in ("2.weight", "0.bias"):
            torch.testing.assert_close(dict(model.named_parameters())[name].grad, expected[name])
        assert model[2].bias.grad is None  # frozen parameters are left alone
        model[2].bias.requires_grad_(True)


def test_multiplier_step_and_c_step_target() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE)))
    engine.direct_compression()
    engine.mu = 2.0
    w = model[0].weight.detach().clone()
    delta = torch.round(w * 2) / 2
    engine.multiplier_step()
    lam = engine.state_dict()["lambdas"]["0.weight"]
    torch.testing.assert_close(lam, -2.0 * (w - delta).reshape(-1))
    engine.c_step()  # θ = Π(w − λ/μ) = Π(w + (w − Δ)) = Π(2w − Δ)
    torch.testing.assert_close(engine.thetas["0.weight"]["values"], torch.round((2 * w - delta).reshape(-1) * 2) / 2)


def test_matrix_view_and_mu_reaches_penalty_operators() -> None:
    model = mlp()
    hard = HardThreshold(alpha=1e-3)
    tasks = (task(model, ["0.weight"], RankOne()), task(model, ["2.weight"], hard))
    engine = Engine(model, Plan(tasks=tasks, dense=(), settings=Settings(mu=Explicit([0.5, 1.0]))))
    engine.run(full_batch_l_step(iterations=3))
    assert [mu for mu, _ in hard.seen_mus] == [0.0, 0.5, 1.0]
    assert [warm for _, warm in hard.seen_mus] == [False, True, True]
    engine.finalize()
    assert torch.linalg.matrix_rank(model[0].weight.detach()) == 1
    assert engine.storage()[1][1] == Storage(
        int((model[2].weight != 0).sum()), 32 * int((model[2].weight != 0).sum())
    )


def test_compressed_restores_weights_even_on_exception() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model))
    with pytest.raises(EngineError, match="direct_compression"):
        with engine.compressed():
            pass
    engine.direct_compression()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with engine.compressed():
            assert torch.equal(model[0].weight, torch.round(before["0.weight"] * 2) / 2)
            raise RuntimeError("boom")
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])


def test_state_dict_resume_is_bit_for_bit() -> None:
    schedule = Settings(mu=Geometric(start=0.05, factor=1.8, steps=6))

    def records_equal(a: list[StepRecord], b: list[StepRecord]) -> None:
        strip = ("seconds_l_step", "seconds_c_step", "seconds_penalty")
        assert [{k: v for k, v in r.to_dict().items() if k not in strip} for r in a] == [
            {k: v for k, v in r.to_dict().items() if k not in strip} for r in b
        ]

    model_a = mlp()
    engine_a = Engine(model_a, plan_for(model_a, schedule))
    records_a = engine_a.run(full_batch_l_step(), accuracy)

    class Stop(Exception):
        pass

    saved = io.BytesIO()
    model_b = mlp()
    engine_b = Engine(model_b, plan_for(model_b, schedule))

    def checkpoint(engine: Engine, record: StepRecord) -> None:
        if record.step == 3:
            torch.save({"engine": engine.state_dict(), "model": model_b.state_dict()}, saved)
            raise Stop

    engine_b.events.on("lc_step_end", checkpoint)
    with pytest.raises(Stop):
        engine_b.run(full_batch_l_step(), accuracy)

    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    model_c = mlp(seed=123)  # other initial weights: everything must come from the checkpoint
    model_c.load_state_dict(state["model"])
    engine_c = Engine(model_c, plan_for(model_c, schedule))
    engine_c.load_state_dict(state["engine"])
    assert engine_c.step == 3 and engine_c.mu == engine_a.mus[2] and len(engine_c.history) == 4
    records_c = engine_c.run(full_batch_l_step(), accuracy)
    records_equal(records_a, records_c)
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)
    for name in engine_a.thetas:
        for key in engine_a.thetas[name]:
            assert torch.equal(engine_a.thetas[name][key], engine_c.thetas[name][key])


def test_load_state_dict_refuses_another_plan() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE)))
    engine.direct_compression()
    state = engine.state_dict()

    other_tasks = Plan(tasks=(task(model, ["0.weight"], RoundHalf()), task(model, ["2.weight"], TopK(kappa=5))),
                       dense=(), settings=Settings(mu=SCHEDULE))  # fmt: skip
    with pytest.raises(EngineError, match=r"other tasks .*kappa=9.*kappa=5"):
        Engine(model, other_tasks).load_state_dict(state)
    other_settings = plan_for(model, Settings(mu=SCHEDULE, penalty="quadratic"))
    with pytest.raises(EngineError, match="other settings"):
        Engine(model, other_settings).load_state_dict(state)
    with pytest.raises(EngineError, match="format"):
        engine.load_state_dict({"step": 3})
    assert plan_fingerprint(plan_for(model, Settings(mu=SCHEDULE))) == state["fingerprint"]
    assert plan_fingerprint(other_settings) != state["fingerprint"]


def test_nan_loss_names_the_step_and_changes_nothing() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE)))
    good = full_batch_l_step(iterations=2)

    def l_step(engine: Engine, k: int) -> float:
        return good(engine, k) if k < 2 else float("nan")

    ends: list[int] = []
    engine.events.on("lc_step_end", lambda engine, record: ends.append(record.step))
    with pytest.raises(EngineError, match=r"LC step 3 .*loss is nan"):
        engine.run(l_step)
    assert ends == [1, 2] and engine.step == 2 and engine.mu == engine.mus[1] and len(engine.history) == 3


def test_non_finite_weights_name_the_step_and_parameter() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE)))

    def l_step(engine: Engine, k: int) -> None:
        with torch.no_grad():
            model[2].bias[0] = float("inf")

    with pytest.raises(EngineError, match=r"LC step 1 .*'2.bias'"):
        engine.run(l_step)
    assert engine.step == 0 and engine.mu == 0.0


def test_events_order_and_payloads() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=Explicit([0.1, 0.2]))))
    seen: list[tuple] = []
    for name in EVENTS:
        engine.events.on(name, lambda name=name, **payload: seen.append((name, payload.get("step"), payload.get("mu"))))
    engine.run(lambda engine, k: None)
    assert seen == [
        ("direct_compression", None, None),
        ("lc_step_start", 1, 0.1), ("l_step_end", 1, 0.1), ("c_step_end", 1, 0.1), ("lc_step_end", None, None),
        ("lc_step_start", 2, 0.2), ("l_step_end", 2, 0.2), ("c_step_end", 2, 0.2), ("lc_step_end", None, None),
    ]  # fmt: skip
    with pytest.raises(EngineError, match="did you mean 'lc_step_end'"):
        engine.events.on("lc_stepend", print)


def test_event_bus_off_and_errors_propagate() -> None:
    bus = EventBus(("a",))
    calls: list[int] = []
    callback = bus.on("a", lambda x: calls.append(x))
    bus.emit("a", x=1)
    bus.off("a", callback)
    bus.emit("a", x=2)
    assert calls == [1]

    def broken(**_: object) -> None:
        raise ZeroDivisionError

    bus.on("a", broken)
    with pytest.raises(ZeroDivisionError):
        bus.emit("a")


def test_tolerance_stops_early() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=SCHEDULE, tolerance=10.0)))
    records = engine.run(full_batch_l_step(iterations=1))
    assert engine.converged and len(records) == 2 and engine.step == 1
    assert engine.run(full_batch_l_step()) == records  # a converged run does not go on


def test_missing_parameter_and_ddp_prefix() -> None:
    model = mlp()
    wrapped = nn.DataParallel(model)  # what DDP looks like from named_parameters() (on CPU it only wraps)
    engine = Engine(wrapped, plan_for(model))
    engine.direct_compression()
    assert engine.thetas["0.weight"]["values"].shape == (72,)
    plan = Plan(tasks=(task(model, ["0.weight"], RoundHalf()),), dense=())
    plan = attrs.evolve(plan, tasks=(attrs.evolve(plan.tasks[0], parameters=("0.wieght",)),))
    with pytest.raises(EngineError, match="no parameter '0.wieght'; did you mean '0.weight'"):
        Engine(model, plan)
    wrong = attrs.evolve(plan.tasks[0], parameters=("2.weight",))
    with pytest.raises(EngineError, match=r"shape \(3, 12\)"):
        Engine(model, Plan(tasks=(wrong,), dense=()))


def test_step_record_round_trips_through_plain_data() -> None:
    record = StepRecord(2, 0.5, 1.25, 3.0, {"accuracy": 0.75}, 100, 10, 1.0, 0.5, 0.25)
    assert StepRecord.from_dict(record.to_dict()) == record
    buffer = io.BytesIO()
    torch.save(record.to_dict(), buffer)
    buffer.seek(0)
    assert StepRecord.from_dict(torch.load(buffer, weights_only=True)) == record


@attrs.frozen
class WrongShape(RoundHalf):
    """argmin_θ ‖w − θ‖² s.t. θ ∈ ½ℤⁿ, with a broken Δ that drops the last entry."""

    name: ClassVar[str] = "wrong_shape"

    def decompress(self, theta, shape):
        return theta["values"][:-1]


def test_broken_operator_is_a_plugin_error() -> None:
    model = mlp()
    engine = Engine(model, Plan(tasks=(task(model, ["0.bias"], WrongShape()),), dense=()))
    with pytest.raises(PluginError, match=r"wrong_shape decompressed task 0.bias to shape \(11,\), expected \(12,\)"):
        engine.direct_compression()
    with pytest.raises(EngineError, match="matrix operator needs a tensor of 2 or more"):
        Engine(model, Plan(tasks=(task(model, ["0.bias"], RankOne()),), dense=()))


def test_storage_before_and_after_and_resume_before_any_c_step() -> None:
    model = mlp()
    hard = HardThreshold(alpha=1.0)
    engine = Engine(model, Plan(tasks=(task(model, ["0.weight"], hard),), dense=()))
    assert engine.storage()[0][1] is None  # a penalty form cannot predict its size
    fresh = engine.state_dict()
    engine.direct_compression()
    assert engine.storage()[0][1] == Storage(0, 0)  # μ = 0 (the limit μ → 0⁺) keeps nothing
    engine.load_state_dict(fresh)
    assert engine.thetas == {} and engine.step == 0
    with pytest.raises(EngineError, match="needs a C step first"):
        engine.distortion()
