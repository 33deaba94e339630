"""Deploying a compressed model: compact and smaller layers in torch, and ONNX files.

- :func:`deploy` (:mod:`.core`) takes a model that holds ``Δ(θ)`` (after
  :meth:`Engine.finalize`, :func:`lcdsl.store.model.load_compressed` or
  :func:`lcdsl.store.lcz.load_lcz`) and returns a copy in which quantized layers are codebook
  layers (packed codes and a codebook in memory), low-rank layers two thin ones, and units that
  do nothing are gone (:mod:`.units`), with a per-layer report of what changed, what was left as
  is and why, and the relative output differences.
- :func:`export_onnx` (:mod:`.onnx`) writes the deployed model as an ONNX file in which each
  quantized weight is its packed codes and codebook, expanded in the graph.

Example::

    from lcdsl.deploy import deploy

    deployed = deploy(model, plan, thetas, example=x)
    print("\\n".join(deployed.lines()))   # fc1: Linear(784→300) → CodebookLinear(784→300, k=2, 1-bit codes) …
    fast = deployed.module
"""

from lcdsl.deploy.core import (
    TOLERANCE,
    Change,
    Deployment,
    Kept,
    deploy,
    deployed_operator,
    describe_module,
    relative_difference,
)
from lcdsl.deploy.onnx import OnnxExport, export_onnx, run_onnx
from lcdsl.deploy.units import ELEMENTWISE, ConstantInputs, UnitCut

__all__ = [
    "Change", "Kept", "Deployment", "deploy", "deployed_operator", "describe_module", "relative_difference", "TOLERANCE", "ELEMENTWISE",
    "ConstantInputs", "UnitCut", "OnnxExport", "export_onnx", "run_onnx",
]  # fmt: skip
