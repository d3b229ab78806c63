"""Nightly scoring as pure functions: probabilities, tiers, reasons, sub-scores, trend, drift.

No file I/O and no MLflow here (``stages.score_stage`` does both). Every function takes
frames and arrays and returns frames, so the pandas and Spark engines share them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import TierSettings, assign_tiers
from leadml.modelling.reasons import (
    GROUP_PREFIX,
    MODEL_CHANGE,
    MOVERS_PER_DIRECTION,
    N_REASONS,
    group_words,
    largest_members,
    movement_sentence,
    movements,
    reason_sentences,
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
    plan = ExplanationPlan.of(scorer)
    feature_values = features[plan.names]
    columns = explanation_arrays(
        contributions[plan.names].to_numpy(dtype=np.float64),
        contributions[BASE_VALUE].to_numpy(),
        plan,
        uninformative_missing(feature_values, plan.metadata),
        lambda index, useful: reason_sentences(feature_values, index, useful, plan.metadata),
    )
    return pd.DataFrame(columns, index=range(len(features)))


@dataclass(frozen=True)
class ExplanationPlan:
    """What the reasons of a scorer's rows need, worked out once from its features' metadata: the
    groups (original columns and channels), the features of each group and of each sub-score
    family, and the features whose missing value is never a reason in a lead's favour."""

    names: list[str]
    metadata: dict[str, FeatureMeta]
    groups: list[str]
    membership: np.ndarray  # (features x groups): 1 where the feature is one of the group's
    members: list[np.ndarray]  # each group's features, positions in ``names``
    families: dict[str, list[int]]  # each sub-score family's features, positions in ``names``
    quiet_missing: np.ndarray  # per feature: a missing value says nothing (uninformative_missing)

    @classmethod
    def of(cls, scorer: LeadScorer) -> ExplanationPlan:
        names = list(scorer.feature_names)
        metadata = {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}
        feature_groups = [metadata[n].group if n in metadata else n for n in names]
        groups = list(dict.fromkeys(feature_groups))  # in order of appearance, as grouped_shap_values
        codes = np.array([groups.index(group) for group in feature_groups], dtype=np.int64)
        membership = np.zeros((len(names), len(groups)))
        membership[np.arange(len(names)), codes] = 1.0
        families = {
            family: [i for i, n in enumerate(names) if n in metadata and metadata[n].family == family]
            for family in SUB_SCORE_FAMILIES
        }
        quiet = [
            n in metadata and not metadata[n].missing_informative and bool(metadata[n].wording) for n in names
        ]
        return cls(
            names=names,
            metadata=metadata,
            groups=[str(group) for group in groups],
            membership=membership,
            members=[np.flatnonzero(codes == g) for g in range(len(groups))],
            families=families,
            quiet_missing=np.array(quiet, dtype=bool),
        )

    def representatives(self, values: np.ndarray) -> np.ndarray:
        """Per row and group, the feature with the largest |contribution|: the one its reason quotes."""
        return largest_members(values, self.members)


def explanation_arrays(
    values: np.ndarray,
    base: np.ndarray,
    plan: ExplanationPlan,
    missing: np.ndarray,
    describe: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> dict[str, np.ndarray]:
    """The columns of :func:`explanation_columns` from arrays, for frames and single requests alike.

    ``values`` are the (rows x features) contributions in ``plan.names`` order and ``base`` the
    base values; ``missing`` is True where a feature's value is missing; ``describe(features,
    useful)`` gives the sentence quoting feature ``features[i]`` of row i where ``useful[i]``.
    """
    n = len(values)
    summed = values @ plan.membership
    out: dict[str, np.ndarray] = {BASE_VALUE: base}
    # every group's exact contribution: what the next run subtracts to say why the lead moved
    out.update({f"{GROUP_PREFIX}{group}": summed[:, g] for g, group in enumerate(plan.groups)})
    for family in SUB_SCORE_FAMILIES:
        members = plan.families[family]
        out[f"{family}_score"] = values[:, members].sum(axis=1) if members else np.zeros(n)
    representative = plan.representatives(values)
    # a missing value that says nothing is never a reason in the lead's favour
    unfavourable = (missing & plan.quiet_missing)[np.arange(n)[:, None], representative]
    for direction, sign in (("positive", 1.0), ("negative", -1.0)):
        out.update(_top_reasons(direction, sign, summed, representative, unfavourable, describe))
    return out


def _top_reasons(
    direction: str,
    sign: float,
    summed: np.ndarray,
    representative: np.ndarray,
    unfavourable: np.ndarray,
    describe: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> dict[str, np.ndarray]:
    rows = np.arange(len(summed))
    ranked = np.where(unfavourable, -np.inf, summed) if sign > 0 else -summed
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :N_REASONS]
    out: dict[str, np.ndarray] = {}
    for rank in range(N_REASONS):
        reason, contribution_column = f"{direction}_reason_{rank + 1}", f"{direction}_contribution_{rank + 1}"
        if rank >= order.shape[1]:  # fewer groups than reasons: the rest stay empty
            out[reason] = np.full(len(summed), None, dtype=object)
            out[contribution_column] = np.full(len(summed), np.nan)
            continue
        group_index = order[:, rank]
        contribution = summed[rows, group_index]
        useful = (sign * contribution > 0) & (~unfavourable[rows, group_index] if sign > 0 else True)
        out[reason] = describe(representative[rows, group_index], useful)
        out[contribution_column] = np.where(useful, contribution, np.nan)
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
