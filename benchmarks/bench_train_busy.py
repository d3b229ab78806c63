"""Benchmark: the `leadml-train` train stage quiet and with a CPU burner per core (issue 21).

A shared server, a Kubernetes pod with a CPU limit or a CI runner is a busy machine: training
must slow down in proportion to the CPU it gets, not collapse. This runs the train stage
(``prepare=never``, features copied from ``data/features``) in a fresh folder, first quiet and
then while one busy Python loop per core holds the cores (started and stopped by this script),
under each OpenMP wait policy asked for (``leadml`` is the shipped default, ``omp_wait_policy``
from the config; ``active`` is libgomp's spinning wait). The work is fixed so the two runs do the
same: ``selection.trials`` trials, an unbounded ``selection.seconds`` (the default budget is in
seconds, and a busy machine would simply run fewer trials) and no recency-weighted variants.

From the run's MLflow record it also splits the quiet stage into model fitting (selection, fit,
refit) and everything else (leakage sentinel, calibration, evaluation, explanations, plots, report,
logging, registration).

Needs the default features (``make features``).

    .venv/bin/python benchmarks/bench_train_busy.py [--policies passive active] [--trials 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench_features import machine, replace_section
from bench_threads import burners

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / "data" / "features" / "synthetic"
BEGIN, END = "<!-- train-busy:begin -->", "<!-- train-busy:end -->"
FITTING = ("select", "fit", "refit")


def stage(workdir: Path, policy: str, trials: int) -> tuple[float, dict[str, float]]:
    """Wall seconds of one train stage in a fresh folder, and its ``seconds.*`` record."""
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(FEATURES, workdir / "data" / "features" / "synthetic")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    started = time.perf_counter()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "leadml-train"),
            f"paths.root={workdir}",
            "prepare=never",
            "mlflow.tracking_uri=null",
            f"selection.trials={trials}",
            "selection.seconds=100000",
            "selection.recency=[]",
            f"omp_wait_policy={policy}",
        ],
        check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, timeout=7200,
    )  # fmt: skip
    wall = time.perf_counter() - started
    print(f"{policy}: {wall:.1f} s", flush=True)
    with sqlite3.connect(workdir / "mlflow.db") as db:
        rows = db.execute("select key, value from metrics where key like 'seconds.%'").fetchall()
    return wall, {key.removeprefix("seconds."): value for key, value in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["passive", "active"])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench" / "train-busy")
    args = parser.parse_args()
    if not FEATURES.exists():
        raise SystemExit(f"{FEATURES} not found: run make features first")
    cores = len(os.sched_getaffinity(0))
    quiet = {policy: stage(args.workdir, policy, args.trials) for policy in args.policies}
    with burners(cores):
        busy = {policy: stage(args.workdir, policy, args.trials)[0] for policy in args.policies}
    lines = [
        BEGIN,
        "## The train stage on a busy machine (issue 21)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()} with "
        f"`.venv/bin/python benchmarks/bench_train_busy.py --policies {' '.join(args.policies)} "
        f"--trials {args.trials}`: `leadml-train prepare=never selection.trials={args.trials} "
        "selection.seconds=100000 selection.recency=[]` on the default features in a fresh folder, "
        f"quiet and with {cores} CPU burners (one busy Python loop per core). Fitting is the record's "
        "select + fit + refit; the rest is everything else the stage does.",
        "",
        "| omp_wait_policy | quiet (s) | busy (s) | busy / quiet | quiet: fitting (s) | quiet: the rest (s) "
        "|",
        "|---|---|---|---|---|---|",
    ]
    for policy in args.policies:
        wall, seconds = quiet[policy]
        fitting = sum(seconds.get(name, 0.0) for name in FITTING)
        lines.append(
            f"| {policy} | {wall:.1f} | {busy[policy]:.1f} | {busy[policy] / wall:.2f}x | "
            f"{fitting:.1f} | {wall - fitting:.1f} |"
        )
    detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(quiet[args.policies[0]][1].items()) if k != "total")
    lines += ["", f"Quiet record of `{args.policies[0]}` (seconds): {detail}.", END]
    print("\n".join(lines))
    replace_section("\n".join(lines), BEGIN, END)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
