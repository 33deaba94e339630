"""``lcdsl check SPEC [--model M] [--json]``: parse, validate and (with a model) bind a spec."""

from __future__ import annotations

import argparse
import json
import sys

from lcdsl.language.parser import load
from lcdsl.operators.base import describe
from lcdsl.plan.binder import check_spec
from lcdsl.plan.settings import settings_from_spec
from lcdsl.plan.summary import plan_summary
from lcdsl.report.console import console
from lcdsl.report.plan import plan_table
from lcdsl.report.run import schedule_lines, settings_json
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check one spec; returns the exit code."""
    spec = load(args.spec)
    if args.model is None:
        operators = check_spec(spec)
        settings = settings_from_spec(spec)
        rules = [
            {"line": rule.span.line if rule.span else None, "operator": describe(operators[i])}
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
    model = load_model(args.model)
    plan = spec.bind(model)
    if args.json:
        summary = plan_summary(plan)
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
        out.print(plan_table(plan, title=f"{args.spec} on {args.model}"))
        for line in schedule_lines(plan.settings):
            out.print(line)
    return 0
