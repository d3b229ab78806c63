"""Benchmark: a LightGBM fit quiet and on a busy machine, under OpenMP wait policies.

Groundwork for issue 21 (training that shares the machine well). The train stage collapses when
other work holds the cores: LightGBM's OpenMP threads spin while they wait for each other
(libgomp's default), and on oversubscribed cores a spinning thread takes the time slice the
thread it waits for needs. This measures one fit of the default data's training snapshots
(150,000 rows, 150 trees of 31 leaves, 2 threads), each in a fresh process so the policy is read
when libgomp loads:

- quiet, and with one CPU burner per core (busy Python loops started and stopped by this script);
- libgomp's default (spin, then sleep), ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once), and
  ``GOMP_SPINCOUNT`` of 10,000 and 1,000 (spin briefly, then sleep).

Needs the default features (``make features``). Results go to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_threads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_features import machine, replace_section

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "data" / "features" / "synthetic" / "snapshots.parquet"
BEGIN, END = "<!-- threads:begin -->", "<!-- threads:end -->"
POLICIES: dict[str, dict[str, str]] = {
    "libgomp default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
}
FIT = """
import sys, time
import pandas as pd, lightgbm as lgb
frame = pd.read_parquet(sys.argv[1]).iloc[:150_000]
features = frame.drop(columns=["lead_id", "as_of", "label"]).select_dtypes("number")
started = time.perf_counter()
lgb.train({"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 2},
          lgb.Dataset(features, frame["label"].to_numpy()), 150)
print(time.perf_counter() - started)
"""
# busy until stopped, or its parent is gone (a benchmark killed midway leaves no burner behind)
BURN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def fit_seconds(extra_env: dict[str, str]) -> float:
    """Wall seconds of one fit in a fresh process (the policy is read when libgomp loads)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, "-c", FIT, str(SNAPSHOTS)], env={**env, **extra_env}, capture_output=True,
        text=True, check=True, timeout=900,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


@contextmanager
def burners(count: int) -> Iterator[None]:
    """``count`` busy processes, one per core, for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]
    time.sleep(1.0)
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not SNAPSHOTS.exists():
        raise SystemExit(f"{SNAPSHOTS} not found: run make features first")
    cores = len(os.sched_getaffinity(0))
    quiet = {name: [fit_seconds(env) for _ in range(args.repeats)] for name, env in POLICIES.items()}
    with burners(cores):
        busy = {name: [fit_seconds(env) for _ in range(args.repeats)] for name, env in POLICIES.items()}
    lines = [
        BEGIN,
        "## LightGBM on a busy machine: OpenMP wait policies (groundwork for issue 21)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()} with "
        f"`.venv/bin/python benchmarks/bench_threads.py --repeats {args.repeats}`: one fit of 150,000 "
        f"default training snapshots (150 trees, 31 leaves, 2 threads), each in a fresh process, quiet "
        f"and with {cores} CPU burners; medians of {args.repeats}.",
        "",
        "| wait policy | quiet (s) | busy (s) | busy / quiet | against the default, quiet |",
        "|---|---|---|---|---|",
    ]
    reference = statistics.median(quiet["libgomp default"])
    for name in POLICIES:
        q, b = statistics.median(quiet[name]), statistics.median(busy[name])
        lines.append(f"| {name} | {q:.1f} | {b:.1f} | {b / q:.1f}x | {q / reference:.2f}x |")
    lines.append(END)
    print("\n".join(lines))
    replace_section("\n".join(lines), BEGIN, END)


if __name__ == "__main__":
    main()
