"""``lcdsl export DIR --out model.lcz``: the compressed model of a run as one compact file.

``--format safetensors`` writes the same fields as a ``.safetensors`` file instead
(:mod:`lcdsl.store.safetensors_file`), checked the same way.

Reads ``DIR/compressed.pt`` (and ``DIR/report.json`` for the data set's name), rebuilds the
model (from ``--model`` / ``--data``, or from the names the run recorded when they are built-ins:
a ``module:function`` recorded in a file is never imported, the command refuses and prints the
command line that names it), writes the ``.lcz`` file (:mod:`lcdsl.store.lcz`) to a temporary file beside ``--out``,
loads it back into a fresh model and checks that model's outputs on the probe batch against those
``lcdsl compress`` recorded from the model it evaluated (:mod:`lcdsl.store.probe`); only then is
the file renamed to ``--out``, so a file that fails the check never replaces a good one. A
``compressed.pt`` without recorded outputs (written before they were) is checked against the
model rebuilt from it, and the command says so. ``--deploy`` also writes ``OUT.pt2``: the
model rebuilt from smaller layers (:mod:`lcdsl.deploy`) as a ``torch.export`` program, and prints
its speed against the original layers. ``--format onnx`` writes the deployed model as one ONNX file
instead (:mod:`lcdsl.cli.export_onnx`; default ``DIR/model.onnx``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from lcdsl.cli.export_onnx import check_options, write_onnx
from lcdsl.cli.train import build_model
from lcdsl.deploy import deploy
from lcdsl.errors import EngineError, LcdslError, ModelError
from lcdsl.report.console import console, human_bits
from lcdsl.store.lcz import EXPORT_FORMATS, ExportSizes, export_model, load_lcz, read_manifest
from lcdsl.store.model import bind_saved_spec, load_compressed, read_compressed
from lcdsl.store.probe import PROBE_SIZE, check_probe, model_outputs
from lcdsl.store.safetensors_file import load_safetensors, read_safetensors_manifest
from lcdsl.training.batch import forward
from lcdsl.training.data import DATASETS, Dataset, load_data
from lcdsl.training.zoo import MODELS

__all__ = ["add_parser", "run", "size_table", "median_latency", "FILES"]

FILES: dict[str, tuple[str, Any, Any]] = {
    "lcz": (".lcz", load_lcz, read_manifest),
    "safetensors": (".safetensors", load_safetensors, read_safetensors_manifest),
}
"""Per ``--format``: the file's suffix, its loader ``(path, model)`` and its manifest reader."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="write a run's compressed model as one compact .lcz file",
        description="Encode the compressed model of DIR (from 'lcdsl compress') compactly: codebooks "
        "with bit-packed assignments, sparse values with packed indices or bitmasks, low-rank factors, "
        "dense leftovers, and a manifest with the spec, the plan and versions. The file is loaded back "
        "and checked before the command ends.",
    )
    parser.add_argument("dir", metavar="DIR", help="the output folder of 'lcdsl compress' (holds compressed.pt)")
    parser.add_argument("--out", metavar="PATH", help="the file to write (default DIR/model.lcz, .safetensors or .onnx)")
    parser.add_argument(
        "--format", choices=(*EXPORT_FORMATS, "onnx"), default="lcz",
        help="lcz (lcdsl's own, smallest) or safetensors (any safetensors reader opens it; docs/deploy.md has "
        "its tensor names); default lcz; onnx: the deployed model as ONNX (codebook weights as uint8 codes and "
        "a codebook, low-rank as two layers, pruned units removed), checked in onnxruntime (needs pip install "
        "'lcdsl[onnx]')",
    )  # fmt: skip
    parser.add_argument(
        "--model", metavar="M",
        help="the model: built-in, or module:function (runs that module's code); default: the run's, if built in",
    )  # fmt: skip
    parser.add_argument(
        "--data", metavar="D",
        help="the data set that sizes the model (module:function runs that module's code); default: the run's, "
        "if built in",
    )  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR", help="folder of IDX files for fashion-mnist / mnist")
    parser.add_argument(
        "--deploy", action="store_true",
        help="also write OUT.pt2: the model rebuilt from smaller layers (low-rank layers as two, pruned "
        "units removed) as a torch.export program, and time it",
    )  # fmt: skip
    parser.add_argument(
        "--deflate", action="store_true", help="deflate each field where that helps (smaller than the reported bits)"
    )
    parser.set_defaults(func=run)


def size_table(sizes: ExportSizes, manifest: dict[str, Any]) -> Table:
    """Per task the reported bits and the encoded bytes, then the dense leftovers, the buffers and totals."""
    table = Table(title="export", title_justify="left")
    for column in ("task", "operator", "reported", "encoded", "encoder"):
        table.add_column(column, justify="left" if column in ("task", "operator", "encoder") else "right")
    rows = {row["task"]: row for row in manifest["plan"]["tasks"]}
    for task in manifest["tasks"]:
        encoded = sum(field["length"] for field in task["fields"].values())
        bits = rows[task["name"]]["bits_after"]
        table.add_row(task["name"], rows[task["name"]]["operator"], human_bits(bits), human_bits(8 * encoded),
                      task["encoder"])  # fmt: skip
    if manifest["dense"]:
        encoded = sum(field["length"] for field in manifest["dense"].values())
        reported = manifest["plan"]["dense_params"] * 32
        table.add_row("dense: " + ", ".join(manifest["dense"]), "(32-bit)", human_bits(reported),
                      human_bits(8 * encoded), "raw", end_section=not manifest.get("buffers"))  # fmt: skip
    if manifest.get("buffers"):
        encoded = sum(field["length"] for field in manifest["buffers"].values())
        table.add_row(f"buffers: {len(manifest['buffers'])}", "(as they are)", human_bits(8 * sizes.buffer_bytes),
                      human_bits(8 * encoded), "raw", end_section=True)  # fmt: skip
    table.add_row("total", "", human_bits(round(8 * sizes.predicted_bytes)), human_bits(8 * sizes.payload_bytes),
                  f"{100 * sizes.overhead:+.2f}%", style="bold")  # fmt: skip
    return table


def median_latency(module: torch.nn.Module, x: torch.Tensor, repeats: int = 50) -> float:
    """Median seconds of one call of ``module`` on ``x`` (after a warm-up)."""
    times = []
    with torch.inference_mode():
        for i in range(repeats + 5):
            start = time.perf_counter()
            module(x)
            if i >= 5:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _deploy(model: torch.nn.Module, plan: Any, thetas: dict, x: torch.Tensor, out: Path) -> None:
    show = console()
    model.eval()
    deployment = deploy(model, plan, thetas, example=x)
    fast = deployment.module.eval()
    for line in deployment.lines():
        show.print(f"deploy: {line}", highlight=False)
    with torch.inference_mode():
        gap = float((model(x) - fast(x)).abs().max())
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(fast, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out)
    except Exception as exc:  # torch.export refuses many dynamic models
        raise EngineError(f"cannot write {out}: torch.export failed: {exc}") from exc
    before, after = median_latency(model, x), median_latency(fast, x)
    show.print(
        f"deployed model → {out}: largest output difference {gap:.2g}; a batch of {x.shape[0]} takes "
        f"{1e6 * after:.0f} µs instead of {1e6 * before:.0f} µs (×{before / after:.2f}, median of 50)"
    )


def _check_file(path: Path, out: Path, state: dict[str, Any], model: torch.nn.Module, fresh: torch.nn.Module,
                data: Any, data_dir: str | None, load: Any = load_lcz) -> str:  # fmt: skip
    """Load the written file into ``fresh`` (with ``load``) and check it; returns what was checked,
    for the summary.

    Raises:
        ModelError: the file's model is not the one ``lcdsl compress`` evaluated."""
    load(path, fresh)
    probe = state.get("probe")
    if isinstance(probe, dict):
        if probe.get("data") == data.name and probe.get("seed") is not None:
            data = load_data(data.name, data_dir=data_dir, seed=int(probe["seed"]))
        gap = check_probe(fresh, probe, data.x_test, where=str(out))
        inputs = f"on {probe['count']} test inputs"
        if gap == 0:
            return f"loaded back: outputs equal the compressed model's {inputs}"
        return f"loaded back: outputs {inputs} within {gap:.2g} of the compressed model's"
    batch = data.x_test[:PROBE_SIZE] if isinstance(data, Dataset) else data.first_batch(PROBE_SIZE)
    model.eval(), fresh.eval()
    with torch.inference_mode():
        if not torch.equal(model_outputs(forward(model, batch)), model_outputs(forward(fresh, batch))):
            raise ModelError(f"{out}: the model loaded back gives other outputs than the model in compressed.pt")
    return "loaded back: outputs equal those of compressed.pt (it records no outputs of the model compress evaluated)"


def recorded_names(
    folder: Path, args: argparse.Namespace, *, recorded_model: Any, recorded_data: Any
) -> tuple[str, str]:
    """The model and data set to rebuild: ``--model`` / ``--data`` when given, else the names the
    run folder records, when they are built-ins (a file never chooses code to import).

    Raises:
        ModelError: a recorded name is not a built-in and the command line gives none; the message
            is the command line to give instead."""
    model = args.model or (recorded_model if recorded_model is not None else "lenet300")
    data = args.data or (recorded_data if recorded_data is not None else "digits")
    foreign = [
        f"{what} {name!r}" for what, name, given, builtins in (
            ("model", model, args.model, MODELS), ("data", data, args.data, DATASETS),
        ) if not given and not (isinstance(name, str) and name in builtins)
    ]  # fmt: skip
    if foreign:
        words = ["lcdsl", "export", str(folder), "--model", str(model), "--data", str(data)]
        fmt = getattr(args, "format", "lcz")
        options = (("--out", args.out), ("--data-dir", args.data_dir), ("--format", fmt if fmt != "lcz" else None))
        for option, value in options:
            words += [option, str(value)] if value else []
        words += [flag for flag, on in (("--deploy", args.deploy), ("--deflate", args.deflate)) if on]
        raise ModelError(
            f"{folder} records {' and '.join(foreign)}, which {'is' if len(foreign) == 1 else 'are'} not built in; "
            "lcdsl never imports code a file names. If you trust that code, name it yourself:\n"
            f"  {shlex.join(words)}"
        )
    return str(model), str(data)


def run(args: argparse.Namespace) -> int:
    """Export a run's compressed model; returns the exit code."""
    show = console()
    folder = Path(args.dir)
    if getattr(args, "format", "lcz") == "onnx":
        check_options(args)
    compressed_path = folder / "compressed.pt"
    state = read_compressed(compressed_path)
    report: Any = {}
    if (folder / "report.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    model_name, data_name = recorded_names(
        folder, args, recorded_model=state.get("model"),
        recorded_data=report.get("data") if isinstance(report, dict) else None,
    )  # fmt: skip
    data = load_data(data_name, data_dir=args.data_dir)
    model = build_model(model_name, data, seed=0)
    thetas = load_compressed(model, compressed_path)
    spec_text = str(state["spec"])
    plan = bind_saved_spec(spec_text, model, where=str(compressed_path))
    if getattr(args, "format", "lcz") == "onnx":
        return write_onnx(model, plan, thetas, data, Path(args.out) if args.out else folder / "model.onnx", spec_text)

    suffix, load, read = FILES[args.format]
    out = Path(args.out) if args.out else folder / f"model{suffix}"
    extra = {"data": data.name, "deploy": bool(args.deploy)}
    # written beside --out, checked, then renamed over it: a file that fails leaves the old one
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        sizes = export_model(model, plan, thetas, tmp, spec_text=spec_text, model_name=model_name,
                             extra=extra, deflate=args.deflate, format=args.format)  # fmt: skip
        fresh = build_model(model_name, data, seed=1)
        checked = _check_file(tmp, out, state, model, fresh, data, args.data_dir, load)
        manifest = read(tmp)
        os.replace(tmp, out)
    except LcdslError as exc:
        raise type(exc)(f"{exc}\n{out} was not written" + (" (the file already there is as it was)"
                                                             if out.exists() else "")) from exc  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    show.print(size_table(sizes, manifest))
    show.print(
        f"{out}: {sizes.file_bytes:,} bytes ({'header' if args.format != 'lcz' else 'manifest and header'} "
        f"{sizes.file_bytes - sizes.payload_bytes:,}); "
        f"dense storage {sizes.dense_bytes:,} bytes (×{sizes.dense_bytes / sizes.file_bytes:.1f}); {checked}"
    )
    if args.deploy:
        if not isinstance(data, Dataset):
            raise ModelError(f"--deploy traces the model on example inputs, and '{data.name}' is not in-memory tensors")
        _deploy(model, plan, thetas, data.x_test[:256], out.with_suffix(".pt2"))
    return 0
