"""What a plan will do, before any training: per task its tensors, operator and predicted size, as data
(:mod:`lcdsl.report.plan` prints it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lcdsl.budget.knapsack import allocate
from lcdsl.budget.tables import checked_table
from lcdsl.operators.base import FLOAT_BITS, Storage, describe
from lcdsl.operators.choice import Choice
from lcdsl.plan.model import Plan
from lcdsl.plan.names import parameters_by_name

__all__ = ["plan_rows", "plan_summary", "schedule_ends", "penalty_sizes"]


def _ratio(dense_bits: int, bits: int | None) -> float | None:
    return dense_bits / bits if bits else None


def plan_rows(plan: Plan, storages: list[Storage | None] | None = None) -> list[dict[str, Any]]:
    """One dict a task: line, task, shapes, weights, operator, what it does along the layer's axes
    (``axes``: ``keeps 64 of 256 output units``, or None for element-wise operators), params and
    bits before and after.

    Args:
        plan: the bound plan.
        storages: the real size of each task (from θ after a run); predicted sizes when None.
    """
    rows = []
    for i, task in enumerate(plan.tasks):
        storage = storages[i] if storages is not None else task.predicted_storage()
        before_bits = task.numel * FLOAT_BITS
        rows.append(
            {
                "line": task.rule.span.line if task.rule is not None and task.rule.span else None,
                "task": task.name,
                "parameters": list(task.parameters),
                "shapes": [list(s) for s in task.shapes],
                "weights": task.numel,
                "operator": describe(task.operator),
                "axes": task.axes(),
                "params_before": task.numel,
                "bits_before": before_bits,
                "params_after": storage.params if storage else None,
                "bits_after": storage.bits if storage else None,
                "ratio": _ratio(before_bits, storage.bits if storage else None),
                "budgeted": isinstance(task.operator, Choice),  # its size is chosen by a budget
            }
        )
    return rows


def plan_summary(plan: Plan, storages: list[Storage | None] | None = None) -> dict[str, Any]:
    """Totals over the whole model: the tasks, the dense parameters (at 32 bits each) and the buffers.

    ``bits_before`` and ``bits_after`` count the parameters; ``buffer_bits`` the model's buffers
    (BatchNorm's running statistics, …) at their own dtype's bits, as every saved file stores
    them; ``total_bits_before`` and ``total_bits_after`` add the two, and ``ratio`` is theirs.
    A model without buffers has the same numbers either way."""
    rows = plan_rows(plan, storages)
    compressed = sum(r["weights"] for r in rows)
    known = all(r["bits_after"] is not None for r in rows)
    dense_bits = plan.dense_numel * FLOAT_BITS
    after = sum(r["bits_after"] for r in rows) + dense_bits if known else None
    before = (compressed + plan.dense_numel) * FLOAT_BITS
    return {
        "tasks": rows,
        "dense": list(plan.dense),
        "dense_params": plan.dense_numel,
        "compressed_weights": compressed,
        "params_before": compressed + plan.dense_numel,
        "bits_before": before,
        "params_after": sum(r["params_after"] for r in rows) + plan.dense_numel if known else None,
        "bits_after": after,
        "buffers": list(plan.buffers),
        "buffer_values": plan.buffer_numel,
        "buffer_bits": plan.buffer_bits,
        "total_bits_before": before + plan.buffer_bits,
        "total_bits_after": after + plan.buffer_bits if after is not None else None,
        "ratio": _ratio(before + plan.buffer_bits, after + plan.buffer_bits if after is not None else None),
    }


def schedule_ends(plan: Plan) -> tuple[float, float] | None:
    """The first and last μ of the plan's schedule, or None when the schedule decides its μ
    during the run (it has no ``values()`` before it, or they are empty)."""
    values = getattr(plan.settings.mu, "values", None)
    try:
        mus = tuple(float(m) for m in values()) if callable(values) else ()
    except (TypeError, ValueError):  # a schedule that needs the run to tell its μ
        mus = ()
    return (mus[0], mus[-1]) if mus else None


@torch.no_grad()
def penalty_sizes(plan: Plan, model: nn.Module, mus: Sequence[float]) -> list[dict[str, Any]]:
    """What each penalty form (:attr:`~lcdsl.operators.base.Operator.penalty_form`) keeps on the
    model's current weights, at each μ of ``mus``: one C step there (λ = 0), its size and its
    words (``rank 50 of 300``).

    A penalty form's size is known only from θ, and θ from the weights and μ; on the reference
    weights, the first μ of the schedule gives what direct compression's first L step is pulled
    towards, the last μ what the weights would keep if the L steps never moved them.

    Returns:
        One dict a penalty task: ``task``, ``operator``, ``weights``, and ``at``: one
        ``{"mu", "params", "bits", "ratio", "kept"}`` per μ (``ratio`` against 32-bit weights).
    """
    by_name = parameters_by_name(model)
    rows = []
    for task in plan.tasks:
        op = task.operator
        if not op.penalty_form:
            continue
        view = task.view
        w = view.gather([by_name[name].detach() for name in task.parameters])  # the view's shape
        at = []
        for mu in mus:
            theta = op.project(w, mu=float(mu))
            size = op.storage(view.shape, theta)
            at.append(
                {
                    "mu": float(mu),
                    "params": size.params if size else None,
                    "bits": size.bits if size else None,
                    "ratio": _ratio(task.numel * FLOAT_BITS, size.bits if size else None),
                    "kept": op.chosen(theta, view.shape),
                }
            )
        rows.append({"task": task.name, "operator": describe(op), "weights": task.numel, "at": at})
    return rows


def chosen_storages(plan: Plan, budgets: list[dict[str, Any]]) -> list[Storage | None]:
    """Each task's predicted size, a budgeted task's that of the option :func:`budget_choices`
    chose for it (a choice has no size of its own before its C step)."""
    chosen = {row["task"]: row["index"] for budget in budgets for row in budget["tasks"]}
    return [
        task.operator.options[chosen[task.name]].storage(task.view_shape) if task.name in chosen
        else task.predicted_storage()
        for task in plan.tasks
    ]  # fmt: skip


def budget_choices(plan: Plan, model: nn.Module) -> list[dict[str, Any]]:
    """What each budget of the plan would choose by direct compression of the model's current
    weights: each task's option distortions (:meth:`~lcdsl.operators.choice.Choice.distortions`,
    μ → 0), the exact allocation under the limit (:func:`lcdsl.budget.knapsack.allocate`), and
    the chosen options' costs against the limit.

    Returns:
        One dict a budget: ``budget`` (its text), ``unit``, ``limit``, ``total`` (the chosen
        options' summed cost), and ``tasks``: one ``{"task", "index", "choice", "cost", "cheapest",
        "dearest"}`` per task, in the budget's order.
    """
    by_name = parameters_by_name(model)
    tasks = {task.name: task for task in plan.tasks}
    out = []
    for budget in plan.budgets:
        distortions = []
        for name in budget.tasks:
            task = tasks[name]
            w = task.view.gather([by_name[p].detach() for p in task.parameters])  # the view's shape
            distortions.append(checked_table(task.operator, w, 0.0, f"task {name} (budget '{budget.shown}')").tolist())
        picked = allocate(budget.costs, distortions, budget.limit)
        rows = [
            {
                "task": name,
                "index": i,
                "choice": tasks[name].operator.labels[i],
                "cost": budget.costs[t][i],
                "cheapest": min(budget.costs[t]),
                "dearest": max(budget.costs[t]),
            }
            for t, (name, i) in enumerate(zip(budget.tasks, picked))
        ]
        out.append(
            {
                "budget": budget.shown,
                "line": budget.rule.span.line if budget.rule is not None and budget.rule.span is not None else None,
                "unit": budget.unit,
                "limit": budget.limit,
                "total": sum(r["cost"] for r in rows),
                "tasks": rows,
            }
        )
    return out
