"""Exact 1-D k-means: the global minimum of ``Σ_i (w_i − c_{z_i})²`` over codebooks and assignments.

Optimal clusters are contiguous in sorted order, so the problem is a dynamic programme over
split points (Wang & Song's Ckmeans.1d.dp; Grønlund et al. 2017). Here:

1. ``w`` is sorted and equal values merge into weighted points (``u ≤ n``);
2. prefix sums of counts, values and squares (float64, shifted by the mean) give any segment's
   cost in O(1);
3. the split points come from one of two exact methods:

   - ``"penalty"`` (Lagrangian relaxation, Aggarwal–Schieber–Tokuyama; numba only): a penalty λ
     per cluster turns the problem into one ``O(u log u)`` pass with no ``k`` in it, and a few
     λ (a secant search on the convex curve ``D(c)``, ending in a splice of two partitions when
     no λ singles out ``k``) give the optimal ``k``-partition; time nearly independent of ``k``;
   - ``"dp"``: each layer ``D_m(j) = min_i D_{m−1}(i) + cost(i, j)`` by divide and conquer over
     ``j`` (the cost is Monge, so the leftmost argmin is monotone): ``O(k · u log u)``; when the
     table of argmins would exceed :data:`TABLE_BUDGET` bytes, the problem is split at the start
     of its middle cluster (found in ``O(u)`` memory) and both halves are solved apart;
4. each weight is assigned to its cluster (binary search against the clusters' first values on
   CPU, the inverse of ``torch.unique`` elsewhere); centroids are cluster means.

CPU tensors use the compiled kernels of :mod:`lcdsl.operators._kmeans1d_cpu`; other devices use
the vectorised torch DP layer below (all midpoints of one divide-and-conquer level at once,
segment minima by ``scatter_reduce``). Both evaluate the same expressions in the same order.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "PENALTY_MAX_PASSES",
    "PENALTY_MIN_K",
    "TABLE_BUDGET",
    "Clusters",
    "kmeans1d",
    "kmeans1d_costs",
    "prefix_sums",
]

PENALTY_MIN_K = 3
"""Smallest ``k`` solved by the Lagrangian relaxation by default (below, one or two DP layers are
cheaper than several penalised passes)."""

PENALTY_MAX_PASSES = 60
"""Penalised passes allowed before the Lagrangian search gives way to the DP."""

TABLE_BUDGET = 2**30
"""Largest argmin table (bytes) kept at once; larger problems are split (Hirschberg)."""

Clusters = tuple[torch.Tensor, torch.Tensor]
"""``(codebook, assignments)``: ``(k,)`` in ``w``'s dtype and ``(n,)`` int64."""


def prefix_sums(x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S1, S2, W)``, each ``(u+1,)`` float64: prefix sums of ``c·(x−x̄)``, ``c·(x−x̄)²`` and ``c``.

    Shifting by the weighted mean ``x̄`` keeps ``S2 − S1²/W`` from cancelling badly."""
    x = x.to(torch.float64)
    c = counts.to(torch.float64)
    y = x - (c * x).sum() / c.sum()  # (u,)
    zero = torch.zeros(1, dtype=torch.float64, device=x.device)
    S1 = torch.cat([zero, torch.cumsum(c * y, 0)])
    S2 = torch.cat([zero, torch.cumsum(c * y * y, 0)])
    W = torch.cat([zero, torch.cumsum(c, 0)])
    return S1, S2, W


def kmeans1d(w: torch.Tensor, k: int, *, backend: str | None = None, method: str | None = None) -> Clusters:
    """Optimal 1-D k-means of the entries of ``w`` (any shape, floating point; not modified).

    Args:
        w: the values; flattened.
        k: codebook size, ``≥ 1``.
        backend: ``"numba"`` or ``"torch"``; by default numba for CPU tensors, torch otherwise.
        method: ``"penalty"`` (Lagrangian relaxation, numba only) or ``"dp"`` (divide-and-conquer
            DP); by default penalty for numba when ``k ≥`` :data:`PENALTY_MIN_K`, dp otherwise.
            Both return an optimal partition.

    Returns:
        ``(codebook, assignments)``: ``codebook[assignments]`` is the optimal quantization of
        ``w.flatten()``. Each centroid is the mean of its cluster (a cluster of one distinct value
        gets that value exactly). With fewer than ``k`` distinct values, the codebook is padded
        by repeating its last entry and the distortion is zero.
    """
    if backend is None:
        backend = "numba" if w.device.type == "cpu" else "torch"
    if backend not in ("numba", "torch"):
        raise ValueError(f"backend must be 'numba' or 'torch', got {backend!r}")
    if method is None:
        method = "penalty" if backend == "numba" and k >= PENALTY_MIN_K else "dp"
    if method not in ("penalty", "dp"):
        raise ValueError(f"method must be 'penalty' or 'dp', got {method!r}")
    if method == "penalty" and backend != "numba":
        raise ValueError("method 'penalty' needs backend 'numba'")
    flat = w.detach().reshape(-1)
    if flat.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if backend == "numba" and flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return _kmeans1d_numpy(flat, k, method)
    values, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True)
    u = values.numel()
    if u <= k:
        # every distinct value is its own centroid; pad with the last one (never assigned)
        pad = values[-1:].expand(k - u)
        return torch.cat([values, pad]), inverse.to(torch.int64)
    S1, S2, W = prefix_sums(values, counts)
    starts = _starts(S1, S2, W, u, k, backend, method)  # (k+1,) int64 on CPU
    sizes = (starts[1:] - starts[:-1]).to(values.device)  # (k,) distinct values per cluster
    # cluster of each distinct value, then of each weight
    cluster_of_value = torch.repeat_interleave(torch.arange(k, device=values.device), sizes)  # (u,)
    assignments = cluster_of_value[inverse]  # (n,)
    # centroids: cluster means, summed directly (not from prefix differences) for accuracy
    x = values.to(torch.float64)
    c = counts.to(torch.float64)
    sums = torch.zeros(k, dtype=torch.float64, device=values.device).index_add_(0, cluster_of_value, c * x)
    weights = torch.zeros(k, dtype=torch.float64, device=values.device).index_add_(0, cluster_of_value, c)
    means = (sums / weights).to(values.dtype)
    first = starts[:-1].to(values.device)
    single = sizes == 1
    codebook = torch.where(single, values[first], means)
    return codebook, assignments


def kmeans1d_costs(w: torch.Tensor, k_max: int) -> torch.Tensor:
    """The optimal 1-D k-means distortion ``min Σ_i (w_i − c_{z_i})²`` of ``w`` for every
    ``k = 1 … k_max`` at once: ``(k_max,)`` float64 on CPU, entry ``k − 1`` for ``k``.

    One run of the dynamic programme: layer ``m`` is ``D_m(j)``, the best ``m``-cluster cost of the
    first ``j`` distinct values, over every ``j`` (not only those a fixed ``k`` needs), and
    ``D_m(u)`` is the answer for ``k = m``. ``k`` at or above the number ``u`` of distinct values
    costs 0. Costs ``O(k_max · u log u)``, about what :func:`kmeans1d` at ``k_max`` costs.
    """
    if k_max < 1:
        raise ValueError(f"k_max must be ≥ 1, got {k_max}")
    flat = w.detach().reshape(-1)
    if flat.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    values, counts = torch.unique(flat, sorted=True, return_counts=True)
    u = values.numel()
    out = torch.zeros(k_max, dtype=torch.float64)
    S1, S2, W = prefix_sums(values, counts)
    D = _first_layer(S1, S2, W, 0, u, 1)  # (u+1,): every j
    out[0] = D[u].cpu()
    for m in range(2, min(k_max, u - 1) + 1):
        D, _ = _torch_layer(S1, S2, W, D, 0, u, u, m, full=True)
        out[m - 1] = D[u].cpu()
    return out  # entries from k = u on stay 0: every distinct value its own centroid


def _kmeans1d_numpy(flat: torch.Tensor, k: int, method: str) -> Clusters:
    """The CPU pipeline: sort, distinct values and prefix sums in one compiled pass, optimise,
    then assign each weight by binary search against the clusters' first values (no inverse
    permutation needed)."""
    from lcdsl.operators.kmeans1d import cpu as _kmeans1d_cpu

    x = flat.numpy()  # (n,)
    xs = np.sort(x)  # (n,)
    values, first, S1, S2, W = _kmeans1d_cpu.sorted_prefix_sums(xs)
    u = values.size
    if u <= k:
        # every distinct value is its own centroid; pad with the last one (never assigned)
        codebook = np.concatenate([values, np.repeat(values[-1:], k - u)])
        return torch.from_numpy(codebook), torch.from_numpy(np.searchsorted(values, x).astype(np.int64))
    S = (torch.from_numpy(S1), torch.from_numpy(S2), torch.from_numpy(W))
    starts = _starts(*S, u, k, "numba", method).numpy()  # (k+1,)
    # weights below the first value of cluster m + 1 and not below that of cluster m are in m
    assignments = np.searchsorted(values[starts[1:-1]], x, side="right").astype(np.int64)  # (n,)
    sums = _kmeans1d_cpu.cluster_sums(xs, first, starts)  # (k,) float64
    counts = (first[starts[1:]] - first[starts[:-1]]).astype(np.float64)  # (k,)
    codebook = (sums / counts).astype(values.dtype)
    single = starts[1:] - starts[:-1] == 1
    codebook[single] = values[starts[:-1][single]]
    return torch.from_numpy(codebook), torch.from_numpy(assignments)


def _starts(
    S1: torch.Tensor, S2: torch.Tensor, W: torch.Tensor, u: int, k: int, backend: str, method: str = "dp"
) -> torch.Tensor:
    """``(k+1,)`` int64 on CPU: cluster ``m`` holds distinct values ``starts[m] … starts[m+1]−1``."""
    if method == "penalty" and 1 < k < u:
        from lcdsl.operators.kmeans1d import cpu as _kmeans1d_cpu

        found = _kmeans1d_cpu.lagrangian(S1.numpy(), S2.numpy(), W.numpy(), u, k, PENALTY_MAX_PASSES)
        if found is not None:
            return torch.from_numpy(found)
        # not settled within the pass budget: the DP below is exact whatever the input
    starts = torch.empty(k + 1, dtype=torch.int64)
    starts[0], starts[k] = 0, u
    # explicit work list: (lo, hi, first cluster index, clusters)
    work = [(0, u, 0, k)]
    while work:
        lo, hi, first, kk = work.pop()
        if kk == 1:
            continue
        if kk == hi - lo:
            starts[first : first + kk] = torch.arange(lo, hi)
            continue
        if kk * (hi - lo + 1) * 4 <= TABLE_BUDGET:
            part = _forward_table(S1, S2, W, lo, hi, kk, backend)  # (kk+1,)
            starts[first : first + kk + 1] = part
            continue
        split = kk // 2
        b = _forward_split(S1, S2, W, lo, hi, kk, split, backend)
        starts[first + split] = b
        work.append((lo, b, first, split))
        work.append((b, hi, first + split, kk - split))
    return starts


def _forward_table(S1, S2, W, lo: int, hi: int, kk: int, backend: str) -> torch.Tensor:
    if backend == "numba":
        from lcdsl.operators.kmeans1d import cpu as _kmeans1d_cpu

        T = torch.empty((kk, hi - lo + 1), dtype=torch.int32)
        part = _kmeans1d_cpu.forward_table(S1.numpy(), S2.numpy(), W.numpy(), lo, hi, kk, T.numpy())
        return torch.from_numpy(part)
    T = torch.empty((kk, hi - lo + 1), dtype=torch.int64, device=S1.device)
    D = _first_layer(S1, S2, W, lo, hi, kk)
    for m in range(2, kk + 1):
        D, T[m - 1] = _torch_layer(S1, S2, W, D, lo, hi, kk, m)
    starts = torch.empty(kk + 1, dtype=torch.int64)
    starts[0], starts[kk] = lo, hi
    rows = T.cpu()
    b = hi
    for m in range(kk, 1, -1):
        b = int(rows[m - 1, b - lo])
        starts[m - 1] = b
    return starts


def _forward_split(S1, S2, W, lo: int, hi: int, kk: int, split: int, backend: str) -> int:
    if backend == "numba":
        from lcdsl.operators.kmeans1d import cpu as _kmeans1d_cpu

        return int(_kmeans1d_cpu.forward_split(S1.numpy(), S2.numpy(), W.numpy(), lo, hi, kk, split))
    D = _first_layer(S1, S2, W, lo, hi, kk)
    M = torch.zeros(hi - lo + 1, dtype=torch.int64, device=S1.device)
    for m in range(2, kk + 1):
        D, T = _torch_layer(S1, S2, W, D, lo, hi, kk, m)  # T: (hi−lo+1,) absolute argmins
        if m - 1 == split:
            M = T.clone()
        elif m - 1 > split:
            M = M[(T - lo).clamp(min=0)]
    return int(M[hi - lo])


def _first_layer(S1, S2, W, lo: int, hi: int, kk: int) -> torch.Tensor:
    """``D_1`` on prefix indices ``lo … hi`` (entries outside ``[lo+1, hi−kk+1]`` are unused)."""
    j = torch.arange(lo + 1, hi - (kk - 1) + 1, device=S1.device)
    s = S1[j] - S1[lo]
    c = ((S2[j] - S2[lo]) - s * s / (W[j] - W[lo])).clamp(min=0.0)
    D = torch.full((hi - lo + 1,), float("inf"), dtype=torch.float64, device=S1.device)
    D[j - lo] = c
    return D


def _torch_layer(
    S1, S2, W, Dprev, lo: int, hi: int, kk: int, m: int, *, full: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``m`` by divide and conquer, one level of the recursion at a time.

    ``full``: every ``j`` from ``lo + m`` to ``hi`` (for the costs of every ``k``,
    :func:`kmeans1d_costs`), not only those a ``kk``-partition of ``lo … hi`` passes through.

    Returns ``(D, T)``, both indexed by ``j − lo`` over ``lo … hi``; ``T`` holds absolute argmins."""
    device = S1.device
    jlo = lo + m if full else (hi if m == kk else lo + m)
    jhi = hi if full else hi - (kk - m)
    D = torch.full((hi - lo + 1,), float("inf"), dtype=torch.float64, device=device)
    T = torch.zeros(hi - lo + 1, dtype=torch.int64, device=device)
    A = Dprev - S2[lo : hi + 1]  # (hi−lo+1,) the part of each candidate that does not depend on j
    # one row per open node: j range [a, b], argmin range [ilo, ihi]
    a = torch.tensor([jlo], device=device)
    b = torch.tensor([jhi], device=device)
    ilo = torch.tensor([lo + m - 1], device=device)
    ihi = torch.tensor([jhi - 1], device=device)
    while a.numel() > 0:
        mid = (a + b) >> 1
        last = torch.minimum(ihi, mid - 1)
        lengths = last - ilo + 1  # (nodes,) ≥ 1
        node = torch.repeat_interleave(torch.arange(a.numel(), device=device), lengths)  # (cands,)
        offsets = torch.cumsum(lengths, 0) - lengths
        i = ilo[node] + (torch.arange(node.numel(), device=device) - offsets[node])  # (cands,)
        j = mid[node]
        s = S1[j] - S1[i]
        v = A[i - lo] - s * s / (W[j] - W[i])
        best = torch.full((a.numel(),), float("inf"), dtype=torch.float64, device=device)
        best = best.scatter_reduce(0, node, v, "amin")
        # leftmost argmin, as the compiled kernel takes it
        big = torch.full_like(i, hi + 1)
        arg = big[: a.numel()].scatter_reduce(0, node, torch.where(v == best[node], i, big), "amin")
        D[mid - lo] = (best + S2[mid]).clamp(min=0.0)
        T[mid - lo] = arg
        left = a <= mid - 1
        right = mid + 1 <= b
        a, b, ilo, ihi = (
            torch.cat([a[left], (mid + 1)[right]]),
            torch.cat([(mid - 1)[left], b[right]]),
            torch.cat([ilo[left], arg[right]]),
            torch.cat([arg[left], ihi[right]]),
        )
    return D, T
