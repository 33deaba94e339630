"""The catalogue of bad input: each case, its expected message, and no traceback for a CLI user.

Every case runs through the command line (``lcdsl.cli.main``) and checks the exit code, a
fragment of the message, and that no Python traceback reaches stderr. Cases are grouped as the
issue lists them: specs, models and data, numerics, plugins.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import ClassVar

import attrs
import pytest
import torch

from lcdsl.cli import main
from lcdsl.cli.train import REFERENCE_FORMAT
from lcdsl.language.syntax_errors import _SYNTAX_EXAMPLES
from lcdsl.operators.base import Operator, Storage
from lcdsl.plugins.hookspecs import hookimpl
from lcdsl.plugins.registry import PluginManager, Registry, default_registry
from lcdsl.store.atomic import load_checkpoint
from lcdsl.training.lstep import LStep
from lcdsl.training.zoo import LeNet300

TINY = ["--steps", "2", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


# --------------------------------------------------------------------------------- specs

SPEC_CASES = [
    # (id, spec bytes, expected exit code, expected fragment)
    ("unknown-operator", "fc1 : qaunt(k=2)", "unknown operator 'qaunt'; did you mean 'quant'?"),
    ("unknown-setting", "lrr = 0.1\nfc1 : quant(k=2)", "unknown setting 'lrr'; did you mean 'lr'?"),
    ("unknown-argument", "fc1 : quant(kk=2)", "quant() has no argument 'kk'; did you mean 'k'?"),
    ("positional-argument", "fc1 : quant(2)", "quant() takes keyword arguments"),
    ("repeated-argument", "fc1 : quant(k=2, k=3)", "quant() got 'k' twice"),
    ("k=1", "fc1 : quant(k=1)", "k must be an integer ≥ 2, got 1"),
    ("k-string", 'fc1 : quant(k="four")', "k must be an integer ≥ 2, got 'four'"),
    ("k-bool", "fc1 : quant(k=true)", "k must be an integer ≥ 2, got True"),
    ("k-and-bits", "fc1 : quant(k=2, bits=2)", "takes exactly one of k, bits, codebook"),
    ("bits-too-many", "fc1 : quant(bits=40)", "bits must be at most 31"),
    ("l0=150%", "fc1 : prune(l0=150%)", "l0=150% is not a fraction in (0%, 100%]"),
    ("l0=-5%", "fc1 : prune(l0=-5%)", "l0=-5% is not a fraction"),
    ("l0=1.5", "fc1 : prune(l0=1.5)", "l0=1.5 is ambiguous: write a count like l0=1500 or a fraction"),
    ("l0-above-size", "fc1 : prune(l0=300000)", "l0=300000 is more than the 235200 there are"),
    ("negative-penalty", "fc1 : prune(l0_penalty=-1)", "l0_penalty must be a positive number, got -1"),
    ("rank=0", "fc1 : lowrank(rank=0)", "rank must be an integer ≥ 1, got 0"),
    ("rank-float", "fc1 : lowrank(rank=2.5)", "rank must be an integer ≥ 1, got 2.5"),
    ("rank-too-big", "fc1 : lowrank(rank=500)", "rank=500 is above min(m, n) = 300"),
    ("bool-field", "fc1 : binarize(scale=3)", "'scale' must be <class 'bool'> (got 3"),
    ("negative-mu-start", "mu = geometric(start=-1e-3, factor=2, steps=3)\nfc1 : quant(k=2)",
     "start must be a positive number, got -0.001"),
    ("negative-mu-list", "mu = [1e-3, -2e-3]\nfc1 : quant(k=2)", "every μ must be a positive finite number"),
    ("mu-overflows", "mu = geometric(start=1, factor=1e300, steps=5)\nfc1 : quant(k=2)",
     "the μ schedule overflows at step 2"),
    ("mu-argument-twice", "mu = geometric(start=1e-3, factor=2, steps=3, steps=5)\nfc1 : quant(k=2)",
     "geometric() got 'steps' twice"),
    ("bad-penalty", 'penalty = "cubic"\nfc1 : quant(k=2)',
     "'penalty' must be in ('augmented-lagrangian', 'quadratic') (got 'cubic')"),
    ("setting-type", 'lr = "fast"\nfc1 : quant(k=2)', "lr must be a number > 0, got 'fast'"),
    ("epochs-float", "epochs = 2.5\nfc1 : quant(k=2)", "epochs must be an integer ≥ 1, got 2.5"),
    ("negative-seed", "seed = -1\nfc1 : quant(k=2)", "seed must be an integer in [0, 2**32), got -1"),
    ("huge-seed", f"seed = {10**30}\nfc1 : quant(k=2)", "seed must be an integer in [0, 2**32)"),
    ("repeated-setting", "lr = 0.1\nlr = 0.2\nfc1 : quant(k=2)", "setting 'lr' is already set on line 1"),
    ("selector-matches-nothing", "fc9 : quant(k=2)", "'fc9' matches no parameter of the model; did you mean"),
    ("type-matches-nothing", "@Conv2d : quant(k=2)", "no module of type 'Conv2d' in the model"),
    ("all-excluded", "fc1, !fc1 : quant(k=2)", "every tensor this rule selects is excluded"),
    ("overlap", "fc1 : quant(k=2)\nfc* : prune(l0=10)", "'fc1.weight' is already compressed by the rule on line 1"),
    ("joint-matrix", "[fc1, fc2] : lowrank(rank=2)", "lowrank cannot take fc1.weight, fc2.weight"),
    ("joint-structured", "[fc1, fc2] : prune(l0=10, by=rows)", "a 'tensor' operator takes one tensor, got 2"),
    ("vector-to-matrix", "fc1.bias : lowrank(rank=2)", "a matrix operator needs a tensor of 2 or more dimensions"),
    ("empty-file", "", "the spec has no rules, so nothing would be compressed"),
    ("comments-only", "# nothing here\n\n", "the spec has no rules"),
    ("deeply-nested", "mu = " + "f(" * 100 + ")" * 100, "nesting deeper than 32 brackets and parentheses"),
    ("deep-lists", "fc1 : quant(codebook=" + "[" * 40 + "]" * 40 + ")", "nesting deeper than 32"),
    ("number-too-long", "fc1 : quant(k=" + "9" * 200 + ")", "number too long (200 characters; at most 100)"),
    ("float-overflow", "lr = 1e999\nfc1 : quant(k=2)", "is not a finite float"),
    ("nan", "lr = nan\nfc1 : quant(k=2)", "'nan' is not allowed: numbers must be finite"),
    ("unterminated-string", 'penalty = "quadratic\nfc1 : quant(k=2)', "unterminated string"),
    ("bad-escape", 'penalty = "a\\q"\nfc1 : quant(k=2)', "unknown escape '\\q' in a string"),
    ("control-character", "fc1 : quant(k=2)\x01", "unexpected character U+0001"),
    ("escape-sequence-escaped", "fc1 : quant(k=\x1b[31m2)", "fc1 : quant(k=\\x1b[31m2)"),
    ("steps-huge", "mu = geometric(start=1e-3, factor=1.1, steps=1000000000)\nfc1 : quant(k=2)",
     "steps must be at most 10000, got 1000000000"),
    ("cap-negative", "mu = geometric(start=1e-3, factor=2, steps=3, cap=-1)\nfc1 : quant(k=2)",
     "cap must be a positive finite number, got -1"),
    ("cap-zero", "mu = geometric(start=1e-3, factor=2, steps=3, cap=0)\nfc1 : quant(k=2)",
     "cap must be a positive finite number, got 0"),
    ("k-above-size", "fc1.bias : quant(k=1000)", "k=1000 is more codewords than the 300 weights to quantize"),
    ("bits-above-size", "fc1.bias : quant(bits=20)", "bits=20 (k=1048576) is more codewords than the 300"),
    ("number-101", "fc1 : quant(k=" + "9" * 101 + ")", "number too long (101 characters; at most 100)"),
]

BYTE_CASES = [
    ("non-utf8", b"fc1 : quant(k=2)  # caf\xe9\n", "the file is not UTF-8 text (byte 0xe9)"),
    ("nul-byte", b"fc1 : quant(k=2)\x00\n", "the file contains a NUL byte; a spec is text"),
    ("binary-garbage", bytes(range(256)) * 16, "the file contains a NUL byte"),
    ("utf16", "fc1 : quant(k=2)\n".encode("utf-16"), "the file contains a NUL byte; a spec is text"),
    ("huge-file", b"fc1 : quant(k=2)\n" * 20000, "characters; at most 262,144 are read"),
    ("huge-binary", b"\x00" * (2 << 20), "bytes; a spec has at most 262,144 characters"),
    ("huge-file-bounded", b"#" * (8 << 20), "more than 1,048,576 bytes; a spec has at most 262,144 characters"),
]


@pytest.mark.parametrize(
    ("text", "fragment"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES]
)
def test_spec_case(tmp_path, capsys, text, fragment):
    path = tmp_path / "case.lc"
    path.write_text(text, encoding="utf-8")
    code, err = run_cli(["check", path, "--model", "lenet300"], capsys)
    assert code == 2
    assert fragment in err
    assert err.startswith(f"{path}:")  # file:line:col: error: …


@pytest.mark.parametrize(("data", "fragment"), [c[1:] for c in BYTE_CASES], ids=[c[0] for c in BYTE_CASES])
def test_file_case(tmp_path, capsys, data, fragment):
    path = tmp_path / "case.lc"
    path.write_bytes(data)
    code, err = run_cli(["check", path], capsys)
    assert code == 2 and fragment in err
    assert len(err) < 20_000  # a huge file gets one short message, not megabytes


def test_many_errors_are_counted_not_all_printed(tmp_path, capsys):
    path = tmp_path / "many.lc"
    path.write_text("fc1 : quant(k=2)\n" * 500)
    code, err = run_cli(["check", path, "--model", "lenet300"], capsys)
    assert code == 2 and f"{path}: and 449 more errors" in err
    assert err.count("is already compressed by the rule on line 1") == 50


@pytest.mark.parametrize(
    ("label", "example"),
    [(label, examples[0]) for label, examples in _SYNTAX_EXAMPLES],
    ids=[label.split("{")[0][:40] for label, _ in _SYNTAX_EXAMPLES],
)
def test_every_syntax_error_class(tmp_path, capsys, label, example):
    """One example of every labelled syntax error, through the CLI, gets that label's message."""
    path = tmp_path / "syntax.lc"
    path.write_text(example + "\n")
    code, err = run_cli(["check", path], capsys)
    assert code == 2
    assert label.split("{")[0] in err
    assert err.startswith(f"{path}:1:")


def test_a_missing_spec_file(tmp_path, capsys):
    code, err = run_cli(["check", tmp_path / "nope.lc"], capsys)
    assert code == 2 and "cannot read the spec" in err


# ------------------------------------------------------------------------ models and data

QUANT = "fc* : quant(k=2)\n"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    (folder / "quant.lc").write_text(QUANT)
    (folder / "bad_models.py").write_text(
        textwrap.dedent(
            """
            def raising():
                raise RuntimeError("no GPU here")

            def not_a_module():
                return 42
            """
        )
    )
    return folder


@pytest.fixture(scope="module")
def reference(work):
    path = work / "ref.pt"
    assert main(["train", "--model", "lenet300", "--data", "digits", "--out", str(path), "--epochs", "1"]) == 0
    return path


def fake_reference(path, state_dict, model="lenet300", data="digits"):
    torch.save({"format": REFERENCE_FORMAT, "model": model, "data": data, "state_dict": state_dict,
                "recipe": {}, "history": [], "test_error": 0.5, "train_error": 0.5}, path)  # fmt: skip
    return path


def write_idx(folder, *, images_magic=b"\x00\x00\x08\x03", truncate=0):
    """A tiny MNIST-like IDX folder: 4 train and 2 test 28×28 images."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 4), ("t10k", 2)):
        images = images_magic + b"".join(x.to_bytes(4, "big") for x in (n, 28, 28)) + bytes(n * 784)
        labels = b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + bytes(range(n))
        (folder / f"{split}-images-idx3-ubyte").write_bytes(images[: len(images) - truncate])
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    return folder


def model_data_cases(work, reference):
    lenet_state = LeNet300(in_features=64).state_dict()
    wide_state = LeNet300(in_features=784).state_dict()
    corrupt = work / "corrupt.pt"
    corrupt.write_bytes(os.urandom(2000))
    truncated = work / "truncated.pt"
    truncated.write_bytes(reference.read_bytes()[:5000])
    return {
        "factory-raises": (["--model", "bad_models:raising"], 1,
                           "model factory 'bad_models:raising' raised RuntimeError: no GPU here"),
        "factory-not-a-module": (["--model", "bad_models:not_a_module"], 1, "returned int, not a torch.nn.Module"),
        "factory-missing": (["--model", "bad_models:nothing"], 1, "'bad_models' has no attribute 'nothing'"),
        "module-missing": (["--model", "no_such_module_x:f"], 1, "cannot import 'no_such_module_x'"),
        "unknown-model": (["--model", "lenet30"], 1, "unknown model 'lenet30'; did you mean 'lenet300'"),
        "missing-reference": (["--reference", work / "none.pt"], 1, "none.pt: no such file"),
        "corrupt-reference": (["--reference", corrupt], 1, "cannot load it (not an lcdsl file, or damaged)"),
        "truncated-reference": (["--reference", truncated], 1, "cannot load it"),
        "other-architecture": (["--reference", fake_reference(work / "wide.pt", wide_state)], 1,
                               "the weights do not fit model 'lenet300'"),
        "other-model-name": (["--reference", fake_reference(work / "l5.pt", lenet_state, model="lenet5")], 1,
                             "was trained for model 'lenet5', not 'lenet300'"),
        "not-a-reference": (["--reference", fake_reference(work / "odd.pt", {"x": torch.zeros(1)})], 1,
                            "the weights do not fit"),
        "unknown-dataset": (["--data", "digit"], 1, "unknown dataset 'digit'; did you mean 'digits'"),
        "missing-data-folder": (["--data", "mnist", "--data-dir", work / "nowhere"], 1, "is not a folder"),
        "mnist-without-folder": (["--data", "mnist"], 1, "mnist needs --data-dir"),
        "idx-wrong-magic": (["--data", "mnist", "--data-dir", write_idx(work / "magic", images_magic=b"\x00\x00\x07\x03")],
                            1, "not an IDX file (bad magic number 0x00000703)"),
        "idx-truncated": (["--data", "mnist", "--data-dir", write_idx(work / "short", truncate=100)], 1,
                          "truncated: the header says 4×28×28 values"),
        "idx-missing-file": (["--data", "mnist", "--data-dir", work], 1, "no train-images-idx3-ubyte[.gz] in it"),
        "bad-device": (["--device", "tpu:7x"], 1, "is not a torch device"),
    }


MODEL_DATA_IDS = [
    "factory-raises", "factory-not-a-module", "factory-missing", "module-missing", "unknown-model",
    "missing-reference", "corrupt-reference", "truncated-reference", "other-architecture", "other-model-name",
    "not-a-reference", "unknown-dataset", "missing-data-folder", "mnist-without-folder", "idx-wrong-magic",
    "idx-truncated", "idx-missing-file", "bad-device",
]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_DATA_IDS)
def test_model_and_data_case(work, reference, capsys, monkeypatch, case):
    monkeypatch.syspath_prepend(str(work))
    extra, expected_code, fragment = model_data_cases(work, reference)[case]
    argv = ["compress", work / "quant.lc", "--out", work / f"out-{case}", *TINY, *extra]
    if "--reference" not in extra:
        argv += ["--reference", reference]
    code, err = run_cli(argv, capsys)
    assert code == expected_code and fragment in err, err
    assert err.startswith("lcdsl: error:")


def test_load_compressed_of_a_corrupt_file_is_a_model_error(tmp_path):
    from lcdsl.errors import ModelError
    from lcdsl.store.model import load_compressed

    path = tmp_path / "compressed.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="cannot load it"):
        load_compressed(LeNet300(in_features=64), path)


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_reference_weights(work, reference, capsys, bad):
    state = load_checkpoint(reference)["state_dict"]
    state["fc2.weight"][3, 4] = bad
    path = fake_reference(work / f"ref-{bad}.pt", state)
    argv = ["compress", work / "quant.lc", "--reference", path, "--out", work / f"nonfinite-{bad}", *TINY]
    code, err = run_cli(argv, capsys)
    assert code == 1
    assert "direct compression: parameter 'fc2.weight' has non-finite values" in err


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_checkpoint(work, reference, capsys, monkeypatch):
    original = LStep.__call__

    def diverge_at_second_step(self, engine, k):
        loss = original(self, engine, k)
        if k == 1:
            with torch.no_grad():
                self.model.fc1.weight.fill_(float("nan"))
            return float("nan")
        return loss

    monkeypatch.setattr(LStep, "__call__", diverge_at_second_step)
    out = work / "diverged"
    argv = ["compress", work / "quant.lc", "--reference", reference, "--out", out, *TINY]
    code, err = run_cli(argv, capsys)
    assert code == 1
    assert "LC step 2 (μ=0.002): the L step's loss is nan" in err
    assert f"{out / 'checkpoint.pt'} keeps the run as it was after LC step 1" in err
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["engine"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not (out / "report.json").exists()


def test_a_mu_schedule_that_overflows_on_the_command_line(work, capsys):
    argv = ["compress", work / "quant.lc", "--out", work / "overflow", "--mu-start", "1", "--mu-factor", "1e300",
            "--steps", "4"]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert code == 2 and "command line: error: the μ schedule overflows at step 2" in err


# ------------------------------------------------------------------------------ plugins


class _Base(Operator):
    def storage(self, shape, theta=None):
        return Storage(0, 0)


@attrs.frozen
class Raises(_Base):
    """argmin_θ ‖w − θ‖² (a test operator that raises)."""

    name: ClassVar[str] = "raises"

    def project(self, w, mu=0.0, warm=None):
        raise RuntimeError("division by zero in the codebook")

    def decompress(self, theta, shape):
        return theta["w"]


@attrs.frozen
class WrongShape(_Base):
    """argmin_θ ‖w − θ‖² (a test operator whose Δ drops an entry)."""

    name: ClassVar[str] = "wrongshape"

    def project(self, w, mu=0.0, warm=None):
        return {"w": w.clone()}

    def decompress(self, theta, shape):
        return theta["w"].reshape(-1)[:-1]


@attrs.frozen
class WrongDtype(WrongShape):
    """argmin_θ ‖w − θ‖² (a test operator whose Δ is float64)."""

    name: ClassVar[str] = "wrongdtype"

    def decompress(self, theta, shape):
        return theta["w"].reshape(shape).double()


@attrs.frozen
class NonFinite(WrongShape):
    """argmin_θ ‖w − θ‖² (a test operator that returns NaN)."""

    name: ClassVar[str] = "nonfinite"

    def project(self, w, mu=0.0, warm=None):
        return {"w": torch.full_like(w, float("nan"))}

    def decompress(self, theta, shape):
        return theta["w"].reshape(shape)


@attrs.frozen
class NotTensors(WrongShape):
    """argmin_θ ‖w − θ‖² (a test operator whose θ is a list)."""

    name: ClassVar[str] = "nottensors"

    def project(self, w, mu=0.0, warm=None):
        return [w.clone()]


class _EvilPlugin:
    @hookimpl
    def lcdsl_register_operators(self):
        return [Raises, WrongShape, WrongDtype, NonFinite, NotTensors]


def _default_registry_with(monkeypatch, plugin: object, name: str, distribution: str, version: str) -> Registry:
    """The built-ins and ``plugin``, made the default registry where lcdsl asks for it."""
    import lcdsl.operators.builtin

    pm = PluginManager()
    pm.add_plugin(lcdsl.operators.builtin, "builtin", "lcdsl", lcdsl.__version__)
    pm.add_plugin(plugin, name, distribution, version)
    registry = Registry.load(plugin_manager=pm)
    for user in ("lcdsl.plan.calls", "lcdsl.plugins.origin"):  # where the default registry is asked for
        monkeypatch.setattr(f"{user}.default_registry", lambda: registry)
    return registry


@pytest.fixture
def evil_registry(monkeypatch):
    return _default_registry_with(monkeypatch, _EvilPlugin(), "evil", "lcdsl-evil", "6.6.6")


PLUGIN_CASES = [
    ("raises", "operator raises raised RuntimeError on task fc1.weight: division by zero in the codebook"),
    ("wrongshape", "operator wrongshape decompressed task fc1.weight to shape (19199,), expected (19200,)"),
    ("wrongdtype", "operator wrongdtype decompressed task fc1.weight to torch.float64 on cpu, expected torch.float32"),
    ("nonfinite", "operator nonfinite returned non-finite values in Δ(θ) of task fc1.weight"),
    ("nottensors", "operator nottensors returned a θ of type list for task fc1.weight"),
]


@pytest.mark.parametrize(("op", "fragment"), PLUGIN_CASES, ids=[c[0] for c in PLUGIN_CASES])
def test_a_misbehaving_plugin_operator_is_named(work, reference, capsys, evil_registry, op, fragment):
    spec = work / f"{op}.lc"
    spec.write_text(f"fc1 : {op}()\n")
    argv = ["compress", spec, "--reference", reference, "--out", work / f"plugin-{op}", *TINY]
    code, err = run_cli(argv, capsys)
    assert code == 1
    assert fragment in err
    assert "(from plugin 'evil' (lcdsl-evil 6.6.6))" in err


def test_an_additive_combination_names_each_terms_plugin(work, reference, capsys, evil_registry):
    spec = work / "mixed.lc"
    spec.write_text("fc1 : quant(k=2) + nonfinite()\n")
    argv = ["compress", spec, "--reference", reference, "--out", work / "plugin-mixed", *TINY]
    code, err = run_cli(argv, capsys)
    assert code == 1
    assert "'quant' from plugin 'builtin'" in err and "'nonfinite' from plugin 'evil' (lcdsl-evil 6.6.6)" in err


def test_debug_shows_the_traceback(work, reference, capsys, evil_registry):
    spec = work / "raises.lc"
    spec.write_text("fc1 : raises()\n")
    capsys.readouterr()
    argv = ["--debug", "compress", spec, "--reference", reference, "--out", work / "debug", *TINY]
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "division by zero in the codebook" in err


# ------------------------------------------------------------------ bounded inputs, saved files


def test_a_spec_is_read_only_up_to_its_limit(tmp_path, capsys):
    # /dev/zero never ends: the read stops at the limit instead of filling memory
    code, err = run_cli(["check", "/dev/zero"], capsys)
    assert code == 2 and "more than 1,048,576 bytes" in err


def test_a_number_of_100_characters_is_accepted(tmp_path, capsys):
    path = tmp_path / "case.lc"
    path.write_text("tolerance = " + "0" * 99 + "1\nfc1 : quant(k=2)\n")
    assert run_cli(["check", path, "--model", "lenet300"], capsys)[0] == 0


def test_a_root_sequential_is_suggested_by_a_name_that_parses(tmp_path, capsys, monkeypatch):
    (tmp_path / "seqmodels.py").write_text("import torch.nn as nn\ndef make(**kw):\n"
                                           "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "case.lc"
    path.write_text("l.weight : quant(k=2)\n")
    code, err = run_cli(["check", path, "--model", "seqmodels:make"], capsys)
    assert code == 2 and "did you mean '1.weight'?" in err
    path.write_text("1.weight : quant(k=2)\n")  # the suggestion is itself a valid spec
    assert run_cli(["check", path, "--model", "seqmodels:make"], capsys)[0] == 0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--seed", "-5"], "--seed must be an integer in [0, 2**32), got -5"),
        (["--device", "meta"], "device 'meta' holds no data"),
        (["--epochs", "0"], "--epochs must be an integer in [1, 2**32), got 0"),
        (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    ],
    ids=["seed", "meta", "epochs", "lr"],
)
def test_train_arguments_are_checked(tmp_path, capsys, argv, fragment):
    code, err = run_cli(["train", "--out", tmp_path / "r.pt", *argv], capsys)
    assert code == 1 and fragment in err


def test_train_out_a_folder_fails_before_training(tmp_path, capsys):
    code, err = run_cli(["train", "--out", tmp_path, "--epochs", "1"], capsys)
    assert code == 1 and "is a folder; give the file to write" in err


def test_an_lcz_manifest_that_inflates_past_its_limit_is_refused_while_inflating(tmp_path):
    import zlib

    from lcdsl.errors import ModelError
    from lcdsl.formats import MAGIC
    from lcdsl.store import lcz

    head = zlib.compress(b" " * (lcz.MAX_MANIFEST_BYTES + 1), 9)  # ~64 KiB that inflate to 64 MiB
    path = tmp_path / "bomb.lcz"
    path.write_bytes(lcz._HEADER.pack(MAGIC, len(head)) + head)
    with pytest.raises(ModelError, match="manifest: inflates to more than the 67,108,864 bytes"):
        lcz.read_manifest(path)


@pytest.fixture(scope="module")
def finished(work, reference):
    out = work / "finished"
    argv = ["compress", work / "quant.lc", "--reference", reference, "--out", out, *TINY]
    assert main([str(a) for a in argv]) == 0
    return out


def _mutations(state, prefix=""):
    """(label, mutate) for each key of a saved dict: delete it, wrong type, and for tensors wrong
    shape, NaN, out of range; one level into dicts of dicts."""
    for key, value in state.items():
        label = f"{prefix}{key}"
        yield f"{label}:deleted", lambda d, k=key: d.pop(k)
        yield f"{label}:type", lambda d, k=key: d.__setitem__(k, "text")
        if isinstance(value, torch.Tensor):
            yield f"{label}:shape", lambda d, k=key: d.__setitem__(k, torch.zeros(3))
            if value.is_floating_point():
                yield f"{label}:nan", lambda d, k=key: d.__setitem__(k, torch.full_like(d[k], float("nan")))
            else:
                yield f"{label}:range", lambda d, k=key: d.__setitem__(k, d[k] + 10**6)
        elif isinstance(value, dict) and prefix.count(".") < 3:
            for sub_label, sub in _mutations(value, f"{label}."):
                yield sub_label, lambda d, k=key, f=sub: f(d[k])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{label}:negative", lambda d, k=key: d.__setitem__(k, -5)
            yield f"{label}:huge", lambda d, k=key: d.__setitem__(k, 10**12)
            yield f"{label}:nan", lambda d, k=key: d.__setitem__(k, float("nan"))


def test_every_mutation_of_a_checkpoint_is_a_clean_error(work, reference, finished, capsys):
    import copy
    import shutil

    saved = load_checkpoint(finished / "checkpoint.pt")
    keep = {"format", "engine", "model_name", "data_name", "trainer", "reference", "history", "model"}
    labels = []
    for label, mutate in _mutations({k: saved[k] for k in keep if k != "history"} | {"engine": {
            k: saved["engine"][k] for k in ("step", "mu", "thetas", "lambdas", "history")}}):  # fmt: skip
        state = copy.deepcopy(saved)
        try:
            mutate(state)
        except (KeyError, TypeError, IndexError, RuntimeError):
            continue
        out = work / "mutated"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(finished, out)
        torch.save(state, out / "checkpoint.pt")
        argv = ["compress", work / "quant.lc", "--reference", reference, "--out", out, "--resume", *TINY]
        code, err = run_cli(argv, capsys)  # never a traceback
        labels.append((label, code))
    assert len(labels) > 30
    # a change to what only reports (the reference's numbers, the saved history) may still resume
    assert all(code in (0, 1) for _, code in labels), labels
    failing = {label for label, code in labels if code == 1}
    for must in ("engine.step:negative", "engine.step:huge", "engine.mu:nan",
                 "engine.thetas.fc1.weight.assignments:range",
                 "engine.lambdas.fc1.weight:shape", "engine.lambdas.fc1.weight:nan", "model:deleted",
                 "model.fc1.weight:nan", "engine.thetas.fc1.weight.codebook:nan"):  # fmt: skip
        assert must in failing, (must, labels)


def test_every_mutation_of_a_reference_is_a_clean_error(work, reference, capsys):
    import copy

    saved = load_checkpoint(reference)
    minimal = {k: saved[k] for k in ("format", "model", "data", "state_dict")}  # only the documented keys
    path = work / "minimal-ref.pt"
    torch.save(minimal, path)
    argv = ["compress", work / "quant.lc", "--reference", path, "--out", work / "from-minimal", *TINY]
    assert run_cli(argv, capsys)[0] == 0
    for label, mutate in _mutations({**saved, "test_error": 0.5}):
        state = copy.deepcopy(dict(saved, test_error=0.5))
        mutate(state)
        torch.save(state, path)
        argv = ["compress", work / "quant.lc", "--reference", path, "--out", work / "mutated-ref", *TINY]
        code, err = run_cli(argv, capsys)
        assert code in (0, 1), label


# ------------------------------------------------------------- names a wrapper did not add


class ChildCalledModule(torch.nn.Module):
    """A model of its own (not a DDP wrapper) with both ``module.fc`` and ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.module = torch.nn.Sequential()
        self.module.add_module("fc", torch.nn.Linear(4, 4))
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.module(x))


def test_module_fc_and_fc_stay_two_tensors(tmp_path):
    from lcdsl.engine.core import Engine
    from lcdsl.language.parser import parse
    from lcdsl.store.atomic import save_atomic
    from lcdsl.store.model import compressed_state, load_compressed

    torch.manual_seed(0)
    model = ChildCalledModule()
    text = "module.fc.weight : quant(k=2)\n"
    plan = parse(text).bind(model)
    assert [t.parameters for t in plan.tasks] == [("module.fc.weight",)]
    assert "fc.weight" in plan.dense
    before = model.fc.weight.detach().clone()
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    assert torch.equal(model.fc.weight, before)  # the tensor not named is left alone
    assert model.module.fc.weight.unique().numel() <= 2  # the one named is compressed
    save_atomic(compressed_state(model, plan, thetas, spec_text=text, model_name="m"), tmp_path / "c.pt")
    fresh = ChildCalledModule()
    load_compressed(fresh, tmp_path / "c.pt")
    for name, value in model.state_dict().items():  # both are saved and come back
        assert torch.equal(fresh.state_dict()[name], value), name


def test_only_a_real_wrapper_loses_its_prefix():
    from lcdsl.language.parser import parse
    from lcdsl.plan.names import parameters_by_name, unwrap

    inner = ChildCalledModule()
    for wrapped in (torch.nn.DataParallel(inner), torch.compile(inner), torch.nn.DataParallel(torch.compile(inner))):
        assert unwrap(wrapped) is inner
        assert set(parameters_by_name(wrapped)) == set(dict(inner.named_parameters()))
        plan = parse("module.fc.weight : quant(k=2)\n").bind(wrapped)
        assert [t.parameters for t in plan.tasks] == [("module.fc.weight",)]
    assert set(parameters_by_name(inner)) == {"module.fc.weight", "module.fc.bias", "fc.weight", "fc.bias"}


# ------------------------------------------- plugin code raising more than ValueError/TypeError


class _Oops(BaseException):
    pass


@attrs.frozen
class BadInit(_Base):
    """argmin_θ ‖w − θ‖² (a test operator whose validator raises)."""

    name: ClassVar[str] = "badinit"

    def __attrs_post_init__(self):
        raise SystemExit("validator exits")

    def project(self, w, mu=0.0, warm=None):
        return {"w": w.clone()}

    def decompress(self, theta, shape):
        return theta["w"].reshape(shape)


@attrs.frozen
class BadResolve(BadInit):
    """argmin_θ ‖w − θ‖² (a test operator whose resolve raises)."""

    name: ClassVar[str] = "badresolve"

    def __attrs_post_init__(self):
        pass

    def resolve(self, shape):
        raise KeyboardInterrupt("pressed by the plugin")


@attrs.frozen
class BadStorage(BadResolve):
    """argmin_θ ‖w − θ‖² (a test operator whose storage raises)."""

    name: ClassVar[str] = "badstorage"

    def resolve(self, shape):
        return self

    def storage(self, shape, theta=None):
        raise ZeroDivisionError("no bits")


@attrs.frozen
class BadView(BadStorage):
    """argmin_θ ‖w − θ‖² (a test operator whose view property raises)."""

    name: ClassVar[str] = "badview"

    def storage(self, shape, theta=None):
        return Storage(0, 0)

    @property
    def view(self):
        raise _Oops("view")


@attrs.frozen
class ExitsInProject(BadView):
    """argmin_θ ‖w − θ‖² (a test operator whose C step calls sys.exit)."""

    name: ClassVar[str] = "exits"

    @property
    def view(self):
        return "vector"

    def project(self, w, mu=0.0, warm=None):
        raise SystemExit("no more")


class _BrokenOpsPlugin:
    @hookimpl
    def lcdsl_register_operators(self):
        return [BadInit, BadResolve, BadStorage, BadView, ExitsInProject]


@pytest.fixture
def broken_ops_registry(monkeypatch):
    return _default_registry_with(monkeypatch, _BrokenOpsPlugin(), "bugs", "lcdsl-bugs", "0.1")


BROKEN_OPERATOR_CASES = [
    ("badinit", "badinit() raised SystemExit: validator exits"),
    ("badresolve", "badresolve.resolve raised KeyboardInterrupt: pressed by the plugin"),
    ("badstorage", "badstorage.storage raised ZeroDivisionError: no bits"),
    ("badview", "badview.view raised _Oops: view"),
]


@pytest.mark.parametrize(("op", "fragment"), BROKEN_OPERATOR_CASES, ids=[c[0] for c in BROKEN_OPERATOR_CASES])
def test_an_operator_raising_anything_is_a_located_broken_operator(tmp_path, capsys, broken_ops_registry, op, fragment):
    spec = tmp_path / f"{op}.lc"
    spec.write_text(f"fc1 : {op}()\n")
    code, err = run_cli(["check", spec, "--model", "lenet300"], capsys)
    assert code == 2, err
    assert f"{spec.name}:1:" in err and fragment in err
    assert "(a bug in plugin 'bugs' (lcdsl-bugs 0.1))" in err


def test_an_operator_exiting_in_the_c_step_is_named(work, reference, capsys, broken_ops_registry):
    spec = work / "exits.lc"
    spec.write_text("fc1 : exits()\n")
    code, err = run_cli(["compress", spec, "--reference", reference, "--out", work / "plugin-exits", *TINY], capsys)
    assert code == 1
    assert "operator exits raised SystemExit on task fc1.weight: no more (from plugin 'bugs' (lcdsl-bugs 0.1))" in err


# ----------------------------------------------------------- frozen and integer parameters


@pytest.fixture
def odd_models(tmp_path, monkeypatch):
    (tmp_path / "odd_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def net():
                return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

            def frozen():
                model = net()
                model[1].weight.requires_grad_(False)
                return model

            def all_frozen():
                model = net().requires_grad_(False)
                return model

            def integer():
                model = net()
                steps = nn.Parameter(torch.zeros(16, dtype=torch.long), requires_grad=False)
                model[1].register_parameter("steps", steps)
                return model
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_an_integer_parameter_is_a_located_spec_error(odd_models, capsys):
    spec = odd_models / "int.lc"
    spec.write_text("1.steps, 3.weight : quant(k=2)\n")
    code, err = run_cli(["check", spec, "--model", "odd_models:integer"], capsys)
    assert code == 2
    assert "int.lc:1:1: error: 1.steps is a int64 parameter: only floating-point tensors can be compressed" in err
    assert "!1.steps" in err


def test_a_frozen_parameter_is_a_warning_and_is_compressed_directly(odd_models, capsys):
    spec = odd_models / "frozen.lc"
    spec.write_text("1.weight : quant(k=2)\n")
    code, err = run_cli(["check", spec, "--model", "odd_models:frozen"], capsys)
    assert code == 0
    assert "warning: 1.weight has requires_grad=False: compressed in the C step but never trained" in err
    out = odd_models / "run"
    code, err = run_cli(["compress", spec, "--model", "odd_models:frozen", "--out", out, "--reference-epochs", "1",
                         *TINY], capsys)  # fmt: skip
    assert code == 0, err
    import odd_models

    from lcdsl.store.model import load_compressed

    fresh = odd_models.frozen()
    load_compressed(fresh, out / "compressed.pt")
    assert fresh[1].weight.unique().numel() <= 2  # compressed, though never trained


def test_a_model_with_nothing_trainable_stops_before_training(odd_models, capsys):
    spec = odd_models / "frozen.lc"
    spec.write_text("1.weight : quant(k=2)\n")
    code, err = run_cli(["compress", spec, "--model", "odd_models:all_frozen", "--out", odd_models / "none", *TINY],
                        capsys)  # fmt: skip
    assert code == 1
    assert "the model has no trainable parameter (every one has requires_grad=False)" in err


# ---------------------------------------------------------------- nothing stale is reused


def test_a_sweep_reruns_a_variant_whose_spec_changed(work, reference, capsys):
    spec = work / "sweep-base.lc"
    spec.write_text("fc* : quant(k=2)\n")
    out = work / "sweep"
    argv = ["sweep", spec, "--vary", "fc* : quant.k = 2", "--out", out, "--reference", reference,
            "--steps", "1", "--epochs", "1", "--first-epochs", "1"]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 0
    spec.write_text("lr = 0.05\nfc* : quant(k=2)\n")  # the same variant label, another spec
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "stale (the spec text changed)" in printed and "run again" in printed and "done before, kept" not in printed
    (variant,) = [d for d in out.iterdir() if d.is_dir()]
    assert json.loads((variant / "report.json").read_text())["spec"]["text"].startswith("lr = 0.05")
    capsys.readouterr()
    assert main([str(a) for a in [*argv, "--lr-decay", "0.5"]]) == 0  # other settings
    assert "stale (the settings changed)" in " ".join(capsys.readouterr().out.split())
    (variant / "made-from.json").unlink()  # results of unknown origin are not trusted either
    assert main([str(a) for a in [*argv, "--lr-decay", "0.5"]]) == 0
    assert "of unknown origin" in " ".join(capsys.readouterr().out.split())
    assert main([str(a) for a in [*argv, "--lr-decay", "0.5"]]) == 0
    assert "done before, kept" in capsys.readouterr().out


def test_a_cached_reference_trained_otherwise_is_refused(work, capsys):
    out = work / "cached-ref"
    out.mkdir()
    assert main(["train", "--out", str(out / "reference.pt"), "--epochs", "1", "--seed", "0"]) == 0
    argv = ["compress", work / "quant.lc", "--out", out, "--reference-epochs", "1", "--seed", "3", *TINY]
    code, err = run_cli(argv, capsys)
    flat = " ".join(err.split())
    assert code == 1 and f"{out / 'reference.pt'} was trained with other settings" in flat
    assert "seed 0 → 3" in flat and f"give --reference {out / 'reference.pt'}" in flat
    fake_reference(out / "reference.pt", LeNet300(in_features=64).state_dict())  # records no recipe
    code, err = run_cli(argv, capsys)
    assert code == 1 and "it records nothing of what it was made from" in " ".join(err.split())


def test_resume_checks_the_model_and_data_names(work, reference, capsys):
    out = work / "resume-names"
    assert run_cli(["compress", work / "quant.lc", "--reference", reference, "--out", out, *TINY], capsys)[0] == 0
    state = load_checkpoint(out / "checkpoint.pt")
    state["data_name"] = "mnist"
    torch.save(state, out / "checkpoint.pt")
    code, err = run_cli(["compress", work / "quant.lc", "--reference", reference, "--out", out, "--resume", *TINY],
                        capsys)  # fmt: skip
    assert code == 1 and "it was made for data 'mnist', not 'digits'" in err


# ---------------------------------------------------------- write, check, then replace


def test_an_export_that_fails_its_check_leaves_the_good_file(work, reference, capsys):
    from lcdsl.store.atomic import save_atomic

    run = work / "export-run"
    assert run_cli(["compress", work / "quant.lc", "--reference", reference, "--out", run, *TINY], capsys)[0] == 0
    out = work / "good.lcz"
    assert run_cli(["export", run, "--out", out], capsys)[0] == 0
    good = out.read_bytes()
    state = load_checkpoint(run / "compressed.pt")
    state["probe"]["outputs"] = state["probe"]["outputs"] + 1.0  # the check now fails
    save_atomic(state, run / "compressed.pt")
    code, err = run_cli(["export", run, "--out", out], capsys)
    flat = " ".join(err.split())
    assert code == 1 and "differs from the compressed model" in flat and "the file already there is as it was" in flat
    assert out.read_bytes() == good
    assert [p.name for p in work.iterdir() if p.name.startswith(".good.lcz")] == []


def test_fmt_write_formats_a_links_target_and_keeps_the_link_and_mode(tmp_path, capsys):
    target = tmp_path / "real" / "spec.lc"
    target.parent.mkdir()
    target.write_text("fc*   :   quant( k = 2 )\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.lc"
    link.symlink_to(target)
    assert run_cli(["fmt", "--write", link], capsys)[0] == 0
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == "fc* : quant(k=2)\n" and (target.stat().st_mode & 0o777) == 0o640


LOCK_HOLDER = """
import sys, time
from lcdsl.store.atomic import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_run_folder_is_locked_and_a_killed_holder_does_not_block(work, reference, capsys):
    import signal
    import subprocess
    import sys

    from lcdsl.store.atomic import run_lock

    out = work / "locked"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["compress", work / "quant.lc", "--reference", reference, "--out", out, *TINY],
                     ["sweep", work / "quant.lc", "--vary", "fc* : quant.k = 2", "--reference", reference,
                      "--out", out, *TINY]):  # fmt: skip
            code, err = run_cli(argv, capsys)
            flat = " ".join(err.split())
            assert code == 1 and f"{out} is in use by another lcdsl run (pid {holder.pid})" in flat
        assert not (out / "report.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with run_lock(out):  # the kernel released the killed holder's lock; the .lock file stays, harmless
        assert (out / ".lock").read_text().strip() == str(os.getpid())
