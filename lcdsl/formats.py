"""The version of every file layout lcdsl writes, in one place. A leaf: it imports nothing.

Each file records its layout's version under the key ``"format"`` (the ``.lcz`` file also in its
first four bytes), and its reader refuses a version it does not know with an error that names
the version it expected. A change to a layout bumps its number here; a reader that still
understands an older version says so in its docstring.

========================  =====================================================================
constant                  the file, what it holds, who writes and reads it
========================  =====================================================================
:data:`STATE_FORMAT`      the engine state (``Engine.state_dict()``): μ schedule, step, θ and λ
                          per task, the plan's fingerprint, the tasks (operator spec text and
                          plugin) and settings (plain data) it fits, history.
                          :mod:`lcdsl.engine.state` writes and reads it; it travels inside
                          ``checkpoint.pt`` and the trainer-callback state.
:data:`DRIVER_FORMAT`     the trainer-callback state (``LCDriver.state_dict()``): the engine
                          state and the position inside the current L step.
                          :mod:`lcdsl.engine.driver`; Lightning keeps it in its checkpoint, the
                          Hugging Face callback as ``checkpoint-N/lcdsl_state.pt``.
:data:`CHECKPOINT_FORMAT` ``checkpoint.pt`` of ``lcdsl compress``: model and data names, the
                          spec's text, the model's ``state_dict``, the engine state, the L step's
                          data order, the reference's metadata, history.
                          :mod:`lcdsl.store.checkpoint` writes it after every LC step and reads
                          it back for ``--resume``.
:data:`SHARDED_FORMAT`    ``manifest.pt`` of a sharded checkpoint folder: the engine state
                          without λ, the world size that wrote it, the name of the
                          ``torch.distributed.checkpoint`` folder beside it that holds the
                          model's and λ's tensors (one per parameter, resharded on load).
                          :mod:`lcdsl.store.sharded` writes and reads it.
:data:`REFERENCE_FORMAT`  ``reference.pt`` (``lcdsl train``, or cached by ``lcdsl compress``):
                          model and data names, the model's ``state_dict``, recipe, per-epoch
                          history, test and train error. :mod:`lcdsl.store.checkpoint`.
:data:`COMPRESSED_FORMAT` ``compressed.pt``: the spec's text, per task its parameters, shapes,
                          operator (spec text and plugin) and θ (integer fields bit-packed),
                          the dense parameters, the buffers, and the model's outputs on a
                          probe batch. :mod:`lcdsl.store.model` (``lcdsl compress`` writes it,
                          ``lcdsl export`` and :func:`~lcdsl.store.load_compressed` read it).
:data:`LCZ_FORMAT`        the manifest of a ``.lcz`` file (``lcdsl export``): the same model as
                          ``compressed.pt``, θ bit-packed, with the plan, sizes and versions.
                          :mod:`lcdsl.store.lcz`; :data:`MAGIC` opens the file.
:data:`REPORT_FORMAT`     ``report.json``: every LC step's numbers, the plan, settings, sizes,
                          errors, versions. :mod:`lcdsl.report.run` writes it; ``lcdsl export``
                          reads its data name, ``lcdsl sweep`` its sizes and errors.
:data:`SWEEP_FORMAT`      ``sweep.json``: one row per run of a sweep (values, size, errors).
                          :mod:`lcdsl.report.sweep`.
:data:`ONNX_FORMAT`       the ``lcdsl.format`` entry of an ONNX file's metadata (``lcdsl export
                          --format onnx``): codebook layers as initializers ``NAME.packed``
                          (uint8 codes), ``NAME.codebook`` and ``NAME.divisors``, expanded in
                          the graph. :mod:`lcdsl.deploy.onnx` writes it; onnxruntime reads it.
========================  =====================================================================

:data:`SAFETENSORS_FORMAT`: the ``__metadata__`` of a ``.safetensors`` export (``lcdsl export
--format safetensors``): the same model as ``.lcz``, each field of θ a tensor, with the spec, the
plan, sizes and versions as text. :mod:`lcdsl.store.safetensors_file` writes and reads it.
"""

from __future__ import annotations

__all__ = [
    "STATE_FORMAT", "DRIVER_FORMAT", "CHECKPOINT_FORMAT", "SHARDED_FORMAT", "REFERENCE_FORMAT", "COMPRESSED_FORMAT",
    "LCZ_FORMAT", "MAGIC", "SAFETENSORS_FORMAT", "REPORT_FORMAT", "SWEEP_FORMAT", "ONNX_FORMAT",
]  # fmt: skip

STATE_FORMAT = 2
"""The engine state. 2: operators by spec text and plugin, settings as plain data (1 used
``repr``; it is refused: resume needs the same operators, and ``repr`` cannot say so)."""

DRIVER_FORMAT = 2
"""The trainer-callback state (:class:`~lcdsl.engine.driver.LCDriver`)."""

CHECKPOINT_FORMAT = 1
"""``checkpoint.pt``, the run checkpoint of ``lcdsl compress``."""

SHARDED_FORMAT = 1
"""``manifest.pt`` of a sharded (FSDP) checkpoint folder (:mod:`lcdsl.store.sharded`)."""

REFERENCE_FORMAT = 1
"""``reference.pt``, a reference model's weights and record."""

COMPRESSED_FORMAT = 3
"""``compressed.pt``. 3: θ's integer fields bit-packed by the ``.lcz`` codec (each task's
``"packed"`` names them), and the compressed model's outputs on a probe batch (``"probe"``) for
``lcdsl export``'s check. 2: operators by spec text and plugin, and the model's buffers (1:
operators by ``repr``, no buffers). Both still read."""

LCZ_FORMAT = 2
"""The ``.lcz`` manifest. 2: operators by spec text and plugin, and the model's buffers (1:
operators by ``repr``, no buffers; still read)."""

MAGIC = b"LCZ1"
"""The first four bytes of every ``.lcz`` file (the binary frame, unchanged since format 1)."""

SAFETENSORS_FORMAT = 1
"""The ``__metadata__`` of a ``.safetensors`` export, under its key ``"format"`` (a string, as
safetensors metadata values are)."""

REPORT_FORMAT = 1
"""``report.json``."""

SWEEP_FORMAT = 1
"""``sweep.json``."""

ONNX_FORMAT = 1
"""The layout of lcdsl's ONNX files (``metadata_props`` key ``lcdsl.format``)."""
