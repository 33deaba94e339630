"""pow2: the lcdsl property kit, exact nearest levels by brute force, and the installed plugin."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lcdsl_pow2 import Pow2, lcdsl_deploy_layer
from torch import nn

import lcdsl
from lcdsl.testing import OperatorCheckError, check_deploy_layer, operator_properties, weights

# the whole contract, as every built-in operator runs it
test_pow2_bits2 = operator_properties(Pow2(bits=2))
test_pow2_bits3_emax_minus2 = operator_properties(Pow2(bits=3, emax=-2))
test_pow2_bits8 = operator_properties(Pow2(bits=8, emax=3), shapes=[(1,), (7,), (64,)])


def _brute_force_distance(op: Pow2, w: torch.Tensor) -> torch.Tensor:
    """|w_i − nearest level| over every level of the feasible set, in float64."""
    levels = op.levels(torch.float64)
    candidates = torch.cat([-levels.flip(0), levels])  # (2·2^(bits−1),)
    return (w.to(torch.float64)[:, None] - candidates[None, :]).abs().min(dim=1).values  # (n,)


@settings(deadline=None)
@given(
    bits=st.integers(2, 5),
    emax=st.integers(-4, 4),
    w=weights(st.tuples(st.integers(1, 30)), bound=40.0),
)
@example(bits=3, emax=0, w=torch.tensor([0.72, 0.76, 0.375, 0.124, 0.126, 3.0, -0.72]))
def test_every_weight_goes_to_a_nearest_level(bits, emax, w):
    op = Pow2(bits=bits, emax=emax)
    delta = op.decompress(op.project(w), tuple(w.shape))
    got = (w.to(torch.float64) - delta.to(torch.float64)).abs()
    # rounding is monotone, so an exact nearest level is never farther in float64 either
    assert bool((got <= _brute_force_distance(op, w)).all())


def test_midpoints_are_arithmetic_not_geometric():
    op = Pow2(bits=3)  # levels 0, 1/4, 1/2, 1
    w = torch.tensor([0.72, 0.7071, 0.74, 0.75, 0.76, 0.37, 0.375, 0.38, 0.124, 0.125, 0.126, 5.0, -0.72])
    want = torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 0.25, 0.5, 0.5, 0.0, 0.25, 0.25, 1.0, -0.5])
    assert torch.equal(op.decompress(op.project(w), (w.numel(),)), want)


def test_emax_shifts_the_levels_and_dtype_is_kept():
    op = Pow2(bits=2, emax=3)  # levels 0, ±8
    w = torch.tensor([5.0, 3.9, -4.0, 100.0], dtype=torch.float64)
    delta = op.decompress(op.project(w), (4,))
    assert delta.dtype == torch.float64
    assert delta.tolist() == [8.0, 0.0, -8.0, 8.0]


def test_theta_and_storage():
    op = Pow2(bits=4)
    theta = op.project(torch.linspace(-1, 1, 10))
    assert theta["codes"].dtype == torch.int8
    assert int(theta["codes"].abs().max()) <= op.exponents == 7
    assert op.emin == -6
    assert op.storage((10,)).bits == 40 and op.storage((10,), theta).params == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 1}, "bits must be an integer ≥ 2, got 1"),
        ({"bits": 9}, "bits must be at most 8, got 9"),
        ({"bits": True}, "bits must be an integer"),
        ({"bits": 3, "emax": 1.5}, "emax must be an integer, got 1.5"),
        ({"bits": 3, "emax": 128}, "emax must be from -124 to 127"),
        ({"bits": 8, "emax": -1}, "emax must be from 0 to 127"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pow2(**kwargs)


def test_the_installed_plugin_is_in_the_default_registry():
    registry = lcdsl.default_registry()
    assert registry.operator("pow2") is Pow2
    info = registry.provider("pow2")
    assert (info.name, info.distribution, info.version) == ("pow2", "lcdsl-pow2", "0.1.0")
    assert registry.versions()["pow2"] == "0.1.0"


def test_blocking_the_plugin_removes_the_operator():
    assert "pow2" not in lcdsl.Registry.load(block=["pow2"]).operators


def test_pow2_from_spec_text():
    w = torch.tensor([[0.3, -0.9], [2.0, 0.05]])
    delta, theta, op = lcdsl.project("pow2(bits=3)", w)
    assert op == Pow2(bits=3)
    assert delta.tolist() == [[0.25, -1.0], [1.0, 0.0]]
    assert math.prod(delta.shape) == 4


# ---------------------------------------------------------------- deployed layers


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_the_deploy_hook_gives_a_compact_exact_linear(bits):
    torch.manual_seed(bits)
    report = check_deploy_layer(lcdsl_deploy_layer, Pow2(bits=bits), nn.Linear(256, 32))
    assert 3 * report.deployed_bytes < report.dense_bytes  # codes of ≤ 8 bits instead of 32-bit floats


def test_the_deploy_hook_gives_a_compact_exact_conv():
    torch.manual_seed(0)
    check_deploy_layer(lcdsl_deploy_layer, Pow2(bits=3, emax=-2), nn.Conv2d(3, 6, 3, padding=1))


def test_the_deploy_hook_leaves_other_operators_and_layers_alone():
    layer = nn.Linear(4, 2)
    quant = lcdsl.default_registry().operator("quant")(k=2)
    assert lcdsl_deploy_layer(module=layer, parameter="weight", operator=quant, theta={}, view=None, index=0) is None
    with pytest.raises(OperatorCheckError, match="not an nn.Module"):
        check_deploy_layer(lcdsl_deploy_layer, Pow2(bits=3), nn.Bilinear(3, 3, 2), torch.randn(2, 3))
