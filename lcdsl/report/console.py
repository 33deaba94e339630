"""The terminal: one rich console for tables and progress, plain when output is not a terminal."""

from __future__ import annotations

import functools
import sys

from rich.console import Console

__all__ = ["console", "human_bits"]


@functools.cache
def console() -> Console:
    """The shared console on stdout; wide and colourless when stdout is a file or pipe.

    Markup is off: what it prints is full of user text in square brackets (``[fc1, fc2]``
    joint groups, paths, sweep labels) that rich would otherwise take for style tags and drop.
    Styled output asks for markup per call (``print(..., markup=True)``) and escapes user text.
    """
    if sys.stdout.isatty():
        return Console(markup=False)
    return Console(width=160, no_color=True, highlight=False, soft_wrap=True, markup=False)


def human_bits(bits: float) -> str:
    """Bits as a readable size: ``1.3 MB``, ``52.0 kB``, ``812 B`` (1 kB = 1000 bytes)."""
    size = bits / 8
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
