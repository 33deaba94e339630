"""The saved model behind compressed.pt and .lcz (buffers, operators by spec text and plugin), the
file formats in lcdsl.formats, and the run checkpoint's layout in lcdsl.store.checkpoint."""

from __future__ import annotations

import ast
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

import lcdsl
import lcdsl.formats as formats
from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError, ModelError
from lcdsl.language.parser import parse
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant
from lcdsl.plan.names import buffers_by_name
from lcdsl.plugins.origin import operator_plugin
from lcdsl.store.atomic import load_checkpoint, save_atomic
from lcdsl.store.checkpoint import read_run_checkpoint, restore_run_checkpoint, run_checkpoint
from lcdsl.store.lcz import export_model, load_lcz, read_manifest
from lcdsl.store.model import compressed_state, load_compressed

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = "conv : quant(k=2)\nfc : prune(l0=20)\n"


class BatchNormNet(nn.Module):
    """A conv, a BatchNorm2d (running statistics: buffers) and a Linear, on 1×8×8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class Wrapped(nn.DataParallel):
    """What DDP does to names: everything under ``module.`` (DataParallel on CPU only wraps)."""


def trained_net(seed: int = 0) -> BatchNormNet:
    """A BatchNormNet whose running statistics a few forward passes in train mode have moved."""
    torch.manual_seed(seed)
    net = BatchNormNet().train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8) * 2 + 0.5)
    return net


def compressed(model: nn.Module):
    plan = parse(SPEC).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return plan, engine.finalize()


def fresh_net() -> BatchNormNet:
    torch.manual_seed(123)
    return BatchNormNet()


def load_lcz_into(model: nn.Module, path: Path) -> dict:
    """:func:`load_lcz` with :func:`load_compressed`'s order of arguments."""
    return load_lcz(path, model)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


# ------------------------------------------------------------------------------ buffers


def test_buffers_round_trip_through_compressed_pt(tmp_path):
    net = trained_net()
    assert int(net.bn.num_batches_tracked) == 3 and not torch.equal(net.bn.running_var, torch.ones(4))
    plan, thetas = compressed(net)
    path = tmp_path / "compressed.pt"
    save_atomic(compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn"), path)
    assert set(load_checkpoint(path)["buffers"]) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    fresh = fresh_net()
    load_compressed(fresh, path)
    assert_same_state(net, fresh)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(net.eval()(x), fresh.eval()(x))


def test_buffers_round_trip_through_lcz(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    path = tmp_path / "m.lcz"
    sizes = export_model(net, plan, thetas, path, spec_text=SPEC)
    fresh = fresh_net()
    load_lcz(path, fresh)
    assert_same_state(net, fresh)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(net.eval()(x), fresh.eval()(x))
    raw = 4 * 4 + 4 * 4 + 8  # running_mean, running_var (float32), num_batches_tracked (int64)
    manifest = read_manifest(path)
    assert {e["codec"] for e in manifest["buffers"].values()} == {"raw"}
    assert sizes.buffer_bytes == raw == manifest["sizes"]["buffer_bytes"]
    assert sizes.dense_bytes == 4 * sum(p.numel() for p in net.parameters()) + raw
    bits_after = manifest["plan"]["bits_after"]
    assert sizes.predicted_bytes == bits_after / 8 + raw
    assert sum(e["length"] for e in manifest["buffers"].values()) == raw
    assert sizes.payload_bytes <= sizes.predicted_bytes + 8  # whole bytes per field; positions may take less


def test_buffer_names_drop_the_ddp_prefix(tmp_path):
    net = trained_net()
    wrapped = Wrapped(net)
    assert set(buffers_by_name(wrapped)) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    plan, thetas = compressed(wrapped)
    save_atomic(compressed_state(wrapped, plan, thetas, spec_text=SPEC, model_name="bn"), tmp_path / "c.pt")
    export_model(wrapped, plan, thetas, tmp_path / "m.lcz", spec_text=SPEC)
    for load, path in ((load_compressed, tmp_path / "c.pt"), (load_lcz_into, tmp_path / "m.lcz")):
        fresh = fresh_net()
        load(fresh, path)
        assert_same_state(net, fresh)


def test_non_persistent_buffers_are_not_saved():
    net = BatchNormNet()
    net.register_buffer("scratch", torch.zeros(3), persistent=False)
    assert "scratch" not in buffers_by_name(net) and "bn.running_mean" in buffers_by_name(net)


def test_buffers_that_do_not_fit_are_a_model_error(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    state = compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn")
    del state["buffers"]["bn.running_var"]
    save_atomic(state, tmp_path / "c.pt")
    fresh = fresh_net()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ModelError, match="buffers saved .* are not those of this model"):
        load_compressed(fresh, tmp_path / "c.pt")
    for name, value in fresh.state_dict().items():  # checked before anything was written
        assert torch.equal(value, before[name]), name


# ------------------------------------------------------------------------------ older files


def _write_lcz_manifest(path: Path, change) -> None:
    blob = path.read_bytes()
    _, length = struct.unpack_from("<4sI", blob)
    manifest = json.loads(zlib.decompress(blob[8 : 8 + length]))
    change(manifest)
    head = zlib.compress(json.dumps(manifest).encode())
    path.write_bytes(struct.pack("<4sI", formats.MAGIC, len(head)) + head + blob[8 + length :])


def test_format_1_files_still_load_and_leave_the_buffers_alone(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    reprs = {task.name: repr(task.operator) for task in plan.tasks}

    old = compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn")
    old["format"] = 1
    del old["buffers"]
    for name, task in old["tasks"].items():
        del task["plugin"]
        task["operator"] = reprs[name]
    save_atomic(old, tmp_path / "old.pt")

    lcz = tmp_path / "old.lcz"
    export_model(net, plan, thetas, lcz, spec_text=SPEC)

    def to_format_1(manifest):
        manifest["format"] = 1
        del manifest["buffers"]
        for task in manifest["tasks"]:
            del task["plugin"]
            task["operator"] = reprs[task["name"]]

    _write_lcz_manifest(lcz, to_format_1)
    for load, path in ((load_compressed, tmp_path / "old.pt"), (load_lcz_into, lcz)):
        fresh = fresh_net()
        defaults = {k: v.clone() for k, v in buffers_by_name(fresh).items()}
        load(fresh, path)
        assert torch.equal(fresh.conv.weight, net.conv.weight) and torch.equal(fresh.fc.weight, net.fc.weight)
        for name, value in buffers_by_name(fresh).items():
            assert torch.equal(value, defaults[name]), name


def test_a_format_from_elsewhere_is_refused_with_its_number(tmp_path):
    save_atomic({"format": 7, "tasks": {}}, tmp_path / "c.pt")
    with pytest.raises(ModelError, match=r"format 2 or 1 \(found 7\)"):
        load_compressed(fresh_net(), tmp_path / "c.pt")
    model = nn.Linear(3, 2)
    engine = Engine(model, parse("weight : prune(l0=2)\n").bind(model))
    engine.direct_compression()
    state = engine.state_dict()
    with pytest.raises(EngineError, match="format 2 .found 1. .format 1 named operators by repr"):
        engine.load_state_dict({**state, "format": 1})


# ------------------------------------------------------------------------------ operator identity


def test_saved_files_name_operators_by_spec_text_and_plugin(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    state = compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn")
    assert {n: (t["operator"], t["plugin"]) for n, t in state["tasks"].items()} == {
        "conv.weight": ("quant(k=2)", "builtin"), "fc.weight": ("prune(l0=20)", "builtin"),
    }  # fmt: skip
    export_model(net, plan, thetas, tmp_path / "m.lcz", spec_text=SPEC)
    tasks = read_manifest(tmp_path / "m.lcz")["tasks"]
    assert [(t["operator"], t["plugin"]) for t in tasks] == [("quant(k=2)", "builtin"), ("prune(l0=20)", "builtin")]
    additive = parse("weight : quant(k=2) + prune(l0=3)\n").bind(Wrapped(nn.Linear(4, 4)))
    assert operator_plugin(additive.tasks[0].operator) == "builtin"


def test_a_plugin_operator_is_named_by_its_plugin():
    from lcdsl.plugins.registry import default_registry

    if "pow2" not in default_registry().operators:
        pytest.skip("the lcdsl-pow2 plugin is not installed")
    model = Wrapped(nn.Linear(4, 4))
    plan = parse("weight : pow2(bits=3)\nbias : quant(k=2) + pow2(bits=3)\n").bind(model)
    assert [operator_plugin(t.operator) for t in plan.tasks] == ["pow2", "builtin, pow2"]


def test_a_saved_model_still_loads_when_the_operator_prints_itself_differently(tmp_path, monkeypatch):
    net = trained_net()
    plan, thetas = compressed(net)
    save_atomic(compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn"), tmp_path / "c.pt")
    export_model(net, plan, thetas, tmp_path / "m.lcz", spec_text=SPEC)
    engine = Engine(net, plan)
    engine.direct_compression()
    state = engine.state_dict()

    # a new release renames an internal attribute: the class prints otherwise, its spec text is the same
    monkeypatch.setattr(Quant, "__repr__", lambda self: f"Quant(codewords={self.k})")
    monkeypatch.setattr(Prune, "__repr__", lambda self: "Prune(<renamed>)")
    assert repr(plan.tasks[0].operator) == "Quant(codewords=2)"
    for load, path in ((load_compressed, tmp_path / "c.pt"), (load_lcz_into, tmp_path / "m.lcz")):
        fresh = fresh_net()
        load(fresh, path)
        assert_same_state(net, fresh)
    again = Engine(net, parse(SPEC).bind(net))
    again.load_state_dict(state)
    assert again.step == engine.step


def test_another_plugin_is_another_operator(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    state = compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn")
    state["tasks"]["fc.weight"]["plugin"] = "someone-else"
    save_atomic(state, tmp_path / "c.pt")
    with pytest.raises(ModelError, match="another operator .prune.l0=20. from plugin 'someone-else'"):
        load_compressed(fresh_net(), tmp_path / "c.pt")


# ------------------------------------------------------------------------------ formats in one place

_OLD_HOMES = {
    "STATE_FORMAT": "lcdsl.engine.state", "DRIVER_FORMAT": "lcdsl.engine.driver",
    "COMPRESSED_FORMAT": "lcdsl.store.model", "LCZ_FORMAT": "lcdsl.store.lcz", "MAGIC": "lcdsl.store.lcz",
    "REPORT_FORMAT": "lcdsl.report.run", "SWEEP_FORMAT": "lcdsl.report.sweep",
    "CHECKPOINT_FORMAT": "lcdsl.cli.compress", "REFERENCE_FORMAT": "lcdsl.cli.train",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_OLD_HOMES))
def test_each_format_is_lcdsl_formats_own_and_still_imports_from_its_old_home(name):
    import importlib

    assert name in formats.__all__
    assert getattr(importlib.import_module(_OLD_HOMES[name]), name) is getattr(formats, name)


def test_no_other_module_defines_a_format_version():
    package = Path(lcdsl.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if path.name == "formats.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                found += [f"{path.relative_to(package)}: {n}" for n in names if n.endswith("_FORMAT") or n == "MAGIC"]
    assert not found


def test_every_saved_file_records_the_format_in_lcdsl_formats(tmp_path):
    net = trained_net()
    plan, thetas = compressed(net)
    engine = Engine(net, plan)
    engine.direct_compression()
    assert engine.state_dict()["format"] == formats.STATE_FORMAT
    state = compressed_state(net, plan, thetas, spec_text=SPEC, model_name="bn")
    assert state["format"] == formats.COMPRESSED_FORMAT
    export_model(net, plan, thetas, tmp_path / "m.lcz", spec_text=SPEC)
    assert read_manifest(tmp_path / "m.lcz")["format"] == formats.LCZ_FORMAT
    assert (tmp_path / "m.lcz").read_bytes()[:4] == formats.MAGIC
    checkpoint = run_checkpoint(net, engine, _Trainer(), model_name="bn", data_name="d", spec_text=SPEC, reference={})
    assert checkpoint["format"] == formats.CHECKPOINT_FORMAT

    from lcdsl.engine.driver import LCDriver

    assert LCDriver(engine, unit="step", length=1).state_dict()["format"] == formats.DRIVER_FORMAT


def test_cli_files_record_the_formats_in_lcdsl_formats(tmp_path):
    from lcdsl.cli import main

    spec = tmp_path / "q.lc"
    spec.write_text("fc* : quant(k=2)\n")
    out = tmp_path / "run"
    argv = ["compress", str(spec), "--data", "digits", "--out", str(out), "--reference-epochs", "1",
            "--steps", "1", "--epochs", "1", "--first-epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    assert load_checkpoint(out / "reference.pt")["format"] == formats.REFERENCE_FORMAT
    assert load_checkpoint(out / "checkpoint.pt")["format"] == formats.CHECKPOINT_FORMAT
    assert load_checkpoint(out / "checkpoint.pt")["engine"]["format"] == formats.STATE_FORMAT
    assert load_checkpoint(out / "compressed.pt")["format"] == formats.COMPRESSED_FORMAT
    assert json.loads((out / "report.json").read_text())["format"] == formats.REPORT_FORMAT


# ------------------------------------------------------------------------------ the run checkpoint


class _Trainer:
    """An L step's state, as the run checkpoint sees it."""

    def __init__(self, position: int = 0) -> None:
        self.position = position

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def test_the_run_checkpoint_layout_lives_in_the_store(tmp_path):
    import lcdsl.cli.compress as cli

    assert not hasattr(cli, "_checkpoint") and not hasattr(cli, "_restore")
    net = trained_net()
    plan = parse(SPEC).bind(net)
    engine = Engine(net, plan)
    engine.direct_compression()
    reference = {"path": "ref.pt", "test_error": 0.25}
    state = run_checkpoint(net, engine, _Trainer(7), model_name="bn", data_name="d", spec_text=SPEC,
                           reference=reference)  # fmt: skip
    assert set(state) == {"format", "model_name", "data_name", "spec_text", "model", "engine", "trainer",
                          "reference", "history"}  # fmt: skip
    assert "bn.running_var" in state["model"] and state["trainer"] == {"position": 7}
    save_atomic(state, tmp_path / "checkpoint.pt")

    checkpoint = read_run_checkpoint(tmp_path / "checkpoint.pt")
    fresh, trainer = fresh_net(), _Trainer()
    engine_b = Engine(fresh, parse(SPEC).bind(fresh))
    got = restore_run_checkpoint(checkpoint, tmp_path / "checkpoint.pt", model_name="bn", data_name="d",
                                 model=fresh, engine=engine_b, trainer=trainer)  # fmt: skip
    assert got == reference and trainer.position == 7 and engine_b.step == engine.step
    assert_same_state(net, fresh)

    with pytest.raises(EngineError, match="made for data 'd', not 'other'"):
        restore_run_checkpoint(checkpoint, "c.pt", model_name="bn", data_name="other", model=fresh,
                               engine=engine_b, trainer=trainer)  # fmt: skip
    other = Engine(fresh, parse("conv : quant(k=4)\n").bind(fresh))
    with pytest.raises(EngineError, match=r"other tasks .* — do something else"):
        restore_run_checkpoint(checkpoint, "c.pt", model_name="bn", data_name="d", model=fresh, engine=other,
                               trainer=trainer, hint="do something else")  # fmt: skip
    save_atomic({**state, "format": 99}, tmp_path / "other.pt")
    with pytest.raises(EngineError, match="not an lcdsl checkpoint of format 1"):
        read_run_checkpoint(tmp_path / "other.pt")


# ------------------------------------------------------------------------------ damaged θ


@pytest.mark.parametrize("kind", ["compressed.pt", ".lcz"])
def test_an_out_of_range_theta_is_refused_before_any_weight_is_written(tmp_path, kind):
    net = trained_net()
    plan, thetas = compressed(net)
    conv = next(t.name for t in plan.tasks if t.name.startswith("conv"))
    bad = {**thetas, conv: {**thetas[conv], "assignments": thetas[conv]["assignments"].clone().fill_(7)}}  # k=2
    path = tmp_path / ("compressed.pt" if kind == "compressed.pt" else "model.lcz")
    if kind == "compressed.pt":
        save_atomic(compressed_state(net, plan, bad, spec_text=SPEC, model_name="bn"), path)
    else:
        export_model(net, plan, bad, path, spec_text=SPEC)
    fresh = fresh_net()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ModelError, match=r"θ of task conv.weight does not fit the model: .*assignments"):
        load_compressed(fresh, path) if kind == "compressed.pt" else load_lcz(path, fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # nothing written
