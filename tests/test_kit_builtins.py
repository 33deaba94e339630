"""lcdsl.testing run over every built-in operator, and the kit catching broken operators."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import pytest
import torch

from lcdsl.operators.base import Operator, Storage, Theta
from lcdsl.plugins.registry import BUILTIN, default_registry
from lcdsl.testing import OperatorCheckError, check_operator, operator_properties, weights

# (operator name, keyword arguments, options of check_operator): at least one example per
# built-in operator name
EXAMPLES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("quant", {"k": 3}, {}),
    ("quant", {"bits": 1}, {}),
    ("quant", {"codebook": (-1, 0, 1)}, {}),
    ("binarize", {}, {}),
    ("binarize", {"scale": True}, {}),
    ("ternarize", {}, {}),
    ("prune", {"l0": 3}, {}),
    ("prune", {"l1": 1.0}, {}),
    ("prune", {"l0_penalty": 0.01}, {"mu": 1.0, "penalty": True}),
    ("prune", {"l1_penalty": 0.01}, {"mu": 1.0, "penalty": True}),
    ("prune", {"l0": 2, "by": "rows"}, {}),
    ("lowrank", {"rank": 2}, {}),
    ("lowrank", {"alpha": 1e-3}, {"penalty": True}),
]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _builtin_names() -> set[str]:
    registry = default_registry()
    plugin = next((p for p in registry.plugins if p.name == BUILTIN), None)
    problems = "; ".join(p.message for p in registry.problems)
    assert plugin is not None, f"the built-in plugin did not load: {problems}"
    return set(plugin.operators)


def test_builtin_plugin_loads_without_problems():
    registry = default_registry()
    assert [p.message for p in registry.problems if p.name == BUILTIN] == []
    assert {"quant", "binarize", "ternarize", "prune", "lowrank"} <= _builtin_names()


def test_every_builtin_operator_has_an_example():
    missing = _builtin_names() - {name for name, _, _ in EXAMPLES}
    assert not missing, f"add examples for {sorted(missing)} to EXAMPLES in {__file__}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("name", "kwargs", "options"),
    EXAMPLES,
    ids=[f"{n}({','.join(f'{k}={v}' for k, v in a.items())})" for n, a, _ in EXAMPLES],
)
def test_builtin_operator_properties(name, kwargs, options, device):
    op = default_registry().operator(name)(**kwargs)
    operator_properties(op, device=device, **options)()


# ---------------------------------------------------------------- the kit catches broken operators


@attrs.frozen
class Fake(Operator):
    """argmin_θ ‖w − θ‖² s.t. θ ∈ ℤⁿ: nearest integers (exact), or a deliberate bug."""

    name: ClassVar[str] = "fake"
    bug: str = "none"

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        if self.bug == "mutates":
            w.add_(0.25)  # writes into its input
        if self.bug == "floor":  # feasible and idempotent, but not the nearest point
            return {"q": torch.floor(w)}
        if self.bug == "halves":  # not idempotent: P(P(w)) = w/4 ≠ P(w)
            return {"q": w * 0.5}
        if self.bug == "aliases":
            return {"q": w}
        if self.bug == "identity":  # the projection onto all reals, not onto the integers
            return {"q": w.clone()}
        if self.bug == "mu":  # a constraint form whose answer moves with μ
            return {"q": torch.round(w) + float(mu > 0.5)}
        if self.bug == "keeps_w_at_zero":  # a penalty form that reads μ = 0 as "no penalty"
            return {"q": w.clone() if mu == 0 else torch.round(w)}
        if self.bug == "zero_at_zero":  # the convention: μ → 0⁺ gives the cheapest θ
            return {"q": torch.zeros_like(w) if mu == 0 else torch.round(w)}
        return {"q": torch.round(w)}

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        q = theta["q"]
        if self.bug == "shape":
            return q.reshape(-1)[:-1].clone()
        if self.bug == "dtype":
            return q.reshape(shape).to(torch.float16)
        if self.bug == "nan":
            return torch.full(shape, math.nan, dtype=q.dtype)
        return q.reshape(shape).clone()

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage:
        n = math.prod(shape)
        if self.bug == "storage" and theta is not None:
            return Storage(params=2 * n, bits=64 * n)
        return Storage(params=n, bits=32 * n)


W = torch.tensor([0.2, -1.7, 2.6, 0.9, -0.4])


def test_a_correct_operator_passes():
    report = check_operator(Fake(), W)
    assert report.gap is not None and report.gap >= 0
    assert report.distortion == pytest.approx(float(((W - W.round()) ** 2).sum()))


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        ("shape", "decompress returned shape (4,), but w has shape (5,)"),
        ("dtype", "decompress returned dtype torch.float16, but w has dtype torch.float32"),
        ("nan", "non-finite"),
        ("mutates", "modified its input w in place"),
        ("halves", "not its own projection"),
        ("floor", "not optimal"),
        ("aliases", "shares memory with w"),
        ("storage", "counts 10 parameters, but θ holds only 5"),
    ],
)
def test_the_kit_catches_a_broken_operator(bug, message):
    # just below the integers, so rounding down is far from the nearest feasible point
    w = W.clone() if bug != "floor" else torch.tensor([0.99, 1.98, 2.97, -0.05, 0.95])
    with pytest.raises(OperatorCheckError) as info:
        check_operator(Fake(bug=bug), w)
    text = str(info.value)
    written = f'"{bug}"' if bug == "nan" else bug  # as spec text: a bare nan would read as a number
    assert text.startswith(f"fake(bug={written}): "), text
    assert message in text


def test_the_kit_catches_a_constraint_form_that_depends_on_mu():
    with pytest.raises(OperatorCheckError, match=r"fake\(bug=mu\): the answer depends on μ"):
        check_operator(Fake(bug="mu"), W)


def test_the_kit_checks_feasibility_with_a_callback():
    def integers(delta):
        return bool((delta == delta.round()).all())

    check_operator(Fake(), W, is_feasible=integers)
    with pytest.raises(OperatorCheckError, match=r"fake\(bug=identity\): Δ\(θ\) is not feasible"):
        check_operator(Fake(bug="identity"), W, is_feasible=integers)


def test_a_penalty_forms_distortion_must_not_grow_with_mu():
    report = check_operator(Fake(bug="zero_at_zero"), W, mu=1.0, penalty=True)
    assert report.gap is None and report.distortion == pytest.approx(float(((W - W.round()) ** 2).sum()))
    with pytest.raises(OperatorCheckError, match=r"grows with μ, 0 at μ = 0 but .* at μ = 1 \(μ = 0 is the limit"):
        check_operator(Fake(bug="keeps_w_at_zero"), W, mu=1.0, penalty=True)


def test_the_kit_reads_penalty_form_from_the_operator():
    assert Fake().penalty_form is False
    assert default_registry().operator("lowrank")(alpha=1.0).penalty_form is True
    assert default_registry().operator("prune")(l0_penalty=1.0).penalty_form is True
    assert default_registry().operator("prune")(l0=3).penalty_form is False
    with pytest.raises(OperatorCheckError, match="grows with μ"):  # no penalty= needed
        check_operator(_PenaltyFake(), W, mu=1.0)


@attrs.frozen
class _PenaltyFake(Fake):
    """A fake that declares itself a penalty form and keeps w at μ = 0."""

    bug: str = "keeps_w_at_zero"

    @property
    def penalty_form(self) -> bool:
        return True


def test_operator_properties_fails_on_a_broken_operator():
    test = operator_properties(Fake(bug="halves"), shapes=[(3,), (2, 2)])
    with pytest.raises(OperatorCheckError, match="fake"):
        test()


def test_operator_properties_passes_on_a_correct_operator_and_factory():
    operator_properties(lambda: Fake(), shapes=[(1,), (3, 2)], dtypes=(torch.float64,))()


def test_weights_are_float32_exact():
    from hypothesis import given

    @given(w=weights((6,), torch.float64))
    def check(w):
        assert w.dtype == torch.float64 and w.shape == (6,)
        assert torch.equal(w.to(torch.float32).to(torch.float64), w)
        assert bool(torch.isfinite(w).all())

    check()
