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
from lcdsl.plugins.hookspecs import hookimpl, hookspec
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


# ---------------------------------------------------------------- pluggy's validation, one plugin at a time


def _module(module_name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(module_name)
    for attr, function in hooks.items():
        setattr(module, attr, function)
    return module


def test_a_misspelled_hook_is_a_broken_plugin_with_did_you_mean(entry_points):
    typo = _module("typo", lcdsl_register_operator=hookimpl(lambda: [Beta]))
    entry_points(BUILTIN_EP, _ep("typo", typo, dist="lcdsl-typo", version="0.2"), _ep("c", _plugin("c", Gamma)))
    pm = get_plugin_manager()
    assert pm.get_plugin("typo") is None  # unregistered, so check_pending passes for the rest
    pm.check_pending()
    registry = Registry.load()
    assert set(registry.operators) == {"alpha", "gamma"}
    (problem,) = registry.problems
    assert (problem.name, problem.distribution, problem.version) == ("typo", "lcdsl-typo", "0.2")
    assert problem.message == (
        "plugin 'typo' (lcdsl-typo 0.2): implements unknown hook 'lcdsl_register_operator'; "
        "did you mean 'lcdsl_register_operators'?"
    )


def test_an_unknown_hook_far_from_any_lists_the_hooks(entry_points):
    entry_points(BUILTIN_EP, _ep("odd", _module("odd", lcdsl_make_coffee=hookimpl(lambda: None))))
    (problem,) = Registry.load().problems
    assert "implements unknown hook 'lcdsl_make_coffee' (lcdsl hooks: lcdsl_deploy_layer, lcdsl_register_layouts, lcdsl_register_operators)" in problem.message


def test_an_optional_unknown_hook_is_allowed(entry_points):
    """pluggy's optionalhook: an implementation for a hook a later lcdsl may have."""
    module = _plugin("later", Beta)
    module.lcdsl_future_hook = hookimpl(optionalhook=True)(lambda: None)
    entry_points(BUILTIN_EP, _ep("later", module))
    registry = Registry.load()
    assert registry.problems == () and "beta" in registry.operators


def test_a_hook_with_an_unknown_argument_is_a_broken_plugin(entry_points):
    @hookimpl
    def lcdsl_register_operators(registry):
        return [Beta]

    entry_points(
        BUILTIN_EP,
        _ep("args", _module("args", lcdsl_register_operators=lcdsl_register_operators), dist="lcdsl-args"),
        _ep("c", _plugin("c", Gamma)),
    )
    assert get_plugin_manager().get_plugin("args") is None
    registry = Registry.load()
    assert set(registry.operators) == {"alpha", "gamma"}
    (problem,) = registry.problems
    assert problem.message.startswith("plugin 'args' (lcdsl-args 1.0): ")
    assert "hook lcdsl_register_operators takes an argument the hook specification does not have" in problem.message
    assert "'registry' (its arguments: none)" in problem.message


def test_a_hook_with_a_keyword_only_parameter_is_a_broken_plugin(entry_points):
    """pluggy passes arguments only to ordinary parameters: one after ``*`` would never be filled."""

    @hookimpl
    def lcdsl_register_operators(*, device="cpu"):
        return [Beta]

    entry_points(BUILTIN_EP, _ep("kw", _module("kw", lcdsl_register_operators=lcdsl_register_operators)))
    (problem,) = Registry.load().problems
    assert "keyword-only parameters ('device'), which pluggy never fills" in problem.message


def test_a_hook_without_the_marker_is_named(entry_points):
    entry_points(BUILTIN_EP, _ep("bare", _module("bare", lcdsl_register_operators=lambda: [Beta])))
    (problem,) = Registry.load().problems
    assert "implements no lcdsl hook: lcdsl_register_operators lacks @hookimpl" in problem.message
    assert "from lcdsl.operators import hookimpl" in problem.message


def test_a_hand_registered_plugin_is_validated_too():
    pm = PluginManager()
    pm.add_plugin(_module("typo", lcdsl_register_operators_=hookimpl(lambda: [Beta])), "typo", "lcdsl-typo", "1")
    pm.add_plugin(_plugin("x", Gamma), "x", "lcdsl-x", "7")
    registry = Registry.load(plugin_manager=pm)
    assert set(registry.operators) == {"gamma"}
    (problem,) = registry.problems
    assert "unknown hook 'lcdsl_register_operators_'; did you mean 'lcdsl_register_operators'?" in problem.message


class _FutureSpecs:
    """lcdsl_register_operators as a later lcdsl might declare it, with an argument."""

    @hookspec
    def lcdsl_register_operators(self, lcdsl_version):
        """Provide operator classes, knowing lcdsl's version."""


def test_a_hook_gaining_an_argument_keeps_implementations_that_take_none():
    """pluggy's argument filtering, through the one call the registry makes per plugin."""
    seen = []

    @hookimpl
    def lcdsl_register_operators(lcdsl_version):
        seen.append(lcdsl_version)
        return [Gamma]

    pm = PluginManager(specs=_FutureSpecs)
    pm.add_plugin(_plugin("old", Beta), "old")  # written when the hook took no argument
    pm.add_plugin(_module("new", lcdsl_register_operators=lcdsl_register_operators), "new")
    assert pm.problems == []
    assert pm.implementers("lcdsl_register_operators") == ["old", "new"]
    assert pm.call_one("lcdsl_register_operators", "old", lcdsl_version="9.0") == [[Beta]]
    assert pm.call_one("lcdsl_register_operators", "new", lcdsl_version="9.0") == [[Gamma]]
    assert seen == ["9.0"]


def test_one_plugin_is_called_alone():
    calls = []

    def plugin(name, cls):
        @hookimpl
        def lcdsl_register_operators():
            calls.append(name)
            return [cls]

        return _module(name, lcdsl_register_operators=lcdsl_register_operators)

    pm = PluginManager()
    pm.add_plugin(plugin("b", Beta), "b")
    pm.add_plugin(plugin("c", Gamma), "c")
    assert pm.call_one("lcdsl_register_operators", "c") == [[Gamma]]
    assert calls == ["c"]
    assert [p.name for p in Registry.load(plugin_manager=pm).plugins] == ["b", "c"]


@pytest.mark.parametrize(
    "op_name", ["quänt", "q-uant", "2bits", "ｑuant"], ids=["umlaut", "dash", "digit-first", "fullwidth"]
)
def test_an_operator_name_no_spec_can_call_is_a_broken_plugin(entry_points, op_name):
    entry_points(BUILTIN_EP, _ep("intl", _plugin("intl", _operator(op_name)), dist="lcdsl-intl", version="3"))
    registry = Registry.load()
    assert set(registry.operators) == {"alpha"}
    (problem,) = registry.problems
    assert problem.message.startswith("plugin 'intl' (lcdsl-intl 3): lcdsl_register_operators failed")
    assert f"is named {op_name!r}, which no spec can call" in problem.message
    assert "ASCII letters, digits and '_'" in problem.message


# ---------------------------------------------------------------- blocking through pluggy


def test_blocking_goes_through_pluggy_set_blocked(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta), dist="lcdsl-b", version="2"), _ep("c", _plugin("c", Gamma)))
    pm = get_plugin_manager(block=["b"])
    assert pm.is_blocked("b") and not pm.is_blocked("c")
    assert pm.blocked() == ["b"]
    pm.register(_plugin("b-again", Beta), name="b")  # pluggy refuses a blocked name
    assert pm.get_plugin("b") is None
    registry = Registry.load(plugin_manager=pm)
    assert set(registry.operators) == {"alpha", "gamma"}
    (blocked,) = registry.blocked
    assert (blocked.name, blocked.distribution, blocked.version, blocked.installed) == ("b", "lcdsl-b", "2", True)
    assert blocked.reason == "by the block argument"
    monkeypatch.setenv(BLOCK_ENV, "c")
    assert [(b.name, b.reason) for b in Registry.load().blocked] == [("c", f"by {BLOCK_ENV}")]


def test_the_allow_list_blocks_the_others_through_pluggy(entry_points, monkeypatch):
    entry_points(BUILTIN_EP, _ep("b", _plugin("b", Beta)), _ep("c", ImportError("never imported")))
    monkeypatch.setenv(ALLOW_ENV, "b")
    registry = Registry.load()
    assert registry.problems == ()
    assert [(b.name, b.reason) for b in registry.blocked] == [("c", f"not in {ALLOW_ENV}")]


def test_a_blocked_name_that_no_plugin_has_is_listed_as_not_installed(entry_points):
    entry_points(BUILTIN_EP, _ep("pow2", _plugin("pow2", Beta)))
    (blocked,) = Registry.load(block=["pwo2"]).blocked
    assert (blocked.name, blocked.installed) == ("pwo2", False)


def test_add_plugin_of_a_blocked_name_registers_nothing():
    pm = PluginManager()
    pm.block("x", "by hand")
    pm.add_plugin(_plugin("x", Gamma), "x")
    registry = Registry.load(plugin_manager=pm)
    assert registry.operators == {} and registry.problems == ()
    assert [(b.name, b.reason) for b in registry.blocked] == [("x", "by hand")]


def test_blocking_the_builtins_without_their_entry_point(entry_points):
    entry_points(_ep("b", _plugin("b", Beta)))  # a source tree
    registry = Registry.load(block=["builtin"])
    assert set(registry.operators) == {"beta"}
    (blocked,) = registry.blocked
    assert (blocked.name, blocked.distribution, blocked.installed) == ("builtin", "lcdsl", True)


@pytest.fixture
def fake_broken_and_blocked(entry_points, monkeypatch):
    entry_points(
        BUILTIN_EP,
        _ep("b", _plugin("b", Beta), dist="lcdsl-b", version="2.0"),
        _ep("typo", _module("typo", lcdsl_register_operator=hookimpl(lambda: [Gamma])), dist="lcdsl-typo"),
        _ep("off", ImportError("never imported"), dist="lcdsl-off", version="0.3"),
    )
    registry = Registry.load(block=["off", "bb"])
    monkeypatch.setattr("lcdsl.cli.plugins.default_registry", lambda: registry)


def test_plugins_command_shows_misspelled_and_blocked(fake_broken_and_blocked, capsys):
    assert main(["plugins"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # the console may wrap long lines
    assert (
        "broken plugin typo (lcdsl-typo 1.0): implements unknown hook "
        "'lcdsl_register_operator'; did you mean 'lcdsl_register_operators'?"
    ) in out
    assert "blocked plugin off (lcdsl-off 0.3) by the block argument" in out
    assert "blocked plugin bb by the block argument: no installed plugin has this name; did you mean 'b'?" in out


def test_plugins_command_json_lists_blocked(fake_broken_and_blocked, capsys):
    assert main(["plugins", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["blocked"] == [
        {"name": "bb", "distribution": "unknown", "version": "unknown", "reason": "by the block argument",
         "installed": False},
        {"name": "off", "distribution": "lcdsl-off", "version": "0.3", "reason": "by the block argument",
         "installed": True},
    ]  # fmt: skip
    assert [p["name"] for p in data["problems"]] == ["typo"]


def test_an_unhashable_plugin_object_is_a_problem_not_a_crash_of_the_others():
    @attrs.define  # mutable and eq: not hashable
    class Mutable:
        @hookimpl
        def lcdsl_register_operators(self):
            return [Beta]

    pm = PluginManager()
    pm.add_plugin(Mutable(), "mutable", "lcdsl-m", "1")
    pm.add_plugin(_plugin("x", Gamma), "x")
    registry = Registry.load(plugin_manager=pm)
    assert set(registry.operators) == {"gamma"}
    (problem,) = registry.problems
    assert "is not hashable" in problem.message
    with pytest.raises(KeyError, match="no plugin 'mutable' is registered"):
        pm.call_one("lcdsl_register_operators", "mutable")
