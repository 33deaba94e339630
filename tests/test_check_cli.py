"""`lcdsl check`: every example spec passes, and mistakes get located messages, never tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _reference_with_spectrum(path: Path) -> None:
    """A LeNet300 reference for digits (64 inputs) whose weights have known singular values:
    fc1's are 4, 2, 0.5 and 0.05 (rank 4), fc2's 3, fc3's 0.4 (rank 1 each)."""
    from lcdsl.store.checkpoint import reference_record
    from lcdsl.training.zoo import load_model

    model = load_model("lenet300", in_features=64, num_classes=10)
    with torch.no_grad():
        for name, values in (("fc1", [4.0, 2.0, 0.5, 0.05]), ("fc2", [3.0]), ("fc3", [0.4])):
            layer = getattr(model, name)
            m, n = layer.weight.shape
            u = torch.linalg.qr(torch.randn(m, len(values), generator=torch.Generator().manual_seed(1)))[0]
            v = torch.linalg.qr(torch.randn(n, len(values), generator=torch.Generator().manual_seed(2)))[0]
            layer.weight.copy_(u @ torch.diag(torch.tensor(values)) @ v.T)
    record = reference_record(model, model_name="lenet300", data_name="digits", recipe={}, history=[],
                              test_error=0.1, train_error=0.1)  # fmt: skip
    torch.save(record, path)


def _penalties_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[Path, Path, dict]:
    """``lcdsl check --json`` of the spec ``text`` on the spectrum reference: the reference, the
    spec file and the JSON's ``penalty_forms``."""
    ref = tmp_path / "ref.pt"
    _reference_with_spectrum(ref)
    spec = tmp_path / "rs.lc"
    spec.write_text(text)
    assert main(["check", str(spec), "--model", "lenet300", "--reference", str(ref), "--json"]) == 0
    return ref, spec, json.loads(capsys.readouterr().out)["penalty_forms"]


def test_check_sizes_penalty_forms_on_the_reference_at_the_first_and_last_mu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # rank r + 1 is kept when σ² > 2α(m + n)/μ; fc1 (300×64): 2·1e-3·364/μ is 0.728 at μ = 1
    # (keeps σ = 4, 2) and 0.00728 at μ = 100 (keeps 4, 2, 0.5 but not 0.05)
    ref, spec, penalties = _penalties_of(tmp_path, capsys, "mu = geometric(start=1, factor=10, steps=3)\nfc* : lowrank(alpha=1e-3)\n")
    assert penalties["ends"] == [1.0, 100.0] and penalties["weights"] == f"the reference {ref}"
    kept = {row["task"]: [at["kept"] for at in row["at"]] for row in penalties["tasks"]}
    assert kept == {
        "fc1.weight": ["rank 2 of 64", "rank 3 of 64"],  # 0.05² = 0.0025 < 0.00728
        "fc2.weight": ["rank 1 of 100", "rank 1 of 100"],  # 9 > 2·1e-3·400 = 0.8
        "fc3.weight": ["rank 0 of 10", "rank 1 of 10"],  # 0.16 < 0.22 at μ = 1; > 0.0022 at μ = 100
    }
    fc1 = penalties["tasks"][0]["at"][0]
    assert fc1["params"] == 2 * (300 + 64) and fc1["ratio"] == pytest.approx(19_200 / (2 * 364))

    assert main(["check", str(spec), "--model", "lenet300", "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "at the first μ = 1" in out and "at the last μ = 100" in out
    assert "rank 2 of 64 · 728 params ×26.4" in out and "the limit μ → 0⁺" in out

    # without a reference: sized on the initial weights, and said so
    assert main(["check", str(spec), "--model", "lenet300"]) == 0
    out = capsys.readouterr().out
    assert "penalty forms on lenet300's initial weights" in out and "give --reference REF" in out


def test_check_sizes_penalty_forms_at_the_decades_of_mu_auto_may_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lcdsl.engine.schedule import mu_cap, probe_mus
    from lcdsl.plan.settings import Settings

    ref, spec, penalties = _penalties_of(tmp_path, capsys, "lr = 0.1\nfc* : lowrank(alpha=1e-3)\n")  # no mu: auto
    settings = Settings(lr=0.1)
    assert penalties["ends"] is None and penalties["mus"] == list(probe_mus(settings))
    assert penalties["mus"][0] == 1e-3 and penalties["mus"][-1] <= mu_cap(settings, 19) < 10 * penalties["mus"][-1]
    fc1 = penalties["tasks"][0]
    at = {a["mu"]: a["kept"] for a in fc1["at"]}
    assert at[1.0] == "rank 2 of 64" and at[0.001] == "rank 0 of 64"  # σ² > 2·1e-3·364/μ: 0.728 at μ = 1, 728 at 1e-3
    assert main(["check", str(spec), "--model", "lenet300", "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "at μ = 0.001" in out and "auto picks μ during the run" in out


def test_check_without_penalty_forms_prints_no_penalty_table(capsys: pytest.CaptureFixture[str]) -> None:
    spec = next(s for s in SPECS if s.name == "lenet300-prune.lc")
    assert main(["check", str(spec), "--model", "lenet300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["penalty_forms"] is None
    assert main(["check", str(spec), "--model", "lenet300"]) == 0
    assert "penalty forms" not in capsys.readouterr().out


def test_a_schedule_that_picks_mu_in_the_run_has_no_ends() -> None:
    from types import SimpleNamespace

    from lcdsl.plan.summary import schedule_ends

    assert schedule_ends(SimpleNamespace(settings=SimpleNamespace(mu=SimpleNamespace()))) is None  # type: ignore[arg-type]
    empty = SimpleNamespace(values=lambda: ())
    assert schedule_ends(SimpleNamespace(settings=SimpleNamespace(mu=empty))) is None  # type: ignore[arg-type]


def test_check_reference_for_another_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.pt"
    _reference_with_spectrum(ref)
    spec = next(s for s in SPECS if s.name == "lenet300-rankselect.lc")
    assert main(["check", str(spec), "--model", "lenet5", "--reference", str(ref)]) != 0
    assert "was trained for model 'lenet300', not 'lenet5'" in capsys.readouterr().err


def test_check_reference_without_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = next(s for s in SPECS if s.name == "lenet300-rankselect.lc")
    assert main(["check", str(spec), "--reference", str(tmp_path / "ref.pt")]) == 2
    assert "--reference needs --model" in capsys.readouterr().err


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
