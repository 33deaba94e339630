"""``describe(op)``: an operator as spec text, written by fmt, that builds the same operator again."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lcdsl.language.fmt import format_expression
from lcdsl.language.parser import parse_expression
from lcdsl.language.spec import Percent
from lcdsl.operators.additive import Additive
from lcdsl.operators.base import Operator, describe
from lcdsl.operators.binary import Binarize, Ternarize
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant
from lcdsl.plan.binder import build_operator


def round_trip(op):
    """The operator that the spec text ``describe(op)`` builds (an additive one with op's rounds)."""
    rounds = getattr(op, "rounds", 10)
    return build_operator(parse_expression(describe(op)), rounds=rounds)


BUILTINS = [
    Quant(k=2), Quant(k=65536), Quant(bits=3), Quant(codebook=(-0.25, 0.0, 0.25)), Quant(codebook=(1e-30, -1e30)),
    Binarize(), Binarize(scale=True), Ternarize(),
    Prune(l0=5000), Prune(l0=Percent(5)), Prune(l0=Percent(2.5)), Prune(l0=Percent(1e-7)), Prune(l0=0.05),
    Prune(l1=2.0), Prune(l0_penalty=1e-3), Prune(l1_penalty=0.0001),
    Prune(l0=Percent(25), by="rows"), Prune(l0=10, by="channels"), Prune(l0=0.5, by="filters"),
    LowRank(rank=10), LowRank(alpha=1e-4), LowRank(alpha=123456.789, cost="flops"),
    Additive((Quant(k=2), Prune(l0=Percent(1)))),
    Additive((LowRank(rank=1), Prune(l0_penalty=1e6), Binarize(scale=True)), rounds=3),
]  # fmt: skip


@pytest.mark.parametrize("op", BUILTINS, ids=describe)
def test_describe_builds_the_same_operator(op):
    assert round_trip(op) == op


@pytest.mark.parametrize(
    ("op", "text"),
    [
        (Prune(l0=13310), "prune(l0=13310)"),
        (LowRank(alpha=1e-4), "lowrank(alpha=1e-4)"),
        (Prune(l0_penalty=0.001), "prune(l0_penalty=1e-3)"),
        (Prune(l0=Percent(25), by="rows"), "prune(l0=25%, by=rows)"),
        (Binarize(scale=True), "binarize(scale=true)"),
        (Quant(codebook=(-1, 1)), "quant(codebook=[-1.0, 1.0])"),
        (LowRank(alpha=0.5, cost="flops"), "lowrank(alpha=0.5, cost=flops)"),
        (Additive((Quant(k=2), Prune(l0=Percent(1)))), "quant(k=2) + prune(l0=1%)"),
    ],
)
def test_describe_writes_fmts_canonical_form(op, text):
    assert describe(op) == text
    assert format_expression(parse_expression(text)) == text  # what fmt writes for the same calls


_reals = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
_fractions = st.floats(min_value=1e-12, max_value=1.0, exclude_min=True, exclude_max=True)
_percents = st.floats(min_value=1e-9, max_value=100.0, exclude_min=True).map(Percent)
_amounts = st.one_of(st.integers(1, 2**62), _percents, _fractions)


@st.composite
def operators(draw, additive=True):
    """Any valid built-in operator: one of each family with drawn fields, or a sum of them."""
    family = draw(st.sampled_from(["quant", "binarize", "ternarize", "prune", "lowrank"] + ["additive"] * additive))
    if family == "quant":
        form = draw(st.sampled_from(["k", "bits", "codebook"]))
        if form == "codebook":
            signed = _reals | _reals.map(lambda x: -x)
            return Quant(codebook=tuple(draw(st.lists(signed, min_size=1, max_size=5, unique=True))))
        return Quant(**{form: draw(st.integers(2, 2**20) if form == "k" else st.integers(1, 31))})
    if family == "binarize":
        return Binarize(scale=draw(st.booleans()))
    if family == "ternarize":
        return Ternarize()
    if family == "prune":
        form = draw(st.sampled_from(["l0", "l1", "l0_penalty", "l1_penalty", "by"]))
        if form == "by":
            return Prune(l0=draw(_amounts), by=draw(st.sampled_from(["weights", "rows", "filters", "channels"])))
        return Prune(**{form: draw(_amounts if form == "l0" else _reals)})
    if family == "lowrank":
        if draw(st.booleans()):
            return LowRank(rank=draw(st.integers(1, 4096)))
        return LowRank(alpha=draw(_reals), cost=draw(st.sampled_from(["storage", "flops"])))
    terms = draw(st.lists(operators(additive=False), min_size=2, max_size=3))
    return Additive(tuple(terms), rounds=draw(st.integers(1, 50)))


@given(operators())
def test_describe_round_trips_every_builtin_operator(op):
    text = describe(op)
    assert describe(op) == text  # deterministic
    assert round_trip(op) == op
    assert describe(round_trip(op)) == text


@attrs.frozen
class Tagged(Operator):
    """A plugin-style operator whose fields are strings and lists of any spelling."""

    name: ClassVar[str] = "tagged"

    mode: str = "plain"
    labels: tuple = ()


class OneOperatorRegistry:
    """The part of lcdsl.plugins.registry.Registry the binder uses, knowing only Tagged."""

    operators: ClassVar[dict] = {"tagged": Tagged}

    def operator(self, name):
        return self.operators[name]


@pytest.mark.parametrize(
    ("op", "text"),
    [
        (Tagged(), "tagged()"),
        (Tagged(mode="augmented-lagrangian"), "tagged(mode=augmented-lagrangian)"),
        (Tagged(mode="true"), 'tagged(mode="true")'),
        (Tagged(mode="nan"), 'tagged(mode="nan")'),
        (Tagged(mode="two words\n"), 'tagged(mode="two words\\n")'),
        (Tagged(mode="\u00e9t\u00e9"), 'tagged(mode="\u00e9t\u00e9")'),
        (Tagged(labels=(1, 2.5, Percent(3), "x", (True,))), "tagged(labels=[1, 2.5, 3%, x, [true]])"),
    ],
)
def test_describe_quotes_strings_only_where_a_bare_word_would_not_read_back(op, text):
    assert describe(op) == text
    assert build_operator(parse_expression(text), registry=OneOperatorRegistry()) == op


@attrs.frozen
class Recording(Operator):
    """argmin_θ ‖w − θ‖²: θ = w, keeping a record of its calls that is no part of what it computes."""

    name: ClassVar[str] = "recording"
    k: int = 1
    calls: list = attrs.field(factory=list, eq=False, repr=False)
    cache: dict = attrs.field(factory=dict, init=False)


def test_fields_that_are_not_spec_keywords_are_left_out():
    op = Recording(k=3)
    op.calls.append(0.5)
    assert describe(op) == "recording(k=3)"
    assert describe(Recording()) == "recording()"
