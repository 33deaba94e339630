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

A third pass, :func:`penalized`, drops the layers: with a penalty λ per cluster,
``E(j) = min_{i<j} E(i) + cost(i, j) + λ`` is one sweep with a queue of candidates
(``O(u log u)``); :func:`lagrangian` searches λ until the optimal partition has ``k`` clusters,
splicing two partitions (:func:`splice`) when no λ singles ``k`` out.

Compiled with ``cache=True``: the first call in a fresh environment compiles (a few seconds),
later processes load the cached machine code.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "cluster_sums",
    "forward_split",
    "forward_table",
    "lagrangian",
    "path_cost",
    "path_of",
    "penalized",
    "sorted_prefix_sums",
    "splice",
]

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


# --- Lagrangian relaxation: one pass per penalty λ -------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _g(S1, S2, W, E, i, x):
    """``E[i] + cost(i, x) − S2[x]``: candidate ``i``'s value at end point ``x``, less the part
    shared by every candidate."""
    s = S1[x] - S1[i]
    return (E[i] - S2[i]) - s * s / (W[x] - W[i])


@numba.njit(cache=True, nogil=True)
def penalized(S1, S2, W, u, lam, E, A, cand, start):
    """``E[j] = min_{i<j} E[i] + cost(i, j) + λ`` for ``1 ≤ j ≤ u`` (``E[0] = 0``); argmin in ``A[j]``.

    Monge costs make a later candidate, once better than an earlier one, better at every later
    end point; so the candidates still worth keeping form a queue, each optimal on an interval
    of end points (``start`` holds where each interval begins) and a new candidate's interval
    is found by one binary search: ``O(u log u)`` in all. Ties keep the earlier candidate.

    Args:
        E: ``(u+1,)`` float64 output; A, cand, start: ``(u+1,)`` int64 scratch/output.

    Returns:
        The number of clusters on the optimal path to ``u``.
    """
    E[0] = 0.0
    head = 0
    tail = 0
    cand[0] = 0
    start[0] = 1
    for j in range(1, u + 1):
        while tail > head and start[head + 1] <= j:
            head += 1
        i = cand[head]
        E[j] = _g(S1, S2, W, E, i, j) + S2[j] + lam
        A[j] = i
        if j == u:
            break
        # candidate j competes for end points x > j
        s = j + 1
        placed = False
        while tail >= head:
            s = start[tail] if start[tail] > j + 1 else j + 1
            if _g(S1, S2, W, E, j, s) < _g(S1, S2, W, E, cand[tail], s):
                tail -= 1
            else:
                break
        if tail < head:
            tail += 1
            cand[tail] = j
            start[tail] = j + 1
            placed = True
        if not placed:
            # first x in (s, u] where j beats cand[tail]; none when it loses at u
            c = cand[tail]
            if _g(S1, S2, W, E, j, u) < _g(S1, S2, W, E, c, u):
                # gallop from s (the crossing tends to be near, and near is cache-resident),
                # then bisect the last gap
                lo = s + 1
                hi = u
                step = 1
                while lo + step < hi:
                    x = lo + step - 1
                    if _g(S1, S2, W, E, j, x) < _g(S1, S2, W, E, c, x):
                        hi = x
                        break
                    lo = x + 1
                    step *= 2
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if _g(S1, S2, W, E, j, mid) < _g(S1, S2, W, E, c, mid):
                        hi = mid
                    else:
                        lo = mid + 1
                tail += 1
                cand[tail] = j
                start[tail] = lo
    count = 0
    b = u
    while b > 0:
        b = A[b]
        count += 1
    return count


@numba.njit(cache=True, nogil=True)
def path_of(A, u, count):
    """``(count+1,)`` int64 cluster starts read back from the argmins ``A`` of :func:`penalized`."""
    starts = np.empty(count + 1, dtype=np.int64)
    b = u
    for m in range(count, -1, -1):
        starts[m] = b
        if b > 0:
            b = A[b]
    return starts


@numba.njit(cache=True, nogil=True)
def path_cost(S1, S2, W, starts):
    """``Σ cost(starts[m], starts[m+1])``: the distortion of a partition."""
    total = 0.0
    for m in range(starts.size - 1):
        a = starts[m]
        b = starts[m + 1]
        s = S1[b] - S1[a]
        c = (S2[b] - S2[a]) - s * s / (W[b] - W[a])
        total += c if c > 0.0 else 0.0
    return total


@numba.njit(cache=True, nogil=True)
def splice(P, Q, k):
    """A partition into ``k`` clusters made of a prefix of ``Q`` and a suffix of ``P``.

    ``P`` (``p`` clusters) and ``Q`` (``q`` clusters, ``p < k < q``) are given by their starts. With
    ``t = k − p`` and the least ``i`` such that ``Q[i+t+1] ≤ P[i+1]``, the edges ``(P[i], P[i+1])``
    and ``(Q[i+t], Q[i+t+1])`` are nested, so the quadrangle inequality makes the two crossed
    paths ``Q[:i+t+1] + P[i+1:]`` (``k`` clusters) and ``P[:i+1] + Q[i+t+1:]`` together no
    costlier than ``P`` and ``Q``: when both are optimal for one penalty λ, so are the crossed ones."""
    p = P.size - 1
    t = k - p
    i = 0
    while Q[i + t + 1] > P[i + 1]:
        i += 1
    out = np.empty(k + 1, dtype=np.int64)
    out[: i + t + 1] = Q[: i + t + 1]
    out[i + t + 1 :] = P[i + 1 :]
    return out


def lagrangian(S1, S2, W, u: int, k: int, max_passes: int = 60):
    """Cluster starts ``(k+1,)`` int64 of an optimal split of all ``u`` points into ``k`` clusters,
    by a penalty λ per cluster; ``None`` when ``max_passes`` penalised passes do not settle it.

    The optimal distortion ``D(c)`` is convex in the number of clusters ``c`` (Monge costs), so
    each λ picks a vertex of its lower hull, and the vertex count falls as λ grows. Two hull
    vertices ``P`` (``p < k`` clusters, found at ``λ_P``) and ``Q`` (``q > k``, at ``λ_Q``) bracket
    ``k``. The next λ is either

    - a model step: the λ at which ``C·c^(−a)`` through the two vertices found so far nearest
      ``k`` has its tangent at ``k`` (a secant step in log-log coordinates), kept strictly inside
      ``(λ_Q, λ_P)``; it usually lands on ``k`` in a few passes; or
    - a chord step: the slope between ``P`` and ``Q``, at which both cost the same. Either the pass
      finds a vertex strictly below the chord (strictly between ``p`` and ``q``: progress), or the
      chord is an edge of the hull: ``P`` and ``Q`` are then both optimal for that λ and
      :func:`splice` crosses them into an optimal ``k``-partition.

    A model step that does not narrow ``(p, q)`` is followed by a chord step, so the search ends
    (within at most ``q − p`` chord steps). The ends ``c = 1`` and ``c = u`` (distortion 0) are
    known without a pass.
    """
    E = np.empty(u + 1, dtype=np.float64)
    A = np.empty(u + 1, dtype=np.int64)
    cand = np.empty(u + 1, dtype=np.int64)
    start = np.empty(u + 1, dtype=np.int64)
    P = np.array([0, u], dtype=np.int64)
    Q = np.arange(u + 1, dtype=np.int64)
    cost_p = path_cost(S1, S2, W, P)
    cost_q = 0.0
    lam_p = np.inf
    lam_q = 0.0
    chord = False
    seen = [(1, cost_p)]  # (clusters, distortion) of every vertex found
    for _ in range(max_passes):
        p, q = P.size - 1, Q.size - 1
        lam = _model_step(seen, k)
        if chord or not lam_q < lam < lam_p:
            chord = True
            lam = (cost_p - cost_q) / (q - p)
        r = penalized(S1, S2, W, u, lam, E, A, cand, start)
        R = path_of(A, u, r)
        if r == k:
            return R
        cost_r = path_cost(S1, S2, W, R)
        seen.append((r, cost_r))
        if chord:
            # strictly below the chord (beyond rounding): a new hull vertex between p and q
            line = cost_p + lam * p
            below = cost_r + lam * r < line - 1e-12 * max(abs(line), abs(cost_p), 1e-300)
            if p < r < k:
                P, cost_p, lam_p = R, cost_r, lam
            elif k < r < q:
                Q, cost_q, lam_q = R, cost_r, lam
            if not below or not p < r < q:
                return splice(P, Q, k)
        else:
            if r < k:
                P, cost_p, lam_p = R, cost_r, lam
            else:
                Q, cost_q, lam_q = R, cost_r, lam
            chord = not p < r < q
    return None


def _model_step(seen: list[tuple[int, float]], k: int) -> float:
    """``−D'(k)`` for ``D(c) = C·c^(−a)`` through the two points of ``seen`` nearest ``k`` in log
    scale (``a = 2``, the high-resolution rate, when there is one point); NaN when undefined."""
    near = sorted(dict(seen).items(), key=lambda rc: abs(np.log(rc[0] / k)))  # one per count
    p, cost_p = near[0]
    a = 2.0
    if len(near) > 1:
        q, cost_q = near[1]
        if not (cost_p > 0.0 and cost_q > 0.0):
            return np.nan
        a = float(np.log(cost_p / cost_q) / np.log(q / p))
    if not (a > 0.0 and cost_p > 0.0):
        return np.nan
    return a * cost_p * (p / k) ** a / k


# --- the CPU pipeline around the optimiser ---------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def sorted_prefix_sums(xs):
    """Distinct values of sorted ``xs`` and their prefix sums, shifted by the mean.

    Returns:
        ``(values, first, S1, S2, W)``: ``values`` ``(u,)`` in ``xs``'s dtype; ``first`` ``(u+1,)``
        int64, value ``m`` occupies ``xs[first[m]:first[m+1]]``; ``S1, S2, W`` ``(u+1,)`` float64
        prefix sums of ``c·(x−x̄)``, ``c·(x−x̄)²`` and ``c`` over distinct values.
    """
    n = xs.size
    total = 0.0
    u = 0
    for p in range(n):
        total += xs[p]
        if p == 0 or xs[p] != xs[p - 1]:
            u += 1
    mean = total / n
    values = np.empty(u, dtype=xs.dtype)
    first = np.empty(u + 1, dtype=np.int64)
    S1 = np.zeros(u + 1, dtype=np.float64)
    S2 = np.zeros(u + 1, dtype=np.float64)
    W = np.zeros(u + 1, dtype=np.float64)
    m = -1
    for p in range(n):
        if p == 0 or xs[p] != xs[p - 1]:
            m += 1
            values[m] = xs[p]
            first[m] = p
    first[u] = n
    for m in range(u):
        c = float(first[m + 1] - first[m])
        y = float(values[m]) - mean
        S1[m + 1] = S1[m] + c * y
        S2[m + 1] = S2[m] + c * y * y
        W[m + 1] = W[m] + c
    return values, first, S1, S2, W


@numba.njit(cache=True, nogil=True)
def cluster_sums(xs, first, starts):
    """``(k,)`` float64 sums of the sorted values in each cluster (summed directly, not from prefix
    differences, for accuracy); cluster ``m`` is distinct values ``starts[m] … starts[m+1]−1``."""
    k = starts.size - 1
    sums = np.zeros(k, dtype=np.float64)
    for m in range(k):
        acc = 0.0
        for p in range(first[starts[m]], first[starts[m + 1]]):
            acc += xs[p]
        sums[m] = acc
    return sums
