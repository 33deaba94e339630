"""Atomic saves, checkpoint loading, the writability check, and compressed.pt round trips."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import lcdsl.store.atomic as checkpoint
from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError, ModelError
from lcdsl.language.parser import parse
from lcdsl.store.atomic import check_writable, load_checkpoint, save_atomic, write_atomic
from lcdsl.store.model import compressed_state, load_compressed
from lcdsl.training.zoo import LeNet300


def test_save_and_load_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 3, "names": ["a", "b"], "nested": {"x": None}}
    path = tmp_path / "c.pt"
    save_atomic(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 3 and loaded["nested"] == {"x": None}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1}, path)
    before = path.read_bytes()

    def half_then_fail(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_fail)
    with pytest.raises(EngineError, match=r"cannot write .*checkpoint\.pt: .*No space left"):
        save_atomic({"step": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_atomic(path, lambda fh: fh.write(b"old"))

    def no_rename(src, dst):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.os, "replace", no_rename)
    with pytest.raises(EngineError, match="Permission denied"):
        write_atomic(path, lambda fh: fh.write(b"new"))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_new_files_follow_the_umask_and_old_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        save_atomic({}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o640
    (tmp_path / "a.pt").chmod(0o600)
    save_atomic({"again": 1}, tmp_path / "a.pt")
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o600


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(EngineError, match="missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="junk.pt: cannot load it"):
        load_checkpoint(tmp_path / "junk.pt", error=ModelError)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(EngineError, match="list.pt: expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


class _Code:
    """Not plain data: weights_only loading must refuse it."""


def test_load_refuses_pickled_objects(tmp_path):
    torch.save({"x": _Code()}, tmp_path / "evil.pt")
    with pytest.raises(EngineError, match="evil.pt: cannot load it"):
        load_checkpoint(tmp_path / "evil.pt")


def test_check_writable(tmp_path, monkeypatch):
    folder = check_writable(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(EngineError, match="cannot write into"):
        check_writable(tmp_path / "file" / "sub")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=1024))
    with pytest.raises(EngineError, match="MiB free"):
        check_writable(tmp_path)


SPEC = "fc1 : quant(k=2)\n[fc2, fc3] : prune(l0=50)\nfc3.bias : quant(k=2)\n"


def _compressed_model(tmp_path):
    torch.manual_seed(0)
    model = LeNet300(in_features=12, num_classes=4)
    plan = parse(SPEC).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    path = tmp_path / "compressed.pt"
    save_atomic(compressed_state(model, plan, thetas, spec_text=SPEC, model_name="lenet300"), path)
    return model, plan, path


def test_load_compressed_rebuilds_the_weights(tmp_path):
    model, plan, path = _compressed_model(tmp_path)
    assert plan.dense == ("fc1.bias", "fc2.bias")
    torch.manual_seed(1)
    fresh = LeNet300(in_features=12, num_classes=4)
    thetas = load_compressed(fresh, path)
    assert set(thetas) == {task.name for task in plan.tasks}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh.fc1.weight.unique().numel() <= 2
    nonzeros = int((fresh.fc2.weight != 0).sum() + (fresh.fc3.weight != 0).sum())
    assert nonzeros == 50


def test_load_compressed_into_another_model_is_a_model_error(tmp_path):
    _, _, path = _compressed_model(tmp_path)
    with pytest.raises(ModelError, match="does not fit|another operator|shape"):
        load_compressed(LeNet300(in_features=13, num_classes=4), path)
    save_atomic({"format": 99}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an lcdsl compressed model"):
        load_compressed(LeNet300(in_features=12, num_classes=4), tmp_path / "other.pt")
