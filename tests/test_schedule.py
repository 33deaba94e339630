"""``mu = auto(…)``: the setting (parse, errors, fmt, data), the rules of the next μ, and the engine
running it: convergence, divergence warnings, rollback and retry, exact resume, the trainer driver."""

from __future__ import annotations

import io
import math
import warnings
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.driver import LCDriver
from lcdsl.engine.events import StepRecord
from lcdsl.engine.schedule import (
    HOLD_PULL,
    LOSS_JUMP,
    MIN_GROWTH,
    REARRANGE,
    SETTLE,
    START_PENALTY,
    PENALTY_HOLD_PULL,
    auto_mu,
    release_mu,
    next_iterations,
    penalty_distortion_scale,
    divergence,
    feasible,
    holds_multipliers,
    mu_cap,
    pull,
    settled,
    sgd_limit,
)  # fmt: skip
from lcdsl.errors import SpecError
from lcdsl.language import format_spec, parse
from lcdsl.plan.settings import Auto, Explicit, Geometric, Settings, settings_data, settings_from_spec
from lcdsl.plan.model import Plan
from tests.test_engine import HardThreshold, accuracy, data, full_batch_l_step, mlp, plan_for, task

# ------------------------------------------------------------------ the setting


def test_auto_is_the_default_and_parses_with_its_knobs() -> None:
    assert Settings().mu == Auto()
    assert settings_from_spec(parse("fc1 : quant(k=2)\n")).mu == Auto(steps=20, tolerance=1e-4)
    spec = parse("mu = auto(steps=12, tolerance=1e-4, start=2e-4, max_growth=3, retries=1)\nfc1 : quant(k=2)\n")
    assert settings_from_spec(spec).mu == Auto(steps=12, tolerance=1e-4, start=2e-4, max_growth=3.0, retries=1)
    text = format_spec(spec)
    assert "mu = auto(steps=12, tolerance=1e-4, start=2e-4, max_growth=3, retries=1)" in text
    assert parse(text) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("auto(step=3)", "auto() has no argument 'step'; did you mean 'steps'"),
        ("auto(tolerance=2)", "tolerance must be a number in (0, 1)"),
        ("auto(steps=2.5)", "steps must be an integer"),
        ("auto(max_growth=1)", "max_growth must be a number > 1"),
        ("auto(3)", "auto() takes keyword arguments"),
        ("auto(start=0)", "start must be a positive finite number"),
        ("autoo(steps=3)", "did you mean 'auto'"),
    ],
)
def test_bad_auto_arguments_are_located_errors(value: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        settings_from_spec(parse(f"fc1 : quant(k=2)\nmu = {value}\n", filename="s.lc"))
    text = str(caught.value)
    assert message in text and "s.lc:2:1" in text


def test_settings_data_names_the_kind_and_no_values() -> None:
    data_ = settings_data(Settings(mu=Auto(steps=7)))["mu"]
    assert data_ == {"kind": "auto", "steps": 7, "tolerance": 1e-4, "start": None, "max_growth": 4.0,
                     "retries": 3, "values": None}  # fmt: skip


# ----------------------------------------------------------------- the rules


def record(step: int, mu: float, distortion: float, loss: float | None = 0.3, change: float | None = 0.0) -> StepRecord:
    return StepRecord(step, mu, loss, distortion, change=None if step == 0 else change)


def test_first_mu_makes_the_penalty_worth_start_penalty() -> None:
    history = [record(0, 0.0, 400.0, loss=None)]
    assert auto_mu(Auto(), history, scale=400.0) == pytest.approx(2 * START_PENALTY / 400.0)
    assert auto_mu(Auto(start=1e-3), history, scale=400.0) == 1e-3
    assert auto_mu(Auto(), history, scale=400.0, cap=1e-5) == 1e-5


def test_growth_is_faster_when_the_distortion_stalls() -> None:
    schedule = Auto(steps=20)
    stalled = [record(0, 0, 400.0, None), record(1, 1e-4, 400.0), record(2, 2e-4, 399.0)]
    falling = [record(0, 0, 400.0, None), record(1, 1e-4, 400.0), record(2, 2e-4, 100.0)]  # D ∝ μ^-2
    g_stalled = auto_mu(schedule, stalled, scale=400.0) / 2e-4
    g_falling = auto_mu(schedule, falling, scale=400.0) / 2e-4
    assert g_stalled > g_falling >= MIN_GROWTH
    assert g_stalled <= schedule.max_growth
    # the growth is what reaches tolerance · D₀ within the steps left, for D ∝ μ^-p
    rho = (schedule.tolerance * 400.0 / 100.0) ** (1 / (20 - 2 - 2))
    assert g_falling == pytest.approx(rho ** (-1 / 2))


def test_a_loss_rise_a_backoff_and_the_cap_slow_the_growth() -> None:
    schedule = Auto(steps=20)
    base = [record(0, 0, 400.0, None), record(1, 1e-4, 400.0, loss=0.1), record(2, 2e-4, 300.0, loss=0.1)]
    rose = base[:2] + [attrs.evolve(base[2], loss=0.2)]
    plain = auto_mu(schedule, base, scale=400.0)
    assert auto_mu(schedule, rose, scale=400.0) < plain
    assert auto_mu(schedule, base, scale=400.0, backoff=1) == pytest.approx(2e-4 * math.sqrt(plain / 2e-4))
    assert auto_mu(schedule, base, scale=400.0, cap=3e-4) == 3e-4


def test_a_compressed_model_still_being_rearranged_slows_the_growth() -> None:
    """Δ(θ) moved by more than REARRANGE of the distortion left: the growth's square root."""
    schedule = Auto(steps=20)
    base = [record(0, 0, 400.0, None), record(1, 1e-4, 400.0), record(2, 2e-4, 300.0, change=0.0)]
    plain = auto_mu(schedule, base, scale=400.0) / 2e-4
    assert plain > MIN_GROWTH**2  # room for the square root to show
    moving = base[:2] + [attrs.evolve(base[2], change=300.0 * REARRANGE * 1.01)]
    assert auto_mu(schedule, moving, scale=400.0) / 2e-4 == pytest.approx(math.sqrt(plain))
    still = base[:2] + [attrs.evolve(base[2], change=300.0 * REARRANGE * 0.99)]
    assert auto_mu(schedule, still, scale=400.0) / 2e-4 == pytest.approx(plain)


def test_stability_limits_of_the_optimizers() -> None:
    assert sgd_limit(Settings(momentum=0.9, nesterov=True)) == pytest.approx(3.8 / 2.8)
    assert sgd_limit(Settings(momentum=0.9, nesterov=False)) == pytest.approx(3.8)
    assert sgd_limit(Settings(momentum=0.0)) == 2.0
    assert sgd_limit(Settings(optimizer="adam")) is None
    settings = Settings(lr=0.1, lr_decay=0.5)
    assert mu_cap(settings, 1) == pytest.approx(0.5 * (3.8 / 2.8) / 0.05)


def test_divergence_and_feasibility() -> None:
    previous = record(3, 1.0, 10.0, loss=0.2)
    assert divergence(record(4, 2.0, 25.0, loss=0.2 * LOSS_JUMP * 1.01), previous, target=0.1) is not None
    assert divergence(record(4, 2.0, 15.0, loss=0.35), previous, target=0.1) is None
    # a loss that jumps while the distortion falls is the penalty at work, not a divergence
    assert divergence(record(4, 2.0, 5.0, loss=0.2 * LOSS_JUMP * 1.01), previous, target=0.1) is None
    assert "‖w − Δ(θ)‖² jumped" in divergence(record(4, 2.0, 50.0), previous, target=0.1)
    assert divergence(record(1, 1e-4, 500.0), record(0, 0.0, 100.0, loss=None), target=0.1) is None  # after direct
    # a swing back up within the last steps' range is the multipliers finding their level
    assert divergence(record(6, 2.0, 8.0), record(5, 1.5, 1.0), target=0.1, earlier=previous) is None
    assert divergence(record(6, 2.0, 12.0), record(5, 1.5, 1.0), target=0.1, earlier=previous) is not None
    assert feasible(record(5, 3.0, 0.05, change=0.01), 0.1)
    assert not feasible(record(5, 3.0, 0.05, change=0.5), 0.1)  # Δ(θ) still moving
    assert not feasible(record(5, 3.0, 0.5), 0.1)


def test_a_run_stops_only_once_the_l_step_loss_has_settled() -> None:
    previous = record(7, 1.0, 0.05, loss=0.25)
    assert settled(record(8, 1.1, 0.04, loss=0.25 * (1 - 0.9 * SETTLE)), previous)
    assert not settled(record(8, 1.1, 0.04, loss=0.25 * (1 - 1.1 * SETTLE)), previous)  # still improving
    assert not settled(record(8, 1.1, 0.04, loss=0.25 * (1 + 1.1 * SETTLE)), previous)
    assert settled(record(8, 1.1, 0.04, loss=None), previous)  # an L step that returns no loss
    assert settled(record(1, 1e-3, 0.04, loss=0.3), record(0, 0.0, 1.0, loss=None))


def test_the_mixed_specs_last_step_blow_up_is_a_divergence() -> None:
    # LeNet300 / Fashion-MNIST, specs/lenet300-mixed.lc, seed 0, LC steps 19 and 20 (μ 16.4 → 32.1):
    # the L-step loss 0.299 → 1.305 while ‖w − Δ(θ)‖² went 0.0126 → 0.171 (direct compression's: 641)
    previous = record(19, 16.4, 0.0126, loss=0.299)
    found = divergence(record(20, 32.1, 0.171, loss=1.305), previous, target=1e-3 * 641)
    assert found is not None and "the L-step loss jumped 0.299 → 1.305" in found


# ---------------------------------------------------------------- the engine

def blow_up(model: nn.Module) -> None:
    """What a diverged L step leaves: weights thrown far from Δ(θ)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(3.0 * torch.randn(p.shape, generator=g))


AUTO = Settings(mu=Auto(steps=25, tolerance=1e-3, retries=2), lr=0.05, momentum=0.0)
"""The tiny model's full-batch L step is plain gradient descent at lr 0.05."""


def test_pull_is_the_share_of_the_gap_sgd_closes() -> None:
    # n steps of w ← w − lr·μ·(w − t) leave (1 − lr·μ)^n ≈ exp(−n·lr·μ) of the gap; momentum β
    # makes the steps lr/(1 − β) once it has built up
    plain = Settings(mu=Auto(), lr=0.1, momentum=0.0)
    assert pull(plain, 0, 1e-3, 500) == pytest.approx(1 - math.exp(-0.05))
    heavy = attrs.evolve(plain, momentum=0.9)
    assert pull(heavy, 0, 1e-3, 500) == pytest.approx(1 - math.exp(-0.5))
    decayed = attrs.evolve(heavy, lr_decay=0.5)
    assert pull(decayed, 1, 1e-3, 500) == pytest.approx(1 - math.exp(-0.25))  # lr · 0.5¹ at LC step 2
    assert pull(attrs.evolve(plain, optimizer="adam"), 0, 1.0, 500) is None
    # the multiplier step waits for a pull of HOLD_PULL: n·lr·μ/(1 − β) = ln 2 at one half
    edge = math.log(1 / (1 - HOLD_PULL)) * (1 - 0.9) / (0.1 * 500)
    assert holds_multipliers(heavy, 0, 0.99 * edge, 500) and not holds_multipliers(heavy, 0, 1.01 * edge, 500)
    assert holds_multipliers(heavy, 0, 1.0, 0)  # an L step that never took the penalty moved nothing
    assert not holds_multipliers(attrs.evolve(plain, optimizer="adam"), 0, 1e-9, 1)


def held(step: int, mu: float, distortion: float) -> StepRecord:
    return attrs.evolve(record(step, mu, distortion), held=True)


def test_after_held_steps_mu_grows_to_the_release_and_stays_above_it() -> None:
    direct = record(0, 0, 1000.0, None)
    # λ never updated: the held steps only spend the budget, so μ goes to the release in one step
    schedule = Auto(steps=20)
    assert auto_mu(schedule, [direct, held(1, 1e-5, 1000.0)], scale=1000.0, release=1e-3) == pytest.approx(1e-3)
    assert auto_mu(schedule, [direct, held(1, 1e-5, 1000.0)], scale=1000.0, release=2e-5) == pytest.approx(2e-5)
    # a step that diverged backs off from the jump: ×max_growth^½ at most
    backed = auto_mu(schedule, [direct, held(1, 1e-5, 1000.0)], scale=1000.0, release=1e-3, backoff=1)
    assert backed == pytest.approx(2e-5)
    # held again after a release, μ meets Δ(θ) gradually: ×max_growth a step toward a far release
    released_once = [direct, record(1, 1e-5, 900.0), held(2, 2e-5, 900.0)]
    assert auto_mu(schedule, released_once, scale=1000.0, release=1e-3) == pytest.approx(8e-5)
    # once released, μ does not fall back below the μ at which the next L step can act
    slow = [direct, record(1, 1e-4, 1000.0), record(2, 2e-4, 10.0)]  # D fell ×100: the plan grows slowly
    planned = auto_mu(schedule, slow, scale=1000.0)
    assert planned < 2.5e-4
    assert auto_mu(schedule, slow, scale=1000.0, release=1e-4) == pytest.approx(planned)
    assert auto_mu(schedule, slow, scale=1000.0, release=5e-4) == pytest.approx(5e-4)


def test_the_next_l_steps_iterations_follow_the_epochs() -> None:
    settings = Settings(epochs=2, first_epochs=4)
    assert next_iterations(settings, 1, 940) == 470  # the first L step had 4 epochs, the second 2
    assert next_iterations(settings, 5, 470) == 470
    assert next_iterations(Settings(epochs=3, first_epochs=3), 1, 900) == 900
    assert next_iterations(settings, 1, None) is None


def test_a_penalty_forms_distortions_count_from_the_first_released_step() -> None:
    # at μ → 0⁺ a penalty form keeps nothing: D₀ = ‖w‖² says how far w is from no model at all
    direct = record(0, 0, 1000.0, None)
    assert penalty_distortion_scale([direct, held(1, 1e-5, 990.0)], 1000.0) == 1000.0
    history = [direct, held(1, 1e-5, 990.0), record(2, 1e-3, 55.0), record(3, 2e-3, 5.0)]
    assert penalty_distortion_scale(history, 1000.0) == 55.0
    assert penalty_distortion_scale([direct, record(1, 1e-3, 1e-9)], 1000.0) == pytest.approx(1e-4 * 1000.0)


@attrs.frozen
class PenaltyHard(HardThreshold):
    """HardThreshold that says it is a penalty form (it keeps nothing at μ → 0⁺)."""

    penalty_form: ClassVar[bool] = True


def test_a_penalty_form_goes_to_the_release_and_counts_from_there() -> None:
    model = mlp()
    settings = attrs.evolve(AUTO, mu=Auto(steps=4, retries=0), epochs=1, first_epochs=1)
    plan = Plan(tasks=(task(model, ["2.weight"], PenaltyHard(alpha=1e-3)),), dense=("0.weight", "0.bias", "2.bias"),
                dense_numel=sum(p.numel() for n, p in model.named_parameters() if n != "2.weight"), settings=settings)
    engine = Engine(model, plan)
    records = engine.run(full_batch_l_step(), accuracy)
    direct, first, second = records[0], records[1], records[2]
    assert first.held and not second.held  # μ₀ = 0.04/‖w‖² cannot pull; the next μ can
    assert second.mu == pytest.approx(release_mu(settings, 1, 15, PENALTY_HOLD_PULL))  # one step, not ×max_growth
    assert second.mu > first.mu * settings.mu.max_growth
    assert engine.distortion_scale == pytest.approx(min(direct.distortion, second.distortion))
    assert engine.convergence().scale == engine.distortion_scale
    assert engine.convergence().scale == pytest.approx(second.distortion)  # the record's, not D₀ = ‖w‖²
    assert f"= 0.0001 × {second.distortion:.4g}" in engine.convergence().message
    # a fixed schedule holds nothing: its scale is its first step's distortion
    model = mlp()
    fixed = Engine(model, attrs.evolve(plan, settings=attrs.evolve(settings, mu=Explicit(mus=(1.0, 2.0)))))
    records = fixed.run(full_batch_l_step(), accuracy)
    assert fixed.distortion_scale == pytest.approx(min(records[0].distortion, records[1].distortion))
    assert fixed.distortion_scale < records[0].distortion


def test_auto_keeps_lambda_while_the_l_step_cannot_pull_w() -> None:
    # 15 full-batch steps at lr 0.05: μ below ln(1/0.95)/(15 · 0.05) ≈ 0.068 cannot close 5 % of the gap
    model = mlp()
    settings = attrs.evolve(AUTO, mu=Auto(steps=1, start=0.01), epochs=1, first_epochs=1)
    engine = Engine(model, plan_for(model, settings))
    records = engine.run(full_batch_l_step(), accuracy)
    assert [r.iterations for r in records[1:]] == [15] and records[1].held
    assert all(float(s.lam.abs().max()) == 0.0 for s in engine._tasks)
    # the next step goes to the μ at which the L step can act, and updates λ
    model = mlp()
    engine = Engine(model, plan_for(model, attrs.evolve(settings, mu=Auto(steps=2, start=0.01))))
    records = engine.run(full_batch_l_step(), accuracy)
    assert records[1].held and not records[2].held
    assert records[2].mu == pytest.approx(release_mu(settings, 1, 15, HOLD_PULL))
    assert any(float(s.lam.abs().max()) > 0 for s in engine._tasks)
    # a fixed schedule keeps the augmented Lagrangian's multiplier step at every μ
    model = mlp()
    fixed = Engine(model, plan_for(model, attrs.evolve(AUTO, mu=Explicit(mus=(0.01, 0.015, 0.02)))))
    records = fixed.run(full_batch_l_step(), accuracy)
    assert not any(r.held for r in records) and any(float(s.lam.abs().max()) > 0 for s in fixed._tasks)
    # past the pull, auto updates λ too
    model = mlp()
    strong = Engine(model, plan_for(model, attrs.evolve(AUTO, mu=Auto(steps=2, start=2.0, max_growth=1.5))))
    records = strong.run(full_batch_l_step(), accuracy)
    assert not any(r.held for r in records[1:]) and any(float(s.lam.abs().max()) > 0 for s in strong._tasks)


def test_auto_run_reaches_feasibility_within_its_budget() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, AUTO))
    records = engine.run(full_batch_l_step(), accuracy)
    assert engine.converged and len(records) - 1 < 25
    assert records[-1].distortion <= 1e-3 * records[0].distortion
    assert list(engine.mus) == [r.mu for r in records[1:]]
    assert all(b >= a for a, b in zip(engine.mus, engine.mus[1:]))  # μ never falls while lr is constant
    assert max(engine.mus) <= mu_cap(AUTO, 0) + 1e-12
    convergence = engine.convergence()
    assert convergence.converged and convergence.message.startswith("converged: ‖w − Δ(θ)‖² = ")
    assert engine.warnings == []


def test_a_fixed_schedule_that_stops_early_is_not_converged() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, attrs.evolve(AUTO, mu=Geometric(start=1e-3, factor=1.2, steps=3))))
    engine.run(full_batch_l_step(), accuracy)
    convergence = engine.convergence()
    assert not convergence.converged
    assert convergence.message.startswith("not converged: ‖w − Δ(θ)‖² = ") and "at the last μ = " in convergence.message


def test_a_diverged_step_is_rolled_back_and_retried_with_a_smaller_mu() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, AUTO))
    good = full_batch_l_step()
    calls: list[tuple[int, float]] = []
    before: dict[str, torch.Tensor] = {}

    def l_step(engine: Engine, k: int) -> float:
        calls.append((k, engine.mu))
        if k == 3 and not before:  # the first try of LC step 4 "diverges"
            before.update({n: p.detach().clone() for n, p in model.named_parameters()})
            good(engine, k)
            blow_up(model)
            return 100.0
        return good(engine, k)

    seen: list[str] = []
    engine.events.on("warning", lambda kind, **_: seen.append(kind))
    with pytest.warns(UserWarning, match="LC step 4: the L-step loss jumped .* rolled back"):
        engine.run(l_step, accuracy)
    tries = [mu for k, mu in calls if k == 3]
    assert len(tries) == 2 and tries[1] < tries[0]
    assert seen == ["rolled-back"] and engine.warnings[0]["step"] == 4
    assert [r.step for r in engine.history] == list(range(len(engine.history)))  # no rolled-back record
    assert engine.history[4].mu == tries[1] and engine.converged


def test_rollback_restores_the_model_theta_and_lambda() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, AUTO))
    engine.direct_step()
    engine.begin_step()
    full_batch_l_step()(engine, 0)
    engine.end_step(loss=0.5)
    saved = ({n: p.detach().clone() for n, p in model.named_parameters()},
             [s.lam.clone() for s in engine._tasks], dict(engine.thetas), engine.mu)  # fmt: skip
    engine.begin_step()
    full_batch_l_step()(engine, 1)
    blow_up(model)
    with pytest.warns(UserWarning, match="rolled back"):
        engine.end_step(loss=50.0)
    params, lambdas, thetas, mu = saved
    assert engine.step == 1 and engine.mu == mu and engine.thetas == thetas and len(engine.history) == 2
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name])
    for state, lam in zip(engine._tasks, lambdas):
        assert torch.equal(state.lam, lam)


def test_with_no_retries_left_a_divergence_only_warns() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, attrs.evolve(AUTO, mu=Auto(steps=4, retries=0))))
    good = full_batch_l_step()

    def l_step(engine: Engine, k: int) -> float:
        loss = good(engine, k)
        if k == 1:
            blow_up(model)
        return loss * (100 if k == 1 else 1)

    with pytest.warns(UserWarning, match=r"LC step 2: the L-step loss jumped .* and ‖w − Δ\(θ\)‖² "):
        engine.run(l_step, accuracy)
    assert [w["kind"] for w in engine.warnings] == ["divergence"] and engine.step == 4


def test_a_fixed_schedule_past_the_stable_lr_mu_warns() -> None:
    model = mlp()
    engine = Engine(model, plan_for(model, Settings(mu=Explicit([1.0, 30.0]), lr=0.1)))
    with pytest.warns(UserWarning, match=r"LC step 2: lr·μ = 0.098·30 = 2.94 is past the stable limit 1.36"):
        engine.run(lambda e, k: None)
    assert [w["kind"] for w in engine.warnings] == ["unstable"]


def test_auto_resume_is_bit_for_bit() -> None:
    def strip(records: list[StepRecord]) -> list[dict]:
        drop = ("seconds_l_step", "seconds_c_step", "seconds_penalty")
        return [{k: v for k, v in r.to_dict().items() if k not in drop} for r in records]

    def flaky(good):  # one rolled-back try at step 3: resuming must replay its backoff too
        tried: set[int] = set()

        def l_step(engine: Engine, k: int) -> float:
            loss = good(engine, k)
            if k == 2 and k not in tried:
                tried.add(k)
                blow_up(engine.model)
                return loss * 100
            return loss

        return l_step

    model_a = mlp()
    engine_a = Engine(model_a, plan_for(model_a, AUTO))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records_a = engine_a.run(flaky(full_batch_l_step()), accuracy)

    class Stop(Exception):
        pass

    saved = io.BytesIO()
    model_b = mlp()
    engine_b = Engine(model_b, plan_for(model_b, AUTO))

    def checkpoint(engine: Engine, record: StepRecord) -> None:
        if record.step == 4:
            torch.save({"engine": engine.state_dict(), "model": model_b.state_dict()}, saved)
            raise Stop

    engine_b.events.on("lc_step_end", checkpoint)
    with pytest.raises(Stop), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine_b.run(flaky(full_batch_l_step()), accuracy)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    model_c = mlp(seed=123)
    model_c.load_state_dict(state["model"])
    engine_c = Engine(model_c, plan_for(model_c, AUTO))
    engine_c.load_state_dict(state["engine"])
    assert engine_c.step == 4 and engine_c.mus == engine_a.mus[:4] and len(engine_c.warnings) == 1
    records_c = engine_c.run(full_batch_l_step(), accuracy)
    assert strip(records_a) == strip(records_c) and engine_c.mus == engine_a.mus
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)


def test_the_driver_runs_auto_and_stops_when_feasible() -> None:
    """A trainer's hooks (one unit = one full-batch gradient step) through :class:`LCDriver`."""
    model = mlp()
    engine = Engine(model, plan_for(model, AUTO))
    driver = LCDriver(engine, unit="step", length=15)
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    driver.begin([opt])
    units = 0
    while units < driver.total_units:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        driver.add_penalty_grad()
        opt.step()
        units += 1
        if driver.unit_end(loss.item(), [opt]):
            break
    assert driver.done and engine.converged and units < driver.total_units
    assert engine.history[-1].distortion <= 1e-3 * engine.history[0].distortion
