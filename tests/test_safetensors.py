"""The safetensors export: round trips on LeNet300 (the example specs), a BatchNorm ResNet and a
GPT-2; sizes against ``.lcz`` and the plan's prediction; a weight rebuilt from the documented
layout with the plain ``safetensors`` library; hostile files; ``lcdsl export --format safetensors``."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lcdsl
from lcdsl.cli import main
from lcdsl.engine.core import Engine
from lcdsl.errors import LcdslError, ModelError
from lcdsl.plan.summary import plan_summary
from lcdsl.store import (
    export_model,
    load_lcz,
    load_safetensors,
    read_manifest,
    read_safetensors_manifest,
)  # fmt: skip
from lcdsl.store.atomic import save_atomic
from lcdsl.store.model import compressed_state
from lcdsl.store.safetensors_file import MAX_HEADER_BYTES
from lcdsl.plugins.registry import Registry, default_registry
from lcdsl.training.zoo import LeNet300, resnet_small
from test_export import OPERATORS, Halves, _Holder  # the operators the .lcz codecs are tested on

safetensors = pytest.importorskip("safetensors")
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = Path(__file__).resolve().parent.parent / "specs"
LENET_SPECS = ["lenet300-quant", "lenet300-prune", "lenet300-lowrank", "lenet300-mixed", "lenet300-additive",
               "lenet300-ternarize", "lenet300-binarize", "demo"]  # fmt: skip


def compressed(model: torch.nn.Module, text: str):
    """``model`` compressed directly (step 0 of LC) under ``text``: plan, θ, spec."""
    spec = lcdsl.parse(text)
    plan = spec.bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return plan, engine.finalize(), spec


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    """Per example spec: the compressed LeNet300 (784 inputs), its plan, θ, and both exports' sizes."""
    folder = tmp_path_factory.mktemp("lenet")
    made = {}
    for name in LENET_SPECS:
        torch.manual_seed(0)
        model = LeNet300()
        plan, thetas, spec = compressed(model, (SPECS / f"{name}.lc").read_text())
        lcz = export_model(model, plan, thetas, folder / f"{name}.lcz", spec_text=spec.source)
        path = folder / f"{name}.safetensors"
        st = export_model(model, plan, thetas, path, spec_text=spec.source, format="safetensors")
        made[name] = (model, plan, thetas, spec, lcz, st, path)
    return made


@pytest.mark.parametrize("name", LENET_SPECS)
def test_lenet300_reloads_from_safetensors_with_equal_outputs(lenet_files, name):
    model, _, thetas, _, _, _, path = lenet_files[name]
    fresh = LeNet300()
    loaded = load_safetensors(path, fresh)
    x = torch.randn(16, 784, generator=torch.Generator().manual_seed(1))
    assert torch.equal(outputs(fresh, x), outputs(model, x))
    for task, theta in thetas.items():
        assert loaded[task].keys() == theta.keys()
        for key in theta:
            assert loaded[task][key].dtype == theta[key].dtype and torch.equal(loaded[task][key], theta[key])


@pytest.mark.parametrize("name", LENET_SPECS)
def test_the_size_is_within_a_few_percent_of_the_lcz_and_of_the_prediction(lenet_files, name):
    _, plan, _, _, lcz, st, path = lenet_files[name]
    assert path.stat().st_size == st.file_bytes
    assert st.payload_bytes == lcz.payload_bytes  # the same fields, byte for byte in size
    header = st.file_bytes - st.payload_bytes
    assert header < 3000  # the safetensors header (not deflated), for LeNet300's few tensors and the spec
    assert st.file_bytes <= 1.05 * lcz.file_bytes
    # what `lcdsl check` predicts before any training (LeNet300 has no buffers)
    predicted = plan_summary(plan)["total_bits_after"] / 8
    assert st.predicted_bytes == pytest.approx(predicted)
    assert 0.95 * predicted <= st.file_bytes <= 1.07 * predicted


def test_the_manifest_matches_the_lcz_one(lenet_files):
    _, _, _, spec, _, st, path = lenet_files["lenet300-mixed"]
    manifest = read_safetensors_manifest(path)
    twin = read_manifest(path.with_suffix(".lcz"))
    assert manifest["format"] == lcdsl.formats.SAFETENSORS_FORMAT and manifest["spec"] == spec.source
    assert [t["name"] for t in manifest["tasks"]] == [t["name"] for t in twin["tasks"]]
    for ours, theirs in zip(manifest["tasks"], twin["tasks"]):
        assert ours["operator"] == theirs["operator"] and ours["plugin"] == theirs["plugin"] == "builtin"
        for key, field in ours["fields"].items():
            twin_field = theirs["fields"][key]
            assert field["length"] == twin_field["length"] and field["codec"] == twin_field["codec"]
    for key in ("bits_after", "dense_params", "dense"):
        assert manifest["plan"][key] == twin["plan"][key]
    for key in ("dense_bytes", "predicted_bytes", "payload_bytes", "buffer_bytes"):
        assert manifest["sizes"][key] == pytest.approx(twin["sizes"][key]) == pytest.approx(getattr(st, key))
    assert set(manifest["versions"]) >= {"torch", "lcdsl", "python"}


@pytest.mark.parametrize("text", OPERATORS)
def test_every_operator_round_trips_bit_for_bit(tmp_path, text):
    """θ of each kind the codecs tell apart (codes, positions, groups, signs, factors, terms)."""
    torch.manual_seed(0)
    model = _Holder(torch.randn(24, 40))
    plan, thetas, spec = compressed(model, f"w : {text}\n")
    path = tmp_path / "w.safetensors"
    export_model(model, plan, thetas, path, spec_text=spec.source, format="safetensors")
    fresh = _Holder(torch.zeros(24, 40))
    loaded = load_safetensors(path, fresh)
    assert torch.equal(fresh.w.weight, model.w.weight)
    for key, value in thetas["w.weight"].items():
        assert loaded["w.weight"][key].dtype == value.dtype and torch.equal(loaded["w.weight"][key], value)


def test_an_operator_that_encodes_its_own_theta_round_trips(tmp_path):
    registry = Registry(operators={**default_registry().operators, "halves": Halves})
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    spec = lcdsl.parse("fc2 : halves()\n")
    plan = spec.bind(model, registry=registry)
    engine = Engine(model, plan)
    engine.direct_compression()
    path = tmp_path / "h.safetensors"
    export_model(model, plan, engine.finalize(), path, spec_text=spec.source, registry=registry, format="safetensors")
    task = read_safetensors_manifest(path)["tasks"][0]
    assert task["encoder"] == "operator" and task["fields"]["positive"]["codec"] == "bytes"
    assert task["fields"]["positive"]["length"] == 30000 // 8
    fresh = LeNet300(in_features=64)
    load_safetensors(path, fresh, registry=registry)
    assert torch.equal(fresh.fc2.weight, model.fc2.weight)
    with pytest.raises(LcdslError, match="unknown operator .halves."):
        load_safetensors(path, LeNet300(in_features=64))  # without the plugin: an error, never code from the file


# ------------------------------------------------------------ the layout, without lcdsl


def unpack_codes(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    """docs/deploy.md's bit order: code ``i`` takes bits ``i·b … i·b+b−1`` of the stream, bit ``j``
    of the stream being bit ``j % 8`` of byte ``j // 8``; each code is written lowest bit first."""
    stream = np.unpackbits(data, bitorder="little")[: count * bits].reshape(count, bits).astype(np.int64)
    return (stream << np.arange(bits)).sum(axis=1)


def test_a_plain_safetensors_reader_rebuilds_weights_from_the_documented_names(lenet_files):
    """Only numpy and the safetensors library: fc3's 2-entry codebook, fc2's low-rank factors and
    fc1's pruned values, each compared with the weight lcdsl loads."""
    model, _, _, _, _, _, path = lenet_files["lenet300-mixed"]
    tensors = safetensors.numpy.load_file(str(path))
    with safetensors.safe_open(str(path), framework="np") as fh:
        metadata = fh.metadata()
    plan = {task["name"]: task for task in json.loads(metadata["plan"])}
    codecs = json.loads(metadata["codecs"])

    quant = plan["fc3.weight"]  # fc3 : quant(k=2)
    assert quant["operator"] == "quant(k=2)" and quant["fields"] == ["codebook", "assignments"]
    codec = codecs["fc3.weight.assignments"]
    assert codec["codec"] == "packed" and tensors["fc3.weight.assignments"].dtype == np.uint8
    codes = unpack_codes(tensors["fc3.weight.assignments"], math.prod(codec["shape"]), codec["bits"]) + codec["base"]
    weight = tensors["fc3.weight.codebook"][codes].reshape(quant["shapes"][0])
    np.testing.assert_array_equal(weight, model.fc3.weight.detach().numpy())

    lowrank = plan["fc2.weight"]  # fc2 : lowrank(rank=10)
    assert "fc2.weight.U" not in codecs  # reals are stored as they are
    weight = tensors["fc2.weight.U"] @ tensors["fc2.weight.V"]
    np.testing.assert_allclose(weight.reshape(lowrank["shapes"][0]), model.fc2.weight.detach().numpy(), atol=1e-6)

    pruned = plan["fc1.weight"]  # fc1 : prune(l0=5000)
    codec = codecs["fc1.weight.indices"]
    if codec["codec"] == "mask":
        kept = np.flatnonzero(np.unpackbits(tensors["fc1.weight.indices"], bitorder="little")[: codec["span"]])
    else:
        kept = unpack_codes(tensors["fc1.weight.indices"], math.prod(codec["shape"]), codec["bits"]) + codec["base"]
    flat = np.zeros(math.prod(pruned["shapes"][0]), dtype=np.float32)
    flat[kept] = tensors["fc1.weight.values"]
    np.testing.assert_array_equal(flat.reshape(pruned["shapes"][0]), model.fc1.weight.detach().numpy())
    np.testing.assert_array_equal(tensors["fc1.bias"], model.fc1.bias.detach().numpy())  # dense: by its own name


# ------------------------------------------------------------------ real architectures


def test_a_batchnorm_resnet_round_trips_with_its_buffers(tmp_path):
    torch.manual_seed(0)
    model = resnet_small()
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not the initial ones
            model(torch.randn(8, 1, 8, 8))
    plan, thetas, spec = compressed(model, "[layer*.**@Conv2d] as convs : quant(k=4)\nfc : prune(l0=50%)\n")
    path = tmp_path / "resnet.safetensors"
    lcz = export_model(model, plan, thetas, tmp_path / "resnet.lcz", spec_text=spec.source)
    st = export_model(model, plan, thetas, path, spec_text=spec.source, format="safetensors")
    fresh = resnet_small()
    load_safetensors(path, fresh)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(outputs(fresh, x), outputs(model, x))
    assert torch.equal(fresh.layer2[0].bn1.running_var, model.layer2[0].bn1.running_var)
    assert int(fresh.bn1.num_batches_tracked) == int(model.bn1.num_batches_tracked) == 3
    assert st.payload_bytes == lcz.payload_bytes and st.buffer_bytes == lcz.buffer_bytes > 0
    tensors = safetensors.torch.load_file(str(path))
    assert tensors["bn1.num_batches_tracked"].dtype == torch.int64  # buffers by their state_dict names
    assert "convs.codebook" in tensors  # a joint group is named by its label


def test_gpt2_round_trips_with_its_tied_embedding(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    text = ("lm_head : quant(k=4)\ntransformer.h.*.mlp.c_fc : prune(l0=25%, by=rows)\n"
            "transformer.h.*.attn.c_attn : lowrank(rank=8)\n")  # fmt: skip
    plan, thetas, spec = compressed(model, text)
    path = tmp_path / "gpt2.safetensors"
    st = export_model(model, plan, thetas, path, spec_text=spec.source, format="safetensors")
    lcz = export_model(model, plan, thetas, tmp_path / "gpt2.lcz", spec_text=spec.source)
    torch.manual_seed(1)
    fresh = transformers.GPT2LMHeadModel(config)
    load_safetensors(path, fresh)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    ids = {"input_ids": torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))}
    assert torch.equal(outputs(fresh, ids), outputs(model, ids))
    assert st.payload_bytes == lcz.payload_bytes
    # 33 tiny tensors (n_embd=32): safetensors' own table of names, dtypes and offsets takes 3 kB
    # of the header, which .lcz deflates; bench/export_sizes.py has a model of real proportions
    assert st.file_bytes <= 1.10 * lcz.file_bytes


# ------------------------------------------------------------------------ hostile files


@pytest.fixture()
def good(lenet_files, tmp_path):
    """A copy of the mixed spec's file, its tensors and its metadata."""
    path = tmp_path / "good.safetensors"
    path.write_bytes(lenet_files["lenet300-mixed"][-1].read_bytes())
    tensors = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    return path, tensors, metadata


def rewrite(path: Path, tensors: dict, metadata: dict) -> Path:
    out = path.with_name("bad.safetensors")
    out.write_bytes(safetensors.torch.save(tensors, metadata))
    return out


def refused(path: Path, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_safetensors(path, LeNet300())


def test_broken_frames_are_model_errors(good, lenet_files, tmp_path):
    path, _, _ = good
    blob = path.read_bytes()
    bad = tmp_path / "frame.safetensors"
    cases = {
        "too short": b"\x01\x02",
        "header would take": struct.pack("<Q", MAX_HEADER_BYTES + 1) + blob[8:],
        "truncated": blob[:100],
        "damaged header": struct.pack("<Q", 5) + b"{nope" + blob[13:],
        "damaged safetensors data": blob[:-10],
    }
    for message, data in cases.items():
        bad.write_bytes(data)
        refused(bad, message)
    refused(tmp_path / "missing.safetensors", "cannot read")
    refused(lenet_files["lenet300-mixed"][-1].with_suffix(".lcz"), "an .lcz file, not a safetensors one")
    with pytest.raises(ModelError, match="a safetensors file, not an .lcz one"):
        load_lcz(path, LeNet300())
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(safetensors.torch.save({"fc1.weight": torch.zeros(300, 784)}))
    refused(plain, "no text metadata")


def test_damaged_metadata_is_refused_with_a_reason(good):
    path, tensors, metadata = good
    refused(rewrite(path, tensors, {**metadata, "format": "99"}), "of format 1 .found format '99'")
    refused(rewrite(path, tensors, {**metadata, "plan": "[{"}), "'plan' is not JSON")
    plan = json.loads(metadata["plan"])
    plan[1]["operator"] = "lowrank(rank=5)"
    refused(rewrite(path, tensors, {**metadata, "plan": json.dumps(plan)}), "another operator")
    refused(rewrite(path, tensors, {**metadata, "plan": json.dumps(plan[:2])}), "are not those the saved spec binds")
    codecs = json.loads(metadata["codecs"])
    codecs["fc3.weight.assignments"]["shape"] = [10**12]  # would unpack to a terabyte of codes
    refused(rewrite(path, tensors, {**metadata, "codecs": json.dumps(codecs)}), "more values than the tensor")
    codecs = json.loads(metadata["codecs"])
    codecs["fc3.weight.assignments"]["bits"] = 3  # the bytes no longer fit the description
    refused(rewrite(path, tensors, {**metadata, "codecs": json.dumps(codecs)}), "take .* bytes")


def test_tensors_that_do_not_fit_are_refused(good):
    path, tensors, metadata = good
    refused(rewrite(path, {**tensors, "evil": torch.zeros(3)}, metadata), "'evil' is no field of a task")
    missing = {k: v for k, v in tensors.items() if k != "fc2.weight.V"}
    refused(rewrite(path, missing, metadata), "'fc2.weight.V' that the file lacks")
    as_floats = {**tensors, "fc3.weight.assignments": tensors["fc3.weight.assignments"].float()}
    refused(rewrite(path, as_floats, metadata), "must be 1-D uint8")
    reshaped = {**tensors, "fc2.weight.U": tensors["fc2.weight.U"][:, :5].contiguous()}
    refused(rewrite(path, reshaped, metadata), "does not fit the model")
    refused(rewrite(path, {**tensors, "fc1.bias": torch.zeros(7)}, metadata), "'fc1.bias' is missing from the model")
    with pytest.raises(LcdslError):
        load_safetensors(path, LeNet300(in_features=32))  # another architecture


def test_loading_unpickles_nothing_and_writes_nothing_before_every_check(good, monkeypatch):
    path, tensors, metadata = good

    def refuse(*args, **kwargs):
        raise AssertionError("loading a safetensors file must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    fresh = LeNet300()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ModelError):
        load_safetensors(rewrite(path, {**tensors, "fc1.bias": torch.zeros(7)}, metadata), fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # a bad file changes nothing
    load_safetensors(path, fresh)
    assert not torch.equal(before["fc2.weight"], fresh.state_dict()["fc2.weight"])


def test_unknown_formats_and_deflate_are_errors(lenet_files, tmp_path):
    model, plan, thetas, spec, *_ = lenet_files["lenet300-quant"]
    with pytest.raises(ModelError, match="unknown export format 'zip'"):
        export_model(model, plan, thetas, tmp_path / "m.zip", spec_text=spec.source, format="zip")
    with pytest.raises(ModelError, match="deflate applies to .lcz"):
        export_model(model, plan, thetas, tmp_path / "m.st", spec_text=spec.source, format="safetensors", deflate=True)
    with pytest.raises(ModelError, match="may not replace"):
        export_model(model, plan, thetas, tmp_path / "m.st", spec_text=spec.source, format="safetensors",
                     extra={"spec": "x"})  # fmt: skip
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------------- lcdsl export


def test_cli_export_format_safetensors_writes_and_checks(tmp_path, capsys):
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas, spec = compressed(model, "fc1 : quant(k=2) + prune(l0=1%)\nfc2 : lowrank(rank=6)\nfc3 : quant(k=2)\n")
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(compressed_state(model, plan, thetas, spec_text=spec.source, model_name="lenet300"),
                run / "compressed.pt")  # fmt: skip
    assert main(["export", str(run), "--format", "safetensors"]) == 0
    text = capsys.readouterr().out
    assert "loaded back: outputs equal" in text and "model.safetensors" in text and "fc2.weight" in text
    fresh = LeNet300(in_features=64)
    load_safetensors(run / "model.safetensors", fresh)
    x = torch.randn(5, 64)
    assert torch.equal(outputs(fresh, x), outputs(model, x))
    assert read_safetensors_manifest(run / "model.safetensors")["data"] == "digits"  # extra entries travel
    assert main(["export", str(run), "--format", "safetensors", "--deflate"]) == 1
    assert "deflate applies to .lcz" in capsys.readouterr().err
    lcz = LeNet300(in_features=64)
    assert main(["export", str(run)]) == 0  # the default stays .lcz
    load_lcz(run / "model.lcz", lcz)
    assert torch.equal(lcz.fc1.weight, fresh.fc1.weight)


# --------------------------------------------------------------------------- fuzzing the loader


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A 64-input LeNet300 under the demo's mix (additive terms, low rank, codebooks), as bytes."""
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas, spec = compressed(model, "fc1 : quant(k=2) + prune(l0=1%)\nfc2 : lowrank(rank=6)\nfc3 : quant(k=2)\n")
    path = tmp_path_factory.mktemp("fuzz") / "small.safetensors"
    export_model(model, plan, thetas, path, spec_text=spec.source, format="safetensors")
    return path  # a path, not its bytes: hypothesis prints the arguments of a failing example


def loads_or_refuses(tmp_path: Path, data: bytes) -> None:
    """Reading and loading ``data`` either work or raise an lcdsl error; nothing else escapes."""
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(data)
    for read in (read_safetensors_manifest, lambda p: load_safetensors(p, LeNet300(in_features=64))):
        try:
            read(path)
        except LcdslError:
            pass


@settings(deadline=None)
@given(st.data())
def test_flipped_bytes_are_loaded_or_refused_never_a_crash(small_file, tmp_path_factory, data):
    blob = bytearray(small_file.read_bytes())
    (length,) = struct.unpack_from("<Q", blob)
    # mostly the header, where a flip changes what the loader is told; sometimes the data
    end = data.draw(st.sampled_from([8 + length, len(blob)]), label="region")
    for at in data.draw(st.lists(st.integers(0, end - 1), min_size=1, max_size=4), label="positions"):
        blob[at] = data.draw(st.integers(0, 255), label="byte")
    loads_or_refuses(tmp_path_factory.mktemp("flip"), bytes(blob))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
"""Any JSON value: what a hostile file can put where the loader expects a number, list or table."""


@settings(deadline=None)
@given(st.data())
def test_hostile_metadata_values_are_loaded_or_refused_never_a_crash(small_file, tmp_path_factory, data):
    """One value anywhere in the ``plan`` or ``codecs`` metadata, or in safetensors' own table of
    tensors, replaced by any JSON value."""
    blob = small_file.read_bytes()
    (length,) = struct.unpack_from("<Q", blob)
    header = json.loads(blob[8 : 8 + length])
    key = data.draw(st.sampled_from(["plan", "codecs", "table"]), label="key")
    tree = header if key == "table" else json.loads(header["__metadata__"][key])
    node, path = tree, []
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans(), label="deeper"):
        choices = sorted(k for k in node if k != "__metadata__") if isinstance(node, dict) else range(len(node))
        if not choices:
            break
        step = data.draw(st.sampled_from(choices), label="step")
        path.append(step)
        node = node[step]
    replacement = data.draw(JSON_VALUES, label="value")
    if not path:
        tree = {"__metadata__": header["__metadata__"]} if key == "table" else replacement
    else:
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = replacement
    if key != "table":
        header["__metadata__"] = {**header["__metadata__"], key: json.dumps(tree)}
        tree = header
    text = json.dumps(tree).encode()
    fuzzed = struct.pack("<Q", len(text)) + text + blob[8 + length :]
    loads_or_refuses(tmp_path_factory.mktemp("meta"), fuzzed)
