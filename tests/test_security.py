"""Security: a spec is data, files hold no code, and plugins can be restricted.

- no ``eval``/``exec``/``compile``/``__import__`` call anywhere in ``lcdsl/`` (checked on the AST);
- every ``torch.load`` in ``lcdsl/`` passes ``weights_only=True``, and a pickled payload in a
  reference or compressed file is refused without running;
- hostile specs are spec errors and run nothing;
- ``module:function`` only comes from the command line, whose help says it runs that code;
- ``LCDSL_BLOCK_PLUGINS`` / ``LCDSL_ALLOW_PLUGINS`` work through the CLI.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lcdsl.cli import main
from lcdsl.plugins.registry import ALLOW_ENV, BLOCK_ENV, default_registry

PACKAGE = Path(__file__).resolve().parent.parent / "lcdsl"
SOURCES = sorted(PACKAGE.rglob("*.py"))
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_the_package_has_sources():
    assert len(SOURCES) > 20 and PACKAGE / "language" / "parser.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_eval_exec_compile_or_import_calls(path):
    bad = [
        f"{path.name}:{node.lineno}: {node.func.id}(…)"
        for node in _calls(path)
        if isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
    ]
    assert not bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_torch_load_is_weights_only_and_nothing_unpickles(path):
    for node in _calls(path):
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            target = f"{func.value.id}.{func.attr}"
            assert target not in {"pickle.load", "pickle.loads", "marshal.loads", "dill.load"}, (path, node.lineno)
            if target == "torch.load":
                flags = {kw.arg: kw.value for kw in node.keywords}
                value = flags.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, f"{path.name}:{node.lineno}"


def test_the_checker_would_catch_an_eval(tmp_path):
    """The AST check is not vacuous: it flags a file that calls eval."""
    sample = tmp_path / "sample.py"
    sample.write_text("x = eval('1')\nimport torch\ny = torch.load('f')\n")
    calls = list(_calls(sample))
    assert any(isinstance(c.func, ast.Name) and c.func.id == "eval" for c in calls)
    loads = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "load"]
    assert loads and not loads[0].keywords


HOSTILE = [
    ("import-call", "x = __import__('os').system('touch {marker}')", "unexpected character '.'"),
    ("import-setting", "x = __import__('os')\nfc1 : quant(k=2)", "unknown setting 'x'"),
    ("import-operator", "fc1 : __import__(\"os\")", "unknown operator '__import__'"),
    ("dunder-selector", "__class__ : quant(k=2)", "'__class__' matches no parameter of the model"),
    ("dunder-argument", "fc1 : quant(__class__=2)", "quant() has no argument '__class__'"),
    ("dunder-setting", "__builtins__ = 1\nfc1 : quant(k=2)", "unknown setting '__builtins__'"),
    ("eval-schedule", "mu = eval(\"[1e-3]\")\nfc1 : quant(k=2)", "unknown schedule 'eval'"),
    ("code-string", "penalty = \"__import__('os').system('touch {marker}')\"\nfc1 : quant(k=2)", "must be in"),
    ("attribute-access", "fc1 : quant(k=2).__class__", "unexpected character"),
    ("model-from-spec", "model = \"os:system\"\nfc1 : quant(k=2)", "unknown setting 'model'"),
    ("data-from-spec", "data = \"os:system\"\nfc1 : quant(k=2)", "unknown setting 'data'"),
    ("very-long-int", "fc1 : quant(k=" + "9" * 100_000 + ")", "number too long (100000 characters; at most 100)"),
    ("very-long-float", "lr = 0." + "1" * 5000, "number too long"),
    ("huge-exponent", "lr = 1e99999999\nfc1 : quant(k=2)", "is not a finite float"),
    ("lambda", "fc1 : lambda: quant(k=2)", "error"),
    ("shell", "fc1 : quant(k=$(touch {marker}))", "unexpected character '$'"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_specs_are_spec_errors_and_run_nothing(tmp_path, capsys, text, fragment):
    marker = tmp_path / "pwned"
    spec = tmp_path / "hostile.lc"
    spec.write_text(text.format(marker=marker))
    code = main(["check", str(spec), "--model", "lenet300"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not marker.exists()


class _Payload:
    """Unpickling this would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_in_a_reference_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": "lenet300", "data": "digits", "state_dict": _Payload(marker)}, evil)
    (tmp_path / "q.lc").write_text("fc1 : quant(k=2)\n")
    code = main(["compress", str(tmp_path / "q.lc"), "--reference", str(evil), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "cannot load it" in err and "Traceback" not in err
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: loading it unsafely runs it
    assert marker.exists()


def test_a_pickled_payload_in_a_compressed_model_is_refused(tmp_path):
    from lcdsl.errors import ModelError
    from lcdsl.store.model import load_compressed
    from lcdsl.training.zoo import LeNet300

    marker = tmp_path / "pwned"
    evil = tmp_path / "compressed.pt"
    torch.save({"format": 1, "spec": "fc1 : quant(k=2)", "tasks": {"x": _Payload(marker)}}, evil)
    with pytest.raises(ModelError, match="cannot load it"):
        load_compressed(LeNet300(), evil)
    assert not marker.exists()


def test_the_help_says_a_factory_runs_code(capsys):
    for command in ("check", "compress", "train"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "runs that module's code" in " ".join(capsys.readouterr().out.split())


def test_the_docs_say_a_factory_runs_code():
    text = " ".join((PACKAGE.parent / "docs" / "guarantees.md").read_text().split())
    assert "runs its code" in text and "weights_only=True" in text


# ------------------------------------------------------------------- plugin restrictions


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    default_registry.cache_clear()
    yield monkeypatch
    default_registry.cache_clear()


def plugin_names(capsys) -> list[str]:
    main(["plugins", "--json"])
    return [p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]]


def test_pow2_is_installed_and_usable(fresh_registry, tmp_path, capsys):
    assert "pow2" in plugin_names(capsys)
    (tmp_path / "p.lc").write_text("fc1 : pow2(bits=4)\n")
    assert main(["check", str(tmp_path / "p.lc")]) == 0


@pytest.mark.parametrize(("env", "value"), [(BLOCK_ENV, "pow2"), (ALLOW_ENV, "builtin"), (ALLOW_ENV, "nothing")])
def test_block_and_allow_lists_through_the_cli(fresh_registry, tmp_path, capsys, env, value):
    fresh_registry.setenv(env, value)
    names = plugin_names(capsys)
    assert "pow2" not in names and "builtin" in names
    (tmp_path / "p.lc").write_text("fc1 : pow2(bits=4)\n")
    assert main(["check", str(tmp_path / "p.lc")]) == 2
    assert "unknown operator 'pow2'" in capsys.readouterr().err


def test_blocking_builtin_leaves_only_plugins(fresh_registry, capsys):
    fresh_registry.setenv(BLOCK_ENV, "builtin")
    assert plugin_names(capsys) == ["pow2"]


def test_a_blocked_plugin_is_not_imported_in_a_fresh_process(tmp_path):
    code = (
        "import sys\n"
        "from lcdsl.cli import main\n"
        "code = main(['check', sys.argv[1]])\n"
        "print(code, 'lcdsl_pow2' in sys.modules)\n"
    )
    spec = tmp_path / "p.lc"
    spec.write_text("fc1 : pow2(bits=4)\n")
    env = {**os.environ, BLOCK_ENV: "pow2"}
    env.pop(ALLOW_ENV, None)
    done = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.stdout.split()[-2:] == ["2", "False"]
    assert "unknown operator 'pow2'" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------ plugins are identified by their distribution


class _Dist:
    def __init__(self, name, version="1.0"):
        self.name, self.version = name, version


class _EntryPoint:
    group = "lcdsl"

    def __init__(self, name, value, dist, load):
        self.name, self.value, self.dist, self._load = name, value, _Dist(dist), load

    def load(self):
        return self._load()


def _never():
    raise AssertionError("this entry point must never be imported")


def _raise(exc):
    def load():
        raise exc

    return load


@pytest.fixture
def installed(monkeypatch):
    """Fake entry points for the group ``lcdsl`` (the built-ins come from the source tree)."""
    import importlib.metadata

    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    eps: list[_EntryPoint] = []
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None, **kw: list(eps))
    return eps


@pytest.mark.parametrize("with_own_metadata", [True, False])
def test_another_distribution_named_builtin_is_never_loaded(installed, monkeypatch, with_own_metadata):
    import lcdsl.operators.builtin
    from lcdsl.plugins.registry import Registry

    if with_own_metadata:
        installed.append(_EntryPoint("builtin", "lcdsl.operators.builtin", "lcdsl", lambda: lcdsl.operators.builtin))
    installed.append(_EntryPoint("builtin", "evil.ops", "aaa-evil", _never))  # sorts before lcdsl
    for allow in (None, "builtin"):  # LCDSL_ALLOW_PLUGINS always allows builtin: not this one
        if allow:
            monkeypatch.setenv(ALLOW_ENV, allow)
        registry = Registry.load()
        assert [(p.name, p.distribution) for p in registry.plugins] == [("builtin", "lcdsl")]
        assert "quant" in registry.operators
        (problem,) = registry.problems
        assert (problem.name, problem.distribution) == ("builtin", "aaa-evil")
        assert "only lcdsl itself provides the built-in operators" in problem.message


def test_the_name_clash_message_never_suggests_blocking_the_builtins(installed):
    import types

    import lcdsl.operators.builtin
    from lcdsl.errors import PluginError
    from lcdsl.operators.quant import Quant
    from lcdsl.plugins.hookspecs import hookimpl
    from lcdsl.plugins.registry import Registry

    rival = types.ModuleType("rival")
    rival.lcdsl_register_operators = hookimpl(lambda: [type("Quant2", (Quant,), {})])
    installed.append(_EntryPoint("builtin", "lcdsl.operators.builtin", "lcdsl", lambda: lcdsl.operators.builtin))
    installed.append(_EntryPoint("rival", "rival", "lcdsl-rival", lambda: rival))
    with pytest.raises(PluginError) as info:
        Registry.load()
    assert f"{BLOCK_ENV}=rival" in str(info.value) and f"{BLOCK_ENV}=builtin" not in str(info.value)


def test_unknown_names_in_the_block_and_allow_lists_warn(installed, monkeypatch):
    from lcdsl.plugins.manager import get_plugin_manager

    installed.append(_EntryPoint("pow2", "x", "lcdsl-pow2", _never))
    monkeypatch.setenv(BLOCK_ENV, "pwo2,pow2")
    unknown = f"{BLOCK_ENV} names 'pwo2', which no installed plugin has; did you mean 'pow2'"
    with pytest.warns(UserWarning, match=unknown):
        get_plugin_manager(allow=())
    monkeypatch.delenv(BLOCK_ENV)
    monkeypatch.setenv(ALLOW_ENV, "pw2")
    with pytest.warns(UserWarning, match=f"{ALLOW_ENV} names 'pw2'"):
        get_plugin_manager()


class _Custom(BaseException):
    pass


@pytest.mark.parametrize(
    "exc", [SystemExit(3), KeyboardInterrupt("from the plugin"), _Custom("odd")], ids=["exit", "interrupt", "custom"]
)
def test_a_plugin_raising_a_base_exception_at_import_is_a_broken_plugin(installed, exc):
    from lcdsl.plugins.registry import Registry

    installed.append(_EntryPoint("bad", "bad_plugin", "lcdsl-bad", _raise(exc)))
    registry = Registry.load()
    assert "quant" in registry.operators  # the built-ins still work
    (problem,) = registry.problems
    assert problem.distribution == "lcdsl-bad"
    assert f"cannot import bad_plugin: {type(exc).__name__}" in problem.message
    assert problem.error.__cause__ is exc


def test_a_plugin_hook_raising_system_exit_is_a_broken_plugin(installed):
    import types

    from lcdsl.plugins.hookspecs import hookimpl
    from lcdsl.plugins.registry import Registry

    def hook():
        raise SystemExit("bye")

    module = types.ModuleType("exits")
    module.lcdsl_register_operators = hookimpl(hook)
    installed.append(_EntryPoint("exits", "exits", "lcdsl-exits", lambda: module))
    (problem,) = Registry.load().problems
    assert "lcdsl_register_operators failed: SystemExit: bye" in problem.message


def test_a_real_ctrl_c_during_a_plugin_import_still_interrupts(installed):
    import signal

    from lcdsl.plugins.registry import Registry

    def load():
        # raised in this (the main) thread: os.kill may hand it to another of the process's threads
        # (torch's, numba's), whose C handler can flag it only after this frame has moved on
        signal.raise_signal(signal.SIGINT)
        for _ in range(100):  # Python runs the handler at its next check for pending signals
            pass
        raise AssertionError("the signal arrives before this line")

    installed.append(_EntryPoint("slow", "slow_plugin", "lcdsl-slow", load))
    # Python's own handler, as in a fresh `lcdsl` process (a test run may have left another one)
    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            Registry.load()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, outside)


# ------------------------------------------------------------------- files never choose code

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def fn(**kwargs):
    from lcdsl.training.zoo import LeNet300
    return LeNet300(in_features=64)

def data(**kwargs):
    from lcdsl.training.data import load_data
    return load_data("digits")
"""


@pytest.fixture
def evil_run(tmp_path, monkeypatch):
    """A run folder whose compressed.pt names ``evil_module:fn``, shipped with ``evil_module.py``
    (in the current folder, on ``sys.path``) that writes a marker file when imported."""
    import lcdsl
    from lcdsl.engine.core import Engine
    from lcdsl.store.atomic import save_atomic
    from lcdsl.store.model import compressed_state
    from lcdsl.training.zoo import LeNet300

    marker = tmp_path / "pwned"
    (tmp_path / "evil_module.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_module", raising=False)
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    spec = lcdsl.parse("fc1 : quant(k=2)\n")
    plan = spec.bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    run = tmp_path / "run"
    run.mkdir()
    state = compressed_state(model, plan, engine.finalize(), spec_text=spec.source, model_name="evil_module:fn")
    save_atomic(state, run / "compressed.pt")
    yield run, marker
    sys.modules.pop("evil_module", None)


def test_export_never_imports_a_model_a_file_names(evil_run, capsys):
    run, marker = evil_run
    out = run.parent / "m.lcz"
    assert main(["export", str(run), "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "records model 'evil_module:fn', which is not built in" in err and "Traceback" not in err
    assert f"lcdsl export {run} --model evil_module:fn --data digits --out {out}" in err
    assert not marker.exists() and "evil_module" not in sys.modules and not out.exists()
    # named on the command line it is the user's choice, and runs
    assert main(["export", str(run), "--out", str(out), "--model", "evil_module:fn"]) == 0
    assert marker.exists() and out.is_file()


def test_export_never_imports_a_data_set_report_json_names(evil_run, capsys):
    run, marker = evil_run
    (run / "report.json").write_text(json.dumps({"data": "evil_module:data"}))
    assert main(["export", str(run), "--model", "lenet300"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "records data 'evil_module:data', which is not built in" in err
    assert "--model lenet300 --data evil_module:data" in err and not marker.exists()


@pytest.mark.parametrize("recorded", [["os:system"], {"a": 1}, 3], ids=["list", "dict", "int"])
def test_export_refuses_a_recorded_name_that_is_not_a_string(evil_run, capsys, recorded):
    run, marker = evil_run
    state = torch.load(run / "compressed.pt", weights_only=True)
    state["model"] = recorded
    torch.save(state, run / "compressed.pt")
    assert main(["export", str(run)]) == 1
    err = capsys.readouterr().err
    assert "not built in" in err and "Traceback" not in err and not marker.exists()


def test_the_docs_say_no_file_chooses_code():
    text = " ".join((PACKAGE.parent / "docs" / "guarantees.md").read_text().split())
    assert "never imports code a file names" in text
