"""Benchmark: the nightly job at 1,000,000 leads with account rows and segment models, or without (issue 24).

Acceptance: scoring 1,000,000 leads with segments and accounts stays within 1.2x the time and
memory of the job without them. Each variant is ``leadml-score`` in a fresh process on the same
million-lead export (``bench_score_raw.py``'s: ``leadml-generate paths.root=data/bench/train-million
synthetic=million``), after one warm-up run that ingests it, so every measured run reuses the same
validated copy and measures scoring alone: features, TreeSHAP, tiers, reasons, the partition and,
where on, the account roll-up. Wall time and peak resident memory (``/usr/bin/time``); the variants
alternate over ``--rounds`` and the medians are compared.

- ``today``: the champion of ``--root`` (or ``--model``) with ``score.accounts.enabled=false`` (the
  job before issue 24);
- ``accounts``: the same model with its account rows;
- ``segments+accounts`` (with ``--segmented-model``): a model trained on the same data with
  ``data.segments``, which routes each lead to its segment's model, with account rows.

    .venv/bin/python benchmarks/bench_segments_accounts.py [--rounds 3] [--root .] [--model URI]
        [--segmented-model URI]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import pyarrow.parquet as pq
from bench_features import measured_with, replace_section
from bench_score_floor import timed_run
from bench_score_raw import COPIES, RENAMED, raw_copies

from leadml.data import schema as s

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / "data" / "bench" / "segments-accounts"
BEGIN, END = "<!-- segments-accounts:begin -->", "<!-- segments-accounts:end -->"
TARGET = 1.2


def score_command(folder: Path, root: Path, extra: list[str]) -> list[str]:
    return [
        str(ROOT / ".venv" / "bin" / "leadml-score"),
        f"paths.root={folder}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_root={root / 'mlruns'}",
        "score.track=false",
        *extra,
    ]


def variants(model: str | None, segmented: str | None) -> dict[str, list[str]]:
    pinned = [f"score.model_uri={model}"] if model else []
    found = {"today": [*pinned, "score.accounts.enabled=false"], "accounts": pinned}
    if segmented:
        found["segments+accounts"] = [f"score.model_uri={segmented}"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the trained project whose champion scores")
    parser.add_argument("--model", default=None, help="the model of today's job (default: the champion)")
    parser.add_argument("--segmented-model", default=None, help="a model URI trained with data.segments")
    args = parser.parse_args()
    root = args.root.resolve()
    folder = WORKDIR / "1M"
    raw = raw_copies(folder, COPIES["1M"])
    rows = {table: pq.ParquetFile(raw / f"{table}.parquet").metadata.num_rows for table in RENAMED}
    shutil.rmtree(folder / "data" / "scoring", ignore_errors=True)
    shutil.rmtree(folder / "data" / "scored", ignore_errors=True)
    measured = variants(args.model, args.segmented_model)
    timed_run(score_command(folder, root, measured["today"]))  # warm-up: ingests once
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in measured}
    for round_ in range(args.rounds):
        for name, extra in measured.items():
            shutil.rmtree(folder / "data" / "scored", ignore_errors=True)
            seconds, peak, out = timed_run(score_command(folder, root, extra))
            runs[name].append((seconds, peak))
            accounts = [line for line in out.splitlines() if "accounts (" in line]
            said = accounts[0] if accounts else ""
            print(f"round {round_ + 1} {name}: {seconds:.1f} s, {peak:.2f} GB {said}")
    figures = {
        name: {
            "seconds": statistics.median(r[0] for r in found),
            "peak_gb": statistics.median(r[1] for r in found),
            "runs": found,
        }
        for name, found in runs.items()
    }
    (WORKDIR / "results.json").write_text(json.dumps({"rows": rows, "figures": figures}, indent=2))
    write_results(figures, rows, args.rounds)


def write_results(figures: dict[str, dict], rows: dict[str, int], rounds: int) -> None:
    base = figures["today"]
    lines = [
        BEGIN,
        "## The nightly job with account rows and segment models at 1,000,000 leads (issue 24)",
        "",
        f"{measured_with('bench_segments_accounts.py')}. {rows[s.LEADS]:,} leads, "
        f"{rows[s.ACCOUNTS]:,} accounts, {rows[s.ACTIVITIES]:,} events (the `synthetic=million` export); "
        f"`leadml-score` in a fresh process per run, after one warm-up run that ingested the export; "
        f"medians of {rounds} alternating rounds.",
        "",
        "| variant | wall time | peak memory | time / today | memory / today |",
        "|---|---|---|---|---|",
    ]
    for name, figure in figures.items():
        lines.append(
            f"| {name} | {figure['seconds']:.1f} s | {figure['peak_gb']:.2f} GB | "
            f"{figure['seconds'] / base['seconds']:.2f}x | {figure['peak_gb'] / base['peak_gb']:.2f}x |"
        )
    worst = max(max(f["seconds"] / base["seconds"], f["peak_gb"] / base["peak_gb"]) for f in figures.values())
    verdict = "met" if worst <= TARGET else "not met"
    lines += ["", f"Target: at most {TARGET}x today's time and memory: **{verdict}** (worst {worst:.2f}x)."]
    lines.append(END)
    replace_section("\n".join(lines), BEGIN, END)


if __name__ == "__main__":
    main()
