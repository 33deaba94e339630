"""Compact θ (integer fields in the smallest dtype that holds them, bit-packed in compressed.pt), the
buffers in the size report, and ``lcdsl export``'s check against the outputs ``compress`` recorded."""

from __future__ import annotations

import io
import json

import pytest
import torch

from lcdsl.cli import main
from lcdsl.engine.core import Engine
from lcdsl.errors import ModelError
from lcdsl.language.parser import parse
from lcdsl.operators.additive import Additive
from lcdsl.operators.base import code_dtype, position_dtype
from lcdsl.operators.binary import Binarize, Ternarize
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant
from lcdsl.plan.summary import plan_summary
from lcdsl.store.atomic import load_checkpoint, save_atomic
from lcdsl.store.lcz import export_model, load_lcz
from lcdsl.store.model import compressed_state, load_compressed, pack_theta, unpack_theta
from lcdsl.store.probe import check_probe, probe_outputs
from lcdsl.training.zoo import LeNet300, resnet_small

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET_SPEC = "conv1, layer*.*.conv*, layer*.*.downsample.0, fc : quant(k=4)\n"


# ------------------------------------------------------------------------- θ's dtypes


def test_code_and_position_dtypes_at_their_boundaries():
    assert [code_dtype(k) for k in (2, 256, 257, 2**15, 2**15 + 1, 2**31, 2**31 + 1)] == [
        torch.uint8, torch.uint8, torch.int16, torch.int16, torch.int32, torch.int32, torch.int64,
    ]  # fmt: skip
    assert position_dtype(2**31) == torch.int32 and position_dtype(2**31 + 1) == torch.int64


@pytest.mark.parametrize(
    ("op", "field", "dtype"),
    [
        (Quant(k=2), "assignments", torch.uint8),
        (Quant(bits=8), "assignments", torch.uint8),
        (Quant(codebook=tuple(float(i) for i in range(300))), "assignments", torch.int16),
        (Prune(l0=5), "indices", torch.int32),
        (Prune(l1=1.0), "indices", torch.int32),
        (Prune(l0_penalty=0.01), "indices", torch.int32),
        (Ternarize(), "ternary", torch.int8),
        (Binarize(), "signs", torch.bool),
        (Binarize(scale=True), "signs", torch.bool),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
def test_theta_integer_fields_are_compact_and_decompress_in_the_weights_dtype(op, field, dtype, wdtype):
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(wdtype).reshape(-1)
    for mu in (0.0, 10.0):
        theta = op.project(w, mu=mu)
        assert theta[field].dtype == dtype
        out = op.decompress(theta, tuple(w.shape))
        assert out.dtype == wdtype and out.shape == w.shape


def test_structured_prune_and_additive_terms_keep_compact_dtypes():
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    assert Prune(l0=2, by="rows").project(w)["indices"].dtype == torch.int32
    theta = Additive((Quant(k=2), Prune(l0=3))).project(w.reshape(-1))
    assert theta["0.assignments"].dtype == torch.uint8 and theta["1.indices"].dtype == torch.int32


def test_binarize_still_reads_float_signs_of_earlier_versions():
    w = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
    old = {"signs": torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)}
    assert torch.equal(Binarize().decompress(old, (4,)), Binarize().decompress(Binarize().project(w), (4,)))
    old_scaled = {**old, "scale": torch.tensor(1.0, dtype=torch.float64)}
    new_scaled = Binarize(scale=True).project(w)
    assert torch.equal(Binarize(scale=True).decompress({**old_scaled, "scale": new_scaled["scale"]}, (4,)),
                       Binarize(scale=True).decompress(new_scaled, (4,)))  # fmt: skip


# ------------------------------------------------------------------------- compressed.pt


def _compressed(model, spec_text):
    plan = parse(spec_text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    return plan, thetas, plan_summary(plan, [size for _, size in engine.storage()])


def _file_bytes(state) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


def test_pack_theta_round_trips_bit_for_bit():
    theta = {
        "assignments": torch.tensor([0, 3, 1, 2, 3], dtype=torch.uint8),
        "indices": torch.tensor([2, 9, 40], dtype=torch.int32),
        "signs": torch.tensor([True, False, True]),
        "codebook": torch.tensor([0.5, -1.0]),
        "same": torch.zeros(7, dtype=torch.uint8),  # one value: zero bits, no bytes
    }
    stored, packed = pack_theta(theta)
    assert set(packed) == {"assignments", "indices", "signs", "same"} and stored["codebook"] is theta["codebook"]
    back = unpack_theta(stored, packed, where="t")
    for key, value in theta.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    with pytest.raises(ModelError, match="packed field 'indices'"):
        unpack_theta({**stored, "indices": stored["indices"][:-1]}, packed, where="t")


@pytest.mark.parametrize(
    ("make", "spec_text"),
    [
        (lambda: LeNet300(in_features=64), "fc* : quant(k=2)\n"),
        (lambda: LeNet300(in_features=64), "[fc*] : prune(l0=5%)\n"),
        (lambda: LeNet300(in_features=784), "fc* : quant(k=2)\n"),
        (resnet_small, RESNET_SPEC),
        (resnet_small, "[conv1, layer*.*.conv*, layer*.*.downsample.0] : prune(l0=10%)\n"),
    ],
    ids=["lenet300-quant", "lenet300-prune", "lenet300-784-quant", "resnet-small-quant", "resnet-small-prune"],
)
def test_compressed_pt_is_within_1_5_of_the_reported_size(make, spec_text, tmp_path):
    torch.manual_seed(0)
    model = make()
    plan, thetas, summary = _compressed(model, spec_text)
    x = torch.randn(40, model.fc1.in_features if hasattr(model, "fc1") else 64)
    probe = probe_outputs(model, x, data="random", seed=0)
    state = compressed_state(model, plan, thetas, spec_text=spec_text, model_name="m", probe=probe)
    reported = summary["total_bits_after"] / 8  # θ, dense leftovers and buffers
    assert reported < _file_bytes(state) <= 1.5 * reported
    path = tmp_path / "compressed.pt"
    save_atomic(state, path)
    fresh = make()
    back = load_compressed(fresh, path)
    for name, theta in thetas.items():
        for key, value in theta.items():
            assert back[name][key].dtype == value.dtype and torch.equal(back[name][key], value), (name, key)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_a_format_2_file_with_theta_as_in_memory_still_loads(tmp_path):
    model = LeNet300(in_features=64)
    plan, thetas, _ = _compressed(model, "fc* : quant(k=2)\n")
    state = compressed_state(model, plan, thetas, spec_text="fc* : quant(k=2)\n", model_name="lenet300")
    state["format"] = 2
    for name, entry in state["tasks"].items():
        entry.pop("packed")
        entry["theta"] = {k: v.to(torch.int64) if not v.is_floating_point() else v for k, v in thetas[name].items()}
    save_atomic(state, tmp_path / "old.pt")
    fresh = LeNet300(in_features=64)
    load_compressed(fresh, tmp_path / "old.pt")
    assert torch.equal(fresh.fc1.weight, model.fc1.weight)


def test_lcz_keeps_the_reported_size_and_the_compact_dtypes(tmp_path):
    model = LeNet300(in_features=64)
    spec_text = "fc1 : quant(k=2)\nfc2 : prune(l0=5%)\nfc3 : binarize()\n"
    plan, thetas, _ = _compressed(model, spec_text)
    sizes = export_model(model, plan, thetas, tmp_path / "m.lcz", spec_text=spec_text)
    assert sizes.predicted_bytes - 1 <= sizes.payload_bytes <= sizes.predicted_bytes + 3
    back = load_lcz(tmp_path / "m.lcz", LeNet300(in_features=64))
    assert back["fc1.weight"]["assignments"].dtype == torch.uint8
    assert back["fc2.weight"]["indices"].dtype == torch.int32 and back["fc3.weight"]["signs"].dtype == torch.bool


# ------------------------------------------------------------------------- buffers in the size report


def test_the_plan_counts_buffers_at_their_own_bits():
    model = resnet_small()
    plan = parse(RESNET_SPEC).bind(model)
    buffers = dict(model.named_buffers())
    assert plan.buffers == tuple(buffers) and plan.buffer_numel == sum(b.numel() for b in buffers.values())
    assert plan.buffer_bits == sum(8 * b.numel() * b.element_size() for b in buffers.values())
    summary = plan_summary(plan)
    assert summary["total_bits_before"] == summary["bits_before"] + plan.buffer_bits
    assert summary["total_bits_after"] == summary["bits_after"] + plan.buffer_bits
    assert summary["ratio"] == summary["total_bits_before"] / summary["total_bits_after"]
    lenet = plan_summary(parse("fc* : quant(k=2)\n").bind(LeNet300(in_features=64)))
    assert lenet["buffers"] == [] and lenet["buffer_bits"] == 0 and lenet["total_bits_after"] == lenet["bits_after"]


def test_check_shows_a_buffers_row(tmp_path, capsys):
    (tmp_path / "r.lc").write_text(RESNET_SPEC)
    assert main(["check", str(tmp_path / "r.lc"), "--model", "resnet-small"]) == 0
    text = capsys.readouterr().out
    assert "buffers: 27 (bn1.running_mean, bn1.running_var," in text and "681 values" in text
    assert main(["check", str(tmp_path / "r.lc"), "--model", "resnet-small", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["buffer_bits"] == plan_summary(parse(RESNET_SPEC).bind(resnet_small()))["buffer_bits"] > 0


# ------------------------------------------------------------------------- compress → export, checked


TINY = ["--steps", "1", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet")
    (folder / "r.lc").write_text(RESNET_SPEC)
    ref = folder / "ref.pt"
    assert main(["train", "--model", "resnet-small", "--data", "digits", "--out", str(ref), "--epochs", "1"]) == 0
    run = folder / "run"
    argv = ["compress", str(folder / "r.lc"), "--model", "resnet-small", "--data", "digits", "--reference", str(ref),
            "--out", str(run), *TINY]  # fmt: skip
    assert main(argv) == 0
    return run


def test_report_json_counts_the_buffers(resnet_run):
    size = json.loads((resnet_run / "report.json").read_text())["size"]
    assert size["buffer_bits"] > 0 and "bn1.running_mean" in size["buffers"]
    assert size["total_bits_after"] == size["bits_after"] + size["buffer_bits"]


def test_export_checks_the_file_against_the_evaluated_model(resnet_run, tmp_path, capsys):
    probe = load_checkpoint(resnet_run / "compressed.pt")["probe"]
    assert probe["data"] == "digits" and probe["count"] == 16 and probe["outputs"].shape == (16, 10)
    out = tmp_path / "m.lcz"
    assert main(["export", str(resnet_run), "--out", str(out)]) == 0
    assert "loaded back: outputs equal the compressed model's on 16 test inputs" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["m.lcz"]


def _tampered(resnet_run, tmp_path, change):
    run = tmp_path / "bad"
    run.mkdir()
    state = load_checkpoint(resnet_run / "compressed.pt")
    change(state)
    save_atomic(state, run / "compressed.pt")
    (run / "report.json").write_text((resnet_run / "report.json").read_text())
    return run


@pytest.mark.parametrize("what", ["buffers reset", "outputs changed"])
def test_export_fails_and_keeps_the_previous_file_when_outputs_disagree(resnet_run, tmp_path, capsys, what):
    def reset_buffers(state):
        for name, value in state["buffers"].items():
            state["buffers"][name] = torch.ones_like(value) if name.endswith("running_var") else torch.zeros_like(value)

    def change_outputs(state):
        state["probe"]["outputs"] = state["probe"]["outputs"] + 0.5

    run = _tampered(resnet_run, tmp_path, reset_buffers if what == "buffers reset" else change_outputs)
    out = tmp_path / "m.lcz"
    out.write_bytes(b"the previous good file")
    assert main(["export", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "differs from the compressed model that 'lcdsl compress' evaluated" in err
    assert f"{out} was not written (the file already there is as it was)" in err
    assert out.read_bytes() == b"the previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "m.lcz"]


def test_check_probe_refuses_other_inputs():
    model = LeNet300(in_features=8)
    x = torch.randn(20, 8)
    probe = probe_outputs(model, x, data="d", seed=3)
    assert check_probe(model, probe, x, where="f") == 0.0
    with pytest.raises(ModelError, match="are not those the run recorded"):
        check_probe(model, probe, x + 1, where="f")


def test_probe_keeps_few_inputs_when_outputs_are_large():
    model = torch.nn.Linear(4, 5000)
    probe = probe_outputs(model, torch.randn(16, 4), data="d", seed=0)
    assert probe["count"] == 3 and probe["outputs"].shape == (3, 5000)
