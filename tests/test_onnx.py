"""ONNX export: the deployed model run in onnxruntime against torch, codebook weights stored as
packed codes and codebooks, smaller than the dense export; a clear error without the extra."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import lcdsl
from lcdsl.cli import main
from lcdsl.deploy import export_onnx, run_onnx
from lcdsl.deploy.onnx import ONNX_TOLERANCE, onnx_bytes
from lcdsl.engine.core import Engine
from lcdsl.errors import MissingExtraError
from lcdsl.formats import ONNX_FORMAT
from lcdsl.store import read_compressed
from lcdsl.training.zoo import LeNet300, resnet_small

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("one_thread")


def compressed(model: torch.nn.Module, text: str):
    plan = lcdsl.parse(text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return plan, engine.finalize()


def relative(expected: torch.Tensor, got: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def initializers(path) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name → (ONNX data type, shape) of every initializer of the file."""
    return {i.name: (i.data_type, tuple(i.dims)) for i in onnx.load(str(path)).graph.initializer}


def test_the_demo_run_exports_to_onnx_and_runs_in_onnxruntime(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["compress", "specs/demo.lc", "--model", "lenet300", "--data", "digits", "--out", str(run),
                 "--steps", "1", "--epochs", "1", "--first-epochs", "1", "--reference-epochs", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    path = run / "model.onnx"
    assert path.is_file() and "the dense model's ONNX export is" in printed
    assert "fc3: Linear(100→10) → CodebookLinear(100→10, k=2, 1-bit codes)" in printed
    assert "fc2: Linear(64→300)" not in printed and "Linear(300→6) · Linear(6→100)" in printed
    # onnxruntime on the inputs compress probed gives the outputs of the model compress evaluated
    probe = read_compressed(run / "compressed.pt")["probe"]
    from lcdsl.training.data import load_data

    x = load_data("digits", seed=int(probe["seed"])).x_test[: probe["count"]]
    got = torch.from_numpy(run_onnx(path, x))
    assert relative(probe["outputs"], got) <= ONNX_TOLERANCE
    found = initializers(path)
    assert found["fc3.packed"] == (onnx.TensorProto.UINT8, (125,))  # 1000 1-bit codes in 125 bytes
    assert found["fc1.packed"][0] == onnx.TensorProto.UINT8 and "fc1.sparse_positions" in found  # quant + prune
    assert "fc2.weight" not in found and "fc2.0.weight" in found  # two layers
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["lcdsl.format"] == str(ONNX_FORMAT) and "fc3 : quant(k=2)" in metadata["lcdsl.spec"]


@pytest.fixture(scope="module")
def dense_lenet300_bytes():
    """The size of a dense LeNet300 (64 inputs) as ONNX: it depends on the shapes only."""
    return len(onnx_bytes(LeNet300(in_features=64).eval(), torch.randn(2, 64)))


@pytest.mark.parametrize(
    "text",
    ["fc* : quant(k=2)\n", "fc1 : lowrank(rank=20)\nfc2 : lowrank(rank=7)\nfc3 : prune(l0=50%)\n",
     "fc1 : prune(l0=30%, by=rows)\nfc2 : quant(k=4)\nfc3 : ternarize()\n"],
    ids=["quant", "lowrank-prune", "rows-quant-ternary"],
)  # fmt: skip
def test_lenet300_round_trips_and_is_smaller_than_the_dense_export(tmp_path, text, dense_lenet300_bytes):
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, text)
    x = torch.randn(16, 64)
    result = export_onnx(model, plan, thetas, x, tmp_path / "m.onnx", dense_size=False)
    assert result.relative_difference <= ONNX_TOLERANCE and result.max_abs_difference < 1e-4
    with torch.no_grad():
        expected = model(x)
    got = torch.from_numpy(run_onnx(tmp_path / "m.onnx", torch.cat([x, x[:3]])))  # another batch size
    assert relative(torch.cat([expected, expected[:3]]), got) <= ONNX_TOLERANCE
    assert result.dense_bytes is None and result.file_bytes < dense_lenet300_bytes / 2


@pytest.mark.slow
def test_resnet_small_with_pruned_filters_and_codebook_convs_round_trips(tmp_path):
    torch.manual_seed(0)
    model = resnet_small().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.bias.uniform_(-1, 1)
    plan, thetas = compressed(model, "layer*.*.conv1 : prune(l0=50%, by=filters)\nlayer*.*.conv2 : quant(k=4)\n")
    x = torch.randn(4, 64)
    result = export_onnx(model, plan, thetas, x, tmp_path / "r.onnx")
    assert result.relative_difference <= ONNX_TOLERANCE
    assert result.file_bytes < 0.6 * result.dense_bytes
    found = initializers(tmp_path / "r.onnx")
    assert found["layer2.0.conv1.weight"][1] == (16, 16, 3, 3)  # half the filters
    assert found["layer2.0.conv2.layer.packed"][0] == onnx.TensorProto.UINT8
    with torch.no_grad():
        assert relative(model(x), torch.from_numpy(run_onnx(tmp_path / "r.onnx", x))) <= ONNX_TOLERANCE


@pytest.mark.slow
def test_gpt2_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    plan, thetas = compressed(model, "lm_head : quant(k=4)\ntransformer.h.*.mlp.c_fc : prune(l0=25%, by=rows)\n"
                                     "transformer.h.*.attn.c_attn : quant(k=2)\n")  # fmt: skip
    batch = {"input_ids": torch.randint(0, 64, (3, 10)), "labels": torch.randint(0, 64, (3, 10))}
    result = export_onnx(model, plan, thetas, batch, tmp_path / "g.onnx")
    assert result.relative_difference <= ONNX_TOLERANCE
    assert result.file_bytes < result.dense_bytes
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"]).logits
    assert relative(expected, torch.from_numpy(run_onnx(tmp_path / "g.onnx", batch))) <= ONNX_TOLERANCE


def test_without_the_extra_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.import_module

    def without_onnxscript(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_onnxscript)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc3 : quant(k=2)\n")
    with pytest.raises(MissingExtraError, match=r"needs onnxscript, which is not installed: pip install 'lcdsl\[onnx\]'"):
        export_onnx(model, plan, thetas, torch.randn(2, 64), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    # the command line prints it as one error line, no traceback
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"data": "digits"}))
    from lcdsl.store.atomic import save_atomic
    from lcdsl.store.model import compressed_state

    model = LeNet300(in_features=64)  # the digits' size, as export rebuilds it
    plan, thetas = compressed(model, "fc3 : quant(k=2)\n")
    state = compressed_state(model, plan, thetas, spec_text="fc3 : quant(k=2)\n", model_name="lenet300")
    save_atomic(state, run / "compressed.pt")
    assert main(["export", str(run), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "lcdsl: error: ONNX export needs onnxscript" in err and "Traceback" not in err


def test_lcz_options_with_the_onnx_format_are_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx", "--deflate"]) == 2
    assert "--deflate is an option of the .lcz file" in capsys.readouterr().err
