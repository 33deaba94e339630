"""Errors: every failure a user can cause is one of these, never a raw traceback.

A :class:`SpecError` carries one or more :class:`Diagnostic` s, each pointing at a
:class:`Span` of the spec's source, and renders them the way compilers do::

    specs/bad.lc:3:7: error: unknown operator 'qaunt'; did you mean 'quant'?
      fc1 : qaunt(k=2)
            ^^^^^^^^^^

All other errors (a model that cannot be built, a dataset that is missing, a plugin that is
broken, a run that diverged) derive from :class:`LcdslError` too, so the command line can
print them without a traceback.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "Span",
    "Diagnostic",
    "LcdslError",
    "SpecError",
    "PluginError",
    "ModelError",
    "DataError",
    "EngineError",
    "did_you_mean",
    "exception_message",
    "render_diagnostic",
]


@attrs.frozen
class Span:
    """A region of a spec's source text. Lines and columns are 1-based; ends are exclusive."""

    line: int
    """Line of the first character."""
    column: int
    """Column of the first character."""
    end_line: int
    """Line of the character after the last one."""
    end_column: int
    """Column of the character after the last one."""
    start: int = 0
    """Offset of the first character in the source."""
    end: int = 0
    """Offset of the character after the last one."""


@attrs.frozen
class Diagnostic:
    """One message about one place in a spec."""

    message: str
    """What is wrong, as one sentence without a trailing period."""
    span: Span | None = None
    """Where it is wrong; None when the message concerns the whole file."""
    hint: str | None = None
    """An optional second line saying how to fix it."""


MAX_RENDERED = 50
"""The most diagnostics :meth:`SpecError.render` prints; the rest are counted."""


class LcdslError(Exception):
    """Base of every error lcdsl raises on purpose. The command line prints these without a
    traceback (exit code 1) unless ``--debug`` is given."""

    exit_code: int = 1


class SpecError(LcdslError, ValueError):
    """One or more problems in a spec, each with a place in the source (exit code 2)."""

    exit_code = 2

    def __init__(
        self,
        diagnostics: Diagnostic | str | Sequence[Diagnostic],
        *,
        source: str = "",
        filename: str = "<spec>",
    ) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.source = source
        self.filename = filename
        super().__init__(self.render())

    def with_source(self, source: str, filename: str) -> SpecError:
        """This error, attached to the spec text its spans point into."""
        return SpecError(self.diagnostics, source=source, filename=filename)

    def render(self, color: bool = False) -> str:
        """Every diagnostic as ``file:line:col: error: message``, the line and carets (the first
        :data:`MAX_RENDERED` of them, then how many more there are)."""
        shown = [render_diagnostic(d, self.source, self.filename, color=color) for d in self.diagnostics[:MAX_RENDERED]]
        if len(self.diagnostics) > MAX_RENDERED:
            shown.append(f"{self.filename}: and {len(self.diagnostics) - MAX_RENDERED} more errors")
        return "\n".join(shown)

    def __str__(self) -> str:
        return self.render()


class PluginError(LcdslError):
    """A plugin could not be loaded, or an operator it provides misbehaved."""


class ModelError(LcdslError):
    """A model could not be built, loaded, or does not fit a checkpoint."""


class DataError(LcdslError):
    """A dataset is missing or malformed."""


class EngineError(LcdslError):
    """An LC run cannot go on (diverged, inconsistent state, refused resume)."""


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``"; did you mean 'x'?"`` suffix naming the closest candidates, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = ", ".join(f"'{c}'" for c in close)
    return f"; did you mean {quoted}?"


_RED = "\x1b[1;31m"
_BOLD = "\x1b[1m"
_CYAN = "\x1b[1;36m"
_RESET = "\x1b[0m"


@functools.lru_cache(maxsize=4)
def _source_lines(source: str) -> list[str]:
    """The source's lines, split once for all the diagnostics of one file."""
    return source.split("\n")


def render_diagnostic(diag: Diagnostic, source: str, filename: str, color: bool = False) -> str:
    """Render one diagnostic: the location line, then the source line with carets."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    if diag.span is None:
        head = f"{paint(filename + ':', _BOLD)} {paint('error:', _RED)} {diag.message}"
        lines = [head]
    else:
        span = diag.span
        where = f"{filename}:{span.line}:{span.column}:"
        lines = [f"{paint(where, _BOLD)} {paint('error:', _RED)} {diag.message}"]
        src_lines = _source_lines(source)
        if 1 <= span.line <= len(src_lines):
            text = src_lines[span.line - 1].expandtabs(1)
            lines.append(f"  {text}")
            end_col = span.end_column if span.end_line == span.line else len(text) + 1
            width = max(1, end_col - span.column)
            pad = " " * (span.column - 1)
            lines.append("  " + pad + paint("^" * width, _RED))
    if diag.hint:
        lines.append(f"  {paint('hint:', _CYAN)} {diag.hint}")
    return "\n".join(lines)


def exception_message(exc: Exception) -> str:
    """An exception's message, without the noise attrs' own TypeErrors carry."""
    if len(exc.args) > 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # attrs' validators add the attribute and the bound to args
    text = str(exc)
    if isinstance(exc, TypeError) and "__init__()" in text:
        text = text.split("__init__() ", 1)[1]
    return text
