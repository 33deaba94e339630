"""lcdsl: a declarative, plugin-based model-compression language for PyTorch.

Write which parameters get which compression in a ``.lc`` spec, bind it to a model, and run the
Learning-Compression algorithm.
"""

from lcdsl.errors import DataError, EngineError, LcdslError, ModelError, PluginError, SpecError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "LcdslError",
    "SpecError",
    "PluginError",
    "ModelError",
    "DataError",
    "EngineError",
]
