"""Nightly scoring as pure functions: probabilities, tiers, reasons, sub-scores, trend, drift.

No file I/O and no MLflow here (``stages.score_stage`` does both). Every function takes
frames and arrays and returns frames, so the pandas and Spark engines share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import TierSettings, assign_tiers, grouped_shap_values
from leadml.modelling.reasons import (
    GROUP_PREFIX,
    MODEL_CHANGE,
    MOVERS_PER_DIRECTION,
    N_REASONS,
    group_words,
    movement_sentence,
    movements,
    reason_sentences,
    representatives,
    uninformative_missing,
)
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer

TREND_NEW, TREND_UP, TREND_STEADY, TREND_DOWN = "new", "improving", "steady", "declining"
# sub-scores: SHAP values summed over the features of each family, in log-odds
SUB_SCORE_FAMILIES: tuple[str, ...] = ("fit", "engagement")


@dataclass(frozen=True)
class TrendSettings:
    # a change of the calibrated probability smaller than this (absolute) is "steady"
    steady_band: float = 0.02


def score_leads(
    scorer: LeadScorer,
    features: pd.DataFrame,
    tiers: TierSettings,
    *,
    explain: bool = True,
    explainer: str = "fast",
    deal_value: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per lead: probability, percentile, tier, reasons, sub-scores and expected value.

    ``features`` holds ``lead_id`` and the model's feature columns. Reasons group the exact
    contributions (TreeSHAP, or linear SHAP for a logistic model) back to original columns, so
    every derived part of a column (its 7/30/90-day counts, recency, one-hot levels) counts once.
    ``explainer`` picks the TreeSHAP implementation (``LeadScorer.explain``): both give the same
    numbers (a logistic model has one).
    """
    explained = explain and scorer.can_explain
    if explained:
        predicted, contributions = scorer.predict_explained(features, explainer)
    else:
        predicted = scorer.predict(features)
    probability = predicted[PROBABILITY].to_numpy()
    out = pd.DataFrame({s.LEAD_ID: features[s.LEAD_ID].to_numpy()})
    out[PROBABILITY] = probability
    out[MARGIN] = predicted[MARGIN].to_numpy()
    out["percentile"] = _percentile(probability)
    thresholds = tiers.thresholds_for(probability)
    out["tier"] = assign_tiers(probability, thresholds, tiers.floor_tier)
    if deal_value is not None:
        values = pd.to_numeric(deal_value, errors="coerce").to_numpy(dtype=np.float64)
        out["expected_value"] = probability * values
    if explained:
        out = pd.concat([out, explanation_columns(contributions, scorer, features)], axis=1)
    return out


def explanation_columns(
    contributions: pd.DataFrame, scorer: LeadScorer, features: pd.DataFrame
) -> pd.DataFrame:
    """Base value, fit and engagement sub-scores and the top reasons of each row."""
    names = scorer.feature_names
    metadata = {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}
    values = contributions[names].to_numpy(dtype=np.float64)
    summed, groups = grouped_shap_values(values, names, metadata)
    out = pd.DataFrame(index=range(len(features)))
    out[BASE_VALUE] = contributions[BASE_VALUE].to_numpy()
    # every group's exact contribution: what the next run subtracts to say why the lead moved
    grouped = pd.DataFrame(summed, columns=[f"{GROUP_PREFIX}{g}" for g in groups], index=out.index)
    out = pd.concat([out, grouped], axis=1)
    for family in SUB_SCORE_FAMILIES:
        members = [i for i, name in enumerate(names) if name in metadata and metadata[name].family == family]
        out[f"{family}_score"] = values[:, members].sum(axis=1) if members else 0.0
    representative = representatives(values, names, groups, metadata)
    feature_values = features[names]
    rows = np.arange(len(summed))[:, None]
    # a missing value that says nothing is never a reason in the lead's favour
    unfavourable = uninformative_missing(feature_values, metadata)[rows, representative]
    for direction, sign in (("positive", 1.0), ("negative", -1.0)):
        ranked = np.where(unfavourable, -np.inf, summed) if sign > 0 else -summed
        order = np.argsort(-ranked, axis=1, kind="stable")[:, :N_REASONS]
        for rank in range(N_REASONS):
            if rank >= order.shape[1]:  # fewer columns than reasons: the rest stay empty
                out[f"{direction}_reason_{rank + 1}"] = None
                out[f"{direction}_contribution_{rank + 1}"] = np.nan
                continue
            group_index = order[:, rank]
            contribution = summed[np.arange(len(summed)), group_index]
            useful = (sign * contribution > 0) & (
                ~unfavourable[np.arange(len(summed)), group_index] if sign > 0 else True
            )
            feature_index = representative[np.arange(len(summed)), group_index]
            out[f"{direction}_reason_{rank + 1}"] = reason_sentences(
                feature_values, feature_index, useful, metadata
            )
            out[f"{direction}_contribution_{rank + 1}"] = np.where(useful, contribution, np.nan)
    return out


def _percentile(probability: np.ndarray) -> np.ndarray:
    """Share of today's leads scoring at or below each lead, in percent (ties share a rank)."""
    if len(probability) == 0:
        return np.empty(0)
    ranks = pd.Series(probability).rank(method="max").to_numpy()
    return 100.0 * ranks / len(probability)


def add_trend(
    today: pd.DataFrame,
    previous: pd.DataFrame | None,
    settings: TrendSettings,
    words: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """``previous_probability``, ``trend`` and why the lead moved, against the last scored run.

    New leads are ``new``. Where both runs carry the groups' contributions (``group:*``) and the
    margin, ``margin_change`` is the change in log-odds and ``movement`` says which groups moved
    the lead, in percentage points that add up to the change (:func:`movement_columns`).
    ``words``: each group's name in words (:func:`movement_words`).
    """
    out = today.copy()
    before = None
    if previous is None or previous.empty:
        out["previous_probability"] = np.nan
    else:
        before = previous.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
        out["previous_probability"] = out[s.LEAD_ID].map(before[PROBABILITY]).astype("float64")
    change = out[PROBABILITY] - out["previous_probability"]
    out["trend"] = np.select(
        [out["previous_probability"].isna(), change > settings.steady_band, change < -settings.steady_band],
        [TREND_NEW, TREND_UP, TREND_DOWN],
        default=TREND_STEADY,
    )
    out["margin_change"], out["movement"] = movement_columns(out, before, words or {})
    return out


def movement_words(scorer: LeadScorer) -> dict[str, str]:
    """Every group of the scorer's features in words, for the movement sentences."""
    metadata = {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}
    groups = {metadata[n].group if n in metadata else n for n in scorer.feature_names}
    return {group: group_words(group, metadata) for group in sorted(groups | {MODEL_CHANGE})}


def movement_columns(
    today: pd.DataFrame, before: pd.DataFrame | None, words: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """(margin change, movement sentence) of each row; NaN and None where a run lacks the groups."""
    margin_change = np.full(len(today), np.nan)
    sentences = np.full(len(today), None, dtype=object)
    moved = movements(today, before)
    if moved is None:
        return margin_change, sentences
    named = [words.get(g, g.replace("_", " ")) for g in moved.groups]
    k = min(MOVERS_PER_DIRECTION, len(moved.groups))
    ups = np.argsort(-moved.points, axis=1, kind="stable")[:, :k]
    downs = np.argsort(moved.points, axis=1, kind="stable")[:, :k]
    margin_change[moved.rows] = moved.change_margin
    sentences[moved.rows] = [
        movement_sentence(100.0 * moved.change_probability[i],
                          [(named[g], moved.points[i, g]) for g in (*ups[i], *downs[i])])
        for i in range(len(moved.rows))
    ]  # fmt: skip
    return margin_change, sentences


# --------------------------------------------------------------------------- drift
