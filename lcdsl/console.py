"""The terminal: one rich console for tables and progress, plain when output is not a terminal."""

from __future__ import annotations

import functools
import sys

from rich.console import Console

__all__ = ["console", "human_bits"]


@functools.cache
def console() -> Console:
    """The shared console on stdout; wide and colourless when stdout is a file or pipe."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=160, no_color=True, highlight=False, soft_wrap=True)


def human_bits(bits: float) -> str:
    """Bits as a readable size: ``1.3 MB``, ``52.0 kB``, ``812 B`` (1 kB = 1000 bytes)."""
    size = bits / 8
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
