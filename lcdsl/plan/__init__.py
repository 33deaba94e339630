"""Plans: a spec bound to a model. Which tensors form which task, under which operator.

:func:`bind` resolves every selector against the model's parameter names (:mod:`.selectors`,
:mod:`.names`), builds each rule's operator through the registry, validates the settings
(:mod:`.settings`), resolves relative amounts (``l0=5%``) against each task's size, and reports
every problem of the spec at once. :mod:`.summary` tells what a plan will do before training.
"""

from lcdsl.operators.base import view_shape
from lcdsl.plan.binder import bind, build_operator, check_spec
from lcdsl.plan.model import Budget, Plan, Task, split_view
from lcdsl.plan.names import buffers_by_name, parameters_by_name, strip_ddp_prefix, task_name, unwrap
from lcdsl.plan.settings import Auto, Explicit, Geometric, Schedule, Settings, settings_data, settings_from_spec
from lcdsl.plan.summary import plan_rows, plan_summary

__all__ = [
    "bind", "build_operator", "check_spec", "Plan", "Task", "Budget", "split_view", "view_shape", "parameters_by_name",
    "buffers_by_name", "strip_ddp_prefix", "task_name", "unwrap", "Settings", "Schedule", "Geometric", "Explicit", "Auto",
    "settings_from_spec", "settings_data", "plan_rows", "plan_summary",
]  # fmt: skip
