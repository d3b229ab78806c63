"""The promotion gate: the evidence a trained model is judged on, and the decision to promote it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from leadml.modelling.evaluate import base_rate_drift
from leadml.modelling.models import (
    ScoringModel,
)
from leadml.modelling.points import POINTS as POINTS_MODEL
from leadml.modelling.train import BASELINE_LOGREG, BASELINE_POINTS, TOO_LITTLE_DATA, TrainingResult

logger = logging.getLogger(__name__)


NO_SIGNAL = "no usable signal"

FITTING_FAILURE = "fitting failure"

KEEP_THE_SHEET = "keep the sheet"


def no_signal_reason(metrics: Mapping[str, float]) -> str | None:
    """A sentence when the test ROC AUC cannot be told from chance (its 95% interval holds 0.5).

    Judged on the model's own ranking (its uncalibrated row): a calibrator cannot add signal, and
    isotonic ties could move a chance-level figure either way.
    """
    low, high = metrics.get("roc_auc_low", np.nan), metrics.get("roc_auc_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)) or not low <= 0.5 <= high:
        return None
    return (
        f"{NO_SIGNAL}: test ROC AUC {metrics['roc_auc']:.4f} [{low:.4f}, {high:.4f}] cannot be told from "
        "chance (0.5); the features carry no information about the outcome that holds on later leads, "
        "so the scores would only rank at random (check the label definition and the feature columns)"
    )


def fitting_failure_reason(model: ScoringModel) -> str | None:
    """A sentence when a tree model has no split: a constant score is a fitting failure, not "no signal"."""
    report = getattr(model, "fit_report", None) or {}
    if "split_trees" not in report or report["split_trees"] > 0:
        return None
    return (
        f"{FITTING_FAILURE}: none of the {report.get('trees', report.get('best_iteration', 0))} trees "
        f"found a split (min_child_samples {report.get('min_child_samples')} on "
        f"{report.get('fit_rows', 0):,} rows), "
        "so every lead gets the same score; lower model.min_child_samples or leave it at auto"
    )


def gate_evidence(result: TrainingResult, base_rate_moved: bool) -> GateEvidence:
    """What the gate reads of a training result beyond its metric rows."""
    notes = [note for note in result.notes if note.startswith(TOO_LITTLE_DATA)]
    return GateEvidence(
        uncalibrated=result.comparison.loc[f"{result.model_name}_uncalibrated"],
        too_little_data=notes[0] if notes else None,
        fitting_failure=fitting_failure_reason(result.evaluated.model) if result.evaluated else None,
        base_rate_moved=base_rate_moved,
        in_time=InTimeCalibration.of(result.calibration),
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]


@dataclass(frozen=True)
class GateEvidence:
    """What the gate reads beyond the metric rows: the model's own ranking and the run's notes."""

    uncalibrated: Mapping[str, float] | None = None  # the model's row before calibration
    too_little_data: str | None = None  # minimum_data_note of the development rows
    fitting_failure: str | None = None
    base_rate_moved: bool = False  # base_rate_drift(...)["flagged"]
    in_time: InTimeCalibration | None = None  # the deployed calibration checked on the window's halves


@dataclass(frozen=True)
class InTimeCalibration:
    """What :func:`in_time_calibration` measured on the later half of the test window."""

    ece: float
    ece_low: float
    ece_high: float
    rate_earlier: float
    rate_later: float
    mean_probability: float

    @classmethod
    def of(cls, calibration: Mapping[str, Any]) -> InTimeCalibration | None:
        if "in_time_ece" not in calibration:
            return None
        return cls(
            ece=calibration["in_time_ece"],
            ece_low=calibration["in_time_ece_low"],
            ece_high=calibration["in_time_ece_high"],
            rate_earlier=calibration["in_time_rate_earlier"],
            rate_later=calibration["in_time_rate_later"],
            mean_probability=calibration["in_time_mean_probability"],
        )


@dataclass(frozen=True)
class ExperimentVerdict:
    """What an experiment's readout says of its arms (leadml-promote): replaces the rescored
    champion in the gate, since a live experiment is the stronger evidence of the two."""

    experiment: str
    decision: str  # the readout's decision ("wins", "keep running", ...)
    sentence: str
    winner: str | None  # the arm that beat the baseline arm
    version: str | None  # the winner's version of the registered model (None: not a version of it)
    champion_version: str | None


def promotion_gate(
    candidate: Mapping[str, float],
    logreg: Mapping[str, float],
    champion: Mapping[str, float] | None,
    settings: Mapping[str, Any],
    points: Mapping[str, float] | None = None,
    evidence: GateEvidence | None = None,
    experiment: ExperimentVerdict | None = None,
) -> GateDecision:
    """Promote only with signal and enough data, above an absolute floor, calibrated (allowing for
    the test window's size), ahead of the logistic and points baselines (the points one when the
    data config has a sheet) and not behind the champion; under ``experiment`` (leadml-promote),
    only when the model's arm won the experiment, whatever the champion's test metrics."""
    evidence = evidence or GateEvidence()
    reasons: list[str] = []
    passed = True
    ece = candidate["ece"]
    # rankings are compared as rankings: the model before its (monotone) calibrator, like the
    # uncalibrated baselines; a chosen logistic model then ties its own baseline instead of losing
    # to it by a calibrator's rounding
    ranking = candidate if evidence.uncalibrated is None else evidence.uncalibrated
    auc = float(max(candidate["roc_auc"], ranking["roc_auc"]))
    if evidence.fitting_failure:
        passed = False
        reasons.append(evidence.fitting_failure)
    no_signal = (
        None
        if evidence.fitting_failure
        else no_signal_reason(candidate if evidence.uncalibrated is None else evidence.uncalibrated)
    )
    if no_signal:
        passed = False
        reasons.append(no_signal)
    if evidence.too_little_data:
        passed = False
        reasons.append(
            f"{evidence.too_little_data}; the logistic baseline reached ROC AUC {logreg['roc_auc']:.4f} "
            f"and the model {auc:.4f} on the test window"
        )
    if not auc >= settings["min_roc_auc"]:
        passed = False
        reasons.append(f"ROC AUC {auc:.4f} below the floor {settings['min_roc_auc']}")
    calibration = _calibration_rule(candidate, settings["max_ece"], evidence)
    if calibration is not None:
        ok, sentence = calibration
        passed = passed and ok
        reasons.append(sentence)
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
            f"{KEEP_THE_SHEET}: the hand-written points sheet ranks these leads better (test ROC AUC "
            f"{points['roc_auc']:.4f} against the model's {auc:.4f}, +{points_margin} required)"
        )
    if experiment is not None:
        won = experiment.decision == EXPERIMENT_WON and experiment.version is not None
        passed = passed and won
        reasons.append(
            f"experiment {experiment.experiment}: {experiment.sentence}"
            if won
            else f"experiment {experiment.experiment} gives no winner to promote: {experiment.sentence}"
        )
    elif champion is None:
        reasons.append("no champion yet")
    elif "note" in champion:
        reasons.append(str(champion["note"]))
    else:
        tolerance = settings["champion_tolerance"]
        rows = (
            f" ({int(champion['rows']):,} rows it never saw)" if "rows" in champion else " on the same rows"
        )
        if auc < champion["roc_auc"] - tolerance:
            passed = False
            reasons.append(
                f"ROC AUC {auc:.4f} is worse than the champion's {champion['roc_auc']:.4f}{rows} "
                f"by more than {tolerance}"
            )
        else:
            reasons.append(f"ROC AUC {auc:.4f} against the champion's {champion['roc_auc']:.4f}{rows}")
    if passed:
        reasons.insert(0, f"passed: ROC AUC {auc:.4f}, ECE {ece:.4f}")
    return GateDecision(passed, reasons)


def _calibration_rule(
    candidate: Mapping[str, float], max_ece: float, evidence: GateEvidence
) -> tuple[bool, str] | None:
    """(passed, sentence) of the ECE ceiling, or None when the point estimate is under it.

    A test window of a thousand rows measures ECE with an interval several hundredths wide, so
    the model is refused only when the interval's lower bound is above the ceiling. When the base
    rate moved between the windows, the evaluated calibrator (fitted on the folds, before the
    move) cannot be right on the window; the ceiling then applies to the deployed calibration
    checked in time (:func:`in_time_calibration`), and the sentence says so.
    """
    ece, low, high = candidate["ece"], candidate.get("ece_low", np.nan), candidate.get("ece_high", np.nan)
    if ece <= max_ece:
        return None
    interval = f" [{low:.4f}, {high:.4f}]" if np.isfinite(low) and np.isfinite(high) else ""
    check = evidence.in_time
    if evidence.base_rate_moved and check is not None:
        checked = (
            f"the deployed calibration, fitted and levelled through the earlier half of the window "
            f"(rate {check.rate_earlier:.1%}), reaches ECE {check.ece:.4f} [{check.ece_low:.4f}, "
            f"{check.ece_high:.4f}] on the later half (rate {check.rate_later:.1%}, mean probability "
            f"{check.mean_probability:.1%})"
        )
        if check.ece <= max_ece or check.ece_low <= max_ece:
            within = "within" if check.ece <= max_ece else "its interval reaching"
            return True, (
                f"ECE {ece:.4f}{interval} on the test window is the base rate's move: {checked}, "
                f"{within} the ceiling {max_ece}; the deployed refit is levelled on the latest rows"
            )
        return False, (
            f"ECE {ece:.4f}{interval} above the ceiling {max_ece}, and the base rate kept moving "
            f"inside the test window: {checked}; no calibrator fitted on past rows follows it, so "
            "the probabilities would be wrong however well the model ranks"
        )
    if np.isfinite(low) and low <= max_ece:
        return True, (
            f"ECE {ece:.4f}{interval}: the ceiling {max_ece} lies inside the interval of a "
            "test window this size, so the difference is noise"
        )
    return False, f"ECE {ece:.4f}{interval} above the ceiling {max_ece}"


EXPERIMENT_WON = "wins"  # leadml.reporting.readout.WINS: the readout's decision that promotes


def recorded_gate(
    verdict: ExperimentVerdict, recorded: Mapping[str, Any], settings: Mapping[str, Any]
) -> GateDecision:
    """The gate of training applied to a registered version's recorded test metrics (its run's
    ``metrics_comparison.csv``, ``calibration.json`` and ``split.json``), with the experiment's
    verdict in place of the champion comparison.

    A version that never won, is not a version of the registered model or is the champion already
    is refused before its metrics are read. The rules whose evidence the run did not record (a
    fitting failure, too little data) were judged at training; a version they refused has the
    same metrics here and fails the floor or the baselines again in nearly every case.
    """
    if verdict.decision != EXPERIMENT_WON or verdict.winner is None:
        return GateDecision(
            False, [f"experiment {verdict.experiment} gives no winner to promote: {verdict.sentence}"]
        )
    if verdict.version is None:
        return GateDecision(
            False,
            [f"arm {verdict.winner} won, but its model is not a version of the registered model (a points "
             "sheet under a name of its own, an exported folder): register it, then promote that version"],
        )  # fmt: skip
    if verdict.version == verdict.champion_version:
        return GateDecision(
            False, [f"arm {verdict.winner}'s version {verdict.version} is the champion already"]
        )
    comparison = recorded.get("metrics_comparison.csv")
    if comparison is None or not settings:
        return GateDecision(
            False,
            [f"version {verdict.version}'s training run has no recorded test metrics or promotion settings"],
        )
    rows = comparison.set_index(comparison.columns[0])
    name = next(str(n) for n in rows.index if f"{n}_uncalibrated" in rows.index)
    split = recorded.get("split.json")
    evidence = GateEvidence(
        uncalibrated=rows.loc[f"{name}_uncalibrated"],
        base_rate_moved=bool(base_rate_drift(split).get("flagged")) if split else False,
        in_time=InTimeCalibration.of(recorded.get("calibration.json") or {}),
    )
    points = rows.loc[BASELINE_POINTS] if BASELINE_POINTS in rows.index and name != POINTS_MODEL else None
    return promotion_gate(
        rows.loc[name], rows.loc[BASELINE_LOGREG], None, settings, points=points, evidence=evidence,
        experiment=verdict,
    )  # fmt: skip
