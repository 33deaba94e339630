"""C-step speed and exactness of adaptive quantization (``quant(k=…)``).

For n random normal float32 weights and k codewords, times our exact 1-D k-means (median of
3 runs, 1 run when one takes over 20 s), scikit-learn's ``KMeans(n_clusters=k, n_init=10)`` and
the ``kmeans1d`` package (exact, C++) in the same process, checks that our objective is never
above theirs (relative 1e-9), prints a table and writes ``bench/results/cstep_quant.json``.

Usage::

    .venv/bin/python bench/cstep_quant.py [--quick] [--all-baselines]
    # --quick: n ≤ 1e6; --all-baselines: run the kmeans1d package at n·k ≤ 3e8 in quick mode too
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from cstep_other import slope  # a sibling script: bench/ is on sys.path when run
from rich.console import Console
from rich.table import Table

from lcdsl.operators.quant import Quant

RESULTS = Path(__file__).parent / "results" / "cstep_quant.json"
QUICK_RESULTS = Path(__file__).parent.parent / "runs" / "bench" / "cstep_quant-quick.json"
"""Where ``--quick`` writes, so that a quick run never replaces the full run's numbers."""


def objective(x: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> float:
    """``Σ (x − centres[labels])²`` in float64."""
    return float(((x.astype(np.float64) - np.asarray(centres, dtype=np.float64)[labels]) ** 2).sum())


def time_ours(w: torch.Tensor, k: int) -> tuple[float, float]:
    op = Quant(k=k)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        theta = op.project(w)
        times.append(time.perf_counter() - start)
        if times[0] > 20:
            break
    return statistics.median(times), objective(w.numpy(), theta["codebook"].numpy(), theta["assignments"].numpy())


def time_sklearn(x: np.ndarray, k: int) -> tuple[float, float]:
    from sklearn.cluster import KMeans

    start = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x.reshape(-1, 1))
    elapsed = time.perf_counter() - start
    return elapsed, objective(x, km.cluster_centers_[:, 0], km.labels_)


def time_kmeans1d(x: np.ndarray, k: int) -> tuple[float, float]:
    import kmeans1d

    data = x.astype(np.float64)
    start = time.perf_counter()
    labels, centres = kmeans1d.cluster(data, k)
    elapsed = time.perf_counter() - start
    return elapsed, objective(x, np.array(centres), np.array(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n up to 1e6 only")
    parser.add_argument("--all-baselines", action="store_true", help="kmeans1d package up to n·k = 3e8 with --quick")
    args = parser.parse_args()
    sizes = [10**4, 10**5, 10**6] + ([] if args.quick else [10**7])
    ks = [2, 16, 256]

    # compile (or load the cached kernels) before timing; report what that cost
    start = time.perf_counter()
    Quant(k=3).project(torch.randn(100))
    warmup = time.perf_counter() - start

    rows = []
    for n in sizes:
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        w = torch.from_numpy(x)
        for k in ks:
            row: dict = {"n": n, "k": k}
            row["ours_s"], row["ours_obj"] = time_ours(w, k)
            # scikit-learn: 10 Lloyd runs; skipped where it would take minutes
            if n * k <= 2 * 10**7 and n < 10**7:
                row["sklearn_s"], row["sklearn_obj"] = time_sklearn(x, k)
            # kmeans1d keeps (k, n) float64 and int tables: skipped where that passes ~4 GB
            if n * k <= 3 * 10**8 and not (args.quick and not args.all_baselines and n * k > 10**8):
                row["kmeans1d_s"], row["kmeans1d_obj"] = time_kmeans1d(x, k)
            for other in ("sklearn", "kmeans1d"):
                if f"{other}_obj" in row:
                    theirs = row[f"{other}_obj"]
                    row[f"{other}_ratio"] = row[f"{other}_s"] / row["ours_s"]
                    if row["ours_obj"] > theirs * (1 + 1e-9) + 1e-12:
                        raise AssertionError(f"n={n} k={k}: our objective {row['ours_obj']!r} > {other}'s {theirs!r}")
            rows.append(row)
            print(json.dumps(row), flush=True)

    table = Table(title="quant(k): exact 1-D k-means, C-step time (s) and objective ‖w − Δ(θ)‖²")
    for col in ("n", "k", "ours s", "objective", "sklearn s", "× sklearn", "Δobj sklearn", "kmeans1d s", "× kmeans1d"):
        table.add_column(col, justify="right")

    def fmt(row: dict, key: str, spec: str) -> str:
        return format(row[key], spec) if key in row else "—"

    for r in rows:
        gap = f"{(r['sklearn_obj'] - r['ours_obj']) / r['ours_obj']:+.2e}" if "sklearn_obj" in r else "—"
        table.add_row(
            f"{r['n']:.0e}", str(r["k"]), f"{r['ours_s']:.3f}", f"{r['ours_obj']:.6g}",
            fmt(r, "sklearn_s", ".2f"), fmt(r, "sklearn_ratio", ".1f"), gap,
            fmt(r, "kmeans1d_s", ".2f"), fmt(r, "kmeans1d_ratio", ".1f"),
        )
    Console(width=160).print(table)
    slopes = {k: slope([r["n"] for r in rows if r["k"] == k], [r["ours_s"] for r in rows if r["k"] == k]) for k in ks}
    print("log-log slope of our time against n: " + ", ".join(f"k={k}: {v:.2f}" for k, v in slopes.items()))
    print(f"first call in this process (numba compile or cache load): {warmup:.2f} s")

    out = QUICK_RESULTS if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "bench/cstep_quant.py" + (" --quick" if args.quick else "")
                + (" --all-baselines" if args.all_baselines else ""),
                "machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "processor": platform.processor()},
                "first_call_s": warmup,
                "slopes": slopes,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
