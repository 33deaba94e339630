"""Drive the LC engine from someone else's training loop: Lightning (:mod:`.lightning`) and the
Hugging Face ``Trainer`` (:mod:`.hf`). Both are thin callbacks over
:class:`lcdsl.engine.driver.LCDriver`, which knows no trainer."""

from lcdsl.engine.driver import DriverCallback, LCDriver, Unit

__all__ = ["LCDriver", "DriverCallback", "Unit"]
