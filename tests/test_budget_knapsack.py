"""The multiple-choice knapsack behind budgets, against brute force over every combination."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lcdsl.budget import allocate
from lcdsl.errors import BudgetError, LcdslError


@st.composite
def knapsacks(draw: st.DrawFn) -> tuple[list[list[int]], list[list[float]], int]:
    """1–4 tasks of 1–4 options, small integer costs and distortions in halves (sums exact, so
    ties are real ties), and a limit from 0 to above the dearest combination."""
    tasks = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 4)) for _ in range(tasks)]
    costs = [draw(st.lists(st.integers(0, 7), min_size=m, max_size=m)) for m in sizes]
    dists = [[h / 2 for h in draw(st.lists(st.integers(0, 6), min_size=m, max_size=m))] for m in sizes]
    limit = draw(st.integers(0, sum(max(c) for c in costs) + 1))
    return costs, dists, limit


def brute_force(costs: list[list[int]], dists: list[list[float]], limit: int) -> tuple[int, ...] | None:
    """The best feasible combination by (distortion summed in task order, cost, tuple); None if none fits."""
    best = None
    for combo in itertools.product(*(range(len(c)) for c in costs)):
        cost = sum(c[i] for c, i in zip(costs, combo))
        dist = 0.0
        for d, i in zip(dists, combo):
            dist += d[i]
        if cost <= limit and (best is None or (dist, cost, combo) < best):
            best = (dist, cost, combo)
    return None if best is None else best[2]


@given(knapsacks())
def test_allocate_equals_brute_force_with_its_tie_breaks(case):
    costs, dists, limit = case
    expected = brute_force(costs, dists, limit)
    if expected is None:
        with pytest.raises(BudgetError):
            allocate(costs, dists, limit)
    else:
        assert allocate(costs, dists, limit) == expected


@given(knapsacks(), st.randoms(use_true_random=False))
def test_allocate_is_optimal_for_real_distortions(case, rnd):
    costs, _, limit = case
    dists = [[rnd.random() for _ in c] for c in costs]
    expected = brute_force(costs, dists, limit)
    if expected is not None:
        got = allocate(costs, dists, limit)
        assert sum(c[i] for c, i in zip(costs, got)) <= limit
        best = sum(d[i] for d, i in zip(dists, expected))
        assert sum(d[i] for d, i in zip(dists, got)) == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_ties_go_to_lower_cost_then_the_smaller_tuple():
    assert allocate([[5, 3]], [[1.0, 1.0]], 10) == (1,)  # same distortion: the cheaper
    assert allocate([[2, 2], [2, 2]], [[0.0, 0.0], [1.0, 1.0]], 10) == (0, 0)  # all equal: the first tuple


def test_infeasible_budget_is_a_budget_error_naming_the_numbers():
    with pytest.raises(BudgetError, match="cheapest options cost 7 together, above the limit of 6") as info:
        allocate([[3, 4], [4, 9]], [[0.0, 0.0], [0.0, 0.0]], 6)
    assert isinstance(info.value, LcdslError)


@pytest.mark.parametrize(
    "costs, dists, message",
    [([[1], [2]], [[0.0]], "2 tasks, distortions 1"), ([[]], [[]], "one of each per option"),
     ([[-1]], [[0.0]], "negative"), ([[1]], [[float("nan")]], "not finite")],
)  # fmt: skip
def test_malformed_tables_are_refused(costs, dists, message):
    with pytest.raises(ValueError, match=message):
        allocate(costs, dists, 10)


def test_no_tasks_choose_nothing():
    assert allocate([], [], 0) == ()


def test_ten_tasks_of_300_options_well_under_a_second():
    # costs on a common grid and convex distortions: the frontier is as large as it gets here
    costs = [list(range(0, 300_000, 1000)) for _ in range(10)]
    dists = [list(np.exp(-np.arange(300) / (20.0 + t))) for t in range(10)]
    start = time.perf_counter()
    picks = allocate(costs, dists, 1_500_000)
    assert time.perf_counter() - start < 1.0
    assert sum(c[i] for c, i in zip(costs, picks)) <= 1_500_000
