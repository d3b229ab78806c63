"""``leadml-features``: the point-in-time training snapshots from data/interim."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.adapters.layout import FEATURE_METADATA, FLAT_TABLE, MANIFEST, SNAPSHOTS, read_interim
from leadml.adapters.sources import (
    fingerprint_file,
    write_json_atomic,
    write_parquet_atomic,
)
from leadml.data import schema as s
from leadml.data.features import (
    LABEL,
    FeatureSettings,
    build_training_snapshots,
    feature_metadata,
    flat_feature_metadata,
    flat_snapshots,
    metadata_to_json,
    with_missingness_tested,
)
from leadml.data.wording import is_code_name
from leadml.stages.ingest import config_fingerprint, data_kind

logger = logging.getLogger(__name__)


def feature_settings(data: Mapping[str, Any], features: Mapping[str, Any]) -> FeatureSettings:
    """FeatureSettings from the features config plus the data config's extra lead columns.

    An extra column listed as numeric whose name says it is a code or an id (``campaign_code``)
    is modelled as a category, with a warning: a campaign code of 1152 is not "more" than 1000.
    """
    extra = data.get("extra_features") or {}
    numeric = tuple(extra.get("numeric", ()))
    codes = tuple(c for c in numeric if is_code_name(c))
    for column in codes:
        logger.warning(
            "features: data.extra_features.numeric lists %r, whose name says it is a code or an id: "
            "modelled as a category (list it under extra_features.categorical to silence this)",
            column,
        )
    return FeatureSettings.from_mapping(
        {
            **features,
            "extra_categorical": (*extra.get("categorical", ()), *codes),
            "extra_numeric": tuple(c for c in numeric if c not in codes),
        }
    )


@dataclass(frozen=True)
class FeaturesResult:
    """The training snapshots built (the figures of data/features/<name>/manifest.json)."""

    output_dir: Path
    snapshots: int  # rows: one per lead and as-of date (one per lead without a time column)
    leads: int
    dates: int  # as-of dates; 0 for a flat table without a time column
    positives: int
    positive_rate: float
    features: int
    duplicates: Mapping[str, Any] | None  # a flat table's exact copies, as ingestion counted them
    seconds: float


def features_stage(
    data: Mapping[str, Any],
    features: Mapping[str, Any],
    input_dir: Path,
    output_dir: Path,
    progress: bool = False,
) -> FeaturesResult:
    """Training snapshots, feature metadata and a manifest from the ingested tables."""
    started = time.perf_counter()
    if data_kind(data) == "crm":
        settings = feature_settings(data, features)
        tables = read_interim(input_dir, s.CRM_TABLES)
        snapshots = build_training_snapshots(tables, settings, progress=progress)
        meta = feature_metadata(snapshots.columns, settings, data.get("labels"))
        horizon = settings.horizon_days
        duplicates = None
    else:
        contract = data["contract"]
        table = read_interim(input_dir, (FLAT_TABLE,))[FLAT_TABLE]
        snapshots = flat_snapshots(
            table, personal=contract.get("personal", ()), exclude=features.get("exclude", ())
        )
        meta = flat_feature_metadata(snapshots, data.get("families", {}), data.get("labels"))
        horizon = None
        ingested = json.loads((input_dir / MANIFEST).read_text()).get("tables", {}).get(FLAT_TABLE, {})
        duplicates = ingested.get("duplicates")
    meta = with_missingness_tested(meta, snapshots)
    write_parquet_atomic(snapshots, output_dir / SNAPSHOTS)
    write_json_atomic(metadata_to_json(meta), output_dir / FEATURE_METADATA)
    summary = {
        "stage": "features",
        "data_name": data.get("name"),
        "kind": data_kind(data),
        "snapshots": len(snapshots),
        "leads": int(snapshots[s.LEAD_ID].nunique()),
        "dates": int(snapshots[s.AS_OF].nunique()) if s.AS_OF in snapshots else 0,
        "positives": int(snapshots[LABEL].sum()),
        "positive_rate": float(snapshots[LABEL].mean()) if len(snapshots) else 0.0,
        "features": len(meta),
        "horizon_days": horizon,
        **({} if duplicates is None else {"duplicates": duplicates}),
        "fingerprint": fingerprint_file(output_dir / SNAPSHOTS),
        "config_fingerprint": config_fingerprint(data, features),
        "input_manifest": str(input_dir / MANIFEST),
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    write_json_atomic(summary, output_dir / MANIFEST)
    return FeaturesResult(
        output_dir=output_dir,
        snapshots=summary["snapshots"],
        leads=summary["leads"],
        dates=summary["dates"],
        positives=summary["positives"],
        positive_rate=summary["positive_rate"],
        features=summary["features"],
        duplicates=duplicates,
        seconds=summary["seconds"],
    )
