"""What a plan will do, before any training: per task its tensors, operator and predicted size, as data
(:mod:`lcdsl.report.plan` prints it)."""

from __future__ import annotations

from typing import Any

from lcdsl.operators.base import FLOAT_BITS, Storage, describe
from lcdsl.plan.model import Plan

__all__ = ["plan_rows", "plan_summary"]


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
