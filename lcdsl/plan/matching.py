"""Which tensors a rule names: its selectors against the model's names, grouped into tasks.

Every selector that matches nothing says what the name is instead (a container and its children,
a buffer, a leaf without parameters, a tied alias); a wildcard that also claims normalization
layers' γ/β gives a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

from lcdsl.errors import Diagnostic, Diagnostics, Span, did_you_mean
from lcdsl.language.spec import Exclude, JointGroup, NameSelector, Rule, TypeSelector
from lcdsl.plan.selectors import ModelIndex, is_literal

__all__ = ["QUOTE", "Group", "rule_groups", "listed", "norm_warnings"]

QUOTE = "'"
"""How tensor names are quoted in messages."""


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

def listed(names: Sequence[str], most: int = 6) -> str:
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
            message = f"'{pattern}' is a {kind} with children {listed(children)} and no weight of its own"
            hint = f"name them ('{pattern}.*') or their weights ('{pattern}.**')"
        elif own:
            message, hint = f"module '{pattern}' ({kind}) has no weight of its own", f"its parameters: {listed(own)}"
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
            hint = f"the parameters of '{module}': {listed(own)}" if own else None
        else:
            message = f"'{pattern}' matches only buffers ({listed(buffers, 3)}), not parameters: only parameters are compressed"
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


Group = tuple[list[str], bool, "Span | None", "str | None"]
"""(names, joint, span, the group's given name)."""


def rule_groups(rule: Rule, index: ModelIndex, diags: Diagnostics) -> list[Group]:
    """The tensor groups of a rule: one per tensor, one per ``[…]``."""
    before = len(diags)
    plain = [s for s in rule.selectors if not isinstance(s, JointGroup)]
    singles, excluded = _resolve_items(plain, index, diags)
    groups: list[Group] = []
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
                diags.add("claimed-twice", f"{index.describe(n, quote=QUOTE)} is in two groups of this rule", joint.span)
            claimed[n] = joint.span
        groups.append((names, True, joint.span, joint.name))
    for n in singles:
        if n in excluded:
            continue
        if n in claimed:
            message = f"{index.describe(n, quote=QUOTE)} is both in a joint group and on its own in this rule"
            diags.add("claimed-twice", message, rule.span)
            continue
        groups.append(([n], False, rule.span, None))
    if not groups and len(diags) == before:
        diags.add("all-excluded", "every tensor this rule selects is excluded", rule.span)
    return groups

def _plain_items(rule: Rule) -> list[NameSelector | TypeSelector]:
    """Every including selector of a rule, those inside joint groups too."""
    items: list[NameSelector | TypeSelector] = []
    for selector in rule.selectors:
        inner = selector.items if isinstance(selector, JointGroup) else (selector,)
        items += [s for s in inner if not isinstance(s, Exclude)]
    return items

def norm_warnings(rule: Rule, claimed: Sequence[str], index: ModelIndex) -> list[Diagnostic]:
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
        f" ({', '.join(types)} γ/β): {listed(unmeant, 3)}"
    )
    hint = (
        f"exclude them ({', '.join(f'!{pattern}@{t}' for t in types)}), or name them on their own "
        "(e.g. '@" + types[0] + "') if they are meant"
    )
    return [Diagnostic(message, item.span, hint, code="norm-parameters", severity="warning")]
