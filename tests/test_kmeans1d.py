"""Exact 1-D k-means: brute force on tiny inputs, both backends, the split path, duplicates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcdsl.operators import _kmeans1d
from lcdsl.operators._kmeans1d import kmeans1d

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


@given(x=vectors(9), k=st.integers(1, 6), backend=st.sampled_from(["numba", "torch"]))
@example(x=np.array([0.0, 1.0, 100.0, 101.0], np.float32), k=3, backend="numba")
@example(x=np.array([0.0, 1.0, 100.0, 101.0], np.float32), k=3, backend="torch")
@example(x=np.array([5.0, 5.0, 5.0], np.float32), k=2, backend="numba")
def test_matches_brute_force(x: np.ndarray, k: int, backend: str) -> None:
    w = torch.from_numpy(x)
    codebook, assignments = kmeans1d(w, k, backend=backend)
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
    whole = objective(w, *kmeans1d(w, k, backend=backend))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kmeans1d, "TABLE_BUDGET", 0)
        split = objective(w, *kmeans1d(w, k, backend=backend))
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


def test_parallel_layers_match_torch_path() -> None:
    """Layers with ≥ 2**14 end points run their subtrees in parallel: same optimum as torch."""
    g = torch.Generator().manual_seed(3)
    w = torch.cat([torch.randn(30000, generator=g), torch.randint(-3, 4, (10000,), generator=g).float()])
    for k in (3, 5):
        ours = objective(w, *kmeans1d(w, k, backend="numba"))
        reference = objective(w, *kmeans1d(w, k, backend="torch"))
        assert close(ours, reference, rel=1e-9)
