"""Which μ each LC step gets, whether a step diverged, and whether a run reached ``w = Δ(θ)``.

A fixed schedule (``geometric(…)``, a list) is its list of values. ``mu = auto(…)``
(:class:`~lcdsl.plan.settings.Auto`) is decided step by step from the engine's records
(:class:`~lcdsl.engine.events.StepRecord`), by :func:`auto_mu`, a pure function of the history:
a resumed run decides exactly what an uninterrupted one would.

The rules of ``auto`` (``D`` is ``‖w − Δ(θ)‖²`` after a C step, ``D₀`` direct compression's):

- **μ₀** makes the penalty at the reference, ``μ₀/2 · D₀``, worth :data:`START_PENALTY` (a
  fraction of a trained classifier's loss per example): ``μ₀ = 2 · 0.02 / D₀``.
- **Growth** is what the distortion still has to fall: to reach ``tolerance · D₀`` within the
  steps left (less a margin of :data:`MARGIN_STEPS`), ``D`` must fall by ``ρ`` a step; with ``D``
  measured to fall as ``μ^-p`` (``p`` from the last two steps, in [0.5, 2]), μ grows by
  ``ρ^(-1/p)``. A distortion that stalls (``p`` small) makes μ grow faster; one that falls
  faster than planned slows it. The growth is halved (its square root taken) when the L-step
  loss rose by more than :data:`LOSS_RISE` or the C step moved ``Δ(θ)`` by more than
  :data:`REARRANGE` of the distortion left (the compressed model is still being rearranged); it stays in
  [:data:`MIN_GROWTH`, ``max_growth``]. After a step whose multipliers were held (below), μ
  grows by ``max_growth`` but not past the μ at which the next L step pulls enough to release
  them (:func:`release_mu`, for an L step of :func:`next_iterations`): the L step could not move
  ``w``, so its distortion says nothing. While the multipliers were never released, μ goes to
  the release at once: ``λ`` is still 0 and ``w`` the reference's, so the steps before it only
  spend the budget (LeNet5's low rank, 8 LC steps, held three of them growing ×4 a step and ended
  at 11.43 %, against 10.68–10.77 % jumping, three seeds), and the release pulls ``w`` only by its share of the gap
  (5 %; a penalty form's C step then picks the size from weights the L step can move). Held
  again later, μ grows gradually. Once released, μ does not fall below the release again (the
  plan's growth can be smaller than the fall of the pull when the L steps get shorter).
- **Stability**: SGD on ``μ/2 ‖w − t‖²`` diverges once ``lr · μ`` passes the optimizer's limit
  (:func:`sgd_limit`); μ stays below :data:`STABLE_SHARE` of it.
- **Divergence** (:func:`divergence`): an L-step loss more than :data:`LOSS_JUMP` times the
  previous step's while the distortion grew as much, or a distortion more than
  :data:`DISTORTION_JUMP` times the previous one (while not yet feasible). Under ``auto`` the step is rolled back and retried with its growth's
  square root (``retries`` times in a run); any schedule warns.
- **Multipliers** (:func:`holds_multipliers`): the multiplier step ``λ ← λ − μ (w − Δ(θ))``
  assumes the L step (nearly) solved its problem. SGD moves ``w`` toward its target, where the
  loss does not resist, only by the share :func:`pull` of the gap in an L step's iterations;
  while that share is below :func:`hold_share` (:data:`HOLD_PULL`, :data:`PENALTY_HOLD_PULL`
  with a penalty form) the step is skipped and ``λ`` kept. Updated
  anyway, ``λ/μ`` piles up the residuals of L steps that could not move ``w`` and the C step's
  target ``w − λ/μ`` runs away from ``w``: ``‖w − Δ(θ)‖²`` grows and the compressed model
  swings from one step to the next (what a slow start used to do on every LeNet300 row).
- **Scale**: ``D₀`` is direct compression's distortion, except with a penalty form, whose ``D₀``
  at μ → 0⁺ is ``‖w‖²`` (it keeps nothing): its distortions count from the first step whose
  multipliers were released (:func:`penalty_distortion_scale`).
- **Feasible** (:func:`feasible`): ``D ≤ tolerance · D₀`` and the last C step moved ``Δ(θ)`` by
  at most as much (squared). The run stops at a feasible step whose L-step loss has
  :func:`settled` (moved by at most :data:`SETTLE`): reaching ``w = Δ(θ)`` is not the end while
  the L steps still improve the compressed model (low-rank runs gain a point of test error or
  more in the steps after they first become feasible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from lcdsl.engine.events import StepRecord
from lcdsl.plan.settings import Auto, Settings

__all__ = [
    "START_PENALTY", "MIN_GROWTH", "MARGIN_STEPS", "LOSS_RISE", "REARRANGE", "LOSS_JUMP", "DISTORTION_JUMP", "STABLE_SHARE",
    "DEFAULT_TOLERANCE", "HOLD_PULL", "PENALTY_HOLD_PULL", "hold_share", "SETTLE", "settled", "sgd_limit", "pull", "holds_multipliers", "release_mu",
    "mu_cap", "distortion_scale", "penalty_distortion_scale", "first_released", "next_iterations", "auto_mu", "divergence", "feasible",
    "Convergence", "convergence", "probe_mus", "auto_rules", "fixed_schedule_warnings", "unstable",
]  # fmt: skip

START_PENALTY = 0.02
"""``μ₀/2 · D₀`` of ``auto`` without ``start``: the penalty's worth at the reference, in loss units."""
MIN_GROWTH = 1.1
"""The least μ grows a step under ``auto`` (μ must go to ∞ for ``w`` to reach ``Δ(θ)``)."""
MARGIN_STEPS = 2
"""``auto`` plans to be feasible this many steps before its budget ends (budgets of 6 steps and more)."""
LOSS_RISE = 1.3
"""An L-step loss this many times the previous one halves the next growth (in log scale)."""
LOSS_JUMP = 2.0
"""An L-step loss more than this many times the previous step's is a divergence."""
DISTORTION_JUMP = 4.0
"""A distortion more than this many times the previous step's (not yet feasible) is a divergence."""
STABLE_SHARE = 0.5
"""``auto`` keeps ``lr · μ`` at most this share of the optimizer's limit (:func:`sgd_limit`)."""
REARRANGE = 0.1
"""A C step that moved ``Δ(θ)`` by more than this share of the distortion left (``‖·‖²``: by more
than a third of the gap between ``w`` and ``Δ(θ)``) halves the next growth (in log scale): the
compressed model is still being rearranged (masks, codebooks, ranks), and growing μ at the planned
rate would freeze it half-made. At a share of 1 (the gap itself) LeNet300's 5 % pruning froze its
mask by μ = 0.02 and ended at 11.58–11.99 % test error (three seeds); at 0.1, at 10.80–11.37 %."""
SETTLE = 0.02
"""``auto`` stops at a feasible step only once the L-step loss moved by at most this share of the
previous step's (:func:`settled`)."""
HOLD_PULL = 0.05
"""Under ``auto``, the multiplier step waits until an L step can close this share of the gap
between ``w`` and its target (:func:`pull`)."""
PENALTY_HOLD_PULL = 0.5
"""The same for a plan with a penalty form (``lowrank(alpha=…)``, ``prune(l0_penalty=…)``): its C
step sizes the result from the target ``w − λ/μ``, so ``λ`` waits until an L step can close half
the gap (:func:`hold_share`)."""
DEFAULT_TOLERANCE = 1e-3
"""What a fixed schedule's run is judged against (``tolerance · D₀``) for the "not converged" note:
``w`` within a thousandth of direct compression's distortion. ``auto`` aims ten times closer by
default (``Auto.tolerance``): the steps that take it there are the ones that fine-tune the
compressed model, and stopping at a thousandth leaves low-rank runs a point or more short."""
_SCALE_FLOOR = 1e-4
"""``D₀`` counts as at least this share of ``‖w‖²`` (a penalty form may keep everything at μ = 0)."""


def sgd_limit(settings: Settings) -> float | None:
    """The largest ``lr · μ`` for which the L step's optimizer stays stable on the penalty
    ``μ/2 ‖w − t‖²`` alone: 2 for plain SGD, ``2(1 + β)`` with heavy-ball momentum β,
    ``(2 + 2β)/(1 + 2β)`` with Nesterov's (1.357 at β = 0.9). None for Adam, whose steps are
    normalized and have no such limit."""
    if settings.optimizer != "sgd":
        return None
    beta = settings.momentum
    if beta == 0:
        return 2.0
    return (2 + 2 * beta) / (1 + 2 * beta) if settings.nesterov else 2 * (1 + beta)


def _lr(settings: Settings, k: int) -> float:
    return settings.lr * settings.lr_decay**k


def mu_cap(settings: Settings, k: int) -> float | None:
    """The largest μ ``auto`` gives LC step ``k`` (0-based): :data:`STABLE_SHARE` of the stable
    ``lr · μ`` at that step's learning rate ``lr · lr_decay^k``; None without a limit."""
    limit = sgd_limit(settings)
    return None if limit is None else STABLE_SHARE * limit / _lr(settings, k)


def pull(settings: Settings, k: int, mu: float, iterations: int) -> float | None:
    """The share of the gap between ``w`` and its target ``Δ(θ) + λ/μ`` that the L step of LC
    step ``k`` (0-based) closes along directions the loss does not resist: ``1 − exp(−n·lr·μ/(1 − β))``
    for SGD of ``n`` iterations at ``lr · lr_decay^k`` with momentum β (heavy-ball and Nesterov
    both take steps of ``lr/(1 − β)`` there). None for Adam, whose normalized steps do not scale with μ."""
    if settings.optimizer != "sgd":
        return None
    rate = _lr(settings, k) * mu / (1 - settings.momentum)
    return -math.expm1(-iterations * rate)


def hold_share(penalty_forms: bool) -> float:
    """The :func:`pull` below which ``auto`` holds ``λ``: :data:`HOLD_PULL`, or
    :data:`PENALTY_HOLD_PULL` for a plan with a penalty form.

    Any multiplier step after an L step that could not move ``w`` piles up noise in ``λ/μ``. A
    penalty form's C step also decides the size from ``w − λ/μ``: multipliers that run ahead of
    ``w`` inflate its singular values (its weights) and the size with them (LeNet300 rank
    selection at α = 1e-6 ends ×3.0 smaller than dense holding ``λ`` below a pull of 0.1, ×4.0
    below 0.5), while a constraint form loses by holding long: the early multipliers of a
    1-bit quantization, at pulls of 5–50 %, are what rearranges its codebooks."""
    return PENALTY_HOLD_PULL if penalty_forms else HOLD_PULL


def holds_multipliers(settings: Settings, k: int, mu: float, iterations: int, share: float = HOLD_PULL) -> bool:
    """Whether ``auto`` skips the multiplier step of LC step ``k``: its L step's :func:`pull` is
    below ``share`` (:func:`hold_share`; never under an optimizer without a pull)."""
    closed = pull(settings, k, mu, iterations)
    return closed is not None and closed < share


def unstable(settings: Settings, k: int, mu: float) -> str | None:
    """A warning when LC step ``k`` at ``mu`` is past the optimizer's stable ``lr · μ``; else None."""
    limit = sgd_limit(settings)
    lr = _lr(settings, k)
    if limit is None or lr * mu < limit:
        return None
    return (
        f"LC step {k + 1}: lr·μ = {lr:.3g}·{mu:.3g} = {lr * mu:.3g} is past the stable limit {limit:.3g} of "
        f"{'Nesterov ' if settings.nesterov and settings.momentum else ''}SGD"
        f"{f' with momentum {settings.momentum:g}' if settings.momentum else ''}: the L step may diverge; "
        f"lower lr or μ (mu = auto(…) keeps it below {STABLE_SHARE:g} of the limit)"
    )


def distortion_scale(direct: float, weight_norm2: float) -> float:
    """What ``auto``'s rules measure distortions against: direct compression's ``D₀``, or
    ``1e-4 · ‖w‖²`` if that is more (an operator that keeps everything at μ = 0 has ``D₀ ≈ 0``)."""
    return max(direct, _SCALE_FLOOR * weight_norm2)


def penalty_distortion_scale(history: Sequence[StepRecord], weight_norm2: float) -> float:
    """:func:`distortion_scale` for a plan with a penalty form: the distortion after the first
    LC step whose multipliers were not held, once there is one (and if it is less than ``D₀``).

    A penalty form decides its own size, and at μ → 0⁺ it keeps nothing: its ``D₀`` is ``‖w‖²``,
    how far the reference is from no model at all, not from the compressed model the run makes.
    The first step whose L step could act is the first whose C step chose a size from weights
    pulled toward it; its distortion is what the run has to close (LeNet300 rank selection at
    α = 1e-6: 72 against ``D₀`` = 1031; aiming at 1e-4 of ``D₀`` left μ at 0.02 and the run at
    11.51–11.53 % test error, at 1e-4 of 72 μ ends at 0.6–0.8 and the run at 11.10–11.19 %)."""
    scale = distortion_scale(history[0].distortion, weight_norm2)
    released = first_released(history)
    if released is None:
        return scale
    return min(scale, distortion_scale(released.distortion, weight_norm2))


def first_released(history: Sequence[StepRecord]) -> StepRecord | None:
    """The first LC step's record whose multipliers were not held; None while every one was."""
    return next((r for r in history[1:] if not r.held), None)


def next_iterations(settings: Settings, k: int, last: int | None) -> int | None:
    """The iterations the L step of LC step ``k`` (0-based) will take, from the last step's
    ``last``: the first L step lasts ``first_epochs``, every later one ``epochs`` (a trainer that
    counts L steps otherwise makes this an estimate)."""
    if last is None or k != 1 or settings.first_epochs == settings.epochs:
        return last
    return max(1, round(last * settings.epochs / settings.first_epochs))


def _estimated_power(last: StepRecord, previous: StepRecord) -> float:
    """``p`` in ``D ∝ μ^-p`` from two steps, in [0.5, 2]; 1 when they cannot tell."""
    if not (last.mu > previous.mu > 0 and last.distortion > 0 and previous.distortion > 0):
        return 1.0
    p = -math.log(last.distortion / previous.distortion) / math.log(last.mu / previous.mu)
    return min(2.0, max(0.5, p))


def release_mu(settings: Settings, k: int, iterations: int | None, share: float = HOLD_PULL) -> float | None:
    """The μ at which LC step ``k``'s L step, of ``iterations`` (:func:`next_iterations`), has a
    :func:`pull` of ``share``; None without a pull (Adam) or iterations."""
    if settings.optimizer != "sgd" or not iterations:
        return None
    return -math.log1p(-share) * (1 - settings.momentum) / (_lr(settings, k) * iterations)


def auto_mu(
    schedule: Auto, history: Sequence[StepRecord], *, scale: float, backoff: int = 0, cap: float | None = None,
    release: float | None = None,
) -> float:
    """The μ of the next LC step under ``schedule``, from the records so far (see the module doc).

    Args:
        history: the run's records, direct compression first (``history[-1].step`` LC steps done).
        scale: the distortion scale (:func:`distortion_scale`).
        backoff: how often this step was rolled back: the growth is square-rooted that often.
        cap: the largest μ (:func:`mu_cap`), or None.
        release: the μ at which the next L step pulls enough to release the multipliers
            (:func:`release_mu`): while every step so far was held, μ goes there in one step;
            after a held step later on it grows by ``max_growth`` but not past it; once released
            it does not fall below it.
    """
    k = history[-1].step
    if k == 0:
        mu = schedule.start if schedule.start is not None else 2 * START_PENALTY / max(scale, 1e-30)
        for _ in range(backoff):
            mu /= 2  # a first step that diverged: start lower
        return mu if cap is None else min(mu, cap)
    last, previous = history[-1], history[-2]
    if last.held:  # the L step could not move w: nothing to plan from, nothing to lose by growing to the release
        mu = last.mu * schedule.max_growth ** (0.5**backoff)
        if release is not None:
            floor = max(release, last.mu * MIN_GROWTH)
            mu = floor if first_released(history) is None and backoff == 0 else min(mu, floor)
        return mu if cap is None else min(mu, cap)
    target = schedule.tolerance * scale
    left = schedule.steps - k
    plan = max(1, left - (MARGIN_STEPS if schedule.steps >= 6 else 0))
    rho = (target / last.distortion) ** (1 / plan) if last.distortion > target else 1.0
    growth = rho ** (-1 / _estimated_power(last, previous))
    rose = last.loss is not None and previous.loss is not None and previous.loss > 0 and last.loss > LOSS_RISE * previous.loss
    rearranging = last.change is not None and last.change > REARRANGE * last.distortion
    if rose or rearranging:
        growth = math.sqrt(growth)
    growth = min(schedule.max_growth, max(MIN_GROWTH, growth))
    growth **= 0.5**backoff
    mu = last.mu * growth
    if release is not None and backoff == 0:
        mu = max(mu, release)  # released: a μ the next L step cannot act at would hold λ again
    return mu if cap is None else min(mu, cap)


def divergence(
    record: StepRecord, previous: StepRecord | None, *, target: float, earlier: StepRecord | None = None
) -> str | None:
    """What says the step of ``record`` diverged, or None.

    A divergence is an L-step loss more than :data:`LOSS_JUMP` times the previous one while
    ``‖w − Δ(θ)‖²`` also grew that much (a loss that rises while the distortion falls or barely
    moves is the penalty at work: the L step trading loss for feasibility, as LC must, and a
    smaller μ would not avoid it), or a distortion more than :data:`DISTORTION_JUMP` times the
    previous one above ``target`` and above the one of the step ``earlier`` still (a distortion
    that swings back within the last steps' range is the multipliers finding their level, not
    ``w`` running away).
    """
    if previous is None or previous.step == 0:
        return None  # direct compression has no loss, and its distortion is w's own
    known = record.loss is not None and previous.loss is not None and previous.loss > 0
    if known and record.loss > LOSS_JUMP * previous.loss and record.distortion > LOSS_JUMP * previous.distortion:
        return (
            f"the L-step loss jumped {previous.loss:.4g} → {record.loss:.4g} and ‖w − Δ(θ)‖² "
            f"{previous.distortion:.4g} → {record.distortion:.4g} at μ = {record.mu:.3g}"
        )
    floor = earlier.distortion if earlier is not None and earlier.step > 0 else 0.0
    if record.distortion > max(target, DISTORTION_JUMP * previous.distortion, floor):
        return f"‖w − Δ(θ)‖² jumped {previous.distortion:.4g} → {record.distortion:.4g} at μ = {record.mu:.3g}"
    return None


def settled(record: StepRecord, previous: StepRecord | None) -> bool:
    """Whether the L-step loss of ``record`` moved by at most :data:`SETTLE` of the previous
    step's: the L step has stopped improving the model under the constraint (a loss that is
    not known counts as settled)."""
    if previous is None or record.loss is None or previous.loss is None:  # direct compression has no loss
        return True
    return abs(record.loss - previous.loss) <= SETTLE * abs(previous.loss)


def feasible(record: StepRecord, target: float) -> bool:
    """``‖w − Δ(θ)‖² ≤ target`` and the C step that made ``record`` moved ``Δ(θ)`` by at most
    as much (squared): ``w`` has reached a ``Δ(θ)`` that stopped changing."""
    return record.step > 0 and record.distortion <= target and (record.change is None or record.change <= target)


@attrs.frozen
class Convergence:
    """Whether a run ended at ``w = Δ(θ)``, with the numbers that say so."""

    converged: bool
    """Whether the last record is within ``tolerance · D₀``."""
    distortion: float
    """``‖w − Δ(θ)‖²`` of the last record."""
    mu: float
    """The last μ."""
    direct: float
    """``D₀``, direct compression's distortion."""
    target: float
    """``tolerance`` times the distortion scale: feasible at or below it."""
    tolerance: float
    """The schedule's tolerance (``auto``'s, or :data:`DEFAULT_TOLERANCE` for fixed schedules)."""
    scale: float
    """What ``tolerance`` multiplies (:func:`distortion_scale`, :func:`penalty_distortion_scale`)."""

    @property
    def message(self) -> str:
        """One line for people: ``converged: …`` or ``not converged: ‖w − Δ(θ)‖² = … at the last μ``."""
        numbers = f"‖w − Δ(θ)‖² = {self.distortion:.4g} at the last μ = {self.mu:.3g}"
        scale = "" if self.scale == self.direct else f" = {self.tolerance:g} × {self.scale:.4g}"
        detail = f"(direct compression {self.direct:.4g}, feasible at ≤ {self.target:.3g}{scale})"
        if self.converged:
            return f"converged: {numbers} {detail}"
        if self.distortion > self.direct:  # farther than direct compression: the L step ran away
            return f"not converged: {numbers} {detail}; w ran away from Δ(θ): lower lr or μ"
        return f"not converged: {numbers} {detail}; w has not reached Δ(θ): grow μ further (mu = auto(…))"

    def to_dict(self) -> dict[str, float | bool | str]:
        """Plain data, with the message."""
        return {**attrs.asdict(self), "message": self.message}


def convergence(history: Sequence[StepRecord], schedule: object, scale: float) -> Convergence | None:
    """How the run of ``history`` ended; None before its first LC step."""
    if not history or history[-1].step == 0:
        return None
    tolerance = schedule.tolerance if isinstance(schedule, Auto) else DEFAULT_TOLERANCE
    target = tolerance * scale
    last = history[-1]
    return Convergence(
        converged=last.distortion <= target, distortion=last.distortion, mu=last.mu,
        direct=history[0].distortion, target=target, tolerance=tolerance, scale=scale,
    )  # fmt: skip


def probe_mus(settings: Settings) -> tuple[float, ...]:
    """Decades of μ an ``auto`` run may pass through, at which ``lcdsl check`` shows what a
    penalty form keeps before the run: 1e-3 up to the largest μ the run allows at its last step
    (:func:`mu_cap`; 10 under an optimizer without a cap)."""
    steps = settings.mu.steps if isinstance(settings.mu, Auto) else 1
    cap = mu_cap(settings, steps - 1) or 10.0
    top = max(-3, math.floor(math.log10(cap)))
    return tuple(10.0**e for e in range(-3, top + 1))


def _stability_rule(settings: Settings, steps: int) -> str:
    limit = sgd_limit(settings)
    if limit is None:
        return f"{settings.optimizer}: no lr·μ limit to keep"
    first, last = mu_cap(settings, 0), mu_cap(settings, steps - 1)
    return (
        f"lr·μ kept ≤ {STABLE_SHARE:g} × the optimizer's stable limit {limit:.4g}: μ ≤ {first:.3g} at LC step 1, "
        f"≤ {last:.3g} at step {steps} (lr {settings.lr:g} × {settings.lr_decay:g}^k)"
    )


def fixed_schedule_warnings(settings: Settings) -> list[str]:
    """What is wrong with a fixed schedule before it runs: the steps past the stable ``lr·μ``."""
    bad = [k for k, mu in enumerate(settings.mu.values()) if unstable(settings, k, mu) is not None]
    if not bad:
        return []
    return [unstable(settings, bad[0], settings.mu.values()[bad[0]]) + f" (and {len(bad) - 1} later steps)" * (len(bad) > 1)]


def auto_rules(schedule: Auto, settings: Settings | None = None) -> list[str]:
    """``auto``'s rules in words, for ``lcdsl check`` (with ``settings``, the μ its stability
    rule allows)."""
    start = f"μ₀ = {schedule.start:g}" if schedule.start is not None else (
        f"μ₀ from the model: μ₀/2·‖w − Δ(θ)‖² at direct compression = {START_PENALTY:g}"
    )  # fmt: skip
    return [
        start,
        (
            f"each next μ: × the growth that brings ‖w − Δ(θ)‖² to {schedule.tolerance:g} × direct compression's "
            f"within the steps left (less {MARGIN_STEPS}), from how it fell with μ; in [{MIN_GROWTH:g}, "
            f"{schedule.max_growth:g}], square-rooted when the L-step loss rose ×{LOSS_RISE:g} or Δ(θ) moved more "
            f"than {REARRANGE:g} × the distortion left (‖·‖²)"
        ),
        _stability_rule(settings if settings is not None else Settings(mu=schedule), schedule.steps),
        (
            f"the multiplier step waits until an L step can close {HOLD_PULL:g} of the gap between w and Δ(θ) "
            f"({PENALTY_HOLD_PULL:g} with a penalty form; SGD: 1 − exp(−iterations·lr·μ/(1 − momentum))); "
            f"before the first release μ goes to the μ where it can at once (after a later hold: ×{schedule.max_growth:g} "
            "a step, up to it), and once released it stays at least there"
        ),
        (
            f"a step whose L-step loss and ‖w − Δ(θ)‖² both jump ×{LOSS_JUMP:g}, or whose "
            f"‖w − Δ(θ)‖² jumps ×{DISTORTION_JUMP:g}: rolled back and "
            f"retried with a smaller growth (at most {schedule.retries} in a run)"
        ),
        (
            f"stops when ‖w − Δ(θ)‖² and the change of Δ(θ) are ≤ {schedule.tolerance:g} × direct compression's "
            "(a penalty form: × the distortion after its first step with λ released) "
            f"and the L-step loss moved ≤ {SETTLE:.0%}, or after {schedule.steps} LC steps"
        ),
    ]
