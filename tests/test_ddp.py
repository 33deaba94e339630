"""The engine under torchrun: two gloo processes give the same model on both ranks, equal to a
one-process run with the same global batches and seeds; the helpers of lcdsl.distributed agree,
disagree and broadcast as they should. Real processes, one torch thread each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_train.py"

SPEC = """
mu         = geometric(start=1e-3, factor=1.5, steps=3)
lr         = 0.05
batch_size = 64
fc1 : quant(k=2)
fc2 : lowrank(rank=6)
fc3 : prune(l0=100)
"""

HELPERS = """
import sys
import torch, torch.distributed as dist
from torch import nn
from lcdsl import parse
from lcdsl.engine.distributed import broadcast_state, check_same, sync_engine
from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
# one file per rank: two processes printing to one pipe can interleave within a line
sys.stdout = open(f"{sys.argv[1]}/checks-rank{rank}.txt", "w", buffering=1)
torch.manual_seed(0)
net = nn.Sequential()
net.add_module("fc", nn.Linear(6, 5))
saved = {k: v.clone() for k, v in net.state_dict().items()}
engine = Engine(net, parse("fc : quant(k=2)").bind(net))
engine.direct_compression()
assert check_same(net, engine) == 0.0

# a rank whose weights moved: named, with the size of the difference
with torch.no_grad():
    if rank == 1:
        net.fc.bias[2] += 0.5
try:
    check_same(net, engine)
    print("NO ERROR")
except EngineError as exc:
    print("ERROR:", exc)
assert abs(check_same(net, engine, atol=1.0) - 0.5) < 1e-6

# rank 1 computes another θ; broadcast_state makes it take rank 0's
if rank == 1:
    with torch.no_grad():
        net.fc.weight.mul_(3.0)
    engine.c_step()
try:
    check_same(nn.Module(), engine)  # θ only
except EngineError as exc:
    print("THETA:", exc)
broadcast_state(engine)
net.load_state_dict(saved)
assert check_same(net, engine) == 0.0

# sync_engine(mode="check") stops a run whose ranks compute different θ
sync_engine(engine, mode="check")
engine.mu = 1.0
if rank == 1:
    with torch.no_grad():
        net.fc.weight.add_(1.0)
try:
    engine.run(lambda engine, k: None)
except EngineError as exc:
    print("RUN:", exc)
dist.destroy_process_group()
sys.stdout.close()
"""


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def example(out: Path, spec: Path) -> list[str]:
    return [str(EXAMPLE), "--spec", str(spec), "--out", str(out), "--reference-epochs", "3",
            "--epochs", "1", "--first-epochs", "1"]  # fmt: skip


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def test_two_ranks_equal_one_process_and_each_other(tmp_path) -> None:
    spec = tmp_path / "small.lc"
    spec.write_text(SPEC)
    helpers = tmp_path / "helpers.py"
    helpers.write_text(textwrap.dedent(HELPERS))
    kw = {"cwd": ROOT, "env": env(), "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # the three jobs run side by side: the slow part is starting Python and torch
    single = subprocess.Popen([sys.executable, *example(tmp_path / "one", spec)], **kw)
    ddp = subprocess.Popen(torchrun(*example(tmp_path / "two", spec)), **kw)
    checks = subprocess.Popen(torchrun(str(helpers), str(tmp_path)), **kw)
    single_out, ddp_out, checks_out = finish(single), finish(ddp), finish(checks)

    assert "1 process(es)" in single_out and "2 process(es)" in ddp_out
    assert "ranks differ by 0" in ddp_out

    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    r0 = torch.load(tmp_path / "two" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "two" / "rank1.pt", weights_only=True)
    for name, w in r0["model"].items():
        assert torch.equal(w, r1["model"][name]), name  # bit for bit across ranks
        torch.testing.assert_close(w, one["model"][name], rtol=0, atol=1e-5, msg=name)
    for task, theta in r0["thetas"].items():
        for key, value in theta.items():
            assert torch.equal(value, r1["thetas"][task][key])
            if not value.is_floating_point():  # assignments, supports: the same decisions
                assert torch.equal(value, one["thetas"][task][key]), (task, key)
    assert [h["step"] for h in r0["history"]] == [0, 1, 2, 3]
    for a, b in zip(r0["history"], one["history"]):
        assert a["distortion"] == pytest.approx(b["distortion"], rel=1e-4)
        assert a["metrics"]["test_error"] == pytest.approx(b["metrics"]["test_error"], abs=1 / 360)
    final = r0["model"]
    assert len(torch.unique(final["fc1.weight"])) <= 2
    assert torch.linalg.matrix_rank(final["fc2.weight"]) <= 6
    assert int((final["fc3.weight"] != 0).sum()) <= 100

    assert "Traceback" not in checks_out, checks_out
    checks_text = "".join((tmp_path / f"checks-rank{rank}.txt").read_text() for rank in (0, 1))
    lines = checks_text.splitlines()
    assert "NO ERROR" not in checks_text
    errors = [line for line in lines if line.startswith("ERROR:")]
    assert len(errors) == 2 and all("ranks disagree on fc.bias" in e and "by 0.5" in e for e in errors)
    assert sum("THETA:" in line and "θ[fc.weight]" in line for line in lines) == 2
    assert sum("RUN:" in line and "ranks disagree on" in line for line in lines) == 2
