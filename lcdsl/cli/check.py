"""``lcdsl check SPEC [--model M] [--json]``: parse, validate and (with a model) bind a spec."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from torch import nn

from lcdsl.cli.train import build_model
from lcdsl.errors import Diagnostic, ModelError, SpecError
from lcdsl.language.fmt import format_budget, format_expression
from lcdsl.language.parser import load
from lcdsl.operators.base import describe
from lcdsl.plan.binder import check_spec
from lcdsl.plan.model import Plan
from lcdsl.engine.schedule import probe_mus
from lcdsl.plan.settings import Auto, settings_from_spec
from lcdsl.plan.summary import budget_choices, chosen_storages, penalty_sizes, plan_summary, schedule_ends
from lcdsl.report.console import console
from lcdsl.report.plan import PENALTY_NOTE, budget_table, penalty_table, plan_table
from lcdsl.report.run import schedule_lines, settings_json
from lcdsl.store.atomic import load_checkpoint
from lcdsl.store.checkpoint import load_reference
from lcdsl.training.data import load_data
from lcdsl.training.zoo import load_model

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``check`` sub-command."""
    parser = subparsers.add_parser(
        "check",
        help="parse a spec and print its plan (tasks, operators, predicted size)",
        description="Parse SPEC, validate operators and settings, and with --model bind it to the "
        "model's parameters and print each task with its predicted size. Exit code 2 on spec errors.",
    )
    parser.add_argument("spec", help="the .lc file")
    parser.add_argument(
        "--model", help="built-in model (lenet300, lenet5) or module:function (runs that module's code)"
    )
    parser.add_argument(
        "--reference", metavar="REF",
        help="trained weights for --model (a file from lcdsl train): penalty forms are sized on them",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _reference_model(path: str, model_name: str) -> nn.Module:
    """``model_name`` sized for the data set the reference file ``path`` names, with its weights.

    Raises:
        ModelError: the file is missing, malformed, or for another model.
        DataError: that data set cannot be loaded here.
    """
    state = load_checkpoint(path, error=ModelError)
    data_name = str(state.get("data"))
    if state.get("model") != model_name:  # before sizing a model for data it was never trained on
        raise ModelError(f"{path} was trained for model '{state.get('model')}', not '{model_name}'")
    model = build_model(model_name, load_data(data_name), seed=0)
    load_reference(path, model, model_name=model_name, data_name=data_name)
    return model


def _penalties(plan: Plan, model: nn.Module, weights: str) -> dict[str, Any] | None:
    """What the penalty forms keep on the model's weights, as data (``None`` without penalty
    forms): at the schedule's first and last μ (``ends``), or, under ``auto``, which picks μ in
    the run (``ends`` None), at the decades of μ it may pass through (``mus``)."""
    if not any(task.operator.penalty_form for task in plan.tasks):
        return None
    ends = schedule_ends(plan)
    mus = ends or (probe_mus(plan.settings) if isinstance(plan.settings.mu, Auto) else ())
    return {
        "weights": weights, "ends": list(ends) if ends else None, "mus": list(mus),
        "tasks": penalty_sizes(plan, model, mus) if mus else [],
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Check one spec; returns the exit code."""
    spec = load(args.spec)
    if args.reference and args.model is None:
        raise SpecError(Diagnostic("--reference needs --model (the model the weights are for)", code="bad-option"),
                        filename="command line")  # fmt: skip
    if args.model is None:
        operators = check_spec(spec)
        settings = settings_from_spec(spec)
        rules = [
            {
                "line": rule.span.line if rule.span else None,
                "operator": describe(operators[i]) if i in operators else (
                    format_expression(rule.terms) + (f" {format_budget(rule.budget)}" if rule.budget else "")
                ),  # a choice: no operator before the tensors are known
            }
            for i, rule in enumerate(spec.rules)
        ]
        if args.json:
            payload = {"spec": args.spec, "rules": rules, "settings": settings_json(settings),
                       "schedule": schedule_lines(settings)}  # fmt: skip
            print(json.dumps(payload, indent=2))
        else:
            out = console()
            out.print(f"{args.spec}: ok, {len(rules)} rule(s), {len(spec.settings)} setting(s)")
            for row in rules:
                out.print(f"  line {row['line']}: {row['operator']}")
            for line in schedule_lines(settings):
                out.print(line)
            out.print("(give --model to bind the selectors and see sizes)")
        return 0
    model = _reference_model(args.reference, args.model) if args.reference else load_model(args.model)
    plan = spec.bind(model)
    weights = f"the reference {args.reference}" if args.reference else f"{args.model}'s initial weights"
    penalties = _penalties(plan, model, weights)
    budgets = budget_choices(plan, model)  # what direct compression would choose under each budget
    storages = chosen_storages(plan, budgets)
    if args.json:
        summary = plan_summary(plan, storages)
        summary["penalty_forms"] = penalties
        summary["budgets"] = budgets
        summary["spec"] = args.spec
        summary["model"] = args.model
        summary["settings"] = settings_json(plan.settings)
        summary["schedule"] = schedule_lines(plan.settings)
        summary["ties"] = {name: list(aliases) for name, aliases in plan.ties}
        summary["warnings"] = [
            {"code": w.code, "line": w.span.line if w.span else None, "message": w.message, "hint": w.hint}
            for w in plan.warnings
        ]
        print(json.dumps(summary, indent=2))
    else:
        if plan.warnings:
            print(plan.render_warnings(color=sys.stderr.isatty()), file=sys.stderr)
        out = console()
        out.print(plan_table(plan, storages, title=f"{args.spec} on {args.model}"))
        if penalties is not None:
            _print_penalties(penalties, reference=bool(args.reference))
        for row in budgets:
            out.print(budget_table(row, weights))
        for line in schedule_lines(plan.settings):
            out.print(line)
    return 0


def _print_penalties(penalties: dict[str, Any], *, reference: bool) -> None:
    out = console()
    if not penalties["mus"]:
        out.print(
            "penalty forms: their sizes depend on μ, which this schedule picks during the run; "
            "they are not known before it"
        )
        return
    ends = penalties["ends"] is not None
    out.print(penalty_table(penalties["tasks"], penalties["mus"], penalties["weights"], ends=ends))
    out.print(PENALTY_NOTE)
    if not ends:
        out.print(
            "auto picks μ during the run: the size is settled at the first steps whose L step can move the "
            "weights (the run's console and report.json show each step's μ and size)"
        )
    if not reference:
        out.print("(give --reference REF, trained weights, to size them on the weights LC starts from)")
