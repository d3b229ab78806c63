"""Checks that stop a training run before it learns from too little data or from leaks.

A leak is a feature that predicts the label too well on its own (out-of-fold single
feature ROC AUC), one that is filled in only at or after the outcome (present for
nearly all positives and nearly no negatives), or a category whose values record the
outcome (a large share of rows sits in levels whose outcome is all but certain: a CRM
"status" or "tag" field the sales team fills in during follow-up, such as "Closed by
Horizzon" or "Ringing"). Such a field can look only moderately predictive as a whole
(X Education's Tags: single-feature AUC 0.92) while a third of its rows name the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from leadml.data import schema as s
from leadml.data.features import LABEL, FeatureMeta
from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)

STOP, WARN, EXCLUDE = "stop", "warn", "exclude"
LEAKAGE_ACTIONS: tuple[str, ...] = (STOP, WARN, EXCLUDE)
NUMERIC_BINS = 32
# pseudo-rows pulling a bin's target rate to the overall rate, so rare bins do not look perfect
_RATE_PRIOR_ROWS = 5.0
_KEY_COLUMNS = (s.LEAD_ID, s.AS_OF, LABEL)


def check_minimum_data(
    train: pd.DataFrame, min_snapshots: int = 1000, min_positives: int = 100, label: str = LABEL
) -> None:
    """Raise LeadmlError when the training data has too few snapshots or positive labels."""
    if label not in train.columns:
        raise LeadmlError(f"training data has no label column '{label}'")
    snapshots = len(train)
    positives = int(pd.to_numeric(train[label]).sum())
    problems = []
    if snapshots < min_snapshots:
        problems.append(f"{snapshots} training snapshots, need at least {min_snapshots}")
    if positives < min_positives:
        problems.append(f"{positives} positive labels, need at least {min_positives}")
    if problems:
        raise LeadmlError(
            "not enough training data: "
            + "; ".join(problems)
            + ". Add history (longer data range, more frequent snapshots) or, knowing the model will be"
            f" less reliable, lower the limits with guards.min_snapshots={min(snapshots, min_snapshots)}"
            f" guards.min_positives={min(positives, min_positives)}"
        )


def stratified_subsample(labels: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_rows`` rows keeping the label share of each class."""
    if len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        positions = np.flatnonzero(labels == value)
        keep = max(1, round(max_rows * len(positions) / len(labels)))
        chosen.append(rng.choice(positions, size=min(keep, len(positions)), replace=False))
    return np.sort(np.concatenate(chosen))


def fold_ids(n_rows: int, n_folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold of each row; with groups, all rows of one group share a fold."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(n_rows) % n_folds
    codes, uniques = pd.factorize(groups, use_na_sentinel=False)
    return (rng.permutation(len(uniques)) % n_folds)[codes]


def value_bins(values: pd.Series, kind: str) -> np.ndarray:
    """Integer bin per row: categories or quantile bins of a number; missing values get a bin of their own."""
    if kind == "categorical" or not pd.api.types.is_numeric_dtype(values.dtype):
        codes, _ = pd.factorize(values, use_na_sentinel=True)
        return np.where(codes < 0, codes.max(initial=-1) + 1, codes)
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    present = ~np.isnan(numbers)
    edges = (
        np.unique(np.quantile(numbers[present], np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
        if present.any()
        else []
    )
    bins = np.searchsorted(edges, numbers, side="right")
    return np.where(present, bins, len(edges) + 1)


def out_of_fold_target_rate(bins: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each row's bin target rate measured on the other folds only (a one-feature histogram model)."""
    n_bins = int(bins.max()) + 1
    scores = np.empty(len(labels))
    for fold in np.unique(folds):
        held_out = folds == fold
        fit = ~held_out
        rows = np.bincount(bins[fit], minlength=n_bins)
        positives = np.bincount(bins[fit], weights=labels[fit], minlength=n_bins)
        prior = labels[fit].mean() if fit.any() else 0.5
        rate = (positives + _RATE_PRIOR_ROWS * prior) / (rows + _RATE_PRIOR_ROWS)
        scores[held_out] = rate[bins[held_out]]
    return scores


@dataclass(frozen=True)
class OutcomeLevelSettings:
    """When a category's levels count as recording the outcome (see :func:`outcome_coded_levels`)."""

    # a feature is flagged when at least this share of rows sits in outcome-coded levels
    max_share: float = 0.10
    # a level is outcome-coded when its 95% interval lies beyond the base odds by this factor
    factor: float = 5.0
    # levels with fewer rows are not judged
    min_rows: int = 20


def outcome_coded_levels(
    values: pd.Series, labels: np.ndarray, settings: OutcomeLevelSettings = OutcomeLevelSettings()
) -> tuple[float, list[str]]:
    """(share of rows in outcome-coded levels, those levels by size) of one categorical feature.

    A level is outcome-coded when the 95% Jeffreys interval of its positive rate lies
    entirely above ``1 - (1 - base) / factor`` (nearly all convert) or entirely below
    ``base / factor`` (nearly none do), ``base`` being the overall rate. Relative to the base
    rate, so a level converting at 2% is not "certain" when everyone converts at 3%. Missing
    values form a level of their own.
    """
    base = float(np.mean(labels)) if len(labels) else 0.0
    if not 0 < base < 1:
        return 0.0, []
    text = values.astype("string").fillna("(missing)").to_numpy()
    levels = pd.DataFrame({"level": text, "label": labels}).groupby("level", sort=False)["label"]
    counts = levels.agg(["size", "sum"])
    counts = counts[counts["size"] >= settings.min_rows]
    positives, rows = counts["sum"].to_numpy(), counts["size"].to_numpy()
    low = beta.ppf(0.025, positives + 0.5, rows - positives + 0.5)
    high = beta.ppf(0.975, positives + 0.5, rows - positives + 0.5)
    coded = (low >= 1 - (1 - base) / settings.factor) | (high <= base / settings.factor)
    chosen = counts[coded].sort_values("size", ascending=False)
    return float(chosen["size"].sum() / len(values)), [str(level) for level in chosen.index]


def _feature_columns(train: pd.DataFrame, metadata: Mapping[str, FeatureMeta] | None) -> list[str]:
    if metadata:
        return [name for name in metadata if name in train.columns]
    return [c for c in train.columns if c not in _KEY_COLUMNS and c != s.ORDER_KEY]


def leakage_report(
    train: pd.DataFrame,
    metadata: Mapping[str, FeatureMeta] | None,
    threshold: float = 0.95,
    n_folds: int = 5,
    seed: int = 0,
    max_rows: int = 100_000,
    post_outcome_presence: tuple[float, float] = (0.95, 0.05),
    label: str = LABEL,
    group_column: str | None = s.LEAD_ID,
    outcome_levels: OutcomeLevelSettings = OutcomeLevelSettings(),
) -> pd.DataFrame:
    """Single-feature out-of-fold ROC AUC and presence by class for every feature, leaks flagged.

    Each feature alone is turned into a score by its out-of-fold target rate per value bin
    (categories, or 32 quantile bins of a number; missing is a bin of its own), so the
    orientation and shape are learnt on the training folds only. Folds keep the rows of one
    ``group_column`` value (a lead) together. Above ``max_rows`` a label-stratified
    subsample is used for the AUC; presence shares use all rows.

    ``post_outcome``: present in at least ``post_outcome_presence[0]`` of positives and at
    most ``post_outcome_presence[1]`` of negatives.

    ``outcome_coded``: a categorical feature with at least ``outcome_levels.max_share`` of the
    rows in levels whose outcome is all but certain (:func:`outcome_coded_levels`, on all rows).
    Numbers are left to the AUC test: a bin of "old leads" that never convert is not a leak.
    """
    labels_all = pd.to_numeric(train[label]).to_numpy(dtype="float64")
    features = _feature_columns(train, metadata)
    rows = stratified_subsample(labels_all, max_rows, seed)
    if len(rows) < len(train):
        logger.info("leakage report on a stratified subsample of %d of %d rows", len(rows), len(train))
    sample = train.iloc[rows]
    labels = labels_all[rows]
    groups = sample[group_column].to_numpy() if group_column and group_column in sample.columns else None
    folds = fold_ids(len(sample), n_folds, seed, groups)
    both_classes = 0 < labels.sum() < len(labels)
    positive_rows = labels_all == 1
    min_positive_presence, max_negative_presence = post_outcome_presence

    records = []
    for name in features:
        kind = metadata[name].kind if metadata and name in metadata else "numeric"
        if both_classes:
            scores = out_of_fold_target_rate(value_bins(sample[name], kind), labels, folds)
            auc = float(roc_auc_score(labels, scores))
        else:
            auc = float("nan")
        coded_share, coded_levels = (
            outcome_coded_levels(train[name], labels_all, outcome_levels)
            if kind == "categorical" or not pd.api.types.is_numeric_dtype(train[name].dtype)
            else (0.0, [])
        )
        present = train[name].notna().to_numpy()
        present_positive = float(present[positive_rows].mean()) if positive_rows.any() else float("nan")
        present_negative = float(present[~positive_rows].mean()) if (~positive_rows).any() else float("nan")
        records.append(
            {
                "feature": name,
                "kind": kind,
                "auc": auc,
                "strength": max(auc, 1 - auc),
                "present_positive": present_positive,
                "present_negative": present_negative,
                "outcome_levels_share": coded_share,
                "outcome_levels": "; ".join(coded_levels),
            }
        )
    report = pd.DataFrame.from_records(
        records,
        columns=[
            "feature",
            "kind",
            "auc",
            "strength",
            "present_positive",
            "present_negative",
            "outcome_levels_share",
            "outcome_levels",
        ],
    )
    report["too_predictive"] = report["strength"] > threshold
    report["post_outcome"] = (report["present_positive"] >= min_positive_presence) & (
        report["present_negative"] <= max_negative_presence
    )
    report["outcome_coded"] = report["outcome_levels_share"] >= outcome_levels.max_share
    report["flagged"] = report["too_predictive"] | report["post_outcome"] | report["outcome_coded"]
    report["reason"] = [_reason(row, threshold) for row in report.itertuples()]
    return report.sort_values("strength", ascending=False, ignore_index=True)


def _reason(row: Any, threshold: float) -> str:
    reasons = []
    if row.too_predictive:
        reasons.append(f"single-feature AUC {row.auc:.3f} (max(AUC, 1-AUC) > {threshold:g})")
    if row.post_outcome:
        reasons.append(
            f"post_outcome: filled for {row.present_positive:.0%} of positives"
            f" and {row.present_negative:.0%} of negatives"
        )
    if row.outcome_coded:
        levels = row.outcome_levels.split("; ")
        shown = ", ".join(levels[:4]) + (f" and {len(levels) - 4} more" if len(levels) > 4 else "")
        reasons.append(
            f"outcome-coded: {row.outcome_levels_share:.0%} of rows in levels whose outcome is all but"
            f" certain ({shown})"
        )
    return "; ".join(reasons)


def enforce_leakage(report: pd.DataFrame, action: str = STOP) -> list[str]:
    """Stop (raise LeadmlError), warn about, or announce the exclusion of the flagged features.

    Returns their names; with ``exclude`` the caller trains without them (the report, logged
    to the run, is the record of why).
    """
    if action not in LEAKAGE_ACTIONS:
        raise LeadmlError(
            f"guards.leakage_action must be one of {', '.join(LEAKAGE_ACTIONS)}, got '{action}'"
        )
    flagged = report[report["flagged"]]
    names: list[str] = flagged["feature"].tolist()
    if not names:
        return names
    details = "; ".join(f"{row.feature}: {row.reason}" for row in flagged.itertuples())
    if action == STOP:
        raise LeadmlError(
            f"possible target leakage in {len(names)} feature(s): {details}. "
            f"Exclude them with features.exclude=[{','.join(names)}] "
            "(or let the sentinel exclude what it flags with guards.leakage_action=exclude), "
            "or, if they are known before the outcome, continue with guards.leakage_action=warn"
        )
    if action == EXCLUDE:
        logger.info("possible target leakage, excluded from training: %s", details)
    else:
        logger.warning("possible target leakage, training continues: %s", details)
    return names


def flagged_features(report: pd.DataFrame) -> Sequence[str]:
    """Names of the features the leakage report flags."""
    return report.loc[report["flagged"], "feature"].tolist()


def sentinel_sentence(checked: int | None, guards: Mapping[str, Any]) -> str:
    """The one line saying the leakage sentinel ran and flagged nothing, with the thresholds applied
    (``guards``, the guards config as :func:`leadml.modelling.train.sentinel_report` passes it on);
    ``checked`` is the number of columns looked at (None: not known)."""
    threshold = float(guards["leakage_threshold"])
    positives, negatives = (float(share) for share in guards["post_outcome_presence"])
    level_share = float(guards.get("outcome_level_share", OutcomeLevelSettings.max_share))
    what = "the features" if checked is None else f"{checked:,} column{'' if checked == 1 else 's'}"
    return (
        f"leakage sentinel: checked {what} (single-feature AUC above {threshold:g} or below "
        f"{1 - threshold:g}; filled for at least {positives:.0%} of positives and at most "
        f"{negatives:.0%} of negatives; at least {level_share:.0%} of rows in outcome-coded levels): "
        "none flagged"
    )
