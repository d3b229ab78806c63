"""Benchmark: ingestion with contracts against a plain pyarrow read of the same files (issue 21).

Reads the sources of a data config (default: the embedded synthetic CRM of ``make train``, about
2.1 million raw rows, activities as ISO 8601 text) and times, alternating within one run:

* **pyarrow read**: ``pyarrow.parquet.read_table`` (or ``pyarrow.csv.read_csv``) of every source;
* **leadml read**: the stage's own reading (``read_source``: pandas frames, CSV checks);
* **contracts**: every table through its contract (parsing, categories, timestamps, duplicates,
  cross-table keys, quarantine), on frames already read;
* **ingest stage**: ``ingest_stage`` as ``leadml-ingest`` runs it: read, contracts, the validated
  Parquet copy and the quarantine written, the manifest with its fingerprints.

``--format csv`` first writes the sources as CSV (what most CRM exports are) and ingests those.

    .venv/bin/python benchmarks/bench_ingest.py [--repeats 5] [--format parquet|csv] [--root .]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from bench_features import machine, measured_with, replace_section

from leadml.adapters.sources import read_source
from leadml.stages.configs import composed_config
from leadml.stages.ingest import (
    _validate,
    checked_flat_config,
    ingest_settings,
    ingest_stage,
    source_specs,
)

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- ingest:begin -->", "<!-- ingest:end -->"
PHASES = ("pyarrow read", "leadml read", "contracts", "ingest stage")


def data_config(root: Path, source_format: str, workdir: Path) -> dict[str, Any]:
    """The default data config with paths under ``root``; with ``csv``, its sources rewritten as CSV."""
    data = composed_config("ingest", [f"paths.root={root}"])["data"]
    missing = [spec["path"] for spec in data["tables"].values() if not Path(spec["path"]).exists()]
    if missing:
        sys.exit(f"no source at {missing[0]}: run `make train` (or leadml-generate) first")
    if source_format == "csv":
        for table, spec in data["tables"].items():
            path = workdir / f"{table}.csv"
            pd.read_parquet(spec["path"]).to_csv(path, index=False)
            data["tables"][table] = {"format": "csv", "path": str(path)}
    return data


def pyarrow_read(data: Mapping[str, Any]) -> None:
    for spec in data["tables"].values():
        if spec.get("format") == "csv":
            pacsv.read_csv(spec["path"])
        else:
            pq.read_table(spec["path"])


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def one_round(data: dict[str, Any], output: Path) -> dict[str, float]:
    """Seconds of each phase, measured one after another on the same files."""
    settings = ingest_settings(data)
    specs = source_specs(data)
    seconds = {"pyarrow read": timed(lambda: pyarrow_read(data))[0]}
    seconds["leadml read"], raw = timed(lambda: {table: read_source(spec) for table, spec in specs.items()})
    quarantine_paths = {table: str(output / "quarantine" / f"{table}.parquet") for table in specs}
    sources = {table: str(spec["path"]) for table, spec in specs.items()}
    seconds["contracts"] = timed(
        lambda: _validate(raw, data, checked_flat_config(data), settings, sources, quarantine_paths)
    )[0]
    shutil.rmtree(output, ignore_errors=True)
    seconds["ingest stage"] = timed(lambda: ingest_stage(data, output))[0]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="a project with data/raw/synthetic")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leadml-bench-ingest-") as folder:
        workdir = Path(folder)
        data = data_config(args.root.resolve(), args.format, workdir)
        rows = sum(len(read_source(spec)) for spec in source_specs(data).values())
        one_round(data, workdir / "warmup")  # imports, caches, page cache
        rounds = [one_round(data, workdir / f"out{index}") for index in range(args.repeats)]
    medians = {phase: statistics.median(r[phase] for r in rounds) for phase in PHASES}
    floor = medians["pyarrow read"]
    read_and_contracts = medians["leadml read"] + medians["contracts"]
    print(f"{machine()}; {rows:,} raw rows ({args.format}); medians of {args.repeats} rounds")
    for phase in PHASES:
        print(f"  {phase:14s} {medians[phase]:7.3f} s  {medians[phase] / floor:5.1f}x the pyarrow read")
    print(f"  read + contracts {read_and_contracts:.3f} s  {read_and_contracts / floor:.1f}x")
    table = [f"| {phase} | {medians[phase]:.2f} s | {medians[phase] / floor:.1f}x |" for phase in PHASES]
    section = [
        BEGIN,
        f"## Ingestion with contracts against a pyarrow read ({args.format} sources, issue 21)",
        "",
        measured_with("bench_ingest.py") + " (the embedded "
        f"synthetic CRM of `make train`: {rows:,} raw rows in four tables, timestamps as ISO 8601 "
        f"text). Medians of {args.repeats} rounds after one warm-up; in each round the phases run "
        "one after another on the same files. The ingest stage includes writing the validated "
        "Parquet copy, the quarantine and the manifest (whose fingerprints read the copy back).",
        "",
        "| phase | seconds | against the pyarrow read |",
        "|---|---|---|",
        *table,
        f"| leadml read + contracts | {read_and_contracts:.2f} s | {read_and_contracts / floor:.1f}x |",
        END,
    ]
    replace_section("\n".join(section), BEGIN, END)


if __name__ == "__main__":
    main()
