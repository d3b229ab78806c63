"""The I/O side of each stage: read the declared inputs, call the pure functions, write the outputs.

Stages hand data on through files (Parquet tables, JSON manifests) so each one can be
re-run alone. Every output is written atomically; a stage that fails leaves the
previous outputs as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from leadml.adapters.sources import (
    checked_spec,
    describe_source,
    fingerprint_file,
    fingerprint_source,
    masked_urls,
    read_source,
    write_json_atomic,
    write_parquet_atomic,
)
from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.data.contracts import (
    OUTCOMES_TABLE,
    SETTINGS_KEYS,
    SOURCE_ROW,
    IngestSettings,
    as_tuple,
    column_specs_from_config,
    crm_contracts,
    flat_contract,
)
from leadml.data.features import (
    LABEL,
    FeatureMeta,
    FeatureSettings,
    build_training_snapshots,
    feature_metadata,
    flat_feature_metadata,
    flat_snapshots,
    metadata_to_json,
)
from leadml.data.ingest import check_bad_shares, ingest_crm, ingest_flat, manifest, respelt_categories
from leadml.data.joins import combine_flat, lookup_specs, lookups, row_rules, with_lookups
from leadml.errors import LeadmlError, SchemaMismatchError, data_config_file
from leadml.modelling.scorer import PROBABILITY

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# the scoring run's summary inside its partition (a leading "_": Parquet readers skip it)
SCORING_RUN_RECORD = "_scoring_run.json"
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
    if _kind(data) == "flat":  # checked before reading, so a config error costs no time
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
        if _kind(data) == "crm"
        else {FLAT_TABLE: contract.table}
    )
    combined = None
    if _kind(data) == "flat":  # lookups joined, rows kept by data.where: the table the contract sees
        combined = combine_flat(
            raw[FLAT_TABLE],
            {name: raw[name] for name in lookup_specs(data)},
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
    if _kind(data) == "crm":
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
        write_parquet_atomic(_dictionary_encoded(table, frame), output_paths[table])
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
        data_name=data.get("name"), kind=_kind(data), seconds=round(time.perf_counter() - started, 2)
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


def open_rows_file(table: str) -> str:
    """File name of a flat table's open leads (``contract.open``) next to its labelled rows."""
    return f"open_{table}.parquet"


def source_specs(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every source the data config reads, by table name; a bad spec or SQL name names its config key."""
    if _kind(data) == "crm":
        specs = dict(data["tables"])
        keys = {table: f"data.tables.{table}" for table in specs}
    else:
        specs = {FLAT_TABLE: data["table"]}
        keys = {FLAT_TABLE: "data.table"}
        if data.get("outcomes"):
            specs[OUTCOMES_TABLE] = data["outcomes"]["table"]
            keys[OUTCOMES_TABLE] = "data.outcomes.table"
        for name, spec in lookup_specs(data).items():  # a name in use is refused by joins.lookups
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


def _dictionary_encoded(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in CATEGORICAL_ON_DISK.get(table, ()) if c in frame.columns]
    return frame.astype(dict.fromkeys(columns, "category")) if columns else frame


def read_interim(input_dir: Path, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The validated tables of a finished ingestion; a clear error when it has not run."""
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no ingested data in {input_dir} (run leadml-ingest, or make ingest, first)")
    return {table: pd.read_parquet(input_dir / f"{table}.parquet") for table in tables}


# --------------------------------------------------------------------------- features
def feature_settings(data: Mapping[str, Any], features: Mapping[str, Any]) -> FeatureSettings:
    """FeatureSettings from the features config plus the data config's extra lead columns."""
    extra = data.get("extra_features") or {}
    return FeatureSettings.from_mapping(
        {
            **features,
            "extra_categorical": tuple(extra.get("categorical", ())),
            "extra_numeric": tuple(extra.get("numeric", ())),
        }
    )


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
        settings = feature_settings(data, features)
        tables = read_interim(input_dir, s.CRM_TABLES)
        snapshots = build_training_snapshots(tables, settings, progress=progress)
        meta = feature_metadata(snapshots.columns, settings)
        horizon = settings.horizon_days
        duplicates = None
    else:
        contract = data["contract"]
        table = read_interim(input_dir, (FLAT_TABLE,))[FLAT_TABLE]
        snapshots = flat_snapshots(
            table, personal=contract.get("personal", ()), exclude=features.get("exclude", ())
        )
        meta = flat_feature_metadata(snapshots, data.get("families", {}))
        horizon = None
        ingested = json.loads((input_dir / MANIFEST).read_text()).get("tables", {}).get(FLAT_TABLE, {})
        duplicates = ingested.get("duplicates")
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
        **({} if duplicates is None else {"duplicates": duplicates}),
        "fingerprint": fingerprint_file(output_dir / SNAPSHOTS),
        "config_fingerprint": config_fingerprint(data, features),
        "input_manifest": str(input_dir / MANIFEST),
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    write_json_atomic(summary, output_dir / MANIFEST)
    return summary


# --------------------------------------------------------------------------- train
def read_features(
    input_dir: Path, exclude: Iterable[str] = ()
) -> tuple[pd.DataFrame, dict[str, FeatureMeta], dict[str, Any], list[dict[str, Any]]]:
    """(snapshots, metadata, manifest, metadata records) of the features stage, ``exclude`` left out."""
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no features in {input_dir} (run leadml-features, or make features, first)")
    snapshots = pd.read_parquet(input_dir / SNAPSHOTS)
    features_manifest = json.loads((input_dir / MANIFEST).read_text())
    metadata_records = json.loads((input_dir / FEATURE_METADATA).read_text())
    metadata = {m["name"]: FeatureMeta(**m) for m in metadata_records}
    snapshots = snapshots.drop(columns=[c for c in exclude if c in snapshots])
    metadata = {name: meta for name, meta in metadata.items() if name in snapshots.columns}
    return snapshots, metadata, features_manifest, metadata_records


def train_stage(cfg: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Train, calibrate and evaluate from data/features, track it all in MLflow, register and gate."""
    import yaml

    from leadml.adapters import tracking
    from leadml.modelling.points import POINTS as POINTS_MODEL
    from leadml.modelling.train import (
        BASELINE_LOGREG,
        BASELINE_POINTS,
        ORACLE,
        base_rate_drift,
        gate_evidence,
        promotion_gate,
        train_and_evaluate,
    )
    from leadml.reporting import html, model_report
    from leadml.scoring.requests import feature_example

    started = time.perf_counter()
    input_dir = Path(cfg["input_dir"])
    snapshots, metadata, features_manifest, metadata_records = read_features(
        input_dir, cfg["features"].get("exclude", ())
    )
    truth_path = cfg["data"].get("ground_truth")
    truth = pd.read_parquet(truth_path) if truth_path and Path(truth_path).exists() else None

    mlflow_cfg = cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    model_name = mlflow_cfg["registered_model"]
    with tracking.run(run_name=f"train-{cfg['model']['name']}") as run_id:
        # database passwords in data.tables.*.url or score.sql.url never reach the tracking store
        tracking.log_params(masked_urls({k: v for k, v in cfg.items() if k != "hydra"}))
        tracking.log_text(yaml.safe_dump(masked_urls(dict(cfg)), sort_keys=False), "config.yaml")
        result = train_and_evaluate(snapshots, metadata, cfg, truth, progress=bool(cfg.get("progress")))
        if _kind(cfg["data"]) == "crm":
            result.scorer.feature_settings = asdict(feature_settings(cfg["data"], cfg["features"]))
        else:  # a request to the served model spells a flat row as the file does
            if cfg["data"]["contract"].get("id") not in (None, SOURCE_ROW):
                result.scorer.request_id = str(cfg["data"]["contract"]["id"])
            settings = _ingest_settings(cfg["data"])
            synonyms = {name: settings.synonyms_for(name) for name in result.scorer.feature_names}
            result.scorer.request_synonyms = {name: given for name, given in synonyms.items() if given}
        for window, rows in result.windows.items():
            tracking.log_dataset(
                rows,
                f"{cfg['data']['name']}-{window}",
                window_fingerprint(rows),
                f"{input_dir / SNAPSHOTS} (features {features_manifest.get('fingerprint', '')[:16]})",
                window,
            )
        tracking.log_dict(result.split, "split.json")
        drift = base_rate_drift(result.split)
        if "change" in drift:
            tracking.log_metrics(
                {"change": drift["change"], "p_value": drift["p_value"]}, prefix="base_rate_drift."
            )
        tracking.log_dict(
            {"purged_rows": result.purged_rows, "duplicate_rows": result.duplicate_rows}, "split_purged.json"
        )
        if result.selection is not None:
            tracking.log_dict(result.selection.describe(), "selection.json")
            if not result.selection.trials.empty:
                tracking.log_table(result.selection.trials, "selection_trials.csv")
            tracking.log_metrics(
                {str(name): float(row["roc_auc"]) for name, row in result.selection.table.iterrows()},
                prefix="validation.",
            )
            tracking.set_tags({"selection.chosen": result.selection.chosen})
        tracking.log_dict(result.deployment, "deployment.json")
        tracking.log_table(result.leakage, "leakage_report.csv")
        if result.leakage_excluded:
            tracking.set_tags({"leakage.excluded": ", ".join(result.leakage_excluded)})
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
        tracking.log_metrics(upstream_seconds(features_manifest), prefix="seconds.stage.")
        labels = result.test[s.LABEL].to_numpy()
        if result.shap_importance is not None:
            tracking.log_table(result.shap_importance, "shap_importance.csv")
        charts = {}  # drawn once: logged to the run and embedded in the model report
        for chart, figure in model_report.chart_figures(
            labels, result.probabilities, result.shap_importance, result.shap_sample, metadata
        ).items():
            charts[chart] = html.figure_data_uri(figure, close=False)
            tracking.log_figure(figure, f"plots/{model_report.CHART_ARTIFACTS[chart]}.png")

        names = result.scorer.feature_names
        example = feature_example(result.scorer, result.test.head(5))
        model_uri = tracking.log_model(result.scorer, "model", example)
        version = tracking.register(model_uri, model_name)

        champion_version = tracking.version_by_alias(model_name, tracking.CHAMPION)
        champion_metrics = None
        if champion_version is not None:
            champion_metrics = _rescore_champion(model_name, champion_version, result.test, names, labels)
        metrics = result.comparison
        points = None
        if BASELINE_POINTS in metrics.index and result.model_name != POINTS_MODEL:
            points = metrics.loc[BASELINE_POINTS]
        decision = promotion_gate(
            metrics.loc[result.model_name],
            metrics.loc[BASELINE_LOGREG],
            champion_metrics,
            cfg["promotion"],
            points=points,
            evidence=gate_evidence(result, bool(drift.get("flagged"))),
        )
        # the report before the alias moves: a report that cannot be written fails the run unpromoted
        report_run = model_report.RunInfo(
            run_id=run_id,
            version=version,
            registered_model=model_name,
            tracking_uri=tracking.masked_uri(uri),
            champion_version=champion_version,
            champion_metrics=champion_metrics,
            stage_seconds=upstream_seconds(features_manifest),
            elapsed_seconds=time.perf_counter() - started,
        )
        report_path = Path(cfg["report_dir"]) / f"model-v{version}.html"
        model_report.write_model_report(report_path, result, decision, report_run, cfg, metadata, charts)
        try:
            report_artifact = tracking.log_file(report_path, "report")
            tracking.set_tags({"report": str(report_path.resolve()), "report_artifact": report_artifact})
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
            # the aliases move last: a run that fails on the way (tracking server gone) moves none
            tracking.set_alias(model_name, tracking.CHALLENGER, version)
            if decision.promote:
                tracking.set_alias(model_name, tracking.CHAMPION, version)
        except BaseException:
            report_path.unlink(missing_ok=True)  # no report of a version whose run did not finish
            raise

    summary = {
        "run_id": run_id,
        "tracking_uri": tracking.masked_uri(uri),
        "registered_model": model_name,
        "version": version,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "champion_before": champion_version,
        "split": result.split,
        "comparison": result.comparison,
        "calibration": result.calibration,
        "has_oracle": ORACLE in result.probabilities,
        "leakage_flagged": _flagged_reasons(result.leakage, result.leakage_flagged),
        "leakage_checked": len(result.leakage),  # columns the sentinel looked at
        "leakage_excluded": list(result.leakage_excluded),
        "base_rate_drift": drift,
        "model_name": result.model_name,
        "selection": result.selection.sentence if result.selection is not None else "",
        "deployment": result.deployment,
        "notes": list(result.notes),
        "duplicate_rows": result.duplicate_rows,
        "report": str(report_path),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return summary


def _flagged_reasons(leakage: pd.DataFrame, flagged: list[str]) -> dict[str, str]:
    reasons = dict(zip(leakage["feature"], leakage["reason"], strict=False))
    return {name: str(reasons.get(name, "")) for name in flagged}


def upstream_seconds(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Duration of each earlier stage, following the manifests' ``input_manifest`` links.

    With the train stage's own ``seconds.total``, the run records where the time of a
    whole ``make train`` went.
    """
    seconds: dict[str, float] = {}
    seen: set[str] = set()
    while manifest:
        if "stage" in manifest and "seconds" in manifest:
            seconds[str(manifest["stage"])] = float(manifest["seconds"])
        link = manifest.get("input_manifest")
        if not link or link in seen or not Path(link).exists():
            break
        seen.add(link)
        manifest = json.loads(Path(link).read_text())
    return seconds


def window_fingerprint(rows: pd.DataFrame) -> str:
    """SHA-256 of a window's rows (keys, label and features): equal windows, equal fingerprints."""
    hashed = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


MIN_CHAMPION_ROWS = 200  # unseen test rows (with both labels) needed to rescore the champion


def _rescore_champion(
    model_name: str, version: str, test: pd.DataFrame, names: list[str], labels: Any
) -> dict[str, Any] | None:
    """The champion's metrics on the candidate's test rows it never saw, None when it cannot score
    them, or ``{"note": ...}`` when it was trained on them (a refit saw every labelled row)."""
    from leadml.adapters import tracking
    from leadml.errors import TrackingUnavailableError
    from leadml.modelling.evaluate import binary_metrics
    from leadml.modelling.scorer import as_model_input

    labels = np.asarray(labels)
    try:
        champion = tracking.load_scorer(f"models:/{model_name}/{version}")
        unseen = unseen_rows(test, getattr(champion, "trained", None) or {})
        if unseen is not None:
            test, labels = test[unseen], labels[unseen]
            if len(test) < MIN_CHAMPION_ROWS or len(np.unique(labels)) < 2:
                return {
                    "note": f"champion v{version} was trained on this test window (its refit saw every "
                    "labelled row), so it cannot be compared on it; the candidate is judged on its own"
                }
        predicted = champion.predict(as_model_input(test, names))
    except TrackingUnavailableError:
        raise  # not "the champion cannot score": nobody could tell
    except Exception as error:  # a champion built on other features cannot score these rows
        logger.warning("champion version %s cannot score the test rows: %s", version, error)
        return None
    return {**binary_metrics(labels, predicted["probability"].to_numpy()), "rows": len(test)}


def unseen_rows(test: pd.DataFrame, trained: Mapping[str, Any]) -> np.ndarray | None:
    """Which test rows lie after everything a refitted champion was trained on (None: no record)."""
    column, through = trained.get("position_column"), trained.get("through")
    if not trained.get("refit"):
        return None
    if column is None or through is None or column not in test.columns:
        return np.zeros(len(test), dtype=bool)  # a refit without time saw every row
    position = test[column]
    if column == s.AS_OF:
        return (position > pd.Timestamp(through)).to_numpy()
    return (position > float(through)).to_numpy()


# --------------------------------------------------------------------------- score
def resolve_as_of(
    value: Any, tables: Mapping[str, pd.DataFrame], end: Callable[[], pd.Timestamp] | None = None
) -> pd.Timestamp:
    """The scoring date (midnight UTC): ``today``, ``latest`` (the day after the data's last
    timestamp, for replayed or synthetic data: of the CRM ``tables``, or ``end()``) or a date."""
    from leadml.data.features import data_end

    text = str(value or "today").strip().lower()
    if text == "today":
        return pd.Timestamp.now(tz="UTC").normalize()
    if text == "latest":
        last = end() if end is not None else data_end(tables)
        return last.normalize() + pd.Timedelta(days=1)
    try:
        stamp = pd.Timestamp(str(value))
    except ValueError:
        raise LeadmlError(f"score.as_of must be today, latest or YYYY-MM-DD, got {value!r}") from None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.normalize()


def _scoring_feature_settings(
    scorer: Any, data: Mapping[str, Any], features: Mapping[str, Any]
) -> FeatureSettings:
    """The feature settings stored with the model, else the configured ones (older models)."""
    if getattr(scorer, "feature_settings", None):
        return FeatureSettings.from_mapping(scorer.feature_settings)
    return feature_settings(data, features)


FLAT_WITHOUT_TIME = (
    "the flat table has no time column (contract.time): its open leads are scored as the file "
    "has them, so a trend between runs shows a changed row or model, not time passing"
)


def _check_flat_scoring(data: Mapping[str, Any]) -> None:
    """A flat data set is scored from its open leads (either engine); say so before any work."""
    if not as_tuple((data.get("contract") or {}).get("open")) and not data.get("outcomes"):
        raise LeadmlError(
            f"data={data.get('name')} is a flat table without open leads to score: add contract.open "
            f"(the target values of leads still open, e.g. open: [Open]) to {data_config_file(data)}"
        )


def _check_open_rows(data: Mapping[str, Any], ingested: Mapping[str, Any]) -> None:
    """A flat table labelled by outcomes whose every lead is labelled: say why there is nothing to score."""
    labels = ingested.get("labels") or {}
    if data.get("outcomes") and not (ingested.get("open_rows") or {}).get(FLAT_TABLE, {}).get("rows"):
        raise LeadmlError(
            f"data={data.get('name')}: no open leads to score: a lead labelled by outcomes is open while "
            f"its {labels.get('horizon_days', 0):g}-day horizon runs and it has not won, and every lead's "
            f"horizon ended by {str(labels.get('observed_until'))[:10]} (the end of observation) or it is won"
        )


def flat_data_end(interim_dir: Path) -> pd.Timestamp:
    """The latest ``as_of`` (the flat table's time column) of its labelled and open leads."""
    latest = []
    for path in (interim_dir / f"{FLAT_TABLE}.parquet", interim_dir / open_rows_file(FLAT_TABLE)):
        if path.exists() and s.AS_OF in pq.read_schema(path).names:
            latest.append(pd.read_parquet(path, columns=[s.AS_OF])[s.AS_OF].max())
    present = [to_utc(stamp) for stamp in latest if not pd.isna(stamp)]
    if not present:
        raise LeadmlError(
            "score.as_of=latest needs a time column (contract.time) in the flat table; "
            "use score.as_of=today or a date"
        )
    return max(present)


def check_model_input(features: pd.DataFrame, scorer: Any) -> None:
    """Every model feature present with the kind the model was trained on; else name them."""
    missing = [name for name in scorer.feature_names if name not in features.columns]
    categorical = set(getattr(scorer.model, "categories", {}) or {})
    mistyped = []
    for name in scorer.feature_names:
        if name in missing:
            continue
        is_numeric = pd.api.types.is_numeric_dtype(features[name].dtype) and not isinstance(
            features[name].dtype, pd.CategoricalDtype
        )
        if name in categorical and is_numeric and features[name].notna().any():
            mistyped.append(f"{name} (numbers where the model expects categories)")
        elif name not in categorical and not is_numeric:
            mistyped.append(f"{name} ({features[name].dtype} where the model expects numbers)")
    emptied = _emptied_columns(features, scorer)
    if missing or mistyped or emptied:
        parts = []
        if emptied:
            parts.append(f"column(s) with every value missing today, unlike in training: {emptied}")
        if missing:
            parts.append(f"missing column(s) {missing}")
        if mistyped:
            parts.append(f"mistyped column(s) {mistyped}")
        raise SchemaMismatchError(f"today's features do not match the model: {'; '.join(parts)}")


def _emptied_columns(features: pd.DataFrame, scorer: Any, max_training_missing: float = 0.5) -> list[str]:
    """Features null in every row today although mostly filled in training: a column gone from
    the source reads as missing values, which would otherwise be scored silently."""
    profile = (getattr(scorer, "reference", None) or {}).get("features", {})
    emptied = []
    for name, ref in profile.items():
        if name not in features.columns or features[name].notna().any():
            continue
        shares = ref["shares"]
        missing = shares.get("__missing__", 0.0) if ref["kind"] == "categorical" else shares[-1]
        if missing < max_training_missing:
            emptied.append(f"{name} (missing in {missing:.0%} of training rows)")
    return emptied


def scoring_tracked(score_cfg: Mapping[str, Any]) -> bool:
    """Whether the scoring run is logged to MLflow (``score.track``).

    ``auto``: yes for a model from the registry or a run; no for an exported folder
    (``score.model_uri=models/<name>-v<n>``), which scores where no tracking server is
    reachable. The run's figures are in ``_scoring_run.json`` beside the rows either way.
    """
    from leadml.stages.export import local_model_folder

    track = score_cfg.get("track", "auto")
    if track == "auto":
        model_uri = score_cfg.get("model_uri")
        return not model_uri or local_model_folder(str(model_uri)) is None
    if isinstance(track, bool):
        return track
    raise LeadmlError(f"score.track must be auto, true or false, got {track!r}")


def score_stage(cfg: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Score every open lead as of the run date with the production model; write, sink and track it.

    With the pandas engine the date's lock is held until the run is tracked, and a run that fails
    after writing its partition (the tracking server went away) puts the date's previous one back.
    """
    with contextlib.ExitStack() as held:
        return _score_stage(cfg, root, held)


def _score_stage(cfg: Mapping[str, Any], root: Path, held: contextlib.ExitStack) -> dict[str, Any]:
    from leadml.adapters import sinks, tracking
    from leadml.scoring.pandas_engine import (
        CrmOpenLeads,
        FlatOpenLeads,
        OpenLeads,
        score_in_buckets,
        time_bounds,
    )
    from leadml.scoring.scores import TierSettings, TrendSettings, population_stability

    started = time.perf_counter()
    score_cfg, data, mlflow_cfg = cfg["score"], cfg["data"], cfg["mlflow"]
    flat = _kind(data) == "flat"
    if flat:  # checked before anything runs: a flat data set needs its open leads
        _check_flat_scoring(data)
    if (score_cfg.get("sql") or {}).get("url"):  # checked first: a bad name must not cost a scoring run
        sinks.check_identifier(score_cfg["sql"].get("table"), "score.sql.table")
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracked = scoring_tracked(score_cfg)
    if tracked:
        tracking.configure(uri, score_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    model_uri, version = tracking.production_model(mlflow_cfg["registered_model"], score_cfg.get("model_uri"))
    scorer = tracking.load_scorer(model_uri)

    engine = str(score_cfg.get("engine") or "pandas")
    if engine not in ("pandas", "spark"):
        raise LeadmlError(f"score.engine must be 'pandas' or 'spark', got {engine!r}")
    interim_dir = Path(score_cfg["interim_dir"])
    ingested = ingest_stage(data, interim_dir)
    if flat:
        _check_open_rows(data, ingested)
    tiers = TierSettings.from_mapping(cfg["tiers"])
    reference = getattr(scorer, "reference", None) or {}
    open_leads: OpenLeads  # the run date and the open leads, the same for both engines
    if flat:
        as_of = resolve_as_of(score_cfg.get("as_of"), {}, end=lambda: flat_data_end(interim_dir))
        contract = data["contract"]
        open_leads = FlatOpenLeads(
            interim_dir / open_rows_file(FLAT_TABLE),
            as_of,
            personal=tuple(as_tuple(contract.get("personal"))),
            exclude=tuple(as_tuple(cfg["features"].get("exclude"))),
        )
    else:
        as_of = resolve_as_of(score_cfg.get("as_of"), time_bounds(interim_dir))
        settings = _scoring_feature_settings(scorer, data, cfg["features"])
        open_leads = CrmOpenLeads(interim_dir, as_of, settings)
    if engine == "spark":  # same rows and figures, features and TreeSHAP computed in Spark tasks
        from leadml.scoring.spark_engine import score_from_config

        outcome = score_from_config(score_cfg, open_leads, scorer, as_of, tiers, str(version))
    else:  # lead buckets one after another in this process, in bounded memory
        output_dir = Path(score_cfg["output_dir"])
        held.enter_context(sinks.date_lock(output_dir, as_of))  # a second run of this date refuses at once
        held.enter_context(_undone_on_error(output_dir, as_of))  # until the run is tracked
        outcome = score_in_buckets(
            open_leads,
            scorer,
            as_of,
            tiers,
            output_dir=output_dir,
            work_dir=Path(score_cfg["work_dir"]),
            bucket_leads=int(score_cfg.get("bucket_leads") or 100_000),
            explain=bool(score_cfg["explain"]),
            explainer=str(score_cfg.get("explainer") or "fast"),
            trend=TrendSettings(float(score_cfg["trend_band"])),
            model_version=str(version),
            progress=bool(cfg.get("progress", False)),
        )
    as_of, written_to, psi_features, unseen = outcome.as_of, outcome.output, outcome.psi, outcome.unseen
    probabilities = pd.DataFrame({PROBABILITY: outcome.probabilities})

    psi_score = (
        population_stability({PROBABILITY: reference["score"]}, probabilities)[PROBABILITY]
        if reference.get("score")
        else float("nan")
    )
    warn, alert = float(score_cfg["psi_warn"]), float(score_cfg["psi_alert"])
    drifted = {name: value for name, value in psi_features.items() if value > warn}
    warnings = [
        f"{name}: PSI {value:.3f} ({'large' if value > alert else 'moderate'} shift)"
        for name, value in sorted(drifted.items(), key=lambda item: -item[1])
    ]
    if psi_score > warn:
        warnings.insert(
            0, f"score: PSI {psi_score:.3f} ({'large' if psi_score > alert else 'moderate'} shift)"
        )
    for line in warnings:
        logger.info("drift against the training reference: %s", line)  # the CLI prints them
    tier_counts = outcome.tier_counts
    seconds = round(time.perf_counter() - started, 2)
    metrics = {
        "leads": len(probabilities),
        "probability.mean": float(probabilities[PROBABILITY].mean()),
        "probability.p50": float(probabilities[PROBABILITY].median()),
        "probability.p90": float(probabilities[PROBABILITY].quantile(0.9)),
        "expected_conversions": float(probabilities[PROBABILITY].sum()),
        "psi.score": psi_score,
        "psi.features_above_warn": len(drifted),
        "unseen_category_rows": sum(unseen.values()),
        "seconds": seconds,
        **{f"tier.{tier}": int(count) for tier, count in tier_counts.items()},
        **{f"psi.{name}": value for name, value in psi_features.items()},
    }
    run_id = None
    if tracked:
        run_id = tracking.log_scoring_run(
            run_name=f"score-{as_of:%Y-%m-%d}",
            params={
                "as_of": f"{as_of:%Y-%m-%d}",
                "model_uri": model_uri,
                "model_version": version,
                "engine": engine,
                "buckets": outcome.buckets,
                "explain": score_cfg["explain"],
                "explainer": score_cfg.get("explainer") or "fast",
                "tiers": dict(cfg["tiers"]),
                "output": str(written_to),
            },
            metrics=metrics,
            tables={
                "psi.csv": pd.DataFrame({"feature": list(psi_features), "psi": list(psi_features.values())})
            },
            records={
                "warnings.json": {"drift": warnings, "unseen_categories": unseen},
                "ingest.json": ingested,
            },
            tags={"as_of": f"{as_of:%Y-%m-%d}", "model_version": str(version)},
        )
    sql = score_cfg.get("sql") or {}  # after the run is tracked: a run that cannot be, sinks nothing
    sql_rows = sinks.upsert_partition(sql["url"], sql["table"], written_to) if sql.get("url") else None
    summary = {
        "as_of": as_of,
        "leads": len(probabilities),
        "tiers": dict(tier_counts),
        "output": str(written_to),
        "sql_rows": sql_rows,
        "model_uri": model_uri,
        "model_version": str(version),
        "engine": engine,
        "buckets": outcome.buckets,
        "warnings": warnings,
        "unseen": unseen,
        "run_id": run_id,
        "tracking_uri": tracking.masked_uri(uri) if tracked else None,
        "seconds": seconds,
        "notes": [FLAT_WITHOUT_TIME] if flat and not data["contract"].get("time") else [],
    }
    run_record = {
        **summary,
        "as_of": f"{as_of:%Y-%m-%d}",
        "thresholds": dict(tiers.thresholds_for(outcome.probabilities)),
        "floor_tier": tiers.floor_tier,
        "psi_score": None if pd.isna(psi_score) else psi_score,
        "expected_conversions": metrics["expected_conversions"],
    }
    # beside the rows, for the report (leadml-report), which must not need the tracking server
    write_json_atomic(run_record, Path(written_to) / SCORING_RUN_RECORD)
    return summary


@contextlib.contextmanager
def _undone_on_error(output_dir: Path, as_of: pd.Timestamp) -> Iterator[None]:
    """The date's partition as it was before the run, if the run fails after writing it.

    Rows whose scoring run is missing from MLflow (the server went away after they were written)
    must not look like a finished night: the previous partition comes back from a hard-linked
    copy (no data copied), or the new one goes when there was none.
    """
    from leadml.adapters import sinks

    final = sinks.partition_dir(output_dir, as_of)
    kept, undone = output_dir / f".keep-{final.name}", output_dir / f".undo-{final.name}"
    try:
        if kept.is_dir() and not final.exists():  # a run died while putting it back
            os.replace(kept, final)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.rmtree(undone, ignore_errors=True)
        if final.is_dir():
            shutil.copytree(final, kept, copy_function=_link_or_copy)
    except OSError as error:
        raise LeadmlError(f"cannot write scores to {final}: {error.strerror or error}") from None
    try:
        yield
    except BaseException:
        if final.is_dir() and _files(final) != _files(kept):
            try:
                os.replace(final, undone)
                if kept.is_dir():
                    os.replace(kept, final)
                shutil.rmtree(undone, ignore_errors=True)
                logger.warning("the run failed after writing %s: put the previous partition back", final)
            except OSError as error:  # the run's own error matters more
                logger.error("could not put the previous partition %s back: %s", final, error)
        raise
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _files(folder: Path) -> set[tuple[str, int]]:
    """(name, inode) of every file in ``folder``: equal sets, the very same files."""
    if not folder.is_dir():
        return set()
    return {(path.name, path.stat().st_ino) for path in folder.iterdir() if path.is_file()}


def _deal_values(leads: pd.DataFrame, lead_ids: pd.Series) -> pd.Series | None:
    if s.ESTIMATED_DEAL_VALUE not in leads.columns:
        return None
    by_lead = leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.ESTIMATED_DEAL_VALUE]
    return lead_ids.map(by_lead)
