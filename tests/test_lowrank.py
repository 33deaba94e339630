"""lowrank: truncated SVD (Eckart–Young) and exact rank selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lcdsl.operators.base import Storage
from lcdsl.operators.lowrank import OPERATORS, LowRank, select_rank

exact_floats = st.floats(min_value=-100, max_value=100, width=32, allow_subnormal=False)
"""Reals that float32 holds exactly."""


@st.composite
def matrices(draw: st.DrawFn, max_side: int = 7) -> torch.Tensor:
    """An (m, n) float32 or float64 matrix with float32-exact entries."""
    m, n = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return torch.from_numpy(draw(arrays(dtype, (m, n), elements=exact_floats)))


@st.composite
def matrix_and_rank(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    """A matrix and a rank 1..min(m, n)."""
    w = draw(matrices())
    return w, draw(st.integers(1, min(w.shape)))


def tol(w: torch.Tensor) -> float:
    """Absolute tolerance on squared distances for an SVD in w's dtype."""
    eps = torch.finfo(w.dtype).eps
    return 64 * eps * (1 + float(w.double().square().sum()))


def approx(op: LowRank, w: torch.Tensor, mu: float = 0.0) -> torch.Tensor:
    theta = op.project(w, mu=mu)
    r = theta["V"].shape[0]
    assert theta["U"].shape == (w.shape[0], r) and theta["V"].shape == (r, w.shape[1])
    assert theta["U"].dtype == w.dtype and theta["V"].dtype == w.dtype
    out = op.decompress(theta, tuple(w.shape))
    assert out.shape == w.shape and out.dtype == w.dtype
    return out


def sq(x: torch.Tensor) -> float:
    return float(x.double().square().sum())


@given(wr=matrix_and_rank())
@example(wr=(torch.zeros(3, 2), 1))
@example(wr=(torch.eye(3), 2))  # repeated singular values
def test_truncated_svd_reaches_the_eckart_young_tail(wr: tuple[torch.Tensor, int]) -> None:
    w, r = wr
    before = w.clone()
    out = approx(LowRank(rank=r), w)
    assert torch.equal(w, before)
    s = np.linalg.svd(w.double().numpy(), compute_uv=False)
    tail = float(np.sum(s[r:] ** 2))
    assert abs(sq(w - out) - tail) <= tol(w)
    assert np.linalg.matrix_rank(out.double().numpy(), tol=1e-6 * (1 + s[0])) <= r


@given(wr=matrix_and_rank(), seed=st.integers(0, 2**16))
def test_no_random_rank_r_matrix_is_closer(wr: tuple[torch.Tensor, int], seed: int) -> None:
    w, r = wr
    ours = sq(w - approx(LowRank(rank=r), w))
    g = torch.Generator().manual_seed(seed)
    m, n = w.shape
    scale = float(w.double().abs().max()) + 1
    a = torch.randn(128, m, r, generator=g, dtype=torch.float64) * scale
    b = torch.randn(128, r, n, generator=g, dtype=torch.float64)
    random = ((w.double() - a @ b) ** 2).sum((1, 2))
    # and small perturbations of our own factors
    theta = LowRank(rank=r).project(w.double())
    u = theta["U"] + 1e-2 * scale * torch.randn(128, m, r, generator=g, dtype=torch.float64)
    v = theta["V"] + 1e-2 * torch.randn(128, r, n, generator=g, dtype=torch.float64)
    nearby = ((w.double() - u @ v) ** 2).sum((1, 2))
    assert float(torch.minimum(random.min(), nearby.min())) >= ours - tol(w)


@given(wr=matrix_and_rank(), c=st.sampled_from([0.25, 0.5, 3.0, 8.0]))
def test_idempotent_and_scaling_equivariant(wr: tuple[torch.Tensor, int], c: float) -> None:
    w, r = wr
    op = LowRank(rank=r)
    once = approx(op, w)
    torch.testing.assert_close(approx(op, once), once, rtol=0, atol=tol(w) ** 0.5)
    torch.testing.assert_close(approx(op, c * w), c * once, rtol=0, atol=c * tol(w) ** 0.5)


@given(w=matrices(), alpha=st.floats(1e-4, 1e2), mu=st.floats(1e-3, 1e3))
@example(w=torch.eye(3), alpha=1.0, mu=1.0)
@example(w=torch.eye(3), alpha=1e-9, mu=0.0)  # μ → 0⁺: the cost alone, rank 0
def test_rank_selection_is_exact_over_every_rank(w: torch.Tensor, alpha: float, mu: float) -> None:
    m, n = w.shape
    s = np.linalg.svd(w.double().numpy(), compute_uv=False)
    objective = [alpha * r * (m + n) + mu / 2 * float(np.sum(s[r:] ** 2)) for r in range(len(s) + 1)]
    for cost in ("storage", "flops"):
        op = LowRank(alpha=alpha, cost=cost)
        theta = op.project(w, mu=mu)
        r = theta["V"].shape[0]
        assert objective[r] <= min(objective) + mu * tol(w)
        # and the representation is the truncated SVD of that rank
        tail = sq(w - op.decompress(theta, (m, n)))
        assert abs(tail - float(np.sum(s[r:] ** 2))) <= tol(w)
        assert op.storage((m, n), theta) == Storage(params=r * (m + n), bits=32 * r * (m + n))


def test_rank_selection_at_mu_zero_is_rank_zero_and_picks_smallest_on_ties() -> None:
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    op = LowRank(alpha=1e-9)  # however cheap a rank, μ → 0⁺ lets the cost win
    theta = op.project(w, mu=0.0)
    assert theta["U"].shape == (3, 0) and theta["V"].shape == (0, 3)
    assert torch.equal(op.decompress(theta, (3, 3)), torch.zeros(3, 3))
    assert op.storage((3, 3), theta) == Storage(params=0, bits=0)
    with pytest.raises(ValueError, match="μ must be ≥ 0"):
        op.project(w, mu=-1.0)
    # α·6r vs μ/2·tail: with μ = 2, rank 1 costs 6α + 5, rank 0 costs 14; at α = 1.5 both are 14
    assert select_rank(torch.tensor([3.0, 2.0, 1.0]), 3, 3, alpha=1.5, mu=2.0) == 0
    assert select_rank(torch.tensor([3.0, 2.0, 1.0]), 3, 3, alpha=1.0, mu=2.0) == 1
    assert select_rank(torch.tensor([3.0, 2.0, 1.0]), 3, 3, alpha=1e-9, mu=2.0) == 3


@given(w=matrices(), alpha=st.floats(1e-4, 1e2), mu=st.floats(1e-3, 1e3))
def test_rank_selection_keeps_more_as_mu_grows(w: torch.Tensor, alpha: float, mu: float) -> None:
    # exact minimisers of tail + (2α/μ)·cost: the rank never falls and the tail never grows with μ
    op = LowRank(alpha=alpha)
    thetas = [op.project(w, mu=m) for m in (0.0, mu, 4 * mu)]
    ranks = [t["V"].shape[0] for t in thetas]
    assert ranks == sorted(ranks) and ranks[0] == 0
    tails = [sq(w - op.decompress(t, tuple(w.shape))) for t in thetas]
    assert tails[0] >= tails[1] - tol(w) and tails[1] >= tails[2] - tol(w)


def test_deterministic_and_sign_canonical() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=g)
    a, b = LowRank(rank=5).project(w), LowRank(rank=5).project(w.clone())
    assert torch.equal(a["U"], b["U"]) and torch.equal(a["V"], b["V"])
    u = a["U"]
    assert bool((u.gather(0, u.abs().argmax(0, keepdim=True)) > 0).all())
    neg = LowRank(rank=5).project(-w)  # the same canonical factors up to the sign of Δ
    torch.testing.assert_close(neg["U"] @ neg["V"], -(u @ a["V"]))


def test_low_precision_input_keeps_its_dtype() -> None:
    w = torch.randn(6, 4).to(torch.bfloat16)
    theta = LowRank(rank=2).project(w)
    assert theta["U"].dtype == torch.bfloat16
    assert LowRank(rank=2).decompress(theta, (6, 4)).dtype == torch.bfloat16


def test_conv_matrix_view_and_sizes() -> None:
    op = LowRank(rank=4)
    assert op.view == "matrix"
    assert op.resolve((16, 72)) is op
    assert op.storage((16, 72)) == Storage(params=4 * 88, bits=32 * 4 * 88)
    assert LowRank(alpha=1e-3).storage((16, 72)) is None
    w = torch.randn(16, 8, 3, 3).reshape(16, -1)  # (out, in·kh·kw), as the engine hands it
    assert op.decompress(op.project(w), (16, 72)).shape == (16, 72)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({}, ValueError, "exactly one of rank, alpha"),
        ({"rank": 3, "alpha": 1.0}, ValueError, "exactly one of rank, alpha"),
        ({"rank": 0}, ValueError, "rank must be an integer ≥ 1, got 0"),
        ({"rank": 2.5}, ValueError, "rank must be an integer ≥ 1, got 2.5"),
        ({"rank": True}, ValueError, "rank must be an integer ≥ 1"),
        ({"alpha": 0.0}, ValueError, "alpha must be a positive number"),
        ({"alpha": "big"}, TypeError, "alpha must be a positive number"),
        ({"alpha": 1.0, "cost": "time"}, ValueError, "cost must be one of storage, flops"),
    ],
)
def test_invalid_arguments(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        LowRank(**kwargs)


def test_resolve_rejects_ranks_above_the_smaller_side_and_non_matrices() -> None:
    with pytest.raises(ValueError, match=r"rank=11 is above min\(m, n\) = 10 of a 10×784 matrix"):
        LowRank(rank=11).resolve((10, 784))
    with pytest.raises(ValueError, match="needs a matrix"):
        LowRank(rank=1).resolve((10,))
    with pytest.raises(ValueError, match="rank=3 is above"):
        LowRank(rank=3).project(torch.ones(2, 5))


def test_exported() -> None:
    assert OPERATORS == (LowRank,)
    assert LowRank.summary().startswith("argmin_{U,V} ‖W − UV‖²")
