"""Files: atomic writes, the saved compressed model (``compressed.pt``) and the ``.lcz`` export.

Everything loads with ``torch.load(weights_only=True)`` or from plain bytes: no pickled code.
"""

from lcdsl.store.atomic import check_writable, load_checkpoint, remove_stale_temporaries, save_atomic, write_atomic
from lcdsl.store.lcz import ExportSizes, export_model, load_lcz, read_manifest
from lcdsl.store.model import COMPRESSED_FORMAT, compressed_state, load_compressed, write_theta

__all__ = [
    "write_atomic", "save_atomic", "load_checkpoint", "check_writable", "remove_stale_temporaries",
    "COMPRESSED_FORMAT", "compressed_state", "load_compressed", "write_theta",
    "ExportSizes", "export_model", "load_lcz", "read_manifest",
]  # fmt: skip
