"""LC on a BatchNorm convnet (BENCHMARKS §4): a ResNet-18-shaped model on random images.

Plain training against an LC run of the same optimizer steps, in this process, alternating: the
ratio of wall times, the share of the C steps (direct compression, C steps and multiplier steps)
and each C step's time per task. The model is :class:`lcdsl.training.zoo.ResNet` (torchvision's
ResNet-18 layout: 11.2 M weights, BatchNorm, downsample branches); the data are random
3×32×32 images with random labels (training cost does not depend on what the pixels are). The
spec quantizes every convolution to 4 entries and prunes the classifier:

    @Conv2d : quant(k=4)
    fc      : prune(l0=10%)

Usage::

    .venv/bin/python bench/resnet.py [--quick] [--steps 2] [--batches 8] [--repeats 3] [--threads N]

``--quick`` runs the small ResNet of ``lcdsl.training.zoo.resnet_small`` (78 k weights) on 8×8
images instead: a bounded run that CI makes to keep the benchmark working.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import lcdsl
from lcdsl.engine import Engine
from lcdsl.language import parse
from lcdsl.training.zoo import ResNet, resnet_small

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "resnet.json"
SPEC = "mu = [1e-3, 1e-2, 1e-1]\n@Conv2d : quant(k=4)\nfc : prune(l0=10%)\n"


def _model(quick: bool) -> tuple[torch.nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if quick:
        return resnet_small(in_channels=3, num_classes=10, image_size=8), (3, 8, 8)
    return ResNet(in_channels=3, num_classes=10, image_size=32), (3, 32, 32)


def _batches(shape: tuple[int, ...], count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(count)]  # fmt: skip


def _train(model: torch.nn.Module, batches: list, engine: Engine | None) -> None:
    """One L step's optimizer steps: SGD on cross-entropy, the penalty's gradient added when LC."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if engine is not None:
            engine.add_penalty_grad()
        optimizer.step()


def run_plain(quick: bool, steps: int, batches: list) -> float:
    model, _ = _model(quick)
    start = time.perf_counter()
    for _ in range(steps):
        _train(model, batches, None)
    return time.perf_counter() - start


def run_lc(quick: bool, steps: int, batches: list) -> dict[str, Any]:
    model, _ = _model(quick)
    plan = parse(SPEC).bind(model)
    engine = Engine(model, plan)
    c_seconds = 0.0
    start = time.perf_counter()
    t = time.perf_counter()
    engine.direct_compression()
    direct = time.perf_counter() - t
    c_seconds += direct
    per_step = []
    for k in range(steps):
        engine.mu = engine.mus[min(k, len(engine.mus) - 1)]
        _train(model, batches, engine)
        t = time.perf_counter()
        engine.c_step()
        engine.multiplier_step()
        per_step.append(time.perf_counter() - t)
        c_seconds += per_step[-1]
    wall = time.perf_counter() - start
    return {
        "seconds": wall, "c_seconds": c_seconds, "direct_seconds": direct, "c_step_seconds": per_step,
        "tasks": len(plan.tasks), "compressed_weights": sum(t.numel for t in plan.tasks),
        "weights": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small ResNet on 8×8 images")
    parser.add_argument("--steps", type=int, default=2, help="LC steps (L step + C step) per run")
    parser.add_argument("--batches", type=int, default=8, help="optimizer steps per L step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="JSON path (default bench/results/resnet.json; --quick: runs/bench/)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    _, shape = _model(args.quick)
    batches = _batches(shape, args.batches, args.batch_size)
    lcdsl.project("quant(k=4)", torch.randn(1000))  # load the compiled k-means kernels before any clock runs
    _train(_model(args.quick)[0], batches[:2], None)  # and the first-call costs of the convolution kernels
    repeats = []
    for r in range(args.repeats):  # alternate the order, so neither kind always runs on a warm cache
        if r % 2 == 0:
            plain, lc = run_plain(args.quick, args.steps, batches), run_lc(args.quick, args.steps, batches)
        else:
            lc, plain = run_lc(args.quick, args.steps, batches), run_plain(args.quick, args.steps, batches)
        repeats.append({"plain_seconds": plain, **lc, "ratio": lc["seconds"] / plain,
                        "c_share": lc["c_seconds"] / lc["seconds"]})  # fmt: skip
    keys = ("plain_seconds", "seconds", "ratio", "c_share")
    median = {key: statistics.median(r[key] for r in repeats) for key in keys}
    result = {
        "model": "resnet_small" if args.quick else "resnet18", "spec": SPEC, "steps": args.steps,
        "batches_per_step": args.batches, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.machine(), "repeats": repeats, "median": median,
    }  # fmt: skip
    first = repeats[0]
    print(f"{result['model']}: {first['weights']:,} weights, {first['compressed_weights']:,} compressed in "
          f"{first['tasks']} tasks; {args.steps} LC steps of {args.batches} batches of {args.batch_size}")
    print(f"  plain {median['plain_seconds']:.2f} s, LC {median['seconds']:.2f} s: LC/plain ×{median['ratio']:.2f}, "
          f"C steps {100 * median['c_share']:.1f}% of the LC run "
          f"(direct compression {statistics.median(r['direct_seconds'] for r in repeats):.2f} s, "
          f"a C step {statistics.median(s for r in repeats for s in r['c_step_seconds']):.2f} s); "
          f"medians of {args.repeats}")  # fmt: skip
    out = Path(args.out) if args.out else (ROOT / "runs" / "bench" / "resnet-quick.json" if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
