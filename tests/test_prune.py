"""prune: feasibility, idempotence, exact optimality, equivariance, structure, sizes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lcdsl.language.spec import Percent
from lcdsl.operators.base import Storage
from lcdsl.operators.prune import OPERATORS, Prune, project_l1_ball, top_k_mask

exact_floats = st.floats(min_value=-1e3, max_value=1e3, width=32, allow_subnormal=False)
"""Reals that float32 holds exactly, so float32 and float64 runs see the same numbers."""

dtypes = st.sampled_from([np.float32, np.float64])


@st.composite
def vectors(draw: st.DrawFn, min_size: int = 1, max_size: int = 64) -> torch.Tensor:
    """A 1-D float32 or float64 tensor with float32-exact entries."""
    n = draw(st.integers(min_size, max_size))
    a = draw(arrays(draw(dtypes), n, elements=exact_floats))
    return torch.from_numpy(a)


@st.composite
def vector_and_count(draw: st.DrawFn, max_size: int = 64) -> tuple[torch.Tensor, int]:
    """A vector and a count κ in 1..n."""
    w = draw(vectors(max_size=max_size))
    return w, draw(st.integers(1, w.numel()))


def dense(op: Prune, w: torch.Tensor, mu: float = 0.0) -> torch.Tensor:
    """Δ(P(w)) in w's shape, checking θ's form on the way."""
    theta = op.project(w, mu=mu)
    assert theta["indices"].dtype == torch.int32
    assert theta["values"].dtype == w.dtype
    if theta["indices"].numel() > 1:
        assert bool((theta["indices"][1:] > theta["indices"][:-1]).all())  # ascending, unique
    out = op.decompress(theta, tuple(w.shape))
    assert out.shape == w.shape and out.dtype == w.dtype
    return out


def sq(x: torch.Tensor) -> float:
    return float(x.double().square().sum())


# ------------------------------------------------------------------- l0


def reference_support(w: torch.Tensor, k: int) -> list[int]:
    """The κ indices by (|w| descending, index ascending)."""
    a = w.abs().tolist()
    return sorted(sorted(range(len(a)), key=lambda i: (-a[i], i))[:k])


@given(wk=vector_and_count())
@example(wk=(torch.tensor([1.0, -1.0, 1.0, 1.0]), 2))  # all tied: the lowest indices
@example(wk=(torch.tensor([0.0, -0.0, 0.0]), 1))  # ±0 tie
@example(wk=(torch.tensor([3.0, -3.0, 1.0, 3.0]), 2))
def test_l0_keeps_the_largest_with_lower_index_ties(wk: tuple[torch.Tensor, int]) -> None:
    w, k = wk
    theta = Prune(l0=k).project(w)
    assert theta["indices"].tolist() == reference_support(w, k)
    assert torch.equal(theta["values"], w[theta["indices"]])


@given(wk=vector_and_count(max_size=8))
def test_l0_is_optimal_over_every_support(wk: tuple[torch.Tensor, int]) -> None:
    w, k = wk
    ours = sq(w - dense(Prune(l0=k), w))
    w2 = w.double().square()
    best = min(float(w2.sum() - w2[list(s)].sum()) for s in itertools.combinations(range(w.numel()), k))
    assert ours <= best + 1e-9 * (1 + best)
    assert int((dense(Prune(l0=k), w) != 0).sum()) <= k


@given(wk=vector_and_count())
def test_l0_is_idempotent_and_does_not_mutate(wk: tuple[torch.Tensor, int]) -> None:
    w, k = wk
    before = w.clone()
    once = dense(Prune(l0=k), w)
    assert torch.equal(w, before)
    assert torch.equal(dense(Prune(l0=k), once), once)


@st.composite
def distinct_magnitudes(draw: st.DrawFn) -> torch.Tensor:
    """A vector whose magnitudes are pairwise distinct (ties break by position, which a
    permutation moves), with random signs."""
    n = draw(st.integers(1, 64))
    mags = draw(arrays(draw(dtypes), n, elements=st.floats(0, 1e3, width=32), unique=True))
    signs = draw(arrays(np.int8, n, elements=st.sampled_from([-1, 1])))
    return torch.from_numpy(mags * signs.astype(mags.dtype))


@given(w=distinct_magnitudes(), data=st.data())
def test_l0_is_permutation_equivariant(w: torch.Tensor, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, w.numel()))
    perm = torch.tensor(data.draw(st.permutations(range(w.numel()))))
    assert torch.equal(dense(Prune(l0=k), w[perm]), dense(Prune(l0=k), w)[perm])


@given(wk=vector_and_count(), c=st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_l0_commutes_with_positive_scaling(wk: tuple[torch.Tensor, int], c: float) -> None:
    w, k = wk
    assert torch.equal(dense(Prune(l0=k), c * w), c * dense(Prune(l0=k), w))


def test_top_k_mask_edges() -> None:
    s = torch.tensor([2.0, 5.0, 5.0, 1.0])
    assert top_k_mask(s, 0).tolist() == [False] * 4
    assert top_k_mask(s, 4).tolist() == [True] * 4
    assert top_k_mask(s, 1).tolist() == [False, True, False, False]
    assert top_k_mask(s, 3).tolist() == [True, True, True, False]


# ------------------------------------------------------------------- l1


def reference_tau(w: np.ndarray, radius: float) -> float:
    """The L1-ball threshold by bisection (float64): Σ max(|w| − τ, 0) = radius."""
    a = np.abs(w.astype(np.float64))
    if a.sum() <= radius:
        return 0.0
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.maximum(a - mid, 0).sum() > radius:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


radii = st.floats(min_value=1e-3, max_value=5e3)
"""L1-ball radii."""


def tol(w: torch.Tensor) -> float:
    """Absolute tolerance for values computed in w's dtype."""
    eps = torch.finfo(w.dtype).eps
    return 8 * eps * (1 + float(w.abs().sum()))


@given(w=vectors(), radius=radii)
@example(w=torch.tensor([1.0, 1.0, 1.0]), radius=1.0)
@example(w=torch.tensor([0.0, 0.0]), radius=1.0)
@example(w=torch.tensor([-2.0, 0.5]), radius=2.5)  # exactly on the sphere
def test_l1_feasible_and_matches_reference(w: torch.Tensor, radius: float) -> None:
    theta = dense(Prune(l1=radius), w)
    assert float(theta.double().abs().sum()) <= radius + tol(w)
    tau = reference_tau(w.numpy(), radius)
    expected = np.sign(w.double().numpy()) * np.maximum(np.abs(w.double().numpy()) - tau, 0)
    np.testing.assert_allclose(theta.double().numpy(), expected, rtol=0, atol=tol(w))


@given(w=vectors(), radius=radii)
def test_l1_kkt_common_threshold(w: torch.Tensor, radius: float) -> None:
    theta = dense(Prune(l1=radius), w).double()
    wd = w.double()
    if float(wd.abs().sum()) <= radius:
        assert torch.equal(theta, wd)
        return
    kept = theta != 0
    assert abs(float(theta.abs().sum()) - radius) <= tol(w)  # active constraint
    assert bool((torch.sign(theta[kept]) == torch.sign(wd[kept])).all())
    gaps = (wd.abs() - theta.abs())[kept]  # one common τ
    assert float(gaps.max() - gaps.min()) <= tol(w)
    tau = float(gaps.mean())
    dropped = wd[~kept].abs()
    assert dropped.numel() == 0 or float(dropped.max()) <= tau + tol(w)


@given(w=vectors(max_size=8), radius=radii, seed=st.integers(0, 2**16))
def test_l1_no_random_feasible_point_is_closer(w: torch.Tensor, radius: float, seed: int) -> None:
    ours = sq(w - dense(Prune(l1=radius), w))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(256, w.numel(), generator=g, dtype=torch.float64)
    z = z * (radius / z.abs().sum(1, keepdim=True)) * torch.rand(256, 1, generator=g, dtype=torch.float64)
    others = (w.double() - z).square().sum(1)
    assert float(others.min()) >= ours - tol(w) * (1 + math.sqrt(ours))


@given(w=vectors(), radius=radii, data=st.data())
def test_l1_idempotent_and_permutation_equivariant(w: torch.Tensor, radius: float, data: st.DataObject) -> None:
    once = dense(Prune(l1=radius), w)
    torch.testing.assert_close(dense(Prune(l1=radius), once), once, rtol=0, atol=tol(w))
    perm = torch.tensor(data.draw(st.permutations(range(w.numel()))))
    assert torch.equal(dense(Prune(l1=radius), w[perm]), once[perm])


def test_project_l1_ball_inside_is_identity() -> None:
    w = torch.tensor([0.5, -0.25, 0.0])
    assert torch.equal(project_l1_ball(w, 1.0), w)


# ------------------------------------------------------------- penalties

alphas = st.floats(min_value=1e-4, max_value=1e3)
mus = st.floats(min_value=1e-4, max_value=1e4)


@given(w=vectors(), alpha=alphas, mu=mus)
def test_l0_penalty_is_elementwise_optimal(w: torch.Tensor, alpha: float, mu: float) -> None:
    theta = dense(Prune(l0_penalty=alpha), w, mu)
    lam = 2 * alpha / mu
    ours = sq(w - theta) + lam * int((theta != 0).sum())
    best = float(torch.minimum(w.double().square(), torch.full_like(w, lam, dtype=torch.float64)).sum())
    assert ours <= best * (1 + 1e-12) + 1e-12
    assert bool(((theta == w) | (theta == 0)).all())  # hard threshold: kept values are untouched
    assert torch.equal(dense(Prune(l0_penalty=alpha), theta, mu), theta)  # idempotent


@given(w=vectors(), alpha=alphas, mu=mus, seed=st.integers(0, 2**16))
def test_l1_penalty_soft_threshold_is_optimal(w: torch.Tensor, alpha: float, mu: float, seed: int) -> None:
    theta = dense(Prune(l1_penalty=alpha), w, mu).double()
    t = alpha / mu
    wd = w.double()
    expected = torch.sign(wd) * torch.clamp(wd.abs() - t, min=0)
    torch.testing.assert_close(theta, expected, rtol=0, atol=tol(w) * (1 + t))

    def objective(x: torch.Tensor) -> torch.Tensor:  # (..., n) → (...)
        return (wd - x).square().sum(-1) + 2 * t * x.abs().sum(-1)

    g = torch.Generator().manual_seed(seed)
    nearby = expected + 0.1 * torch.randn(64, w.numel(), generator=g, dtype=torch.float64)
    assert float(objective(nearby).min()) >= float(objective(expected)) * (1 - 1e-12)


@pytest.mark.parametrize("form", ["l0_penalty", "l1_penalty"])
def test_penalties_keep_nothing_at_mu_zero(form: str) -> None:
    # μ = 0 is the limit μ → 0⁺: the threshold √(2α/μ) (or α/μ) is infinite, the cost wins
    w = torch.tensor([0.0, -1e-6, 3.0, -2e6])
    op = Prune(**{form: 1e-12})
    assert torch.equal(dense(op, w, mu=0.0), torch.zeros(4))
    assert op.storage((4,)) is None
    assert op.storage((4,), op.project(w, mu=0.0)) == Storage(params=0, bits=0)
    with pytest.raises(ValueError, match="μ must be ≥ 0"):
        op.project(w, mu=-1.0)


@given(w=vectors(), alpha=alphas, mu=mus)
@example(w=torch.tensor([1.0, -2.0, 0.5]), alpha=1.0, mu=1.0)
def test_penalties_keep_more_as_mu_grows(w: torch.Tensor, alpha: float, mu: float) -> None:
    # exact minimisers of D + (2α/μ)·C: D never grows and C never falls as μ grows, from μ = 0
    for form in ("l0_penalty", "l1_penalty"):
        op = Prune(**{form: alpha})
        kept = [dense(op, w, m) for m in (0.0, mu, 4 * mu)]
        d = [sq(w - k) for k in kept]
        assert d[0] >= d[1] - tol(w) and d[1] >= d[2] - tol(w)
        assert [int((k != 0).sum()) for k in kept] == sorted(int((k != 0).sum()) for k in kept)


# ------------------------------------------------------------ structured


@st.composite
def weights(draw: st.DrawFn) -> torch.Tensor:
    """A 2-D (Linear) or 4-D (conv) weight with at most 6 groups along each grouped dimension."""
    shape = draw(st.sampled_from([(5, 3), (3, 6), (4, 2, 2, 2), (2, 5, 1, 3), (6, 1)]))
    return torch.from_numpy(draw(arrays(draw(dtypes), shape, elements=exact_floats)))


@given(w=weights(), by=st.sampled_from(["rows", "filters", "channels"]), data=st.data())
@example(w=torch.ones(4, 2, 2, 2), by="channels", data=None)
def test_structured_keeps_best_groups(w: torch.Tensor, by: str, data: st.DataObject | None) -> None:
    dim = 1 if by == "channels" else 0
    groups = w.shape[dim]
    k = data.draw(st.integers(1, groups)) if data is not None else 1
    op = Prune(l0=k, by=by)
    assert op.view == "tensor"
    before = w.clone()
    theta = op.project(w)
    assert torch.equal(w, before)
    out = op.decompress(theta, tuple(w.shape))
    assert out.shape == w.shape and out.dtype == w.dtype
    assert theta["indices"].tolist() == sorted(theta["indices"].tolist()) and theta["indices"].numel() == k
    # exhaustive: every choice of k groups
    norms = w.double().movedim(dim, 0).reshape(groups, -1).square().sum(1)
    best = min(float(norms.sum() - norms[list(s)].sum()) for s in itertools.combinations(range(groups), k))
    assert sq(w - out) <= best + 1e-9 * (1 + best)
    # ties go to the lower index, like the unstructured form over group norms
    assert theta["indices"].tolist() == reference_support(norms, k)
    assert torch.equal(op.decompress(op.project(out), tuple(w.shape)), out)  # idempotent
    kept = theta["values"].numel()
    assert op.storage(tuple(w.shape), theta) == Storage(params=kept, bits=32 * kept + groups)
    assert op.storage(tuple(w.shape)) == op.storage(tuple(w.shape), theta)


def test_rows_and_filters_agree_and_channels_are_columns() -> None:
    w = torch.tensor([[1.0, 0.0, 9.0], [2.0, 2.0, 0.0]])
    rows = Prune(l0=1, by="rows").project(w)
    assert rows["indices"].tolist() == [0]
    assert torch.equal(Prune(l0=1, by="filters").project(w)["values"], rows["values"])
    cols = Prune(l0=1, by="channels")
    assert torch.equal(cols.decompress(cols.project(w), (2, 3)), torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 0.0]]))


def test_structured_percent_counts_groups() -> None:
    op = Prune(l0=Percent(50), by="channels").resolve((8, 6, 3, 3))
    assert op.l0 == 3
    assert Prune(l0=0.25, by="rows").resolve((8, 6)).l0 == 2
    with pytest.raises(ValueError, match="2 or more dimensions"):
        Prune(l0=1, by="rows").resolve((8,))
    with pytest.raises(ValueError, match="more than the 6"):
        Prune(l0=7, by="channels").resolve((8, 6, 3, 3))


# ------------------------------------------------------- form and sizes


@pytest.mark.parametrize(
    ("kwargs", "form"),
    [({"l0": 3}, "l0"), ({"l1": 2.0}, "l1"), ({"l0_penalty": 0.1}, "l0_penalty"), ({"l1_penalty": 0.1}, "l1_penalty")],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_form_keeps_shape_dtype_and_input(kwargs: dict, form: str, dtype: torch.dtype) -> None:
    w = torch.linspace(-3, 3, 24, dtype=dtype)
    before = w.clone()
    op = Prune(**kwargs)
    assert op.view == "vector"
    theta = op.project(w, mu=1.0)
    assert torch.equal(w, before)
    assert theta["values"].dtype == dtype and theta["indices"].device == w.device
    assert op.decompress(theta, (24,)).shape == (24,)
    # the engine decompresses to a vector of a task built from a (4, 6) weight
    assert op.decompress(theta, (4, 6)).shape == (4, 6)


def test_l0_storage_prediction_and_resolution() -> None:
    op = Prune(l0=Percent(5)).resolve((266_200,))
    assert op.l0 == 13_310
    idx = math.ceil(math.log2(266_200))
    assert op.storage((266_200,)) == Storage(params=13_310, bits=13_310 * 32 + min(266_200, 13_310 * idx))
    assert Prune(l0=60).storage((100,)) == Storage(params=60, bits=60 * 32 + 100)  # bitmask is cheaper
    assert Prune(l1=1.0).storage((100,)) is None
    assert Prune(l0=0.5).project(torch.ones(4))["indices"].tolist() == [0, 1]  # resolved on the fly
    with pytest.raises(ValueError, match="more than the 100"):
        Prune(l0=101).resolve((100,))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({}, ValueError, "exactly one of l0, l1, l0_penalty, l1_penalty; got none"),
        ({"l0": 3, "l1": 1.0}, ValueError, "got l0, l1"),
        ({"l0": 1.5}, ValueError, "l0=1.5 is ambiguous"),
        ({"l0": Percent(150)}, ValueError, "150%"),
        ({"l0": True}, ValueError, "not an amount"),
        ({"l1": 0}, ValueError, "l1 must be a positive number"),
        ({"l1": Percent(5)}, TypeError, "l1 must be a positive number"),
        ({"l0_penalty": -1.0}, ValueError, "l0_penalty must be a positive number"),
        ({"l1_penalty": float("inf")}, ValueError, "l1_penalty must be a positive number"),
        ({"l0": 3, "by": "cols"}, ValueError, "by must be one of weights, rows, filters, channels"),
        ({"l1": 2.0, "by": "rows"}, ValueError, "by=rows needs l0"),
    ],
)
def test_invalid_arguments(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        Prune(**kwargs)


def test_exported() -> None:
    assert OPERATORS == (Prune,)
    assert Prune.name == "prune"
    assert Prune.summary().startswith("argmin_θ ‖w − θ‖²")
