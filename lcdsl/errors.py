"""Errors: every failure a user can cause is one of these, never a raw traceback.

A :class:`SpecError` carries one or more :class:`Diagnostic` s, each pointing at a
:class:`Span` of the spec's source, and renders them the way compilers do::

    specs/bad.lc:3:7: error: unknown operator 'qaunt'; did you mean 'quant'?
      fc1 : qaunt(k=2)
            ^^^^^^^^^^

Every diagnostic has a stable :attr:`Diagnostic.code`, a few kebab-case words naming the kind
of problem (``unknown-operator``, ``missing-paren``): the message may be reworded, the code is
not. :data:`CODES` lists every code with its meaning (docs/language.md repeats the table).
Diagnostics are gathered by one :class:`Diagnostics` collector per check and raised together
as one :class:`SpecError`, sorted by position: whole-file diagnostics (no span) first, then by
line and column, in the order they were found where two share a place.

All other errors (a model that cannot be built, a dataset that is missing, a plugin that is
broken, a run that diverged) derive from :class:`LcdslError` too, so the command line can
print them without a traceback.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Iterator
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "CODES",
    "Span",
    "Diagnostic",
    "Diagnostics",
    "LcdslError",
    "SpecError",
    "PluginError",
    "ModelError",
    "DataError",
    "EngineError",
    "BudgetError",
    "MissingExtraError",
    "sort_diagnostics",
    "did_you_mean",
    "exception_message",
    "render_diagnostic",
]


CODES = MappingProxyType({
    # reading the file
    "unreadable": "the spec file cannot be read",
    "too-long": "the spec has more characters (or its file more bytes) than a spec may have",
    "not-text": "the spec holds a NUL character or is not UTF-8 text",
    # syntax: the first error of a file that does not parse
    "syntax": "a syntax error that no more specific code covers (\"unexpected X; expected …\")",
    "bad-character": "a character the language has no use for",
    "unterminated-string": "a string without its closing quote on the same line",
    "percent-after-space": "a space between a number and its percent sign",
    "missing-type": "'@' without a module class name after it",
    "too-deep": "brackets and parentheses nested deeper than the parser allows",
    "bad-statement": "a line that starts with neither selectors nor a setting name",
    "missing-colon": "selectors without ':' after them",
    "equals-for-colon": "a rule written with '=' instead of ':'",
    "unmatched-closer": "a ')' or ']' that closes nothing",
    "missing-selector": "a ',' or '!' without a selector after it",
    "nested-group": "a joint group inside a joint group",
    "empty-group": "a joint group with no selector in its brackets",
    "missing-bracket": "a joint group or a list without its closing ']'",
    "missing-call": "no operator call after ':' or '+'",
    "call-without-parens": "an operator name without the parentheses of a call",
    "trailing-text": "more text after a complete operator call or setting value",
    "comma-for-plus": "operators joined with ',' instead of '+'",
    "missing-paren": "a call without its closing ')'",
    "missing-argument": "a ',' in a call without an argument after it",
    "missing-value": "a '=' or a ',' in a list without a value after it",
    "double-equals": "'==' where one '=' is meant",
    "missing-name": "an argument written '=value' without its name",
    "list-without-brackets": "several values after '=' without the brackets of a list",
    # after parsing: every problem of the file at once
    "non-finite": "a number that is not finite (nan, inf, or a float too large such as 1e999)",
    "number-too-long": "a number with more digits than a spec may have",
    "bad-escape": "an unknown escape sequence in a string",
    "spaced-type-filter": "a type filter written apart from its glob ('layer4.** @Conv2d' for 'layer4.**@Conv2d')",
    "bad-setting-name": "a setting name that is a glob or a dotted name (a rule meant with '=')",
    "repeated-setting": "one setting given on two lines",
    "empty-range": "a range of choices whose last value is below its first ('8..1')",
    "unknown-unit": "a budget amount without a unit, or with one the language does not know",
    "bad-budget": "a budget of zero or less",
    "repeated-budget": "'within …' written twice on one rule",
    # settings
    "unknown-setting": "a setting name the run does not know",
    "bad-value": "a value that its setting or operator argument refuses",
    # operators
    "unknown-operator": "an operator name no installed plugin provides",
    "unknown-argument": "an argument the operator does not take",
    "positional-argument": "an operator argument without its name",
    "repeated-argument": "one argument given twice in one call",
    "empty-expression": "a right-hand side without an operator call",
    "not-a-choice": "a range or 'auto' given to an argument that is not an integer size the operator can choose",
    "range-needs-budget": "a range or 'auto' on a rule without 'within …' to choose by",
    "budget-without-choice": "'within …' on a rule whose calls offer nothing to choose",
    # binding to a model
    "no-rules": "a spec without rules, so nothing would be compressed",
    "no-match": "a selector that matches no parameter (or no module type) of the model",
    "no-weight": "a selector naming a module that has no weight of its own (a container: its children are named)",
    "names-buffer": "a selector naming buffers (BatchNorm's running statistics, …), which are never compressed",
    "repeated-name": "a joint group's name that another task of the plan already has",
    "all-excluded": "a rule or joint group whose tensors are all excluded",
    "claimed-twice": "a tensor claimed by two rules, or twice within one rule",
    "mixed-group": "a joint group whose tensors differ in dtype or device",
    "does-not-fit": "an operator that cannot take its task's tensors (their count, shape or size)",
    "no-layout": "a structured operator on a module type whose output and input axes no plugin declares",
    "broken-operator": "a plugin's operator (constructor, view, resolve, storage or layout) raised something "
    "other than ValueError/TypeError: a bug in the plugin, named in the message",
    "budget-too-small": "a budget below what the cheapest choices of its rule's tasks already take",
    "unmeasurable": "a budget in a unit that one of its rule's operators cannot be measured in",
    "flops-need-example": "a flops budget on a convolution bound without an example input to count its output positions",
    "integer-parameter": "a rule naming a parameter of an integer or bool dtype, which the L step cannot train",
    # warnings: the plan is made, and Plan.warnings holds these
    "norm-parameters": "a wildcard selector also claims normalization-layer γ/β (a warning: the plan is made)",
    "frozen-parameter": "a rule naming a parameter with requires_grad=False: only compressed, never trained "
    "(a warning: the plan is made)",
    # outside a spec file
    "unwritable": "a spec built in code that has no spelling in the language (lcdsl fmt)",
    "bad-option": "a command-line value that overrides a setting and is refused",
    "bad-variation": "a --vary option that names no rule or argument, or one already varied",
    "other": "a spec error given as a plain message, without a more specific code",
})
"""Every :attr:`Diagnostic.code`, with what it means. Codes are stable: tests and tools may
match them; a new kind of problem gets a new code here (and in docs/language.md)."""

_CODE_SHAPE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*\Z")


def _known_code(instance: Any, attribute: Any, code: str) -> None:
    if not isinstance(code, str) or not _CODE_SHAPE.match(code):
        raise ValueError(f"a diagnostic code is kebab-case words, got {code!r}")
    if code not in CODES:
        raise ValueError(f"unknown diagnostic code {code!r}: add it to lcdsl.errors.CODES")


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
    code: str = attrs.field(kw_only=True, validator=_known_code)
    """The kind of problem, one of :data:`CODES` (``unknown-operator``); stable where the
    message may be reworded."""
    severity: str = attrs.field(default="error", kw_only=True, validator=attrs.validators.in_(("error", "warning")))
    """``"error"`` (raised in a :class:`SpecError`) or ``"warning"`` (kept in ``Plan.warnings``:
    the plan is made, the message says what it will do that may not be meant)."""


def _position(diagnostic: Diagnostic) -> tuple[int, int, int]:
    """The sort key of a diagnostic: whole-file ones (no span) first, then line and column."""
    span = diagnostic.span
    return (0, 0, 0) if span is None else (1, span.line, span.column)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """``diagnostics`` by position (:func:`_position`); those at one place keep their order."""
    return sorted(diagnostics, key=_position)


class Diagnostics:
    """The collector of one check's diagnostics: add them as they are found, raise them together.

    Example::

        diags = Diagnostics()
        diags.add("unknown-operator", "unknown operator 'qaunt'", call.span, hint="operators: …")
        diags.raise_if_any(source=spec.source, filename=spec.filename)
    """

    def __init__(self, diagnostics: Iterable[Diagnostic] = ()) -> None:
        self._items: list[Diagnostic] = list(diagnostics)

    def add(self, code: str, message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
        """Record one problem; returns the diagnostic made."""
        diagnostic = Diagnostic(message, span, hint, code=code)
        self._items.append(diagnostic)
        return diagnostic

    def extend(self, diagnostics: Iterable[Diagnostic] | SpecError) -> None:
        """Record diagnostics made elsewhere (another collector's, or a SpecError's)."""
        if isinstance(diagnostics, SpecError):
            diagnostics = diagnostics.diagnostics
        self._items.extend(diagnostics)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Diagnostics({self._items!r})"

    @property
    def codes(self) -> list[str]:
        """The code of each diagnostic, in the order they were added."""
        return [d.code for d in self._items]

    def error(self, *, source: str = "", filename: str = "<spec>") -> SpecError:
        """One SpecError holding every diagnostic, sorted by position."""
        return SpecError(self._items, source=source, filename=filename)

    def raise_if_any(self, *, source: str = "", filename: str = "<spec>") -> None:
        """Raise :meth:`error` when anything was added; return otherwise."""
        if self._items:
            raise self.error(source=source, filename=filename)


MAX_RENDERED = 50
"""The most diagnostics :meth:`SpecError.render` prints; the rest are counted."""


class LcdslError(Exception):
    """Base of every error lcdsl raises on purpose. The command line prints these without a
    traceback (exit code 1) unless ``--debug`` is given."""

    exit_code: int = 1


class SpecError(LcdslError, ValueError):
    """One or more problems in a spec, each with a place in the source (exit code 2).

    ``diagnostics`` are kept sorted by position (whole-file ones first, then by line and
    column); a plain string becomes one diagnostic of code ``other``."""

    exit_code = 2

    def __init__(
        self,
        diagnostics: Diagnostic | str | Iterable[Diagnostic],
        *,
        source: str = "",
        filename: str = "<spec>",
    ) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics, code="other")]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = sort_diagnostics(diagnostics)
        self.source = source
        self.filename = filename
        super().__init__(self.render())

    @property
    def codes(self) -> list[str]:
        """The code of each diagnostic, in order (see :data:`CODES`)."""
        return [d.code for d in self.diagnostics]

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


class BudgetError(LcdslError):
    """A budget (``within 40kB``) that no choice of its tasks' options meets: even the cheapest
    option of every task costs more than the limit. The message names the budget, the cheapest
    total and the limit."""


class MissingExtraError(LcdslError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``"; did you mean 'x'?"`` suffix naming the closest candidates, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = ", ".join(f"'{c}'" for c in close)
    return f"; did you mean {quoted}?"


_RED = "\x1b[1;31m"
_YELLOW = "\x1b[1;33m"
_BOLD = "\x1b[1m"
_CYAN = "\x1b[1;36m"
_RESET = "\x1b[0m"


@functools.lru_cache(maxsize=4)
def _source_lines(source: str) -> list[str]:
    """The source's lines, split once for all the diagnostics of one file."""
    return source.split("\n")


def escape_controls(text: str) -> str:
    """``text`` with terminal control characters shown as escapes (``\x1b`` for ESC), so a spec
    cannot move the cursor, recolour or retitle the terminal an error is printed on."""
    return "".join(
        ch if not _is_control(ch) else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def _is_control(ch: str) -> bool:
    code = ord(ch)
    # C0 (but tab), DEL, C1, and the bidirectional overrides that reorder what a terminal shows
    return (code < 0x20 and ch != "\t") or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069


def render_diagnostic(diag: Diagnostic, source: str, filename: str, color: bool = False) -> str:
    """Render one diagnostic: the location line, then the source line with carets.

    Control characters in the source line, the message, the hint and the file name are shown
    escaped (:func:`escape_controls`); the carets stay under what they point at."""
    filename = escape_controls(filename)
    diag = attrs.evolve(
        diag, message=escape_controls(diag.message), hint=escape_controls(diag.hint) if diag.hint else diag.hint
    )

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    level = paint(diag.severity + ":", _RED if diag.severity == "error" else _YELLOW)
    if diag.span is None:
        lines = [f"{paint(filename + ':', _BOLD)} {level} {diag.message}"]
    else:
        span = diag.span
        where = f"{filename}:{span.line}:{span.column}:"
        lines = [f"{paint(where, _BOLD)} {level} {diag.message}"]
        src_lines = _source_lines(source)
        if 1 <= span.line <= len(src_lines):
            raw = src_lines[span.line - 1].expandtabs(1)
            text = escape_controls(raw)
            lines.append(f"  {text}")
            end_col = span.end_column if span.end_line == span.line else len(raw) + 1
            start = span.column - 1
            width = max(1, len(escape_controls(raw[start : end_col - 1])))
            pad = " " * len(escape_controls(raw[:start]))
            lines.append("  " + pad + paint("^" * width, _RED if diag.severity == "error" else _YELLOW))
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
