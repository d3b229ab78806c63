"""Benchmark: ``leadml-score`` from the raw files at 1,000,000 and 4,000,000 leads (issue 21).

The nightly job ingests the raw export (contracts, quarantine, the validated copy) and then scores
every open lead; this measures the whole command's wall time and peak resident memory (from the
kernel, ``/usr/bin/time``), each size in a fresh process and a fresh folder, so nothing is reused.
Targets: at most 2 GB at 4M, and the 4M peak at most 1.1x the 1M peak.

The raw files are the million-lead synthetic export of ``bench_train.py --synthetic million``
(``data/bench/train-million/data/raw/synthetic``, generate stage only is enough: ``leadml-generate
paths.root=data/bench/train-million synthetic=million``), as written, for 1M; for 4M its leads,
outcomes and events four times over, the copies under new lead, event and account ids
(``<id>-r1`` ...). The model is the champion of the project at ``--root`` (``make train``).

    .venv/bin/python benchmarks/bench_score_raw.py [--sizes 1M 4M] [--batch-rows N] [--root .]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_features import measured_with, replace_section
from bench_score_floor import timed_run

from leadml.data import schema as s

ROOT = Path(__file__).resolve().parents[1]
MILLION_RAW = ROOT / "data" / "bench" / "train-million" / "data" / "raw" / "synthetic"
WORKDIR = ROOT / "data" / "bench" / "score-raw"
BEGIN, END = "<!-- score-raw:begin -->", "<!-- score-raw:end -->"
COPIES = {"1M": 1, "4M": 4}
# the ids a copy renames, per table: what must stay unique (and joined) across copies
RENAMED = {
    s.ACCOUNTS: (s.ACCOUNT_ID,),
    s.LEADS: (s.LEAD_ID, s.ACCOUNT_ID),
    s.OUTCOMES: (s.LEAD_ID,),
    s.ACTIVITIES: (s.EVENT_ID, s.LEAD_ID),
}


def raw_copies(target: Path, copies: int) -> Path:
    """The million raw export ``copies`` times over in ``target/data/raw/synthetic`` (kept between runs)."""
    raw = target / "data" / "raw" / "synthetic"
    done = raw / "copies.json"
    if done.exists() and json.loads(done.read_text()).get("copies") == copies:
        return raw
    if not (MILLION_RAW / f"{s.LEADS}.parquet").exists():
        sys.exit(
            f"no million-lead export in {MILLION_RAW}: run leadml-generate synthetic=million there first"
        )
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    for table, columns in RENAMED.items():
        source = pq.ParquetFile(MILLION_RAW / f"{table}.parquet")
        with pq.ParquetWriter(raw / f"{table}.parquet", source.schema_arrow) as writer:
            for copy in range(copies):
                for batch in source.iter_batches(batch_size=1_000_000):
                    writer.write_table(_renamed(pa.Table.from_batches([batch]), columns, copy))
    done.write_text(json.dumps({"copies": copies}))
    return raw


def _renamed(table: pa.Table, columns: tuple[str, ...], copy: int) -> pa.Table:
    if copy == 0:
        return table
    for column in columns:
        index = table.schema.get_field_index(column)
        field = table.schema.field(index)
        ids = pc.binary_join_element_wise(pc.cast(table.column(index), pa.string()), f"r{copy}", "-")
        table = table.set_column(index, field, ids.cast(field.type))
    return table


def score_from_raw(folder: Path, root: Path, batch_rows: int | None) -> tuple[float, float, str]:
    """(seconds, peak GB, stdout) of ``leadml-score`` on ``folder``'s raw files, ingesting from scratch."""
    shutil.rmtree(folder / "data" / "scoring", ignore_errors=True)
    shutil.rmtree(folder / "data" / "scored", ignore_errors=True)
    command = [
        str(ROOT / ".venv" / "bin" / "leadml-score"),
        f"paths.root={folder}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_root={root / 'mlruns'}",
        "score.track=false",
    ]
    if batch_rows is not None:
        command.append(f"+data.batch_rows={batch_rows}")
    return timed_run(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(COPIES), default=["1M", "4M"])
    parser.add_argument("--batch-rows", type=int, default=None, help="data.batch_rows (default: leadml's)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the trained project whose champion scores")
    args = parser.parse_args()
    figures = {}
    for size in args.sizes:
        folder = WORKDIR / size
        raw = raw_copies(folder, COPIES[size])
        rows = {table: pq.ParquetFile(raw / f"{table}.parquet").metadata.num_rows for table in RENAMED}
        seconds, peak, _ = score_from_raw(folder, args.root.resolve(), args.batch_rows)
        figures[size] = {"seconds": seconds, "peak_gb": peak, "rows": rows}
        print(
            f"{size}: {rows[s.LEADS]:,} leads, {rows[s.ACTIVITIES]:,} events: {seconds:.1f} s, {peak:.2f} GB"
        )
    (WORKDIR / "results.json").write_text(json.dumps(figures, indent=2))
    write_results(figures, args.batch_rows)


def write_results(figures: dict[str, dict], batch_rows: int | None) -> None:
    lines = [
        f"| {size} | {f['rows'][s.LEADS]:,} | {f['rows'][s.ACTIVITIES]:,} | {f['seconds']:.0f} s "
        f"| {f['peak_gb']:.2f} GB |"
        for size, f in figures.items()
    ]
    ratio = ""
    if {"1M", "4M"} <= set(figures):
        growth = figures["4M"]["peak_gb"] / figures["1M"]["peak_gb"]
        ratio = f"Peak at 4M against 1M: **{growth:.2f}x** (target <= 1.1x, and <= 2 GB)."
    section = [
        BEGIN,
        "## `leadml-score` from the raw files at 1M and 4M leads (issue 21)",
        "",
        measured_with("bench_score_raw.py")
        + f" (`data.batch_rows` {batch_rows or 'default'}). Each size in a fresh process and "
        "folder: ingestion of the raw export (contracts, quarantine, validated copy) then scoring of "
        "every open lead; peak resident memory from `/usr/bin/time`.",
        "",
        "| size | leads | events | wall time | peak memory |",
        "|---|---|---|---|---|",
        *lines,
        "",
        ratio,
        END,
    ]
    replace_section("\n".join(section), BEGIN, END)


if __name__ == "__main__":
    main()
