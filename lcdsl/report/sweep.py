"""Sweeps: one spec, one argument of one rule's operator varied, the error-against-size curve.

A variation names the rule by its selector text as the spec writes it, then the operator and
the argument, then the values, in the spec's own syntax::

    fc* : prune.l0 = 1%, 2%, 5%, 10%
    [fc1, fc2] : quant.k = 2, 4, 8
    fc2 : lowrank.rank = 5, 10, 20

or the rule's budget, ``within``, then amounts as a spec's ``within`` takes them
(:mod:`lcdsl.report.sweep_budgets`)::

    fc* : within = 10kB, 20kB, 40kB
    conv* : within = 20% flops, 40% flops

The selector is compared with each rule's selectors in canonical form, whitespace ignored (so
``@Linear,!fc2`` names the rule ``@Linear, !fc2 : …``); values are parsed as spec values
(``5%``, ``0.05``, ``[-1, 0, 1]``), never evaluated. Several variations make a grid (every
combination). Each variant is a whole spec, run by ``lcdsl compress`` against one shared
reference; :func:`collect` gathers their reports and :func:`plot_tradeoff` draws test error
against size, with the reference model marked (and, for a budget of storage, each variant's
limit as a tick at the model size it allows).

A finished variant's folder keeps ``made-from.json`` (:func:`made_from`): its spec text, the
settings given on the command line, the model, data and loss names, the reference file's sha256
and the lcdsl version. A variant is kept on a rerun only when all of them are the same
(:func:`reusable`); otherwise it runs again, and the sweep says what differs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import attrs

from lcdsl._version import __version__
from lcdsl.errors import Diagnostic, EngineError, SpecError
from lcdsl.formats import SWEEP_FORMAT
from lcdsl.language.fmt import format_expression, format_value
from lcdsl.language.parser import parse
from lcdsl.language.spec import Argument, Call, Rule, Setting, Spec, Value, Within
from lcdsl.report.run import pyplot, save_figure
from lcdsl.report.sweep_budgets import BudgetVariation, budget_results, parse_amounts, selector_text
from lcdsl.store.atomic import write_atomic

__all__ = [
    "SWEEP_FORMAT",
    "Variation",
    "BudgetVariation",
    "Variant",
    "parse_variation",
    "variants",
    "canonical",
    "slug",
    "collect",
    "plot_tradeoff",
    "write_result",
    "MADE_FROM",
    "made_from",
    "reusable",
    "write_made_from",
]

MADE_FROM = "made-from.json"
"""The file in a variant's folder that records what its results were made from."""

_HEAD = re.compile(r"^\s*(?P<selector>.+?)\s*:\s*(?P<op>[A-Za-z_]\w*)\.(?P<arg>[A-Za-z_]\w*)\s*$")
_BUDGET_HEAD = re.compile(r"^\s*(?P<selector>.+?)\s*:\s*within\s*$")
_FORMS = "expected SELECTOR : OPERATOR.ARGUMENT = V1, V2, … or SELECTOR : within = AMOUNT1, AMOUNT2, …"


def _error(message: str, text: str, hint: str | None = None) -> SpecError:
    return SpecError(Diagnostic(f"{message} in '{text}'", hint=hint, code="bad-variation"), filename="--vary")


@attrs.frozen
class Variation:
    """One argument of one rule's operator, and the values it takes."""

    selector: str
    """The rule's selector text, e.g. ``fc*`` or ``[fc1, fc2]``."""
    operator: str
    """The operator's name in that rule, e.g. ``prune``."""
    argument: str
    """The argument's keyword, e.g. ``l0``."""
    values: tuple[Value, ...] = attrs.field(converter=tuple)
    """The values, as spec values."""

    @property
    def key(self) -> str:
        """``fc*: prune.l0``: the variation's name in :attr:`Variant.values` and sweep.json."""
        return f"{self.selector}: {self.operator}.{self.argument}"

    def label(self, value: Value) -> str:
        """``fc*: prune.l0=5%``."""
        return f"{self.selector}: {self.operator}.{self.argument}={format_value(value)}"


@attrs.frozen
class Variant:
    """One spec of a sweep."""

    label: str
    """What differs from the base spec, e.g. ``fc*: prune.l0=5%``."""
    values: dict[str, Value | Within]
    """The value of each variation, by its :attr:`~Variation.key` (``selector: operator.argument``,
    or ``selector: within`` for a budget)."""
    spec: Spec
    """The whole spec (its ``source`` is the canonical text)."""


AnyVariation = Union[Variation, BudgetVariation]
"""What one ``--vary`` option says: an operator argument or a rule's budget varied."""


def parse_variation(text: str) -> AnyVariation:
    """``SELECTOR : OPERATOR.ARGUMENT = V1, V2, …`` as a :class:`Variation`, or
    ``SELECTOR : within = AMOUNT1, AMOUNT2, …`` as a :class:`BudgetVariation`.

    Raises:
        SpecError: the text has neither form, a value is not a spec value, or an amount is not
            one a spec's ``within`` takes (located in the text).
    """
    head, eq, tail = text.partition("=")
    match = _HEAD.match(head)
    budget = _BUDGET_HEAD.match(head)
    if not eq or (match is None and budget is None):
        raise _error(_FORMS, text, hint="e.g. 'fc* : prune.l0 = 1%, 5%' or 'fc* : within = 10kB, 20kB'")
    if not tail.strip():
        raise _error("no values after '='", text)
    if budget is not None:
        return BudgetVariation(" ".join(budget["selector"].split()), parse_amounts(text, len(head) + 1))
    try:
        setting = parse(f"values = [{tail}]\n", filename="--vary").statements[0]
    except SpecError as exc:
        raise _error(f"the values are not a list of spec values ({exc.diagnostics[0].message})", text) from exc
    values = setting.value if isinstance(setting, Setting) else ()
    if len(set(map(format_value, values))) != len(values):
        raise _error("a value is given twice", text)
    return Variation(" ".join(match["selector"].split()), match["op"], match["arg"], values)


def _squash(text: str) -> str:
    return "".join(text.split())


def _locate(spec: Spec, variation: AnyVariation) -> tuple[int, int | None]:
    """(statement index, term index) of the call a variation changes; (statement index, None)
    for a budget."""
    rules = [(i, s) for i, s in enumerate(spec.statements) if isinstance(s, Rule)]
    matches = [(i, s) for i, s in rules if _squash(selector_text(s)) == _squash(variation.selector)]
    if isinstance(variation, BudgetVariation):
        name = f"{variation.selector} : within"
    else:
        name = f"{variation.selector} : {variation.operator}.{variation.argument}"
    if not matches:
        known = ", ".join(f"'{selector_text(s)}'" for _, s in rules)
        raise _error(f"no rule has the selector '{variation.selector}'", name, hint=f"the rules' selectors: {known}")
    if len(matches) > 1:
        raise _error(f"{len(matches)} rules have the selector '{variation.selector}'", name)
    index, rule = matches[0]
    if isinstance(variation, BudgetVariation):
        if rule.budget is None:
            what = f"the rule '{selector_text(rule)} : {format_expression(rule.terms)}' has no budget to vary"
            raise _error(what, name, hint="give the rule a 'within …' in the spec (with a range or auto to choose by)")
        return index, None
    terms = [t for t, call in enumerate(rule.terms) if call.name == variation.operator]
    if len(terms) != 1:
        ops = " + ".join(call.name for call in rule.terms)
        what = "no" if not terms else "more than one"
        raise _error(f"the rule '{selector_text(rule)} : …' has {what} '{variation.operator}' term", name,
                     hint=f"its operators: {ops}")  # fmt: skip
    return index, terms[0]


def canonical(spec: Spec, variations: Sequence[AnyVariation]) -> list[AnyVariation]:
    """The variations with their selectors as ``fmt`` writes the rules' (``@Linear, !fc2``).

    Raises:
        SpecError: a variation names no rule, several rules, an operator the rule lacks, or the
            budget of a rule without one.
    """
    out = []
    for variation in variations:
        index, _ = _locate(spec, variation)
        out.append(attrs.evolve(variation, selector=selector_text(spec.statements[index])))
    return out


def _with_argument(call: Call, name: str, value: Value) -> Call:
    args = [a for a in call.args if a.name != name]
    position = next((i for i, a in enumerate(call.args) if a.name == name), len(args))
    args.insert(position, Argument(name, value))
    return attrs.evolve(call, args=tuple(args))


def _changed(rule: Rule, term: int | None, variation: AnyVariation, value: Value | Within) -> Rule:
    """``rule`` with the variation's value: its ``within`` replaced, or one call's argument."""
    if isinstance(variation, BudgetVariation):
        return attrs.evolve(rule, budget=value)
    terms = list(rule.terms)
    terms[term] = _with_argument(terms[term], variation.argument, value)
    return attrs.evolve(rule, terms=tuple(terms))


def variants(spec: Spec, variations: Sequence[AnyVariation]) -> list[Variant]:
    """Every combination of the variations' values, each as a whole spec.

    Raises:
        SpecError: a variation names no rule (or several), an operator the rule lacks, or the
            budget of a rule without one; or two variations change the same argument or budget.
    """
    variations = canonical(spec, variations)
    places = [_locate(spec, v) for v in variations]
    keys = [(p, "within" if isinstance(v, BudgetVariation) else v.argument) for p, v in zip(places, variations)]
    if len(set(keys)) != len(keys):
        diag = Diagnostic("two --vary options change the same argument (or budget)", code="bad-variation")
        raise SpecError(diag, filename="--vary")
    out = []
    for combo in itertools.product(*(v.values for v in variations)):
        statements = list(spec.statements)
        for (index, term), variation, value in zip(places, variations, combo):
            statements[index] = _changed(statements[index], term, variation, value)
        text = attrs.evolve(spec, statements=tuple(statements)).format()
        label = "; ".join(v.label(value) for v, value in zip(variations, combo))
        values = {v.key: value for v, value in zip(variations, combo)}
        out.append(Variant(label, values, parse(text, filename=f"variant '{label}'")))
    return out


def _slug_part(key: str, value: Value | Within) -> str:
    """``prune.l0-5%``; for a budget the rule's selector too, words apart: ``fc-within-30%-flops``."""
    selector, what = key.rsplit(": ", 1)
    if not isinstance(value, Within):
        return f"{what}-{format_value(value)}"
    words = re.findall(r"[A-Za-z0-9._]+", selector) + [what, *value.text.split()]
    return "-".join(words)


def slug(index: int, variant: Variant) -> str:
    """A folder name for a variant: ``03-prune.l0-5pct``, ``01-fc-within-10kB``."""
    text = "_".join(_slug_part(key, value) for key, value in variant.values.items()).replace("%", "pct")
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9._-]+", "", text)[:60]


def _json_value(value: Value | Within) -> Any:
    if isinstance(value, Within):
        return value.text
    return value if isinstance(value, (int, float, str, bool)) else format_value(value)


def _variation_json(variation: AnyVariation) -> dict[str, Any]:
    """A variation in sweep.json; a budget's has ``operator`` null and ``argument`` ``within``."""
    if isinstance(variation, BudgetVariation):
        operator, argument = None, "within"
    else:
        operator, argument = variation.operator, variation.argument
    return {"selector": variation.selector, "operator": operator, "argument": argument,
            "values": [_json_value(x) for x in variation.values]}  # fmt: skip


_REPORT_KEYS = {"size": ("bits_before", "bits_after", "ratio"), "final": ("test_error", "train_error")}
"""What :func:`collect` reads of each variant's report.json."""


def _read_report(path: Path) -> dict[str, Any]:
    """A variant's report.json, checked to hold what :func:`collect` reads.

    Raises:
        EngineError: it is not JSON, or not an object with those keys."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: cannot read it as JSON: {exc}") from exc
    for section, keys in _REPORT_KEYS.items():
        part = report.get(section) if isinstance(report, dict) else None
        if not isinstance(part, dict) or any(key not in part for key in keys):
            raise EngineError(f"{path}: not the report.json of an lcdsl run ('{section}' lacks {', '.join(keys)})")
    return report


def collect(runs: Sequence[tuple[Variant, Path]], reference: dict[str, Any], *, spec_path: str,
            variations: Sequence[AnyVariation]) -> dict[str, Any]:  # fmt: skip
    """sweep.json's content from the variants' ``report.json`` files.

    When a budget is varied, each run also has ``budgets``: per budget variation its limit, what
    the run achieved and whether that is within the limit (:func:`~lcdsl.report.sweep_budgets.budget_results`).

    Raises:
        EngineError: a variant's report is missing or malformed, or lacks a varied budget's allocation.
    """
    budgeted = [v for v in variations if isinstance(v, BudgetVariation)]
    rows = []
    bits_before = None
    for variant, folder in runs:
        path = folder / "report.json"
        if not path.is_file():
            raise EngineError(f"{path}: missing (did the run of '{variant.label}' fail?)")
        report = _read_report(path)
        size, final = report["size"], report["final"]
        bits_before = size["bits_before"]
        rows.append({
            "label": variant.label,
            "values": {k: _json_value(v) for k, v in variant.values.items()},
            "dir": str(folder),
            "spec": variant.spec.source,
            "bits": size["bits_after"],
            "ratio": size["ratio"],
            "test_error": final["test_error"],
            "train_error": final["train_error"],
            "direct_test_error": final.get("direct_compression", {}).get("test_error"),
        })  # fmt: skip
        if budgeted:
            rows[-1]["budgets"] = budget_results(report, variant.spec, budgeted, path=str(path))
    return {
        "format": SWEEP_FORMAT,
        "spec": spec_path,
        "variations": [_variation_json(v) for v in variations],
        "reference": {**reference, "bits": bits_before},
        "runs": rows,
    }


def _allowed_sizes(run: dict[str, Any], kb: float) -> list[float]:
    """The model sizes (kB) a run's storage budgets allow: its size with each budgeted rule at its
    limit instead of what it achieved (a point left of its tick is within the budget)."""
    return [kb + (b["limit"] - b["achieved"]) / 8000 for b in run.get("budgets", ()) if b["unit"] == "bits"]


def plot_tradeoff(result: dict[str, Any], path: str | Path, title: str = "") -> str | None:
    """Test error against size (log scale) of every run, the reference marked, and for a varied
    storage budget a tick at the size each run's limit allows; PNG at ``path``.

    Returns:
        None when the plot was written; a one-line note when matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return "sweep.png skipped: matplotlib is not installed (pip install matplotlib)"
    runs = sorted((r for r in result["runs"] if r["bits"] is not None), key=lambda r: r["bits"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kb = [r["bits"] / 8000 for r in runs]
    ax.plot(kb, [100 * r["test_error"] for r in runs], marker="o", label="LC")
    for r, x in zip(runs, kb):
        text = ", ".join(f"{v}" for v in r["values"].values())
        ax.annotate(text, (x, 100 * r["test_error"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    direct = [(x, 100 * r["direct_test_error"]) for r, x in zip(runs, kb) if r["direct_test_error"] is not None]
    if direct:
        ax.plot(*zip(*direct), marker="x", linestyle=":", color="tab:gray", label="direct compression")
    ticks = [(x, 100 * r["test_error"]) for r, x in zip(runs, kb) for x in _allowed_sizes(r, x)]
    if ticks:
        ax.plot(*zip(*ticks), marker="|", markersize=16, linestyle="none", color="tab:green",
                label="budget: the size it allows")  # fmt: skip
    ref = result["reference"]
    if ref.get("bits") and ref.get("test_error") is not None:
        ax.plot([ref["bits"] / 8000], [100 * ref["test_error"]], marker="*", markersize=14, color="tab:red",
                linestyle="none", label="reference (32-bit)")  # fmt: skip
        ax.axhline(100 * ref["test_error"], color="tab:red", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("size (kB, dense leftovers included)")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if title:
        ax.set_title(title)
    save_figure(fig, path)
    return None


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write sweep.json, atomically."""
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def made_from(variant: Variant, *, settings: Sequence[str], model: str, data: str, data_dir: str | None,
              loss: str | None, reference: str | Path) -> dict[str, Any]:  # fmt: skip
    """What a variant's results are made from: the record :func:`reusable` compares.

    Args:
        settings: the settings options given on the command line, as words (``["--lr", "0.1"]``).
        reference: the reference file; its content counts (sha256), not its name."""
    return {
        "spec": variant.spec.source, "settings": list(settings), "model": model, "data": data,
        "data_dir": data_dir, "loss": loss, "reference_sha256": _sha256(reference), "lcdsl": __version__,
    }  # fmt: skip


def reusable(folder: Path, ours: dict[str, Any]) -> tuple[bool, str]:
    """Whether the variant results in ``folder`` were made from ``ours`` (and are whole).

    Returns:
        ``(True, "")`` to keep them; ``(False, why)`` to run the variant again, ``why`` empty
        when there is nothing to keep."""
    if not (folder / "report.json").is_file() or not (folder / "compressed.pt").is_file():
        return False, ""
    try:
        saved = json.loads((folder / MADE_FROM).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        return False, f"of unknown origin (no readable {MADE_FROM})"
    changed = [key for key in ours if saved.get(key) != ours[key]]
    if changed:
        names = {"spec": "the spec text", "settings": "the settings", "model": "the model", "data": "the data",
                 "data_dir": "--data-dir", "loss": "--loss", "reference_sha256": "the reference weights",
                 "lcdsl": "the lcdsl version"}  # fmt: skip
        return False, f"stale ({' and '.join(names.get(k, k) for k in changed)} changed)"
    return True, ""


def write_made_from(folder: Path, record: dict[str, Any]) -> None:
    """Write ``made-from.json`` after the variant's run finished."""
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    write_atomic(folder / MADE_FROM, lambda fh: fh.write(text.encode("utf-8")))
