"""``quant``: validation, feasibility, idempotence, optimality, equivariance, storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcdsl.operators.base import Storage
from lcdsl.operators.quant import OPERATORS, Quant

values32 = st.one_of(
    st.floats(-100, 100, width=32, allow_subnormal=False), st.sampled_from([-1.0, 0.0, 0.25, 2.0])
)
"""Float32-exact values, with a few repeated ones so ties and duplicates occur."""


def vectors(max_size: int = 60, min_size: int = 1) -> st.SearchStrategy[np.ndarray]:
    """float32 vectors of ``min_size … max_size`` entries."""
    return hnp.arrays(np.float32, st.integers(min_size, max_size), elements=values32)


def distortion(w: torch.Tensor, op: Quant) -> float:
    out = op.decompress(op.project(w), tuple(w.shape))
    return float(((w.double() - out.double()) ** 2).sum())


def test_registered() -> None:
    assert OPERATORS == (Quant,) and Quant.name == "quant"
    assert Quant.summary().startswith("argmin_θ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 1}, "k must be an integer ≥ 2, got 1"),
        ({"k": 2.5}, "k must be an integer ≥ 2"),
        ({"k": True}, "k must be an integer ≥ 2"),
        ({"bits": 0}, "bits must be an integer ≥ 1, got 0"),
        ({"codebook": []}, "at least one"),
        ({"codebook": [1.0, 1]}, "distinct"),
        ({"codebook": [float("nan")]}, "finite"),
        ({}, "exactly one of k, bits, codebook; got none"),
        ({"k": 4, "bits": 2}, "exactly one of k, bits, codebook; got k and bits"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Quant(**kwargs)


def test_codebook_must_be_numbers() -> None:
    with pytest.raises(TypeError, match="list of numbers"):
        Quant(codebook=["a"])
    assert Quant(codebook=[1, -2]).codebook == (1.0, -2.0)
    assert Quant(bits=3).size == 8


def test_storage() -> None:
    assert Quant(k=4).storage((1000,)) == Storage(params=4, bits=32 * 4 + 2 * 1000)
    assert Quant(bits=3).storage((10,)) == Storage(params=8, bits=32 * 8 + 30)
    assert Quant(k=5).storage((10,)) == Storage(params=5, bits=32 * 5 + 30)
    assert Quant(codebook=[0.0, 1.0, 2.0]).storage((10,)) == Storage(params=0, bits=20)
    assert Quant(codebook=[0.0]).storage((10,)) == Storage(params=0, bits=0)


@given(x=vectors(), k=st.integers(2, 8), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_adaptive_feasible_idempotent_and_pure(x: np.ndarray, k: int, dtype: torch.dtype) -> None:
    op = Quant(k=k)
    w = torch.from_numpy(x).to(dtype)
    before = w.clone()
    theta = op.project(w)
    assert torch.equal(w, before)  # input not mutated
    assert theta["codebook"].shape == (k,) and theta["codebook"].dtype == dtype
    assert theta["assignments"].shape == w.shape and not theta["assignments"].is_floating_point()
    out = op.decompress(theta, tuple(w.shape))
    assert out.shape == w.shape and out.dtype == dtype
    assert torch.unique(out).numel() <= k
    assert torch.isin(out, theta["codebook"]).all()
    again = op.decompress(op.project(out), tuple(w.shape))
    assert torch.equal(again, out)


@given(x=vectors(min_size=2), k=st.integers(2, 6))
@example(x=np.array([0.0, 1.0, 2.0, 3.0], np.float32), k=2)
def test_adaptive_necessary_conditions(x: np.ndarray, k: int) -> None:
    """Each value sits at a nearest centroid; each used centroid is its cluster's mean."""
    w = torch.from_numpy(x).double()
    theta = Quant(k=k).project(w)
    codebook, z = theta["codebook"], theta["assignments"].long()  # a uint8 index would read as a mask
    gaps = (w[:, None] - codebook[None, :]) ** 2  # (n, k)
    assert torch.all(gaps[torch.arange(w.numel()), z] <= gaps.min(1).values * (1 + 1e-12) + 1e-12)
    for c in z.unique():
        assert torch.allclose(codebook[c], w[z == c].mean(), rtol=1e-12, atol=1e-12)


@given(x=vectors(min_size=2), k=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_no_random_feasible_point_is_closer(x: np.ndarray, k: int, seed: int) -> None:
    w = torch.from_numpy(x).double()
    best = distortion(w, Quant(k=k))
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        codebook = w[torch.randint(0, w.numel(), (k,), generator=g)] + torch.randn(k, generator=g, dtype=torch.float64)
        nearest = (w[:, None] - codebook[None, :]).abs().min(1).values
        assert best <= float((nearest**2).sum()) * (1 + 1e-9) + 1e-9


@given(
    x=vectors(min_size=2),
    k=st.integers(2, 5),
    scale=st.sampled_from([0.5, 2.0, 8.0]),
    shift=st.sampled_from([-3.0, 0.0, 16.0]),
    seed=st.integers(0, 2**16),
)
def test_adaptive_equivariance(x: np.ndarray, k: int, scale: float, shift: float, seed: int) -> None:
    """Permuting, scaling by a power of two and shifting the input do the same to the optimum."""
    w = torch.from_numpy(x).double()
    op = Quant(k=k)
    base = distortion(w, op)
    perm = torch.randperm(w.numel(), generator=torch.Generator().manual_seed(seed))
    assert np.isclose(distortion(w[perm], op), base, rtol=1e-9, atol=1e-9)
    assert np.isclose(distortion(w * scale, op), base * scale**2, rtol=1e-9, atol=1e-9)
    assert np.isclose(distortion(w + shift, op), base, rtol=1e-7, atol=1e-6)


@given(x=vectors(), codebook=st.lists(st.sampled_from([-4.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=5, unique=True))
@example(x=np.array([0.0, 2.0, -0.25], np.float32), codebook=[1.0, -1.0, -0.5, 0.0])
def test_fixed_codebook_nearest_with_ties_to_smaller(x: np.ndarray, codebook: list[float]) -> None:
    op = Quant(codebook=codebook)
    w = torch.from_numpy(x).double()
    theta = op.project(w)
    assert set(theta) == {"codebook", "assignments"} and theta["codebook"].dtype == w.dtype
    cb = torch.tensor(codebook, dtype=torch.float64)
    chosen = cb[theta["assignments"].long()]  # a uint8 index would read as a mask
    gaps = (w[:, None] - cb[None, :]).abs()  # (n, K)
    nearest = gaps.min(1).values
    assert torch.equal((w - chosen).abs(), nearest)
    # among equally near codewords the smaller one is taken
    tied_smallest = torch.where(gaps == nearest[:, None], cb[None, :], torch.inf).min(1).values
    assert torch.equal(chosen, tied_smallest)
    out = op.decompress(theta, tuple(w.shape))
    assert torch.equal(op.decompress(op.project(out), tuple(w.shape)), out)


def test_shapes_are_kept() -> None:
    w = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    for op in (Quant(bits=2), Quant(codebook=[-1.0, 1.0])):
        out = op.decompress(op.project(w), (3, 4, 5))
        assert out.shape == (3, 4, 5) and out.dtype == torch.float32
