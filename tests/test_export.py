"""Compact export: bit packing, per-operator sizes against the reported bits, .lcz round trips,
safety of loading, the operator encode/decode hook, and ``lcdsl export``."""

from __future__ import annotations

import math
import pickle
import struct
import zlib
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import lcdsl
from lcdsl.cli import main
from lcdsl.engine.core import Engine
from lcdsl.errors import LcdslError, ModelError
from lcdsl.operators.base import Operator, Storage
from lcdsl.operators.bitpack import decode_tensor, encode_tensor, pack_uint, unpack_uint, width
from lcdsl.plugins.registry import Registry, default_registry
from lcdsl.store.atomic import save_atomic
from lcdsl.store.lcz import MAGIC, export_model, load_lcz, read_manifest
from lcdsl.store.model import compressed_state
from lcdsl.training.zoo import LeNet300

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ bit packing


@st.composite
def codes(draw):
    """(values, bits): up to 300 non-negative integers that fit in ``bits`` ≤ 40 bits."""
    bits = draw(st.integers(1, 40))
    values = draw(arrays(np.uint64, st.integers(0, 300), elements=st.integers(0, 2**bits - 1)))
    return values, bits


@given(codes())
@settings(deadline=None)
def test_pack_uint_round_trips_at_the_exact_size(case):
    values, bits = case
    data = pack_uint(values, bits)
    assert len(data) == math.ceil(values.size * bits / 8)
    np.testing.assert_array_equal(unpack_uint(data, values.size, bits), values)


@st.composite
def tensors(draw):
    """Tensors of every kind the codec tells apart: reals, ±1 signs, small and large integers,
    sorted position sets, booleans."""
    n = draw(st.integers(0, 200))
    kind = draw(st.sampled_from(["float", "signs", "ints", "positions", "bool", "int8"]))
    if kind == "float":
        values = draw(arrays(np.float32, n, elements=st.floats(-1e3, 1e3, width=32)))
        return torch.from_numpy(values)
    if kind == "signs":
        return torch.from_numpy(draw(arrays(np.float32, n, elements=st.sampled_from([-1.0, 1.0]))))
    if kind == "ints":
        low = draw(st.integers(-(2**40), 2**40))
        return torch.from_numpy(draw(arrays(np.int64, n, elements=st.integers(low, low + 2**20))))
    if kind == "positions":
        return torch.tensor(sorted(draw(st.sets(st.integers(0, 5000), max_size=n))), dtype=torch.int64)
    if kind == "int8":
        return torch.from_numpy(draw(arrays(np.int8, n, elements=st.integers(-1, 1))))
    return torch.from_numpy(draw(arrays(np.bool_, n)))


@given(tensors())
@settings(deadline=None)
def test_encode_tensor_is_exact(tensor):
    meta, data = encode_tensor(tensor)
    back = decode_tensor(meta, data)
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_codecs_take_the_bits_they_should():
    assignments = torch.randint(0, 4, (1000,))
    meta, data = encode_tensor(assignments)
    assert meta["codec"] == "packed" and meta["bits"] == 2 and len(data) == 250
    signs = torch.where(torch.randn(1000) > 0, 1.0, -1.0)
    assert encode_tensor(signs)[0]["codec"] == "signs" and len(encode_tensor(signs)[1]) == 125
    dense_set = torch.arange(0, 1000, 2)  # 500 of 1000 positions: a bitmask is cheaper than 500·10 bits
    meta, data = encode_tensor(dense_set)
    assert meta["codec"] == "mask" and len(data) == math.ceil(999 / 8)
    sparse_set = torch.tensor([3, 900, 60000])  # 3 positions: indices are cheaper than 60001 bits
    meta, data = encode_tensor(sparse_set)
    assert meta["codec"] == "packed" and meta["bits"] == width(60000 - 3)
    assert width(0) == 0 and width(1) == 1 and width(3) == 2 and width(4) == 3


# ------------------------------------------------------------ sizes against the reported bits

OPERATORS = [
    "quant(k=4)", "quant(bits=1)", "quant(k=3)", "binarize()", "binarize(scale=true)", "ternarize()",
    "prune(l0=40)", "prune(l0=500)", "prune(l1=2.0)", "prune(l0=3, by=rows)", "prune(l0=5, by=channels)",
    "lowrank(rank=3)", "quant(k=2) + prune(l0=10)", "lowrank(rank=2) + prune(l0=1%)",
]  # fmt: skip


@pytest.mark.parametrize("text", OPERATORS)
def test_encoded_theta_fits_the_reported_bits(text):
    """Each field rounds up to whole bytes, so the payload may pass the reported bits by < 1 byte a field."""
    torch.manual_seed(0)
    w = torch.randn(24, 40)
    plan = lcdsl.parse(f"w : {text}\n").bind(_Holder(w))
    task = plan.tasks[0]
    target = w.reshape(task.view_shape)
    theta = task.operator.project(target, mu=1.0)
    encoded = [encode_tensor(t) for t in theta.values()]
    payload = sum(len(data) for _, data in encoded)
    reported = task.operator.storage(task.view_shape, theta).bits
    assert payload * 8 <= reported + 8 * len(theta)
    back = {k: decode_tensor(meta, data) for k, (meta, data) in zip(theta, encoded)}
    shape = task.view_shape
    assert torch.equal(task.operator.decompress(back, shape), task.operator.decompress(theta, shape))


class _Holder(torch.nn.Module):
    """``w``: a Linear holding the weight (structured operators need a layer whose layout is known)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.w.weight.copy_(w)


# ------------------------------------------------------------------------ .lcz round trips

MIXED = "fc1 : quant(k=2) + prune(l0=1%)\nfc2 : lowrank(rank=6)\nfc3 : prune(l0=10, by=rows)\n"


def compressed(text: str = MIXED, seed: int = 0):
    torch.manual_seed(seed)
    model = LeNet300(in_features=64)
    spec = lcdsl.parse(text)
    plan = spec.bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return model, plan, engine.finalize(), spec


def test_load_lcz_rebuilds_the_compressed_model(tmp_path):
    model, plan, thetas, spec = compressed()
    path = tmp_path / "m.lcz"
    sizes = export_model(model, plan, thetas, path, spec_text=spec.source, model_name="lenet300")
    assert path.stat().st_size == sizes.file_bytes
    fresh = LeNet300(in_features=64)
    loaded = load_lcz(path, fresh)
    x = torch.randn(16, 64)
    assert torch.equal(fresh(x), model(x))
    for name, theta in thetas.items():
        assert loaded[name].keys() == theta.keys()
        assert all(torch.equal(loaded[name][k], theta[k]) for k in theta)
    # the payload is the reported size; header and deflated manifest stay near a kilobyte
    assert sizes.predicted_bytes - 1 <= sizes.payload_bytes <= sizes.predicted_bytes + len(thetas) * 4
    assert sizes.file_bytes - sizes.payload_bytes < 1500
    assert sizes.dense_bytes == 32 * sum(p.numel() for p in model.parameters()) // 8
    manifest = read_manifest(path)
    assert manifest["spec"] == spec.source and manifest["model"] == "lenet300"
    assert [t["task"] for t in manifest["plan"]["tasks"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert set(manifest["versions"]) >= {"torch", "lcdsl", "python"}


def test_joint_tasks_and_deflate_round_trip(tmp_path):
    model, plan, thetas, spec = compressed("[fc*] : quant(k=4)\nfc1.bias : prune(l0=50)\n", seed=1)
    path = tmp_path / "j.lcz"
    stored = export_model(model, plan, thetas, path, spec_text=spec.source)
    deflated = export_model(model, plan, thetas, tmp_path / "d.lcz", spec_text=spec.source, deflate=True)
    assert deflated.payload_bytes <= stored.payload_bytes
    for file in (path, tmp_path / "d.lcz"):
        fresh = LeNet300(in_features=64)
        load_lcz(file, fresh)
        assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))


def test_loading_unpickles_nothing(tmp_path, monkeypatch):
    model, plan, thetas, spec = compressed()
    path = tmp_path / "m.lcz"
    export_model(model, plan, thetas, path, spec_text=spec.source)

    def refuse(*args, **kwargs):
        raise AssertionError("loading an .lcz file must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    fresh = LeNet300(in_features=64)
    load_lcz(path, fresh)
    assert torch.equal(fresh.fc2.weight, model.fc2.weight)


def _rewrite(path, change):
    """Apply ``change`` to the manifest of an .lcz file and write it back."""
    blob = path.read_bytes()
    _, length = struct.unpack_from("<4sI", blob)
    import json

    manifest = json.loads(zlib.decompress(blob[8 : 8 + length]))
    change(manifest)
    head = zlib.compress(json.dumps(manifest).encode())
    path.write_bytes(struct.pack("<4sI", MAGIC, len(head)) + head + blob[8 + length :])


def test_damaged_files_are_model_errors(tmp_path):
    model, plan, thetas, spec = compressed()
    good = tmp_path / "m.lcz"
    export_model(model, plan, thetas, good, spec_text=spec.source)
    blob = good.read_bytes()
    cases = {
        "not an .lcz file": b"PK\x03\x04" + blob[4:],
        "too short": b"LC",
        "truncated": blob[:20],
    }
    for message, data in cases.items():
        bad = tmp_path / "bad.lcz"
        bad.write_bytes(data)
        with pytest.raises(ModelError, match=message):
            load_lcz(bad, LeNet300(in_features=64))
    with pytest.raises(ModelError, match="no such file|cannot read"):
        load_lcz(tmp_path / "missing.lcz", LeNet300(in_features=64))
    outside = tmp_path / "outside.lcz"
    outside.write_bytes(blob)
    _rewrite(outside, lambda m: m["tasks"][1]["fields"]["U"].update(offset=10**9))
    with pytest.raises(ModelError, match="outside the payload"):
        load_lcz(outside, LeNet300(in_features=64))
    other_op = tmp_path / "op.lcz"
    other_op.write_bytes(blob)
    _rewrite(other_op, lambda m: m["tasks"][1].update(operator="LowRank(rank=5)"))
    with pytest.raises(ModelError, match="another operator"):
        load_lcz(other_op, LeNet300(in_features=64))


def test_a_model_of_another_shape_is_refused(tmp_path):
    model, plan, thetas, spec = compressed()
    path = tmp_path / "m.lcz"
    export_model(model, plan, thetas, path, spec_text=spec.source)
    with pytest.raises(LcdslError):
        load_lcz(path, LeNet300(in_features=32))


# ------------------------------------------------------------- the operator's own encoding


@attrs.frozen
class Halves(Operator):
    """argmin_θ ‖w − θ‖² s.t. θ ∈ {−½, +½}ⁿ: θ = ½·sign(w) (exact)."""

    name: ClassVar[str] = "halves"

    def project(self, w, mu=0.0, warm=None):
        return {"theta": torch.where(w >= 0, 0.5, -0.5).to(w.dtype)}

    def decompress(self, theta, shape):
        return theta["theta"].reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(params=0, bits=math.prod(shape))

    def encode(self, theta, shape):
        from lcdsl.operators.bitpack import pack_bits

        return {"positive": pack_bits((theta["theta"] > 0).numpy())}

    def decode(self, fields, shape):
        from lcdsl.operators.bitpack import unpack_bits

        positive = torch.from_numpy(unpack_bits(fields["positive"], math.prod(shape)).copy())
        return {"theta": torch.where(positive, 0.5, -0.5)}


def test_an_operator_may_encode_its_own_theta(tmp_path):
    registry = Registry(operators={**default_registry().operators, "halves": Halves})
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    spec = lcdsl.parse("fc2 : halves()\n")
    plan = spec.bind(model, registry=registry)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    path = tmp_path / "h.lcz"
    sizes = export_model(model, plan, thetas, path, spec_text=spec.source)
    task = read_manifest(path)["tasks"][0]
    assert task["encoder"] == "operator" and task["fields"]["positive"]["length"] == 30000 // 8
    dense = 64 * 300 + 300 + 100 + 100 * 10 + 10  # fc1.weight, the biases, fc3.weight
    assert sizes.payload_bytes == 30000 // 8 + 4 * dense == sizes.predicted_bytes
    fresh = LeNet300(in_features=64)
    load_lcz(path, fresh, registry=registry)
    assert torch.equal(fresh.fc2.weight, model.fc2.weight)


# ------------------------------------------------------------------------- lcdsl export


def test_cli_export_writes_checks_and_deploys(tmp_path, capsys):
    model, plan, thetas, spec = compressed("fc1 : prune(l0=30%, by=rows)\nfc2 : lowrank(rank=6)\nfc3 : quant(k=2)\n")
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(compressed_state(model, plan, thetas, spec_text=spec.source, model_name="lenet300"),
                run / "compressed.pt")  # fmt: skip
    out = tmp_path / "model.lcz"
    assert main(["export", str(run), "--out", str(out), "--deploy"]) == 0
    text = capsys.readouterr().out
    assert "loaded back: outputs equal" in text and "dense storage" in text
    assert "fc2: Linear(300→100) → Linear(90→6) · Linear(6→100)" in text
    assert "fc1: Linear(64→300) → Linear(64→90)" in text
    fresh = LeNet300(in_features=64)
    load_lcz(out, fresh)
    assert torch.equal(fresh.fc1.weight, model.fc1.weight)
    program = torch.export.load(out.with_suffix(".pt2"))
    x = torch.randn(5, 1, 8, 8)  # digits' image shape, as the program was exported with
    assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    assert read_manifest(out)["deploy"] is True


def test_cli_export_without_a_run_is_an_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.lcz")]) == 1
    assert "compressed.pt: no such file" in capsys.readouterr().err
