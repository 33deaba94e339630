"""Files: atomic writes, the saved compressed model (``compressed.pt``), the ``.lcz`` export, and
the run checkpoint and reference file.

- :mod:`.atomic`: every file written whole or not at all;
- :mod:`.model`: the saved model (θ per task, dense parameters, buffers) behind ``compressed.pt``
  and ``.lcz``;
- :mod:`.fields`: θ, dense parameters and buffers as encoded fields, shared by both compact files;
- :mod:`.lcz`: the compact ``.lcz`` file;
- :mod:`.safetensors_file`: the same fields as a ``.safetensors`` file;
- :mod:`.probe`: the compressed model's outputs on a probe batch, which ``lcdsl export`` checks;
- :mod:`.checkpoint`: ``checkpoint.pt`` (resuming a run) and ``reference.pt``.

Every layout's version is in :mod:`lcdsl.formats`. Everything loads with
``torch.load(weights_only=True)`` or from plain bytes: no pickled code.
"""

from lcdsl.store.atomic import check_writable, load_checkpoint, remove_stale_temporaries, save_atomic, write_atomic
from lcdsl.store.checkpoint import (
    CHECKPOINT_FORMAT,
    REFERENCE_FORMAT,
    load_reference,
    model_weights,
    read_run_checkpoint,
    reference_record,
    restore_run_checkpoint,
    run_checkpoint,
)  # fmt: skip
from lcdsl.store.lcz import EXPORT_FORMATS, LCZ_FORMAT, MAGIC, ExportSizes, export_model, load_lcz, read_manifest
from lcdsl.store.model import (
    COMPRESSED_FORMAT,
    compressed_state,
    load_compressed,
    model_record,
    read_compressed,
    restore_model,
    write_theta,
)  # fmt: skip
from lcdsl.store.probe import check_probe, probe_outputs
from lcdsl.store.safetensors_file import SAFETENSORS_FORMAT, load_safetensors, read_safetensors_manifest

__all__ = [
    "write_atomic", "save_atomic", "load_checkpoint", "check_writable", "remove_stale_temporaries",
    "COMPRESSED_FORMAT", "compressed_state", "load_compressed", "read_compressed", "model_record", "restore_model",
    "write_theta", "probe_outputs", "check_probe",
    "LCZ_FORMAT", "MAGIC", "EXPORT_FORMATS", "ExportSizes", "export_model", "load_lcz", "read_manifest",
    "SAFETENSORS_FORMAT", "load_safetensors", "read_safetensors_manifest",
    "CHECKPOINT_FORMAT", "REFERENCE_FORMAT", "model_weights", "run_checkpoint", "read_run_checkpoint",
    "restore_run_checkpoint", "reference_record", "load_reference",
]  # fmt: skip
