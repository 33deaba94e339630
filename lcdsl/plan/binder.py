"""Binding a spec to a model: selectors → tensors (:mod:`.matching`), calls → operators
(:mod:`.calls`), tasks checked against their tensors; every problem at once."""

from __future__ import annotations

import attrs
import torch

from lcdsl.errors import Diagnostic, Diagnostics, Span, SpecError, exception_message
from lcdsl.language.spec import Range, Rule, Spec
from lcdsl.operators.base import Operator, View
from lcdsl.operators.layout import Layout
from lcdsl.plan.calls import broken_message, build_operator, build_terms, operator_name, registry_or_default
from lcdsl.plan.matching import QUOTE, listed, norm_warnings, rule_groups
from lcdsl.operators.choice import Choice
from lcdsl.plan.budgets import make_budget, needs_positions, output_positions
from lcdsl.plan.choices import ChoiceArgument, choice_arguments, choice_values, expand
from lcdsl.plan.model import Budget, Plan, Task
from lcdsl.plan.names import buffers_by_name, task_name
from lcdsl.plan.selectors import ModelIndex
from lcdsl.plan.settings import Settings, settings_from_spec
from lcdsl.plugins.manager import plugin_code
from lcdsl.plugins.registry import Registry

__all__ = ["bind", "build_operator", "check_spec"]


def _settings(spec: Spec, diags: Diagnostics) -> Settings:
    """The spec's settings (the defaults where they are wrong); adds its whole-file problems."""
    try:
        settings = settings_from_spec(spec)
    except SpecError as exc:
        diags.extend(exc)
        settings = Settings()
    if not spec.rules:
        diags.add(
            "no-rules",
            "the spec has no rules, so nothing would be compressed",
            None,
            hint="add a rule such as 'fc1 : quant(k=2)' (selectors : operator)",
        )
    return settings


def check_spec(spec: Spec, *, registry: Registry | None = None) -> dict[int, Operator]:
    """Validate a spec without a model: settings, operator names and arguments.

    Returns:
        The operator of each rule, by the rule's index in ``spec.rules``; a rule with ranges or
        ``auto`` (a choice under a budget) has none before it is bound to tensors.

    Raises:
        SpecError: every problem, together.
    """
    registry = registry_or_default(registry)
    diags = Diagnostics()
    settings = _settings(spec, diags)
    ops = {}
    for i, rule in enumerate(spec.rules):
        choices = choice_arguments(rule.terms, registry, diags)
        if choices is None:
            continue
        if choices:  # every value of a range is built; for ``auto``, one of the class's own values
            sample = choice_values(rule.terms, choices, registry, (4, 4))
            values = [v if isinstance(c.value, Range) else v[:1] for c, v in zip(choices, sample)]
            before = len(diags)
            for _, calls in expand(rule.terms, choices, values):
                build_terms(calls, registry, settings.additive_rounds, diags)
                if len(diags) > before:
                    break  # the first value that cannot be says it; the rest of the range would repeat it
            continue  # no operator before the tensors are known (a range's values may not all fit them)
        op = build_terms(rule.terms, registry, settings.additive_rounds, diags)
        if op is not None:
            ops[i] = op
    diags.raise_if_any(source=spec.source, filename=spec.filename)
    return ops


def _line(span: Span | None) -> str:
    return f"line {span.line}" if span is not None else "another rule"


def bind(
    spec: Spec,
    model: torch.nn.Module,
    *,
    registry: Registry | None = None,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
) -> Plan:
    """Bind ``spec`` to ``model``.

    Args:
        spec: the parsed spec.
        model: the model whose parameters the selectors name.
        registry: the operators; the installed plugins' by default.
        example_input: one batch of the model's input (or a tuple of its forward's arguments),
            needed only by a ``within … flops`` budget over a convolution, to count its output
            positions; the model runs once on it.

    Raises:
        SpecError: every problem of the spec, together (selectors matching nothing, tensors
            claimed twice, unknown operators, bad arguments, joint groups an operator cannot
            take, …), with spans and "did you mean" suggestions.
    """
    registry = registry_or_default(registry)
    diags = Diagnostics()
    settings = _settings(spec, diags)
    index = ModelIndex(model)
    owner: dict[str, Rule] = {}
    tasks: list[Task] = []
    named: dict[str, Rule] = {}
    warnings: list[Diagnostic] = []
    budgeted: list[tuple[Rule, list[Task]]] = []
    for rule in spec.rules:
        choices = choice_arguments(rule.terms, registry, diags)
        if choices is None:
            op = None  # a range or auto where no choice can be made: reported, nothing to build
        elif choices:
            op = _choice_probe(rule, choices, registry, settings.additive_rounds, diags)
        else:
            op = build_terms(rule.terms, registry, settings.additive_rounds, diags)
        _check_budget_and_choices(rule, choices, diags)
        rule_tasks: list[Task] = []
        claimed: list[str] = []
        for names, joint, span, label in rule_groups(rule, index, diags):
            fresh = []
            for n in names:
                if n in owner:
                    first = owner[n]
                    diags.add(
                        "claimed-twice",
                        f"{index.describe(n, quote=QUOTE)} is already compressed by the rule on {_line(first.span)}",
                        rule.span,
                        hint="each tensor may be claimed by one rule only; narrow one selector or add an exclusion (!name)",
                    )
                else:
                    owner[n] = rule
                    fresh.append(n)
            claimed += fresh
            if label is not None:
                if label in named:
                    message = f"the name '{label}' is already the name of a group on {_line(named[label].span)}"
                    diags.add("repeated-name", message, span, hint="give each joint group its own name")
                named[label] = rule
            fresh, frozen = _trainable(fresh, index, span if span is not None else rule.span, diags)
            if frozen:
                warnings.append(frozen)
            if not fresh or op is None:
                continue
            if choices:
                task = _make_choice_task(fresh, joint, rule, choices, span, index, registry, settings, diags)
            else:
                task = _make_task(fresh, joint, op, rule, span, index, registry, diags)
            if task is not None:
                task = attrs.evolve(task, label=label) if label is not None else task
                tasks.append(task)
                rule_tasks.append(task)
        warnings += norm_warnings(rule, claimed, index)
        if rule.budget is not None and choices and rule_tasks:
            budgeted.append((rule, rule_tasks))
    for task in tasks:
        if task.label is None and task.name in named:  # a root parameter called like a group
            message = f"the name '{task.name}' is already the name of a task on {_line(task.rule.span if task.rule else None)}"
            diags.add("repeated-name", message, named[task.name].span, hint="give the joint group another name")
    budgets = _budgets(budgeted, model, example_input, index, diags) if not diags else []
    diags.raise_if_any(source=spec.source, filename=spec.filename)
    dense = [n for n in index.parameters if n not in owner]
    buffers = buffers_by_name(model)  # stored as they are: counted at their own dtype's bits
    return Plan(
        tasks=tuple(tasks),
        dense=tuple(dense),
        dense_numel=sum(index.parameters[n].numel() for n in dense),
        buffers=tuple(buffers),
        buffer_numel=sum(b.numel() for b in buffers.values()),
        buffer_bits=sum(8 * b.numel() * b.element_size() for b in buffers.values()),
        settings=settings,
        spec=spec,
        ties=tuple(index.ties.items()),
        warnings=tuple(warnings),
        budgets=tuple(budgets),
    )


def _check_budget_and_choices(rule: Rule, choices: list[ChoiceArgument] | None, diags: Diagnostics) -> None:
    """A range or ``auto`` needs a ``within``; a ``within`` needs something to choose."""
    if choices and rule.budget is None:
        for choice in choices:
            written = "auto" if isinstance(choice.value, str) else f"{choice.value.low}..{choice.value.high}"
            diags.add(
                "range-needs-budget",
                f"'{choice.name}={written}' offers choices: a range needs a budget to choose by",
                choice.value.span if isinstance(choice.value, Range) else choice.span,
                hint="add `within …` at the end of the rule, e.g. within 40kB or within 30%",
            )
    if choices == [] and rule.budget is not None:
        diags.add(
            "budget-without-choice",
            f"'within {rule.budget.text}' has nothing to choose: no argument of the rule is a range or auto",
            rule.budget.span,
            hint="give a size as a range (bits=1..8) or auto (rank=auto), or drop the budget",
        )


def _choice_probe(
    rule: Rule, choices: list[ChoiceArgument], registry: Registry, rounds: int, diags: Diagnostics
) -> Operator | None:
    """One operator of the rule's choices (its first range value, or the largest ``auto`` value of a
    flat shape), built once so that bad arguments are reported once for the rule, not per task."""
    values = [c.value.values[:1] or (c.value.low,) if isinstance(c.value, Range) else None for c in choices]
    for i, choice in enumerate(choices):
        if values[i] is None:
            cls = registry.operator(rule.terms[choice.term].name)
            with plugin_code():
                values[i] = (cls.auto_values(choice.name, (1,)) or (1,))[-1:]
    (_, calls), = expand(rule.terms, choices, values)
    return build_terms(calls, registry, rounds, diags)


def _make_choice_task(
    names: list[str],
    joint: bool,
    rule: Rule,
    choices: list[ChoiceArgument],
    span: Span | None,
    index: ModelIndex,
    registry: Registry,
    settings: Settings,
    diags: Diagnostics,
) -> Task | None:
    """The task of a rule with choices: a :class:`Choice` over one option per value at the task's view."""
    numel = sum(index.parameters[n].numel() for n in names)
    flat = expand(rule.terms, choices, [v[-1:] for v in choice_values(rule.terms, choices, registry, (numel,))])
    probe = build_terms(flat[0][1], registry, settings.additive_rounds, Diagnostics())
    if probe is None:
        return None
    task = _make_task(names, joint, probe, rule, span, index, registry, diags)
    if task is None:
        return None
    shape = task.view_shape
    options, labels = [], []
    where = rule.terms[0].span if len(rule.terms) == 1 else rule.span
    for label, calls in expand(rule.terms, choices, choice_values(rule.terms, choices, registry, shape)):
        local = Diagnostics()
        op = build_terms(calls, registry, settings.additive_rounds, local)
        if op is None:
            diags.extend(local)
            return None
        try:
            with plugin_code():
                options.append(op.resolve(shape))
        except (ValueError, TypeError) as exc:
            message = f"{label} on {task.name} ({task.numel} weights): {exception_message(exc)}"
            diags.add("does-not-fit", message, where)
            return None
        labels.append(label)
    if not options:
        diags.add("does-not-fit", f"{task.name} leaves no value to choose from", where)
        return None
    try:
        choice = Choice(options=tuple(options), labels=tuple(labels))
    except ValueError as exc:  # e.g. a penalty form, whose size only its C step tells
        diags.add("unmeasurable", f"{task.name} cannot be chosen under a budget: {exception_message(exc)}", where)
        return None
    return attrs.evolve(task, operator=choice)


def _budgets(
    budgeted: list[tuple[Rule, list[Task]]],
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None,
    index: ModelIndex,
    diags: Diagnostics,
) -> list[Budget]:
    """The plan budget of each rule with ``within``, in rule order."""
    out = []
    for rule, rule_tasks in budgeted:
        positions: dict[str, int] = {}
        if rule.budget.unit == "flops" and any(needs_positions(t) for t in rule_tasks):
            if example_input is None:
                convs = [t.name for t in rule_tasks if needs_positions(t)]
                diags.add(
                    "flops-need-example",
                    f"a flops budget over a convolution ({convs[0]}) needs an example input to count its output positions",
                    rule.budget.span,
                    hint="bind with example_input=… (one batch), or budget storage instead (within 40kB, within 30%)",
                )
                continue
            names = [n for t in rule_tasks for n in t.parameters]
            try:
                positions = output_positions(model, example_input, names, index)
            except Exception as exc:  # the user's model or input
                diags.add("flops-need-example", f"the example input does not run through the model: {exception_message(exc)}", rule.budget.span)
                continue
        budget = make_budget(rule, rule_tasks, positions, diags)
        if budget is not None:
            out.append(budget)
    return out


def _trainable(
    names: list[str], index: ModelIndex, span: Span | None, diags: Diagnostics
) -> tuple[list[str], Diagnostic | None]:
    """The names the L step can train: an integer or bool parameter is an ``integer-parameter``
    error; a frozen one (``requires_grad=False``) stays, with a ``frozen-parameter`` warning: the C
    step still compresses it, but the penalty's gradient never moves it, so LC reduces to direct
    compression for it."""
    kept, frozen = [], []
    for n in names:
        p = index.parameters[n]
        if not (p.is_floating_point() or p.is_complex()):
            dtype = str(p.dtype).removeprefix("torch.")
            diags.add(
                "integer-parameter",
                f"{n} is a {dtype} parameter: only floating-point tensors can be compressed",
                span,
                hint=f"leave it out of the rule (!{n})",
            )
            continue
        kept.append(n)
        if not p.requires_grad:
            frozen.append(n)
    if not frozen:
        return kept, None
    has, them = ("has", "it") if len(frozen) == 1 else ("have", "them")
    message = (
        f"{listed(frozen, 3)} {has} requires_grad=False: compressed in the C step but never trained, "
        f"so LC is direct compression for {them}"
    )
    hint = f"unfreeze {them} (p.requires_grad_(True)) to let the L step move {them} towards Δ(θ)"
    return kept, Diagnostic(message, span, hint, code="frozen-parameter", severity="warning")


def _make_task(
    names: list[str],
    joint: bool,
    op: Operator,
    rule: Rule,
    span: Span | None,
    index: ModelIndex,
    registry: Registry,
    diags: Diagnostics,
) -> Task | None:
    params = [index.parameters[n] for n in names]
    kinds = {(p.dtype, p.device) for p in params}
    if len(kinds) > 1:
        listed = ", ".join(f"{n} ({p.dtype}, {p.device})" for n, p in zip(names, params))
        diags.add("mixed-group", f"a joint group must share one dtype and device: {listed}", span)
        return None
    shapes = tuple(tuple(p.shape) for p in params)
    try:
        with plugin_code():  # reads op.view, which may be a plugin's property
            view = View.of(op, shapes)
    except ValueError as exc:
        hint = "drop the brackets to give each tensor its own task" if joint and len(names) > 1 else None
        diags.add("does-not-fit", f"{operator_name(op)} cannot take {', '.join(names)}: {exc}", span, hint)
        return None
    except Exception as exc:
        diags.add("broken-operator", broken_message(f"{operator_name(op)}.view", op, exc, registry), span)
        return None
    layout = None
    if view.kind != "vector" and len(shapes[0]) >= 2:  # rows and columns must be the layer's outputs and inputs
        layout = _layout(names[0], op, index, registry, span, diags)
        if layout is None:
            return None
        try:
            with plugin_code():
                view = View.of(op, shapes, layout)
        except ValueError as exc:
            diags.add("does-not-fit", f"{operator_name(op)} cannot take {names[0]}: {exc}", span)
            return None
        except Exception as exc:
            diags.add("broken-operator", broken_message(f"{operator_name(op)}.view", op, exc, registry), span)
            return None
        if view.order is None:
            layout = None  # stored outputs first already: the task reads as one built without a layout
    where = rule.terms[0].span if len(rule.terms) == 1 else rule.span
    try:
        with plugin_code():
            resolved = op.resolve(view.shape)
    except (ValueError, TypeError) as exc:
        message = f"{operator_name(op)} on {task_name(names, joint)} ({view.numel} weights): {exception_message(exc)}"
        diags.add("does-not-fit", message, where)
        return None
    except Exception as exc:
        diags.add("broken-operator", broken_message(f"{operator_name(op)}.resolve", op, exc, registry), where)
        return None
    try:  # the plan's size table asks it later; a plugin bug there is found here, located
        with plugin_code():
            resolved.storage(view.shape)
    except Exception as exc:
        diags.add("broken-operator", broken_message(f"{operator_name(op)}.storage", resolved, exc, registry), where)
        return None
    return Task(parameters=tuple(names), shapes=shapes, operator=resolved, joint=joint, rule=rule, layout=layout)


_ELEMENTWISE_HINT = "element-wise operators (quant, prune without by, binarize, …) need no layout"


def _layout(
    name: str, op: Operator, index: ModelIndex, registry: Registry, span: Span | None, diags: Diagnostics
) -> Layout | None:
    """The layout of parameter ``name`` from its module's type; None with a ``no-layout`` error
    when no plugin declares one."""
    module, leaf = index.owner(name)
    kind = type(module)
    try:
        with plugin_code():  # a plugin's layout function
            layout = registry.layout(module, leaf)
    except (ValueError, TypeError) as exc:
        message = f"{operator_name(op)} needs the output axis of {name}, and its {kind.__name__} has none: {exc}"
        diags.add("no-layout", message, span, hint=_ELEMENTWISE_HINT)
        return None
    except Exception as exc:
        message = f"the layout of {name}'s {kind.__name__} raised {type(exc).__name__}: {exception_message(exc)}"
        diags.add("broken-operator", message + " (a bug in the plugin declaring it)", span)
        return None
    if layout is None:
        what = f"'{leaf}' of a {kind.__name__}" if leaf != "weight" else f"a {kind.__name__} weight"
        diags.add(
            "no-layout",
            f"{operator_name(op)} needs to know which axis of {name} is the layer's outputs, "
            f"and no plugin declares the layout of {what}",
            span,
            hint=(
                f"declare it in a plugin: @hookimpl def lcdsl_register_layouts(): return "
                f"{{{kind.__module__}.{kind.__qualname__}: Layout(outputs=0, inputs=1)}}; {_ELEMENTWISE_HINT}"
            ),
        )
    return layout

