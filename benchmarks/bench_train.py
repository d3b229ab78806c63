"""Benchmark: `make train` end to end on the default synthetic data, stage by stage.

Runs each entry point as `make train` does, in a fresh folder (nothing cached), and
writes the wall time per stage to benchmarks/RESULTS.md (target: at most 3 minutes).

    .venv/bin/python benchmarks/bench_train.py [--workdir data/bench/train]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_features import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- train:begin -->", "<!-- train:end -->"
STAGES = ("generate", "ingest", "features", "train")


def run_stage(stage: str, workdir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / f"leadml-{stage}"),
            f"paths.root={workdir}",
            "mlflow.tracking_uri=null",
        ],
        check=True,
        cwd=ROOT,
        stdout=sys.stdout,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench" / "train")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    seconds = {stage: run_stage(stage, args.workdir) for stage in STAGES}
    total = sum(seconds.values())
    rows = [f"| {stage} | {value:.1f} s |" for stage, value in seconds.items()]
    section = "\n".join(
        [
            BEGIN,
            "## `make train` on the default synthetic data (fresh folder, nothing cached)",
            "",
            f"Measured on {machine()}.",
            "Command: `.venv/bin/python benchmarks/bench_train.py`"
            " (runs the four entry points as `make train` does)",
            "",
            "| stage | wall time |",
            "|---|---|",
            *rows,
            f"| **total** (target <= 180 s) | **{total:.1f} s** |",
            END,
        ]
    )
    text = RESULTS.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"total {total:.1f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
