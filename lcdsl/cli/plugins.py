"""``lcdsl plugins [--json]``: the installed plugins, their operators, broken and blocked plugins."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from lcdsl.errors import did_you_mean
from lcdsl.plugins.registry import Registry, default_registry
from lcdsl.report.console import console

__all__ = ["add_parser", "run", "registry_json"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``plugins`` sub-command."""
    parser = subparsers.add_parser(
        "plugins",
        help="list installed plugins and the operators each provides",
        description="List the plugins of the entry-point group 'lcdsl' (name, distribution, "
        "version), the operators each provides with the problem it solves, plugins that "
        "failed to load, with the cause, and plugins blocked by LCDSL_BLOCK_PLUGINS or "
        "LCDSL_ALLOW_PLUGINS (never imported). Exit code 1 when a plugin is broken.",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def registry_json(registry: Registry) -> dict[str, Any]:
    """The registry as plain data: plugins with their operators, problems, and blocked plugins."""
    return {
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "operators": [{"name": o, "summary": registry.operators[o].summary()} for o in p.operators],
            }
            for p in registry.plugins
        ],
        "problems": [
            {"name": q.name, "distribution": q.distribution, "version": q.version, "message": q.message}
            for q in registry.problems
        ],
        "blocked": [
            {
                "name": b.name,
                "distribution": b.distribution,
                "version": b.version,
                "reason": b.reason,
                "installed": b.installed,
            }
            for b in registry.blocked
        ],
    }


def _blocked_line(blocked: dict[str, Any], installed: list[str]) -> str:
    """One blocked plugin, as rich markup."""
    name = escape(blocked["name"])
    if blocked["installed"]:
        where = f" ({escape(blocked['distribution'])} {escape(blocked['version'])})"
        return f"[yellow]blocked plugin[/] [bold]{name}[/]{where} {escape(blocked['reason'])}"
    hint = did_you_mean(blocked["name"], installed)
    return (
        f"[yellow]blocked plugin[/] [bold]{name}[/] {escape(blocked['reason'])}: "
        f"no installed plugin has this name{escape(hint)}"
    )


def run(args: argparse.Namespace) -> int:
    """List the plugins; returns 1 when any plugin is broken, else 0."""
    registry = default_registry()
    data = registry_json(registry)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 1 if registry.problems else 0
    out = console()
    table = Table(title="lcdsl plugins", show_lines=False)
    table.add_column("plugin", style="bold")
    table.add_column("distribution")
    table.add_column("version")
    table.add_column("operator", style="cyan")
    table.add_column("solves")
    for plugin in data["plugins"]:
        operators = plugin["operators"] or [{"name": "-", "summary": "(provides no operators)"}]
        for i, op in enumerate(operators):
            head = (plugin["name"], plugin["distribution"], plugin["version"]) if i == 0 else ("", "", "")
            table.add_row(*head, op["name"], op["summary"])
    out.print(table)
    for problem in data["problems"]:
        label = f"({problem['distribution']} {problem['version']})"
        # the message names the plugin too (for logs and --json); the line says it once
        message = problem["message"].removeprefix(f"plugin '{problem['name']}' {label}: ")
        out.print(
            f"[bold red]broken plugin[/] [bold]{escape(problem['name'])}[/] {escape(label)}: [red]{escape(message)}[/]",
            markup=True,
            highlight=False,
        )
    installed = [p["name"] for p in data["plugins"]] + [q["name"] for q in data["problems"]]
    installed += [b["name"] for b in data["blocked"] if b["installed"]]
    for blocked in data["blocked"]:
        out.print(_blocked_line(blocked, installed), markup=True, highlight=False)
    return 1 if registry.problems else 0
