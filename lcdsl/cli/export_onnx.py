"""``lcdsl export DIR --format onnx``: the deployed model of a run as one ONNX file.

The model rebuilt from ``DIR/compressed.pt`` is deployed (:func:`lcdsl.deploy.deploy`: codebook
layers, two-layer low-rank, units removed) and written by :func:`lcdsl.deploy.export_onnx`, which
first runs the file in onnxruntime on the probe inputs against the deployed torch model. The
command prints the per-layer report, then the file's size against the dense model's ONNX export
and the differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lcdsl.deploy import export_onnx
from lcdsl.errors import Diagnostic, SpecError
from lcdsl.report.console import console
from lcdsl.store.probe import PROBE_SIZE
from lcdsl.training.data import Dataset

__all__ = ["example_inputs", "write_onnx", "check_options"]


def check_options(args: Any) -> None:
    """Refuse the ``.lcz`` options with ``--format onnx`` rather than ignore them.

    Raises:
        SpecError: ``--deploy`` or ``--deflate`` is given (code ``bad-option``)."""
    given = [flag for flag, on in (("--deploy", args.deploy), ("--deflate", args.deflate)) if on]
    if given:
        message = (f"{' and '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the .lcz file; "
                   "--format onnx writes the deployed model itself")  # fmt: skip
        raise SpecError(Diagnostic(message, code="bad-option"), filename="command line")


def example_inputs(data: Any, count: int = PROBE_SIZE) -> Any:
    """The first ``count`` test inputs of an in-memory data set, else the first batch of ``data``."""
    return data.x_test[:count] if isinstance(data, Dataset) else data.first_batch(count)


def write_onnx(model: torch.nn.Module, plan: Any, thetas: dict, data: Any, out: Path, spec_text: str) -> int:
    """Deploy, export, check and report; returns the exit code.

    Raises:
        MissingExtraError: the extra ``onnx`` is not installed.
        EngineError: the export fails or onnxruntime's outputs differ from torch's."""
    show = console()
    model.eval()
    example = example_inputs(data)
    result = export_onnx(model, plan, thetas, example, out, spec_text=spec_text)
    for line in result.deployment.lines():
        show.print(f"deploy: {line}", highlight=False)
    count = next(iter(example.values())).shape[0] if isinstance(example, dict) else example.shape[0]
    dense = ""
    if result.dense_bytes:
        dense = f"; the dense model's ONNX export is {result.dense_bytes:,} bytes (×{result.dense_bytes / result.file_bytes:.1f})"
    show.print(
        f"{out}: {result.file_bytes:,} bytes{dense}; onnxruntime against the deployed torch model on {count} "
        f"inputs: largest difference {result.max_abs_difference:.2g}, relative {result.relative_difference:.1e}",
        highlight=False,
    )
    return 0
