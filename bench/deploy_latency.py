"""CPU latency and memory of compressed models before and after :func:`lcdsl.deploy.deploy`.

Usage::

    .venv/bin/python bench/deploy_latency.py [--quick] [--threads N] [--out PATH] [--only factor|compact]

Two tables. **factor** (the layers :func:`deploy` makes smaller: low-rank pairs, removed units):

Each case binds a spec to a model of MNIST size (LeNet300 784-300-100-10, LeNet5 on 28×28),
compresses the random initial weights directly (latency depends on the layers' shapes, not on
the weights' values), then times the finalized model (weights ``Δ(θ)``, original layers) and the
deployed one in the same process under ``torch.inference_mode``. Each time is the median of many
calls after a warm-up (the fastest call is kept too), the two models' calls interleaved. Outputs
are checked to agree.

**compact** (codebook layers, and every rewrite together): for the LeNet300 quant, prune, low-rank
and mixed specs and a small GPT-2 (4 layers, 128 wide, its Conv1D layers quantized to 4 entries),
the dense model (original layers holding ``Δ(θ)``), the deployed model with codebook layers that
expand their weight at every forward, and the same with the expansion cached: median latency
(interleaved calls, one thread, measured in the thread's CPU time so that other jobs on a shared
machine do not count), the bytes of parameters and buffers in memory (plus the cached
expansions), the largest transient expansion a per-forward call allocates (one layer's dense
weight), and the ONNX file of the deployed model against the dense model's ONNX export, with
onnxruntime's median latency for both (needs the extra ``onnx``). Weights are the direct
compression of the random initial weights: latency and memory do not depend on accuracy.

Prints the tables and writes JSON (default ``bench/results/deploy_latency.json``; ``--only``
keeps the other table's rows from the file).
"""

from __future__ import annotations

import argparse
import json
import math
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
from lcdsl.deploy.onnx import onnx_bytes
from lcdsl.engine.core import Engine
from lcdsl.operators import CodebookLayer, set_cache
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


COMPACT_CASES = (
    ("lenet300", "specs/lenet300-quant.lc"),
    ("lenet300", "specs/lenet300-prune.lc"),
    ("lenet300", "specs/lenet300-lowrank.lc"),
    ("lenet300", "specs/lenet300-mixed.lc"),
    ("gpt2-small-config", "transformer.h.*.attn.c_attn, transformer.h.*.attn.c_proj, transformer.h.*.mlp.c_fc, "
     "transformer.h.*.mlp.c_proj : quant(k=4)\n"),
)  # fmt: skip
"""(model, spec file or spec text) of the compact table."""


def tiny_gpt2() -> torch.nn.Module:
    """A GPT-2 from a config (nothing downloaded): 4 layers, 128 wide, a vocabulary of 512."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, vocab_size=512, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def resident_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers (each tensor once) and of cached expansions."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    for layer in module.modules():
        if isinstance(layer, CodebookLayer) and layer._cached is not None:
            total += layer._cached.numel() * layer._cached.element_size()
    return total


def largest_expansion(module: torch.nn.Module) -> int:
    """Bytes of the largest weight a codebook layer expands during a forward without its cache."""
    sizes = [math.prod(m.weight_shape) * m.codebook.element_size() for m in module.modules()
             if isinstance(m, CodebookLayer)]  # fmt: skip
    return max(sizes, default=0)


def interleaved_seconds(modules: list, call, repeats: int, clock=time.thread_time) -> list[list[float]]:
    """Seconds of ``repeats`` calls of each of ``modules`` (``call(module)``), interleaved.

    The clock is the calling thread's CPU time: with one torch thread (and onnxruntime's one
    intra-op thread) the work runs on this thread, and on a machine shared with other jobs the
    time the thread waits for a core is left out (wall time there is mostly other jobs')."""
    with torch.inference_mode():
        for _ in range(max(3, repeats // 10)):
            for module in modules:
                call(module)
        times: list[list[float]] = [[] for _ in modules]
        for _ in range(repeats):
            for module, out in zip(modules, times):
                start = clock()
                call(module)
                out.append(clock() - start)
    return times


def onnx_session(data: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def compact_case(model_name: str, spec_text: str, batch: int, repeats: int, with_onnx: bool) -> dict:
    if model_name == "lenet300":
        torch.manual_seed(0)
        model, example = LeNet300(in_features=784).eval(), torch.randn(batch, 784)
        feed_key = None
    else:
        model, example = tiny_gpt2(), {"input_ids": torch.randint(0, 512, (batch, 32))}
        feed_key = "input_ids"
    plan = lcdsl.parse(spec_text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    model.eval()
    per_forward = deploy(model, plan, thetas, example=example)
    cached = deploy(model, plan, thetas, cache=True)
    fast, fastest = per_forward.module.eval(), cached.module.eval()

    def call(module):
        return module(**example) if feed_key else module(example)

    with torch.inference_mode():
        call(fastest)  # fills the caches
    dense_s, per_forward_s, cached_s = interleaved_seconds([model, fast, fastest], call, repeats)
    row = {
        "batch": batch,
        "dense_us": 1e6 * statistics.median(dense_s),
        "per_forward_us": 1e6 * statistics.median(per_forward_s),
        "cached_us": 1e6 * statistics.median(cached_s),
        "dense_bytes": resident_bytes(model),
        "per_forward_bytes": resident_bytes(fast),
        "per_forward_transient_bytes": largest_expansion(fast),
        "cached_bytes": resident_bytes(fastest),
        "relative_output_difference": per_forward.relative_difference,
        "changes": [f"{c.module}: {c.before} → {c.after}" for c in per_forward.changes],
        "kept": [f"{k.module}: {k.reason}" for k in per_forward.kept],
    }
    if with_onnx:
        compact_file, dense_file = onnx_bytes(set_cache(fast, False), example), onnx_bytes(model, example)
        inputs = example[feed_key] if feed_key else example
        sessions = [onnx_session(compact_file), onnx_session(dense_file)]
        feeds = [{s.get_inputs()[0].name: inputs.numpy()} for s in sessions]
        ort = interleaved_seconds([0, 1], lambda i: sessions[i].run(None, feeds[i]), repeats)
        row.update({
            "onnx_bytes": len(compact_file), "dense_onnx_bytes": len(dense_file),
            "onnx_us": 1e6 * statistics.median(ort[0]), "dense_onnx_us": 1e6 * statistics.median(ort[1]),
        })  # fmt: skip
    return row


def compact_table(rows: list[dict], threads: int, repeats: int) -> Table:
    table = Table(title=f"compact deployed layers, CPU, {threads} thread(s), median thread CPU time of {repeats} calls")
    for column in ("model", "spec", "batch", "dense µs", "per-forward µs", "cached µs", "dense kB",
                   "per-forward kB (+transient)", "cached kB", "ONNX kB (dense)", "ORT µs (dense)"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "spec") else "right")
    for r in rows:
        onnx_cell = f"{r['onnx_bytes'] / 1e3:.1f} ({r['dense_onnx_bytes'] / 1e3:.1f})" if "onnx_bytes" in r else "—"
        ort_cell = f"{r['onnx_us']:.0f} ({r['dense_onnx_us']:.0f})" if "onnx_us" in r else "—"
        table.add_row(r["model"], r["spec"][:24], str(r["batch"]), f"{r['dense_us']:.0f}", f"{r['per_forward_us']:.0f}",
                      f"{r['cached_us']:.0f}", f"{r['dense_bytes'] / 1e3:.1f}",
                      f"{r['per_forward_bytes'] / 1e3:.1f} (+{r['per_forward_transient_bytes'] / 1e3:.0f})",
                      f"{r['cached_bytes'] / 1e3:.1f}", onnx_cell, ort_cell)  # fmt: skip
    return table


def run_compact(repeats: int, quick: bool) -> list[dict]:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        with_onnx = True
    except ImportError:
        with_onnx = False
    rows = []
    for model_name, source in COMPACT_CASES:
        spec_text = Path(source).read_text() if source.endswith(".lc") else source
        label = Path(source).name if source.endswith(".lc") else "Conv1D layers : quant(k=4)"
        batches = (1, 256) if model_name == "lenet300" else (1, 8)
        for i, batch in enumerate(batches[:1] if quick else batches):
            row = compact_case(model_name, spec_text, batch, repeats, with_onnx and i == 0)
            rows.append({"model": model_name, "spec": label, **row})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="bench/results/deploy_latency.json")
    parser.add_argument("--only", choices=("factor", "compact"), help="run one table (the other is kept from --out)")
    parser.add_argument("--repeats", type=int, help="calls per timing (default 300 factor / 200 compact; --quick 50 / 30)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (50 if args.quick else 300)
    compact_repeats = args.repeats or (30 if args.quick else 200)
    previous = json.loads(Path(args.out).read_text()) if args.only and Path(args.out).is_file() else {}
    console = Console()
    compact = previous.get("compact", [])
    if args.only != "factor":
        compact = run_compact(compact_repeats, args.quick)
        console.print(compact_table(compact, args.threads, compact_repeats))
        for row in compact:
            if row["batch"] in (1,):
                console.print(f"{row['model']} {row['spec']}: " + "; ".join(row["changes"] + row["kept"]))
    rows = previous.get("rows", []) if args.only == "compact" else []
    for model_name, path, text in (() if args.only == "compact" else CASES):
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
    if args.only != "compact":
        console.print(table)
    for row in (rows[::2] if args.only != "compact" else []):
        console.print(f"{row['spec']}: " + "; ".join(row["changes"] + row["notes"]))
    result = {
        "threads": args.threads,
        "repeats": repeats,
        "compact_repeats": compact_repeats if args.only != "factor" else previous.get("compact_repeats"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "rows": rows,
        "compact": compact,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
