"""C-step wall time against world size: C steps shared across ranks (CPU, gloo).

A 784-512-512-512-512-10 MLP (1.2M weights, 3.3× LeNet300) with six tasks of unequal cost
(adaptive quantization, low-rank, pruning, a joint group of biases). For each world size the
engine runs ``--repeats`` C steps at a fixed μ after a warm-up (direct compression, which also
loads the compiled k-means kernels), each timed between two barriers, so a C step's time is the
slowest rank's: its own tasks, then every task's θ and Δ(θ) broadcast from its owner.

- world 1: one process, no process group (every task solved in turn);
- world 2, ``whole``: two ranks holding the whole model (DDP's case), tasks shared;
- world 2, ``fsdp``: two ranks with every layer ``fully_shard`` ed: each task's target is
  all-gathered before it is solved, Δ(θ) cut back into the shards.

Besides wall time, each C step's CPU time on its busiest rank: with one thread a process it counts
work, not the waits a busy machine adds, so it is the C step's time on ranks that each have a
core of their own (what a shared machine cannot show in wall time). One process also times each
task's projection alone (CPU time, median of the repeats). From those costs
the assignment the engine makes (:func:`lcdsl.engine.sharing.assign_tasks` on its cost model)
gives, for any world size, the busiest rank's solve time: the estimate for larger worlds,
communication not counted. Every process runs one torch thread.

Usage::

    .venv/bin/python bench/cstep_ranks.py [--repeats 5] [--smoke] [--out bench/results/cstep_ranks.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.sharing import assign_tasks, c_step_cost
from lcdsl.language.parser import parse

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "cstep_ranks.json"
SPEC = """
fc1 : quant(k=4)
fc2 : lowrank(rank=32)
fc3 : prune(l0=5%)
fc4 : quant(k=2)
fc5 : prune(l0=50%)
[fc1.bias, fc2.bias, fc3.bias, fc4.bias] : quant(k=2)
"""
WIDTHS = (784, 512, 512, 512, 512, 10)
SMOKE_WIDTHS = (64, 32, 32, 32, 32, 10)
MU = 1e-2
ESTIMATED_WORLDS = (1, 2, 4, 8, 16)


def mlp(widths: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(zip(widths, widths[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(widths) - 1:
            layers[f"act{i}"] = nn.Tanh()
    return nn.Sequential(layers)


def worker(args: argparse.Namespace) -> None:
    """One rank: time ``--repeats`` C steps (and, alone, each task's projection)."""
    import torch.distributed as dist

    from lcdsl.engine.distributed import rank_and_world, share_c_steps

    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    rank, world = rank_and_world()
    model = mlp(SMOKE_WIDTHS if args.smoke else WIDTHS)
    plan = parse(SPEC).bind(model)
    if args.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model:
            if isinstance(module, nn.Linear):
                fully_shard(module)
        fully_shard(model)
    engine = Engine(model, plan)
    sharing = share_c_steps(engine) if world > 1 else None

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    engine.direct_compression()  # the warm-up: compiled kernels loaded, θ to warm-start from
    engine.mu = MU
    seconds, cpu = [], []
    for _ in range(args.repeats):
        barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        engine.c_step()
        busy = torch.tensor(time.process_time() - start_cpu, dtype=torch.float64)  # this rank's work
        barrier()
        seconds.append(time.perf_counter() - start)
        if world > 1:
            dist.all_reduce(busy, op=dist.ReduceOp.MAX)
        cpu.append(float(busy))
    result: dict[str, Any] = {"world": world, "mode": args.mode, "c_step_s": seconds, "busiest_cpu_s": cpu}
    if sharing is not None:
        result["owners"] = sharing.owners
    if world == 1:  # each task's projection alone, on the same targets the C step solves
        tasks = []
        for state in engine._tasks:
            target = state.view.gather(state.params).detach() - state.lam / MU
            times = []
            for _ in range(args.repeats):
                start = time.process_time()  # one thread: the work, not the waits of a busy machine
                state.task.operator.project(target.clone(), mu=MU, warm=state.theta)
                times.append(time.process_time() - start)
            tasks.append({
                "task": state.task.name, "operator": repr(state.task.operator), "weights": state.view.numel,
                "model_cost": c_step_cost(state.task), "solve_s": statistics.median(times),
            })  # fmt: skip
        result["tasks"] = tasks
    if rank == 0:
        Path(args.json).write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def launch(world: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the worker on ``world`` processes and return rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        flags = [str(Path(__file__).resolve()), "--worker", "--mode", mode, "--repeats", str(args.repeats),
                 "--json", str(out)] + (["--smoke"] if args.smoke else [])  # fmt: skip
        if world == 1:
            command = [sys.executable, *flags]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                       *flags]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"world {world} ({mode}) failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(out.read_text())


def estimate(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each world size, the busiest rank's solve time under the engine's assignment."""
    rows = []
    total = sum(t["solve_s"] for t in tasks)
    for world in ESTIMATED_WORLDS:
        owners = assign_tasks([t["model_cost"] for t in tasks], world)
        loads = [sum(t["solve_s"] for t, o in zip(tasks, owners) if o == rank) for rank in range(world)]
        best = assign_tasks([t["solve_s"] for t in tasks], world)  # LPT on the measured times
        best_loads = [sum(t["solve_s"] for t, o in zip(tasks, best) if o == rank) for rank in range(world)]
        rows.append({"world": world, "solve_s": max(loads), "speedup": total / max(loads),
                     "lpt_measured_s": max(best_loads), "owners": owners})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tiny model, for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="whole", choices=("whole", "fsdp"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    runs = [launch(1, "whole", args), launch(2, "whole", args), launch(2, "fsdp", args)]
    tasks = runs[0]["tasks"]
    result = {
        "model": "MLP " + "-".join(map(str, SMOKE_WIDTHS if args.smoke else WIDTHS)),
        "spec": SPEC.strip(), "mu": MU, "repeats": args.repeats, "threads_per_process": 1,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "load_average": os.getloadavg(),
        "command": "bench/cstep_ranks.py " + " ".join(argv if argv is not None else sys.argv[1:]), "tasks": tasks,
        "measured": [{**{k: v for k, v in run.items() if k != "tasks"}, "median_s": statistics.median(run["c_step_s"]),
                      "median_busiest_cpu_s": statistics.median(run["busiest_cpu_s"])} for run in runs],
        "estimated": estimate(tasks),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"{result['model']}, μ = {MU}, median of {args.repeats} C steps, 1 thread a process; "
          f"load average {result['load_average'][0]:.1f} on {result['cpus']} CPUs")
    print("\n| task | operator | weights | cost model | solve (s) |\n|---|---|---:|---:|---:|")
    for t in tasks:
        print(f"| {t['task']} | {t['operator']} | {t['weights']} | {t['model_cost']:.3g} | {t['solve_s']:.4f} |")
    one, one_cpu = result["measured"][0]["median_s"], result["measured"][0]["median_busiest_cpu_s"]
    print("\n| world | layout | C step wall (s) | speed-up | busiest rank's CPU (s) | speed-up |")
    print("|---:|---|---:|---:|---:|---:|")
    for run in result["measured"]:
        wall, busy = run["median_s"], run["median_busiest_cpu_s"]
        print(f"| {run['world']} | {run['mode']} | {wall:.4f} | {one / wall:.2f}× "
              f"| {busy:.4f} | {one_cpu / busy:.2f}× |")
    print("\n| world | busiest rank's solves (s) | speed-up | LPT on measured times (s) |\n|---:|---:|---:|---:|")
    for row in result["estimated"]:
        print(f"| {row['world']} | {row['solve_s']:.4f} | {row['speedup']:.2f}× | {row['lpt_measured_s']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
