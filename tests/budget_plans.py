"""Budgeted plans built in code, as the binder makes them from ``… within …`` rules: shared by the
budget tests of deployment, stored files and the report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lcdsl.budget import choice_costs
from lcdsl.operators import Choice
from lcdsl.operators.base import Operator
from lcdsl.plan.model import Budget, Plan, Task
from lcdsl.plan.settings import Geometric, Settings


def two_layer_model(seed: int = 0) -> nn.Module:
    """``Linear(20→16) · ReLU · Linear(16→12)``: big enough for low rank 1…3 to deploy as two layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12))


def choice_of(options: Sequence[Operator], labels: Sequence[str]) -> Choice:
    """A Choice among ``options``, labelled."""
    return Choice(options=tuple(options), labels=tuple(labels))


def budget_plan(
    model: nn.Module,
    rules: Sequence[tuple[Sequence[str], Choice, int, str]],
    *,
    steps: int = 2,
) -> Plan:
    """One budget a rule: ``(parameter names, the Choice each gets, limit, unit)``; every other
    parameter dense. Costs are priced as the binder prices them (:func:`choice_costs`)."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    tasks, budgets = [], []
    for names, choice, limit, unit in rules:
        rows, made = [], []
        for name in names:
            task = Task(parameters=(name,), shapes=(shapes[name],), operator=choice)
            rows.append(choice_costs(choice, task.view_shape, unit))
            made.append(task)
        tasks += made
        budgets.append(Budget(tasks=tuple(t.name for t in made), limit=limit, unit=unit, costs=rows,
                              text=f"within {limit} {unit}"))  # fmt: skip
    compressed = {p for t in tasks for p in t.parameters}
    dense = tuple(n for n in shapes if n not in compressed)
    dense_numel = sum(int(torch.Size(shapes[n]).numel()) for n in dense)
    settings = Settings(mu=Geometric(start=1e-2, factor=2.0, steps=steps))
    return Plan(tasks=tuple(tasks), dense=dense, dense_numel=dense_numel, settings=settings, budgets=tuple(budgets))
