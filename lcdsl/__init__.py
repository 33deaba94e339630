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

from lcdsl.engine import Engine, plan_fingerprint
from lcdsl.errors import DataError, Diagnostic, EngineError, LcdslError, ModelError, PluginError, Span, SpecError
from lcdsl.events import EventBus, StepRecord
from lcdsl.export import ExportSizes, export_model, load_lcz, read_manifest
from lcdsl.fmt import format_spec
from lcdsl.hookspecs import hookimpl
from lcdsl.operators.base import Operator, Storage, Theta, describe
from lcdsl.parser import load, parse, parse_expression
from lcdsl.plan import Plan, Task, bind
from lcdsl.project import Projection, project
from lcdsl.registry import Registry, default_registry
from lcdsl.settings import Explicit, Geometric, Settings
from lcdsl.spec import Argument, Call, Exclude, JointGroup, NameSelector, Percent, Rule, Setting, Spec, TypeSelector

__version__ = "0.1.0"

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
    "Settings",
    "Geometric",
    "Explicit",
    # operators and plugins
    "Operator",
    "Storage",
    "Theta",
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
]
