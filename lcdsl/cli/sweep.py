"""``lcdsl sweep SPEC --vary 'fc* : prune.l0 = 1%, 2%, 5%'``: the error-against-size trade-off.

``--vary 'fc* : within = 10kB, 20kB, 40kB'`` varies a rule's budget instead; the table and
sweep.json then also say, per variant, what the budget's tasks take against its limit.

Runs ``lcdsl compress`` once per variant (every combination of the ``--vary`` values), all from
one reference (``--reference``, or one trained into ``OUT/reference.pt`` and reused), each into
``OUT/NN-…/``; then writes ``OUT/sweep.json`` and ``OUT/sweep.png`` (test error against size,
the reference marked). A variant that finished is kept on a rerun when it was made from the same
spec text, settings, model, data and reference (``made-from.json``, :func:`lcdsl.report.sweep.reusable`),
and run again, saying why, when anything differs; ``--rerun`` runs every variant again. The sweep
holds the lock on ``OUT`` (:func:`lcdsl.store.atomic.run_lock`), each variant's run the lock on its
own folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from lcdsl.cli.compress import add_settings_arguments, prepare_reference, settings_argv, settings_with_overrides
from lcdsl.cli.train import add_model_data_arguments, load_model_data
from lcdsl.errors import EngineError
from lcdsl.language.parser import load
from lcdsl.plan.budgets import amount_text
from lcdsl.report.console import console, human_bits
from lcdsl.report.sweep import (
    MADE_FROM,
    canonical,
    collect,
    made_from,
    parse_variation,
    plot_tradeoff,
    reusable,
    slug,
    variants,
    write_made_from,
    write_result,
)  # fmt: skip
from lcdsl.store.atomic import check_writable, run_lock, write_atomic
from lcdsl.training.data import example_inputs

__all__ = ["add_parser", "run"]

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sweep`` sub-command."""
    parser = subparsers.add_parser(
        "sweep",
        help="compress with several values of an operator argument or a budget and plot error against size",
        description="Vary arguments of a spec's operators (--vary 'SELECTOR : OPERATOR.ARGUMENT = V1, V2, …', "
        "the selector as the spec writes the rule) or a rule's budget (--vary 'SELECTOR : within = 10kB, 20kB'), "
        "run 'lcdsl compress' for every combination from one "
        "reference model, and write OUT/sweep.json and OUT/sweep.png (test error against size).",
    )
    parser.add_argument("spec", metavar="SPEC", help="the base .lc file")
    parser.add_argument(
        "--vary", metavar="'SEL : OP.ARG = V1, V2, …'", action="append", required=True,
        help="e.g. 'fc* : prune.l0 = 1%%, 2%%, 5%%' or 'fc* : within = 10kB, 20kB' (repeat for a grid)",
    )  # fmt: skip
    add_model_data_arguments(parser)
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--reference", metavar="PATH", help="reference weights (default: train OUT/reference.pt)")
    parser.add_argument("--reference-epochs", metavar="N", type=int, help="epochs of a reference trained here")
    parser.add_argument("--rerun", action="store_true", help="run variants again even if they finished")
    add_settings_arguments(parser, "settings passed to every run (override the spec)")
    parser.set_defaults(func=run)


def _budget_cell(budgets: list[dict[str, Any]]) -> str:
    """``39.2 kB of 40 kB`` per varied budget, ``OVER`` marking one whose tasks take more."""
    return "; ".join(f"{amount_text(b['achieved'], b['unit'])} of {amount_text(b['limit'], b['unit'])}"
                     + ("" if b["within_budget"] else " OVER") for b in budgets)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run every variant and draw the trade-off; returns the exit code."""
    spec = load(args.spec)
    variations = canonical(spec, [parse_variation(text) for text in args.vary])
    todo = variants(spec, variations)
    settings = settings_with_overrides(spec, args)
    folder = check_writable(args.out)
    with run_lock(folder):
        return _sweep(args, variations, todo, settings, folder)


def _sweep(args: argparse.Namespace, variations: list, todo: list, settings: Any, folder: Path) -> int:
    from lcdsl.cli import main

    show = console()
    data, model = load_model_data(args, settings.seed)
    for variant in todo:  # every variant must bind before anything is trained
        variant.spec.bind(model, example_input=example_inputs(data))
    meta = prepare_reference(args, model, data, folder, settings)  # checks it fits model and data
    reference_path = meta["path"]
    reference = {"path": reference_path, "test_error": meta.get("test_error"), "train_error": meta.get("train_error")}

    runs = []
    for index, variant in enumerate(todo):
        run_dir = folder / slug(index, variant)
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / "spec.lc"
        write_atomic(spec_path, lambda fh, text=variant.spec.source: fh.write(text.encode("utf-8")))
        runs.append((variant, run_dir))
        record = made_from(variant, settings=settings_argv(args), model=args.model, data=data.name,
                           data_dir=args.data_dir, loss=args.loss, reference=reference_path)  # fmt: skip
        keep, why = reusable(run_dir, record)
        if keep and not args.rerun:
            show.print(f"[{index + 1}/{len(todo)}] {variant.label}: done before, kept ({run_dir})")
            continue
        if why and not args.rerun:
            show.print(f"[{index + 1}/{len(todo)}] {variant.label}: the results in {run_dir} are {why}: run again")
        (run_dir / MADE_FROM).unlink(missing_ok=True)  # until this run finishes, nothing there is reusable
        show.rule(f"[{index + 1}/{len(todo)}] {variant.label}")
        argv = ["compress", str(spec_path), "--model", args.model, "--data", args.data, "--device", args.device,
                "--reference", reference_path, "--out", str(run_dir), *settings_argv(args)]  # fmt: skip
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if args.loss:
            argv += ["--loss", args.loss]
        code = main(argv)
        if code != 0:
            raise EngineError(f"the run of '{variant.label}' failed (exit code {code}); see its messages above")
        write_made_from(run_dir, record)

    result = collect(runs, reference, spec_path=str(args.spec), variations=variations)
    write_result(folder / "sweep.json", result)
    note = plot_tradeoff(result, folder / "sweep.png", title=f"{Path(args.spec).name}: {args.model} on {args.data}")
    budgeted = any("budgets" in row for row in result["runs"])
    table = Table(title="sweep", title_justify="left")
    for column in ("variant", "size", "ratio", "test error", "direct", *(("budget",) if budgeted else ())):
        table.add_column(column, justify="left" if column == "variant" else "right")
    ref_error = reference["test_error"]
    table.add_row("reference", human_bits(result["reference"]["bits"] or 0), "×1.0",
                  "?" if ref_error is None else f"{100 * ref_error:.2f}%", "", *([""] if budgeted else []),
                  end_section=True)  # fmt: skip
    for row in result["runs"]:
        direct = row["direct_test_error"]
        table.add_row(row["label"], "?" if row["bits"] is None else human_bits(row["bits"]),
                      "?" if row["ratio"] is None else f"×{row['ratio']:.1f}", f"{100 * row['test_error']:.2f}%",
                      "" if direct is None else f"{100 * direct:.2f}%",
                      *([_budget_cell(row.get("budgets", []))] if budgeted else []))  # fmt: skip
    show.print(table)
    if note:
        show.print(note)
    show.print(f"results in {folder}/: sweep.json" + ("" if note else ", sweep.png"))
    return 0
