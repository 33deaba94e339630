"""Exact 1-D k-means: brute force on tiny inputs, both backends, both methods, the split path,
the Lagrangian search's splice and fallback, duplicates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcdsl.operators.kmeans1d import cpu as _kmeans1d_cpu
from lcdsl.operators.kmeans1d import dp as _kmeans1d
from lcdsl.operators.kmeans1d.dp import kmeans1d

finite32 = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)
"""Float32-exact values of moderate size (so squared errors stay exact enough in float64)."""

few_values = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
"""A handful of values: inputs with many ties and few distinct values."""


def vectors(max_size: int, min_size: int = 1) -> st.SearchStrategy[np.ndarray]:
    """float32 vectors mixing arbitrary values and repeated small ones."""
    return hnp.arrays(np.float32, st.integers(min_size, max_size), elements=st.one_of(finite32, few_values))


def objective(w: torch.Tensor, codebook: torch.Tensor, assignments: torch.Tensor) -> float:
    """``Σ (w − codebook[assignments])²`` in float64."""
    return float(((w.double().reshape(-1) - codebook.double()[assignments]) ** 2).sum())


def brute_force(x: np.ndarray, k: int) -> float:
    """The least k-means objective over every contiguous partition of sorted ``x`` into ≤ k groups."""
    xs = np.sort(x.astype(np.float64))
    n = xs.size
    best = np.inf
    for groups in range(1, min(k, n) + 1):
        for cuts in itertools.combinations(range(1, n), groups - 1):
            edges = (0, *cuts, n)
            cost = sum(((xs[a:b] - xs[a:b].mean()) ** 2).sum() for a, b in zip(edges[:-1], edges[1:]))
            best = min(best, cost)
    return best


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


solvers = st.sampled_from([("numba", "penalty"), ("numba", "dp"), ("torch", "dp")])
"""(backend, method) pairs: the Lagrangian search runs on the compiled kernels only."""


@given(x=vectors(9), k=st.integers(1, 6), solver=solvers)
@example(x=np.array([0.0, 1.0, 100.0, 101.0], np.float32), k=3, solver=("numba", "penalty"))
@example(x=np.array([0.0, 1.0, 100.0, 101.0], np.float32), k=3, solver=("numba", "dp"))
@example(x=np.array([0.0, 1.0, 100.0, 101.0], np.float32), k=3, solver=("torch", "dp"))
@example(x=np.array([5.0, 5.0, 5.0], np.float32), k=2, solver=("numba", "penalty"))
@example(x=np.array([0.0, 1.0, 2.0, 3.0], np.float32), k=3, solver=("numba", "penalty"))
def test_matches_brute_force(x: np.ndarray, k: int, solver: tuple[str, str]) -> None:
    w = torch.from_numpy(x)
    backend, method = solver
    codebook, assignments = kmeans1d(w, k, backend=backend, method=method)
    assert codebook.shape == (k,) and assignments.shape == (x.size,)
    assert close(objective(w, codebook, assignments), brute_force(x, k), rel=1e-5)


@given(x=vectors(200, min_size=2), k=st.integers(2, 12), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_backends_agree(x: np.ndarray, k: int, dtype: torch.dtype) -> None:
    w = torch.from_numpy(x).to(dtype)
    cb_n, a_n = kmeans1d(w, k, backend="numba")
    cb_t, a_t = kmeans1d(w, k, backend="torch")
    assert close(objective(w, cb_n, a_n), objective(w, cb_t, a_t), rel=1e-9)
    assert cb_n.dtype == cb_t.dtype == dtype


@given(x=vectors(120, min_size=2), k=st.integers(2, 9), backend=st.sampled_from(["numba", "torch"]))
def test_split_path_is_exact(x: np.ndarray, k: int, backend: str) -> None:
    """With no room for the argmin table, every problem is split at its middle cluster: same optimum."""
    w = torch.from_numpy(x)
    whole = objective(w, *kmeans1d(w, k, backend=backend, method="dp"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kmeans1d, "TABLE_BUDGET", 0)
        split = objective(w, *kmeans1d(w, k, backend=backend, method="dp"))
    assert close(whole, split, rel=1e-9)


@given(x=vectors(300, min_size=20), k=st.integers(2, 16))
def test_never_worse_than_lloyd_from_quantiles(x: np.ndarray, k: int) -> None:
    """Lloyd's iterations from any start only reach a local optimum; ours is at or below it."""
    w = torch.from_numpy(x).double()
    ours = objective(w, *kmeans1d(w, k))
    centres = torch.quantile(w, torch.linspace(0, 1, k, dtype=torch.float64))
    for _ in range(30):
        z = (w[:, None] - centres[None, :]).abs().argmin(1)
        for c in range(k):
            if (z == c).any():
                centres[c] = w[z == c].mean()
    z = (w[:, None] - centres[None, :]).abs().argmin(1)
    assert ours <= objective(w, centres, z) * (1 + 1e-9) + 1e-9


def test_fewer_distinct_values_than_k_is_lossless() -> None:
    w = torch.tensor([3.0, -1.0, 3.0, 3.0, 0.1], dtype=torch.float64)
    codebook, assignments = kmeans1d(w, 8)
    assert codebook.shape == (8,)
    assert torch.equal(codebook[assignments], w)


def test_large_input_known_optimum() -> None:
    """Four tight, well separated clumps: the optimum is the clumps themselves."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-30.0, -10.0, 5.0, 40.0], dtype=torch.float64)
    labels = torch.randint(0, 4, (20000,), generator=g)
    w = centres[labels] + 0.01 * torch.randn(20000, generator=g, dtype=torch.float64)
    codebook, assignments = kmeans1d(w, 4)
    assert torch.equal(codebook[assignments].round(), centres[labels])
    expected = sum(float(((w[labels == c] - w[labels == c].mean()) ** 2).sum()) for c in range(4))
    assert close(objective(w, codebook, assignments), expected, rel=1e-9)


def test_rejects_bad_backend_and_empty_input() -> None:
    with pytest.raises(ValueError, match="backend"):
        kmeans1d(torch.ones(3), 2, backend="gpu")
    with pytest.raises(ValueError, match="empty"):
        kmeans1d(torch.ones(0), 2)
    with pytest.raises(ValueError, match="method"):
        kmeans1d(torch.ones(3), 2, method="lloyd")
    with pytest.raises(ValueError, match="penalty"):
        kmeans1d(torch.ones(3), 2, backend="torch", method="penalty")


def test_parallel_layers_match_torch_path() -> None:
    """Layers with ≥ 2**14 end points run their subtrees in parallel: same optimum as torch."""
    g = torch.Generator().manual_seed(3)
    w = torch.cat([torch.randn(30000, generator=g), torch.randint(-3, 4, (10000,), generator=g).float()])
    for k in (3, 5):
        ours = objective(w, *kmeans1d(w, k, backend="numba", method="dp"))
        reference = objective(w, *kmeans1d(w, k, backend="torch"))
        assert close(ours, reference, rel=1e-9)


@given(x=vectors(300, min_size=3), data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_penalty_matches_dp(x: np.ndarray, data: st.DataObject, dtype: torch.dtype) -> None:
    """The Lagrangian search reaches the DP's optimum, for k anywhere up to the distinct count."""
    w = torch.from_numpy(x).to(dtype)
    u = torch.unique(w).numel()
    k = data.draw(st.one_of(st.integers(2, 40), st.integers(max(2, u - 3), u + 1)), label="k")
    penalty = kmeans1d(w, k, method="penalty")
    dp = kmeans1d(w, k, method="dp")
    assert penalty[0].shape == (k,) and penalty[0].dtype == dtype
    assert close(objective(w, *penalty), objective(w, *dp), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_penalty_matches_dp_on_every_k_with_ties(seed: int) -> None:
    """Few distinct values with many repeats: hulls with collinear runs, met by splicing."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 5 + 6 * seed, (200,), generator=g).float() ** (1 + seed % 2)
    u = torch.unique(w).numel()
    for k in range(2, u + 1):
        penalty = objective(w, *kmeans1d(w, k, method="penalty"))
        assert close(penalty, objective(w, *kmeans1d(w, k, method="dp")), rel=1e-9)


def test_collinear_hull_is_spliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """For 0, 1, 2, 3 the distortions for 2, 3, 4 clusters (1, 1/2, 0) are collinear: no penalty
    makes 3 clusters the unique optimum, so the 3-partition comes from splicing two others."""
    spliced = []
    splice = _kmeans1d_cpu.splice

    def counting_splice(P: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
        spliced.append((P.size - 1, Q.size - 1))
        return splice(P, Q, k)

    monkeypatch.setattr(_kmeans1d_cpu, "splice", counting_splice)
    w = torch.tensor([0.0, 1.0, 2.0, 3.0])
    codebook, assignments = kmeans1d(w, 3, method="penalty")
    assert spliced and all(p < 3 < q for p, q in spliced)
    assert close(objective(w, codebook, assignments), 0.5, rel=1e-12)


@pytest.mark.parametrize("passes", [0, 1, 2])
def test_pass_budget_falls_back_to_dp(monkeypatch: pytest.MonkeyPatch, passes: int) -> None:
    """When the search is cut short, the DP answers: same optimum, exactly k clusters."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3000, generator=g)
    monkeypatch.setattr(_kmeans1d, "PENALTY_MAX_PASSES", passes)
    S1, S2, W = (t.numpy() for t in _kmeans1d.prefix_sums(w.sort().values, torch.ones(3000)))
    assert _kmeans1d_cpu.lagrangian(S1, S2, W, 3000, 37, passes) is None
    ours = kmeans1d(w, 37, method="penalty")
    assert torch.unique(ours[1]).numel() == 37
    assert close(objective(w, *ours), objective(w, *kmeans1d(w, 37, method="dp")), rel=1e-9)


def test_penalty_matches_dp_on_larger_inputs() -> None:
    """Tens of thousands of points, with heavy duplicates, up to hundreds of clusters."""
    g = torch.Generator().manual_seed(11)
    w = torch.cat([torch.randn(20000, generator=g), torch.randint(-3, 4, (5000,), generator=g).float() * 0.5])
    for k in (3, 16, 200):
        penalty = objective(w, *kmeans1d(w, k, method="penalty"))
        assert close(penalty, objective(w, *kmeans1d(w, k, method="dp")), rel=1e-9)
