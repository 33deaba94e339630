"""The spec: what a ``.lc`` file says, as frozen attrs objects with source spans.

A parsed spec equals one built in code: spans are excluded from equality. Values are plain
Python (``int``, ``float``, ``bool``, ``str``, tuples for lists) plus :class:`Percent` and
:class:`Call`, so a spec is data and never code.

Example::

    spec = Spec(statements=(
        Rule(selectors=(NameSelector("fc1"),), terms=(Call("prune", (Argument("l0", Percent(5)),)),)),
    ))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import attrs

from lcdsl.errors import Span

if TYPE_CHECKING:
    import torch

    from lcdsl.plan.model import Plan
    from lcdsl.plugins.registry import Registry

__all__ = [
    "Percent",
    "Range",
    "Within",
    "Argument",
    "Call",
    "Value",
    "NameSelector",
    "TypeSelector",
    "Exclude",
    "JointGroup",
    "Selector",
    "Rule",
    "Setting",
    "Statement",
    "Spec",
]

_SPAN = attrs.field(default=None, eq=False, repr=False, kw_only=True)
_LEADING = attrs.field(default=(), eq=False, repr=False, kw_only=True, converter=tuple)
_TRAILING = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen
class Percent:
    """A fraction written with a percent sign: ``5%`` is ``Percent(5.0)``."""

    value: float = attrs.field(converter=float)
    """The number before the ``%`` sign."""

    @property
    def fraction(self) -> float:
        """The value as a fraction in [0, 1] for 0% to 100%."""
        return self.value / 100.0


@attrs.frozen
class Range:
    """An inclusive integer range of choices, ``1..8``: the task picks one value under a budget."""

    low: int
    """The first value."""
    high: int
    """The last value (included)."""
    span: Span | None = _SPAN
    """Where the range stands in the source."""

    @property
    def values(self) -> tuple[int, ...]:
        """Every value of the range, in increasing order (empty when ``high < low``)."""
        return tuple(range(self.low, self.high + 1))


@attrs.frozen
class Within:
    """``within AMOUNT``: one budget over every task of a rule (``within 40kB``, ``within 30% flops``).

    Bytes are converted to bits when parsed: ``40kB`` is ``Within(320000.0, "bits")``; a percentage
    is a fraction of the dense size: ``30% flops`` is ``Within(0.3, "flops", relative=True)``."""

    amount: float = attrs.field(converter=float)
    """The limit in :attr:`unit`, or the fraction of the dense size when :attr:`relative`."""
    unit: str
    """What is limited: ``"bits"`` (storage), ``"params"`` or ``"flops"`` (multiply-adds of one example)."""
    relative: bool = False
    """Whether :attr:`amount` is a fraction of the rule's dense tasks (``30%`` → 0.3)."""
    text: str = attrs.field(default="", eq=False)
    """The amount as ``lcdsl fmt`` writes it (``40kB``), for fmt and messages; empty when built in code."""
    span: Span | None = _SPAN
    """Where ``within …`` stands in the source."""


@attrs.frozen
class Argument:
    """One argument of a call: ``k=4`` (``name="k"``) or a positional ``4`` (``name=None``)."""

    name: str | None
    """The keyword, or None for a positional argument."""
    value: Value
    """The argument's value."""
    span: Span | None = _SPAN
    """Where the argument stands in the source."""


@attrs.frozen
class Call:
    """An operator or setting call such as ``quant(k=4)`` or ``geometric(start=9e-5, ...)``."""

    name: str
    """The called name; the grammar knows no names, the plan builder checks them."""
    args: tuple[Argument, ...] = attrs.field(default=(), converter=tuple)
    """The arguments in source order."""
    span: Span | None = _SPAN
    """Where the whole call stands in the source."""

    def kwargs(self) -> dict[str, Value]:
        """Keyword arguments as a dict (positional ones are left out)."""
        return {a.name: a.value for a in self.args if a.name is not None}


Value = Union[int, float, bool, str, Percent, Range, Call, tuple]
"""A spec value: numbers, booleans, strings, percents, ranges, calls, and tuples (lists) of values."""


@attrs.frozen
class NameSelector:
    """Parameters by name: a dot-aware glob (``*`` within a segment, ``**`` across segments).

    A pattern that names a module means that module's ``weight``. With a ``type_name``
    (``layer4.**@Conv2d``) only what belongs to modules of that class is kept."""

    pattern: str
    """The glob as written, e.g. ``conv*`` or ``features.**.weight``."""
    type_name: str | None = None
    """The module class that filters the glob's matches (``Conv2d`` in ``layer4.**@Conv2d``), or None."""
    span: Span | None = _SPAN


@attrs.frozen
class TypeSelector:
    """The ``weight`` of every module of a type: ``@Linear``, ``@Conv2d``."""

    type_name: str
    """The module class name, without the ``@``."""
    span: Span | None = _SPAN


@attrs.frozen
class Exclude:
    """``!selector``: removes what the inner selector matches from its list."""

    selector: NameSelector | TypeSelector
    """What to remove."""
    span: Span | None = _SPAN


@attrs.frozen
class JointGroup:
    """``[a, b, ...]``: every matched tensor forms one joint task (one codebook, one budget)."""

    items: tuple[NameSelector | TypeSelector | Exclude, ...] = attrs.field(converter=tuple)
    """The selectors inside the brackets."""
    name: str | None = None
    """The task's name given with ``as`` (``[fc*] as body``), or None for a generated one."""
    span: Span | None = _SPAN


Selector = Union[NameSelector, TypeSelector, Exclude, JointGroup]
"""One comma-separated item on the left of a rule."""


@attrs.frozen
class Rule:
    """``SELECTORS : EXPRESSION``: compress what the selectors match with the operator(s).

    Several terms mean the additive combination ``Δ(θ) = Δ₁(θ₁) + Δ₂(θ₂) + …``."""

    selectors: tuple[Selector, ...] = attrs.field(converter=tuple)
    """The comma-separated selectors."""
    terms: tuple[Call, ...] = attrs.field(converter=tuple)
    """The operator calls joined by ``+``."""
    budget: Within | None = None
    """The ``within …`` budget over the rule's tasks, or None."""
    span: Span | None = _SPAN
    """The whole statement."""
    leading: tuple[str, ...] = _LEADING
    """Comment lines (text after ``#``) and blank lines (``""``) just above, kept by ``fmt``."""
    comment: str | None = _TRAILING
    """The comment at the end of the line (text after ``#``), kept by ``fmt``."""


@attrs.frozen
class Setting:
    """``name = value``: a run setting such as the μ schedule."""

    name: str
    """The setting's name; the plan builder checks it."""
    value: Value
    """The setting's value."""
    span: Span | None = _SPAN
    """The whole statement."""
    leading: tuple[str, ...] = _LEADING
    """Comment lines (text after ``#``) and blank lines (``""``) just above, kept by ``fmt``."""
    comment: str | None = _TRAILING
    """The comment at the end of the line (text after ``#``), kept by ``fmt``."""


Statement = Union[Rule, Setting]


@attrs.frozen
class Spec:
    """A whole ``.lc`` file: its statements in order, and where it came from."""

    statements: tuple[Statement, ...] = attrs.field(default=(), converter=tuple)
    """Rules and settings in source order."""
    source: str = attrs.field(default="", eq=False, repr=False, kw_only=True)
    """The text it was parsed from (empty when built in code)."""
    filename: str = attrs.field(default="<spec>", eq=False, repr=False, kw_only=True)
    """The file name used in error messages."""
    trailing: tuple[str, ...] = _LEADING
    """Comment and blank lines after the last statement, kept by ``fmt``."""

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in source order."""
        return tuple(s for s in self.statements if isinstance(s, Rule))

    @property
    def settings(self) -> dict[str, Value]:
        """The settings as a dict (the parser rejects repeated names)."""
        return {s.name: s.value for s in self.statements if isinstance(s, Setting)}

    def bind(
        self, model: torch.nn.Module, *, registry: Registry | None = None, example_input: torch.Tensor | None = None
    ) -> Plan:
        """Bind this spec to a model's parameters; see :func:`lcdsl.plan.binder.bind` (``example_input``:
        one batch, needed only by a flops budget over a convolution)."""
        from lcdsl.plan.binder import bind

        return bind(self, model, registry=registry, example_input=example_input)

    def format(self) -> str:
        """The canonical text of this spec; see :func:`lcdsl.language.fmt.format_spec`."""
        from lcdsl.language.fmt import format_spec

        return format_spec(self)
