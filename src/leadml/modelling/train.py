"""Training as pure functions: split, guard, fit, calibrate, evaluate, and the promotion gate.

No file I/O and no MLflow here (``stages.train_stage`` does both), so every step can be
tested on small frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, data_config_file
from leadml.machine import release_memory
from leadml.modelling.calibration import CalibrationSettings, RelativeCalibrator, fit_on_window, level_shift
from leadml.modelling.drift import latest_dates, reference_profile, weekday_profiles
from leadml.modelling.evaluate import (
    TierSettings,
    base_rate_drift,
    binary_metrics,
    bootstrap_intervals,
    compare_models,
    grouped_shap_importance,
    tier_table,
)
from leadml.modelling.folds import Selection, SelectionSettings
from leadml.modelling.guards import (
    EXCLUDE,
    OutcomeLevelSettings,
    check_minimum_data,
    enforce_leakage,
    leakage_report,
)
from leadml.modelling.linear_explain import attach_training_means
from leadml.modelling.model_settings import model_settings_from_mapping
from leadml.modelling.models import (
    BaseRate,
    LightGBMSettings,
    LogRegSettings,
    ScoringModel,
    feature_columns,
    fit_logreg,
)
from leadml.modelling.points import (
    PointsModel,
    PointsSettings,
    fit_points,
    mapped_tiers,
    points_summary,
    points_tier_table,
    tier_agreement,
    training_sheet,
)
from leadml.modelling.scorer import PROBABILITY, LeadScorer
from leadml.modelling.selection import LIGHTGBM, LOGREG, MARGIN, POINTS, anchor, refit, select_model
from leadml.modelling.split import (
    CALIBRATION,
    TEST,
    TRAIN,
    WINDOWS,
    RowTaker,
    SplitResult,
    SplitSettings,
    latest_rows,
    plan_split,
    position_column,
    resolve_split,
    split_summary,
    take_rows,
)

logger = logging.getLogger(__name__)

ORACLE = "oracle"
BASELINE_LOGREG, BASELINE_RATE = "logreg_baseline", "base_rate"
BASELINE_POINTS = "points_baseline"  # the data config's traditional scoring sheet (data.points)
REFERENCE_ROWS = 200_000  # training rows profiled for drift checks


@dataclass
class TrainingResult:
    scorer: LeadScorer
    model_name: str
    split: dict[str, dict[str, Any]]
    purged_rows: dict[str, int]
    leakage: pd.DataFrame
    leakage_flagged: list[str]
    leakage_excluded: list[str]  # flagged features left out of the model (guards.leakage_action=exclude)
    comparison: pd.DataFrame  # one row per model on the same test rows, with intervals
    tiers: pd.DataFrame
    calibration: dict[str, Any]
    test: pd.DataFrame  # test rows with labels and every model's probability
    windows: dict[str, pd.DataFrame]  # train, calibration and test rows as split
    probabilities: dict[str, np.ndarray]
    shap_importance: pd.DataFrame | None
    shap_sample: tuple[np.ndarray, pd.DataFrame] | None
    seconds: dict[str, float] = field(default_factory=dict)
    # the points baseline (data.points): its comparison row, rules, fitted map, and with
    # model=points its tiers in points and as probabilities; {"available": False, "note"} without rules
    points: dict[str, Any] = field(default_factory=dict)
    selection: Selection | None = None  # what the procedure chose on the validation folds, and why
    evaluated: LeadScorer | None = None  # the procedure fitted before the test window (scored on it)
    deployment: dict[str, Any] = field(default_factory=dict)  # what the registered refit was trained on
    notes: list[str] = field(default_factory=list)  # one-line notes for the summary (split fallback, data)
    duplicate_rows: dict[str, int] = field(default_factory=dict)  # exact copies left out per window
    development: pd.DataFrame | None = None  # every row before the test window
    # each segment's decision and the routed model's test figures: the SegmentOutcome of
    # leadml.modelling.segments.train_segments (which builds on this module, hence Any); None: no segments
    segments: Any = None


def _tier_note(tier_settings: TierSettings, points_sheet: bool) -> str:
    """How the stored thresholds came about, for the model card and the served model."""
    if points_sheet:
        return "the points sheet's tiers (data.points.tiers), each minimum mapped to a probability"
    if tier_settings.method == "capacity":
        shares = ", ".join(f"{k} top {float(v):.0%}" for k, v in tier_settings.shares.items())
        return f"capacity shares ({shares}) of the test window's leads, fixed as probabilities"
    return "fixed probability minimums (conf/tiers)"


@dataclass
class Windows:
    """The snapshots as training reads them (:func:`split_windows`): once these exist, the
    snapshots frame itself may go (at a million leads it is 4.4 GB)."""

    split: SplitResult
    note: str | None  # why the split differs from the configured one (None: it does not)
    # the scorer is refitted on every labelled row (else it is the one fitted before the test window)
    deploy: bool
    # the scorer's drift references by weekday, of every feature column (weekday_references)
    by_weekday: dict[str, dict[str, Any]]
    seconds: float


def split_windows(
    snapshots: pd.DataFrame, config: Mapping[str, Any], deploy: bool = True, take: RowTaker = take_rows
) -> Windows:
    """The train, calibration and test windows of ``snapshots`` (``config["split"]``), and the drift
    references by weekday of the rows the scorer is fitted on (every labelled row with ``deploy``,
    else the development rows): the only later use of the snapshots beyond the windows.

    ``take`` copies the windows' rows out of the snapshots, last: the train stage's
    (:func:`leadml.adapters.layout.take_apart`) takes the snapshots apart as it goes, so that the
    two are never held whole at once.
    """
    started = time.perf_counter()
    split_settings, split_note = resolve_split(snapshots, SplitSettings.from_mapping(config["split"]))
    if split_note:
        logger.warning("split: %s", split_note)
    plan = plan_split(snapshots, split_settings)
    fitted = plan.kept(WINDOWS if deploy else (TRAIN, CALIBRATION))
    by_weekday = weekday_references(snapshots, fitted, seed=config["evaluation"]["seed"])
    split = plan.apply(snapshots, take)
    return Windows(split, split_note, deploy, by_weekday, time.perf_counter() - started)


def train_and_evaluate(
    snapshots: pd.DataFrame,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    truth: pd.DataFrame | None = None,
    deploy: bool = True,
    progress: bool = False,
) -> TrainingResult:
    """The whole training job on one snapshots frame; ``config`` is the composed train config.

    The procedure (select on validation folds, refit, calibrate on out-of-sample margins) runs
    on the development rows (everything before the test window) and is scored on the test
    window: the honest estimate. With ``deploy`` the same procedure is then refitted on every
    labelled row, and that refit is the scorer that gets registered (the rolling backtest,
    which only needs the estimate, passes ``deploy=False``).
    """
    return train_on_windows(split_windows(snapshots, config, deploy), metadata, config, truth, progress)


def train_on_windows(
    windows: Windows,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    truth: pd.DataFrame | None = None,
    progress: bool = False,
) -> TrainingResult:
    """:func:`train_and_evaluate` once the snapshots are split (:func:`split_windows`)."""
    deploy = windows.deploy
    seconds: dict[str, float] = {}
    clock = time.perf_counter() - windows.seconds  # the split's seconds count as its lap's

    def lap(name: str) -> None:
        nonlocal clock
        # a step's freed memory back to the system before the next step's peak: glibc's arenas kept
        # 1.4 GB of a million leads' earlier steps under the last refit's
        release_memory()
        seconds[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    guards = config["guards"]
    split, split_note = windows.split, windows.note
    train, test = split.parts[TRAIN], split.parts[TEST]
    development = split.development()
    data_note = minimum_data_note(development, guards["min_snapshots"], guards["min_positives"])
    lap("split")

    leakage = sentinel_report(development, metadata, guards)
    flagged = enforce_leakage(leakage, guards["leakage_action"])
    excluded = flagged if guards["leakage_action"] == EXCLUDE else []
    if excluded:
        split = split.without(excluded)
        train, test = split.parts[TRAIN], split.parts[TEST]
        development = split.development()
        metadata = {name: meta for name, meta in metadata.items() if name not in excluded}
    lap("leakage")

    model_config = dict(config["model"])
    model_name = str(model_config.pop("name"))
    # the scoring sheet (data.points) minus rules on columns left out of the model
    left_out = {
        *(config.get("features", {}).get("exclude") or ()),
        *excluded,
    }
    sheet, skipped_rules = training_sheet(config["data"].get("points"), left_out)
    model_settings = model_settings_from_mapping(
        {"name": model_name, **model_config}, sheet, config["data"].get("name")
    )
    logreg_settings = model_settings if isinstance(model_settings, LogRegSettings) else LogRegSettings()
    fitters: dict[str, Callable[[pd.DataFrame], ScoringModel]] = {
        LOGREG: lambda rows: fit_logreg(rows, logreg_settings)
    }
    if sheet is not None:
        fitters[POINTS] = lambda rows: fit_points(rows, sheet["rules"], sheet["tiers"])
    if isinstance(model_settings, PointsSettings):
        fitters[POINTS] = lambda rows: fit_points(rows, model_settings.rules, model_settings.tiers)
    selection_settings = SelectionSettings.from_mapping(config.get("selection"))
    selection = select_model(
        development,
        candidates=CANDIDATES_OF_MODEL.get(model_name, (model_name,)),
        lightgbm=model_settings if isinstance(model_settings, LightGBMSettings) else LightGBMSettings(),
        logreg=logreg_settings,
        settings=selection_settings,
        metadata=metadata,
        fitters=fitters,
        progress=progress,
    )
    lap("select")
    model = refit(development, selection, fitters, metadata)
    release_memory()  # the refit's freed copies, before the logistic baseline's own 3 GB peak
    # the logistic baseline stays plain (unweighted): the chosen one may weigh recent rows
    plain = selection.chosen == LOGREG and not selection.logreg.recency_half_life
    logreg = model if plain else fitters[LOGREG](development)
    points: PointsModel | None = None
    if isinstance(model, PointsModel):
        points = model
    elif POINTS in fitters:
        points = fitters[POINTS](development)  # type: ignore[assignment]
    base = BaseRate.fit(development)
    points_record = points_summary(points, model_name if points is model else BASELINE_POINTS, skipped_rules)
    if points is None:
        logger.warning("%s: add them to %s", points_record["note"], data_config_file(config["data"]))
    lap("fit")

    calibration_settings = CalibrationSettings.from_mapping(config["calibration"])
    out_of_sample = selection.oos[MARGIN]  # relative to each fold model's base log-odds
    calibrator = RelativeCalibrator(
        fit_on_window(
            lambda rows: out_of_sample.loc[rows.index].to_numpy(),
            outcome_rows(development, out_of_sample.index),
            calibration_settings,
        ),
        anchor(development, selection),
    )
    names = feature_columns(train)
    feature_meta = {n: asdict(m) for n, m in metadata.items() if n in names}
    evaluated = LeadScorer(model, calibrator, names, feature_meta)
    attach_training_means(evaluated, development)
    lap("calibrate")

    labels = test[s.LABEL].to_numpy()
    test_margin = model.predict_margin(test)
    probabilities = {
        model_name: calibrator.predict_proba(test_margin),
        f"{model_name}_uncalibrated": expit(test_margin),
        BASELINE_LOGREG: logreg.predict_proba(test),
        **({BASELINE_POINTS: points.predict_proba(test)} if points is not None else {}),
        BASELINE_RATE: base.predict_proba(test),
    }
    if truth is not None and s.AS_OF in test:
        joined = test[[s.LEAD_ID, s.AS_OF]].merge(truth, on=[s.LEAD_ID, s.AS_OF], how="left")
        if joined[s.TRUE_PROBABILITY].notna().all():
            probabilities[ORACLE] = joined[s.TRUE_PROBABILITY].to_numpy()
        else:
            logger.warning(
                "ground truth misses %d test rows; no oracle", joined[s.TRUE_PROBABILITY].isna().sum()
            )
    evaluation = config["evaluation"]
    comparison = compare_models(
        labels,
        probabilities,
        groups=test[s.LEAD_ID].to_numpy(),
        n_boot=evaluation["bootstrap"],
        seed=evaluation["seed"],
    )
    tier_settings = TierSettings.from_mapping(config["tiers"])
    thresholds = tier_settings.thresholds_for(probabilities[model_name])
    floor_tier = tier_settings.floor_tier
    # model=points with data.points.tiers: the sheet's own tiers, each minimum also as a probability
    point_thresholds = mapped_tiers(model, calibrator) if isinstance(model, PointsModel) else None
    if point_thresholds is not None and isinstance(model, PointsModel) and model.tiers:
        total = model.total_points(test)
        tiers = points_tier_table(
            labels,
            probabilities[model_name],
            total,
            model.tiers,
            point_thresholds,
            floor_tier,
            n_boot=evaluation["bootstrap"],
            groups=test[s.LEAD_ID].to_numpy(),
        )
        points_record["tiers"] = {
            "points": dict(model.tiers),
            "probability": point_thresholds,
            "floor_tier": floor_tier,
            "agreement": tier_agreement(
                probabilities[model_name], point_thresholds, total, model.tiers, floor_tier
            ),
        }
    else:
        tiers = tier_table(
            labels,
            probabilities[model_name],
            thresholds,
            floor_tier,
            n_boot=evaluation["bootstrap"],
            groups=test[s.LEAD_ID].to_numpy(),
        )
    tier_record = {
        "method": tier_settings.method,
        "thresholds": {str(k): float(v) for k, v in (point_thresholds or thresholds).items()},
        "floor_tier": floor_tier,
        "note": _tier_note(tier_settings, bool(point_thresholds and getattr(model, "tiers", None))),
    }
    lap("evaluate")

    shap_importance, shap_sample = None, None
    if evaluated.can_explain and evaluation["shap_rows"] > 0:
        # the evaluated procedure's model on test rows it never saw
        sample = test.sample(min(len(test), evaluation["shap_rows"]), random_state=evaluation["seed"])
        contributions = evaluated.explain(sample)
        values = contributions[names].to_numpy()
        shap_importance = grouped_shap_importance(values, names, metadata)
        shap_sample = (values, sample[names])
    lap("explain")

    labelled = split.rows  # development, then test
    split_info = split_summary(split.parts)
    # where the rate moved, the deployed calibrator takes its level from the latest rows; the
    # same procedure, replayed on the test window's halves, is what the gate judges
    level = bool(base_rate_drift(split_info)["flagged"])
    test_relative = pd.Series(test_margin - calibrator.offset, index=test.index, name=MARGIN)
    in_time = (
        in_time_calibration(
            labelled,
            selection.oos[MARGIN],
            test_relative,
            calibration_settings,
            n_boot=min(evaluation["bootstrap"], 100),
            seed=evaluation["seed"],
        )
        if level
        else {}
    )
    if deploy:
        scorer, deployment = deployed_scorer(
            labelled, test_relative, selection, fitters, calibration_settings, metadata, feature_meta, level
        )
        if tier_record["method"] == "capacity" and not point_thresholds:
            # the shares hold for the probabilities the deployed calibrator gives the test window
            deployed = scorer.calibrator.predict_proba(test_relative.to_numpy() + scorer.calibrator.offset)
            tier_record["thresholds"] = tier_settings.thresholds_for(deployed)
    else:
        scorer, deployment = evaluated, {"refit": False}
    scorer.tiers = tier_record
    # the figure tonight's estimated ROC AUC is checked against (score.estimate_warning_drop): the
    # evaluated procedure's on the out-of-time test window, as the model report shows it
    scorer.trained = {**scorer.trained, "test_roc_auc": float(comparison.loc[model_name, "roc_auc"])}
    fitted = labelled if deploy else development
    scorer.reference = training_reference(
        scorer, fitted, seed=evaluation["seed"], by_weekday=windows.by_weekday
    )
    lap("refit")

    return TrainingResult(
        scorer=scorer,
        model_name=model_name,
        split=split_info,
        purged_rows=split.purged_rows,
        leakage=leakage,
        leakage_flagged=flagged,
        leakage_excluded=excluded,
        comparison=comparison,
        tiers=tiers,
        calibration={
            **calibrator.describe(),
            "uncalibrated_log_loss": float(
                binary_metrics(labels, probabilities[f"{model_name}_uncalibrated"])["log_loss"]
            ),
            "verdict": calibration_verdict(comparison, model_name, split_info),
            **in_time,
        },
        test=test,
        windows=dict(split.parts),
        probabilities=probabilities,
        shap_importance=shap_importance,
        shap_sample=shap_sample,
        seconds=seconds,
        points=points_record,
        selection=selection,
        evaluated=evaluated,
        deployment=deployment,
        notes=[note for note in (split_note, data_note) if note],
        duplicate_rows=dict(split.duplicate_rows),
        development=development,
    )


CANDIDATES_OF_MODEL: dict[str, tuple[str, ...]] = {
    "lightgbm": (LIGHTGBM, LOGREG),  # the default: tuned LightGBM against logistic regression
    "logreg": (LOGREG,),
    "points": (POINTS,),
}


def deployed_scorer(
    labelled: pd.DataFrame,
    test_relative: pd.Series,
    selection: Selection,
    fitters: Mapping[str, Callable[[pd.DataFrame], ScoringModel]],
    calibration_settings: CalibrationSettings,
    metadata: Mapping[str, FeatureMeta],
    feature_meta: dict[str, dict[str, Any]],
    level: bool = False,
) -> tuple[LeadScorer, dict[str, Any]]:
    """The procedure refitted on every labelled row, and what it was trained on.

    Its calibrator is :func:`latest_calibrator` of the test window as predicted by the
    development refit (``test_relative``, relative to that refit's base log-odds) and the
    validation folds before it; with ``level`` (the base rate moved) levelled on the test window.
    """
    model = refit(labelled, selection, fitters, metadata)
    calibrator = latest_calibrator(
        labelled,
        selection.oos[MARGIN],
        test_relative,
        calibration_settings,
        level,
        anchor(labelled, selection),
    )
    names = feature_columns(labelled)
    scorer = LeadScorer(model, calibrator, names, feature_meta)
    attach_training_means(scorer, labelled)
    column = position_column(labelled)
    deployment = {
        "refit": True,
        "rows": len(labelled),
        "leads": int(labelled[s.LEAD_ID].nunique()),
        "positives": int(labelled[s.LABEL].sum()),
        "rate": float(labelled[s.LABEL].mean()),
        "position_column": column,
        "first": None if column is None else _plain_value(labelled[column].min()),
        "through": None if column is None else _plain_value(labelled[column].max()),
        "calibration": calibrator.describe(),
        "model": getattr(model, "fit_report", {}),
    }
    scorer.trained = deployment
    return scorer, deployment


def latest_calibrator(
    labelled: pd.DataFrame,
    out_of_sample: pd.Series,
    latest: pd.Series,
    settings: CalibrationSettings,
    level: bool,
    offset: float = 0.0,
) -> RelativeCalibrator:
    """A calibrator of relative margins fitted on the latest out-of-sample rows (time-ordered
    cross-fitting): ``latest`` (margins of rows after the folds) then the folds' margins before
    them, as many rows as the folds hold. With ``level``, its log-odds are moved so that its mean
    probability on ``latest`` is their rate: where the base rate moved, the newest rows are the
    ones that resemble tonight's leads, while the shape needs the many rows.
    """
    margins = pd.concat([out_of_sample, latest])
    rows = outcome_rows(labelled, margins.index)
    share = min(1.0, len(out_of_sample) / len(rows))
    inner = fit_on_window(lambda part: margins.loc[part.index].to_numpy(), latest_rows(rows, share), settings)
    shift = (
        level_shift(inner.predict_proba(latest.to_numpy()), float(labelled.loc[latest.index, s.LABEL].mean()))
        if level
        else 0.0
    )
    return RelativeCalibrator(inner, offset, shift)


def in_time_calibration(
    labelled: pd.DataFrame,
    out_of_sample: pd.Series,
    test_relative: pd.Series,
    settings: CalibrationSettings,
    n_boot: int,
    seed: int,
) -> dict[str, float]:
    """The deployed calibration, levelled on the latest rows, checked in time on the test window.

    Replayed one step back: :func:`latest_calibrator` fitted and levelled through the earlier
    half of the test window, judged by ECE (with a bootstrap interval over leads) on the later
    half, which it has not seen. A rate that settled at a new level passes; one that keeps
    moving inside the window does not, and no calibrator fitted on the past can follow it.
    Empty when a half lacks a label.
    """
    later = latest_rows(outcome_rows(labelled, test_relative.index), 0.5)
    earlier = test_relative.drop(later.index)
    labels = later[s.LABEL].to_numpy()
    earlier_labels = labelled.loc[earlier.index, s.LABEL]
    if earlier.empty or len(np.unique(labels)) < 2 or earlier_labels.nunique() < 2:
        return {}
    calibrator = latest_calibrator(labelled, out_of_sample, earlier, settings, level=True)
    probability = calibrator.predict_proba(test_relative.loc[later.index].to_numpy())
    low, high = bootstrap_intervals(labels, probability, n_boot, seed, groups=later[s.LEAD_ID].to_numpy())[
        "ece"
    ]
    return {
        "in_time_ece": binary_metrics(labels, probability)["ece"],
        "in_time_ece_low": low,
        "in_time_ece_high": high,
        "in_time_rows": float(len(later)),
        "in_time_rate_earlier": float(earlier_labels.mean()),
        "in_time_rate_later": float(labels.mean()),
        "in_time_mean_probability": float(probability.mean()),
    }


OUTCOME_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.AS_OF, s.ORDER_KEY, s.LABEL)


def outcome_rows(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """The rows of ``index`` with only their lead, time and label columns: all a calibrator's window
    reads (:func:`fit_on_window`, :func:`latest_rows`). Every feature too would copy 1.3 GB of the
    development rows at a million leads, for out-of-sample margins that are already computed."""
    return frame.loc[index, [column for column in OUTCOME_COLUMNS if column in frame.columns]]


def _plain_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def minimum_data_note(rows: pd.DataFrame, min_snapshots: int, min_positives: int) -> str | None:
    """A sentence when the development rows are fewer than the guards ask for (training goes on)."""
    try:
        check_minimum_data(rows, min_snapshots, min_positives)
    except LeadmlError as error:
        return f"{TOO_LITTLE_DATA}: {str(error).removeprefix('not enough training data: ')}"
    return None


TOO_LITTLE_DATA = "too little data"


def sentinel_report(
    train: pd.DataFrame, metadata: Mapping[str, FeatureMeta], guards: Mapping[str, Any]
) -> pd.DataFrame:
    """The leakage sentinel's evidence on the training window, with the ``guards`` config's thresholds."""
    return leakage_report(
        train,
        metadata,
        threshold=guards["leakage_threshold"],
        n_folds=guards["leakage_folds"],
        max_rows=guards["leakage_max_rows"],
        post_outcome_presence=tuple(guards["post_outcome_presence"]),
        outcome_levels=OutcomeLevelSettings(
            max_share=guards.get("outcome_level_share", OutcomeLevelSettings.max_share),
            factor=guards.get("outcome_level_factor", OutcomeLevelSettings.factor),
            min_rows=guards.get("outcome_level_min_rows", OutcomeLevelSettings.min_rows),
        ),
    )


def weekday_references(
    snapshots: pd.DataFrame, fitted: np.ndarray, seed: int = 0, max_rows: int = REFERENCE_ROWS
) -> dict[str, dict[str, Any]]:
    """The drift references by weekday of a scorer fitted on the snapshots at positions ``fitted``, of
    every feature column: :func:`weekday_profiles` of the snapshots of the latest dates of those
    rows (empty without dates).

    Every open lead of those dates: the out-of-time split keeps a lead in the window of its first
    snapshot, so the split's own rows of a late date are its new leads only, not the population a
    nightly run scores. Profiled before the snapshots are split, so they need not be kept until the
    scorer exists (:func:`training_reference` keeps the scorer's features).
    """
    if s.AS_OF not in snapshots.columns:
        return {}
    dates = latest_dates(snapshots[[s.AS_OF]].iloc[fitted])
    return weekday_profiles(snapshots, feature_columns(snapshots), seed, max_rows, dates=dates)


def training_reference(
    scorer: LeadScorer,
    train: pd.DataFrame,
    seed: int = 0,
    max_rows: int = REFERENCE_ROWS,
    by_weekday: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Distributions of every feature and of the calibrated score on (a sample of) the training window.

    With the drift references by weekday (``by_weekday``, of :func:`weekday_references`; profiled
    from ``train`` itself when not given), narrowed to the scorer's features.
    """
    sample = train.sample(min(len(train), max_rows), random_state=seed)
    score = scorer.predict(sample)[[PROBABILITY]]
    reference = {
        "rows": len(sample),
        "features": reference_profile(sample, scorer.feature_names),
        "score": reference_profile(score, [PROBABILITY])[PROBABILITY],
    }
    if by_weekday is None:
        by_weekday = weekday_profiles(train, scorer.feature_names, seed, max_rows)
    weekdays = {
        day: {name: profile[name] for name in scorer.feature_names} for day, profile in by_weekday.items()
    }
    return {**reference, "by_weekday": weekdays} if weekdays else reference


def calibration_verdict(
    comparison: pd.DataFrame, model_name: str, split: Mapping[str, Mapping[str, Any]]
) -> str:
    """One sentence: did calibration improve test log loss, and if not, the likeliest reason."""
    calibrated = comparison.loc[model_name]
    raw = comparison.loc[f"{model_name}_uncalibrated"]
    figures = f"test log loss {calibrated['log_loss']:.4f} against {raw['log_loss']:.4f} uncalibrated"
    if calibrated["log_loss"] < raw["log_loss"]:
        return f"improved: {figures}, ECE {calibrated['ece']:.4f} against {raw['ece']:.4f}"
    calibration_rate, test_rate = split["calibration"]["rate"], split["test"]["rate"]
    if abs(calibration_rate - test_rate) > 0.25 * test_rate:
        why = (
            f"the positive rate moved from {calibration_rate:.2%} in the calibration window to "
            f"{test_rate:.2%} in the test window, so a map fitted on the former misses the latter"
        )
    elif raw["ece"] <= 0.01:
        why = (
            f"the booster was already calibrated (uncalibrated ECE {raw['ece']:.4f}), leaving nothing to fix"
        )
    else:
        why = (
            f"the calibration window ({split['calibration']['positives']:,} positives) is too small "
            "or unlike the test window; try calibration=sigmoid or a longer calibration window "
            "(split.calibration_months, or split.calibration_fraction without time)"
        )
    return f"not improved: {figures}; {why}"
