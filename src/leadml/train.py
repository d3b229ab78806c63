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
from leadml.calibration import CalibrationSettings, fit_calibrator
from leadml.evaluate import (
    binary_metrics,
    capacity_thresholds,
    compare_models,
    grouped_shap_importance,
    tier_table,
)
from leadml.features import FeatureMeta
from leadml.guards import check_minimum_data, enforce_leakage, leakage_report
from leadml.models import (
    BaseRate,
    LogRegSettings,
    feature_columns,
    fit_logreg,
    fit_model,
    model_settings_from_mapping,
)
from leadml.scorer import PROBABILITY, LeadScorer
from leadml.scoring import reference_profile
from leadml.split import SplitSettings, split_summary, split_with_report

logger = logging.getLogger(__name__)

ORACLE = "oracle"
BASELINE_LOGREG, BASELINE_RATE = "logreg_baseline", "base_rate"
REFERENCE_ROWS = 200_000  # training rows profiled for drift checks


@dataclass
class TrainingResult:
    scorer: LeadScorer
    model_name: str
    split: dict[str, dict[str, Any]]
    purged_rows: dict[str, int]
    leakage: pd.DataFrame
    leakage_flagged: list[str]
    comparison: pd.DataFrame  # one row per model on the same test rows, with intervals
    tiers: pd.DataFrame
    calibration: dict[str, Any]
    test: pd.DataFrame  # test rows with labels and every model's probability
    windows: dict[str, pd.DataFrame]  # train, calibration and test rows as split
    probabilities: dict[str, np.ndarray]
    shap_importance: pd.DataFrame | None
    shap_sample: tuple[np.ndarray, pd.DataFrame] | None
    seconds: dict[str, float] = field(default_factory=dict)


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

    leakage = leakage_report(
        train,
        metadata,
        threshold=guards["leakage_threshold"],
        n_folds=guards["leakage_folds"],
        max_rows=guards["leakage_max_rows"],
        post_outcome_presence=tuple(guards["post_outcome_presence"]),
    )
    flagged = enforce_leakage(leakage, guards["leakage_action"])
    lap("leakage")

    model_config = dict(config["model"])
    model_name = str(model_config.pop("name"))
    model = fit_model(train, model_settings_from_mapping({"name": model_name, **model_config}), metadata)
    logreg = model if model_name == "logreg" else fit_logreg(train, LogRegSettings.from_mapping({}))
    base = BaseRate.fit(train)
    lap("fit")

    calibration_settings = CalibrationSettings.from_mapping(config["calibration"])
    calibrator = fit_calibrator(
        model.predict_margin(calibration),
        calibration[s.LABEL].to_numpy(),
        calibration_settings.name,
        cv_folds=calibration_settings.cv_folds,
        seed=calibration_settings.seed,
    )
    names = feature_columns(train)
    scorer = LeadScorer(model, calibrator, names, {n: asdict(m) for n, m in metadata.items() if n in names})
    scorer.reference = training_reference(scorer, train, seed=config["evaluation"]["seed"])
    lap("calibrate")

    labels = test[s.LABEL].to_numpy()
    probabilities = {
        model_name: scorer.predict(test)["probability"].to_numpy(),
        f"{model_name}_uncalibrated": model.predict_proba(test),
        BASELINE_LOGREG: logreg.predict_proba(test),
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
    tiers = tier_table(
        labels,
        probabilities[model_name],
        thresholds,
        n_boot=evaluation["bootstrap"],
        groups=test[s.LEAD_ID].to_numpy(),
    )
    lap("evaluate")

    shap_importance, shap_sample = None, None
    if scorer.can_explain:
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
            "or unlike the test window; try calibration=sigmoid or a longer split.calibration_months"
        )
    return f"not improved: {figures}; {why}"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]


def promotion_gate(
    candidate: Mapping[str, float],
    logreg: Mapping[str, float],
    champion: Mapping[str, float] | None,
    settings: Mapping[str, Any],
) -> GateDecision:
    """Promote only above an absolute floor, ahead of the logistic baseline and not behind the champion."""
    reasons: list[str] = []
    passed = True
    auc, ece = candidate["roc_auc"], candidate["ece"]
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
