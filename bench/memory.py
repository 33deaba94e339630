"""LC memory per weight on a GPT-2-small-shaped model: what the engine keeps, C-step time, peaks.

A ``transformers.GPT2LMHeadModel`` built from ``GPT2Config()`` (12 layers, 768 wide, 50,257
tokens: 124.4M weights; ``--quick``: a 2-layer, 64-wide one), random weights, random token data.
Each row trains the same batches with AdamW: ``plain`` without LC, the others an LC run driven by
the engine's pieces (direct compression, then per LC step an L step of ``--batches`` batches
with ``engine.add_penalty_grad()``, the C step and the multiplier step), compressing every HF
``Conv1D`` (the attention and MLP matrices: 84.9M weights) as the row's spec says, under the
row's ``delta`` and ``lambda_dtype`` settings.

Measured per row:

- the engine's tensors, exactly (``Engine.state_bytes()``), in bytes per compressed weight: ``λ``,
  ``Δ(θ)`` (0 where it is rebuilt from ``θ``), ``θ``;
- peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``) above the memory
  the built model holds, over the L steps and over the C steps; RSS includes the allocator's
  caches, so it is an upper bound on what tensors need;
- time: per L-step batch (LC against plain), the penalty's share of it, and every C step's time
  per task, summed by operator (seconds, and seconds per million weights).

Each row runs in its own process (a fresh peak), one after the other; ``--quick`` runs them in
this process (the peaks then include what earlier rows left in the allocator).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/memory.py [--steps 2] [--batches 2] [--batch-size 1]
        [--seq 64] [--rows plain,quant-keep,...] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from overhead import _peak_reset, _status_kib  # a sibling script: bench/ is on sys.path when run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory.json"

QUANT = "@Conv1D : quant(k=4)\n"
ROWS: dict[str, tuple[str | None, dict[str, str]]] = {
    "plain": (None, {}),
    "quant-keep": (QUANT, {"delta": "keep", "lambda_dtype": "weights"}),
    "quant": (QUANT, {"delta": "auto", "lambda_dtype": "weights"}),
    "quant-bf16": (QUANT, {"delta": "auto", "lambda_dtype": "bfloat16"}),
    "prune-bf16": ("@Conv1D : prune(l0=5%)\n", {"delta": "auto", "lambda_dtype": "bfloat16"}),
    "lowrank-mlp-bf16": (
        "transformer.h.*.mlp.* : lowrank(rank=64)\n@Conv1D, !transformer.h.*.mlp.* : quant(k=4)\n",
        {"delta": "auto", "lambda_dtype": "bfloat16"},
    ),
}
"""Row name → (spec, settings); ``plain`` trains without LC."""


def config(quick: bool) -> Any:
    import transformers

    if quick:
        return transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=128, n_positions=64,
                                       bos_token_id=0, eos_token_id=0)  # fmt: skip
    return transformers.GPT2Config()  # GPT-2 small: 124.4M weights


class Peak:
    """Peak resident memory of a phase, in MiB above a baseline (None where Linux cannot tell)."""

    def __init__(self) -> None:
        self.base = _status_kib("VmRSS")

    reset = staticmethod(_peak_reset)

    def read(self) -> float | None:
        peak = _status_kib("VmHWM")
        return None if peak is None or self.base is None else (peak - self.base) / 1024


def batches(cfg: Any, count: int, batch_size: int, seq: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, cfg.vocab_size, (batch_size, seq), generator=g) for _ in range(count)]


def train(model: torch.nn.Module, data: list[torch.Tensor], engine: Any = None) -> list[float]:
    """One L step (or plain epoch) over ``data`` with a fresh AdamW; seconds per batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    seconds = []
    for tokens in data:
        start = time.perf_counter()
        opt.zero_grad()
        model(tokens, labels=tokens).loss.backward()
        if engine is not None:
            engine.add_penalty_grad()
        opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(row: str, quick: bool, steps: int, count: int, batch_size: int, seq: int) -> dict[str, Any]:
    """One row in this process."""
    import transformers

    from lcdsl.engine.core import Engine
    from lcdsl.language.parser import parse
    from lcdsl.operators.base import describe
    from lcdsl.plan import bind
    from lcdsl.plan.settings import Explicit

    spec, settings = ROWS[row]
    cfg = config(quick)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    weights = sum(p.numel() for p in model.parameters())
    data = batches(cfg, count, batch_size, seq)
    peak = Peak()  # baseline: the built model
    out: dict[str, Any] = {"row": row, "spec": spec, "settings": settings, "weights": weights}
    if spec is None:
        Peak.reset()
        seconds = [s for _ in range(steps) for s in train(model, data)]
        out.update({"batch_seconds": seconds, "peak_l_mib": peak.read()})
        return out

    plan = bind(parse(spec), model)
    mus = Explicit([1e-3 * 2**k for k in range(steps)])
    engine = Engine(model, plan, settings=attrs.evolve(plan.settings, mu=mus, **settings))
    compressed = sum(t.numel for t in plan.tasks)
    operators = {t.name: describe(t.operator).split("(")[0] for t in plan.tasks}
    per_task: list[dict[str, float]] = []
    marks: list[tuple[float, str]] = []
    engine.events.on("c_step_task", lambda task, **_: marks.append((time.perf_counter(), task.name)))

    def c_step(piece) -> float:
        marks.clear()
        start = time.perf_counter()
        piece()
        end = time.perf_counter()
        times = {name: (marks[i + 1][0] if i + 1 < len(marks) else end) - t for i, (t, name) in enumerate(marks)}
        per_task.append(times)
        return end - start

    Peak.reset()
    c_seconds = [c_step(engine.direct_compression)]
    peak_c = [peak.read()]
    counted = None
    l_seconds, penalty, peak_l, mult = [], [], [], []
    for k, mu in enumerate(engine.mus):
        engine.mu = mu
        engine._penalty_seconds = 0.0
        Peak.reset()
        l_seconds += train(model, data, engine)
        peak_l.append(peak.read())
        penalty.append(engine._penalty_seconds / len(data))
        counted = counted or engine.state_bytes()
        Peak.reset()
        c_seconds.append(c_step(engine.c_step))
        start = time.perf_counter()
        engine.multiplier_step()
        mult.append(time.perf_counter() - start)
        peak_c.append(peak.read())
        engine.step = k + 1
    by_operator: dict[str, dict[str, float]] = {}
    for name, op in operators.items():
        entry = by_operator.setdefault(op, {"tasks": 0, "weights": 0, "seconds": []})
        entry["tasks"] += 1
        entry["weights"] += next(t.numel for t in plan.tasks if t.name == name)
    for op, entry in by_operator.items():
        # a C step's time on this operator's tasks, one value per C step (step 0 included)
        entry["seconds"] = [sum(t for name, t in times.items() if operators[name] == op) for times in per_task]
        entry["median_s"] = statistics.median(entry["seconds"])
        entry["s_per_million"] = entry["median_s"] / (entry["weights"] / 1e6)
    out.update({
        "compressed": compressed, "tasks": len(plan.tasks), "state_bytes": counted,
        "bytes_per_weight": {k: v / compressed for k, v in counted.items() if k != "weights"},
        "batch_seconds": l_seconds, "penalty_seconds_per_batch": penalty, "c_step_seconds": c_seconds,
        "multiplier_step_seconds": mult, "by_operator": by_operator,
        "peak_l_mib": max(p for p in peak_l if p is not None) if any(p is not None for p in peak_l) else None,
        "peak_c_mib": max(p for p in peak_c if p is not None) if any(p is not None for p in peak_c) else None,
        "distortion": engine.distortion(),
    })  # fmt: skip
    return out


def penalty_timing(quick: bool, repeats: int, batch_size: int, seq: int) -> dict[str, Any]:
    """The penalty gradient with Δ(θ) kept against rebuilt from θ, in one process, alternating.

    ``quant(k=4)`` on the Conv1D layers of the first two blocks (14.2M weights; the cost is per
    weight, and a C step of them is quick), the same model and θ for both engines. Also a
    forward and backward pass of one batch, to put the penalty's seconds in proportion."""
    import transformers

    from lcdsl.engine.core import Engine
    from lcdsl.language.parser import parse
    from lcdsl.plan import bind

    cfg = config(quick)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    plan = bind(parse("transformer.h.0.*.c_*, transformer.h.1.*.c_* : quant(k=4)\n"), model)  # 8 matrices
    engines = {}
    for mode in ("keep", "recompute"):
        engine = Engine(model, plan, settings=attrs.evolve(plan.settings, delta=mode))
        engine.direct_compression()
        engine.mu = 1e-3
        engines[mode] = engine
    tokens = batches(cfg, 1, batch_size, seq)[0]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    seconds: dict[str, list[float]] = {"keep": [], "recompute": [], "forward_backward": []}
    for _ in range(repeats):
        for mode, engine in engines.items():
            start = time.perf_counter()
            engine.add_penalty_grad()
            seconds[mode].append(time.perf_counter() - start)
        start = time.perf_counter()
        model(tokens, labels=tokens).loss.backward()
        seconds["forward_backward"].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    weights = sum(t.numel for t in plan.tasks)
    return {"weights": weights, "seconds": seconds, "median_s": median,
            "recompute_over_keep": median["recompute"] / median["keep"],
            "extra_ns_per_weight": 1e9 * (median["recompute"] - median["keep"]) / weights,
            "extra_share_of_forward_backward": (median["recompute"] - median["keep"]) / median["forward_backward"]}  # fmt: skip


def _child(argv: list[str], row: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", row, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(result: dict[str, Any]) -> str:
    """The markdown table docs/memory.md shows."""
    rows = {r["row"]: r for r in result["rows"]}
    if not rows:
        return ""
    plain = rows.get("plain")
    plain_batch = statistics.median(plain["batch_seconds"]) if plain else None
    lines = [
        (
            "| row | settings | λ B/w | Δ B/w | θ B/w | LC state B/w | peak L step MiB | peak C step MiB | "
            "batch s (× plain) | penalty / batch | C step s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if plain:
        lines.append(f"| plain | AdamW | – | – | – | – | {plain['peak_l_mib']:.0f} | – | {plain_batch:.2f} | – | – |")
    for name, r in rows.items():
        if name == "plain":
            continue
        b = r["bytes_per_weight"]
        state = b["lambda"] + b["delta"] + b["theta"]
        batch = statistics.median(r["batch_seconds"])
        ratio = f" (×{batch / plain_batch:.2f})" if plain_batch else ""
        settings = f"delta={r['settings']['delta']}, λ {r['settings']['lambda_dtype']}"
        share = statistics.median(r["penalty_seconds_per_batch"]) / batch
        c = statistics.median(r["c_step_seconds"][1:] or r["c_step_seconds"])
        lines.append(
            f"| {name} | {settings} | {b['lambda']:.2f} | {b['delta']:.2f} | {b['theta']:.3f} | {state:.2f} | "
            f"{r['peak_l_mib']:.0f} | {r['peak_c_mib']:.0f} | {batch:.2f}{ratio} | {100 * share:.1f} % | {c:.1f} |"
        )
    lines += ["", "| row | operator | tasks | weights | C step s (median) | s per 10⁶ weights |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        for op, e in r.get("by_operator", {}).items():
            lines.append(f"| {name} | {op} | {e['tasks']} | {e['weights']:,} | {e['median_s']:.2f} | {e['s_per_million']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="LC steps after direct compression (default 2)")
    parser.add_argument("--batches", type=int, default=2, help="batches per L step (default 2)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq", type=int, default=64, help="tokens per sequence (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default all)")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide GPT-2, rows in this process")
    parser.add_argument("--out", help=f"JSON path (default {RESULTS.relative_to(ROOT)}; --quick: runs/bench/memory-quick.json)")
    parser.add_argument("--timing-repeats", type=int, default=7,
                        help="alternating repeats of the penalty-gradient timing, Δ(θ) kept vs rebuilt (0: skip)")
    parser.add_argument("--merge", action="store_true", help="update the rows and timing of an existing --out file")
    parser.add_argument("--child", choices=(*ROWS, "timing"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = (args.quick, args.steps, args.batches, args.batch_size, args.seq)
    if args.child == "timing":
        print(json.dumps(penalty_timing(args.quick, args.timing_repeats, args.batch_size, args.seq)))
        return 0
    if args.child:
        print(json.dumps(measure(args.child, *sizes)))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; rows are {', '.join(ROWS)}")
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = []
    for row in rows:
        results.append(measure(row, *sizes) if args.quick else _child(passed, row))
        print(f"{row}: done", flush=True)
    result = {
        "command": "bench/memory.py " + " ".join(passed),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                    "processor": platform.processor() or platform.machine()},
        "model": "GPT2LMHeadModel(" + ("quick config" if args.quick else "GPT2Config()") + ")",
        "steps": args.steps, "batches": args.batches, "batch_size": args.batch_size, "seq": args.seq,
        "rows": results,
    }  # fmt: skip
    if args.timing_repeats > 0:
        timing = (penalty_timing(args.quick, args.timing_repeats, args.batch_size, args.seq) if args.quick
                  else _child(passed, "timing"))  # fmt: skip
        result["penalty_timing"] = timing
        print(f"penalty timing: {json.dumps(timing['median_s'])}", flush=True)
    out = Path(args.out) if args.out else (ROOT / "runs" / "bench" / "memory-quick.json" if args.quick else RESULTS)
    if args.merge and out.exists():  # keep the rows (and timing) this run did not measure
        old = json.loads(out.read_text())
        measured = {r["row"] for r in results}
        result["rows"] = [r for r in old["rows"] if r["row"] not in measured] + results
        result["rows"].sort(key=lambda r: list(ROWS).index(r["row"]))
        result.setdefault("penalty_timing", old.get("penalty_timing"))
        result["command"] = old["command"] + " ; " + result["command"]
    result["table"] = table(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
