"""Binding specs to models: selectors, groups, operators, and every error at once."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from lcdsl.errors import Span, SpecError
from lcdsl.language import Argument, Call, Exclude, JointGroup, NameSelector, Percent, Rule, Setting, Spec, TypeSelector
from lcdsl.operators.base import Operator, Storage
from lcdsl.plan.binder import bind as bind_spec
from lcdsl.plan.binder import build_operator, check_spec
from lcdsl.plan.selectors import glob_regex


@attrs.frozen
class Keep(Operator):
    """argmin_θ ‖w − θ‖² s.t. ‖θ‖₀ ≤ n: keep the n largest magnitudes (a test operator)."""

    name: ClassVar[str] = "keep"
    n: object = 1

    def resolve(self, shape):
        total = math.prod(shape)
        n = round(self.n.fraction * total) if isinstance(self.n, Percent) else self.n
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a count ≥ 1, got {self.n!r}")
        if n > total:
            raise ValueError(f"n={n} is more than the {total} weights")
        return attrs.evolve(self, n=n)

    def project(self, w, mu=0.0, warm=None):
        idx = w.abs().topk(self.n).indices
        return {"indices": idx, "values": w[idx]}

    def decompress(self, theta, shape):
        out = torch.zeros(math.prod(shape), dtype=theta["values"].dtype)
        out[theta["indices"]] = theta["values"]
        return out.reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(self.n, 32 * self.n)


@attrs.frozen
class Rank(Operator):
    """argmin_θ ‖W − θ‖² s.t. rank θ ≤ r (a test operator of the matrix view)."""

    name: ClassVar[str] = "rank"
    view: ClassVar[str] = "matrix"
    r: int = attrs.field(default=1)

    @r.validator
    def _check(self, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"r must be an integer ≥ 1, got {value!r}")

    def storage(self, shape, theta=None):
        return Storage(self.r * sum(shape), 32 * self.r * sum(shape))


class FakeRegistry:
    """The part of lcdsl.registry.Registry the binder uses."""

    operators = {"keep": Keep, "rank": Rank}

    def operator(self, name):
        return self.operators[name]


REG = FakeRegistry()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 4)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def span(line, col=1, end=2):
    return Span(line, col, line, end)


def rule(selectors, *terms, line=1):
    return Rule(selectors, terms or (Call("keep", (Argument("n", 1),)),), span=span(line))


def names(s):
    return NameSelector(s, span=span(1))


def bind(*rules, settings=(), model=None):
    return bind_spec(Spec((*settings, *rules)), model or Net(), registry=REG)


# --- globs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("fc*", "fc1", True),
        ("fc*", "fc1.weight", False),  # * stays inside one segment
        ("**.weight", "head.0.weight", True),
        ("head.**", "head.0", True),
        ("head.**.weight", "head.weight", True),  # ** spans zero segments too
        ("head.*.weight", "head.0.weight", True),
        ("head.*.weight", "head.0.1.weight", False),
        ("fc?", "fc12", False),
        ("fc?", "fc1", True),
        ("fc1", "fc10", False),
        ("a+b", "a+b", True),  # regex characters are literal
    ],
)
def test_glob_is_dot_aware(pattern, name, matches):
    assert bool(glob_regex(pattern).match(name)) is matches


# --- selection ----------------------------------------------------------------------------------


def task_params(plan):
    return [t.parameters for t in plan.tasks]


def test_module_glob_means_weights_and_biases_only_when_named():
    plan = bind(rule((names("fc*"),)), rule((names("fc1.bias"),), line=2))
    assert task_params(plan) == [("fc1.weight",), ("fc2.weight",), ("fc1.bias",)]
    assert "fc2.bias" in plan.dense


def test_literal_module_name_and_double_star():
    plan = bind(rule((names("conv1"), names("head.**"))))
    assert task_params(plan) == [("conv1.weight",), ("head.0.weight",), ("head.2.weight",)]


def test_parameter_glob_with_literal_last_segment_takes_biases():
    plan = bind(rule((names("**.bias"),)))
    assert len(plan.tasks) == 6 and all(t.parameters[0].endswith(".bias") for t in plan.tasks)


def test_type_selector_and_exclusion():
    plan = bind(rule((TypeSelector("Linear", span=span(1)), Exclude(names("head.*"), span=span(1)))))
    assert task_params(plan) == [("fc1.weight",), ("fc2.weight",)]


def test_joint_group_is_one_task_and_plain_list_is_one_task_each():
    plan = bind(rule((JointGroup((names("fc*"),), span=span(1)),)), rule((names("conv*"),), line=2))
    assert task_params(plan) == [("fc1.weight", "fc2.weight"), ("conv1.weight",), ("conv2.weight",)]
    assert plan.tasks[0].joint and plan.tasks[0].name == "[fc1.weight, fc2.weight]"
    assert plan.tasks[0].view_shape == (16 * 8 + 8 * 4,)


def test_ddp_prefix_is_ignored():
    plan = bind(rule((names("fc1"),)), model=nn.DataParallel(Net()))
    assert task_params(plan) == [("fc1.weight",)]


def test_percent_resolves_against_the_task_size():
    plan = bind(rule((JointGroup((names("fc*"),), span=span(1)),), Call("keep", (Argument("n", Percent(10)),))))
    assert plan.tasks[0].operator.n == 16  # 10% of 160
    assert plan.dense_numel == sum(p.numel() for n, p in Net().named_parameters() if n not in ("fc1.weight", "fc2.weight"))


# --- errors -------------------------------------------------------------------------------------


def errors(*rules, settings=(), model=None):
    with pytest.raises(SpecError) as info:
        bind(*rules, settings=settings, model=model)
    return [d.message for d in info.value.diagnostics]


def test_selector_matching_nothing_suggests_real_names():
    (msg,) = errors(rule((names("fc3"),)))
    assert "'fc3' matches no parameter" in msg and "did you mean" in msg and "'fc1'" in msg


def test_weightless_module_gets_a_hint():
    with pytest.raises(SpecError) as info:
        bind(rule((names("head"),)))
    (diag,) = info.value.diagnostics
    assert "no weight of its own" in diag.message and "head.**" in diag.hint


def test_unknown_type_lists_the_types():
    with pytest.raises(SpecError) as info:
        bind(rule((TypeSelector("Conv3d", span=span(1)),)))
    (diag,) = info.value.diagnostics
    assert "Conv3d" in diag.message and "Conv2d" in diag.message and "Linear" in diag.hint


def test_tensor_claimed_twice_names_the_first_line():
    (msg,) = errors(rule((names("fc*"),), line=3), rule((names("fc1"),), line=7))
    assert "'fc1.weight' is already compressed by the rule on line 3" in msg


def test_all_errors_of_a_file_are_reported_together():
    msgs = errors(
        rule((names("nope"),), line=1),
        rule((names("fc1"),), Call("kep", (Argument("n", 1),)), line=2),
        rule((names("fc2"),), Call("keep", (Argument("m", 1),)), line=3),
        settings=(Setting("lrr", 0.1, span=span(4)),),
    )
    assert len(msgs) == 4
    assert any("unknown setting 'lrr'; did you mean 'lr'" in m for m in msgs)
    assert any("unknown operator 'kep'; did you mean 'keep'" in m for m in msgs)
    assert any("keep() has no argument 'm'" in m for m in msgs)


def test_bad_value_is_reported_at_the_call():
    call = Call("rank", (Argument("r", 0),), span=span(2, 7, 15))
    with pytest.raises(SpecError) as info:
        bind(Rule((names("fc1"),), (call,), span=span(2)))
    (diag,) = info.value.diagnostics
    assert diag.span == call.span and "r must be an integer ≥ 1, got 0" in diag.message


def test_matrix_operator_refuses_a_joint_group_and_vectors():
    msgs = errors(
        rule((JointGroup((names("fc*"),), span=span(1)),), Call("rank", ())),
        rule((names("fc1.bias"),), Call("rank", ()), line=2),
    )
    assert any("takes one tensor, got 2" in m for m in msgs)
    assert any("2 or more dimensions" in m for m in msgs)


def test_resolve_error_names_the_task_and_its_size():
    (msg,) = errors(rule((names("fc2"),), Call("keep", (Argument("n", 1000),))))
    assert "fc2.weight (32 weights)" in msg and "more than the 32 weights" in msg


def test_joint_group_of_mixed_dtypes():
    model = Net()
    model.fc2.double()
    (msg,) = errors(rule((JointGroup((names("fc*"),), span=span(1)),)), model=model)
    assert "one dtype and device" in msg


def test_positional_and_repeated_arguments():
    msgs = errors(rule((names("fc1"),), Call("keep", (Argument(None, 3), Argument("n", 1), Argument("n", 2)))))
    assert any("takes keyword arguments" in m for m in msgs)
    assert any("got 'n' twice" in m for m in msgs)


def test_everything_excluded():
    (msg,) = errors(rule((names("fc1"), Exclude(names("fc1"), span=span(1)))))
    assert "excluded" in msg


# --- without a model ----------------------------------------------------------------------------


def test_check_spec_validates_operators_and_settings_without_a_model():
    spec = Spec((Setting("lr", 0.5, span=span(1)), rule((names("whatever"),), Call("rank", (Argument("r", 3),)), line=2)))
    ops = check_spec(spec, registry=REG)
    assert ops == {0: Rank(r=3)}
    with pytest.raises(SpecError):
        check_spec(Spec((rule((names("x"),), Call("rank", (Argument("r", -1),))),)), registry=REG)


def test_build_operator_for_one_term():
    assert build_operator((Call("keep", (Argument("n", 2),)),), registry=REG) == Keep(n=2)
