"""Binding a spec to a model: selectors → tensors, calls → operators, every problem at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch

from lcdsl.errors import Diagnostic, Diagnostics, Span, SpecError, did_you_mean, exception_message
from lcdsl.language.spec import Call, Exclude, JointGroup, NameSelector, Rule, Spec, TypeSelector
from lcdsl.operators.additive import Additive
from lcdsl.operators.base import Operator, View
from lcdsl.operators.layout import Layout
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import buffers_by_name, task_name
from lcdsl.plan.selectors import ModelIndex, is_literal
from lcdsl.plan.settings import Settings, settings_from_spec
from lcdsl.plugins.manager import PluginRaised, plugin_code
from lcdsl.plugins.registry import Registry, default_registry

__all__ = ["bind", "build_operator", "check_spec"]

_QUOTE = "'"


def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else default_registry()


def _origin(op: Any, registry: Registry) -> str:
    """``plugin 'x' (dist version)`` for each term of an operator (or operator class), for messages."""
    parts = []
    for term in getattr(op, "terms", None) or (op,):
        name = getattr(term, "name", type(term).__name__)
        cls = term if isinstance(term, type) else type(term)
        label = "an unknown plugin"
        if registry.operators.get(name) is cls:
            label = f"plugin {registry.provider(name).label()}"
        if label not in parts:
            parts.append(label)
    return ", ".join(parts)


def _broken(what: str, op: Any, exc: Exception, registry: Registry) -> str:
    """The message for plugin code that raised something other than ValueError/TypeError: a bug
    in the plugin, not in the spec, so it names the plugin."""
    raised = exc.original if isinstance(exc, PluginRaised) else exc
    return f"{what} raised {type(raised).__name__}: {raised} (a bug in {_origin(op, registry)})"


def _build_call(call: Call, registry: Registry, diags: Diagnostics) -> Operator | None:
    """One operator from one call, or None with the problems added to ``diags``."""
    try:
        cls = registry.operator(call.name)
    except KeyError:
        names = sorted(registry.operators)
        diags.add(
            "unknown-operator",
            f"unknown operator '{call.name}'{did_you_mean(call.name, names)}",
            call.span,
            hint="operators: " + ", ".join(names) + " (`lcdsl plugins` lists where each comes from)",
        )
        return None
    fields = [a.name for a in attrs.fields(cls)] if attrs.has(cls) else []
    kwargs: dict[str, Any] = {}
    ok = True
    for arg in call.args:
        if arg.name is None:
            diags.add(
                "positional-argument",
                f"{call.name}() takes keyword arguments, e.g. {call.name}({fields[0] if fields else 'x'}=…)",
                arg.span,
            )
            ok = False
        elif arg.name not in fields:
            hint = f"{call.name}() takes " + (", ".join(fields) if fields else "no arguments")
            message = f"{call.name}() has no argument '{arg.name}'{did_you_mean(arg.name, fields)}"
            diags.add("unknown-argument", message, arg.span, hint)
            ok = False
        elif arg.name in kwargs:
            diags.add("repeated-argument", f"{call.name}() got '{arg.name}' twice", arg.span)
            ok = False
        elif isinstance(arg.value, Call):
            diags.add("bad-value", f"{call.name}() argument '{arg.name}' must be a value, not a call", arg.span)
            ok = False
        else:
            kwargs[arg.name] = arg.value
    if not ok:
        return None
    try:
        with plugin_code():
            return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        diags.add("bad-value", f"{call.name}(): {exception_message(exc)}", call.span)
    except Exception as exc:  # a plugin's validator may raise anything
        diags.add("broken-operator", _broken(f"{call.name}()", cls, exc, registry), call.span)
    return None


def build_operator(
    terms: Sequence[Call], *, registry: Registry | None = None, rounds: int = 10
) -> Operator:
    """The operator for a rule's right-hand side: one call, or the additive combination of several.

    Raises:
        SpecError: unknown operators, unknown or repeated arguments, bad values; all together.
    """
    diags = Diagnostics()
    op = _build_terms(terms, _registry(registry), rounds, diags)
    if op is None and not diags:
        diags.add("empty-expression", "empty expression")
    diags.raise_if_any()
    return op


def _build_terms(terms: Sequence[Call], registry: Registry, rounds: int, diags: Diagnostics) -> Operator | None:
    ops = [_build_call(call, registry, diags) for call in terms]
    if any(op is None for op in ops) or not ops:
        return None
    if len(ops) == 1:
        return ops[0]
    return Additive(terms=tuple(ops), rounds=rounds)


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
    registry = _registry(registry)
    diags = Diagnostics()
    settings = _settings(spec, diags)
    ops = {}
    for i, rule in enumerate(spec.rules):
        op = _build_terms(rule.terms, registry, settings.additive_rounds, diags)
        if op is not None:
            ops[i] = op
    diags.raise_if_any(source=spec.source, filename=spec.filename)
    return ops


def _select(
    item: NameSelector | TypeSelector, index: ModelIndex, diags: Diagnostics
) -> list[str]:
    """The parameters one plain selector matches; an error when it matches nothing."""
    if isinstance(item, TypeSelector):
        found = index.match_type(item)
        if not found:
            types = index.module_types()
            diags.add(
                "no-match",
                f"no module of type '{item.type_name}' in the model{did_you_mean(item.type_name, types)}",
                item.span,
                hint="types with weights: " + ", ".join(types),
            )
        return found
    found = index.match_name(item)
    if not found:
        _no_match(item, index, diags)
    return found


def _listed(names: Sequence[str], most: int = 6) -> str:
    """``a, b, c`` or ``a, b, c, … (12)``."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, … ({len(names)})"


def _no_match(item: NameSelector, index: ModelIndex, diags: Diagnostics) -> None:
    """The error for a name selector that matched nothing, saying what the name is when it is something."""
    pattern = item.pattern
    if item.type_name is not None:
        types = index.module_types(under=item)
        if types:
            diags.add(
                "no-match",
                f"no module of type '{item.type_name}' among what '{pattern}' matches{did_you_mean(item.type_name, types)}",
                item.span,
                hint="types there: " + ", ".join(types),
            )
            return
    if pattern in index.modules:
        module = index.modules[pattern]
        kind = type(module).__name__
        children = index.children(pattern)
        own = [f"{pattern}.{n}" for n in module._parameters if f"{pattern}.{n}" in index.parameters]
        if children:
            message = f"'{pattern}' is a {kind} with children {_listed(children)} and no weight of its own"
            hint = f"name them ('{pattern}.*') or their weights ('{pattern}.**')"
        elif own:
            message, hint = f"module '{pattern}' ({kind}) has no weight of its own", f"its parameters: {_listed(own)}"
        else:
            message, hint = f"module '{pattern}' ({kind}) has no parameters", None
        diags.add("no-weight", message, item.span, hint=hint)
        return
    buffers = index.matching_buffers(NameSelector(pattern))
    if buffers:
        hint = None
        if buffers == [pattern]:
            message = f"'{pattern}' is a buffer, not a parameter: only parameters are compressed"
            module = pattern.rpartition(".")[0]
            own = [n for n in index.parameters if n.rpartition(".")[0] == module] if module in index.modules else []
            hint = f"the parameters of '{module}': {_listed(own)}" if own else None
        else:
            message = f"'{pattern}' matches only buffers ({_listed(buffers, 3)}), not parameters: only parameters are compressed"
        diags.add("names-buffer", message, item.span, hint=hint)
        return
    head, _, last = pattern.rpartition(".")
    if head in index.weighted and last in ("*", "**"):
        diags.add(
            "no-match",
            f"'{pattern}' names the modules under '{head}', and it has none",
            item.span,
            hint=f"'{head}' alone means its weight: {index.describe(index.weighted[head])}",
        )
        return
    close = did_you_mean(pattern, index.suggestions())
    diags.add("no-match", f"'{pattern}' matches no parameter of the model{close}", item.span)


def _resolve_items(
    items: Sequence[NameSelector | TypeSelector | Exclude], index: ModelIndex, diags: Diagnostics
) -> tuple[list[str], set[str]]:
    """(included names in model order, excluded names) of plain and excluding selectors."""
    included: list[str] = []
    excluded: set[str] = set()
    for item in items:
        if isinstance(item, Exclude):
            excluded.update(_select(item.selector, index, diags))
        else:
            included.extend(n for n in _select(item, index, diags) if n not in included)
    return included, excluded


_Group = tuple[list[str], bool, "Span | None", "str | None"]
"""(names, joint, span, the group's given name)."""


def _rule_groups(rule: Rule, index: ModelIndex, diags: Diagnostics) -> list[_Group]:
    """The tensor groups of a rule: one per tensor, one per ``[…]``."""
    before = len(diags)
    plain = [s for s in rule.selectors if not isinstance(s, JointGroup)]
    singles, excluded = _resolve_items(plain, index, diags)
    groups: list[_Group] = []
    claimed: dict[str, Span | None] = {}
    for joint in (s for s in rule.selectors if isinstance(s, JointGroup)):
        inner_before = len(diags)
        names, inner_excluded = _resolve_items(joint.items, index, diags)
        names = [n for n in names if n not in excluded and n not in inner_excluded]
        if not names:
            if len(diags) == inner_before:
                diags.add("all-excluded", "this group is empty after its exclusions", joint.span)
            continue
        for n in names:
            if n in claimed:
                diags.add("claimed-twice", f"{index.describe(n, quote=_QUOTE)} is in two groups of this rule", joint.span)
            claimed[n] = joint.span
        groups.append((names, True, joint.span, joint.name))
    for n in singles:
        if n in excluded:
            continue
        if n in claimed:
            message = f"{index.describe(n, quote=_QUOTE)} is both in a joint group and on its own in this rule"
            diags.add("claimed-twice", message, rule.span)
            continue
        groups.append(([n], False, rule.span, None))
    if not groups and len(diags) == before:
        diags.add("all-excluded", "every tensor this rule selects is excluded", rule.span)
    return groups


def _line(span: Span | None) -> str:
    return f"line {span.line}" if span is not None else "another rule"


def bind(spec: Spec, model: torch.nn.Module, *, registry: Registry | None = None) -> Plan:
    """Bind ``spec`` to ``model``.

    Raises:
        SpecError: every problem of the spec, together (selectors matching nothing, tensors
            claimed twice, unknown operators, bad arguments, joint groups an operator cannot
            take, …), with spans and "did you mean" suggestions.
    """
    registry = _registry(registry)
    diags = Diagnostics()
    settings = _settings(spec, diags)
    index = ModelIndex(model)
    owner: dict[str, Rule] = {}
    tasks: list[Task] = []
    named: dict[str, Rule] = {}
    warnings: list[Diagnostic] = []
    for rule in spec.rules:
        op = _build_terms(rule.terms, registry, settings.additive_rounds, diags)
        claimed: list[str] = []
        for names, joint, span, label in _rule_groups(rule, index, diags):
            fresh = []
            for n in names:
                if n in owner:
                    first = owner[n]
                    diags.add(
                        "claimed-twice",
                        f"{index.describe(n, quote=_QUOTE)} is already compressed by the rule on {_line(first.span)}",
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
        warnings += _norm_warnings(rule, claimed, index)
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
        f"{_listed(frozen, 3)} {has} requires_grad=False: compressed in the C step but never trained, "
        f"so LC is direct compression for {them}"
    )
    hint = f"unfreeze {them} (p.requires_grad_(True)) to let the L step move {them} towards Δ(θ)"
    return kept, Diagnostic(message, span, hint, code="frozen-parameter", severity="warning")


def _plain_items(rule: Rule) -> list[NameSelector | TypeSelector]:
    """Every including selector of a rule, those inside joint groups too."""
    items: list[NameSelector | TypeSelector] = []
    for selector in rule.selectors:
        inner = selector.items if isinstance(selector, JointGroup) else (selector,)
        items += [s for s in inner if not isinstance(s, Exclude)]
    return items


def _norm_warnings(rule: Rule, claimed: Sequence[str], index: ModelIndex) -> list[Diagnostic]:
    """A warning when a wildcard selector also claims normalization-layer γ/β.

    Selectors that name them on purpose (a literal name, ``@BatchNorm2d``, ``**@LayerNorm``) do not warn."""
    norms = [n for n in claimed if index.is_norm(n)]
    if not norms:
        return []
    items = _plain_items(rule)
    meant: set[str] = set()
    for item in items:
        if isinstance(item, TypeSelector) or item.type_name is not None or is_literal(item.pattern):
            meant.update(index.match_type(item) if isinstance(item, TypeSelector) else index.match_name(item))
    unmeant = [n for n in norms if n not in meant]
    if not unmeant:
        return []
    item = next(
        (i for i in items if isinstance(i, NameSelector) and set(index.match_name(i)) & set(unmeant)), items[0]
    )
    types = sorted({index.owner_type(n) for n in unmeant})
    pattern = item.pattern if isinstance(item, NameSelector) else "**"
    message = (
        f"'{pattern}' also claims {len(unmeant)} normalization-layer parameter{'s' if len(unmeant) != 1 else ''}"
        f" ({', '.join(types)} γ/β): {_listed(unmeant, 3)}"
    )
    hint = (
        f"exclude them ({', '.join(f'!{pattern}@{t}' for t in types)}), or name them on their own "
        "(e.g. '@" + types[0] + "') if they are meant"
    )
    return [Diagnostic(message, item.span, hint, code="norm-parameters", severity="warning")]


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
        diags.add("does-not-fit", f"{_op_name(op)} cannot take {', '.join(names)}: {exc}", span, hint)
        return None
    except Exception as exc:
        diags.add("broken-operator", _broken(f"{_op_name(op)}.view", op, exc, registry), span)
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
            diags.add("does-not-fit", f"{_op_name(op)} cannot take {names[0]}: {exc}", span)
            return None
        except Exception as exc:
            diags.add("broken-operator", _broken(f"{_op_name(op)}.view", op, exc, registry), span)
            return None
        if view.order is None:
            layout = None  # stored outputs first already: the task reads as one built without a layout
    where = rule.terms[0].span if len(rule.terms) == 1 else rule.span
    try:
        with plugin_code():
            resolved = op.resolve(view.shape)
    except (ValueError, TypeError) as exc:
        message = f"{_op_name(op)} on {task_name(names, joint)} ({view.numel} weights): {exception_message(exc)}"
        diags.add("does-not-fit", message, where)
        return None
    except Exception as exc:
        diags.add("broken-operator", _broken(f"{_op_name(op)}.resolve", op, exc, registry), where)
        return None
    try:  # the plan's size table asks it later; a plugin bug there is found here, located
        with plugin_code():
            resolved.storage(view.shape)
    except Exception as exc:
        diags.add("broken-operator", _broken(f"{_op_name(op)}.storage", resolved, exc, registry), where)
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
        message = f"{_op_name(op)} needs the output axis of {name}, and its {kind.__name__} has none: {exc}"
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
            f"{_op_name(op)} needs to know which axis of {name} is the layer's outputs, "
            f"and no plugin declares the layout of {what}",
            span,
            hint=(
                f"declare it in a plugin: @hookimpl def lcdsl_register_layouts(): return "
                f"{{{kind.__module__}.{kind.__qualname__}: Layout(outputs=0, inputs=1)}}; {_ELEMENTWISE_HINT}"
            ),
        )
    return layout


def _op_name(op: Operator) -> str:
    return getattr(op, "name", type(op).__name__)
