"""Fuzzing the binder: whatever the spec, binding it gives a plan or a SpecError; and whatever
spec binds either compresses a tiny model or fails with an lcdsl error, never anything else.

Two generators: :func:`spec_strategies.specs` (any spec the grammar can write, mostly wrong for
the model) and :func:`plausible_specs` below (real parameter names, real operators and settings,
values near and across their bounds), so that many examples get past binding.
``HYPOTHESIS_PROFILE=thorough`` (``make test-thorough``) runs thousands of each.
"""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.errors import LcdslError, SpecError
from lcdsl.language import Argument, Call, Exclude, JointGroup, NameSelector, Percent, Rule, Setting, Spec, TypeSelector
from lcdsl.language.fmt import format_spec
from lcdsl.language.parser import parse
from lcdsl.plan.settings import Explicit
from lcdsl.training.data import Dataset
from lcdsl.training.lstep import make_l_step
from tests.spec_strategies import specs


class Tiny(nn.Module):
    """A 3-layer MLP named like LeNet300 (fc1, fc2, fc3) with a conv in front, 8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)  # (2, 1, 3, 3)
        self.fc1 = nn.Linear(2 * 2 * 4, 6)
        self.fc2 = nn.Linear(6, 5)
        self.fc3 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.view(-1, 1, 2, 4)))
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc3(torch.tanh(self.fc2(x)))


def tiny_model() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def tiny_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    return Dataset("tiny", x[:16], y[:16], x[16:], y[16:], 3)


MODEL = tiny_model()


def bind_or_spec_error(spec: Spec):
    """Bind ``spec`` (through its canonical text, so spans are real) or return the SpecError."""
    try:
        parsed = parse(format_spec(spec))
    except SpecError as exc:
        return exc
    try:
        plan = parsed.bind(MODEL)
    except SpecError as exc:
        assert exc.diagnostics
        exc.render()
        return exc
    names = dict(MODEL.named_parameters())
    claimed = [n for task in plan.tasks for n in task.parameters]
    assert len(claimed) == len(set(claimed))  # no tensor in two tasks
    assert set(claimed) | set(plan.dense) == set(names)
    for task in plan.tasks:
        assert task.shapes == tuple(tuple(names[n].shape) for n in task.parameters)
    return plan


@given(specs())
def test_any_spec_binds_or_is_a_spec_error(spec):
    bind_or_spec_error(spec)


# ------------------------------------------------------------------- plausible specs

_names = ["fc1", "fc2", "fc3", "conv", "fc*", "**", "fc1.bias", "**.bias", "fc?", "conv.weight", "fc4", "*.weight"]
_item = st.one_of(
    st.builds(NameSelector, st.sampled_from(_names)),
    st.builds(TypeSelector, st.sampled_from(["Linear", "Conv2d", "LSTM"])),
    st.builds(Exclude, st.builds(NameSelector, st.sampled_from(_names))),
)
_selectors = st.lists(
    st.one_of(_item, st.builds(JointGroup, st.lists(_item, min_size=1, max_size=3).map(tuple))), min_size=1, max_size=3
).map(tuple)

_ints = st.integers(-2, 40)
_fractions = st.floats(-0.5, 1.5, allow_nan=False)
_amounts = st.one_of(_ints, _fractions, st.builds(Percent, st.floats(-10, 120, allow_nan=False)))
_positive = st.one_of(st.floats(1e-6, 10), st.integers(-1, 3))


def _call(name: str, **kwargs: st.SearchStrategy) -> st.SearchStrategy[Call]:
    """``name(…)`` with a random subset of ``kwargs`` (sometimes none, sometimes all)."""
    keys = sorted(kwargs)
    if not keys:
        return st.just(Call(name))
    return st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)).flatmap(
        lambda chosen: st.tuples(*[kwargs[k].map(lambda v, k=k: Argument(k, v)) for k in chosen]).map(
            lambda args: Call(name, args)
        )
    )


_codebooks = st.lists(st.floats(-2, 2, allow_nan=False), max_size=4).map(tuple)
operators = st.one_of(
    _call("quant", k=_ints, bits=st.integers(-1, 4), codebook=_codebooks),
    _call("prune", l0=_amounts, l1=_positive, l0_penalty=_positive, l1_penalty=_positive,
          by=st.sampled_from(["weights", "rows", "columns", "channels", "filters", "diagonal"])),
    _call("lowrank", rank=_ints, alpha=_positive, cost=st.sampled_from(["storage", "flops", "time"])),
    _call("binarize", scale=st.booleans()),
    _call("ternarize"),
    _call("pow2", bits=st.integers(1, 9), emax=st.integers(-130, 130)),
)
"""Operator calls with the real keywords, values on both sides of their bounds."""

_mu = st.one_of(
    st.builds(
        lambda start, factor, steps: Call("geometric", (Argument("start", start), Argument("factor", factor),
                                                        Argument("steps", steps))),
        st.floats(1e-6, 1e3), st.floats(0.5, 1e4), st.integers(0, 4),
    ),
    st.lists(st.floats(-1, 1e3, allow_nan=False), min_size=0, max_size=3).map(tuple),
    st.builds(
        lambda steps, tolerance: Call("auto", (Argument("steps", steps), Argument("tolerance", tolerance))),
        st.integers(-1, 4), st.floats(-0.5, 1.5),
    ),
)
_setting_values = {
    "mu": _mu,
    "penalty": st.sampled_from(["quadratic", "augmented-lagrangian", "exact"]),
    "lr": st.one_of(st.floats(1e-4, 1e3), st.just(0)),
    "lr_decay": st.floats(0.1, 2.0),
    "epochs": st.integers(0, 2),
    "batch_size": st.integers(0, 40),
    "seed": st.integers(-1, 2**33),
    "tolerance": st.floats(0, 10),
    "additive_rounds": st.integers(0, 4),
    "optimizer": st.sampled_from(["sgd", "adam", "lbfgs"]),
    "momentum": st.floats(0, 1.5),
    "nesterov": st.booleans(),
}


def _one(name: str, key: str, value: st.SearchStrategy) -> st.SearchStrategy[Call]:
    return value.map(lambda v: Call(name, (Argument(key, v),)))


valid_operators = st.one_of(
    _one("quant", "k", st.integers(2, 5)),
    _one("quant", "bits", st.integers(1, 3)),
    _one("quant", "codebook", st.lists(st.floats(-1, 1), min_size=1, max_size=3).map(tuple)),
    _one("prune", "l0", st.one_of(st.integers(1, 12), st.floats(0.01, 0.99), st.builds(Percent, st.floats(1, 100)))),
    _one("prune", "l1", st.floats(0.01, 5)),
    _one("prune", "l0_penalty", st.floats(1e-4, 1)),
    _one("prune", "l1_penalty", st.floats(1e-4, 1)),
    _one("lowrank", "rank", st.integers(1, 3)),
    _one("lowrank", "alpha", st.floats(1e-6, 1)),
    _one("binarize", "scale", st.booleans()),
    st.just(Call("ternarize")),
    _one("pow2", "bits", st.integers(2, 5)),
)
"""Operator calls with one valid keyword each (most of them bind to any weight matrix)."""

_valid_settings = {
    "mu": st.one_of(
        st.lists(st.floats(1e-5, 10), min_size=1, max_size=3).map(tuple),
        st.builds(
            lambda a, b, n: Call("geometric", (Argument("start", a), Argument("factor", b), Argument("steps", n))),
            st.floats(1e-5, 1), st.floats(1.01, 10), st.integers(1, 3),
        ),
        st.builds(
            lambda n, tol: Call("auto", (Argument("steps", n), Argument("tolerance", tol))),
            st.integers(1, 3), st.floats(1e-4, 0.5),
        ),
    ),
    "penalty": st.sampled_from(["quadratic", "augmented-lagrangian"]),
    "lr": st.floats(1e-4, 1),
    "batch_size": st.integers(1, 20),
    "seed": st.integers(0, 2**32 - 1),
    "tolerance": st.floats(0, 1),
    "additive_rounds": st.integers(1, 3),
    "optimizer": st.sampled_from(["sgd", "adam"]),
    "momentum": st.floats(0, 0.99),
    "nesterov": st.booleans(),
}
_plain_selectors = st.sampled_from(["fc1", "fc2", "fc3", "conv", "fc1.bias", "fc2.bias"]).map(
    lambda n: (NameSelector(n),)
)


@st.composite
def plausible_specs(draw) -> Spec:
    """Rules over Tiny's parameter names with real operators (one or two terms), and settings.

    Half the draws stay inside the valid ranges (so they reach compression), half wander across
    every bound (so the binder's checks are exercised)."""
    if draw(st.booleans()):  # the valid half: distinct tensors, valid values
        names = draw(st.lists(_plain_selectors, min_size=1, max_size=3, unique=True))
        terms = st.lists(valid_operators, min_size=1, max_size=2).map(tuple)
        rules = [Rule(selectors, draw(terms)) for selectors in names]
        keys = draw(st.lists(st.sampled_from(sorted(_valid_settings)), unique=True, max_size=3))
        settings_ = [Setting(k, draw(_valid_settings[k])) for k in keys]
    else:
        rules = draw(
            st.lists(
                st.builds(Rule, _selectors, st.lists(operators, min_size=1, max_size=2).map(tuple)),
                min_size=0,
                max_size=3,
            )
        )
        keys = draw(st.lists(st.sampled_from(sorted(_setting_values)), unique=True, max_size=3))
        settings_ = [Setting(k, draw(_setting_values[k])) for k in keys]
    return Spec(tuple(settings_ + rules))


@given(plausible_specs())
def test_plausible_specs_bind_or_are_spec_errors(spec):
    bind_or_spec_error(spec)


def compress_tiny(plan) -> None:
    """1-2 LC steps of the plan on Tiny and tiny data, as ``lcdsl compress`` runs them."""
    model = tiny_model()
    mus = plan.settings.mu.values()[:2]
    schedule = Explicit(mus) if mus else attrs.evolve(plan.settings.mu, steps=2)  # auto: a budget of 2
    run_settings = attrs.evolve(plan.settings, mu=schedule, epochs=1, first_epochs=1)
    engine = Engine(model, plan, settings=run_settings)
    engine.run(make_l_step(model, tiny_data(), run_settings))
    thetas = engine.finalize()
    assert set(thetas) == {task.name for task in plan.tasks}
    for _, size in engine.storage():
        assert size is None or (size.bits >= 0 and size.params >= 0)
    for task in plan.tasks:
        for name in task.parameters:
            assert torch.isfinite(dict(model.named_parameters())[name]).all()


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(plausible_specs())
def test_a_spec_that_checks_compresses_or_fails_with_an_lcdsl_error(spec):
    """The property: anything ``check`` accepts either compresses or fails with a project error."""
    plan = bind_or_spec_error(spec)
    if isinstance(plan, SpecError):
        return
    try:
        compress_tiny(plan)
    except LcdslError as exc:
        assert str(exc)


def test_the_plausible_generator_reaches_compression():
    """Not vacuous: a fixed sample of plausible specs has many that bind."""
    outcomes = []

    @settings(max_examples=100, database=None, derandomize=True)
    @given(plausible_specs())
    def sample(spec):
        outcomes.append(not isinstance(bind_or_spec_error(spec), SpecError))

    sample()
    assert sum(outcomes) >= 20 and not all(outcomes)


@pytest.mark.parametrize(
    "text",
    [
        "fc* : quant(k=2) + prune(l0=3)\nmu = [1e-3, 1e-2]",
        "[fc1, fc2] : prune(l0=10%)\nconv : lowrank(rank=1)",
        "@Linear : lowrank(alpha=1e-3, cost=flops)\npenalty = quadratic",
        "fc1 : prune(l0_penalty=0.5)\nfc2 : prune(l1=0.5)\nfc3 : binarize(scale=true)",
        "conv : prune(l0=1, by=channels)\nfc* : pow2(bits=3)\nmu = [1e-2]",
    ],
)
def test_examples_compress(text):
    plan = parse(text).bind(MODEL)
    compress_tiny(plan)


def test_a_huge_lr_is_an_engine_error_not_a_crash():
    plan = parse("lr = 1e30\nmu = [1e-3, 1e-2]\nfc* : quant(k=2)").bind(MODEL)
    # the L step diverges: the last epoch's loss is nan, or finite with the weights already
    # overflowed by its last update (which one depends on the float dynamics of the build)
    diverged = r"LC step \d \(μ=.*\): (the L step.s loss is nan|parameter '.*' has non-finite values)"
    with pytest.raises(LcdslError, match=diverged):
        compress_tiny(plan)
