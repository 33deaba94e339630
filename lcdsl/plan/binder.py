"""Binding a spec to a model: selectors → tensors (:mod:`.matching`), calls → operators
(:mod:`.calls`), tasks checked against their tensors; every problem at once."""

from __future__ import annotations

import attrs
import torch

from lcdsl.errors import Diagnostic, Diagnostics, Span, SpecError, exception_message
from lcdsl.language.spec import Rule, Spec
from lcdsl.operators.base import Operator, View
from lcdsl.operators.layout import Layout
from lcdsl.plan.calls import broken_message, build_operator, build_terms, operator_name, registry_or_default
from lcdsl.plan.matching import QUOTE, listed, norm_warnings, rule_groups
from lcdsl.plan.model import Plan, Task
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
        The operator of each rule, by the rule's index in ``spec.rules``.

    Raises:
        SpecError: every problem, together.
    """
    registry = registry_or_default(registry)
    diags = Diagnostics()
    settings = _settings(spec, diags)
    ops = {}
    for i, rule in enumerate(spec.rules):
        op = build_terms(rule.terms, registry, settings.additive_rounds, diags)
        if op is not None:
            ops[i] = op
    diags.raise_if_any(source=spec.source, filename=spec.filename)
    return ops


def _line(span: Span | None) -> str:
    return f"line {span.line}" if span is not None else "another rule"


def bind(spec: Spec, model: torch.nn.Module, *, registry: Registry | None = None) -> Plan:
    """Bind ``spec`` to ``model``.

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
    for rule in spec.rules:
        op = build_terms(rule.terms, registry, settings.additive_rounds, diags)
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
            task = _make_task(fresh, joint, op, rule, span, index, registry, diags)
            if task is not None:
                tasks.append(attrs.evolve(task, label=label) if label is not None else task)
        warnings += norm_warnings(rule, claimed, index)
    for task in tasks:
        if task.label is None and task.name in named:  # a root parameter called like a group
            message = f"the name '{task.name}' is already the name of a task on {_line(task.rule.span if task.rule else None)}"
            diags.add("repeated-name", message, named[task.name].span, hint="give the joint group another name")
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
    )


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

