"""Every hook is documented with the same skeleton, and the plugin guide stays true."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from pathlib import Path

import pytest
import torch

import lcdsl.plugins.hookspecs as hookspecs
from lcdsl.plugins.hookspecs import PROJECT, hookimpl, hookspec
from lcdsl.plugins.registry import PluginManager, Registry
from lcdsl.testing import check_operator

SECTIONS = ("Called:", "Args:", "Returns:", "Example:")


def _hooks():
    """Every function of the module that carries the hookspec marker."""
    marker = f"{PROJECT}_spec"
    return [
        fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("lcdsl_") or hasattr(fn, marker)
    ]


def test_there_is_at_least_the_operator_hook():
    names = [fn.__name__ for fn in _hooks()]
    assert "lcdsl_register_operators" in names


@pytest.mark.parametrize("hook", _hooks(), ids=lambda fn: fn.__name__)
def test_every_hook_is_a_marked_spec_named_lcdsl_verb_noun(hook):
    assert hasattr(hook, f"{PROJECT}_spec"), f"{hook.__name__} lacks @hookspec"
    assert re.fullmatch(r"lcdsl_[a-z]+_[a-z_]+", hook.__name__)


@pytest.mark.parametrize("hook", _hooks(), ids=lambda fn: fn.__name__)
def test_every_hook_has_the_docstring_skeleton(hook):
    doc = inspect.getdoc(hook)
    assert doc, f"{hook.__name__} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.rstrip().endswith("."), f"{hook.__name__}: the first line must say what it does"
    positions = []
    for section in SECTIONS:
        match = re.search(rf"^{re.escape(section)}\n(\s+\S.*\n?)+", doc, flags=re.MULTILINE)
        assert match, f"{hook.__name__}'s docstring lacks a non-empty '{section}' section"
        positions.append(match.start())
    assert positions == sorted(positions), f"{hook.__name__}: sections must come in the order {SECTIONS}"
    example = doc[doc.index("Example:") :]
    assert "@hookimpl" in example and f"def {hook.__name__}(" in example


@pytest.mark.parametrize("hook", _hooks(), ids=lambda fn: fn.__name__)
def test_every_hook_argument_is_one_pluggy_passes_by_name(hook):
    """Hooks are called with keywords only, which pluggy itself enforces; the specification's
    arguments must therefore be ordinary parameters without defaults: pluggy reads a spec's (and an
    implementation's) argument names from its positional-or-keyword parameters only, so an argument
    after ``*`` would be invisible to it and never passed."""
    params = list(inspect.signature(hook).parameters.values())
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    pm = PluginManager()
    assert getattr(pm.hook, hook.__name__).spec.argnames == tuple(p.name for p in params)


def test_hooks_refuse_positional_arguments():
    """The calling convention: a hook called positionally is an error, so arguments can be added later."""
    pm = PluginManager()
    with pytest.raises(TypeError):
        pm.hook.lcdsl_deploy_layer(None, "weight", None, {}, None, 0)


def test_a_keyword_only_spec_argument_would_be_invisible_to_pluggy():
    """Why the rule above is not 'keyword-only': pluggy drops such arguments from the spec."""

    class Specs:
        @hookspec
        def lcdsl_make_things(self, *, size):
            """Make things."""

    pm = PluginManager(Specs)
    assert pm.hook.lcdsl_make_things.spec.argnames == ()


def test_a_hook_without_docstring_fails_the_check():
    """The checker itself: a fake undocumented hook is caught."""

    @hookspec
    def lcdsl_make_things():
        pass

    with pytest.raises(AssertionError, match="has no docstring"):
        test_every_hook_has_the_docstring_skeleton(lcdsl_make_things)

    @hookspec
    def lcdsl_make_more():
        """Make more.

        Args:
            None.
        """

    with pytest.raises(AssertionError, match="lacks a non-empty 'Called:' section"):
        test_every_hook_has_the_docstring_skeleton(lcdsl_make_more)


def test_markers_belong_to_the_lcdsl_project():
    assert hookspec.project_name == hookimpl.project_name == "lcdsl"


def test_the_guide_example_plugin_works():
    """The module docstring's example plugin, run as written."""
    doc = hookspecs.__doc__
    start = doc.rindex("\n", 0, doc.index("# my_plugin/__init__.py")) + 1
    code = textwrap.dedent(doc[start : doc.index("**2. Declare")])
    namespace: dict = {}
    exec(compile(code, "<guide>", "exec"), namespace)
    module = types.ModuleType("my_plugin")
    module.lcdsl_register_operators = namespace["lcdsl_register_operators"]
    pm = PluginManager()
    pm.add_plugin(module, "sign", "my-plugin", "1.0")
    sign = Registry.load(plugin_manager=pm).operator("sign")()
    report = check_operator(sign, torch.tensor([0.5, -2.0, 0.0, 3.0]))
    assert report.distortion == pytest.approx(0.25 + 1.0 + 1.0 + 4.0)


# ---------------------------------------------------------------- one import for plugin authors

ROOT = Path(__file__).resolve().parents[1]
POW2 = ROOT / "plugins" / "lcdsl-pow2"
AUTHOR_API = {"lcdsl.operators"}
"""What a plugin's own code imports from lcdsl."""
TEST_API = AUTHOR_API | {"lcdsl.testing", "lcdsl"}
"""What a plugin's tests may import besides: the property kit and the public package."""


def _lcdsl_imports(code: str) -> set[str]:
    """Every lcdsl module imported anywhere in ``code`` (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name == "lcdsl" or name.startswith("lcdsl.")}


def _python_blocks(markdown: str) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)]


def test_the_pow2_plugin_imports_only_lcdsl_operators():
    sources = sorted((POW2 / "src").rglob("*.py"))
    assert sources
    for path in sources:
        assert _lcdsl_imports(path.read_text(encoding="utf-8")) <= AUTHOR_API, path


def test_the_pow2_tests_and_readme_use_only_the_author_api():
    for path in sorted((POW2 / "tests").rglob("*.py")):
        assert _lcdsl_imports(path.read_text(encoding="utf-8")) <= TEST_API, path
    for block in _python_blocks((POW2 / "README.md").read_text(encoding="utf-8")):
        assert _lcdsl_imports(block) <= TEST_API, block


def test_the_guide_imports_only_the_author_api():
    """The module docstring, every hook's example, and README's plugin section."""
    doc = hookspecs.__doc__
    def snippet(first_line: str, end: str) -> str:
        return textwrap.dedent(doc[doc.rindex("\n", 0, doc.index(first_line)) + 1 : doc.index(end)])

    guide, tests = snippet("# my_plugin/__init__.py", "**2."), snippet("# tests/test_sign.py", "Hooks are called")
    assert _lcdsl_imports(guide) == AUTHOR_API
    assert _lcdsl_imports(tests) == {"lcdsl.testing"}
    for hook in _hooks():
        example = textwrap.dedent(inspect.getdoc(hook).split("::\n", 1)[1])
        assert _lcdsl_imports(example) <= AUTHOR_API, hook.__name__
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Plugins") :]
    section = section[: section.index("\n## ", 1)]
    blocks = _python_blocks(section)
    assert blocks
    for block in blocks:
        assert _lcdsl_imports(block) <= TEST_API - {"lcdsl"}, block


def test_the_author_api_is_everything_the_plugin_uses():
    import lcdsl_pow2.operator

    import lcdsl.operators

    for name in ("Operator", "Storage", "Theta", "hookimpl", "int_at_least", "Percent"):
        assert name in lcdsl.operators.__all__ and hasattr(lcdsl.operators, name)
    assert lcdsl_pow2.operator.Pow2.__attrs_attrs__.bits.validator.__qualname__.startswith("int_at_least")
