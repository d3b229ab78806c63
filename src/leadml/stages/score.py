"""``leadml-score``: every open lead scored with the champion, by the pandas or the Spark engine."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from leadml.errors import LeadmlError, NoModelError, StaleDataError, data_config_file, writing_to
from leadml.modelling.drift import population_stability
from leadml.modelling.estimation import (
    PerformanceEstimate,
    check_estimate,
    estimate_performance,
    estimate_scored_run,
    recorded_test_roc_auc,
)
from leadml.modelling.scorer import PROBABILITY
from leadml.scoring.experiment import (
    ARM,
    ArmModels,
    Experiment,
    ExperimentError,
    model_uri_of,
    side_column,
)
from leadml.scoring.model_input import resolve_as_of
from leadml.scoring.pandas_engine import (
    CrmOpenLeads,
    FlatOpenLeads,
    OpenLeads,
    ScoringOutcome,
    score_in_buckets,
    time_bounds,
)
from leadml.scoring.scores import TierSettings, TrendSettings
from leadml.scoring.spark_engine import SparkSettings, score_in_session
from leadml.stages.accounts import AccountSink, roll_up_partition, write_accounts
from leadml.stages.features import feature_settings
from leadml.stages.ingest import data_kind, ingest_unless_unchanged

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


def _exported_folder(model_uri: Any) -> bool:
    return bool(model_uri) and local_model_folder(str(model_uri)) is not None


def scoring_tracked(score_cfg: Mapping[str, Any]) -> bool:
    """Whether the scoring run is logged to MLflow (``score.track``).

    ``auto``: yes for a model from the registry or a run; no for an exported folder
    (``score.model_uri=models/<name>-v<n>``), which scores where no tracking server is
    reachable. The run's figures are in ``_scoring_run.json`` beside the rows either way.
    """

    track = score_cfg.get("track", "auto")
    if track == "auto":
        return not _exported_folder(score_cfg.get("model_uri"))
    if isinstance(track, bool):
        return track
    raise LeadmlError(f"score.track must be auto, true or false, got {track!r}")


@dataclass(frozen=True)
class ScoreResult:
    """What one ``leadml-score`` run did: the CLI prints it, and the run record is built from it.

    The fields come first in ``_scoring_run.json``, in this order (:func:`_run_record`).
    """

    as_of: pd.Timestamp
    leads: int
    tiers: Mapping[str, int]  # leads per tier
    output: str  # the date's partition
    sql_rows: int | None  # rows upserted to score.sql; None: no score.sql.url
    model_uri: str
    model_version: str
    engine: str  # pandas or spark
    buckets: int
    warnings: tuple[str, ...]  # drift against the training reference, the score's first
    unseen: Mapping[str, int]  # rows per categorical feature with a level the model never saw
    run_id: str | None  # the MLflow run; None: not tracked (score.track)
    tracking_uri: str | None  # its password masked; None: not tracked
    data_through: pd.Timestamp | None  # the data's latest lead or activity (None: a flat table without time)
    seconds: float
    notes: tuple[str, ...]
    # the sources had not changed since the last ingestion, whose validated copy was used (when)
    ingestion_reused: str | None = None
    # performance expected of tonight's leads before their outcomes (leadml.modelling.estimation)
    estimated: Mapping[str, Any] | None = None
    # under an experiment (conf/experiment/): its name, salt, start and arms with their models, shares,
    # leads and tiers (:func:`experiment_summary`); None, and absent from the run record, without one
    experiment: Mapping[str, Any] | None = None
    # the account partition (leadml.scoring.account_scores.AccountNight.summary, with its output folder
    # and the rows upserted to score.sql.account_table); None: no account rows (a flat table, a model
    # without account state, score.accounts.enabled=false)
    accounts: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class _Drift:
    """How the run's scores and features shifted from the training reference."""

    score_psi: float  # NaN: the model holds no reference of its scores
    features_above_warn: int
    warnings: tuple[str, ...]  # the lines the CLI prints, the score's first, then the largest shift


def score_stage(cfg: Mapping[str, Any], root: Path) -> ScoreResult:
    """Score every open lead as of the run date with the production model; write, sink and track it.

    With either engine the date's lock is held until the run is tracked, and a run that fails
    after writing its partition (the tracking server went away) puts the date's previous one back.
    """
    with contextlib.ExitStack() as held:
        return _score_stage(cfg, root, held)


def _score_stage(cfg: Mapping[str, Any], root: Path, held: contextlib.ExitStack) -> ScoreResult:
    """:func:`score_stage` inside ``held``, which keeps the date's lock and undo to the end of the run."""
    started = time.perf_counter()
    score_cfg, data, mlflow_cfg = cfg["score"], cfg["data"], cfg["mlflow"]
    flat = data_kind(data) == "flat"
    _check_before_scoring(score_cfg, data, flat)
    account_sink = AccountSink.from_config(score_cfg)
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracked = scoring_tracked(score_cfg)
    if tracked:
        tracking.configure(uri, score_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    elif not _exported_folder(score_cfg.get("model_uri")):
        # not logged, but the model comes from the registry: read it from the configured store, not
        # from whatever store MLflow would default to in the current folder
        tracking.use_store(uri)
    experiment = Experiment.from_mapping(cfg.get("experiment"))
    arms = None
    if experiment is None:
        model_uri, version = tracking.production_model(
            mlflow_cfg["registered_model"], score_cfg.get("model_uri")
        )
        scorer = tracking.load_scorer(model_uri)
    else:  # the first arm's model builds the features and is the reference of the drift
        arms = arm_models(experiment, mlflow_cfg["registered_model"], score_cfg.get("model_uri"))
        first = experiment.arms[0].name
        model_uri, version, scorer = arms.model_of[first], arms.versions[first], arms.scorer(first)
    engine = _scoring_engine(score_cfg)
    interim_dir = Path(score_cfg["interim_dir"])
    ingest = ingest_unless_unchanged(data, interim_dir)
    ingested = ingest.manifest
    if flat:
        _check_open_rows(data, ingested)
    tiers = TierSettings.from_mapping(cfg["tiers"])
    as_of, open_leads, data_through = _open_leads(cfg, scorer, interim_dir, flat)
    outcome = _run_engine(cfg, engine, open_leads, scorer, as_of, tiers, str(version), held, arms)
    allowed_drop = estimate_warning_drop(score_cfg)
    if arms is None:
        summary, estimated_of = None, outcome.probabilities
    else:  # the overall estimate is the first arm's model's on every lead (no mixing of models)
        rows = experiment_rows(arms.experiment, Path(outcome.output))
        summary = experiment_summary(arms, rows, tiers, allowed_drop)
        estimated_of = rows[side_column(experiment.arms[0].name, PROBABILITY)].to_numpy(dtype="float64")
    probabilities = pd.DataFrame({PROBABILITY: outcome.probabilities})
    drift = _drift(score_cfg, scorer, outcome.psi, probabilities)
    estimated = _estimated_performance(estimated_of, scorer, tiers, allowed_drop)
    trend_band = float(score_cfg["trend_band"])
    night = roll_up_partition(
        account_sink, scorer, Path(outcome.output), data, interim_dir, outcome.as_of, trend_band
    )
    account_summary = night.summary() if night is not None else None  # the metrics and the run record
    seconds = round(time.perf_counter() - started, 2)
    metrics = {
        **_run_metrics(probabilities, outcome, drift, seconds),
        **_estimate_metrics(estimated),
        **_arm_estimate_metrics(summary),
        **_account_metrics(account_summary),
    }
    run_id = None
    if tracked:
        run_id = _track_run(cfg, outcome, model_uri, version, engine, metrics, drift, ingested, summary)
    # after the run is tracked: a run that cannot be, sinks nothing
    sql_rows = _sink_to_sql(score_cfg, outcome.output)
    accounts = None
    if night is not None:
        folder, account_rows = write_accounts(account_sink, night, outcome.as_of)
        accounts = {**account_summary, "output": str(folder), "sql_rows": account_rows}
    result = ScoreResult(
        as_of=outcome.as_of,
        leads=len(probabilities),
        tiers=dict(outcome.tier_counts),
        output=str(outcome.output),
        sql_rows=sql_rows,
        model_uri=model_uri,
        model_version=str(version),
        engine=engine,
        buckets=outcome.buckets,
        warnings=drift.warnings + ((estimated["warning"],) if estimated["warning"] else ()),
        unseen=outcome.unseen,
        run_id=run_id,
        tracking_uri=tracking.masked_uri(uri) if tracked else None,
        data_through=data_through,
        seconds=seconds,
        notes=(FLAT_WITHOUT_TIME,) if flat and not data["contract"].get("time") else (),
        ingestion_reused=str(ingest.manifest.get("created_at")) if ingest.reused else None,
        estimated=estimated,
        experiment=summary,
        accounts=accounts,
    )
    # beside the rows, for the report (leadml-report), which must not need the tracking server
    record = _run_record(result, tiers, outcome, drift, metrics)
    with writing_to(Path(outcome.output), "score.output_dir"):
        write_json_atomic(record, Path(outcome.output) / SCORING_RUN_RECORD)
    return result


def _check_before_scoring(score_cfg: Mapping[str, Any], data: Mapping[str, Any], flat: bool) -> None:
    """The mistakes found in the config alone, raised before any model is loaded or lead read."""
    if flat:  # checked before anything runs: a flat data set needs its open leads
        check_flat_scoring(data)
    if (score_cfg.get("sql") or {}).get("url"):  # checked first: a bad name must not cost a scoring run
        sinks.check_identifier(score_cfg["sql"].get("table"), "score.sql.table")
    estimate_warning_drop(score_cfg)


def _scoring_engine(score_cfg: Mapping[str, Any]) -> str:
    engine = str(score_cfg.get("engine") or "pandas")
    if engine not in ("pandas", "spark"):
        raise LeadmlError(f"score.engine must be 'pandas' or 'spark', got {engine!r}")
    return engine


def _open_leads(
    cfg: Mapping[str, Any], scorer: Any, interim_dir: Path, flat: bool
) -> tuple[pd.Timestamp, OpenLeads, pd.Timestamp | None]:
    """The run date, the open leads as of it (the same for both engines) and the data's latest lead
    or activity (None for a flat table without a time column); stale data stops here."""
    score_cfg, data = cfg["score"], cfg["data"]
    if flat:
        latest = flat_data_end(interim_dir) if data["contract"].get("time") else None
        # without a time column, flat_data_end says why score.as_of=latest cannot be resolved
        as_of = resolve_as_of(
            score_cfg.get("as_of"), {}, end=lambda: flat_data_end(interim_dir) if latest is None else latest
        )
        if latest is not None:
            check_fresh(latest, as_of, score_cfg.get("max_staleness_days"), interim_dir)
        contract = data["contract"]
        return (
            as_of,
            FlatOpenLeads(
                interim_dir / open_rows_file(FLAT_TABLE),
                as_of,
                personal=tuple(as_tuple(contract.get("personal"))),
                exclude=tuple(as_tuple(cfg["features"].get("exclude"))),
            ),
            latest,
        )
    bounds = time_bounds(interim_dir)
    as_of = resolve_as_of(score_cfg.get("as_of"), bounds)
    latest = max(bounds[s.LEADS][s.CREATED_AT].max(), bounds[s.ACTIVITIES][s.TIMESTAMP].max())
    check_fresh(latest, as_of, score_cfg.get("max_staleness_days"), interim_dir)
    settings = _scoring_feature_settings(scorer, data, cfg["features"])
    return as_of, CrmOpenLeads(interim_dir, as_of, settings), None if pd.isna(latest) else to_utc(latest)


def check_fresh(latest: pd.Timestamp, as_of: pd.Timestamp, max_days: Any, interim_dir: Path) -> None:
    """Stop when the newest lead or activity is more than ``max_days`` before the run's date.

    Scoring a feed that stopped as if it were fresh puts every lead in the bottom tier ("no
    activity for 6 months") and the report would show that run as the latest. Data that runs
    past the run's date (a replay of an earlier night) is fresh. ``max_days`` None: not checked.
    """
    if max_days is None:
        return
    try:
        limit = float(max_days)
    except (TypeError, ValueError):
        raise LeadmlError(
            f"score.max_staleness_days must be a number of days or null, got {max_days!r}"
        ) from None
    if limit < 0:
        raise LeadmlError(f"score.max_staleness_days must be 0 or more, got {max_days!r}")
    if pd.isna(latest):
        return
    age = (as_of - to_utc(latest)) / pd.Timedelta(days=1)
    if age > limit:
        raise StaleDataError(
            f"stale data in {interim_dir}: the latest lead or activity is "
            f"{to_utc(latest):%Y-%m-%d %H:%M} UTC, {age:.0f} days before the run's date {as_of:%Y-%m-%d} "
            f"(score.max_staleness_days={limit:g}); "
            "check the export feed, or score an earlier date with score.as_of=latest or YYYY-MM-DD"
        )


def _run_engine(
    cfg: Mapping[str, Any],
    engine: str,
    open_leads: OpenLeads,
    scorer: Any,
    as_of: pd.Timestamp,
    tiers: TierSettings,
    model_version: str,
    held: contextlib.ExitStack,
    arms: ArmModels | None = None,
) -> ScoringOutcome:
    """The open leads scored and written to the date's partition by ``engine``.

    Whatever the engine, the date's lock and the partition's undo go into ``held``, so both last
    until the run is tracked.
    """
    score_cfg = cfg["score"]
    output_dir = Path(score_cfg["output_dir"])
    held.enter_context(sinks.date_lock(output_dir, as_of))  # a second run of this date refuses at once
    held.enter_context(undone_on_error(output_dir, as_of))  # until the run is tracked
    explain = bool(score_cfg["explain"])
    explainer = str(score_cfg.get("explainer") or "fast")
    trend = TrendSettings(float(score_cfg["trend_band"]))
    if engine == "spark":  # same rows and figures, features and TreeSHAP computed in Spark tasks
        spark = SparkSettings.from_mapping(score_cfg.get("spark"))
        return score_in_session(
            spark, open_leads, scorer, as_of, tiers, output_dir=output_dir, explain=explain,
            explainer=explainer, trend=trend, model_version=model_version, arms=arms,
        )  # fmt: skip
    # lead buckets one after another in this process, in bounded memory
    return score_in_buckets(
        open_leads,
        scorer,
        as_of,
        tiers,
        output_dir=output_dir,
        work_dir=Path(score_cfg["work_dir"]),
        bucket_leads=int(score_cfg.get("bucket_leads") or 100_000),
        explain=explain,
        explainer=explainer,
        trend=trend,
        model_version=model_version,
        progress=bool(cfg.get("progress", False)),
        arms=arms,
    )


def arm_models(experiment: Experiment, registered_model: str, pinned: str | None = None) -> ArmModels:
    """Every arm's model loaded once, with its version; a model that cannot be found or loaded is one
    line naming its arm's key (``experiment.arms[1].model``) with the exit code of its fault."""
    if pinned:
        raise ExperimentError(
            f"score.model_uri={pinned} and experiment={experiment.name}: an experiment's arms name their "
            "own models (experiment.arms[*].model); leave score.model_uri unset"
        )
    scorers: dict[str, Any] = {}
    model_of: dict[str, str] = {}
    versions: dict[str, str] = {}
    for index, arm in enumerate(experiment.arms):
        uri = model_uri_of(arm.model, registered_model)
        try:
            if uri not in scorers:
                versions[arm.name] = _model_version(uri)
                scorers[uri] = tracking.load_scorer(uri)
            else:
                versions[arm.name] = next(versions[a] for a, m in model_of.items() if m == uri)
        except NoModelError as error:  # the same exit code (no model, or a changed export), with the key
            raise type(error)(f"experiment.arms[{index}].model ({arm.model}): {error}") from None
        model_of[arm.name] = uri
    _check_same_features(experiment, scorers, model_of)
    return ArmModels(experiment=experiment, scorers=scorers, model_of=model_of, versions=versions)


def _model_version(model_uri: str) -> str:
    """The version a model URI scores with: the one holding an alias, a pinned one, an export's."""
    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    if model_uri.startswith("models:/") and alias:
        version = tracking.version_by_alias(name, alias)
        if version is None:
            raise NoModelError(f"nothing holds the alias @{alias} of the registered model {name}")
        return str(version)
    if model_uri.startswith("models:/") and name.rpartition("/")[2].isdigit():
        return name.rpartition("/")[2]
    return tracking.production_model("", model_uri)[1]


def _check_same_features(
    experiment: Experiment, scorers: Mapping[str, Any], model_of: Mapping[str, str]
) -> None:
    """The open leads' features are built once, with the first arm's model's settings: every arm's
    model must have been trained with the same ones (same data and features config)."""
    first = experiment.arms[0]
    expected = getattr(scorers[model_of[first.name]], "feature_settings", None)
    for index, arm in enumerate(experiment.arms):
        if getattr(scorers[model_of[arm.name]], "feature_settings", None) != expected:
            raise ExperimentError(
                f"experiment.arms[{index}].model ({arm.model}) was trained with other feature settings than "
                f"the first arm's ({first.model}): the arms of an experiment score the same features "
                "(train its model with the same data and features config)"
            )


def experiment_rows(experiment: Experiment, partition: Path) -> pd.DataFrame:
    """The written partition's arm, visible tier and every arm's own probability and tier, read back
    so that the experiment's figures are the same whichever engine wrote it."""
    sides = [side_column(arm, what) for arm in experiment.names for what in (PROBABILITY, "tier")]
    return pd.read_parquet(partition, columns=[ARM, "tier", *sides])


def experiment_summary(
    arms: ArmModels, rows: pd.DataFrame, tiers: TierSettings, allowed_drop: float | None = None
) -> dict[str, Any]:
    """What the run record and MLflow keep of an experiment: per arm its model and version, share,
    whether its scores show, its leads and the tiers they see, its model's thresholds tonight and
    the performance its model is expected to show on its own leads (:func:`_arm_estimate`).

    ``rows``: :func:`experiment_rows` of the written partition.
    """
    experiment = arms.experiment
    described = []
    for arm in experiment.arms:
        mine = (rows[ARM] == arm.name).to_numpy()
        own = rows[side_column(arm.name, PROBABILITY)].to_numpy(dtype="float64")
        thresholds = dict(tiers.thresholds_for(own))
        own_tiers = rows[side_column(arm.name, "tier")].to_numpy()[mine]
        described.append(
            {
                "name": arm.name,
                "model": arm.model,
                "model_uri": arms.model_of[arm.name],
                "model_version": arms.versions[arm.name],
                "share": arm.share,
                "show_score": arm.show_score,
                "leads": int(mine.sum()),
                "tiers": {
                    str(k): int(v) for k, v in rows.loc[mine, "tier"].value_counts().sort_index().items()
                },
                "thresholds": thresholds,
                "expected_conversions": float(own[mine].sum()),
                "estimated": _arm_estimate(
                    own[mine], own_tiers, thresholds, tiers.floor_tier, arms.scorer(arm.name), allowed_drop
                ),
            }
        )
    return {
        "name": experiment.name,
        "salt": experiment.salt,
        "started": experiment.started,
        "arms": described,
    }


def _arm_estimate(
    probabilities: np.ndarray,
    arm_tiers: np.ndarray,
    thresholds: Mapping[str, float],
    floor_tier: str,
    scorer: Any,
    allowed_drop: float | None,
) -> dict[str, Any]:
    """The performance an arm's model is expected to show on the arm's own leads: its own
    probabilities (a holdout's too, hidden from sales) and tiers among all of tonight's leads."""
    highest_first = [tier for tier, _ in sorted(thresholds.items(), key=lambda item: -item[1])]
    estimate = estimate_performance(probabilities, arm_tiers, [*highest_first, floor_tier])
    return _checked_estimate(estimate, scorer, allowed_drop)


def _shift(value: float, alert: float) -> str:
    return "large" if value > alert else "moderate"


def _drift(
    score_cfg: Mapping[str, Any], scorer: Any, psi_features: Mapping[str, float], probabilities: pd.DataFrame
) -> _Drift:
    """The PSI of the scores against the model's reference, and a warning per shift above ``psi_warn``."""
    reference = getattr(scorer, "reference", None) or {}
    psi_score = (
        population_stability({PROBABILITY: reference["score"]}, probabilities)[PROBABILITY]
        if reference.get("score")
        else float("nan")
    )
    warn, alert = float(score_cfg["psi_warn"]), float(score_cfg["psi_alert"])
    drifted = {name: value for name, value in psi_features.items() if value > warn}
    warnings = [
        f"{name}: PSI {value:.3f} ({_shift(value, alert)} shift)"
        for name, value in sorted(drifted.items(), key=lambda item: -item[1])
    ]
    if psi_score > warn:
        warnings.insert(0, f"score: PSI {psi_score:.3f} ({_shift(psi_score, alert)} shift)")
    for line in warnings:
        logger.info("drift against the training reference: %s", line)  # the CLI prints them
    return _Drift(score_psi=psi_score, features_above_warn=len(drifted), warnings=tuple(warnings))


def estimate_warning_drop(score_cfg: Mapping[str, Any]) -> float | None:
    """``score.estimate_warning_drop``: how far the estimated ROC AUC may fall below the test
    window's before the run warns (None: never warns)."""
    value = score_cfg.get("estimate_warning_drop", 0.05)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise LeadmlError(
            f"score.estimate_warning_drop must be a ROC AUC difference from 0 to 1 or null, got {value!r}"
        )
    return float(value)


NO_TEST_FIGURE = (
    "the model records no test-window ROC AUC (trained before leadml recorded it): the estimate "
    "is not checked against it; train again to check it"
)


def _estimated_performance(
    probabilities: np.ndarray, scorer: Any, tiers: TierSettings, allowed_drop: float | None
) -> dict[str, Any]:
    """Tonight's expected ROC AUC, top-tier precision and conversions of every lead's ``probabilities``
    (so the same with either engine), checked against ``scorer``'s test-window ROC AUC. Under an
    experiment: the first arm's model's probabilities of every lead (each arm's are in its summary)."""
    estimated = _checked_estimate(estimate_scored_run(probabilities, tiers), scorer, allowed_drop)
    if estimated["warning"]:
        logger.warning("%s", estimated["warning"])
    return estimated


def _checked_estimate(
    estimate: PerformanceEstimate, scorer: Any, allowed_drop: float | None
) -> dict[str, Any]:
    """The estimate's record with the check against the model's test-window ROC AUC."""
    test_auc = recorded_test_roc_auc(getattr(scorer, "trained", None))
    check = check_estimate(estimate.roc_auc, test_auc, allowed_drop)
    return {
        **estimate.record(),
        "test_roc_auc": check.test_roc_auc,
        "drop": check.drop,
        "allowed_drop": allowed_drop,
        "warning": check.warning,
        "note": None if test_auc is not None else NO_TEST_FIGURE,
    }


def _estimate_metrics(estimated: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The estimate as MLflow metrics of the scoring run (NaN where it has no figure)."""
    low, high = estimated["roc_auc_interval"]
    figures = {
        "estimated_roc_auc": estimated["roc_auc"],
        "estimated_roc_auc_low": low,
        "estimated_roc_auc_high": high,
        "estimated_top_tier_precision": estimated["top_tier_precision"],
        "estimated_roc_auc_drop": estimated["drop"],
    }
    return {
        f"{prefix}{name}": float("nan") if value is None else float(value) for name, value in figures.items()
    }


def _arm_estimate_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """Each arm's estimate as metrics ``arm.<name>.estimated_roc_auc``...; none without an experiment."""
    arms = (summary or {}).get("arms") or []
    return {
        name: value
        for arm in arms
        for name, value in _estimate_metrics(arm["estimated"], f"arm.{arm['name']}.").items()
    }


def _account_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """The account roll-up's figures as metrics ``accounts.*`` of the scoring run (none without it)."""
    if summary is None:
        return {}
    figures = ("accounts", "accounts_with_several_leads", "leads", "expected_accounts_won", "engaged_leads")
    return {f"accounts.{name}": float(summary[name]) for name in figures}


def _run_metrics(
    probabilities: pd.DataFrame, outcome: ScoringOutcome, drift: _Drift, seconds: float
) -> dict[str, float]:
    """The run's figures as MLflow metrics: the scores, the drift, the tiers, the time it took."""
    probability = probabilities[PROBABILITY]
    return {
        "leads": len(probabilities),
        "probability.mean": float(probability.mean()),
        "probability.p50": float(probability.median()),
        "probability.p90": float(probability.quantile(0.9)),
        "expected_conversions": float(probability.sum()),
        "psi.score": drift.score_psi,
        "psi.features_above_warn": drift.features_above_warn,
        "unseen_category_rows": sum(outcome.unseen.values()),
        "seconds": seconds,
        **{f"tier.{tier}": int(count) for tier, count in outcome.tier_counts.items()},
        **{f"psi.{name}": value for name, value in outcome.psi.items()},
    }


def _track_run(
    cfg: Mapping[str, Any],
    outcome: ScoringOutcome,
    model_uri: str,
    version: str,
    engine: str,
    metrics: Mapping[str, float],
    drift: _Drift,
    ingested: Mapping[str, Any],
    experiment: Mapping[str, Any] | None = None,
) -> str:
    """The run logged to the scoring experiment: its settings, figures, drift and ingestion; its id."""
    score_cfg, as_of, psi = cfg["score"], outcome.as_of, outcome.psi
    arms = {"ab_experiment": experiment["name"]} if experiment else {}
    return tracking.log_scoring_run(
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
            "output": str(outcome.output),
            **arms,
        },
        metrics=metrics,
        tables={"psi.csv": pd.DataFrame({"feature": list(psi), "psi": list(psi.values())})},
        records={
            "warnings.json": {"drift": list(drift.warnings), "unseen_categories": outcome.unseen},
            "ingest.json": ingested,
            **({"ab_experiment.json": experiment} if experiment else {}),
        },
        tags={"as_of": f"{as_of:%Y-%m-%d}", "model_version": str(version)},
    )


def _sink_to_sql(score_cfg: Mapping[str, Any], written_to: Path) -> int | None:
    """The rows of the written partition upserted to ``score.sql``; None without ``score.sql.url``."""
    sql = score_cfg.get("sql") or {}
    return sinks.upsert_partition(sql["url"], sql["table"], written_to) if sql.get("url") else None


def _run_record(
    result: ScoreResult,
    tiers: TierSettings,
    outcome: ScoringOutcome,
    drift: _Drift,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """``_scoring_run.json``: the result, its date as text, and what the report shows of the run.

    Under an experiment, the thresholds are the first arm's (each arm's are in ``experiment``);
    without one the record has no ``experiment`` key, as before experiments existed.
    """
    record = asdict(result)
    for optional in ("experiment", "accounts"):
        if record[optional] is None:
            record.pop(optional)
    thresholds = (
        result.experiment["arms"][0]["thresholds"]
        if result.experiment
        else tiers.thresholds_for(outcome.probabilities)
    )
    return {
        **record,
        "as_of": f"{result.as_of:%Y-%m-%d}",
        "data_through": None if result.data_through is None else result.data_through.isoformat(),
        "thresholds": dict(thresholds),
        "floor_tier": tiers.floor_tier,
        "psi_score": None if pd.isna(drift.score_psi) else drift.score_psi,
        "expected_conversions": metrics["expected_conversions"],
    }


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
        raise sinks.cannot_write_scores(final, error) from None
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
