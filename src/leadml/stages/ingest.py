"""``leadml-ingest``: read every configured source, check its contract, write data/interim."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from leadml import __version__
from leadml.adapters.layout import FLAT_TABLE, MANIFEST, dictionary_encoded, open_rows_file
from leadml.adapters.sources import (
    checked_spec,
    describe_source,
    fingerprint_file,
    fingerprint_source,
    read_source,
    source_batches,
    write_json_atomic,
    write_parquet_files,
)
from leadml.adapters.streamed_ingest import Reader, ingest_crm_streamed
from leadml.data import schema as s
from leadml.data.contracts import (
    OUTCOMES_TABLE,
    SETTINGS_KEYS,
    FlatContract,
    IngestSettings,
    TableContract,
    configured_crm_contracts,
    flat_contract,
)
from leadml.data.flat import ingest_flat
from leadml.data.ingest import (
    IngestResult,
    check_bad_shares,
    ingest_crm,
    manifest,
    respelt_categories,
    respelt_sentence,
)
from leadml.data.joins import CombinedTable, combine_flat, lookup_specs, lookups, row_rules, with_lookups
from leadml.data.validation import check_bad_share
from leadml.errors import LeadmlError
from leadml.machine import collecting_only_new_objects

logger = logging.getLogger(__name__)


def ingest_settings(data: Mapping[str, Any]) -> IngestSettings:
    return IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})


def data_kind(data: Mapping[str, Any]) -> str:
    kind = data.get("kind", "crm")
    if kind not in ("crm", "flat"):
        raise LeadmlError(f"data.kind must be 'crm' or 'flat', got {kind!r} (data={data.get('name')})")
    return kind


@dataclass(frozen=True)
class IngestSummary:
    """What ``leadml-ingest`` read, accepted and quarantined.

    The per-table figures are the manifest's records (``data/interim/<name>/manifest.json``,
    read back by the features stage and logged by the nightly job), kept as written there.
    """

    data_name: str | None
    kind: str
    tables: Mapping[str, Mapping[str, Any]]  # rows in, accepted, quarantined, duplicates, respelt
    joins: Mapping[str, Mapping[str, Any]]  # lookup tables joined to a flat table
    where: Mapping[str, Any] | None  # rows kept by data.where
    open_rows: Mapping[str, Mapping[str, Any]]  # open leads kept apart for scoring
    labels: Mapping[str, Any]  # how a flat table was labelled by its outcomes table
    respelt: Mapping[str, str]  # table -> the sentence on category values written another way
    seconds: float
    manifest: Mapping[str, Any]  # the whole record, as written to the manifest
    reused: bool = False  # nothing changed since the last ingestion: its outputs were kept


@dataclass(frozen=True)
class _Validated:
    result: IngestResult
    combined: CombinedTable | None
    respelt: dict[str, dict[str, dict[str, Any]]]


def ingest_stage(data: Mapping[str, Any], output_dir: Path) -> IngestSummary:
    """Validate every configured source into ``output_dir`` (tables, quarantine/, manifest)."""
    with collecting_only_new_objects():
        return _ingest(data, output_dir)


def _ingest(data: Mapping[str, Any], output_dir: Path) -> IngestSummary:
    started = time.perf_counter()
    settings = ingest_settings(data)
    contract = checked_flat_config(data)  # before reading, so a config error costs no time
    specs = source_specs(data)
    sources = {table: describe_source(spec) for table, spec in specs.items()}
    quarantine_paths = {table: str(output_dir / "quarantine" / f"{table}.parquet") for table in specs}
    if contract is None:
        return _ingest_crm_in_batches(data, output_dir, settings, specs, sources, started)
    raw = {}
    for table, spec in specs.items():
        logger.info("reading %s from %s", table, sources[table])
        raw[table] = read_source(spec)
    validated = _validate(raw, data, contract, settings, sources, quarantine_paths)
    result = validated.result
    write_parquet_files({quarantine_paths[table]: rejected for table, rejected in result.quarantines.items()})
    check_bad_shares(result, settings)  # after writing, so the message points to existing files
    output_paths = {table: str(output_dir / f"{table}.parquet") for table in result.tables}
    open_paths = {table: output_dir / open_rows_file(table) for table in result.open_rows}
    tables = {output_paths[table]: dictionary_encoded(table, frame) for table, frame in result.tables.items()}
    write_parquet_files({**tables, **{open_paths[table]: frame for table, frame in result.open_rows.items()}})
    record = manifest(
        result,
        sources=sources,
        source_fingerprints={table: fingerprint_source(spec) for table, spec in specs.items()},
        output_paths=output_paths,
        quarantine_paths=quarantine_paths,
        settings=settings,
        output_fingerprints={table: fingerprint_file(path) for table, path in output_paths.items()},
    )
    record.update(
        data_name=data.get("name"),
        kind=data_kind(data),
        seconds=round(time.perf_counter() - started, 2),
        ingest_fingerprint=ingest_fingerprint(data),
    )
    _add_flat_records(record, validated, open_paths)
    write_json_atomic(record, output_dir / MANIFEST)
    return _summary(record)


def _ingest_crm_in_batches(
    data: Mapping[str, Any],
    output_dir: Path,
    settings: IngestSettings,
    specs: Mapping[str, Mapping[str, Any]],
    sources: Mapping[str, str],
    started: float,
) -> IngestSummary:
    """The CRM tables through their contracts in batches of ``data.batch_rows`` rows
    (:mod:`leadml.adapters.streamed_ingest`): memory bounded by a batch, whatever the tables' size.

    Every file is written beside its final name and moved there at the end: the quarantine first,
    the tables only when no table has too many bad rows. An interrupted run leaves the last
    ingestion as it was; a run stopped for bad rows leaves their quarantine and the last tables.
    """
    rows = batch_rows(data)
    contracts = crm_contracts_of(data)
    outputs = {table: output_dir / f"{table}.parquet" for table in s.CRM_TABLES}
    quarantines = {table: output_dir / "quarantine" / f"{table}.parquet" for table in s.CRM_TABLES}
    partial = {
        path: path.with_name(f".{path.name}.partial") for path in (*outputs.values(), *quarantines.values())
    }
    try:
        streamed = ingest_crm_streamed(
            {table: partial_reader(spec, rows, contracts[table]) for table, spec in specs.items()},
            contracts,
            settings,
            outputs={table: partial[path] for table, path in outputs.items()},
            quarantines={table: partial[path] for table, path in quarantines.items()},
            spill_dir=output_dir / f".spill-{os.getpid()}",
            sources=sources,
        )
        for path in quarantines.values():
            os.replace(partial[path], path)
        # the reports name the files where they now are, not where they were written
        reports = {
            table: replace(report, quarantine_path=str(quarantines[table]))
            for table, report in streamed.reports.items()
        }
        for report in reports.values():  # after the quarantine is in place, before the tables are
            check_bad_share(report, settings.max_bad_share)
        for path in outputs.values():
            os.replace(partial[path], path)
    finally:
        for path in partial.values():
            with contextlib.suppress(OSError):  # a folder that cannot be written has no partial file
                path.unlink(missing_ok=True)
    result = IngestResult(tables={}, quarantines={}, reports=reports)
    record = manifest(
        result,
        sources=sources,
        source_fingerprints={table: fingerprint_source(spec) for table, spec in specs.items()},
        output_paths={table: str(path) for table, path in outputs.items()},
        quarantine_paths={table: str(path) for table, path in quarantines.items()},
        settings=settings,
        output_fingerprints={table: fingerprint_file(path) for table, path in outputs.items()},
        written={table: (streamed.output_rows[table], streamed.columns[table]) for table in s.CRM_TABLES},
    )
    record.update(
        data_name=data.get("name"),
        kind=data_kind(data),
        seconds=round(time.perf_counter() - started, 2),
        ingest_fingerprint=ingest_fingerprint(data),
    )
    for table, respelt in streamed.respelt.items():
        if respelt:
            record["tables"][table]["respelt"] = respelt
    write_json_atomic(record, output_dir / MANIFEST)
    return _summary(record)


DEFAULT_BATCH_ROWS = 250_000


def crm_contracts_of(data: Mapping[str, Any]) -> dict[str, TableContract]:
    """The CRM tables' contracts with the data config's extra features and ``limits``."""
    return configured_crm_contracts(data.get("extra_features"), data.get("limits"))


def batch_rows(data: Mapping[str, Any]) -> int:
    """``data.batch_rows``: rows of a CRM table checked at a time (memory grows with it, not with the
    tables); a bad value names the key."""
    value = data.get("batch_rows", DEFAULT_BATCH_ROWS)
    if value is None:
        return DEFAULT_BATCH_ROWS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LeadmlError(f"data.batch_rows must be a whole number of rows >= 1, got {value!r}")
    return value


def partial_reader(spec: Mapping[str, Any], rows: int, contract: TableContract) -> Reader:
    categories = [column.name for column in contract.columns if column.dtype == "category"]
    return lambda: source_batches(spec, rows, categories)


def _summary(record: Mapping[str, Any], reused: bool = False) -> IngestSummary:
    return IngestSummary(
        data_name=record["data_name"],
        kind=record["kind"],
        tables=record["tables"],
        joins=record.get("joins") or {},
        where=record.get("where"),
        open_rows=record.get("open_rows") or {},
        labels=record.get("labels") or {},
        respelt={
            table: respelt_sentence(table, report["respelt"])
            for table, report in record["tables"].items()
            if report.get("respelt")
        },
        seconds=record["seconds"],
        manifest=record,
        reused=reused,
    )


def ingest_fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 of what decides an ingestion besides the sources' bytes: the data config (without file
    locations) and the leadml version whose contracts ran."""
    return _sha256_of({"data": _without_locations(data), "leadml": __version__})


def ingest_unless_unchanged(data: Mapping[str, Any], output_dir: Path) -> IngestSummary:
    """:func:`ingest_stage`, or the last ingestion's summary when nothing it depends on changed.

    A nightly run ingests again only when a source's bytes, the data config or leadml changed, or
    an output went missing or was altered: the file sources are hashed (sha256, a fraction of the
    cost of parsing and checking them) and so are the written tables. SQL sources are always read
    again (hashing a query's result costs as much as reading it).
    """
    started = time.perf_counter()
    record = _current_manifest(data, output_dir)
    if record is None:
        return ingest_stage(data, output_dir)
    logger.info("ingest: sources unchanged since %s; %s reused", record.get("created_at"), output_dir)
    return _summary({**record, "seconds": round(time.perf_counter() - started, 2)}, reused=True)


def _current_manifest(data: Mapping[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """The manifest in ``output_dir`` when it still describes ``data`` exactly, else None."""
    path = output_dir / MANIFEST
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    tables = record.get("tables") or {}
    if record.get("ingest_fingerprint") != ingest_fingerprint(data):
        return None
    if any(checked_spec(spec)["format"] == "sql" for spec in source_specs(data).values()):
        return None
    if changed_source(data, tables) is not None:
        return None
    for table, report in tables.items():
        output = output_dir / f"{table}.parquet"  # here, not the recorded path: the folder may have moved
        if not output.exists() or fingerprint_file(output) != report.get("output_fingerprint"):
            return None
    opened = record.get("open_rows") or {}
    if any(not (output_dir / open_rows_file(table)).exists() for table in opened):
        return None
    return record


def checked_flat_config(data: Mapping[str, Any]) -> FlatContract | None:
    """The flat table's contract with its joins and row rules checked; None for a CRM export,
    which may have neither (its source's SQL query filters and joins)."""
    if data_kind(data) == "flat":
        contract = flat_contract(data["contract"], data.get("outcomes"))
        lookups(data.get("joins"), (contract.table.name, OUTCOMES_TABLE))
        row_rules(data.get("where"))
        return contract
    if data.get("joins") or data.get("where"):
        raise LeadmlError(
            f"data.joins and data.where apply to a flat table (data.kind: flat); data={data.get('name')} "
            "is crm: filter and join in the source's SQL query instead"
        )
    return None


def _validate(
    raw: dict[str, pd.DataFrame],
    data: Mapping[str, Any],
    contract: FlatContract | None,
    settings: IngestSettings,
    sources: Mapping[str, str],
    quarantine_paths: Mapping[str, str],
) -> _Validated:
    """Every table through its contract: the CRM tables, or the flat table with its lookups joined
    and its rows kept by data.where (the table the contract sees)."""
    if contract is None:
        contracts = crm_contracts_of(data)
        respelt = _respelt(raw, contracts, settings)
        result = ingest_crm(
            raw,
            contracts,
            settings,
            sources=sources,
            quarantine_paths=quarantine_paths,
            enforce_bad_share=False,
        )
        return _Validated(result, None, respelt)
    combined = combine_flat(
        raw[FLAT_TABLE],
        {name: raw[name] for name in lookup_specs(data, (contract.table.name, OUTCOMES_TABLE))},
        data,
        contract,
        settings,
        sources=sources,
        quarantine_paths=quarantine_paths,
    )
    raw[FLAT_TABLE] = combined.frame
    respelt = _respelt(raw, {FLAT_TABLE: contract.table}, settings)
    result = ingest_flat(
        raw[FLAT_TABLE],
        contract,
        settings,
        source=sources[FLAT_TABLE],
        quarantine_path=quarantine_paths[FLAT_TABLE],
        enforce_bad_share=False,
        outcomes=raw.get(OUTCOMES_TABLE),
        outcomes_source=sources.get(OUTCOMES_TABLE, "the outcomes table"),
        outcomes_quarantine_path=quarantine_paths.get(OUTCOMES_TABLE),
        source_rows=combined.source_rows,
    )
    return _Validated(with_lookups(result, combined.lookups), combined, respelt)


def _respelt(
    raw: Mapping[str, pd.DataFrame], contracts: Mapping[str, TableContract], settings: IngestSettings
) -> dict[str, dict[str, dict[str, Any]]]:
    """Category values written to their declared spelling, by table (before validation sees them)."""
    return {
        table: respelt_categories(raw[table], contract, settings)
        for table, contract in contracts.items()
        if table in raw
    }


def _add_flat_records(record: dict[str, Any], validated: _Validated, open_paths: Mapping[str, Path]) -> None:
    """The manifest's records of labels, joins, respelt categories and open rows."""
    result = validated.result
    if result.labels:
        record["labels"] = result.labels
    if validated.combined is not None:
        record.update(validated.combined.record(FLAT_TABLE))
    for table, respelt in validated.respelt.items():
        if respelt and table in record["tables"]:
            record["tables"][table]["respelt"] = respelt
    if result.open_rows:
        record["open_rows"] = {
            table: {"rows": len(frame), "output_path": str(open_paths[table])}
            for table, frame in result.open_rows.items()
        }


def source_specs(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every source the data config reads, by table name; a bad spec or SQL name names its config key."""
    if data_kind(data) == "crm":
        specs = dict(data["tables"])
        keys = {table: f"data.tables.{table}" for table in specs}
    else:
        specs = {FLAT_TABLE: data["table"]}
        keys = {FLAT_TABLE: "data.table"}
        if data.get("outcomes"):
            specs[OUTCOMES_TABLE] = data["outcomes"]["table"]
            keys[OUTCOMES_TABLE] = "data.outcomes.table"
        for name, spec in lookup_specs(data, (FLAT_TABLE, OUTCOMES_TABLE)).items():
            specs.setdefault(name, spec)
            keys.setdefault(name, f"data.joins.{name}.table")
    for table, spec in specs.items():
        checked_spec(spec, keys[table])
    return specs


def config_fingerprint(data: Mapping[str, Any], features: Mapping[str, Any]) -> str:
    """sha256 of the data and features configs the snapshots are built from.

    ``features.exclude`` is left out: training drops excluded columns itself, so changing
    it needs no rebuild. So are file locations (the sources are compared by content: a project
    copied to another folder is still current) and the points sheet (see BUILD_IRRELEVANT_KEYS).
    """
    payload = {
        "data": _without_locations(data),
        "features": {k: v for k, v in features.items() if k != "exclude"},
    }
    return _sha256_of(payload)


def _sha256_of(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stale_upstream(
    data: Mapping[str, Any], features: Mapping[str, Any], interim_dir: Path, features_dir: Path
) -> str | None:
    """Why the ingested data and features must be rebuilt before training, or None when current.

    Current means: both stages finished, the features were built from this data and features
    config, and every source still has the bytes (sha256) it had when it was ingested.
    """
    if not (features_dir / MANIFEST).exists():
        return f"no features in {features_dir} yet"
    if not (interim_dir / MANIFEST).exists():
        return f"no ingested data in {interim_dir} yet"
    built = json.loads((features_dir / MANIFEST).read_text())
    if built.get("config_fingerprint") != config_fingerprint(data, features):
        return "the data or features config changed since the features were built"
    ingested = json.loads((interim_dir / MANIFEST).read_text())
    return changed_source(data, ingested.get("tables", {}))


def changed_source(data: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Which configured source no longer has the bytes (sha256) the ingestion's ``tables`` record
    for it, and why; None when every one does."""
    for table, spec in source_specs(data).items():
        recorded = (tables.get(table) or {}).get("source_fingerprint")
        if recorded is None or not _source_exists(spec):
            return f"table {table} was not ingested from {describe_source(spec)}"
        if recorded != fingerprint_source(spec):
            return f"{describe_source(spec)} changed since it was ingested"
    return None


# data config keys that do not change what ingest and features build: file locations (the
# sources are compared by content), the points sheet (read by training) and the batch size
BUILD_IRRELEVANT_KEYS = ("path", "ground_truth", "points", "batch_rows")


def _without_locations(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_locations(v) for k, v in value.items() if k not in BUILD_IRRELEVANT_KEYS}
    if isinstance(value, list):
        return [_without_locations(item) for item in value]
    return value


def _source_exists(spec: Mapping[str, Any]) -> bool:
    path = spec.get("path")
    return path is None or Path(str(path)).exists()
