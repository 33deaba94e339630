"""CPU latency of compressed models before and after :func:`lcdsl.deploy.deploy`.

Usage::

    .venv/bin/python bench/deploy_latency.py [--quick] [--threads N] [--out PATH]

Each case binds a spec to a model of MNIST size (LeNet300 784-300-100-10, LeNet5 on 28×28),
compresses the random initial weights directly (latency depends on the layers' shapes, not on
the weights' values), then times the finalized model (weights ``Δ(θ)``, original layers) and the
deployed one in the same process under ``torch.inference_mode``. Each time is the median of many
calls after a warm-up (the fastest call is kept too), the two models' calls interleaved. Outputs
are checked to agree. Prints a table and writes JSON (default
``bench/results/deploy_latency.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import lcdsl
from lcdsl.deploy import deploy
from lcdsl.engine.core import Engine
from lcdsl.training.zoo import LeNet5, LeNet300

CASES = (
    ("lenet300", "specs/lenet300-lowrank.lc", None),
    ("lenet300", "specs/lenet300-mixed.lc", None),
    ("lenet300", "specs/lenet300-structured.lc", None),
    ("lenet300", None, "fc1 : prune(l0=25%, by=rows)\nfc2 : prune(l0=25%, by=rows)\n"),
    ("lenet5", None, "conv2 : lowrank(rank=8)\nfc1 : lowrank(rank=20)\n"),
)
"""(model, spec file, or spec text)."""


def build(model_name: str) -> tuple[torch.nn.Module, torch.Size]:
    torch.manual_seed(0)
    if model_name == "lenet300":
        return LeNet300(in_features=784), torch.Size([784])
    return LeNet5(image_size=28), torch.Size([1, 28, 28])


def call_seconds(
    first: torch.nn.Module, second: torch.nn.Module, x: torch.Tensor, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds of each of ``repeats`` calls of each module, their calls interleaved so that a busy
    machine slows both alike."""
    with torch.inference_mode():
        for _ in range(max(3, repeats // 10)):
            first(x), second(x)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for module, out in ((first, times[0]), (second, times[1])):
                start = time.perf_counter()
                module(x)
                out.append(time.perf_counter() - start)
    return times


def run_case(model_name: str, spec_text: str, batch: int, repeats: int) -> dict:
    model, shape = build(model_name)
    plan = lcdsl.parse(spec_text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    model.eval()
    deployed = deploy(model, plan, thetas)
    fast = deployed.module.eval()
    x = torch.randn(batch, *shape)
    with torch.inference_mode():
        gap = float((model(x) - fast(x)).abs().max())
    before, after = call_seconds(model, fast, x, repeats)
    t0, t1 = statistics.median(before), statistics.median(after)
    return {
        "batch": batch,
        "original_us": 1e6 * t0,
        "deployed_us": 1e6 * t1,
        "speedup": t0 / t1,
        # on a machine shared with other jobs a call may lose whole scheduler slices; the fastest
        # call shows the layers' own cost
        "original_min_us": 1e6 * min(before),
        "deployed_min_us": 1e6 * min(after),
        "speedup_min": min(before) / min(after),
        "max_abs_output_gap": gap,
        "changes": [f"{c.module}: {c.before} → {c.after}" for c in deployed.changes],
        "notes": list(deployed.notes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="bench/results/deploy_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 50 if args.quick else 300
    rows = []
    for model_name, path, text in CASES:
        spec_text = Path(path).read_text() if path else text
        label = Path(path).name if path else " / ".join(line.strip() for line in text.strip().splitlines())
        for batch in (1, 256):
            row = run_case(model_name, spec_text, batch, repeats)
            rows.append({"model": model_name, "spec": label, **row})
    table = Table(title=f"deploy latency, CPU, {args.threads} thread(s), median of {repeats} calls")
    for column in ("model", "spec", "batch", "original µs", "deployed µs", "speed-up", "fastest calls"):
        table.add_column(column, justify="left" if column in ("model", "spec") else "right")
    for row in rows:
        fastest = f"{row['original_min_us']:.0f} → {row['deployed_min_us']:.0f} (×{row['speedup_min']:.2f})"
        table.add_row(row["model"], row["spec"][:24], str(row["batch"]), f"{row['original_us']:.1f}",
                      f"{row['deployed_us']:.1f}", f"×{row['speedup']:.2f}", fastest)  # fmt: skip
    console = Console()
    console.print(table)
    for row in rows[::2]:
        console.print(f"{row['spec']}: " + "; ".join(row["changes"] + row["notes"]))
    result = {
        "threads": args.threads,
        "repeats": repeats,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
