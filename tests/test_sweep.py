"""Sweeps: the --vary spelling, the variant specs, and ``lcdsl sweep`` on digits with tiny runs."""

from __future__ import annotations

import json

import pytest

import lcdsl
from lcdsl.cli import main
from lcdsl.errors import EngineError, SpecError
from lcdsl.language.spec import Percent
from lcdsl.report.sweep import Variation, collect, parse_variation, plot_tradeoff, slug, variants
from lcdsl.training.zoo import LeNet300

BASE = """\
# base spec
mu = geometric(start=1e-3, factor=2, steps=2)

@Linear, !fc3 : prune(l0=5%)   # the hidden layers
fc3           : quant(k=2) + prune(l0=10)
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_variation_reads_selector_operator_argument_and_values():
    v = parse_variation("@Linear,!fc3 : prune.l0 = 1%, 0.02, 300")
    assert v == Variation("@Linear,!fc3", "prune", "l0", (Percent(1.0), 0.02, 300))
    assert parse_variation(" [fc1, fc2]:quant.codebook=[-1, 1], [0, 2]").values == ((-1, 1), (0, 2))


def test_values_are_data_never_evaluated():
    (value,) = parse_variation("fc1 : prune.l0 = __import__('os')").values
    assert isinstance(value, lcdsl.Call) and value.name == "__import__"


@pytest.mark.parametrize(
    "text, message",
    [
        ("fc1 : prune.l0", "expected SELECTOR : OPERATOR.ARGUMENT = V1, V2"),
        ("fc1 = 1, 2", "expected SELECTOR : OPERATOR.ARGUMENT = V1, V2"),
        ("fc1 : prune = 1", "expected SELECTOR : OPERATOR.ARGUMENT = V1, V2"),
        ("fc1 : prune.l0 = ", "no values after '='"),
        ("fc1 : prune.l0 = 1, 1", "a value is given twice"),
        ("fc1 : prune.l0 = 1 +", "not a list of spec values"),
    ],
)
def test_bad_variations_are_spec_errors(text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_variation(text)
    assert info.value.filename == "--vary"


def test_variants_are_whole_specs_for_every_combination():
    spec = lcdsl.parse(BASE)
    grid = [parse_variation("@Linear,!fc3 : prune.l0 = 1%, 2%"), parse_variation("fc3 : quant.k = 2, 4, 8")]
    out = variants(spec, grid)
    assert len(out) == 6
    assert out[0].label == "@Linear, !fc3: prune.l0=1%; fc3: quant.k=2"
    assert out[5].values == {"@Linear, !fc3: prune.l0": Percent(2.0), "fc3: quant.k": 8}
    source = out[5].spec.source
    assert "@Linear, !fc3 : prune(l0=2%)" in source and "fc3           : quant(k=8) + prune(l0=10)" in source
    assert "mu = geometric(start=1e-3, factor=2, steps=2)" in source and "# the hidden layers" in source
    assert slug(5, out[5]) == "05-prune.l0-2pct_quant.k-8"
    # an argument the call does not have yet is added
    added = variants(spec, [parse_variation("fc3 : quant.bits = 1")])[0].spec
    with pytest.raises(SpecError, match="exactly one of k, bits, codebook"):
        added.bind(LeNet300(in_features=64))


@pytest.mark.parametrize(
    "text, message, hint",
    [
        ("fc9 : prune.l0 = 1", "no rule has the selector 'fc9'", "the rules' selectors: '@Linear, !fc3', 'fc3'"),
        ("fc3 : lowrank.rank = 1", "has no 'lowrank' term", "its operators: quant + prune"),
    ],
)
def test_variations_must_name_a_rule_and_its_operator(text, message, hint):
    with pytest.raises(SpecError, match=message) as info:
        variants(lcdsl.parse(BASE), [parse_variation(text)])
    assert f"hint: {hint}" in info.value.render()


def test_the_same_argument_twice_is_an_error():
    twice = [parse_variation("fc3 : quant.k = 2"), parse_variation("fc3: quant.k = 4")]
    with pytest.raises(SpecError, match="same argument"):
        variants(lcdsl.parse(BASE), twice)


def test_collect_needs_every_report(tmp_path):
    spec = lcdsl.parse(BASE)
    variation = parse_variation("fc3 : quant.k = 2")
    (variant,) = variants(spec, [variation])
    with pytest.raises(EngineError, match="missing"):
        collect([(variant, tmp_path)], {}, spec_path="base.lc", variations=[variation])


def test_plot_marks_the_reference(tmp_path):
    result = {
        "reference": {"bits": 1_000_000, "test_error": 0.05},
        "runs": [
            {"bits": 20_000, "test_error": 0.2, "direct_test_error": 0.4, "values": {"a": "1%"}},
            {"bits": 80_000, "test_error": 0.07, "direct_test_error": None, "values": {"a": "5%"}},
        ],
    }
    assert plot_tradeoff(result, tmp_path / "s.png") is None
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TINY = ["--steps", "1", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]


def test_cli_sweep_runs_every_variant_from_one_reference(tmp_path, capsys):
    spec_path = tmp_path / "base.lc"
    spec_path.write_text("[fc*] : prune(l0=5%)\n")  # square brackets: user text, not terminal markup
    reference = tmp_path / "ref.pt"
    assert main(["train", "--model", "lenet300", "--data", "digits", "--out", str(reference), "--epochs", "2"]) == 0
    out = tmp_path / "sweep"
    argv = ["sweep", str(spec_path), "--vary", "[fc*] : prune.l0 = 2%, 20%", "--out", str(out),
            "--reference", str(reference), *TINY]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[fc*]: prune.l0=20%" in printed and "[fc1.weight, fc2.weight, fc3.weight]" in printed
    result = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in result["runs"]] == ["[fc*]: prune.l0=2%", "[fc*]: prune.l0=20%"]
    assert result["reference"]["path"] == str(reference) and result["reference"]["bits"] == 32 * 50_610
    small, large = result["runs"]
    assert small["bits"] < large["bits"] < result["reference"]["bits"]
    for run in result["runs"]:
        report = json.loads((out / run["dir"].split("/")[-1] / "report.json").read_text())
        assert report["reference"]["path"] == str(reference)  # every run starts from the same weights
        assert report["final"]["test_error"] == run["test_error"]
    assert (out / "sweep.png").is_file()
    capsys.readouterr()
    assert main(argv) == 0  # finished variants are kept, not run again
    assert capsys.readouterr().out.count("done before, kept") == 2


def test_cli_sweep_checks_every_variant_before_training(tmp_path, capsys):
    spec_path = tmp_path / "base.lc"
    spec_path.write_text("fc1 : lowrank(rank=5)\n")
    out = tmp_path / "sweep"
    code = main(["sweep", str(spec_path), "--vary", "fc1 : lowrank.rank = 5, 500", "--out", str(out), *TINY])
    assert code == 2
    assert "rank=500 is above min(m, n)" in capsys.readouterr().err
    assert not (out / "reference.pt").exists()


@pytest.mark.parametrize("text", ["[1, 2]", "{\"size\": 3}", "{\"size\": {}, \"final\": {}}", "not json"])
def test_a_variant_report_that_is_not_a_run_report_is_an_engine_error(tmp_path, text):
    spec = lcdsl.parse("fc1 : prune(l0=5%)")
    variation = parse_variation("fc1: prune.l0=[5%]")
    (variant,) = variants(spec, [variation])
    (tmp_path / "report.json").write_text(text)
    with pytest.raises(EngineError, match="report.json"):
        collect([(variant, tmp_path)], {}, spec_path="base.lc", variations=[variation])
