"""Run settings: the ``name = value`` lines of a spec, validated, with defaults.

The grammar knows no setting names; this module does. Unknown names and bad values are
spec errors at the setting's span, all reported together.

Example spec lines::

    mu        = auto(steps=20, tolerance=1e-4)        # the default: μ chosen from what each step measured
    mu        = geometric(start=9e-5, factor=1.21, steps=20)
    penalty   = "quadratic"
    lr        = 0.09
    weight_decay = 1e-4
    lr_schedule  = "cosine"
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs

from lcdsl.errors import Diagnostics, did_you_mean, exception_message
from lcdsl.language.spec import Call, Percent, Setting, Spec, Value
from lcdsl.operators.units import int_at_least, positive_number

__all__ = ["MAX_STEPS", "Schedule", "Geometric", "Explicit", "Auto", "Settings", "settings_from_spec", "settings_data"]

MAX_STEPS = 10_000
"""The most LC steps a μ schedule may have (a real run has tens): more is a spec error where it is
written, not a list of a billion μ values built before any training."""


def _cap(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"cap must be a positive finite number, got {value:g}")


@attrs.frozen
class Geometric:
    """``μ_k = start · factor^k`` for ``k < steps``, capped at ``cap`` if given."""

    start: float = attrs.field(converter=float, validator=positive_number)
    """μ at step 0 (after direct compression); must be > 0."""
    factor: float = attrs.field(converter=float)
    """Growth per LC step; must be > 1."""
    steps: int = attrs.field(validator=int_at_least(1, MAX_STEPS))
    """Number of LC steps; must be in [1, :data:`MAX_STEPS`]."""
    cap: float | None = attrs.field(default=None, converter=attrs.converters.optional(float), validator=_cap)
    """Largest μ (> 0); later steps stay at the cap."""

    def __attrs_post_init__(self) -> None:
        self.values()  # a schedule that overflows is an error where it is written, not at step k

    @factor.validator
    def _check_factor(self, attribute: Any, value: float) -> None:
        if not (value > 1 and math.isfinite(value)):
            raise ValueError(f"factor must be a number > 1, got {value}")

    def values(self) -> tuple[float, ...]:
        """Every μ of the run, in order."""
        out = []
        for k in range(self.steps):
            try:
                mu = self.start * self.factor**k
            except OverflowError:  # float ** raises where * gives inf
                mu = math.inf
            if self.cap is not None:
                mu = min(mu, self.cap)
            if not math.isfinite(mu):
                raise ValueError(f"the μ schedule overflows at step {k}; lower factor or steps, or set cap")
            out.append(mu)
        return tuple(out)


@attrs.frozen
class Explicit:
    """An explicit list of μ values, one per LC step."""

    mus: tuple[float, ...] = attrs.field(converter=lambda v: tuple(float(x) for x in v))
    """The values; each must be > 0 and finite."""

    @mus.validator
    def _check(self, attribute: Any, value: tuple[float, ...]) -> None:
        if not value:
            raise ValueError("the μ list is empty")
        if len(value) > MAX_STEPS:
            raise ValueError(f"the μ list has {len(value):,} values; at most {MAX_STEPS:,} LC steps")
        for mu in value:
            if not (mu > 0 and math.isfinite(mu)):
                raise ValueError(f"every μ must be a positive finite number, got {mu}")

    def values(self) -> tuple[float, ...]:
        """Every μ of the run, in order."""
        return self.mus


def _fraction(instance: Any, attribute: Any, value: float) -> None:
    if not (0 < value < 1):
        raise ValueError(f"{attribute.name} must be a number in (0, 1), got {value:g}")


def _growth(instance: Any, attribute: Any, value: float) -> None:
    if not (value > 1 and math.isfinite(value)):
        raise ValueError(f"max_growth must be a number > 1, got {value:g}")


def _optional_start(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"start must be a positive finite number, got {value:g}")


@attrs.frozen
class Auto:
    """μ chosen by the engine from what each LC step measured (:mod:`lcdsl.engine.schedule`).

    μ₀ makes the penalty at the reference worth a fiftieth of a nat; each next μ grows by what
    the distortion ``‖w − Δ(θ)‖²`` still has to fall to reach ``tolerance`` times direct
    compression's within the steps left (faster when it stalls, slower when the L-step loss
    jumps, never past the optimizer's stable ``lr·μ``); a diverged step is rolled back and
    retried with a smaller growth; the multiplier step waits until an L step can move ``w``
    halfway to its target. The run stops once feasible (``‖w − Δ(θ)‖²`` and the change of
    ``Δ(θ)`` over the last C step both at most ``tolerance`` times direct compression's) with an
    L-step loss that has settled."""

    steps: int = attrs.field(default=20, validator=int_at_least(1, MAX_STEPS))
    """The budget: at most this many LC steps (rolled-back retries not counted)."""
    tolerance: float = attrs.field(default=1e-4, converter=float, validator=_fraction)
    """Feasible when ``‖w − Δ(θ)‖² ≤ tolerance · D₀`` (``D₀``: direct compression's distortion)
    and the last C step moved ``Δ(θ)`` by no more (squared); in (0, 1)."""
    start: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(float), validator=_optional_start
    )
    """μ of the first LC step; None picks it from the model (``μ₀ = 0.04 / D₀``)."""
    max_growth: float = attrs.field(default=4.0, converter=float, validator=_growth)
    """The most μ may grow from one LC step to the next (> 1)."""
    retries: int = attrs.field(default=3, validator=int_at_least(0, MAX_STEPS))
    """The most diverged steps the run rolls back and retries."""

    def values(self) -> tuple[float, ...]:
        """No list: the engine decides each μ as the run goes (:class:`lcdsl.engine.schedule.AutoMu`)."""
        return ()


Schedule = Geometric | Explicit | Auto


def _positive_float(name: str, allow_zero: bool = False):
    def check(inst: Any, attribute: Any, value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not allow_zero):
            bound = "≥ 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")

    return check


def _seed(inst: Any, attribute: Any, value: Any) -> None:
    # torch and scikit-learn both take seeds in [0, 2**32)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {value!r}")


@attrs.frozen
class Settings:
    """Everything about a run that is not which tensors get which operator."""

    mu: Schedule = attrs.field(factory=Auto)
    """The μ schedule: ``auto(…)`` (the default), ``geometric(start=…, factor=…, steps=…[, cap=…])``
    or a list."""
    penalty: Literal["augmented-lagrangian", "quadratic"] = attrs.field(
        default="augmented-lagrangian",
        validator=attrs.validators.in_(("augmented-lagrangian", "quadratic")),
    )
    """``"augmented-lagrangian"`` (with multipliers λ) or ``"quadratic"`` (λ = 0 throughout)."""
    tolerance: float = attrs.field(default=0.0, validator=_positive_float("tolerance", allow_zero=True))
    """Stop early once ``‖w − Δ(θ)‖`` (over all tasks) is below this; 0 never stops early."""
    additive_rounds: int = attrs.field(default=10, validator=int_at_least(1))
    """Most alternations of the terms of an additive ``A + B`` C step."""
    optimizer: Literal["sgd", "adam"] = attrs.field(
        default="sgd", validator=attrs.validators.in_(("sgd", "adam"))
    )
    """The L step's optimizer."""
    lr: float = attrs.field(default=0.1, validator=_positive_float("lr"))
    """The L step's learning rate at the first LC step."""
    lr_decay: float = attrs.field(default=0.98, validator=_positive_float("lr_decay"))
    """The learning rate is multiplied by this after every LC step."""
    momentum: float = attrs.field(default=0.9, validator=_positive_float("momentum", allow_zero=True))
    """SGD momentum."""
    nesterov: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    """Use Nesterov momentum."""
    epochs: int = attrs.field(default=2, validator=int_at_least(1))
    """Epochs per L step."""
    first_epochs: int = attrs.field(default=4, validator=int_at_least(1))
    """Epochs of the first L step."""
    batch_size: int = attrs.field(default=256, validator=int_at_least(1))
    """Mini-batch size."""
    seed: int = attrs.field(default=0, validator=_seed)
    """Seed of the data order and of everything random, in [0, 2³²)."""
    weight_decay: float = attrs.field(default=0.0, validator=_positive_float("weight_decay", allow_zero=True))
    """L2 weight decay of the L step's optimizer (and of a reference trained by ``compress``). In the
    L step it applies to the parameters the plan leaves dense only: the compressed ones are pulled
    to ``Δ(θ)`` by the penalty, and decay would pull them to 0, away from the compressed model."""
    lr_schedule: Literal["constant", "cosine", "step"] = attrs.field(
        default="constant", validator=attrs.validators.in_(("constant", "cosine", "step"))
    )
    """The learning rate within each L step: ``"constant"``; ``"cosine"`` (from the step's lr to 0
    over its batches); ``"step"`` (× ``lr_step_factor`` every ``lr_step_epochs`` epochs)."""
    lr_step_epochs: int = attrs.field(default=1, validator=int_at_least(1))
    """Epochs between the drops of ``lr_schedule = "step"``."""
    lr_step_factor: float = attrs.field(default=0.5, validator=_positive_float("lr_step_factor"))
    """The factor of each drop of ``lr_schedule = "step"``."""
    delta: Literal["auto", "keep", "recompute"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "keep", "recompute"))
    )
    """Where the engine gets ``Δ(θ)``: ``"keep"`` holds it beside the weights (4 bytes a float32
    weight); ``"recompute"`` rebuilds it from ``θ`` block by block where it is used (a codebook
    lookup for ``quant``); ``"auto"`` recomputes for operators that can build a part of ``Δ(θ)``
    alone (quantization, pruning, binarization) and keeps it for the others (low-rank). The numbers
    are the same either way; only memory and time differ (``docs/memory.md``)."""
    lambda_dtype: Literal["weights", "float32", "bfloat16", "float16"] = attrs.field(
        default="weights", validator=attrs.validators.in_(("weights", "float32", "bfloat16", "float16"))
    )
    """The dtype of the multipliers ``λ``: ``"weights"`` (the weights' own), or a narrower one to
    halve their memory (``"bfloat16"``: the multiplier step then rounds ``λ`` to 8 significant
    bits, a relative error of at most 2⁻⁸; see ``docs/memory.md`` for when that is harmless)."""


_SETTING_NAMES = tuple(a.name for a in attrs.fields(Settings))


def settings_data(settings: Settings) -> dict[str, Any]:
    """``settings`` as plain data (numbers, strings, lists), the canonical form files record.

    Every setting by name, and the μ schedule as its kind, its fields and every value::

        {"mu": {"kind": "geometric", "start": 9e-05, "factor": 1.21, "steps": 20, "cap": None,
                "values": [9e-05, …]}, "penalty": "augmented-lagrangian", …}

    Two settings are the same run's exactly when their data are equal."""
    data = attrs.asdict(settings)
    mu = settings.mu
    values = None if isinstance(mu, Auto) else list(mu.values())  # auto: decided as the run goes
    data["mu"] = {"kind": type(mu).__name__.lower(), **attrs.asdict(mu), "values": values}
    return data


_SCHEDULE_ARGUMENTS = {
    "geometric": (Geometric, {"start", "factor", "steps", "cap"}, ("start", "factor", "steps")),
    "auto": (Auto, {"steps", "tolerance", "start", "max_growth", "retries"}, ()),
}
"""Per schedule call: its class, its keywords, the keywords it needs."""

def _schedule(value: Value) -> Schedule:
    if isinstance(value, Call):
        if value.name not in _SCHEDULE_ARGUMENTS:
            raise ValueError(f"unknown schedule '{value.name}'{did_you_mean(value.name, list(_SCHEDULE_ARGUMENTS))}")
        cls, known, needed = _SCHEDULE_ARGUMENTS[value.name]
        name = value.name
        if any(a.name is None for a in value.args):
            raise ValueError(f"{name}() takes keyword arguments: " + ", ".join(f"{k}=…" for k in sorted(known)))
        names = [a.name for a in value.args]
        repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if repeated is not None:
            raise ValueError(f"{name}() got '{repeated}' twice")
        kwargs = value.kwargs()
        for key in kwargs:
            if key not in known:
                raise ValueError(f"{name}() has no argument '{key}'{did_you_mean(key, known)}")
        missing = [k for k in needed if k not in kwargs]
        if missing:
            raise ValueError(f"{name}() needs {', '.join(missing)}")
        for key, v in kwargs.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name}() argument {key} must be a number, got {v!r}")
        return cls(**kwargs)
    if isinstance(value, tuple):
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"every μ in the list must be a number, got {v!r}")
        return Explicit(value)
    raise ValueError("mu must be auto(…), geometric(start=…, factor=…, steps=…) or a list of numbers")


def _plain(name: str, value: Value) -> Any:
    if name == "mu":
        return _schedule(value)
    if isinstance(value, (Call, Percent)):
        raise ValueError(f"{name} takes a plain value, not {type(value).__name__.lower()}")
    return value


def settings_from_spec(spec: Spec, **overrides: Any) -> Settings:
    """The spec's settings on top of the defaults, then ``overrides`` (from the command line).

    Raises:
        SpecError: every unknown name and bad value of the spec, together.
    """
    diagnostics = Diagnostics()
    values: dict[str, Any] = {}
    for statement in spec.statements:
        if not isinstance(statement, Setting):
            continue
        if statement.name not in _SETTING_NAMES:
            diagnostics.add(
                "unknown-setting",
                f"unknown setting '{statement.name}'{did_you_mean(statement.name, _SETTING_NAMES)}",
                statement.span,
                hint="settings are: " + ", ".join(_SETTING_NAMES),
            )
            continue
        try:
            values[statement.name] = _plain(statement.name, statement.value)
            attrs.evolve(Settings(), **{statement.name: values[statement.name]})
        except (ValueError, TypeError) as exc:
            values.pop(statement.name, None)
            message = exception_message(exc)
            diagnostics.add("bad-value", f"bad value for '{statement.name}': {message}", statement.span)
    diagnostics.raise_if_any(source=spec.source, filename=spec.filename)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
