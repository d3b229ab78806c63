"""``leadml-ingest``: read every configured source, check its contract, write data/interim."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leadml.adapters.layout import FLAT_TABLE, MANIFEST, dictionary_encoded, open_rows_file
from leadml.adapters.sources import (
    checked_spec,
    describe_source,
    fingerprint_file,
    fingerprint_source,
    read_source,
    write_json_atomic,
    write_parquet_atomic,
)
from leadml.data import schema as s
from leadml.data.contracts import (
    OUTCOMES_TABLE,
    SETTINGS_KEYS,
    IngestSettings,
    column_specs_from_config,
    crm_contracts,
    flat_contract,
)
from leadml.data.flat import ingest_flat
from leadml.data.ingest import check_bad_shares, ingest_crm, manifest, respelt_categories
from leadml.data.joins import combine_flat, lookup_specs, lookups, row_rules, with_lookups
from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)


def ingest_settings(data: Mapping[str, Any]) -> IngestSettings:
    return IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})


def data_kind(data: Mapping[str, Any]) -> str:
    kind = data.get("kind", "crm")
    if kind not in ("crm", "flat"):
        raise LeadmlError(f"data.kind must be 'crm' or 'flat', got {kind!r} (data={data.get('name')})")
    return kind


def ingest_stage(data: Mapping[str, Any], output_dir: Path) -> dict[str, Any]:
    """Validate every configured source into ``output_dir`` (tables, quarantine/, manifest)."""
    started = time.perf_counter()
    settings = ingest_settings(data)
    if data_kind(data) == "flat":  # checked before reading, so a config error costs no time
        contract = flat_contract(data["contract"], data.get("outcomes"))
        lookups(data.get("joins"), (contract.table.name, OUTCOMES_TABLE))
        row_rules(data.get("where"))
    elif data.get("joins") or data.get("where"):
        raise LeadmlError(
            f"data.joins and data.where apply to a flat table (data.kind: flat); data={data.get('name')} "
            "is crm: filter and join in the source's SQL query instead"
        )
    specs = source_specs(data)
    sources = {table: describe_source(spec) for table, spec in specs.items()}
    quarantine_paths = {table: str(output_dir / "quarantine" / f"{table}.parquet") for table in specs}
    raw = {}
    for table, spec in specs.items():
        logger.info("reading %s from %s", table, sources[table])
        raw[table] = read_source(spec)
    contracts = (
        crm_contracts({s.LEADS: column_specs_from_config(data.get("extra_features"))})
        if data_kind(data) == "crm"
        else {FLAT_TABLE: contract.table}
    )
    combined = None
    if data_kind(data) == "flat":  # lookups joined, rows kept by data.where: the table the contract sees
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
    respelt_by_table = {
        table: respelt_categories(raw[table], table_contract, settings)
        for table, table_contract in contracts.items()
        if table in raw
    }
    if data_kind(data) == "crm":
        result = ingest_crm(
            raw,
            contracts,
            settings,
            sources=sources,
            quarantine_paths=quarantine_paths,
            enforce_bad_share=False,
        )
    else:
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
            source_rows=combined.source_rows if combined is not None else None,
        )
        if combined is not None:
            result = with_lookups(result, combined.lookups)
    for table, rejected in result.quarantines.items():
        write_parquet_atomic(rejected, quarantine_paths[table])
    check_bad_shares(result, settings)  # after writing, so the message points to existing files
    output_paths = {table: str(output_dir / f"{table}.parquet") for table in result.tables}
    for table, frame in result.tables.items():
        write_parquet_atomic(dictionary_encoded(table, frame), output_paths[table])
    open_paths = {table: output_dir / open_rows_file(table) for table in result.open_rows}
    for table, frame in result.open_rows.items():
        write_parquet_atomic(frame, open_paths[table])
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
        data_name=data.get("name"), kind=data_kind(data), seconds=round(time.perf_counter() - started, 2)
    )
    if result.labels:
        record["labels"] = result.labels
    if combined is not None:
        record.update(combined.record(FLAT_TABLE))
    for table, respelt in respelt_by_table.items():
        if respelt and table in record["tables"]:
            record["tables"][table]["respelt"] = respelt
    if result.open_rows:
        record["open_rows"] = {
            table: {"rows": len(frame), "output_path": str(open_paths[table])}
            for table, frame in result.open_rows.items()
        }
    write_json_atomic(record, output_dir / MANIFEST)
    return record


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
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
    tables = ingested.get("tables", {})
    for table, spec in source_specs(data).items():
        recorded = tables.get(table, {}).get("source_fingerprint")
        if recorded is None or not _source_exists(spec):
            return f"table {table} was not ingested from {describe_source(spec)}"
        if recorded != fingerprint_source(spec):
            return f"{describe_source(spec)} changed since it was ingested"
    return None


# data config keys that do not change what ingest and features build: file locations (the
# sources are compared by content) and the points sheet (read by training)
BUILD_IRRELEVANT_KEYS = ("path", "ground_truth", "points")


def _without_locations(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_locations(v) for k, v in value.items() if k not in BUILD_IRRELEVANT_KEYS}
    if isinstance(value, list):
        return [_without_locations(item) for item in value]
    return value


def _source_exists(spec: Mapping[str, Any]) -> bool:
    path = spec.get("path")
    return path is None or Path(str(path)).exists()
