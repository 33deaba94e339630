"""The package's layers: imports go only downward, so no module needs a lazy import to avoid a cycle.

Order (DESIGN §6): errors, formats < language < operators < plugins < plan < engine < store < report <
training < cli/integrations. A module may import its own layer and the layers below; imports
under ``if TYPE_CHECKING:`` are annotations and never run, so they are not counted. The only edges
upward are the documented conveniences in :data:`ALLOWED`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lcdsl

PACKAGE = Path(lcdsl.__file__).parent

LAYERS: dict[str, int] = {
    "lcdsl._version": 0, "lcdsl.errors": 0, "lcdsl.faults": 0, "lcdsl.formats": 0, "lcdsl._compat": 0,
    "lcdsl.language": 1,
    "lcdsl.operators": 2, "lcdsl.testing": 2,
    "lcdsl.plugins": 3, "lcdsl.budget": 3,
    "lcdsl.plan": 4, "lcdsl.project": 4,
    "lcdsl.engine": 5,
    "lcdsl.store": 6, "lcdsl.deploy": 6,
    "lcdsl.report": 7,
    "lcdsl.training": 8,
    "lcdsl.cli": 9, "lcdsl.integrations": 9, "lcdsl.__main__": 9, "lcdsl": 10,
}  # fmt: skip
"""The layer of each top-level module or subpackage of lcdsl."""

ALLOWED = {
    ("lcdsl.language.spec", "lcdsl.plan"),  # Spec.bind(model): the spec's shortcut to lcdsl.plan.bind
}
"""(importer, imported unit) pairs allowed to go upward."""


def _unit(module: str) -> str:
    """The top-level module or subpackage a dotted name belongs to (``lcdsl.plan.binder`` → ``lcdsl.plan``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every lcdsl import that runs, at any depth, outside ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lcdsl":  # from lcdsl import x: x may be a submodule
                found.extend((node.lineno, f"lcdsl.{a.name}") for a in node.names)
            elif node.module.startswith("lcdsl."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("lcdsl."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def upward_imports() -> list[str]:
    """Every import that goes up a layer, as ``path:line: importer (layer) imports unit (layer)``."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        here = LAYERS[_unit(importer)]
        for line, imported in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            unit = _unit(imported)
            if unit not in LAYERS:
                unit = imported.rsplit(".", 1)[0]  # from lcdsl import __version__ and the like
            there = LAYERS[unit]
            if there > here and (importer, unit) not in ALLOWED:
                rel = path.relative_to(PACKAGE.parent)
                problems.append(f"{rel}:{line}: {importer} (layer {here}) imports {imported} (layer {there})")
    return problems


def test_every_module_has_a_layer():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS), f"modules without a layer: {sorted(units - set(LAYERS))}"


def test_imports_only_go_down():
    problems = upward_imports()
    assert not problems, "imports that go up a layer:\n" + "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path):
    tree = ast.parse("import torch\nif TYPE_CHECKING:\n    from lcdsl.engine import Engine\ndef f():\n    from lcdsl.cli import main\n")
    assert _imports(tree) == [(5, "lcdsl.cli")]
