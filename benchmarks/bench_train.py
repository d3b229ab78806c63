"""Benchmark: `make train` end to end on synthetic data, stage by stage.

Runs each entry point as `make train` does, in a fresh folder (nothing cached), and
writes the wall time per stage to benchmarks/RESULTS.md: on the default data (target: at
most 3 minutes) or, with ``--synthetic million``, on a million leads.

    .venv/bin/python benchmarks/bench_train.py [--synthetic million] [--workdir data/bench/train]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_features import RESULTS, machine, replace_section

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "ingest", "features", "train")
TITLES = {
    "default": "`make train` on the default synthetic data (fresh folder, nothing cached)",
    "million": "Training on 1,000,000 leads (`synthetic=million`, fresh folder, nothing cached)",
}
TARGETS = {"default": " (target <= 180 s)", "million": ""}


def markers(synthetic: str) -> tuple[str, str]:
    name = "train" if synthetic == "default" else f"train-{synthetic}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def run_stage(stage: str, workdir: Path, synthetic: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / f"leadml-{stage}"),
            f"paths.root={workdir}",
            f"synthetic={synthetic}",
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
    parser.add_argument("--synthetic", choices=sorted(TITLES), default="default")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="time only these stages on the existing workdir (earlier stages' outputs must be there)",
    )
    args = parser.parse_args()
    workdir = args.workdir or ROOT / "data" / "bench" / f"train-{args.synthetic}"
    if list(args.stages) == list(STAGES):
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = {stage: run_stage(stage, workdir, args.synthetic) for stage in args.stages}
    total = sum(seconds.values())
    rows = [f"| {stage} | {value:.1f} s |" for stage, value in seconds.items()]
    options = "" if args.synthetic == "default" else f" --synthetic {args.synthetic}"
    if list(args.stages) != list(STAGES):
        options += f" --stages {' '.join(args.stages)}"
    command = f"`.venv/bin/python benchmarks/bench_train.py{options}`"
    BEGIN, END = markers(args.synthetic)
    section = "\n".join(
        [
            BEGIN,
            f"## {TITLES[args.synthetic]}",
            "",
            f"Measured on {machine()}.",
            f"Command: {command} (runs the four entry points as `make train` does)",
            "",
            *sizes(workdir),
            "| stage | wall time |",
            "|---|---|",
            *rows,
            f"| **total**{TARGETS[args.synthetic]} | **{total:.1f} s** |",
            END,
        ]
    )
    replace_section(section, BEGIN, END)
    print(f"total {total:.1f} s; wrote {RESULTS}")


def sizes(workdir: Path) -> list[str]:
    """One line on what was trained on and what came out, from the stages' own records."""
    manifest = workdir / "data" / "features" / "synthetic" / "manifest.json"
    if not manifest.exists():
        return []
    record = json.loads(manifest.read_text())
    figures = ", ".join(f"{key} {value:,}" for key, value in record.items() if isinstance(value, int))
    return [f"Features: {figures}.", ""]


if __name__ == "__main__":
    main()
