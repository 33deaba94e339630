"""Real architectures end to end: compress → export → reload gives the model that was evaluated.

A BatchNorm ResNet on the digits through ``lcdsl compress`` and ``lcdsl export`` (``.lcz`` and
``--format safetensors``; buffers travel, the export's check is against the outputs ``compress``
recorded); a GPT-2 with its tied embedding,
HF ``Conv1D`` layers pruned by output units and token-id data through the same commands; a BERT
classifier through the API (bind, engine, export, load).
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from lcdsl.cli import main
from lcdsl.engine import Engine
from lcdsl.language import parse
from lcdsl.store import export_model, load_compressed, load_lcz, load_safetensors, read_compressed
from lcdsl.training.data import load_data, model_kwargs
from lcdsl.training.zoo import load_model

transformers = pytest.importorskip("transformers")

from test_real_training import FACTORIES, TINY  # noqa: E402  (the GPT-2 and BERT factories)

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "lcdsl_real_models_factories"

GPT_SPEC = """\
lm_head : quant(k=4)                               # the tied embedding, named by its alias
transformer.h.*.mlp.c_fc : prune(l0=25%, by=rows)  # HF Conv1D: keep a quarter of the output units
transformer.h.*.attn.c_attn : quant(k=2)
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("real")
    (path / f"{MODULE}.py").write_text(FACTORIES)
    (path / "gpt.lc").write_text(GPT_SPEC)
    (path / "resnet.lc").write_text("[layer*.**@Conv2d] as convs : quant(k=4)\nfc : prune(l0=50%)\n")
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))
    sys.modules.pop(MODULE, None)


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x) if not isinstance(x, dict) else model(**x)
    return out if isinstance(out, torch.Tensor) else out.logits


def test_a_batchnorm_resnet_reloads_from_its_export_as_it_was_evaluated(folder, capsys):
    run = folder / "resnet"
    common = ["--model", "resnet-small", "--data", "digits", "--out", str(run), "--steps", "1", "--epochs", "1",
              "--first-epochs", "1", "--reference-epochs", "1"]  # fmt: skip
    assert main(["compress", str(folder / "resnet.lc"), *common]) == 0
    assert main(["export", str(run), "--out", str(run / "model.lcz")]) == 0
    printed = capsys.readouterr().out
    assert "outputs equal the compressed model's" in printed or "of the compressed model's" in printed

    data = load_data("digits")
    evaluated = load_model("resnet-small", **model_kwargs("resnet-small", data))
    load_compressed(evaluated, run / "compressed.pt")
    probe = read_compressed(run / "compressed.pt")["probe"]
    x = data.x_test[: probe["count"]]
    assert torch.allclose(outputs(evaluated, x), probe["outputs"], atol=1e-5)  # compressed.pt is that model

    reloaded = load_model("resnet-small", **model_kwargs("resnet-small", data))
    load_lcz(run / "model.lcz", reloaded)
    assert torch.equal(reloaded.layer2[0].bn1.running_var, evaluated.layer2[0].bn1.running_var)
    assert int(reloaded.bn1.num_batches_tracked) == int(evaluated.bn1.num_batches_tracked) > 0
    assert torch.allclose(outputs(reloaded, x), probe["outputs"], atol=1e-5)
    conv = reloaded.layer3[0].conv2.weight
    assert conv.unique().numel() <= 4  # the joint group's one 4-entry codebook

    assert main(["export", str(run), "--format", "safetensors"]) == 0  # the same model as safetensors
    from_safetensors = load_model("resnet-small", **model_kwargs("resnet-small", data))
    load_safetensors(run / "model.safetensors", from_safetensors)
    assert torch.equal(outputs(from_safetensors, x), outputs(reloaded, x))


def test_gpt2_with_a_tied_embedding_and_conv1d_rows_through_compress_and_export(folder):
    run = folder / "gpt"
    argv = ["compress", str(folder / "gpt.lc"), "--model", f"{MODULE}:gpt2", "--data", f"{MODULE}:tokens",
            "--out", str(run), *TINY]  # fmt: skip
    assert main(argv) == 0
    # the run used module:function factories: export imports them only when the command line names them
    assert main(["export", str(run), "--out", str(run / "model.lcz"), "--model", f"{MODULE}:gpt2",
                 "--data", f"{MODULE}:tokens"]) == 0  # fmt: skip
    factories = importlib.import_module(MODULE)

    compressed = factories.gpt2()
    load_compressed(compressed, run / "compressed.pt")
    reloaded = factories.gpt2()
    load_lcz(run / "model.lcz", reloaded)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight  # still one tensor
    assert reloaded.transformer.wte.weight.unique().numel() <= 4
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    assert torch.equal(outputs(reloaded, {"input_ids": ids}), outputs(compressed, {"input_ids": ids}))

    assert main(["export", str(run), "--format", "safetensors", "--model", f"{MODULE}:gpt2",
                 "--data", f"{MODULE}:tokens"]) == 0  # fmt: skip
    from_safetensors = factories.gpt2()
    load_safetensors(run / "model.safetensors", from_safetensors)
    assert from_safetensors.lm_head.weight is from_safetensors.transformer.wte.weight
    assert torch.equal(outputs(from_safetensors, {"input_ids": ids}), outputs(compressed, {"input_ids": ids}))

    fc = reloaded.transformer.h[0].mlp.c_fc.weight  # Conv1D stores (in, out): output units are columns
    kept_units = (fc.abs().sum(0) > 0).sum().item()
    assert kept_units == fc.shape[1] // 4 and (fc.abs().sum(1) > 0).all()  # every input still used


def test_a_bert_classifier_through_the_api(folder, tmp_path):
    factories = importlib.import_module(MODULE)
    model = factories.bert()
    plan = parse("bert.encoder.layer.*.intermediate.dense : quant(k=4)\nclassifier : prune(l0=50%)\n").bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    batch = {"input_ids": torch.randint(1, 40, (3, 8), generator=torch.Generator().manual_seed(0))}
    evaluated = outputs(model, batch)
    export_model(model, plan, thetas, tmp_path / "bert.lcz", spec_text=plan.spec.source)
    fresh = factories.bert()
    load_lcz(tmp_path / "bert.lcz", fresh)
    assert torch.equal(outputs(fresh, batch), evaluated)
