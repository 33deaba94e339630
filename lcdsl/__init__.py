"""lcdsl: a declarative, plugin-based model-compression language for PyTorch.

Write which parameters get which compression in a ``.lc`` spec, bind it to a model, and run the
Learning-Compression algorithm::

    import lcdsl

    spec = lcdsl.load("specs/lenet300-mixed.lc")
    plan = spec.bind(model)                 # SpecError, with every problem, if it does not fit
    engine = lcdsl.Engine(model, plan)
    engine.run(l_step)                      # your training loop for one L step
    thetas = engine.finalize()              # weights ← Δ(θ); θ is what gets stored
"""

from lcdsl import _compat
from lcdsl._version import __version__
from lcdsl.engine import Engine, EventBus, StepRecord, plan_fingerprint
from lcdsl.errors import (
    BudgetError,
    DataError,
    Diagnostic,
    EngineError,
    LcdslError,
    ModelError,
    PluginError,
    Span,
    SpecError,
)  # fmt: skip
from lcdsl.language import (
    Argument,
    Call,
    Exclude,
    JointGroup,
    NameSelector,
    Percent,
    Rule,
    Setting,
    Spec,
    TypeSelector,
    format_spec,
    load,
    parse,
    parse_expression,
)  # fmt: skip
from lcdsl.operators import Choice, Operator, Storage, Theta, View, describe, hookimpl
from lcdsl.plan import Auto, Budget, Explicit, Geometric, Plan, Settings, Task, bind
from lcdsl.plugins import Registry, default_registry
from lcdsl.project import Projection, project
from lcdsl.store import ExportSizes, export_model, load_lcz, load_safetensors, read_manifest

_compat.install()

__all__ = [
    "__version__",
    # the language
    "parse",
    "load",
    "parse_expression",
    "format_spec",
    "Spec",
    "Rule",
    "Setting",
    "Call",
    "Argument",
    "Percent",
    "NameSelector",
    "TypeSelector",
    "Exclude",
    "JointGroup",
    # binding and plans
    "bind",
    "Plan",
    "Task",
    "Budget",
    "Settings",
    "Geometric",
    "Explicit",
    "Auto",
    # operators and plugins
    "Operator",
    "Choice",
    "Storage",
    "Theta",
    "View",
    "describe",
    "project",
    "Projection",
    "hookimpl",
    "Registry",
    "default_registry",
    # the engine
    "Engine",
    "EventBus",
    "StepRecord",
    "plan_fingerprint",
    # export (deploy modules: lcdsl.deploy.deploy)
    "export_model",
    "load_lcz",
    "load_safetensors",
    "read_manifest",
    "ExportSizes",
    # errors
    "LcdslError",
    "SpecError",
    "Diagnostic",
    "Span",
    "PluginError",
    "ModelError",
    "DataError",
    "EngineError",
    "BudgetError",
]
