"""The I/O side of each stage: read the declared inputs, call the pure functions, write the outputs.

Stages hand data on through files (Parquet tables, JSON manifests) so each one can be
re-run alone. Every output is written atomically; a stage that fails leaves the
previous outputs as they were.
"""

from __future__ import annotations

import json
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
    FeatureMeta,
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


# --------------------------------------------------------------------------- train
def train_stage(cfg: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Train, calibrate and evaluate from data/features, track it all in MLflow, register and gate."""
    import yaml

    from leadml import plots, tracking
    from leadml.scorer import as_model_input
    from leadml.train import BASELINE_LOGREG, ORACLE, promotion_gate, train_and_evaluate

    started = time.perf_counter()
    input_dir = Path(cfg["input_dir"])
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no features in {input_dir} (run leadml-features, or make features, first)")
    snapshots = pd.read_parquet(input_dir / SNAPSHOTS)
    features_manifest = json.loads((input_dir / MANIFEST).read_text())
    metadata_records = json.loads((input_dir / FEATURE_METADATA).read_text())
    metadata = {m["name"]: FeatureMeta(**m) for m in metadata_records}
    snapshots = snapshots.drop(columns=[c for c in cfg["features"].get("exclude", ()) if c in snapshots])
    metadata = {name: meta for name, meta in metadata.items() if name in snapshots.columns}
    truth_path = cfg["data"].get("ground_truth")
    truth = pd.read_parquet(truth_path) if truth_path and Path(truth_path).exists() else None

    mlflow_cfg = cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    model_name = mlflow_cfg["registered_model"]
    with tracking.run(run_name=f"train-{cfg['model']['name']}") as run_id:
        tracking.log_params({k: v for k, v in cfg.items() if k != "hydra"})
        tracking.log_text(yaml.safe_dump(dict(cfg), sort_keys=False), "config.yaml")
        result = train_and_evaluate(snapshots, metadata, cfg, truth)
        fingerprint = features_manifest.get("fingerprint", "")
        tracking.log_dataset(
            snapshots.head(1000),
            f"{cfg['data']['name']}-snapshots",
            fingerprint,
            str(input_dir / SNAPSHOTS),
            "training",
        )
        tracking.log_dict(result.split, "split.json")
        tracking.log_dict({"purged_rows": result.purged_rows}, "split_purged.json")
        tracking.log_table(result.leakage, "leakage_report.csv")
        tracking.log_table(result.comparison.reset_index(), "metrics_comparison.csv")
        tracking.log_table(result.tiers, "tiers.csv")
        tracking.log_dict(result.calibration, "calibration.json")
        tracking.log_dict(metadata_records, "feature_metadata.json")
        for name, row in result.comparison.iterrows():
            tracking.log_metrics({k: v for k, v in row.items()}, prefix=f"test.{name}.")
        if ORACLE in result.comparison.index:
            gap = result.comparison.loc[ORACLE] - result.comparison.loc[result.model_name]
            tracking.log_metrics(
                {"roc_auc": gap["roc_auc"], "log_loss": -gap["log_loss"]}, prefix="oracle_gap."
            )
        tracking.log_metrics({f"seconds.{k}": v for k, v in result.seconds.items()})
        labels = result.test[s.LABEL].to_numpy()
        curves = {k: v for k, v in result.probabilities.items() if k != "base_rate"}
        tracking.log_figure(plots.reliability_figure(labels, curves), "plots/reliability.png")
        tracking.log_figure(plots.roc_figure(labels, curves), "plots/roc.png")
        tracking.log_figure(plots.precision_recall_figure(labels, curves), "plots/precision_recall.png")
        tracking.log_figure(plots.gains_figure(labels, curves), "plots/cumulative_gains.png")
        if result.shap_importance is not None and result.shap_sample is not None:
            tracking.log_table(result.shap_importance, "shap_importance.csv")
            tracking.log_figure(
                plots.shap_importance_figure(result.shap_importance), "plots/shap_importance.png"
            )
            values, sample = result.shap_sample
            tracking.log_figure(
                plots.shap_beeswarm_figure(values, sample, metadata), "plots/shap_beeswarm.png"
            )

        names = result.scorer.feature_names
        example = as_model_input(result.test.head(5), names)
        signature = tracking.infer_signature(example, result.scorer.predict(example))
        model_uri = tracking.log_model(tracking.scorer_pyfunc(result.scorer), "model", signature, example)
        version = tracking.register(model_uri, model_name)
        tracking.set_alias(model_name, tracking.CHALLENGER, version)

        champion_version = tracking.version_by_alias(model_name, tracking.CHAMPION)
        champion_metrics = None
        if champion_version is not None:
            champion_metrics = _rescore_champion(model_name, champion_version, result.test, names, labels)
        metrics = result.comparison
        decision = promotion_gate(
            metrics.loc[result.model_name], metrics.loc[BASELINE_LOGREG], champion_metrics, cfg["promotion"]
        )
        if decision.promote:
            tracking.set_alias(model_name, tracking.CHAMPION, version)
        tracking.log_dict(
            {
                "promote": decision.promote,
                "reasons": decision.reasons,
                "champion_before": champion_version,
                "version": version,
            },
            "promotion.json",
        )
        tracking.set_tags({"promoted": str(decision.promote), "registered_version": version})
        tracking.log_metrics({"seconds.total": time.perf_counter() - started})

    summary = {
        "run_id": run_id,
        "tracking_uri": uri,
        "registered_model": model_name,
        "version": version,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "champion_before": champion_version,
        "split": result.split,
        "comparison": result.comparison,
        "calibration": result.calibration,
        "has_oracle": ORACLE in result.probabilities,
        "model_name": result.model_name,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return summary


def _rescore_champion(
    model_name: str, version: str, test: pd.DataFrame, names: list[str], labels: Any
) -> dict[str, float] | None:
    """The champion's metrics on the candidate's test rows, or None when it cannot score them."""
    from leadml import tracking
    from leadml.evaluate import binary_metrics
    from leadml.scorer import as_model_input

    try:
        champion = tracking.load_pyfunc(f"models:/{model_name}/{version}")
        predicted = champion.predict(as_model_input(test, names))
    except Exception as error:  # a champion built on other features cannot score these rows
        logger.warning("champion version %s cannot score the test rows: %s", version, error)
        return None
    return binary_metrics(labels, predicted["probability"].to_numpy())
