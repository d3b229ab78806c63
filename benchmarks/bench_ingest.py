"""Benchmark: ingestion with contracts against a plain pyarrow read of the same files (issue 21).

Reads the sources of a data config (default: the embedded synthetic CRM of ``make train``, about
2.1 million raw rows, activities as ISO 8601 text) and times, alternating within one run:

* **pyarrow read**: ``pyarrow.parquet.read_table`` (or ``pyarrow.csv.read_csv``) of every source;
* **leadml read**: the stage's own reading (``read_source``: pandas frames, CSV checks);
* **contracts**: every table through its contract (parsing, categories, timestamps, duplicates,
  cross-table keys, quarantine), on frames already read;
* **ingest stage**: ``ingest_stage`` as ``leadml-ingest`` runs it: read, contracts, the validated
  Parquet copy and the quarantine written, the manifest with its fingerprints;
* **Arrow sketch**: a lower bound written with pyarrow's compute functions only (:func:`arrow_sketch`):
  read, the main rules of the contracts (text trimmed, missing markers, ISO 8601 timestamps in four
  shapes, categories on their dictionaries, allowed values, not in the future, unique keys counted,
  events and outcomes of known leads), accepted and rejected rows written to Parquet. It leaves out
  what costs leadml most besides (a reason per rejected row, which duplicate to keep, respelt
  values, daylight-saving checks, bounded memory), so it is a floor, not an equal.

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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from bench_features import machine, measured_with, replace_section

from leadml.adapters.sources import read_source
from leadml.data import schema as s
from leadml.data.contracts import (
    ColumnSpec,
    IngestSettings,
    crm_contracts,
    normalise_token,
    squashed_spellings,
)
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
PHASES = ("pyarrow read", "leadml read", "contracts", "ingest stage", "Arrow sketch")
_MARKERS = pa.array(["", "na", "n/a", "nan", "null", "none", "#n/a"])
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ISO_SHAPES = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


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


def _present(values: pa.ChunkedArray) -> pa.ChunkedArray:
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.is_in(pc.utf8_lower(trimmed), _MARKERS), pa.scalar(None, trimmed.type), trimmed)


def _timestamps(values: pa.ChunkedArray) -> pa.ChunkedArray:
    present, parsed = _present(values), None
    for shape in _ISO_SHAPES:
        shaped = pc.strptime(present, format=shape, unit="us", error_is_null=True)
        shaped = shaped if shaped.type.tz else pc.assume_timezone(shaped, "UTC")
        parsed = shaped if parsed is None else pc.coalesce(parsed, shaped)
    return parsed


def _category(values: pa.ChunkedArray, spec: ColumnSpec) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(normalised values, allowed) worked out once per dictionary value."""
    values = values.unify_dictionaries()
    dictionary = values.chunk(0).dictionary if values.num_chunks else pa.array([])
    markers = set(_MARKERS.to_pylist())
    tokens = [
        None if value is None or value.strip().casefold() in markers else normalise_token(value)
        for value in dictionary.to_pylist()
    ]
    synonyms = {**squashed_spellings(spec.allowed or ()), **IngestSettings().synonyms_for(spec.name)}
    tokens = [synonyms.get(token, token) if token is not None else None for token in tokens]
    allowed = [token is None or spec.allowed is None or token in spec.allowed for token in tokens]
    indices = pc.cast(values.combine_chunks().indices, pa.int64())
    allowed_rows = pc.take(pa.array(allowed), indices).fill_null(True)  # a null is missing, not wrong
    return pc.take(pa.array(tokens, pa.string()), indices), allowed_rows


def _sketch_table(table: pa.Table, contract: Any, now: pa.Scalar) -> tuple[pa.Table, pa.Array]:
    """(typed columns, row passes) of one table."""
    columns, good = {}, pa.array([True] * len(table))
    for spec in contract.columns:
        if spec.name not in table.column_names:
            continue
        values = table[spec.name]
        text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
        if text and spec.dtype == "timestamp":
            values = _timestamps(values)
            good = pc.and_kleene(good, pc.or_kleene(pc.is_null(values), pc.less_equal(values, now)))
        elif text and spec.dtype in ("integer", "float"):
            present = _present(values)
            number = pc.match_substring_regex(present, _NUMBER)
            values = pc.cast(pc.if_else(number, present, pa.scalar(None, present.type)), pa.float64())
            good = pc.and_kleene(good, pc.or_kleene(pc.is_null(present), number))
        elif text:
            values = _present(values)
        elif spec.dtype == "category" and pa.types.is_dictionary(values.type):
            values, allowed = _category(values, spec)
            good = pc.and_kleene(good, allowed)
        if spec.min is not None:
            good = pc.and_kleene(good, pc.or_kleene(pc.is_null(values), pc.greater_equal(values, spec.min)))
        if not spec.nullable:
            good = pc.and_kleene(good, pc.is_valid(values))
        columns[spec.name] = values
    return pa.table(columns), good.fill_null(False)


def arrow_sketch(data: Mapping[str, Any], output: Path) -> None:
    """The floor of ingestion in pyarrow (see the module docstring)."""
    output.mkdir(parents=True, exist_ok=True)
    contracts = crm_contracts()
    now = pa.scalar(pd.Timestamp.now(tz="UTC").to_pydatetime(), pa.timestamp("us", "UTC"))
    known: pa.Array | None = None
    for name in (s.ACCOUNTS, s.LEADS, s.OUTCOMES, s.ACTIVITIES):
        spec, contract = data["tables"][name], contracts[name]
        categories = [column.name for column in contract.columns if column.dtype == "category"]
        if spec.get("format") == "csv":  # every column text, as leadml reads it
            names = pacsv.open_csv(spec["path"]).schema.names
            types = {
                name: pa.dictionary(pa.int32(), pa.string()) if name in categories else pa.string()
                for name in names
            }
            raw = pacsv.read_csv(spec["path"], convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            raw = pq.read_table(spec["path"], read_dictionary=categories)
        typed, good = _sketch_table(raw, contract, now)
        if name in (s.OUTCOMES, s.ACTIVITIES) and known is not None:
            good = pc.and_(good, pc.is_in(typed[s.LEAD_ID], known))
        accepted = typed.filter(good)
        for key in contract.primary_key or [column.name for column in contract.columns if column.unique]:
            pc.count_distinct(accepted[key])  # duplicates counted, not resolved
        if name == s.LEADS:
            known = accepted[s.LEAD_ID].combine_chunks()
        pq.write_table(accepted, output / f"{name}.parquet")
        pq.write_table(raw.filter(pc.invert(good)), output / f"{name}-quarantine.parquet")


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
    seconds["Arrow sketch"] = timed(lambda: arrow_sketch(data, output / "sketch"))[0]
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
