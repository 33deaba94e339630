"""``lcdsl train`` and ``lcdsl compress`` end to end on digits with a tiny LC schedule."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch

from lcdsl.cli import main
from lcdsl.store.atomic import load_checkpoint
from lcdsl.store.model import load_compressed
from lcdsl.training.data import load_data
from lcdsl.training.epochs import error_rate
from lcdsl.training.lstep import LStep
from lcdsl.training.zoo import LeNet300

QUANT = "# every layer its own 2-entry codebook\nfc* : quant(k=2)\n"
TINY = ["--steps", "2", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "quant.lc").write_text(QUANT)
    (folder / "quant4.lc").write_text("fc* : quant(k=4)\n")
    return folder


@pytest.fixture(scope="module")
def reference(workdir):
    path = workdir / "ref.pt"
    code = main(["train", "--model", "lenet300", "--data", "digits", "--out", str(path), "--epochs", "3"])
    assert code == 0
    return path


def compress(workdir, reference, out, *extra, spec="quant.lc"):
    argv = ["compress", str(workdir / spec), "--model", "lenet300", "--data", "digits",
            "--reference", str(reference), "--out", str(out), *TINY, *extra]  # fmt: skip
    return main(argv)


@pytest.fixture(scope="module")
def full_run(workdir, reference):
    out = workdir / "full"
    assert compress(workdir, reference, out) == 0
    return out


def report(folder):
    return json.loads((folder / "report.json").read_text())


def without_timings(rep):
    steps = [{k: v for k, v in s.items() if not k.startswith("seconds")} for s in rep["steps"]]
    return {**rep, "steps": steps, "seconds": None}


def test_train_saves_weights_and_metadata(reference):
    state = load_checkpoint(reference)
    assert state["model"] == "lenet300" and state["data"] == "digits"
    assert state["recipe"]["epochs"] == 3 and len(state["history"]) == 3
    model = LeNet300(in_features=64)
    model.load_state_dict(state["state_dict"])
    data = load_data("digits")
    assert error_rate(model, data.x_test, data.y_test) == state["test_error"] < 0.2


def test_report_has_every_step(full_run, reference):
    rep = report(full_run)
    assert [s["step"] for s in rep["steps"]] == [0, 1, 2]
    assert [s["mu"] for s in rep["steps"]] == [0.0, 1e-3, 2e-3]
    assert rep["steps"][0]["loss"] is None and rep["steps"][1]["loss"] > 0
    assert rep["final"]["test_error"] == rep["steps"][-1]["metrics"]["test_error"]
    assert rep["final"]["direct_compression"] == rep["steps"][0]["metrics"]
    assert rep["reference"]["test_error"] == load_checkpoint(reference)["test_error"]
    assert rep["spec"]["text"] == QUANT and rep["model"] == "lenet300" and rep["data"] == "digits"
    assert rep["settings"]["mu"]["values"] == [1e-3, 2e-3] and rep["settings"]["epochs"] == 1
    size = rep["size"]
    assert size["dense"] == ["fc1.bias", "fc2.bias", "fc3.bias"]
    assert size["params_after"] == 3 * 2 + 410 and size["ratio"] > 20
    assert {"torch", "lcdsl", "python"} <= set(rep["versions"])
    assert (full_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_compressed_weights_are_feasible(full_run):
    model = LeNet300(in_features=64)
    thetas = load_compressed(model, full_run / "compressed.pt")
    assert set(thetas) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    for layer in (model.fc1, model.fc2, model.fc3):
        assert layer.weight.unique().numel() <= 2
    data = load_data("digits")
    assert error_rate(model, data.x_test, data.y_test) == report(full_run)["final"]["test_error"]


def test_resume_after_a_finished_run_is_a_no_op(workdir, reference, full_run, capsys):
    copy = workdir / "finished"
    shutil.copytree(full_run, copy)
    before = report(copy)
    capsys.readouterr()
    assert compress(workdir, reference, copy, "--resume") == 0
    assert "resuming" in capsys.readouterr().out
    assert report(copy) == before


def test_resume_mid_run_equals_the_uninterrupted_run(workdir, reference, full_run, monkeypatch):
    out = workdir / "interrupted"
    original = LStep.__call__

    def stop_at_second_step(self, engine, k):
        if k == 1:
            raise KeyboardInterrupt
        return original(self, engine, k)

    monkeypatch.setattr(LStep, "__call__", stop_at_second_step)
    assert compress(workdir, reference, out) == 130
    assert load_checkpoint(out / "checkpoint.pt")["engine"]["step"] == 1
    assert not (out / "report.json").exists()
    monkeypatch.setattr(LStep, "__call__", original)
    assert compress(workdir, reference, out, "--resume") == 0
    assert without_timings(report(out)) == without_timings(report(full_run))
    ours, theirs = load_checkpoint(out / "compressed.pt"), load_checkpoint(full_run / "compressed.pt")
    for name, task in theirs["tasks"].items():
        for key, value in task["theta"].items():
            assert torch.equal(ours["tasks"][name]["theta"][key], value)


def test_resume_with_a_changed_spec_is_refused(workdir, reference, full_run, capsys):
    copy = workdir / "changed"
    shutil.copytree(full_run, copy)
    capsys.readouterr()
    assert compress(workdir, reference, copy, "--resume", spec="quant4.lc") == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "Quant(k=2" in err and "Traceback" not in err
    assert compress(workdir, reference, copy, "--resume", "--lr", "0.5") == 1  # other settings
    assert "other settings" in capsys.readouterr().err


def test_reference_is_trained_once_and_cached(workdir, capsys):
    out = workdir / "cached"
    argv = ["compress", str(workdir / "quant.lc"), "--data", "digits", "--out", str(out),
            "--reference-epochs", "1", "--steps", "1", "--epochs", "1", "--first-epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    assert "training the reference (1 epochs)" in capsys.readouterr().out
    saved = (out / "reference.pt").read_bytes()
    assert main(argv) == 0
    assert "(cached" in capsys.readouterr().out
    assert (out / "reference.pt").read_bytes() == saved
    assert report(out)["reference"]["path"] == str(out / "reference.pt")


def test_a_model_that_does_not_fit_the_data(workdir, monkeypatch, capsys):
    (workdir / "wide_model.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def wide():
                return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
            """
        )
    )
    monkeypatch.syspath_prepend(str(workdir))
    argv = ["compress", str(workdir / "quant.lc"), "--model", "wide_model:wide", "--out", str(workdir / "x")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "does not fit 'digits'" in err and "Traceback" not in err


def test_bad_overrides_and_missing_reference(workdir, capsys):
    assert main(["compress", str(workdir / "quant.lc"), "--lr", "-1", "--out", str(workdir / "y")]) == 2
    assert "command line: error: lr must be a number > 0" in capsys.readouterr().err
    assert main(["compress", str(workdir / "quant.lc"), "--steps", "0", "--out", str(workdir / "y")]) == 2
    assert "steps must be an integer ≥ 1" in capsys.readouterr().err
    argv = ["compress", str(workdir / "quant.lc"), "--reference", str(workdir / "none.pt"), "--out", str(workdir / "y")]
    assert main(argv) == 1
    assert "none.pt: no such file" in capsys.readouterr().err


def test_a_run_that_stops_short_says_not_converged(full_run, capsys):
    convergence = report(full_run)["convergence"]
    assert convergence["converged"] is False and convergence["distortion"] > convergence["target"]
    assert convergence["message"].startswith("not converged: ‖w − Δ(θ)‖² = ")
    assert report(full_run)["warnings"] == []


AUTO = ["--steps", "3", "--epochs", "1", "--first-epochs", "1"]  # no --mu-factor: the spec's default, auto


def compress_auto(workdir, reference, out, *extra):
    argv = ["compress", str(workdir / "quant.lc"), "--model", "lenet300", "--data", "digits", "--reference",
            str(reference), "--out", str(out), *AUTO, *extra]  # fmt: skip
    return main(argv)


@pytest.fixture(scope="module")
def auto_run(workdir, reference):
    out = workdir / "auto"
    assert compress_auto(workdir, reference, out) == 0
    return out


def test_auto_schedule_runs_from_the_command_line(auto_run, capsys):
    rep = report(auto_run)
    assert rep["settings"]["mu"]["kind"] == "auto" and rep["settings"]["mu"]["steps"] == 3
    mus = [s["mu"] for s in rep["steps"][1:]]
    assert 1 <= len(mus) <= 3 and all(b > a for a, b in zip(mus, mus[1:]))
    assert mus[0] == pytest.approx(0.04 / rep["steps"][0]["distortion"])
    assert rep["convergence"]["message"].startswith(("converged: ", "not converged: "))


def test_auto_run_prints_its_schedule_and_how_it_ended(workdir, reference, capsys):
    assert compress_auto(workdir, reference, workdir / "auto-printed") == 0
    printed = capsys.readouterr().out
    assert "μ auto: at most 3 LC steps (3 epochs" in printed
    assert report(workdir / "auto-printed")["convergence"]["message"] in printed


def test_auto_resume_mid_run_equals_the_uninterrupted_run(workdir, reference, auto_run, monkeypatch):
    out = workdir / "auto-interrupted"
    original = LStep.__call__

    def stop_at_second_step(self, engine, k):
        if k == 1:
            raise KeyboardInterrupt
        return original(self, engine, k)

    monkeypatch.setattr(LStep, "__call__", stop_at_second_step)
    assert compress_auto(workdir, reference, out) == 130
    monkeypatch.setattr(LStep, "__call__", original)
    assert compress_auto(workdir, reference, out, "--resume") == 0
    assert without_timings(report(out)) == without_timings(report(auto_run))
