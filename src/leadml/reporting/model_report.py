"""The model report of a training run: one self-contained HTML page to read after ``make train``.

Sections: a summary (headline metrics and the gate decision), the model against its
baselines and, on synthetic data, the oracle (95% bootstrap intervals); reliability, ROC,
precision-recall and cumulative gains charts; calibration; conversion per tier; global
importance (grouped TreeSHAP); the comparison with the previous champion on the same test
rows; the promotion gate; the leakage sentinel; the split windows and the timings.

The functions below turn the training objects into plain records for the template
(``templates/model.html.j2``); only :func:`write_model_report` writes, one file, atomically.
Every text goes through the autoescaping template: a column name is never markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from leadml.data import schema as s
from leadml.data import wording
from leadml.data.features import FeatureMeta
from leadml.modelling.gate import GateDecision
from leadml.modelling.guards import OutcomeLevelSettings
from leadml.modelling.segments import METRICS as SEGMENT_METRICS
from leadml.modelling.segments import SegmentOutcome
from leadml.modelling.train import BASELINE_LOGREG, BASELINE_POINTS, BASELINE_RATE, ORACLE, TrainingResult
from leadml.reporting import html, plots
from leadml.reporting.html import finite

UNCALIBRATED_SUFFIX = "_uncalibrated"
# how a comparison row is named in chart legends and the metrics table (default: its own name)
DISPLAY_NAMES = {BASELINE_POINTS: "points (traditional)"}
IMPORTANCE_ROWS = 15
LEAKAGE_ROWS = 8
# a model this far above the generator's true probabilities can only be reading a leak
ORACLE_SLACK = 0.02


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool | None  # None: closest to ``target`` is best
    digits: int = 4
    percent: bool = False
    target: float | None = None
    help: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("roc_auc", "ROC AUC", True, help="ranking: chance of a won lead above a lost one"),
    Metric("pr_auc", "PR AUC", True, help="precision averaged over recall"),
    Metric("log_loss", "log loss", False, help="probability quality, lower is better"),
    Metric("brier", "Brier", False, help="mean squared error of the probability"),
    Metric("ece", "ECE", False, help="expected calibration error (equal-mass bins)"),
    Metric("calibration_slope", "calibration slope", None, 2, target=1.0, help="1 is ideal"),
    Metric("lift_at_10", "lift top 10%", True, 2, help="conversion in the best 10% over the base rate"),
    Metric("capture_at_10", "capture top 10%", True, 1, percent=True, help="share of wins in the best 10%"),
)


@dataclass(frozen=True)
class RunInfo:
    """Where the training run lives and what came before it."""

    run_id: str
    version: str
    registered_model: str
    tracking_uri: str = ""
    champion_version: str | None = None
    champion_metrics: Mapping[str, Any] | None = None  # the champion re-scored on test rows it never saw
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # earlier stages
    elapsed_seconds: float | None = None  # this stage until the report


# --------------------------------------------------------------------------- records
def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def metrics_shown(columns: Sequence[str]) -> list[Metric]:
    return [metric for metric in METRICS if metric.key in columns]


def model_role(name: str, model_name: str) -> str:
    """What a row of the comparison is, in words."""
    if name == model_name:
        return "the model (calibrated): the one registered"
    if name == f"{model_name}{UNCALIBRATED_SUFFIX}":
        return "the same model before calibration"
    return {
        BASELINE_LOGREG: "baseline: logistic regression on the same features",
        BASELINE_POINTS: "baseline: traditional points scoring, the hand-written sheet of data.points",
        BASELINE_RATE: "baseline: the training base rate for every lead",
        ORACLE: "oracle: the generator's true probabilities (the best any model can do)",
    }.get(name, "")


def comparison_order(index: Sequence[str], model_name: str) -> list[str]:
    preferred = [
        model_name,
        f"{model_name}{UNCALIBRATED_SUFFIX}",
        BASELINE_LOGREG,
        BASELINE_POINTS,
        BASELINE_RATE,
        ORACLE,
    ]
    return [n for n in preferred if n in index] + [n for n in index if n not in preferred]


def metric_table(comparison: pd.DataFrame, model_name: str) -> list[dict[str, Any]]:
    """One record per model, best known first: its role and each metric with its 95% interval."""
    shown = metrics_shown(list(comparison.columns))
    records = []
    for name in comparison_order(list(comparison.index), model_name):
        row = comparison.loc[name]
        records.append(
            {
                "model": str(name),
                "label": DISPLAY_NAMES.get(str(name), str(name)),
                "role": model_role(str(name), model_name),
                "highlight": name == model_name,
                "cells": [
                    {
                        "value": _float(row.get(m.key)),
                        "low": _float(row.get(f"{m.key}_low")),
                        "high": _float(row.get(f"{m.key}_high")),
                    }
                    for m in shown
                ],
            }
        )
    return records


def oracle_gap(comparison: pd.DataFrame, model_name: str) -> dict[str, Any] | None:
    """How far the model is from the generator's true probabilities, or None without an oracle."""
    if ORACLE not in comparison.index or model_name not in comparison.index:
        return None
    model, oracle = comparison.loc[model_name], comparison.loc[ORACLE]
    headroom = _float(oracle["roc_auc"]) - 0.5
    gap = {
        "roc_auc": _float(oracle["roc_auc"]) - _float(model["roc_auc"]),
        "pr_auc": _float(oracle["pr_auc"]) - _float(model["pr_auc"]),
        "log_loss": _float(model["log_loss"]) - _float(oracle["log_loss"]),
        "oracle_roc_auc": _float(oracle["roc_auc"]),
        "share_of_headroom": (_float(model["roc_auc"]) - 0.5) / headroom if headroom > 0 else float("nan"),
    }
    gap["suspicious"] = gap["roc_auc"] < -ORACLE_SLACK
    return gap


# chart name -> file name under plots/ in the training run's artifacts
CHART_ARTIFACTS = {
    "reliability": "reliability",
    "roc": "roc",
    "precision_recall": "precision_recall",
    "gains": "cumulative_gains",
    "importance": "shap_importance",
    "beeswarm": "shap_beeswarm",
}


def chart_figures(
    labels: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    shap_importance: pd.DataFrame | None = None,
    shap_sample: tuple[np.ndarray, pd.DataFrame] | None = None,
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> dict[str, Figure]:
    """The evaluation charts (the base rate's flat score has no curve worth drawing)."""
    curves = {DISPLAY_NAMES.get(name, name): p for name, p in probabilities.items() if name != BASELINE_RATE}
    charts = {
        "reliability": plots.reliability_figure(labels, curves),
        "roc": plots.roc_figure(labels, curves),
        "precision_recall": plots.precision_recall_figure(labels, curves),
        "gains": plots.gains_figure(labels, curves),
    }
    if shap_importance is not None and len(shap_importance):
        charts["importance"] = plots.shap_importance_figure(shap_importance)
    if shap_sample is not None and shap_sample[0].size:
        values, sample = shap_sample
        charts["beeswarm"] = plots.shap_beeswarm_figure(values, sample, metadata)
    return charts


def importance_table(
    shap_importance: pd.DataFrame | None, top: int = IMPORTANCE_ROWS
) -> list[dict[str, Any]]:
    """The largest groups by mean |SHAP| with their share of the total."""
    if shap_importance is None:
        return []
    return [
        {
            "group": str(row["group"]),
            "mean_abs_shap": _float(row["mean_abs_shap"]),
            "share": _float(row["share"]),
            "n_features": int(row["n_features"]),
        }
        for _, row in shap_importance.head(top).iterrows()
    ]


def tier_records(tiers: pd.DataFrame) -> list[dict[str, Any]]:
    """Conversion per tier with its interval, share of leads, share of wins and lift over the base rate."""
    rows, positives = float(tiers["rows"].sum()), float(tiers["positives"].sum())
    base_rate = positives / rows if rows else float("nan")
    top_rate = max([_float(v) for v in tiers["conversion_high"] if finite(_float(v))] or [1.0])
    records = []
    for _, row in tiers.iterrows():
        rate = _float(row["conversion_rate"])
        records.append(
            {
                "tier": str(row["tier"]),
                "min_probability": _float(row["min_probability"]),
                "min_points": _float(row.get("min_points")),  # model=points: the sheet's own minimum
                "rows": int(row["rows"]),
                "positives": int(row["positives"]),
                "conversion_rate": rate,
                "conversion_low": _float(row["conversion_low"]),
                "conversion_high": _float(row["conversion_high"]),
                "mean_probability": _float(row["mean_probability"]),
                "share_of_rows": row["rows"] / rows if rows else float("nan"),
                "share_of_wins": row["positives"] / positives if positives else float("nan"),
                "lift": rate / base_rate if base_rate and finite(rate) else float("nan"),
                "bar": 100 * rate / top_rate if finite(rate) and top_rate > 0 else 0.0,
            }
        )
    return records


def points_section(points: Mapping[str, Any], comparison: pd.DataFrame, model_name: str) -> dict[str, Any]:
    """The traditional scoring sheet: its rules, the fitted points-to-log-odds map, its row, its tiers.

    ``points`` is ``TrainingResult.points``; without rules, the note saying there is no baseline.
    """
    if not points.get("available"):
        note = points.get("note") or "no points baseline: the data config has no points rules (data.points)"
        return {
            "available": False,
            "note": str(note),
            "skipped": list(points.get("skipped") or []),
            "is_model": False,
            "gain": float("nan"),
            "tiers": [],
        }
    row = str(points.get("row") or BASELINE_POINTS)
    auc = {
        name: _float(comparison.loc[name, "roc_auc"]) if name in comparison.index else float("nan")
        for name in (row, model_name)
    }
    tiers = points.get("tiers") or {}
    by_probability = tiers.get("probability") or {}
    return {
        "available": True,
        "row": row,
        "is_model": row == model_name,
        "label": DISPLAY_NAMES.get(row, row),
        "roc_auc": auc[row],
        "gain": auc[model_name] - auc[row] if row != model_name else float("nan"),
        "slope": _float(points.get("slope")),
        "intercept": _float(points.get("intercept")),
        "mean_total": _float(points.get("mean_total")),
        "total_range": [_float(v) for v in points.get("total_range") or []],
        "rules": [
            {
                "rule": int(rule["rule"]),
                "criterion": str(rule["criterion"]),
                "points": _float(rule["points"]),
                "training_share": _float(rule["training_share"]),
            }
            for rule in points.get("rules") or []
        ],
        "skipped": list(points.get("skipped") or []),
        "tiers": [
            {"tier": str(tier), "points": _float(minimum), "probability": _float(by_probability.get(tier))}
            for tier, minimum in (tiers.get("points") or {}).items()
        ],
        "floor_tier": str(tiers.get("floor_tier", "")),
        "agreement": _float(tiers.get("agreement")),
    }


def calibration_summary(
    calibration: Mapping[str, Any], comparison: pd.DataFrame, model_name: str
) -> dict[str, Any]:
    """The calibrator, how it was chosen, and the model's probability metrics before and after it."""
    raw_name = f"{model_name}{UNCALIBRATED_SUFFIX}"
    rows = []
    for key, label in (
        ("log_loss", "log loss"),
        ("brier", "Brier"),
        ("ece", "ECE"),
        ("calibration_slope", "calibration slope"),
        ("calibration_intercept", "calibration intercept"),
    ):
        if key in comparison.columns and model_name in comparison.index:
            before = _float(comparison.loc[raw_name, key]) if raw_name in comparison.index else float("nan")
            rows.append({"metric": label, "before": before, "after": _float(comparison.loc[model_name, key])})
    used = {"method", "chosen_by", "cv_log_loss", "cv_folds", "verdict", "preserves_ranking"}
    used.add("uncalibrated_log_loss")  # shown in the before/after table
    details = [
        {"key": str(key).replace("_", " "), "value": value if isinstance(value, str) else _describe(value)}
        for key, value in calibration.items()
        if key not in used
    ]
    verdict = str(calibration.get("verdict", ""))
    cv_losses = calibration.get("cv_log_loss") or {}
    return {
        "method": str(calibration.get("method", "")),
        "chosen_by": str(calibration.get("chosen_by", "configured")),
        "cv_log_loss": [{"method": str(m), "log_loss": _float(v)} for m, v in cv_losses.items()],
        "cv_folds": calibration.get("cv_folds"),
        "preserves_ranking": str(calibration.get("preserves_ranking", "")),
        "verdict": verdict,
        "improved": verdict.startswith("improved"),
        "rows": rows,
        "details": details,
    }


def _describe(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_describe(v) for v in value)
    return str(value)


def _better(metric: Metric, delta: float, new: float, old: float) -> bool | None:
    if not finite(delta) or abs(delta) < 1e-12:
        return None
    if metric.higher_is_better is None:
        target = metric.target if metric.target is not None else 0.0
        return abs(new - target) < abs(old - target)
    return (delta > 0) == metric.higher_is_better


def champion_comparison(
    champion_version: str | None,
    champion_metrics: Mapping[str, float] | None,
    candidate: Mapping[str, float],
    version: str,
) -> dict[str, Any]:
    """The previous champion against the new model on the same test rows, or why there is none."""
    if champion_version is None:
        return {
            "rows": [],
            "sentence": f"There was no champion before: version {version} is the first candidate.",
        }
    if champion_metrics is None:
        return {
            "rows": [],
            "sentence": (
                f"The champion (version {champion_version}) could not score this run's test rows "
                "(it was built on other features), so there is nothing to compare on the same rows."
            ),
        }
    if "note" in champion_metrics:  # a refitted champion that saw this run's whole test window
        return {"rows": [], "sentence": f"{str(champion_metrics['note']).capitalize()}."}
    rows = []
    for metric in metrics_shown([k for k in champion_metrics if k in candidate and k != "rows"]):
        old, new = _float(champion_metrics[metric.key]), _float(candidate[metric.key])
        delta = new - old
        rows.append(
            {
                "metric": metric.label,
                "digits": metric.digits,
                "percent": metric.percent,
                "champion": old,
                "new": new,
                "delta": delta,
                "better": _better(metric, delta, new, old),
            }
        )
    return {
        "rows": rows,
        "sentence": (
            f"The champion before this run (version {champion_version}) re-scored on the same "
            f"test rows as version {version}."
        ),
    }


def gate_summary(
    decision: GateDecision,
    settings: Mapping[str, Any],
    version: str,
    registered_model: str,
    champion_version: str | None,
) -> dict[str, Any]:
    """The decision in one headline, the gate's own reasons, and the rules it applied."""
    if decision.promote:
        headline = f"Version {version} of {registered_model} is promoted to champion."
    elif champion_version is not None:
        headline = (
            f"Version {version} of {registered_model} is not promoted: it stays challenger and "
            f"version {champion_version} remains champion."
        )
    else:
        headline = f"Version {version} of {registered_model} is not promoted: there is no champion."
    rules = []
    if "min_roc_auc" in settings:
        rules.append(f"ROC AUC at least {settings['min_roc_auc']}")
    if "max_ece" in settings:
        rules.append(f"ECE at most {settings['max_ece']}")
    if "min_gain_over_logreg" in settings:
        rules.append(f"ROC AUC at least the logistic baseline's + {settings['min_gain_over_logreg']}")
    if "min_gain_over_points" in settings:
        rules.append(
            f"ROC AUC at least traditional points scoring's + {settings['min_gain_over_points']}"
            " (when the data config has a points sheet)"
        )
    if "champion_tolerance" in settings:
        rules.append(
            f"ROC AUC at most {settings['champion_tolerance']} below the champion's on test rows it never saw"
        )
    reasons = list(decision.reasons)
    return {"promote": bool(decision.promote), "headline": headline, "reasons": reasons, "rules": rules}


def leakage_summary(
    leakage: pd.DataFrame, flagged: Sequence[str], guards: Mapping[str, Any], top: int = LEAKAGE_ROWS
) -> dict[str, Any]:
    """The sentinel's findings: flagged columns by name with the reason, and the strongest single features."""
    reasons = dict(zip(leakage["feature"], leakage["reason"], strict=False)) if len(leakage) else {}
    strongest = [
        {
            "feature": str(row["feature"]),
            "kind": str(row["kind"]),
            "auc": _float(row["auc"]),
            "strength": _float(row["strength"]),
            "present_positive": _float(row["present_positive"]),
            "present_negative": _float(row["present_negative"]),
            "outcome_levels_share": _float(row.get("outcome_levels_share", 0.0)),
            "flagged": bool(row["flagged"]),
        }
        for _, row in leakage.head(top).iterrows()
    ]
    return {
        "checked": len(leakage),
        "threshold": guards.get("leakage_threshold"),
        "outcome_level_share": guards.get("outcome_level_share", OutcomeLevelSettings.max_share),
        "action": guards.get("leakage_action"),
        "flagged": [{"feature": str(name), "reason": str(reasons.get(name, ""))} for name in flagged],
        "strongest": strongest,
    }


def split_records(split: Mapping[str, Mapping[str, Any]], purged: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per window: its first and last date (or order key), rows, leads, positives and rate."""
    records = []
    for window, info in split.items():
        column = s.AS_OF if f"first_{s.AS_OF}" in info else s.ORDER_KEY
        records.append(
            {
                "window": str(window),
                "first": info.get(f"first_{column}", ""),
                "last": info.get(f"last_{column}", ""),
                "by": "as-of date" if column == s.AS_OF else "order key",
                "rows": int(info.get("rows", 0)),
                "leads": int(info.get("leads", 0)),
                "positives": int(info.get("positives", 0)),
                "rate": _float(info.get("rate")),
                "purged": int(purged.get(window, 0)),
            }
        )
    return records


def timing_records(
    seconds: Mapping[str, float], stage_seconds: Mapping[str, float], elapsed: float | None
) -> list[dict[str, Any]]:
    """Where the time went: earlier stages in the order they ran, then each step of training.

    ``stage_seconds`` comes from ``stages.upstream_seconds``, which walks back from the latest stage.
    """
    earlier = reversed(list(stage_seconds.items()))
    records = [{"step": f"stage: {name}", "seconds": _float(value)} for name, value in earlier]
    records += [{"step": f"train: {name}", "seconds": _float(value)} for name, value in seconds.items()]
    if elapsed is not None:
        steps = sum(_float(v) for v in seconds.values())
        records.append(
            {"step": "train: reading, tracking and registry", "seconds": max(0.0, elapsed - steps)}
        )
    return records


def model_settings(model: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"key": str(k), "value": _describe(v)} for k, v in model.items() if k != "name"]


# --------------------------------------------------------------------------- page
# the account roll-ups of the test window, in the order and words the page shows them
ACCOUNT_ROWS = (
    ("account_probability", "corrected for dependence (deployed)"),
    ("p_independent", "independent leads: 1 - (1 - p1)(1 - p2)..."),
    ("p_max", "its best lead alone"),
)


def account_section(accounts: Mapping[str, Any]) -> dict[str, Any] | None:
    """The scorer's account roll-up (``LeadScorer.accounts``) as the page shows it; None without one."""
    if not accounts:
        return None
    test = accounts.get("test") or {}
    rows = [{"name": words, **test[key]} for key, words in ACCOUNT_ROWS if key in test]
    return {
        "note": str((accounts.get("correction") or {}).get("note", "")),
        "engaged_probability": accounts.get("engaged_probability"),
        "accounts": accounts.get("test_accounts"),
        "several": accounts.get("test_accounts_several_leads"),
        "rows": rows,
    }


def segment_section(
    outcome: SegmentOutcome | None, labels: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The segments (``data.segments``) as the page shows them: per segment its data, the global
    model's and its own model's figures on its test rows, and which one scores its leads and why;
    None without segments. ``labels`` is the data config's words for values (``data.labels``)."""
    if outcome is None:
        return None
    settings = outcome.settings
    words = {str(k): str(v) for k, v in ((labels or {}).get(settings.by) or {}).items()}
    rows = [
        {
            "name": wording.label(decision.name, words),
            "members": ", ".join(wording.label(value, words) for value in decision.values),
            "rows": decision.rows,
            "positives": decision.positives,
            "test_rows": decision.test_rows,
            "test_positives": decision.test_positives,
            "global_roc_auc": _float(decision.global_metrics.get("roc_auc")),
            "own_roc_auc": _float(decision.segment_metrics.get("roc_auc")),
            "global_log_loss": _float(decision.global_metrics.get("log_loss")),
            "own_log_loss": _float(decision.segment_metrics.get("log_loss")),
            "chosen": decision.chosen,
            "reason": decision.reason,
        }
        for decision in outcome.decisions
    ]
    return {
        "column": wording.title_case(settings.by).lower(),
        "metric": SEGMENT_METRICS[settings.metric],
        "margin": settings.margin,
        "confidence": settings.confidence,
        "grouped": bool(settings.groups),
        "rows": rows,
        "own": [row["name"] for row in rows if row["chosen"]],
        "global_roc_auc": _float(outcome.test.get("global", {}).get("roc_auc")),
        "routed_roc_auc": _float(outcome.test.get("routed", {}).get("roc_auc")),
        "global_log_loss": _float(outcome.test.get("global", {}).get("log_loss")),
        "routed_log_loss": _float(outcome.test.get("routed", {}).get("log_loss")),
    }


def model_report_context(
    result: TrainingResult,
    decision: GateDecision,
    run: RunInfo,
    config: Mapping[str, Any],
    metadata: Mapping[str, FeatureMeta] | None = None,
    charts: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, as plain records (``charts``: data URIs already drawn)."""
    comparison, model_name = result.comparison, result.model_name
    labels = result.test[s.LABEL].to_numpy()
    model_row = comparison.loc[model_name]
    test = result.split.get("test", {})
    data_name = str(config.get("data", {}).get("name", ""))
    shown = metrics_shown(list(comparison.columns))
    return {
        "title": f"Model report: {run.registered_model} version {run.version}",
        "subtitle": (
            f"{model_name} on {data_name}, run {run.run_id}; "
            f"generated {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC"
        ),
        "run": run,
        "data_name": data_name,
        "model_name": model_name,
        "model_settings": model_settings(config.get("model", {})),
        "split_kind": str(config.get("split", {}).get("kind", "")),
        "features": len(result.scorer.feature_names),
        "excluded": [str(c) for c in config.get("features", {}).get("exclude", ()) or ()],
        "test": {
            "rows": int(test.get("rows", len(labels))),
            "positives": int(test.get("positives", int(labels.sum()))),
            "rate": _float(test.get("rate")),
        },
        "kpi": {m.key: _float(model_row.get(m.key)) for m in shown}
        | {f"{m.key}_low": _float(model_row.get(f"{m.key}_low")) for m in shown}
        | {f"{m.key}_high": _float(model_row.get(f"{m.key}_high")) for m in shown},
        "metrics": shown,
        "comparison": metric_table(comparison, model_name),
        "logreg_roc_auc": _float(comparison.loc[BASELINE_LOGREG, "roc_auc"])
        if BASELINE_LOGREG in comparison.index
        else float("nan"),
        "oracle": oracle_gap(comparison, model_name),
        "charts": charts
        if charts is not None
        else {
            name: html.figure_data_uri(figure)
            for name, figure in chart_figures(
                labels, result.probabilities, result.shap_importance, result.shap_sample, metadata
            ).items()
        },
        "importance": importance_table(result.shap_importance),
        "explanation": getattr(result.scorer, "explanation_method", None) or "exact TreeSHAP",
        "tiers": tier_records(result.tiers),
        "accounts": account_section(getattr(result.scorer, "accounts", None) or {}),
        "segments": segment_section(getattr(result, "segments", None), config.get("data", {}).get("labels")),
        "points": points_section(getattr(result, "points", None) or {}, comparison, model_name),
        "calibration": calibration_summary(result.calibration, comparison, model_name),
        "champion": champion_comparison(run.champion_version, run.champion_metrics, model_row, run.version),
        "gate": gate_summary(
            decision, config.get("promotion", {}), run.version, run.registered_model, run.champion_version
        ),
        "leakage": leakage_summary(result.leakage, result.leakage_flagged, config.get("guards", {})),
        "split": split_records(result.split, result.purged_rows),
        "selection": selection_record(result),
        "deployment": _plain_record(getattr(result, "deployment", None) or {}),
        "timings": timing_records(result.seconds, run.stage_seconds, run.elapsed_seconds),
    }


def selection_record(result: TrainingResult) -> dict[str, Any] | None:
    """The selection's evidence for the report: candidates, folds, the search's best settings."""
    selection = getattr(result, "selection", None)
    if selection is None:
        return None
    record = _plain_record(selection.describe())
    development = getattr(result, "development", None)
    record["development_rows"] = len(development) if development is not None else 0
    return record


def _plain_record(value: Any) -> Any:
    """JSON-like values with numpy scalars and NaN made plain for the template."""
    if isinstance(value, Mapping):
        return {str(k): _plain_record(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_record(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not np.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 1e15:
            return int(value)
    return value


def render_model_report(context: Mapping[str, Any]) -> str:
    return html.render("model.html.j2", **context)


def write_model_report(
    path: Path,
    result: TrainingResult,
    decision: GateDecision,
    run: RunInfo,
    config: Mapping[str, Any],
    metadata: Mapping[str, FeatureMeta] | None = None,
    charts: Mapping[str, str] | None = None,
) -> Path:
    """Render the report of a training run and write it atomically to ``path``."""
    context = model_report_context(result, decision, run, config, metadata, charts)
    return html.write_page(render_model_report(context), path)
