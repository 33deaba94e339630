"""Compiled CPU kernels of the exact 1-D k-means dynamic programme (numba).

The problem, on ``u`` sorted weighted points given by their prefix sums (index ``j`` of a prefix
array covers points ``0 … j−1``; all arrays ``(u+1,)`` float64, shifted by the mean so the
differences below lose little to cancellation)::

    cost(i, j) = Σ_{i≤p<j} c_p (x_p − x̄)² = (S2[j] − S2[i]) − (S1[j] − S1[i])² / (W[j] − W[i])
    D_1(j)     = cost(lo, j)
    D_m(j)     = min_{i<j} D_{m−1}(i) + cost(i, j)

``cost`` satisfies the quadrangle inequality, so the leftmost argmin ``T_m(j)`` is non-decreasing
in ``j`` and each layer is solved by divide and conquer over ``j`` in ``O(u log u)``.

Two forward passes share one layer kernel:

- :func:`forward_table` keeps every layer's argmin (a ``(kk, u)`` int32 table) and backtracks;
- :func:`forward_split` keeps two layers only and carries, for every end point, where the
  optimal path to it starts cluster ``split``; the caller then solves both halves apart
  (Hirschberg's trick), so memory stays ``O(u)`` whatever ``k``.

Compiled with ``cache=True``: the first call in a fresh environment compiles (a few seconds),
later processes load the cached machine code.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["forward_table", "forward_split"]

_STACK = 256
"""Depth of the explicit divide-and-conquer stack: 4 entries a level, ~log₂ u levels."""


@numba.njit(cache=True, nogil=True)
def _first_layer(S1, S2, W, lo, jlo, jhi, D):
    for j in range(jlo, jhi + 1):
        s = S1[j] - S1[lo]
        c = (S2[j] - S2[lo]) - s * s / (W[j] - W[lo])
        D[j] = c if c > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def _best(S1, S2, W, Dprev, mid, lo, hi):
    """``(min, leftmost argmin)`` over ``lo ≤ i ≤ min(hi, mid−1)`` of ``Dprev[i] − S2[i] − s²/w``."""
    last = hi if hi < mid - 1 else mid - 1
    s1j = S1[mid]
    wj = W[mid]
    best = np.inf
    arg = lo
    # S2[mid] is the same for every candidate: the caller adds it once
    for i in range(lo, last + 1):
        s = s1j - S1[i]
        v = (Dprev[i] - S2[i]) - s * s / (wj - W[i])
        if v < best:
            best = v
            arg = i
    return best, arg


@numba.njit(cache=True, nogil=True)
def _conquer(S1, S2, W, Dprev, Dcur, T, toff, jlo, jhi, ilo, ihi):
    """Divide and conquer over ``jlo ≤ j ≤ jhi`` with argmins known to lie in ``[ilo, ihi]``."""
    stack = np.empty(4 * _STACK, dtype=np.int64)
    stack[0] = jlo
    stack[1] = jhi
    stack[2] = ilo
    stack[3] = ihi
    top = 1
    while top > 0:
        top -= 1
        a = stack[4 * top]
        b = stack[4 * top + 1]
        lo = stack[4 * top + 2]
        hi = stack[4 * top + 3]
        mid = (a + b) >> 1
        best, arg = _best(S1, S2, W, Dprev, mid, lo, hi)
        d = best + S2[mid]
        Dcur[mid] = d if d > 0.0 else 0.0
        T[mid - toff] = arg
        if mid + 1 <= b:
            stack[4 * top] = mid + 1
            stack[4 * top + 1] = b
            stack[4 * top + 2] = arg
            stack[4 * top + 3] = hi
            top += 1
        if a <= mid - 1:
            stack[4 * top] = a
            stack[4 * top + 1] = mid - 1
            stack[4 * top + 2] = lo
            stack[4 * top + 3] = arg
            top += 1


_PARALLEL_LEVELS = 3
"""Levels of the recursion solved one node at a time before the 2**levels subtrees run in
parallel (their argmin ranges are independent once their bounding midpoints are known)."""

_PARALLEL_MIN = 1 << 14
"""Layers with fewer end points than this run on one thread."""


@numba.njit(cache=True, nogil=True, parallel=True)
def _layer(S1, S2, W, Dprev, Dcur, T, toff, jlo, jhi, ilo):
    """``Dcur[j] = min_{ilo ≤ i < j} Dprev[i] + cost(i, j)`` for ``jlo ≤ j ≤ jhi``; argmin in
    ``T[j − toff]``. Leftmost argmin on ties, so the divide and conquer stays valid."""
    if jhi - jlo < _PARALLEL_MIN:
        _conquer(S1, S2, W, Dprev, Dcur, T, toff, jlo, jhi, ilo, jhi - 1)
        return
    # breadth first over the top levels: nodes (a, b, lo, hi)
    nodes = np.empty((1 << _PARALLEL_LEVELS, 4), dtype=np.int64)
    nodes[0, 0] = jlo
    nodes[0, 1] = jhi
    nodes[0, 2] = ilo
    nodes[0, 3] = jhi - 1
    count = 1
    for _ in range(_PARALLEL_LEVELS):
        nxt = np.empty((1 << _PARALLEL_LEVELS, 4), dtype=np.int64)
        made = 0
        for q in range(count):
            a, b, lo, hi = nodes[q, 0], nodes[q, 1], nodes[q, 2], nodes[q, 3]
            mid = (a + b) >> 1
            best, arg = _best(S1, S2, W, Dprev, mid, lo, hi)
            d = best + S2[mid]
            Dcur[mid] = d if d > 0.0 else 0.0
            T[mid - toff] = arg
            if a <= mid - 1:
                nxt[made, 0] = a
                nxt[made, 1] = mid - 1
                nxt[made, 2] = lo
                nxt[made, 3] = arg
                made += 1
            if mid + 1 <= b:
                nxt[made, 0] = mid + 1
                nxt[made, 1] = b
                nxt[made, 2] = arg
                nxt[made, 3] = hi
                made += 1
        nodes = nxt
        count = made
    for q in numba.prange(count):
        _conquer(S1, S2, W, Dprev, Dcur, T, toff, nodes[q, 0], nodes[q, 1], nodes[q, 2], nodes[q, 3])


@numba.njit(cache=True, nogil=True)
def forward_table(S1, S2, W, lo, hi, kk, T):
    """Split points ``lo … hi−1`` into ``kk`` optimal contiguous clusters, keeping every argmin.

    Args:
        S1, S2, W: prefix sums, ``(u+1,)`` float64.
        lo, hi: the points ``lo ≤ p < hi``; ``2 ≤ kk ≤ hi − lo``.
        T: ``(kk, hi − lo + 1)`` int32 scratch.

    Returns:
        ``(kk+1,)`` int64: cluster ``m`` holds points ``starts[m] … starts[m+1]−1``.
    """
    D0 = np.empty(hi + 1, dtype=np.float64)
    D1 = np.empty(hi + 1, dtype=np.float64)
    _first_layer(S1, S2, W, lo, lo + 1, hi - (kk - 1), D0)
    for m in range(2, kk + 1):
        # layer m ends at j ∈ [lo+m, hi−(kk−m)]; its last cluster starts at i ≥ lo+m−1
        jlo = lo + m
        jhi = hi - (kk - m)
        if m == kk:
            jlo = hi
        _layer(S1, S2, W, D0, D1, T[m - 1], lo, jlo, jhi, lo + m - 1)
        D0, D1 = D1, D0
    starts = np.empty(kk + 1, dtype=np.int64)
    starts[kk] = hi
    starts[0] = lo
    b = hi
    for m in range(kk, 1, -1):
        b = T[m - 1, b - lo]
        starts[m - 1] = b
    return starts


@numba.njit(cache=True, nogil=True)
def forward_split(S1, S2, W, lo, hi, kk, split):
    """Where cluster ``split`` (0-based, ``1 ≤ split < kk``) starts in an optimal split of points
    ``lo … hi−1`` into ``kk`` contiguous clusters, in ``O(hi − lo)`` memory."""
    D0 = np.empty(hi + 1, dtype=np.float64)
    D1 = np.empty(hi + 1, dtype=np.float64)
    M0 = np.empty(hi + 1, dtype=np.int64)
    M1 = np.empty(hi + 1, dtype=np.int64)
    T = np.empty(hi - lo + 1, dtype=np.int64)
    _first_layer(S1, S2, W, lo, lo + 1, hi - (kk - 1), D0)
    for m in range(2, kk + 1):
        jlo = lo + m
        jhi = hi - (kk - m)
        if m == kk:
            jlo = hi
        _layer(S1, S2, W, D0, D1, T, lo, jlo, jhi, lo + m - 1)
        # M[j]: start of cluster `split` on the best path ending at j (layer m − 1 is 0-based m−1)
        if m - 1 == split:
            for j in range(jlo, jhi + 1):
                M1[j] = T[j - lo]
        elif m - 1 > split:
            for j in range(jlo, jhi + 1):
                M1[j] = M0[T[j - lo]]
        D0, D1 = D1, D0
        M0, M1 = M1, M0
    return M0[hi]
