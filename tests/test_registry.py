"""The plugin manager and registry, over fake entry points; and ``lcdsl plugins``."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import types
from typing import ClassVar

import attrs
import pytest

import lcdsl.operators.builtin
from lcdsl.cli import main
from lcdsl.errors import PluginError
from lcdsl.operators.base import Operator, Storage
from lcdsl.operators.builtin import FAMILIES
from lcdsl.plugins.hookspecs import hookimpl
from lcdsl.plugins.registry import (
    ALLOW_ENV,
    BLOCK_ENV,
    PluginManager,
    Registry,
    UnknownOperatorError,
    default_registry,
    get_plugin_manager,
)


def _operator(op_name: str, doc: str = "argmin_θ ‖w − θ‖² (a test operator)."):
    @attrs.frozen
    class Op(Operator):
        name: ClassVar[str] = op_name

        def project(self, w, mu=0.0, warm=None):
            return {"w": w.clone()}

        def decompress(self, theta, shape):
            return theta["w"].reshape(shape).clone()

        def storage(self, shape, theta=None):
            return Storage(0, 0)

    Op.__doc__ = doc
    Op.__qualname__ = f"Op_{op_name}"
    return Op


Alpha, Beta, Gamma = _operator("alpha"), _operator("beta"), _operator("gamma")


def _plugin(module_name: str, *returned) -> types.ModuleType:
    """A module whose hook returns ``returned``."""
    module = types.ModuleType(module_name)

    @hookimpl
    def lcdsl_register_operators():
        return list(returned)

    module.lcdsl_register_operators = lcdsl_register_operators
    return module


@attrs.frozen
class FakeDist:
    name: str
    version: str


@attrs.frozen
class FakeEntryPoint:
    """What pluggy's tests do: an entry point whose load() returns (or raises) what we say."""

    name: str
    value: str
    dist: FakeDist | None
    target: object = None
    group: str = "lcdsl"

    def load(self):
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


def _ep(name, target, dist="lcdsl-x", version="1.0", value=None):
    return FakeEntryPoint(name, value or f"plugin_{name}", FakeDist(dist, version), target)


BUILTIN_EP = FakeEntryPoint(
    "builtin", "lcdsl.operators.builtin", FakeDist("lcdsl", "0.1.0"), _plugin("fake_builtin", Alpha)
)


@pytest.fixture
def entry_points(monkeypatch):
    """Install a list of fake entry points for the group ``lcdsl``."""
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    installed: list[FakeEntryPoint] = []

    def fake(*, group=None, **kwargs):
        assert group == "lcdsl"
        return list(installed)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)

    def install(*eps):
        installed[:] = eps

    return install


def test_operators_come_from_every_entry_point_with_their_distribution(entry_points):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta, Gamma), dist="lcdsl-b", version="2.3"))
    registry = Registry.load()
    assert dict(registry.operators) == {"alpha": Alpha, "beta": Beta, "gamma": Gamma}
    assert [(p.name, p.distribution, p.version, p.operators) for p in registry.plugins] == [
        ("builtin", "lcdsl", "0.1.0", ("alpha",)),
        ("b", "lcdsl-b", "2.3", ("beta", "gamma")),
    ]
    assert registry.problems == ()
    assert registry.versions() == {"builtin": "0.1.0", "b": "2.3"}
    assert registry.provider("gamma").distribution == "lcdsl-b"
    with pytest.raises(TypeError):
        registry.operators["delta"] = Alpha  # read-only


def test_a_plugin_that_fails_to_import_is_a_problem_and_the_rest_work(entry_points):
    cause = ImportError("No module named 'numpyy'")
    entry_points(BUILTIN_EP, _ep("bad", cause, dist="lcdsl-bad", version="0.9"), _ep("b", _plugin("b", Beta)))
    registry = Registry.load()
    assert set(registry.operators) == {"alpha", "beta"}
    (problem,) = registry.problems
    assert (problem.name, problem.distribution, problem.version) == ("bad", "lcdsl-bad", "0.9")
    assert problem.error.__cause__ is cause
    assert isinstance(problem.error, PluginError)
    assert "plugin 'bad' (lcdsl-bad 0.9): cannot import plugin_bad" in problem.message
    assert "ImportError: No module named 'numpyy'" in problem.message


def _raising_plugin():
    module = types.ModuleType("raising")

    @hookimpl
    def lcdsl_register_operators():
        raise RuntimeError("boom")

    module.lcdsl_register_operators = lcdsl_register_operators
    return module


class NotAnOperator:
    name = "nope"


@attrs.frozen
class Nameless(Operator):
    """argmin of nothing."""


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (_raising_plugin(), "lcdsl_register_operators failed: RuntimeError: boom"),
        (_plugin("p", NotAnOperator), "which is not an Operator subclass"),
        (_plugin("p", Beta, "quant"), "returned 'quant', which is not an Operator subclass"),
        (_plugin("p", Nameless), "operator class Nameless has no valid 'name'"),
        (types.ModuleType("empty"), "implements no lcdsl hook"),
    ],
    ids=["hook-raises", "not-an-operator", "a-string", "no-name", "no-hook"],
)
def test_a_broken_plugin_is_named_with_its_distribution(entry_points, plugin, message):
    entry_points(BUILTIN_EP, _ep("broken", plugin, dist="lcdsl-broken", version="4.5"))
    registry = Registry.load()
    assert set(registry.operators) == {"alpha"}
    assert [p.name for p in registry.plugins] == ["builtin"]
    (problem,) = registry.problems
    assert problem.message.startswith("plugin 'broken' (lcdsl-broken 4.5): ")
    assert message in problem.message


def test_a_hook_returning_none_is_a_problem(entry_points):
    module = types.ModuleType("none")
    module.lcdsl_register_operators = hookimpl(lambda: None)
    entry_points(BUILTIN_EP, _ep("none", module))
    (problem,) = Registry.load().problems
    assert "returned None, not a list of operator classes" in problem.message


def test_two_plugins_providing_one_name_is_an_error_naming_both(entry_points):
    other_alpha = _operator("alpha")
    entry_points(BUILTIN_EP, _ep("rival", _plugin("rival", other_alpha), dist="lcdsl-rival", version="1.2"))
    with pytest.raises(PluginError) as info:
        Registry.load()
    text = str(info.value)
    assert "operator 'alpha' is provided by 'builtin' (lcdsl 0.1.0) and by 'rival' (lcdsl-rival 1.2)" in text
    assert BLOCK_ENV in text


def test_one_plugin_providing_two_classes_of_one_name_is_an_error(entry_points):
    entry_points(BUILTIN_EP, _ep("twice", _plugin("twice", Beta, _operator("beta"))))
    with pytest.raises(PluginError, match="operator 'beta' is provided twice"):
        Registry.load()


def test_the_same_class_returned_twice_is_fine(entry_points):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta, Beta)))
    assert Registry.load().plugins[1].operators == ("beta",)


def test_two_distributions_declaring_one_entry_point_name(entry_points):
    entry_points(
        BUILTIN_EP, _ep("b", _plugin("b1", Beta), dist="one"), _ep("b", _plugin("b2", Gamma), dist="two")
    )
    registry = Registry.load()
    assert set(registry.operators) == {"alpha", "beta"}
    (problem,) = registry.problems
    assert problem.distribution == "two"
    assert "another distribution (one 1.0) already declares" in problem.message


def test_block_env_var_blocks_by_entry_point_name(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta)), _ep("c", _plugin("c", Gamma)))
    monkeypatch.setenv(BLOCK_ENV, "b, nonexistent")
    assert set(Registry.load().operators) == {"alpha", "gamma"}
    monkeypatch.setenv(BLOCK_ENV, "builtin,c")
    assert set(Registry.load().operators) == {"beta"}


def test_allow_env_var_loads_only_those_and_builtin(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta)), _ep("c", _plugin("c", Gamma)))
    monkeypatch.setenv(ALLOW_ENV, "c")
    assert set(Registry.load().operators) == {"alpha", "gamma"}


def test_arguments_override_the_env_vars(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta)), _ep("c", _plugin("c", Gamma)))
    monkeypatch.setenv(BLOCK_ENV, "b")
    monkeypatch.setenv(ALLOW_ENV, "b")
    assert set(Registry.load(block=(), allow=["c"]).operators) == {"alpha", "gamma"}
    assert set(Registry.load(block=["c"], allow=()).operators) == {"alpha"}


def test_a_blocked_plugin_is_not_even_imported(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("bad", ImportError("should not be loaded")))
    monkeypatch.setenv(BLOCK_ENV, "bad")
    assert Registry.load().problems == ()


def test_without_the_builtin_entry_point_the_builtins_are_registered_directly(entry_points):
    entry_points(_ep("b", _plugin("b", Beta)))  # a source tree: no installed metadata for lcdsl
    pm = get_plugin_manager()
    assert pm.get_plugin("builtin") is lcdsl.operators.builtin
    assert pm.source("builtin")[0] == "lcdsl"
    assert set(pm.list_name_plugin()) >= {("b", pm.get_plugin("b")), ("builtin", lcdsl.operators.builtin)}
    assert get_plugin_manager(block=["builtin"]).get_plugin("builtin") is None
    assert [p.name for p in Registry.load().plugins] == ["builtin", "b"]


def test_builtins_load_first_then_the_rest_by_name(entry_points):
    entry_points(_ep("z", _plugin("z", Gamma)), _ep("b", _plugin("b", Beta)), BUILTIN_EP)
    assert [p.name for p in Registry.load().plugins] == ["builtin", "b", "z"]


def test_a_hand_built_plugin_manager(entry_points):
    pm = PluginManager()
    pm.add_plugin(_plugin("x", Gamma), "x", "lcdsl-x", "7")
    registry = Registry.load(plugin_manager=pm)
    assert registry.versions() == {"x": "7"}
    assert registry.operator("gamma") is Gamma


def test_unknown_operator_is_a_key_error_with_did_you_mean(entry_points):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta)))
    registry = Registry.load()
    with pytest.raises(KeyError) as info:
        registry.operator("alpah")
    assert isinstance(info.value, UnknownOperatorError)
    assert str(info.value) == "unknown operator 'alpah'; did you mean 'alpha'?"
    with pytest.raises(KeyError, match="known operators: alpha, beta"):
        registry.operator("zzz")


def test_default_registry_is_cached():
    assert default_registry() is default_registry()


def test_importing_the_registry_loads_no_plugin():
    code = (
        "import sys, lcdsl.plugins.registry; "
        "print(sorted(m for m in sys.modules if m.startswith('lcdsl.operators.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out))
    families = {f"lcdsl.operators.{name}" for name in (*FAMILIES, "builtin")}
    assert "lcdsl.operators.base" in loaded and not loaded & families


# ---------------------------------------------------------------- lcdsl plugins


@pytest.fixture
def fake_default(entry_points, monkeypatch):
    entry_points(
        BUILTIN_EP,
        _ep("b", _plugin("b", Beta), dist="lcdsl-b", version="2.0"),
        _ep("bad", ImportError("no [red]such[/] module"), dist="lcdsl-bad", version="0.1"),
    )
    registry = Registry.load()
    monkeypatch.setattr("lcdsl.cli.plugins.default_registry", lambda: registry)


def test_plugins_command_json(fake_default, capsys):
    assert main(["plugins", "--json"]) == 1  # a broken plugin makes the exit code 1
    data = json.loads(capsys.readouterr().out)
    assert data["plugins"][1] == {
        "name": "b",
        "distribution": "lcdsl-b",
        "version": "2.0",
        "operators": [{"name": "beta", "summary": "argmin_θ ‖w − θ‖² (a test operator)."}],
    }
    (problem,) = data["problems"]
    assert problem["name"] == "bad" and problem["distribution"] == "lcdsl-bad"
    assert "ImportError: no [red]such[/] module" in problem["message"]


def test_plugins_command_table(fake_default, capsys):
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "lcdsl-b" in out and "beta" in out and "argmin_θ ‖w − θ‖² (a test operator)." in out
    assert "broken plugin bad (lcdsl-bad 0.1)" in out
    assert "no [red]such[/] module" in out  # printed as text, not taken as markup


def test_plugins_command_on_the_installed_plugins(capsys):
    assert main(["plugins", "--json"]) == (1 if default_registry().problems else 0)
    names = [p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]]
    assert "builtin" in names
