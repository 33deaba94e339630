"""Engine overhead (BENCHMARKS §3): plain training against an LC run of the same epochs.

Same model (LeNet300), data (Fashion-MNIST; ``--quick``: digits), batch order and number of
epochs. The LC run is ``specs/lenet300-quant.lc`` cut to ``--steps`` LC steps (4 epochs for the
first L step, 2 after, as in BENCHMARKS §1), driven by :meth:`lcdsl.engine.Engine.run` with the
L step ``lcdsl compress`` uses and no evaluation; plain training runs the same epochs through
the same :func:`lcdsl.training.train_epochs`, without the penalty. Both start from the same
freshly initialised weights (training cost does not depend on them).

Timing: each repeat runs both, in alternating order, in this process; the ratio LC / plain and
the shares of C steps (C step + multiplier step) and of the penalty come from the same repeat;
the table shows medians over repeats. Besides wall time it reports the ratio of process CPU
time, which a busy shared machine disturbs far less (with ``--threads 1`` it counts work, not
waiting); the shares are of wall time.

Memory: each kind runs once more in its own subprocess, which reports its peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` once data and model are loaded, so the peak
is the training's; where that is impossible, ``ru_maxrss`` of the whole process). Resident
memory is what the OS sees: it includes the allocator's caches, so it is an upper bound on what
the tensors need. The engine's own tensors (Δ(θ), λ, the cached penalty target, θ) are also
counted exactly, in bytes.

Usage::

    .venv/bin/python bench/overhead.py [--steps 2] [--repeats 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from lcdsl.cli.train import build_model
from lcdsl.engine.core import Engine
from lcdsl.language.parser import load as load_spec
from lcdsl.plan.settings import Geometric, settings_from_spec
from lcdsl.training.data import Dataset, load_data
from lcdsl.training.epochs import Batches, make_optimizer, train_epochs
from lcdsl.training.lstep import make_l_step

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "lenet300-quant.lc"
RESULTS = ROOT / "bench" / "results" / "overhead.json"


def _setup(data: Dataset, steps: int):
    """A fresh LeNet300, the spec's plan and settings cut to ``steps`` LC steps."""
    spec = load_spec(SPEC)
    settings = settings_from_spec(spec)
    mu = settings.mu
    settings = attrs.evolve(settings, mu=Geometric(start=mu.start, factor=mu.factor, steps=steps))
    model = build_model("lenet300", data, seed=settings.seed)
    plan = attrs.evolve(spec.bind(model), settings=settings)
    return model, plan, settings


def epochs_of(settings) -> int:
    """Epochs an LC run of these settings trains."""
    steps = len(settings.mu.values())
    return settings.first_epochs + settings.epochs * (steps - 1)


def run_plain(data: Dataset, steps: int) -> dict[str, float]:
    model, _, settings = _setup(data, steps)
    optimizer = make_optimizer(model, settings.optimizer, settings.lr, settings.momentum, settings.nesterov)
    batches = Batches(settings.batch_size, settings.seed)
    start, cpu = time.perf_counter(), time.process_time()
    train_epochs(model, optimizer, data, batches, epochs_of(settings))
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def engine_bytes(engine: Engine) -> dict[str, int]:
    """Bytes of the engine's tensors: Δ(θ) (0 where it is rebuilt from θ), λ, the cached penalty
    targets, θ, and the compressed weights (:meth:`Engine.state_bytes`)."""
    return engine.state_bytes()


def run_lc(data: Dataset, steps: int) -> dict[str, Any]:
    model, plan, settings = _setup(data, steps)
    engine = Engine(model, plan, settings=settings)
    l_step = make_l_step(model, data, settings)
    counted: dict[str, int] = {}

    def count(engine: Engine, **_: Any) -> None:
        if not counted:  # during the first L step: the penalty's target is cached by then
            counted.update(engine_bytes(engine))

    engine.events.on("l_step_end", count)
    start, cpu = time.perf_counter(), time.process_time()
    records = engine.run(l_step)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    c = sum(r.seconds_c_step for r in records)
    penalty = sum(r.seconds_penalty for r in records)
    return {"seconds": seconds, "cpu_seconds": cpu, "c_step_seconds": c, "penalty_seconds": penalty,
            "l_step_seconds": sum(r.seconds_l_step for r in records), "engine_bytes": counted}  # fmt: skip


def _peak_reset() -> bool:
    """Reset the peak-RSS mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def warm_up(data: Dataset, kinds: tuple[str, ...]) -> None:
    """Run each kind once on 2,048 training images: compiled kernels load, allocators fill."""
    small = attrs.evolve(data, x_train=data.x_train[:2048], y_train=data.y_train[:2048])
    for kind in kinds:
        run_plain(small, 1) if kind == "plain" else run_lc(small, 1)


def child(kind: str, data_name: str, steps: int) -> dict[str, Any]:
    """One measured run in this (fresh) process, with its memory."""
    data = load_data(data_name)
    warm_up(data, (kind,))
    rss_before = _status_kib("VmRSS")
    reset = _peak_reset()
    result = run_plain(data, steps) if kind == "plain" else run_lc(data, steps)
    peak = _status_kib("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result.update({"rss_before_kib": rss_before, "peak_kib": peak, "peak_is_training_only": reset})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="LC steps (epochs: 4 + 2·(steps − 1)); default 2")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST")
    parser.add_argument("--out", help=f"JSON path (default {RESULTS.relative_to(ROOT)}; --quick: runs/bench/overhead-quick.json)")
    parser.add_argument("--child", choices=("plain", "lc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data_name = "digits" if args.quick else "fashion-mnist"
    if args.child:
        print(json.dumps(child(args.child, data_name, args.steps)))
        return 0

    from rich.console import Console
    from rich.table import Table

    data = load_data(data_name)
    warm_up(data, ("lc", "plain"))
    repeats = []
    for r in range(args.repeats):
        order = ("plain", "lc") if r % 2 == 0 else ("lc", "plain")
        got = {kind: (run_plain if kind == "plain" else run_lc)(data, args.steps) for kind in order}
        lc, plain = got["lc"], got["plain"]
        repeats.append({
            "plain_s": plain["seconds"], "lc_s": lc["seconds"], "ratio": lc["seconds"] / plain["seconds"],
            "cpu_ratio": lc["cpu_seconds"] / plain["cpu_seconds"],
            "c_share": lc["c_step_seconds"] / lc["seconds"], "penalty_share": lc["penalty_seconds"] / lc["seconds"],
            "engine_bytes": lc["engine_bytes"],
        })  # fmt: skip
        print(json.dumps(repeats[-1]), flush=True)

    memory = {}
    for kind in ("plain", "lc"):
        cmd = [sys.executable, __file__, "--child", kind, "--steps", str(args.steps)]
        cmd += ["--threads", str(args.threads)] if args.threads > 0 else []
        cmd += ["--quick"] if args.quick else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        memory[kind] = json.loads(done.stdout.strip().splitlines()[-1])

    _, _, settings = _setup(data, args.steps)
    median = {k: statistics.median(r[k] for r in repeats) for k in ("plain_s", "lc_s", "ratio", "cpu_ratio", "c_share", "penalty_share")}
    growth = {k: memory[k]["peak_kib"] - memory[k]["rss_before_kib"] for k in memory}
    result = {
        "command": "bench/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
        "data": data_name, "spec": str(SPEC.relative_to(ROOT)), "lc_steps": args.steps,
        "epochs": epochs_of(settings), "repeats": repeats, "median": median, "memory": memory,
        "memory_growth_kib": growth,
    }  # fmt: skip
    out = Path(args.out) if args.out else (ROOT / "runs" / "bench" / "overhead-quick.json" if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"LC vs plain training: LeNet300 on {data_name}, {result['epochs']} epochs each, "
                  f"median of {args.repeats}")  # fmt: skip
    for column in ("plain s", "LC s", "LC / plain (wall)", "LC / plain (CPU time)", "C steps", "penalty"):
        table.add_column(column, justify="right")
    table.add_row(f"{median['plain_s']:.1f}", f"{median['lc_s']:.1f}", f"×{median['ratio']:.3f}",
                  f"×{median['cpu_ratio']:.3f}",
                  f"{100 * median['c_share']:.1f}%", f"{100 * median['penalty_share']:.1f}%")  # fmt: skip
    console = Console(width=140)
    console.print(table)
    counted = repeats[0]["engine_bytes"]
    console.print(
        f"peak RSS growth during training: plain {growth['plain'] / 1024:.1f} MiB, LC {growth['lc'] / 1024:.1f} MiB "
        f"(peaks {memory['plain']['peak_kib'] / 1024:.0f} / {memory['lc']['peak_kib'] / 1024:.0f} MiB); "
        f"engine tensors: Δ {counted['delta'] / 2**20:.2f} MiB, λ {counted['lambda'] / 2**20:.2f} MiB, "
        f"penalty target {counted['penalty_target'] / 2**20:.2f} MiB, θ {counted['theta'] / 2**20:.2f} MiB "
        f"(compressed weights: {counted['weights'] / 2**20:.2f} MiB)"
    )
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
