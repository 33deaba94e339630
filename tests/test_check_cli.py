"""`lcdsl check`: every example spec passes, and mistakes get located messages, never tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lcdsl.cli import main

SPECS = sorted((Path(__file__).parent.parent / "specs").glob("*.lc"))


def model_for(spec: Path) -> str:
    """Example specs are named after the model they are written for; the demo uses lenet300."""
    return "lenet5" if spec.name.startswith("lenet5") else "lenet300"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_example_spec_checks(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(spec), "--model", model_for(spec), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks"] and all(t["weights"] > 0 for t in summary["tasks"])
    assert main(["check", str(spec)]) == 0


def test_check_prints_resolved_amounts_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    spec = next(s for s in SPECS if s.name == "lenet300-prune.lc")
    assert main(["check", str(spec), "--model", "lenet300", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (task,) = summary["tasks"]
    assert task["operator"] == "prune(l0=13310)"  # 5% of 266,200
    assert task["parameters"] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert summary["dense"] == ["fc1.bias", "fc2.bias", "fc3.bias"]
    assert summary["bits_after"] == task["bits_after"] + 410 * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.lc"
    path.write_text(text)
    return path


def test_semantic_errors_are_all_reported_with_carets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "lrr = 0.1\nfc4 : quant(k=2)\nfc1 : qaunt(k=2)\nfc2 : quant(k=1)\n")
    assert main(["check", str(path), "--model", "lenet300"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1:1: error: unknown setting 'lrr'; did you mean 'lr'?" in err
    assert f"{path}:2:1: error: 'fc4' matches no parameter of the model; did you mean" in err
    assert f"{path}:3:7: error: unknown operator 'qaunt'; did you mean 'quant'?" in err
    assert f"{path}:4:7: error: quant(): k must be an integer ≥ 2, got 1" in err
    assert "  fc1 : qaunt(k=2)\n        ^^^^^^^^^^" in err


def test_overlap_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "fc* : quant(k=2)\n\nfc1 : prune(l0=5%)\n")
    assert main(["check", str(path), "--model", "lenet300"]) == 2
    assert "3:1: error: 'fc1.weight' is already compressed by the rule on line 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fc1 : prune(l0=150%)\n", "150%"),
        ("fc1 : prune(l0=1.5)\n", "ambiguous"),
        ("fc1 : lowrank(rank=0)\n", "rank must be an integer ≥ 1, got 0"),
        ("mu = geometric(start=-1, factor=2, steps=3)\n", "start must be a positive number"),
        ("fc1 : quant(k=2\n", "error:"),
        ("\xff\xfe garbage", "error:"),
    ],
)
def test_bad_values_and_bytes_exit_2_without_traceback(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.lc"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    result = subprocess.run(
        [sys.executable, "-m", "lcdsl", "check", str(path), "--model", "lenet300"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "fc1 : quant(k=2)\n")
    assert main(["check", str(path), "--model", "lenet301"]) == 1
    assert "unknown model 'lenet301'; did you mean 'lenet300'" in capsys.readouterr().err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "no/such/file.lc"]) != 0
    err = capsys.readouterr().err
    assert "no/such/file.lc" in err and "Traceback" not in err


def test_check_prints_the_schedule_it_will_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "auto.lc"
    spec.write_text("fc* : quant(k=2)\n")  # no mu: the adaptive default
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "schedule: μ auto: at most 20 LC steps (42 epochs, + 3 retries of 2), μ₀ from the model" in out
    assert "μ ≤ 6.79 at LC step 1" in out and "rolled back and retried" in out and "stops when" in out
    fixed = next(s for s in SPECS if s.name == "lenet300-quant.lc")
    assert main(["check", str(fixed), "--model", "lenet300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"] == ["schedule: 20 LC steps (42 epochs), μ 9e-05 → 0.00337"]
    spec.write_text("mu = [1, 30]\nlr = 0.1\nfc* : quant(k=2)\n")
    assert main(["check", str(spec)]) == 0
    assert "warning: LC step 2: lr·μ = 0.098·30 = 2.94 is past the stable limit" in capsys.readouterr().out
