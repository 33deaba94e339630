"""C-step speed of prune (every form) and lowrank (rank and rank selection).

Usage::

    .venv/bin/python bench/cstep_other.py [--quick] [--device cpu|cuda] [--threads N] [--out PATH]

prune runs on vectors of n = 1e4 … 1e7 weights (1e7 only without ``--quick``); lowrank on
square matrices of side 256 … 4096 (4096 only without ``--quick``). Each time is the median of
3 runs after one warm-up; the log-log slope of time against size says how the cost grows
(≈1 for prune, ≈3 against the side for an SVD). Prints a table and writes JSON
(default ``bench/results/cstep_other.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

from lcdsl.language.spec import Percent
from lcdsl.operators.additive import Additive
from lcdsl.operators.base import Operator
from lcdsl.operators.binary import Binarize, Ternarize
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slope(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(t, 1e-9)) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def prune_cases() -> dict[str, tuple[Operator, float]]:
    """Each prune form with the μ it runs at (penalty forms need μ > 0 to do anything)."""
    return {
        "prune(l0=5%)": (Prune(l0=Percent(5)), 0.0),
        "prune(l1=100)": (Prune(l1=100.0), 0.0),
        "prune(l0_penalty=1e-3)": (Prune(l0_penalty=1e-3), 1.0),
        "prune(l1_penalty=1e-3)": (Prune(l1_penalty=1e-3), 1.0),
        "prune(l0=5%, by=rows)": (Prune(l0=Percent(5), by="rows"), 0.0),
    }


def other_cases() -> dict[str, tuple[Operator, float]]:
    """The other operators on a weight vector: binarize, ternarize, and an additive combination."""
    return {
        "binarize(scale=true)": (Binarize(scale=True), 0.0),
        "ternarize()": (Ternarize(), 0.0),
        "quant(k=2) + prune(l0=1%)": (Additive(terms=(Quant(k=2), Prune(l0=Percent(1)))), 0.0),
    }


def _vector_rows(op: Operator, mu: float, sizes: list[int], gen: torch.Generator, device: torch.device) -> dict:
    """Median C-step time at each size and the log-log slope."""
    rows = []
    for n in sizes:
        w = torch.randn(n, generator=gen).to(device)
        if op.view == "tensor":
            w = w.reshape(-1, 100)  # (n/100, 100): n/100 rows
        resolved = op.resolve(tuple(w.shape))
        rows.append({"n": n, "seconds": timed(lambda: resolved.project(w, mu=mu), device)})
    return {"rows": rows, "slope": slope([r["n"] for r in rows], [r["seconds"] for r in rows])}


def run(quick: bool, device: torch.device) -> dict:
    gen = torch.Generator(device="cpu").manual_seed(0)
    results: dict = {"device": str(device), "torch": torch.__version__, "machine": platform.machine(),
                     "threads": torch.get_num_threads(), "quick": quick, "prune": {}, "lowrank": {}}
    sizes = [10**4, 10**5, 10**6] + ([] if quick else [10**7])
    for key, cases in (("prune", prune_cases()), ("other", other_cases())):
        results[key] = {label: _vector_rows(op, mu, sizes, gen, device) for label, (op, mu) in cases.items()}
    sides = [256, 512, 1024, 2048] + ([] if quick else [4096])
    for label, make in {"lowrank(rank=side/8)": lambda s: LowRank(rank=s // 8),
                        "lowrank(alpha=1e-4)": lambda s: LowRank(alpha=1e-4)}.items():
        rows = []
        for side in sides:
            w = torch.randn(side, side, generator=gen).to(device)
            op = make(side).resolve((side, side))
            rows.append({"side": side, "n": side * side,
                         "seconds": timed(lambda: op.project(w, mu=1.0), device)})
        results["lowrank"][label] = {
            "rows": rows,
            "slope_vs_side": slope([r["side"] for r in rows], [r["seconds"] for r in rows]),
        }
    results["lowrank_vs_svd"] = [_against_full_svd(m, n, r, gen, device) for m, n, r in CONV_MATRICES]
    return results


CONV_MATRICES = ((512, 4608, 64), (256, 2304, 32), (4608, 512, 64))
"""(m, n, rank) of conv weights seen as (out, in·kh·kw) matrices: ResNet-18's 3×3 layers of 512 and
256 channels, and the transposed shape."""


def _against_full_svd(m: int, n: int, r: int, gen: torch.Generator, device: torch.device) -> dict:
    """The rank-r C step against a full ``torch.linalg.svd`` truncated to r, on one (m, n) matrix:
    median times, their ratio, and both objectives ‖W − Δ‖² beside the float64 tail Σ_{i>r} σ_i²."""
    w = torch.randn(m, n, generator=gen).to(device)
    op = LowRank(rank=r).resolve((m, n))

    def full_svd() -> torch.Tensor:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (m, k), (k,), (k, n)
        return (u[:, :r] * s[:r]) @ vh[:r]

    ours = timed(lambda: op.project(w), device)
    theirs = timed(full_svd, device)
    delta = op.decompress(op.project(w), (m, n))
    tail = float(torch.linalg.svdvals(w.double())[r:].square().sum())
    return {
        "m": m, "n": n, "rank": r, "seconds": ours, "svd_seconds": theirs, "speedup": theirs / ours,
        "objective": float((w - delta).double().square().sum()),
        "svd_objective": float((w - full_svd()).double().square().sum()), "tail_float64": tail,
    }  # fmt: skip


def show(results: dict, console: Console) -> None:
    table = Table(title=f"C-step time (median of 3, {results['device']}, {results['threads']} threads)")
    table.add_column("operator")
    table.add_column("size", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("ns / weight", justify="right")
    table.add_column("log-log slope", justify="right")
    for label, entry in {**results["prune"], **results.get("other", {})}.items():
        for i, row in enumerate(entry["rows"]):
            table.add_row(label if i == 0 else "", f"n={row['n']:.0e}", f"{row['seconds']:.4f}",
                          f"{1e9 * row['seconds'] / row['n']:.1f}", f"{entry['slope']:.2f}" if i == 0 else "")
    for label, entry in results["lowrank"].items():
        for i, row in enumerate(entry["rows"]):
            table.add_row(label if i == 0 else "", f"{row['side']}²", f"{row['seconds']:.4f}",
                          f"{1e9 * row['seconds'] / row['n']:.1f}",
                          f"{entry['slope_vs_side']:.2f} (vs side)" if i == 0 else "")
    console.print(table)
    if results.get("lowrank_vs_svd"):
        versus = Table(title="lowrank(rank=r) against a full torch.linalg.svd (same process)")
        for column in ("matrix", "rank", "seconds", "svd seconds", "speed-up", "‖W − Δ‖² / tail", "svd's / tail"):
            versus.add_column(column, justify="right")
        for row in results["lowrank_vs_svd"]:
            versus.add_row(f"{row['m']}×{row['n']}", str(row["rank"]), f"{row['seconds']:.4f}",
                           f"{row['svd_seconds']:.4f}", f"×{row['speedup']:.1f}",
                           f"{row['objective'] / row['tail_float64']:.7f}",
                           f"{row['svd_objective'] / row['tail_float64']:.7f}")
        console.print(versus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip n = 1e7 and 4096² matrices")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--out", help="JSON path (default bench/results/cstep_other.json; --quick: runs/bench/cstep_other-quick.json)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # on a shared machine, oversubscribed BLAS threads spin
    results = run(args.quick, torch.device(args.device))
    show(results, Console())
    here = Path(__file__).parent
    default = here.parent / "runs" / "bench" / "cstep_other-quick.json" if args.quick else here / "results" / "cstep_other.json"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
