"""The I/O side of each stage: read the declared inputs, call the pure functions, write the outputs.

Stages hand data on through files (Parquet tables, JSON manifests) so each one can be
re-run alone. Every output is written atomically; a stage that fails leaves the
previous outputs as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from leadml import schema as s
from leadml.contracts import (
    SETTINGS_KEYS,
    IngestSettings,
    column_specs_from_config,
    crm_contracts,
    flat_contract,
)
from leadml.errors import LeadmlError
from leadml.features import (
    LABEL,
    FeatureSettings,
    build_training_snapshots,
    feature_metadata,
    flat_feature_metadata,
    flat_snapshots,
    metadata_to_json,
)
from leadml.ingest import check_bad_shares, ingest_crm, ingest_flat, manifest
from leadml.sources import (
    describe_source,
    fingerprint_file,
    fingerprint_source,
    read_source,
    write_json_atomic,
    write_parquet_atomic,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SNAPSHOTS = "snapshots.parquet"
FEATURE_METADATA = "feature_metadata.json"
FLAT_TABLE = "leads"
# Columns stored as dictionary-encoded Parquet: repeated ids and codes load as
# categoricals, which makes the features stage's lookups several times faster.
CATEGORICAL_ON_DISK = {s.ACTIVITIES: (s.LEAD_ID,)}


def _ingest_settings(data: Mapping[str, Any]) -> IngestSettings:
    return IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})


def _kind(data: Mapping[str, Any]) -> str:
    kind = data.get("kind", "crm")
    if kind not in ("crm", "flat"):
        raise LeadmlError(f"data.kind must be 'crm' or 'flat', got {kind!r} (data={data.get('name')})")
    return kind


# --------------------------------------------------------------------------- ingest
def ingest_stage(data: Mapping[str, Any], output_dir: Path) -> dict[str, Any]:
    """Validate every configured source into ``output_dir`` (tables, quarantine/, manifest)."""
    started = time.perf_counter()
    settings = _ingest_settings(data)
    specs: dict[str, Mapping[str, Any]] = (
        dict(data["tables"]) if _kind(data) == "crm" else {FLAT_TABLE: data["table"]}
    )
    sources = {table: describe_source(spec) for table, spec in specs.items()}
    quarantine_paths = {table: str(output_dir / "quarantine" / f"{table}.parquet") for table in specs}
    raw = {}
    for table, spec in specs.items():
        logger.info("reading %s from %s", table, sources[table])
        raw[table] = read_source(spec)
    if _kind(data) == "crm":
        extra = {s.LEADS: column_specs_from_config(data.get("extra_features"))}
        result = ingest_crm(
            raw,
            crm_contracts(extra),
            settings,
            sources=sources,
            quarantine_paths=quarantine_paths,
            enforce_bad_share=False,
        )
    else:
        result = ingest_flat(
            raw[FLAT_TABLE],
            flat_contract(data["contract"]),
            settings,
            source=sources[FLAT_TABLE],
            quarantine_path=quarantine_paths[FLAT_TABLE],
            enforce_bad_share=False,
        )
    for table, rejected in result.quarantines.items():
        write_parquet_atomic(rejected, quarantine_paths[table])
    check_bad_shares(result, settings)  # after writing, so the message points to existing files
    output_paths = {table: str(output_dir / f"{table}.parquet") for table in result.tables}
    for table, frame in result.tables.items():
        write_parquet_atomic(_dictionary_encoded(table, frame), output_paths[table])
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
        data_name=data.get("name"), kind=_kind(data), seconds=round(time.perf_counter() - started, 2)
    )
    write_json_atomic(record, output_dir / MANIFEST)
    return record


def _dictionary_encoded(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in CATEGORICAL_ON_DISK.get(table, ()) if c in frame.columns]
    return frame.astype(dict.fromkeys(columns, "category")) if columns else frame


def read_interim(input_dir: Path, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The validated tables of a finished ingestion; a clear error when it has not run."""
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no ingested data in {input_dir} (run leadml-ingest, or make ingest, first)")
    return {table: pd.read_parquet(input_dir / f"{table}.parquet") for table in tables}


# --------------------------------------------------------------------------- features
def features_stage(
    data: Mapping[str, Any],
    features: Mapping[str, Any],
    input_dir: Path,
    output_dir: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Training snapshots, feature metadata and a manifest from the ingested tables."""
    started = time.perf_counter()
    if _kind(data) == "crm":
        extra = data.get("extra_features") or {}
        settings = FeatureSettings.from_mapping(
            {
                **features,
                "extra_categorical": tuple(extra.get("categorical", ())),
                "extra_numeric": tuple(extra.get("numeric", ())),
            }
        )
        tables = read_interim(input_dir, s.CRM_TABLES)
        snapshots = build_training_snapshots(tables, settings, progress=progress)
        meta = feature_metadata(snapshots.columns, settings)
        horizon = settings.horizon_days
    else:
        contract = data["contract"]
        table = read_interim(input_dir, (FLAT_TABLE,))[FLAT_TABLE]
        snapshots = flat_snapshots(
            table, personal=contract.get("personal", ()), exclude=features.get("exclude", ())
        )
        meta = flat_feature_metadata(snapshots, data.get("families", {}))
        horizon = None
    write_parquet_atomic(snapshots, output_dir / SNAPSHOTS)
    write_json_atomic(metadata_to_json(meta), output_dir / FEATURE_METADATA)
    summary = {
        "stage": "features",
        "data_name": data.get("name"),
        "kind": _kind(data),
        "snapshots": len(snapshots),
        "leads": int(snapshots[s.LEAD_ID].nunique()),
        "dates": int(snapshots[s.AS_OF].nunique()) if s.AS_OF in snapshots else 0,
        "positives": int(snapshots[LABEL].sum()),
        "positive_rate": float(snapshots[LABEL].mean()) if len(snapshots) else 0.0,
        "features": len(meta),
        "horizon_days": horizon,
        "fingerprint": fingerprint_file(output_dir / SNAPSHOTS),
        "input_manifest": str(input_dir / MANIFEST),
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    write_json_atomic(summary, output_dir / MANIFEST)
    return summary
