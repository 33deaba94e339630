"""The benchmarks in bench/ still run: tiny sizes, digits, a few seconds in all."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    """Import bench/NAME.py (bench/ is scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # cstep.py imports its sibling scripts
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cstep_smoke_writes_json_and_matches_the_references(tmp_path: Path) -> None:
    out = tmp_path / "cstep.json"
    assert _load("cstep").main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["k"] for r in result["quant"]} == {2, 4}
    for row in result["quant"]:  # exact 1-D k-means is never worse than Lloyd with 10 restarts
        assert row["ours_obj"] <= row["sklearn_obj"] * (1 + 1e-9) + 1e-12
        assert row["ours_s"] > 0
    checked = [r for r in result["prune"] if "reference_obj" in r]
    assert checked and all(r["ok"] for r in checked)
    assert all(r["ok"] for r in result["lowrank"])
    assert len({r["operator"] for r in result["prune"]}) >= 5


def test_cstep_smoke_fails_when_an_objective_is_worse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cstep = _load("cstep")
    import cstep_quant

    # a reference that finds a far smaller objective than ours: the smoke run must report failure
    monkeypatch.setattr(cstep_quant, "time_sklearn", lambda x, k: (0.0, 1e-3))
    assert cstep.main(["--smoke", "--out", str(tmp_path / "bad.json")]) == 1
    rows = json.loads((tmp_path / "bad.json").read_text())["quant"]
    assert not any(r["ok"] for r in rows)


def test_quality_quick_row(tmp_path: Path) -> None:
    quality = _load("quality")
    assert quality.main(["--quick", "--rows", "quant,mixed", "--work", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "quick" / "quality-lenet300-digits.json").read_text())
    assert result["data"] == "digits"
    assert [r["name"] for r in result["rows"]] == ["quant", "mixed"]
    for row in result["rows"]:
        assert 0 <= row["direct_error"] <= 1 and 0 <= row["final_error"] <= 1
        assert row["lc_steps"] == 3
        assert row["bits"] < row["dense_bits"] and row["ratio"] == pytest.approx(row["dense_bits"] / row["bits"])
    # every weight of LeNet300 on 1 bit + 3 codebooks of 2 floats + 410 dense biases
    quant = result["rows"][0]
    weights = 300 * 64 + 100 * 300 + 10 * 100
    assert quant["bits"] == weights + 3 * 2 * 32 + 410 * 32


def test_quality_unknown_row_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _load("quality").main(["--quick", "--rows", "nope", "--work", str(tmp_path)])


def test_overhead_pieces_on_digits() -> None:
    overhead = _load("overhead")
    from lcdsl.training.data import load_data

    data = load_data("digits")
    plain = overhead.run_plain(data, 1)
    lc = overhead.run_lc(data, 1)
    assert plain["seconds"] > 0 and lc["cpu_seconds"] > 0
    assert 0 < lc["c_step_seconds"] < lc["seconds"] and 0 < lc["penalty_seconds"] < lc["l_step_seconds"]
    counted = lc["engine_bytes"]
    # the LC state beside w: Δ(θ) and λ, one copy each of the compressed weights; the in-place
    # penalty gradient caches no target
    assert counted["delta"] == counted["lambda"] == counted["weights"] > 0
    assert counted["penalty_target"] == 0


def test_resnet_quick_runs_and_writes_its_numbers(tmp_path: Path) -> None:
    resnet = _load("resnet")
    out = tmp_path / "resnet.json"
    assert resnet.main(["--quick", "--steps", "1", "--batches", "1", "--batch-size", "4", "--repeats", "1",
                        "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    run = result["repeats"][0]
    assert result["model"] == "resnet_small" and run["tasks"] == 10  # nine convolutions and the classifier
    assert 0 < run["c_seconds"] < run["seconds"] and run["ratio"] > 0


def test_export_sizes_quick_writes_every_format_and_reloads(tmp_path: Path) -> None:
    out = tmp_path / "sizes.json"
    assert _load("export_sizes").main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"lcz", "safetensors"} <= set(result["formats"])
    assert [row["case"] for row in result["rows"]] == ["lenet300-quant", "lenet300-prune", "lenet300-mixed",
                                                       "lenet300-additive"]  # fmt: skip
    for row in result["rows"]:
        assert row["safetensors_outputs_equal"]
        assert row["lcz"] < row["dense"] and row["safetensors"] < row["dense"]
        assert row["safetensors"] - row["safetensors_header"] <= row["lcz"]  # the same payload, a longer header
