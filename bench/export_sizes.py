"""File sizes of compressed models, by export format.

Usage::

    .venv/bin/python bench/export_sizes.py [--quick] [--threads N] [--out PATH]

For the LeNet300 (784-300-100-10) quant, prune, low-rank, mixed and additive specs of ``specs/``
and a small GPT-2 built from a config (4 layers, 128 wide, 2,048 tokens; no download), each model
is compressed directly (step 0 of LC: sizes depend on the plan, not on how well the weights were
trained), then written as

- ``dense``: ``torch.save(model.state_dict())`` of the uncompressed model;
- ``predicted``: what ``lcdsl check`` reports before training (the plan's bits over 8, plus buffers);
- ``lcz``: ``export_model(..., format="lcz")``;
- ``safetensors``: ``export_model(..., format="safetensors")``, loaded back and checked to give the
  same outputs;
- ``onnx``: ``export_model(..., format="onnx")``, a column only when this lcdsl knows that format
  (:data:`lcdsl.store.lcz.EXPORT_FORMATS`).

Prints a table and writes JSON (default ``bench/results/export_sizes.json``). ``--quick``: the
LeNet300 rows only, with 64 inputs (digits' size), in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import lcdsl
from lcdsl.engine.core import Engine
from lcdsl.plan.summary import plan_summary
from lcdsl.store import load_safetensors
from lcdsl.store.lcz import EXPORT_FORMATS
from lcdsl.training.zoo import LeNet300

ROOT = Path(__file__).resolve().parent.parent
LENET_SPECS = ("lenet300-quant", "lenet300-prune", "lenet300-lowrank", "lenet300-mixed", "lenet300-additive")

GPT_SPEC = """\
[transformer.h.*.attn.c_attn, transformer.h.*.attn.c_proj] as attention : quant(k=4)
transformer.h.*.mlp.c_fc : prune(l0=10%)
transformer.h.*.mlp.c_proj : lowrank(rank=16)
lm_head : quant(k=16)          # the tied token embedding
"""
"""The small transformer's spec: a shared 2-bit codebook for attention, pruned and low-rank MLPs,
a 4-bit embedding."""


def gpt2() -> torch.nn.Module:
    """A GPT-2 of 4 layers, 128 wide, 2,048 tokens (1.07 M weights), built from its config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, vocab_size=2048, n_positions=128, bos_token_id=0,
                        eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config)


def cases(quick: bool) -> list[tuple[str, object, str, torch.Tensor | dict]]:
    """(name, model factory, spec text, example input)."""
    inputs = 64 if quick else 784
    rows: list[tuple[str, object, str, torch.Tensor | dict]] = [
        (name, lambda: LeNet300(in_features=inputs), (ROOT / "specs" / f"{name}.lc").read_text(),
         torch.randn(8, inputs, generator=torch.Generator().manual_seed(1)))
        for name in LENET_SPECS
        if not (quick and name == "lenet300-lowrank")  # rank 80 needs more than 64 inputs
    ]  # fmt: skip
    if not quick:
        ids = torch.randint(0, 2048, (2, 32), generator=torch.Generator().manual_seed(1))
        rows.append(("gpt2-4x128", gpt2, GPT_SPEC, {"input_ids": ids}))
    return rows


def outputs(model: torch.nn.Module, x: torch.Tensor | dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def measure(name: str, factory, spec_text: str, x, folder: Path) -> dict[str, object]:
    """One row: every format's file size in bytes, and the safetensors file checked."""
    torch.manual_seed(0)
    model = factory()
    dense_path = folder / f"{name}.pt"
    torch.save(model.state_dict(), dense_path)
    spec = lcdsl.parse(spec_text)
    plan = spec.bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    thetas = engine.finalize()
    summary = plan_summary(plan)
    row: dict[str, object] = {
        "case": name,
        "weights": sum(p.numel() for p in model.parameters()),
        "dense": dense_path.stat().st_size,
        "predicted": summary["total_bits_after"] / 8 if summary["total_bits_after"] is not None else None,
    }
    for fmt in EXPORT_FORMATS:
        path = folder / f"{name}.{fmt}"
        sizes = lcdsl.export_model(model, plan, thetas, path, spec_text=spec.source, format=fmt)
        row[fmt] = path.stat().st_size
        if fmt == "safetensors":
            row["safetensors_header"] = sizes.file_bytes - sizes.payload_bytes
            fresh = factory()
            load_safetensors(path, fresh)
            row["safetensors_outputs_equal"] = bool(torch.equal(outputs(fresh, x), outputs(model, x)))
    return row


def table(rows: list[dict[str, object]]) -> Table:
    columns = ["dense", "predicted", *EXPORT_FORMATS]
    out = Table(title="export sizes (bytes; × = dense / size)", title_justify="left")
    out.add_column("case")
    for column in columns:
        out.add_column(column, justify="right")
    out.add_column("safetensors vs lcz", justify="right")
    for row in rows:
        cells = [f"{row[c]:,.0f}" + (f" (×{row['dense'] / row[c]:.1f})" if c != "dense" else "") for c in columns]
        out.add_row(str(row["case"]), *cells, f"{row['safetensors'] / row['lcz'] - 1:+.2%}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="LeNet300 rows only, 64 inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "export_sizes.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, factory, text, x, Path(tmp)) for name, factory, text, x in cases(args.quick)]
    Console(width=150).print(table(rows))
    result = {
        "command": " ".join(["bench/export_sizes.py", *(argv if argv is not None else sys.argv[1:])]),
        "formats": list(EXPORT_FORMATS),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "lcdsl": lcdsl.__version__,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(row["safetensors_outputs_equal"] for row in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
