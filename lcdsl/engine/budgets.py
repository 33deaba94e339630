"""Budgets in the C step: which option of its :class:`~lcdsl.operators.choice.Choice` each task
of a ``within …`` rule takes, so that the options' summed cost fits the limit.

Per budget and C step: each task's target (``w − λ/μ``, or ``w`` at ``μ = 0``) gives a table of
every option's distortion (:meth:`Choice.distortions`), the exact knapsack picks one option per
task (:func:`lcdsl.budget.knapsack.allocate`) with the costs the plan priced, and the engine then
projects each task on its option. Minimising ``Σ_t ‖target_t − Δ_t‖²`` under the budget is the
C step of the whole budget's tasks together: its exact solution.

The tasks' targets are made once for the tables and dropped; the engine makes each again for its
projection, so no more than one task's target is alive at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lcdsl.budget.knapsack import allocate
from lcdsl.budget.tables import checked_table
from lcdsl.engine.memory import TaskState
from lcdsl.errors import BudgetError, EngineError
from lcdsl.operators.choice import Choice
from lcdsl.plan.model import Budget

__all__ = ["BudgetSolver"]


def _where(budget: Budget) -> str:
    """``budget 'within 40kB' (line 3)`` for messages."""
    rule = budget.rule
    line = f" (line {rule.span.line})" if rule is not None and getattr(rule, "span", None) is not None else ""
    return f"budget '{budget.shown}'{line}"


class BudgetSolver:
    """The plan's budgets over the engine's task states; checked when the engine is built.

    Raises:
        EngineError: a budget names a task the plan lacks, a task that is not a Choice, a task
            with another number of options than the budget has costs, a task already in another
            budget, or a sharded (FSDP) task, which budgets do not support yet.
    """

    def __init__(self, budgets: Sequence[Budget], states: Sequence[TaskState]) -> None:
        by_name = {state.task.name: index for index, state in enumerate(states)}
        owner: dict[str, str] = {}
        self._states = list(states)
        self._budgets: list[tuple[Budget, list[int]]] = []
        for budget in budgets:
            indices = []
            for name, costs in zip(budget.tasks, budget.costs):
                if name not in by_name:
                    raise EngineError(f"{_where(budget)} names task {name}, which the plan does not have")
                state = states[by_name[name]]
                op = state.task.operator
                if not isinstance(op, Choice):
                    raise EngineError(
                        f"{_where(budget)}: task {name} has operator {type(op).__name__}, not a Choice of options"
                    )
                if len(op.options) != len(costs):
                    raise EngineError(
                        f"{_where(budget)}: task {name} has {len(op.options)} options but {len(costs)} costs"
                    )
                if name in owner:
                    raise EngineError(f"task {name} is in two budgets: '{owner[name]}' and '{budget.shown}'")
                if state.tensors.sharded:
                    raise EngineError(
                        f"{_where(budget)}: task {name} is sharded (FSDP); budgets over sharded tasks are not "
                        "supported yet: leave its parameters unsharded, or give the rule a fixed operator"
                    )
                owner[name] = budget.shown
                indices.append(by_name[name])
            self._budgets.append((budget, indices))
        self.last: list[dict[str, Any]] = []
        """Each budget's allocation at the last C step (:meth:`record`)."""

    def __bool__(self) -> bool:
        return bool(self._budgets)

    def allocate(self, target_of: Callable[[TaskState], torch.Tensor], mu: float) -> dict[int, int]:
        """The chosen option of every task of a budget, by task index.

        Args:
            target_of: the C-step target of a task (a fresh view-shaped tensor).
            mu: the C step's μ.

        Raises:
            BudgetError: a budget that even the cheapest options exceed, named with its text.
            PluginError: an operator's distortion table raised or returned something unusable.
        """
        chosen: dict[int, int] = {}
        self.last = []
        for budget, indices in self._budgets:
            tables = [self._table(budget, self._states[i], target_of, mu) for i in indices]
            try:
                picks = allocate(budget.costs, tables, budget.limit)
            except BudgetError as exc:
                raise BudgetError(f"{_where(budget)} cannot be met: {exc} {budget.unit}") from None
            cost = sum(row[p] for row, p in zip(budget.costs, picks))
            choices, costs = {}, {}
            for i, pick, row in zip(indices, picks, budget.costs):
                chosen[i] = pick
                state = self._states[i]
                choices[state.task.name] = state.task.operator.labels[pick]
                costs[state.task.name] = int(row[pick])
            distortion = float(sum(float(t[p]) for t, p in zip(tables, picks)))
            self.last.append({
                "budget": budget.shown, "unit": budget.unit, "limit": budget.limit, "cost": int(cost),
                "distortion": distortion, "choices": choices, "costs": costs,
            })  # fmt: skip
        return chosen

    @staticmethod
    def _table(
        budget: Budget, state: TaskState, target_of: Callable[[TaskState], torch.Tensor], mu: float
    ) -> torch.Tensor:
        target = target_of(state)
        try:
            return checked_table(state.task.operator, target, mu, f"task {state.task.name} ({_where(budget)})")
        finally:
            del target

    def record(self) -> list[dict[str, Any]]:
        """The last C step's allocation per budget, as plain data: ``budget`` (its text), ``unit``,
        ``limit``, ``cost`` (the chosen options' total), ``distortion`` (their summed table
        entries), ``choices`` (task name → option label) and ``costs`` (task name → the chosen
        option's cost)."""
        return [dict(entry, choices=dict(entry["choices"]), costs=dict(entry["costs"])) for entry in self.last]
