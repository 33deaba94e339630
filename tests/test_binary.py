"""``binarize`` and ``ternarize``: brute force over every sign pattern on tiny inputs, and properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcdsl.operators.base import Storage
from lcdsl.operators.binary import OPERATORS, Binarize, Ternarize

values32 = st.one_of(st.floats(-100, 100, width=32, allow_subnormal=False), st.sampled_from([-1.0, 0.0, 1.0, 2.0]))
"""Float32-exact values with repeats, zeros and equal magnitudes of both signs."""


def vectors(max_size: int = 40, min_size: int = 1) -> st.SearchStrategy[np.ndarray]:
    """float32 vectors."""
    return hnp.arrays(np.float32, st.integers(min_size, max_size), elements=values32)


def distortion(w: torch.Tensor, op: Binarize | Ternarize) -> float:
    out = op.decompress(op.project(w), tuple(w.shape))
    return float(((w.double() - out.double()) ** 2).sum())


def best_scaled(w: np.ndarray, patterns: list[tuple[int, ...]]) -> float:
    """min over the patterns t and c ≥ 0 of ‖w − c t‖² (c = max(0, w·t / t·t))."""
    w = w.astype(np.float64)
    best = float((w**2).sum())
    for t in patterns:
        t = np.array(t, dtype=np.float64)
        tt = (t * t).sum()
        if tt == 0:
            continue
        c = max(0.0, float(w @ t) / tt)
        best = min(best, float(((w - c * t) ** 2).sum()))
    return best


def test_registered() -> None:
    assert OPERATORS == (Binarize, Ternarize)
    assert Binarize.summary().startswith("argmin_θ") and Ternarize.summary().startswith("argmin")
    with pytest.raises(TypeError):
        Binarize(scale="yes")


def test_storage() -> None:
    assert Binarize().storage((10, 3)) == Storage(params=0, bits=30)
    assert Binarize(scale=True).storage((10,)) == Storage(params=1, bits=42)
    assert Ternarize().storage((10,)) == Storage(params=1, bits=52)


@given(x=vectors(8))
@example(x=np.array([0.0, -0.0, 1.0], np.float32))
def test_binarize_is_optimal_by_brute_force(x: np.ndarray) -> None:
    w = torch.from_numpy(x)
    patterns = list(itertools.product((-1, 1), repeat=x.size))
    unscaled = min(float(((x.astype(np.float64) - np.array(t)) ** 2).sum()) for t in patterns)
    assert np.isclose(distortion(w, Binarize()), unscaled, rtol=1e-9, atol=1e-9)
    assert np.isclose(distortion(w, Binarize(scale=True)), best_scaled(x, patterns), rtol=1e-6, atol=1e-6)


@given(x=vectors(8))
@example(x=np.array([1.0, -1.0, 1.0, 0.0], np.float32))
@example(x=np.array([0.0, 0.0], np.float32))
def test_ternarize_is_optimal_by_brute_force(x: np.ndarray) -> None:
    w = torch.from_numpy(x)
    patterns = list(itertools.product((-1, 0, 1), repeat=x.size))
    assert np.isclose(distortion(w, Ternarize()), best_scaled(x, patterns), rtol=1e-6, atol=1e-6)


@given(x=vectors(), dtype=st.sampled_from([torch.float32, torch.float64]))
@example(x=np.array([0.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0], np.float32), dtype=torch.float64)
def test_feasible_idempotent_pure(x: np.ndarray, dtype: torch.dtype) -> None:
    w = torch.from_numpy(x).to(dtype).reshape(-1, 1)
    before = w.clone()
    for op in (Binarize(), Binarize(scale=True), Ternarize()):
        theta = op.project(w)
        assert torch.equal(w, before)
        out = op.decompress(theta, tuple(w.shape))
        assert out.shape == w.shape and out.dtype == dtype
        allowed = {-1.0, 1.0} if isinstance(op, Binarize) else {-1.0, 0.0, 1.0}
        scale = float(theta.get("scale", torch.tensor(1.0)))
        assert scale >= 0
        assert set((out.double() / scale).unique().tolist()) <= allowed if scale > 0 else torch.all(out == 0)
        assert torch.equal(op.decompress(op.project(out), tuple(w.shape)), out)
    assert torch.all(Binarize().decompress(Binarize().project(w), tuple(w.shape))[w == 0] == 1)


@given(x=vectors(min_size=2), factor=st.sampled_from([0.25, 2.0, 4.0]), seed=st.integers(0, 2**16))
def test_scaled_forms_are_equivariant(x: np.ndarray, factor: float, seed: int) -> None:
    w = torch.from_numpy(x).double()
    perm = torch.randperm(w.numel(), generator=torch.Generator().manual_seed(seed))
    for op in (Binarize(scale=True), Ternarize()):
        base = distortion(w, op)
        assert np.isclose(distortion(w[perm], op), base, rtol=1e-9, atol=1e-9)
        assert np.isclose(distortion(w * factor, op), base * factor**2, rtol=1e-9, atol=1e-9)


@given(x=vectors(min_size=2), seed=st.integers(0, 2**16))
def test_ternarize_no_random_feasible_point_is_closer(x: np.ndarray, seed: int) -> None:
    w = torch.from_numpy(x).double()
    best = distortion(w, Ternarize())
    g = torch.Generator().manual_seed(seed)
    for _ in range(30):
        t = torch.randint(-1, 2, (w.numel(),), generator=g).double()
        c = float(torch.rand((), generator=g, dtype=torch.float64)) * float(w.abs().max())
        assert best <= float(((w - c * t) ** 2).sum()) * (1 + 1e-9) + 1e-9
