"""The units of a ``within`` budget: what ``40kB``, ``3.5MiB``, ``2 Mflops`` or ``30% params`` mean.

A budget is measured in one of three quantities: storage ``bits`` (bytes are converted to bits
here, at parse time, so ``40kB`` is 320000 bits), ``params`` (stored numbers), or ``flops``
(multiply-adds of one forward example). A percentage is a share of the dense size of the rule's
tasks: ``30%`` of their 32-bit storage, ``30% flops`` / ``30% params`` of their dense flops / params.

Example::

    >>> absolute_amount(40, "kB")
    (320000.0, 'bits')
    >>> canonical_text(40, "kB", relative=False)
    '40kB'
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["UNITS", "QUANTITIES", "RELATIVE_UNITS", "absolute_amount", "canonical_text", "unit_hint"]

UNITS = MappingProxyType({
    "bits": ("bits", 1),
    "B": ("bits", 8),
    "kB": ("bits", 8 * 1000),
    "MB": ("bits", 8 * 1000**2),
    "GB": ("bits", 8 * 1000**3),
    "KiB": ("bits", 8 * 1024),
    "MiB": ("bits", 8 * 1024**2),
    "GiB": ("bits", 8 * 1024**3),
    "params": ("params", 1),
    "flops": ("flops", 1),
    "kflops": ("flops", 1000),
    "Mflops": ("flops", 1000**2),
    "Gflops": ("flops", 1000**3),
})
"""Each unit a ``within`` amount may carry: (the quantity it measures, how many of that quantity one is)."""

QUANTITIES = ("bits", "params", "flops")
"""What a budget limits: :attr:`~lcdsl.language.spec.Within.unit` is one of these."""

RELATIVE_UNITS = MappingProxyType({"": "bits", "flops": "flops", "params": "params"})
"""The words a percentage may carry (none: a share of the dense storage)."""

_SPACED = frozenset({"bits", "params", "flops", "kflops", "Mflops", "Gflops"})
"""Units written after a space in the canonical text (``20000 params``); bytes stick (``40kB``)."""


def unit_hint() -> str:
    """The hint listing every unit, for an unknown one."""
    return "units: " + ", ".join(UNITS) + "; or a percentage: 30%, 30% flops, 30% params"


def absolute_amount(number: float, unit: str) -> tuple[float, str]:
    """``number`` of ``unit`` in its quantity: ``(320000.0, "bits")`` for 40 kB.

    Raises:
        KeyError: ``unit`` is not one of :data:`UNITS`.
    """
    quantity, scale = UNITS[unit]
    return float(number) * scale, quantity


def canonical_text(number_text: str | float, unit: str, *, relative: bool) -> str:
    """The budget as ``lcdsl fmt`` writes it after ``within``: ``40kB``, ``20000 params``, ``30% flops``.

    ``number_text`` is the amount as the formatter writes numbers (or a number, written with ``str``)."""
    number = number_text if isinstance(number_text, str) else str(number_text)
    if relative:
        return f"{number}%" + (f" {unit}" if unit else "")
    return f"{number} {unit}" if unit in _SPACED else f"{number}{unit}"
