"""A choice among operators: the task of a budgeted rule (``quant(bits=1..8) within 40kB``).

A budget (:class:`lcdsl.plan.model.Budget`) spans several tasks; each of them gets a
:class:`Choice` whose options are the concrete operators the rule allows it (``quant(bits=1)``
… ``quant(bits=8)``). The engine's C step picks one option per task so that the options' summed
cost fits the budget and the summed distortion is least (:func:`lcdsl.budget.knapsack.allocate`),
then projects each task on its option (:meth:`Choice.project_option`).

``θ`` of a Choice is the chosen option's ``θ`` plus ``θ["choice"]``, a 0-d ``int64`` tensor holding
the option's index: everything else (``Δ(θ)``, storage, encoding, checks) is the chosen option's.

**Distortion tables.** The knapsack needs, per task, the distortion ``‖w − Δ(Π_i(w))‖²`` of every
option. :meth:`Choice.distortions` asks the options' class for all of them at once through the
classmethod hook ``distortion_table(w, options, mu)`` (one SVD for every rank, one k-means
dynamic programme for every codebook size, one sort for every pruning count); a class without
the hook, or whose hook returns None for these options, gets the generic table: each option
projected and measured. A plugin offers a fast table by defining the hook on its operator class;
:func:`lcdsl.testing.check_choice_set` checks that it equals the generic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from lcdsl.operators.base import Encoded, Operator, Storage, Theta, ViewKind, describe

__all__ = ["Choice", "CHOICE_KEY", "generic_distortions", "option_distortions"]

CHOICE_KEY = "choice"
"""The key of ``θ`` holding the chosen option's index (a 0-d ``int64`` tensor)."""

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
"""The dtypes an option index may be read in (a file may hold it narrower than ``int64``; a
boolean or a float is no index)."""


def _check_options(instance: Any, attribute: Any, options: tuple[Operator, ...]) -> None:
    if not options:
        raise ValueError("a choice needs at least one option")
    bad = [o for o in options if not isinstance(o, Operator)]
    if bad:
        raise TypeError(f"a choice's options are operators, got {type(bad[0]).__name__}")
    if any(isinstance(o, Choice) for o in options):
        raise ValueError("a choice's options cannot be choices themselves")
    views = sorted({str(o.view) for o in options})
    if len(views) > 1:
        raise ValueError(f"a choice's options must share one view, got {' and '.join(views)}")
    penalties = [describe_safely(o) for o in options if o.penalty_form]
    if penalties:
        raise ValueError(
            f"a choice cannot offer a penalty form ({penalties[0]}): its size is known only after "
            "its C step, so no budget can price it"
        )


def describe_safely(op: Operator) -> str:
    """``describe(op)``, or the operator's ``repr`` when a spec cannot spell it (for messages)."""
    try:
        return describe(op)
    except Exception:  # noqa: BLE001 - an operator built in code may have no spelling
        return repr(op)


def _check_labels(instance: Choice, attribute: Any, labels: tuple[str, ...]) -> None:
    if len(labels) != len(instance.options):
        raise ValueError(f"a choice needs one label per option: {len(instance.options)} options, {len(labels)} labels")
    if not all(isinstance(label, str) for label in labels):
        raise TypeError("a choice's labels are strings")


def _option_theta(theta: Theta) -> Theta:
    """``θ`` without its ``"choice"`` entry: the chosen option's own ``θ``."""
    return {k: v for k, v in theta.items() if k != CHOICE_KEY}


def option_distortions(options: Sequence[Operator], w: torch.Tensor, mu: float = 0.0) -> torch.Tensor:
    """``‖w − Δ(Π_i(w))‖²`` of each option, ``(len(options),)`` float64 on CPU: the options'
    class's ``distortion_table`` hook when every option is of one class and the hook answers,
    else :func:`generic_distortions`."""
    classes = {type(o) for o in options}
    if len(classes) == 1:
        hook = getattr(next(iter(classes)), "distortion_table", None)
        if hook is not None:
            table = hook(w, tuple(options), mu)
            if table is not None:
                table = torch.as_tensor(table, dtype=torch.float64).detach().cpu().reshape(-1)
                if table.numel() != len(options):
                    raise ValueError(
                        f"{next(iter(classes)).__name__}.distortion_table returned {table.numel()} values "
                        f"for {len(options)} options"
                    )
                return table
    return generic_distortions(options, w, mu)


def generic_distortions(options: Sequence[Operator], w: torch.Tensor, mu: float = 0.0) -> torch.Tensor:
    """``‖w − Δ(Π_i(w))‖²`` of each option by projecting on each one: ``(len(options),)`` float64
    on CPU. Right for every operator; the reference a ``distortion_table`` hook must equal."""
    shape = tuple(w.shape)
    x = w.detach().to(torch.float64)
    out = torch.empty(len(options), dtype=torch.float64)
    for i, op in enumerate(options):
        delta = op.decompress(op.project(w, mu=mu), shape)
        out[i] = (x - delta.to(torch.float64)).square().sum().cpu()
    return out


@attrs.frozen
class Choice(Operator):
    """argmin_θ ‖w − Δ_i(θ)‖² over the options i and their θ: the least-distortion option (exact).

    On its own (no budget) the C step projects on every option and keeps the one of least
    distortion (ties: the cheapest in storage bits, then the lowest index). Under a budget the
    engine picks the option of each task (:meth:`project_option`) so that the budget holds.

    ``θ`` is the chosen option's ``θ`` plus ``θ["choice"]``, the option's index as a 0-d
    ``int64`` tensor. Every other method delegates to the chosen option.

    Example::

        Choice(options=(Quant(bits=1), Quant(bits=2)), labels=("bits=1", "bits=2"))
    """

    name: ClassVar[str] = "choice"

    options: tuple[Operator, ...] = attrs.field(converter=tuple, validator=_check_options)
    """The concrete operators to choose from, resolved, all of one view kind."""
    labels: tuple[str, ...] = attrs.field(converter=tuple, validator=_check_labels)
    """What each option is, for ``lcdsl check`` and the report (``bits=3``, ``rank=12``)."""

    @property
    def view(self) -> ViewKind:  # type: ignore[override]
        """The options' common view kind."""
        return self.options[0].view

    def spec_text(self) -> str:
        """The options as a spec writes them: ``quant(bits=1..8)`` when they are one call with one
        argument over consecutive integers, ``prune(l0=[1, 2, 4])`` over other integers, else
        their texts joined by ``|`` (alternatives): ``quant(bits=1) | lowrank(rank=2)``."""
        texts = [describe(o) for o in self.options]
        keys = {label.partition("=")[0] for label in self.labels}
        values = [label.partition("=")[2] for label in self.labels]
        if len(keys) == 1 and len(texts) > 1 and all(v.isdigit() for v in values):
            key = keys.pop()
            template = texts[0].replace(f"{key}={values[0]}", f"{key}={{}}", 1)
            if "{}" in template and all(t == template.format(v) for t, v in zip(texts, values)):
                numbers = [int(v) for v in values]
                consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
                shown = f"{numbers[0]}..{numbers[-1]}" if consecutive else f"[{', '.join(values)}]"
                return template.format(shown)
        return " | ".join(texts)

    # ---------------------------------------------------------------- the choice

    def selected(self, theta: Theta) -> int:
        """The index of the option ``θ`` is of.

        Raises:
            ValueError: ``θ`` has no valid ``"choice"`` entry.
        """
        value = theta.get(CHOICE_KEY)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.dtype not in _INDEX_DTYPES:
            found = "missing" if not isinstance(value, torch.Tensor) else (
                f"{str(value.dtype).removeprefix('torch.')} of shape {list(value.shape)}"
            )
            raise ValueError(f"{CHOICE_KEY} is {found}, expected the chosen option's index as one integer")
        index = int(value.reshape(()).item())
        if not 0 <= index < len(self.options):
            raise ValueError(f"{CHOICE_KEY} holds {index}, expected an option index in [0, {len(self.options)})")
        return index

    def option_of(self, theta: Theta) -> tuple[Operator, Theta]:
        """The option ``θ`` is of and that option's own ``θ`` (without ``"choice"``): what a
        task of this choice is, once its C step has chosen (deployment, export).

        Raises:
            ValueError: ``θ`` has no valid ``"choice"`` entry.
        """
        return self.options[self.selected(theta)], _option_theta(theta)

    def label(self, theta: Theta) -> str:
        """The label of the option ``θ`` is of (``bits=3``)."""
        return self.labels[self.selected(theta)]

    def distortions(self, w: torch.Tensor, mu: float = 0.0) -> torch.Tensor:
        """``‖w − Δ(Π_i(w))‖²`` of each option's projection of ``w``: ``(len(options),)`` float64 on
        CPU, from the options' class's ``distortion_table`` hook when it has one
        (:func:`option_distortions`)."""
        return option_distortions(self.options, w, mu)

    def project_option(self, w: torch.Tensor, index: int, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ of option ``index`` for the target ``w``, plus ``θ["choice"] = index``.

        ``warm`` is passed on only when it is of the same option."""
        if not 0 <= index < len(self.options):
            raise ValueError(f"option index {index} is outside [0, {len(self.options)})")
        option_warm = None
        if warm is not None and CHOICE_KEY in warm:
            try:
                if self.selected(warm) == index:
                    option_warm = _option_theta(warm)
            except ValueError:
                option_warm = None
        theta = dict(self.options[index].project(w, mu=mu, warm=option_warm))
        if CHOICE_KEY in theta:
            raise ValueError(f"option {self.labels[index]} returned a θ with a '{CHOICE_KEY}' key of its own")
        theta[CHOICE_KEY] = torch.tensor(index, dtype=torch.int64, device=w.device)
        return theta

    def project(self, w: torch.Tensor, mu: float = 0.0, warm: Theta | None = None) -> Theta:
        """θ of the least-distortion option (ties: fewest storage bits, then the lowest index)."""
        table = self.distortions(w, mu).tolist()
        shape = tuple(w.shape)
        bits = [(op.storage(shape) or Storage(0, 0)).bits for op in self.options]
        best = min(range(len(self.options)), key=lambda i: (table[i], bits[i], i))
        return self.project_option(w, best, mu, warm)

    # ---------------------------------------------------------- delegation

    def resolve(self, shape: tuple[int, ...]) -> Choice:
        """Each option resolved for a task of view ``shape``."""
        return attrs.evolve(self, options=tuple(o.resolve(tuple(shape)) for o in self.options))

    def check_theta(self, theta: Theta, shape: tuple[int, ...]) -> None:
        """A valid ``"choice"`` index, and the rest a valid θ of that option."""
        op, rest = self.option_of(theta)
        if theta[CHOICE_KEY].dim() != 0:
            raise ValueError(f"{CHOICE_KEY} has shape {tuple(theta[CHOICE_KEY].shape)}, expected a 0-d tensor")
        op.check_theta(rest, shape)

    def decompress(self, theta: Theta, shape: tuple[int, ...]) -> torch.Tensor:
        """``Δ(θ)`` of the chosen option."""
        op, rest = self.option_of(theta)
        return op.decompress(rest, shape)

    def decompress_range(self, theta: Theta, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """Entries ``start:stop`` of the chosen option's ``Δ(θ)``."""
        op, rest = self.option_of(theta)
        return op.decompress_range(rest, shape, start, stop)

    @property
    def ranged(self) -> bool:
        """True when every option builds a range of ``Δ(θ)`` alone."""
        return all(o.ranged for o in self.options)

    def storage(self, shape: tuple[int, ...], theta: Theta | None = None) -> Storage | None:
        """The chosen option's storage; None before a C step, when no option is chosen yet (the
        index itself is part of the operator's description, like the spec text, not of θ's
        size, so that a budget priced with the options' storage is what the report shows)."""
        if theta is None:
            return None
        op, rest = self.option_of(theta)
        return op.storage(shape, rest)

    def chosen(self, theta: Theta, shape: tuple[int, ...]) -> str:
        """The chosen option's label, and what it kept where it says (``rank=3 (rank 3 of 8)``)."""
        op, rest = self.option_of(theta)
        detail = op.chosen(rest, shape)
        label = self.label(theta)
        return f"{label} ({detail})" if detail else label

    def encode(self, theta: Theta, shape: tuple[int, ...]) -> Encoded | None:
        """The chosen option's fields plus ``"choice"``, when the option encodes itself; else None
        (every tensor, the index with them, by content)."""
        op, rest = self.option_of(theta)
        fields = op.encode(rest, shape)
        if fields is None:
            return None
        if CHOICE_KEY in fields:
            raise ValueError(f"option {self.label(theta)} encoded a field named '{CHOICE_KEY}' of its own")
        return {**fields, CHOICE_KEY: theta[CHOICE_KEY]}

    def decode(self, fields: Encoded, shape: tuple[int, ...]) -> Theta:
        """The θ :meth:`encode` gave ``fields`` of."""
        index_field = fields.get(CHOICE_KEY)
        if not isinstance(index_field, torch.Tensor):
            raise ValueError(f"{CHOICE_KEY} is missing, expected the chosen option's index")
        index = self.selected({CHOICE_KEY: index_field})
        rest = {k: v for k, v in fields.items() if k != CHOICE_KEY}
        theta = dict(self.options[index].decode(rest, shape))
        theta[CHOICE_KEY] = index_field.to(torch.int64).reshape(())
        return theta
