"""The exact multiple-choice knapsack behind a budget: one option per task, least total distortion.

``allocate(costs, distortions, limit)`` solves

    min over (i_1 … i_T) of Σ_t distortions[t][i_t]   s.t.   Σ_t costs[t][i_t] ≤ limit

by dynamic programming over the tasks on the Pareto frontier of partial solutions: after task
``t`` the frontier holds every (cost, distortion) pair that a choice for tasks ``1 … t`` reaches
and no other such choice beats in both; merging it with task ``t + 1``'s options and dropping
the dominated pairs and those that can no longer fit (their cost plus the cheapest options of
the tasks left exceeds the limit) keeps it exact for any integer costs. Each frontier entry keeps
a back-pointer (its parent entry and its option), so the choice is read back at the end.

Ties are broken deterministically: lower total distortion, then lower total cost, then the
lexicographically smaller choice tuple. Distortions are summed in task order in float64, the
same sums a brute force over every combination makes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lcdsl.errors import BudgetError

__all__ = ["allocate"]


def _rows(costs: Sequence[Sequence[int]], distortions: Sequence[Sequence[float]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each task's options as (costs int64 (m,), distortions float64 (m,)), checked."""
    if len(costs) != len(distortions):
        raise ValueError(f"costs name {len(costs)} tasks, distortions {len(distortions)}")
    rows = []
    for t, (c, d) in enumerate(zip(costs, distortions)):
        c = np.asarray([int(x) for x in c], dtype=np.int64)  # exact integers, not floats
        d = np.asarray(d, dtype=np.float64).reshape(-1)
        if c.size == 0 or c.size != d.size:
            raise ValueError(f"task {t}: {c.size} costs and {d.size} distortions; expected one of each per option, ≥ 1")
        if (c < 0).any():
            raise ValueError(f"task {t}: a cost is negative")
        if not np.isfinite(d).all():
            raise ValueError(f"task {t}: a distortion is not finite")
        rows.append((c, d))
    return rows


def allocate(costs: Sequence[Sequence[int]], distortions: Sequence[Sequence[float]], limit: int) -> tuple[int, ...]:
    """The option of each task that minimises the summed distortion with the summed cost ≤ ``limit``.

    Args:
        costs: per task, the integer cost of each option (≥ 0).
        distortions: per task, the distortion of each option (finite).
        limit: the most the chosen options may cost together.

    Returns:
        The chosen option's index per task (ties: lower distortion, lower cost, then the
        lexicographically smaller tuple).

    Raises:
        BudgetError: even the cheapest option of every task costs more than ``limit``.
        ValueError: the tables are malformed (a task without options, sizes that differ, a
            negative cost, a non-finite distortion).
    """
    rows = _rows(costs, distortions)
    limit = int(limit)
    cheapest = [int(c.min()) for c, _ in rows]
    if sum(cheapest) > limit:
        raise BudgetError(
            f"the cheapest options cost {sum(cheapest):,} together, above the limit of {limit:,}"
        )
    # rest[t] = the least the tasks after t can cost: a partial solution above limit − rest[t] cannot fit
    rest = np.concatenate([np.cumsum(np.asarray(cheapest[::-1], dtype=np.int64))[::-1][1:], [0]]).astype(np.int64)

    # the frontier: cost ascending, distortion strictly decreasing; rank: the lexicographic rank of
    # each entry's choice tuple among the frontier's
    cost = np.zeros(1, dtype=np.int64)
    dist = np.zeros(1, dtype=np.float64)
    rank = np.zeros(1, dtype=np.int64)
    parents: list[np.ndarray] = []
    options: list[np.ndarray] = []
    for t, (c, d) in enumerate(rows):
        m = c.size
        by_rank = np.argsort(rank)  # frontier entries in the lexicographic order of their choices
        # candidates made in lexicographic order of their choice tuples (parent's rank, then option)
        cand_cost = (cost[by_rank, None] + c[None, :]).reshape(-1)  # (F·m,)
        cand_dist = (dist[by_rank, None] + d[None, :]).reshape(-1)  # (F·m,) summed in task order
        cand_parent = np.repeat(by_rank, m)  # (F·m,)
        cand_option = np.tile(np.arange(m), cost.size)  # (F·m,)
        fits = np.flatnonzero(cand_cost <= limit - rest[t])  # positions, in lexicographic order
        # by cost; the sort is stable, so equal costs keep the lexicographic order
        order = fits[np.argsort(cand_cost[fits], kind="stable")]
        sorted_cost, sorted_dist = cand_cost[order], cand_dist[order]
        # of each cost, the least distortion (its lexicographically first candidate)
        starts = np.flatnonzero(np.concatenate([[True], sorted_cost[1:] != sorted_cost[:-1]]))  # (G,)
        group = np.repeat(np.arange(starts.size), np.diff(np.append(starts, order.size)))  # (N,)
        least = np.flatnonzero(sorted_dist == np.minimum.reduceat(sorted_dist, starts)[group])
        first = least[np.concatenate([[True], group[least][1:] != group[least][:-1]])]  # (G,)
        # keep a cost's best only if its distortion is below that of every cheaper cost's
        group_dist = sorted_dist[first]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(group_dist)[:-1]])
        kept = order[first[group_dist < best_before]]  # candidate positions, frontier order
        cost, dist = cand_cost[kept], cand_dist[kept]
        parents.append(cand_parent[kept])
        options.append(cand_option[kept])
        # the kept tuples' lexicographic ranks: the order their candidates were made in
        rank = np.empty(kept.size, dtype=np.int64)
        rank[np.argsort(kept)] = np.arange(kept.size)
    # distortion strictly decreases along the frontier: the last entry has the least (and is the
    # only one with it, so the cost and the tuple need no further comparison)
    entry = cost.size - 1
    chosen = [0] * len(rows)
    for t in range(len(rows) - 1, -1, -1):
        chosen[t] = int(options[t][entry])
        entry = int(parents[t][entry])
    return tuple(chosen)
