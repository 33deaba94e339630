"""The engine past one process: a GPT-2 sharded with FSDP2 over two gloo ranks compresses to the
weights one process gets, a sharded checkpoint resumes exactly (on two ranks, and on one), and
DDP with the C steps shared across ranks gives θ bit for bit as one process.

Real processes, one torch thread each; the jobs of one wave run side by side (most of their time
is starting Python, torch and transformers)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from test_ddp import env, torchrun  # the torchrun command and the environment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fsdp_train.py"

SHARED_DDP = """
import json, sys
from collections import OrderedDict
import torch, torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from lcdsl import parse
from lcdsl.engine.core import Engine
from lcdsl.engine.distributed import share_c_steps

SPEC = '''
mu = geometric(start=1e-2, factor=2.0, steps=3)
fc1 : quant(k=4)
fc2 : lowrank(rank=5)
fc3 : prune(l0=60)
[fc1.bias, fc2.bias] : quant(k=2)
'''
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
g = torch.Generator().manual_seed(1)
x, y = torch.randn(96, 20, generator=g), torch.randint(0, 4, (96,), generator=g)


def network():
    torch.manual_seed(0)
    layers = dict(fc1=nn.Linear(20, 40), act=nn.Tanh(), fc2=nn.Linear(40, 30), act2=nn.Tanh(), fc3=nn.Linear(30, 4))
    return nn.Sequential(OrderedDict(layers))


def compress(model, net, share):
    engine = Engine(model, parse(SPEC).bind(net))
    solved = []
    engine.events.on("c_step_task", lambda task, **_: solved.append(task.name))
    sharing = share_c_steps(engine) if share else None

    def l_step(engine, k):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for _ in range(5):
            opt.zero_grad()
            # every rank the whole batch: DDP's average of equal gradients is that gradient, exactly
            F.cross_entropy(model(x), y).backward()
            engine.add_penalty_grad()
            opt.step()

    engine.run(l_step)
    return engine, solved, sharing


alone = network()  # one process's run: no wrapper, no sharing, no communication
one, _, _ = compress(alone, alone, share=False)
net = network()
shared, solved, sharing = compress(DistributedDataParallel(net), net, share=True)
same_theta = all(
    torch.equal(one.thetas[task][key], theta[key]) for task, theta in shared.thetas.items() for key in theta
)
same_weights = all(torch.equal(a, b) for a, b in zip(alone.parameters(), net.parameters()))
with open(f"{sys.argv[1]}/shared-rank{rank}.json", "w") as fh:
    json.dump({"same_theta": same_theta, "same_weights": same_weights, "solved": sorted(set(solved)),
               "owners": sharing.owners, "tasks": [t.name for t in shared.tasks],
               "steps": [r.step for r in shared.history]}, fh)
dist.destroy_process_group()
"""


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    return out


def example(out: Path, *args: str) -> list[str]:
    return [str(EXAMPLE), "--out", str(out), *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """Every job's output, in two waves: the second resumes the first's checkpoint."""
    tmp = tmp_path_factory.mktemp("fsdp")
    checkpoint = tmp / "checkpoint"
    script = tmp / "shared_ddp.py"
    script.write_text(textwrap.dedent(SHARED_DDP))
    first = {
        "one": start([sys.executable, *example(tmp / "one")]),
        "two": start(torchrun(*example(tmp / "two"))),
        "part": start(torchrun(*example(tmp / "part", "--stop-after", "2", "--checkpoint", str(checkpoint)))),
    }
    printed = {name: finish(proc) for name, proc in first.items()}
    second = {
        "resumed-two": start(torchrun(*example(tmp / "resumed-two", "--resume", str(checkpoint)))),
        "resumed-one": start([sys.executable, *example(tmp / "resumed-one", "--resume", str(checkpoint))]),
        "shared": start(torchrun(str(script), str(tmp))),
    }
    printed |= {name: finish(proc) for name, proc in second.items()}
    return {"tmp": tmp, "printed": printed, "checkpoint": checkpoint}


def final(runs: dict[str, object], name: str) -> dict[str, object]:
    return torch.load(runs["tmp"] / name / "final.pt", weights_only=True)


def test_a_sharded_gpt2_compresses_to_one_process_weights(runs) -> None:
    printed = runs["printed"]
    assert "1 process(es)" in printed["one"] and "2 process(es)" in printed["two"]
    owners = re.search(r"C steps by rank: \[([0-9, ]+)\]", printed["two"]).group(1)
    assert set(owners.replace(" ", "").split(",")) == {"0", "1"}  # both ranks solve some tasks
    one, two = final(runs, "one"), final(runs, "two")
    assert one["model"].keys() == two["model"].keys()
    for name, w in two["model"].items():
        torch.testing.assert_close(w, one["model"][name], rtol=0, atol=1e-5, msg=name)
    for task, theta in two["thetas"].items():
        for key, value in theta.items():
            if not value.is_floating_point():  # assignments, kept indices: the same decisions
                assert torch.equal(value, one["thetas"][task][key]), (task, key)
    for a, b in zip(two["history"], one["history"]):
        assert a["distortion"] == pytest.approx(b["distortion"], rel=1e-4)
    weights = two["model"]
    for block in (0, 1):
        assert len(torch.unique(weights[f"transformer.h.{block}.mlp.c_fc.weight"])) <= 4
        assert torch.linalg.matrix_rank(weights[f"transformer.h.{block}.attn.c_attn.weight"]) <= 4
        kept = int((weights[f"transformer.h.{block}.mlp.c_proj.weight"] != 0).sum())
        assert kept <= weights[f"transformer.h.{block}.mlp.c_proj.weight"].numel() // 4
    assert len(torch.unique(weights["transformer.wte.weight"])) <= 8  # the tied head, through its alias


def test_a_sharded_checkpoint_resumes_exactly_on_two_ranks_and_on_one(runs) -> None:
    manifest = torch.load(runs["checkpoint"] / "manifest.pt", weights_only=True)
    assert manifest["world_size"] == 2 and manifest["engine"]["step"] == 2
    assert [p.name for p in runs["checkpoint"].glob("data-*")] == ["data-2"]  # step 1's data removed
    assert "resumed at LC step 2 from a checkpoint of 2 process(es)" in runs["printed"]["resumed-two"]
    two, resumed_two, resumed_one = final(runs, "two"), final(runs, "resumed-two"), final(runs, "resumed-one")
    for name, w in two["model"].items():
        assert torch.equal(w, resumed_two["model"][name]), name  # same world size: bit for bit
        torch.testing.assert_close(w, resumed_one["model"][name], rtol=0, atol=1e-5, msg=name)
    for task, theta in two["thetas"].items():
        for key, value in theta.items():
            assert torch.equal(value, resumed_two["thetas"][task][key]), (task, key)
    assert [h["step"] for h in resumed_two["history"]] == [0, 1, 2, 3, 4]
    for a, b in zip(resumed_two["history"], two["history"]):
        assert (a["distortion"], a["loss"], a["metrics"]) == (b["distortion"], b["loss"], b["metrics"])


def test_shared_c_steps_under_ddp_give_one_process_theta_bit_for_bit(runs) -> None:
    import json

    ranks = [json.loads((runs["tmp"] / f"shared-rank{rank}.json").read_text()) for rank in (0, 1)]
    for result in ranks:
        assert result["same_theta"] and result["same_weights"]
        assert result["steps"] == [0, 1, 2, 3]
    assert ranks[0]["owners"] == ranks[1]["owners"]
    solved = [set(result["solved"]) for result in ranks]
    assert solved[0] and solved[1] and not solved[0] & solved[1]  # each task solved on one rank
    assert solved[0] | solved[1] == set(ranks[0]["tasks"])
