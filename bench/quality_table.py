"""The hand-schedule against ``auto`` table, from the run folders ``bench/quality.py`` left.

``quality.py`` runs a row once per seed and schedule, each in its own folder of ``--work``
(``<row>-seed<s>`` with the spec's μ schedule, ``<row>-auto-seed<s>`` with ``--schedule auto``;
``--tag T`` puts ``-T`` after the row). Runs of one table are often made by several processes
(one a row and seed, to use every core); this script reads their ``report.json`` files and
writes the table: per row and schedule, every seed's final test error, final ``‖w − Δ(θ)‖²``
and its ratio to direct compression's (converged when ≤ 1e-3), the size, and median and spread;
beside them the plain LC loop's final error (``quality.py --straightforward``'s results, when
given). Folders that are missing are reported as missing, never filled in.

Usage::

    .venv/bin/python bench/quality_table.py --work runs/bench --seeds 0,1,2 \\
        --rows quant,mixed,prune,lowrank,additive,rankselect \\
        --plain bench/results/quality-lenet300-straightforward.json \\
        --out bench/results/quality-lenet300-schedules.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CONVERGED = 1e-3
"""Final ``‖w − Δ(θ)‖²`` over direct compression's at or below which a run counts as converged."""


def run_record(folder: Path) -> dict[str, Any] | None:
    """One run's numbers from its ``report.json`` (None when the run is missing or unfinished)."""
    report = folder / "report.json"
    if not report.is_file():
        return None
    data = json.loads(report.read_text())
    steps = data["steps"]
    direct, last = steps[0]["distortion"], steps[-1]["distortion"]
    settings = data["settings"]
    lc_steps = len(steps) - 1
    return {
        "folder": folder.name,
        "final_error": data["final"]["test_error"],
        "direct_error": data["final"]["direct_compression"]["test_error"],
        "distortion_direct": direct,
        "distortion_last": last,
        "distortion_ratio": last / direct if direct > 0 else 0.0,
        "converged": direct > 0 and last / direct <= CONVERGED,
        "lc_steps": lc_steps,
        "epochs": settings["first_epochs"] + settings["epochs"] * max(lc_steps - 1, 0),
        "mu_last": steps[-1]["mu"],
        "params": data["size"]["params_after"] + data["size"]["dense_params"],
        "ratio": data["size"]["ratio"],
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    finals = [r["final_error"] for r in runs]
    return {
        "median_error": statistics.median(finals),
        "spread": max(finals) - min(finals),
        "all_converged": all(r["converged"] for r in runs),
        "worst_distortion_ratio": max(r["distortion_ratio"] for r in runs),
    }


def collect(
    work: Path, rows: list[str], seeds: list[int], hand_tags: dict[str, str], hand_table: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every row's runs under both schedules, with what is missing named; with ``hand_table`` (an
    earlier table's ``rows``), the hand column is that table's, as it was measured."""
    table: dict[str, Any] = {}
    for row in rows:
        entry: dict[str, Any] = {}
        if hand_table is not None:
            entry["hand"] = hand_table[row]["hand"]
        for schedule, infix in (("hand", hand_tags.get(row, "")), ("auto", "auto")):
            if schedule in entry:
                continue
            name = row + (f"-{infix}" if infix else "")
            runs, missing = [], []
            for seed in seeds:
                record = run_record(work / f"{name}-seed{seed}")
                if record is None:
                    missing.append(seed)
                else:
                    runs.append({"seed": seed, **record})
            entry[schedule] = {"runs": runs, "missing_seeds": missing, **(_summary(runs) if runs else {})}
        table[row] = entry
    return table


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render(table: dict[str, Any], plain: dict[str, float]) -> Table:
    out = Table(title="the spec's μ schedule against auto (final test error %)")
    for column in ("row", "schedule", "per seed", "median", "spread", "final ‖w−Δ‖² / direct", "size", "plain loop"):
        out.add_column(column)
    for row, entry in table.items():
        for schedule in ("hand", "auto"):
            cell = entry[schedule]
            runs = cell["runs"]
            seeds = " / ".join(_pct(r["final_error"]) for r in runs) + (
                f" (seeds {cell['missing_seeds']} missing)" if cell["missing_seeds"] else ""
            )
            ratios = " / ".join(f"{r['distortion_ratio']:.1e}" for r in runs)
            size = f"×{statistics.median(r['ratio'] for r in runs):.1f}" if runs else "—"
            out.add_row(
                row, schedule, seeds or "—", _pct(cell["median_error"]) if runs else "—",
                f"{100 * cell['spread']:.2f}" if runs else "—", ratios or "—", size,
                _pct(plain[row]) if schedule == "hand" and row in plain else "",
            )  # fmt: skip
    return out


def markdown(table: dict[str, Any], plain: dict[str, float]) -> str:
    """The table as Markdown, for docs/benchmarks.md."""
    lines = [
        "| row | schedule | final test error per seed (%) | median | spread | final ‖w − Δ(θ)‖² / direct | size "
        "| plain loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, entry in table.items():
        for schedule in ("hand", "auto"):
            cell = entry[schedule]
            runs = cell["runs"]
            seeds = " / ".join(_pct(r["final_error"]) for r in runs) or "—"
            if cell["missing_seeds"]:
                seeds += f" (seed {', '.join(map(str, cell['missing_seeds']))}: not run)"
            ratios = " / ".join(f"{r['distortion_ratio']:.1e}" for r in runs) or "—"
            median = _pct(cell["median_error"]) if runs else "—"
            spread = f"{100 * cell['spread']:.2f}" if len(runs) > 1 else "—"
            size = f"×{statistics.median(r['ratio'] for r in runs):.1f}" if runs else "—"
            baseline = _pct(plain[row]) if schedule == "hand" and row in plain else ""
            lines.append(f"| {row} | {schedule} | {seeds} | {median} | {spread} | {ratios} | {size} | {baseline} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/bench", help="quality.py's --work folder")
    parser.add_argument("--rows", default="quant,mixed,prune,lowrank,additive,rankselect")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--hand-tag", action="append", default=[], metavar="ROW=TAG",
                        help="the hand runs of ROW were made with quality.py --tag TAG")  # fmt: skip
    parser.add_argument(
        "--hand-from", metavar="JSON",
        help="take the hand column from an earlier table written with --out (fixed schedules run the same "
        "whatever auto's rules are), and read only the auto runs from --work",
    )  # fmt: skip
    parser.add_argument("--plain", help="quality.py --straightforward's results JSON (the plain LC loop)")
    parser.add_argument("--out", help="where to write the table as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown instead")
    args = parser.parse_args(argv)
    hand_tags = dict(item.split("=", 1) for item in args.hand_tag)
    seeds = [int(s) for s in args.seeds.split(",")]
    hand_table = json.loads(Path(args.hand_from).read_text())["rows"] if args.hand_from else None
    table = collect(Path(args.work), args.rows.split(","), seeds, hand_tags, hand_table)
    plain: dict[str, float] = {}
    if args.plain:
        plain = {r["name"]: r["final_error"] for r in json.loads(Path(args.plain).read_text())["rows"]}
    if args.markdown:
        print(markdown(table, plain))
    else:
        Console(width=200).print(render(table, plain))
    if args.out:
        Path(args.out).write_text(json.dumps({"seeds": seeds, "rows": table, "plain_loop": plain}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
