"""Faults: ``kill -9`` at chosen and at random moments of ``lcdsl compress``, then ``--resume``;
and output folders that cannot take the run.

Real processes, killed by the ``LCDSL_FAULT`` hook (:func:`lcdsl.checkpoint.fault_point`) or by
the test with ``SIGKILL``. After every kill the checkpoint on disk is whole (it loads with
``weights_only=True``), and the resumed run's report equals an uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from lcdsl.cli import main
from lcdsl.faults import FAULT_ENV
from lcdsl.store.atomic import load_checkpoint

SPEC = "fc* : quant(k=2)\n"  # three tasks: fc1, fc2, fc3
STEPS = ["--steps", "3", "--epochs", "1", "--first-epochs", "1", "--mu-start", "1e-3", "--mu-factor", "2"]
# digits has 1,437 training images: 6 mini-batches of 256 per epoch, so 6 penalty calls per L step


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    (folder / "quant.lc").write_text(SPEC)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", "--model", "lenet300", "--data", "digits", "--out", str(folder / "ref.pt"), "--epochs", "1"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return folder


def start(work, out, *, fault: str | None = None, resume: bool = False) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="120")
    if fault:
        env[FAULT_ENV] = fault
    argv = [sys.executable, "-m", "lcdsl", "compress", str(work / "quant.lc"), "--model", "lenet300",
            "--data", "digits", "--reference", str(work / "ref.pt"), "--out", str(out), *STEPS]  # fmt: skip
    if resume:
        argv.append("--resume")
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out + err


def saved_step(out) -> int | None:
    """The LC step of the checkpoint on disk (None if there is none); it must load whole."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return None
    return int(load_checkpoint(path)["engine"]["step"])


def comparable(folder) -> dict:
    """report.json without wall-clock times (and the folder, which differs by design)."""
    rep = json.loads((folder / "report.json").read_text())
    rep["steps"] = [{k: v for k, v in s.items() if not k.startswith("seconds")} for s in rep["steps"]]
    rep.pop("seconds", None)
    return rep


def same_thetas(a, b) -> None:
    ours, theirs = load_checkpoint(a / "compressed.pt"), load_checkpoint(b / "compressed.pt")
    assert ours["tasks"].keys() == theirs["tasks"].keys()
    for name, task in theirs["tasks"].items():
        for key, value in task["theta"].items():
            assert torch.equal(ours["tasks"][name]["theta"][key], value)


def leftovers(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def test_kills_in_the_c_step_while_saving_and_in_the_l_step_then_resume(work):
    """One run killed three times at chosen moments; each --resume continues where it can."""
    baseline = start(work, work / "baseline")  # the uninterrupted run, alongside
    out = work / "killed"

    # 1. in the C step of LC step 1: after fc1's projection (direct compression made visits 1-3)
    code, _ = finish(start(work, out, fault="c_step:5"))
    assert code == -signal.SIGKILL
    assert saved_step(out) == 0  # the checkpoint of direct compression, whole

    # 2. while the checkpoint of LC step 2 is being written (this process's second save)
    code, _ = finish(start(work, out, fault="save:2", resume=True))
    assert code == -signal.SIGKILL
    assert saved_step(out) == 1  # the old checkpoint stands; the half-written one is a temporary
    assert leftovers(out) and all(name.startswith(".checkpoint.pt.") for name in leftovers(out))

    # 3. in the second mini-batch of LC step 3's L step (step 2's L step made visits 1-6)
    code, _ = finish(start(work, out, fault="l_step:8", resume=True))
    assert code == -signal.SIGKILL
    assert saved_step(out) == 2
    assert not (out / "report.json").exists()

    code, output = finish(start(work, out, resume=True))
    assert code == 0, output
    assert "resuming" in output and "after LC step 2 of 3" in output
    assert finish(baseline)[0] == 0
    assert leftovers(out) == []  # the killed write's temporary is gone
    assert comparable(out) == comparable(work / "baseline")
    same_thetas(out, work / "baseline")


@pytest.mark.slow
def test_random_kills_then_resume_until_done(work):
    """SIGKILL at random moments, as many times as it takes; the result never changes."""
    reference = work / "baseline"
    if not (reference / "report.json").exists():
        assert finish(start(work, reference))[0] == 0
    rng = random.Random(1707)
    out = work / "random"
    kills = 0
    for attempt in range(12):
        proc = start(work, out, resume=attempt > 0)
        time.sleep(rng.uniform(2.0, 9.0))  # imports take a few seconds; the run itself a few more
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        code, output = finish(proc)
        saved_step(out)  # whatever moment it was, the checkpoint loads whole
        if code == 0:
            break
        assert code == -signal.SIGKILL, output
    else:
        code, output = finish(start(work, out, resume=True))
        assert code == 0, output
    assert kills >= 1
    assert leftovers(out) == []
    assert comparable(out) == comparable(reference)
    same_thetas(out, reference)


# ---------------------------------------------------------------- folders that cannot take it


def test_an_output_folder_that_cannot_be_created_fails_before_any_work(work, capsys, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded before the output folder was checked")

    monkeypatch.setattr("lcdsl.cli.compress.load_data", must_not_load)
    blocker = work / "a-file"
    blocker.write_text("not a folder")
    code = main(["compress", str(work / "quant.lc"), "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 1 and f"lcdsl: error: cannot write into {blocker / 'run'}" in err and "Traceback" not in err


def test_a_read_only_folder_fails_before_any_work(work, capsys, monkeypatch):
    real_tempfile = __import__("tempfile").NamedTemporaryFile

    def read_only(*args, **kwargs):  # root ignores chmod, so the file system says no instead
        if str(kwargs.get("dir", "")).endswith("readonly"):
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real_tempfile(*args, **kwargs)

    monkeypatch.setattr("lcdsl.store.atomic.tempfile.NamedTemporaryFile", read_only)
    monkeypatch.setattr("lcdsl.cli.compress.load_data", lambda *a, **k: pytest.fail("data loaded"))
    code = main(["compress", str(work / "quant.lc"), "--out", str(work / "readonly")])
    err = capsys.readouterr().err
    assert code == 1 and "cannot write into" in err and "Read-only file system" in err


def test_a_full_disk_fails_before_any_work(work, capsys, monkeypatch):
    import shutil

    usage = shutil.disk_usage(work)
    monkeypatch.setattr("lcdsl.store.atomic.shutil.disk_usage", lambda p: usage._replace(free=3 * 2**20))
    monkeypatch.setattr("lcdsl.cli.compress.load_data", lambda *a, **k: pytest.fail("data loaded"))
    code = main(["compress", str(work / "quant.lc"), "--out", str(work / "full")])
    err = capsys.readouterr().err
    assert code == 1 and "has only 3.0 MiB free; a run needs at least 64 MiB" in err


def test_a_disk_that_fills_up_mid_run_is_a_clear_error_and_keeps_the_last_checkpoint(work, capsys, monkeypatch):
    real_fsync = os.fsync
    calls = {"n": 0}

    def fill_up(fd):
        calls["n"] += 1
        if calls["n"] == 5:  # two fsyncs a save (file, folder): the checkpoint after LC step 2
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr("lcdsl.store.atomic.os.fsync", fill_up)
    out = work / "filling"
    torch.set_num_threads(1)
    argv = ["compress", str(work / "quant.lc"), "--reference", str(work / "ref.pt"), "--out", str(out), *STEPS]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"cannot write {out / 'checkpoint.pt'}: [Errno 28] No space left on device" in err
    assert saved_step(out) == 1 and leftovers(out) == []
