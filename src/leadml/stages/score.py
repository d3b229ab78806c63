"""``leadml-score``: every open lead scored with the champion, by the pandas or the Spark engine."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from leadml.adapters import sinks, tracking
from leadml.adapters.layout import FLAT_TABLE, SCORING_RUN_RECORD, open_rows_file
from leadml.adapters.model_folder import local_model_folder
from leadml.adapters.sources import write_json_atomic
from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.data.contracts import as_tuple
from leadml.data.features import FeatureSettings
from leadml.errors import LeadmlError, data_config_file
from leadml.modelling.drift import population_stability
from leadml.modelling.scorer import PROBABILITY
from leadml.scoring.model_input import resolve_as_of
from leadml.scoring.pandas_engine import CrmOpenLeads, FlatOpenLeads, OpenLeads, score_in_buckets, time_bounds
from leadml.scoring.scores import TierSettings, TrendSettings
from leadml.scoring.spark_engine import score_from_config
from leadml.stages.features import feature_settings
from leadml.stages.ingest import data_kind, ingest_stage

logger = logging.getLogger(__name__)


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


def check_flat_scoring(data: Mapping[str, Any]) -> None:
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


def scoring_tracked(score_cfg: Mapping[str, Any]) -> bool:
    """Whether the scoring run is logged to MLflow (``score.track``).

    ``auto``: yes for a model from the registry or a run; no for an exported folder
    (``score.model_uri=models/<name>-v<n>``), which scores where no tracking server is
    reachable. The run's figures are in ``_scoring_run.json`` beside the rows either way.
    """

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

    started = time.perf_counter()
    score_cfg, data, mlflow_cfg = cfg["score"], cfg["data"], cfg["mlflow"]
    flat = data_kind(data) == "flat"
    if flat:  # checked before anything runs: a flat data set needs its open leads
        check_flat_scoring(data)
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
        outcome = score_from_config(score_cfg, open_leads, scorer, as_of, tiers, str(version))
    else:  # lead buckets one after another in this process, in bounded memory
        output_dir = Path(score_cfg["output_dir"])
        held.enter_context(sinks.date_lock(output_dir, as_of))  # a second run of this date refuses at once
        held.enter_context(undone_on_error(output_dir, as_of))  # until the run is tracked
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
def undone_on_error(output_dir: Path, as_of: pd.Timestamp) -> Iterator[None]:
    """The date's partition as it was before the run, if the run fails after writing it.

    Rows whose scoring run is missing from MLflow (the server went away after they were written)
    must not look like a finished night: the previous partition comes back from a hard-linked
    copy (no data copied), or the new one goes when there was none.
    """

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
