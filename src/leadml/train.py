"""Training as pure functions: split, guard, fit, calibrate, evaluate, and the promotion gate.

No file I/O and no MLflow here (``stages.train_stage`` does both), so every step can be
tested on small frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml import schema as s
from leadml.calibration import CalibrationSettings, fit_on_window
from leadml.evaluate import (
    base_rate_shift,
    binary_metrics,
    capacity_thresholds,
    compare_models,
    grouped_shap_importance,
    tier_table,
)
from leadml.features import FeatureMeta
from leadml.guards import (
    EXCLUDE,
    OutcomeLevelSettings,
    check_minimum_data,
    enforce_leakage,
    leakage_report,
)
from leadml.models import (
    BaseRate,
    LogRegSettings,
    feature_columns,
    fit_logreg,
    fit_model,
    model_settings_from_mapping,
)
from leadml.points import (
    PointsModel,
    fit_points,
    mapped_tiers,
    points_summary,
    points_tier_table,
    tier_agreement,
    training_sheet,
)
from leadml.scorer import PROBABILITY, LeadScorer
from leadml.scoring import reference_profile
from leadml.split import SplitSettings, split_summary, split_with_report

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


def _tier_note(tier_settings: Mapping[str, Any], points_sheet: bool) -> str:
    """How the stored thresholds came about, for the model card and the served model."""
    if points_sheet:
        return "the points sheet's tiers (data.points.tiers), each minimum mapped to a probability"
    if tier_settings.get("method") == "capacity":
        shares = ", ".join(f"{k} top {float(v):.0%}" for k, v in dict(tier_settings["shares"]).items())
        return f"capacity shares ({shares}) of the test window's leads, fixed as probabilities"
    return "fixed probability minimums (conf/tiers)"


def train_and_evaluate(
    snapshots: pd.DataFrame,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    truth: pd.DataFrame | None = None,
) -> TrainingResult:
    """The whole training job on one snapshots frame; ``config`` is the composed train config."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    guards = config["guards"]
    split = split_with_report(snapshots, SplitSettings.from_mapping(config["split"]))
    train, calibration, test = (split.parts[w] for w in ("train", "calibration", "test"))
    check_minimum_data(train, guards["min_snapshots"], guards["min_positives"])
    lap("split")

    leakage = sentinel_report(train, metadata, guards)
    flagged = enforce_leakage(leakage, guards["leakage_action"])
    excluded = flagged if guards["leakage_action"] == EXCLUDE else []
    if excluded:
        train, calibration, test = (part.drop(columns=excluded) for part in (train, calibration, test))
        split.parts.update(train=train, calibration=calibration, test=test)
        metadata = {name: meta for name, meta in metadata.items() if name not in excluded}
    lap("leakage")

    model_config = dict(config["model"])
    model_name = str(model_config.pop("name"))
    # the scoring sheet (data.points) minus rules on columns left out of the model
    left_out = {
        *(config.get("features", {}).get("exclude") or ()),
        *snapshots.columns.difference(train.columns),
    }
    sheet, skipped_rules = training_sheet(config["data"].get("points"), left_out)
    model_settings = model_settings_from_mapping(
        {"name": model_name, **model_config}, sheet, config["data"].get("name")
    )
    model = fit_model(train, model_settings, metadata)
    logreg = model if model_name == "logreg" else fit_logreg(train, LogRegSettings.from_mapping({}))
    points: PointsModel | None = None
    if isinstance(model, PointsModel):
        points = model
    elif sheet is not None:
        points = fit_points(train, sheet["rules"], sheet["tiers"])
    base = BaseRate.fit(train)
    points_record = points_summary(points, model_name if points is model else BASELINE_POINTS, skipped_rules)
    if points is None:
        logger.warning("%s: add them to conf/data/%s.yaml", points_record["note"], config["data"].get("name"))
    lap("fit")

    calibration_settings = CalibrationSettings.from_mapping(config["calibration"])
    calibrator = fit_on_window(model.predict_margin, calibration, calibration_settings)
    names = feature_columns(train)
    scorer = LeadScorer(model, calibrator, names, {n: asdict(m) for n, m in metadata.items() if n in names})
    scorer.reference = training_reference(scorer, train, seed=config["evaluation"]["seed"])
    lap("calibrate")

    labels = test[s.LABEL].to_numpy()
    probabilities = {
        model_name: scorer.predict(test)["probability"].to_numpy(),
        f"{model_name}_uncalibrated": model.predict_proba(test),
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
    tier_settings = config["tiers"]
    thresholds = dict(tier_settings.get("thresholds") or {})
    if tier_settings.get("method") == "capacity":
        thresholds = capacity_thresholds(probabilities[model_name], dict(tier_settings["shares"]))
    floor_tier = str(tier_settings.get("floor_tier") or "D")
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
    scorer.tiers = {
        "method": str(tier_settings.get("method") or "probability"),
        "thresholds": {str(k): float(v) for k, v in (point_thresholds or thresholds).items()},
        "floor_tier": floor_tier,
        "note": _tier_note(tier_settings, bool(point_thresholds and getattr(model, "tiers", None))),
    }
    lap("evaluate")

    shap_importance, shap_sample = None, None
    if scorer.can_explain and evaluation["shap_rows"] > 0:
        sample = test.sample(min(len(test), evaluation["shap_rows"]), random_state=evaluation["seed"])
        contributions = scorer.explain(sample)
        values = contributions[names].to_numpy()
        shap_importance = grouped_shap_importance(values, names, metadata)
        shap_sample = (values, sample[names])
    lap("explain")

    split_info = split_summary(split.parts)
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
        },
        test=test,
        windows=dict(split.parts),
        probabilities=probabilities,
        shap_importance=shap_importance,
        shap_sample=shap_sample,
        seconds=seconds,
        points=points_record,
    )


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


def training_reference(
    scorer: LeadScorer, train: pd.DataFrame, seed: int = 0, max_rows: int = REFERENCE_ROWS
) -> dict[str, Any]:
    """Distributions of every feature and of the calibrated score on (a sample of) the training window."""
    sample = train.sample(min(len(train), max_rows), random_state=seed)
    score = scorer.predict(sample)[[PROBABILITY]]
    return {
        "rows": len(sample),
        "features": reference_profile(sample, scorer.feature_names),
        "score": reference_profile(score, [PROBABILITY])[PROBABILITY],
    }


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


def base_rate_drift(
    split: Mapping[str, Mapping[str, Any]], p_value: float = 0.01, min_relative_change: float = 0.25
) -> dict[str, Any]:
    """Did the positive rate of the test window move from its history's (train + calibration)?

    Flagged when a two-proportion test gives p below ``p_value`` and the rate changed by more
    than ``min_relative_change`` (the thresholds of ``leadml-backtest``); then calibration on
    the latest rows (``calibration.recent_fraction``) may help, and the backtest shows whether.
    """
    history_rows = split["train"]["rows"] + split["calibration"]["rows"]
    history_positives = split["train"]["positives"] + split["calibration"]["positives"]
    test_rows, test_positives = split["test"]["rows"], split["test"]["positives"]
    if not history_rows or not test_rows:
        return {"flagged": False, "sentence": ""}
    change, p = base_rate_shift(history_positives, history_rows, test_positives, test_rows)
    flagged = p < p_value and abs(change) > min_relative_change
    rates = ", ".join(f"{window} {split[window]['rate']:.1%}" for window in ("train", "calibration", "test"))
    sentence = f"base rate {rates}"
    if flagged:
        sentence += (
            f": the test window's rate moved {change:+.0%} from its history's"
            f" ({'p < 0.001' if p < 0.001 else f'p = {p:.3f}'}); expect"
            " calibration to suffer (try calibration.recent_fraction=0.25, and leadml-backtest)"
        )
    return {"change": change, "p_value": p, "flagged": flagged, "sentence": sentence}


NO_SIGNAL = "no usable signal"


def no_signal_reason(metrics: Mapping[str, float]) -> str | None:
    """A sentence when the test ROC AUC cannot be told from chance (its 95% interval holds 0.5)."""
    low, high = metrics.get("roc_auc_low", np.nan), metrics.get("roc_auc_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)) or not low <= 0.5 <= high:
        return None
    return (
        f"{NO_SIGNAL}: test ROC AUC {metrics['roc_auc']:.4f} [{low:.4f}, {high:.4f}] cannot be told from "
        "chance (0.5); the features carry no information about the outcome that holds on later leads, "
        "so the scores would only rank at random (check the label definition and the feature columns)"
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]


def promotion_gate(
    candidate: Mapping[str, float],
    logreg: Mapping[str, float],
    champion: Mapping[str, float] | None,
    settings: Mapping[str, Any],
    points: Mapping[str, float] | None = None,
) -> GateDecision:
    """Promote only with signal, above an absolute floor, ahead of the logistic and points baselines
    (the points one when the data config has a sheet) and not behind the champion."""
    reasons: list[str] = []
    passed = True
    auc, ece = candidate["roc_auc"], candidate["ece"]
    no_signal = no_signal_reason(candidate)
    if no_signal:
        passed = False
        reasons.append(no_signal)
    if not auc >= settings["min_roc_auc"]:
        passed = False
        reasons.append(f"ROC AUC {auc:.4f} below the floor {settings['min_roc_auc']}")
    if not ece <= settings["max_ece"]:
        passed = False
        reasons.append(f"ECE {ece:.4f} above the ceiling {settings['max_ece']}")
    margin = settings["min_gain_over_logreg"]
    if not auc >= logreg["roc_auc"] + margin:
        passed = False
        reasons.append(
            f"ROC AUC {auc:.4f} does not beat the logistic baseline {logreg['roc_auc']:.4f} (+{margin})"
        )
    points_margin = settings.get("min_gain_over_points", 0.0)
    if points is not None and not auc >= points["roc_auc"] + points_margin:
        passed = False
        reasons.append(
            f"ROC AUC {auc:.4f} does not beat traditional points scoring {points['roc_auc']:.4f} "
            f"(+{points_margin}): the hand-written sheet ranks these leads better"
        )
    if champion is None:
        reasons.append("no champion yet")
    else:
        tolerance = settings["champion_tolerance"]
        if auc < champion["roc_auc"] - tolerance:
            passed = False
            reasons.append(
                f"ROC AUC {auc:.4f} is worse than the champion's {champion['roc_auc']:.4f} "
                f"on the same test rows by more than {tolerance}"
            )
        else:
            reasons.append(
                f"ROC AUC {auc:.4f} against the champion's {champion['roc_auc']:.4f} on the same rows"
            )
    if passed:
        reasons.insert(0, f"passed: ROC AUC {auc:.4f}, ECE {ece:.4f}")
    return GateDecision(passed, reasons)
