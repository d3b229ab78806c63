"""Nightly scoring as pure functions: probabilities, tiers, reasons, sub-scores, trend, drift.

No file I/O and no MLflow here (``stages.score_stage`` does both). Every function takes
frames and arrays and returns frames, so the pandas and Spark engines share them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.evaluate import assign_tiers, capacity_thresholds, grouped_shap_values
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer

N_REASONS = 3
TREND_NEW, TREND_UP, TREND_STEADY, TREND_DOWN = "new", "improving", "steady", "declining"
# sub-scores: SHAP values summed over the features of each family, in log-odds
SUB_SCORE_FAMILIES: tuple[str, ...] = ("fit", "engagement")
PSI_BINS = 10
PSI_FLOOR = 1e-4  # share given to an empty bin so the logarithm stays finite
UNSEEN = "__unseen__"


@dataclass(frozen=True)
class TierSettings:
    method: str = "probability"
    thresholds: Mapping[str, float] = field(default_factory=lambda: {"A": 0.30, "B": 0.15, "C": 0.05})
    shares: Mapping[str, float] = field(default_factory=lambda: {"A": 0.05, "B": 0.20, "C": 0.50})
    floor_tier: str = "D"

    def __post_init__(self) -> None:
        if self.method not in ("probability", "capacity"):
            raise LeadmlError(f"tiers.method must be 'probability' or 'capacity', got {self.method!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> TierSettings:
        values = known_settings(cls, mapping, "tiers")
        values = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None}
        return cls(**values)

    def thresholds_for(self, probabilities: np.ndarray) -> dict[str, float]:
        """Probability minimum of each tier: fixed, or the capacity quantiles of today's leads."""
        if self.method == "capacity":
            return capacity_thresholds(probabilities, dict(self.shares))
        return dict(self.thresholds)


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
    for family in SUB_SCORE_FAMILIES:
        members = [i for i, name in enumerate(names) if name in metadata and metadata[name].family == family]
        out[f"{family}_score"] = values[:, members].sum(axis=1) if members else 0.0
    representative = _representatives(values, names, groups, metadata)
    feature_values = features[names]
    for direction, sign in (("positive", 1.0), ("negative", -1.0)):
        order = np.argsort(-sign * summed, axis=1, kind="stable")[:, :N_REASONS]
        for rank in range(N_REASONS):
            if rank >= order.shape[1]:  # fewer columns than reasons: the rest stay empty
                out[f"{direction}_reason_{rank + 1}"] = None
                out[f"{direction}_contribution_{rank + 1}"] = np.nan
                continue
            group_index = order[:, rank]
            contribution = summed[np.arange(len(summed)), group_index]
            useful = sign * contribution > 0
            feature_index = representative[np.arange(len(summed)), group_index]
            out[f"{direction}_reason_{rank + 1}"] = _sentences(
                feature_values, feature_index, useful, metadata
            )
            out[f"{direction}_contribution_{rank + 1}"] = np.where(useful, contribution, np.nan)
    return out


def grouped_reasons(
    contributions: pd.DataFrame, scorer: LeadScorer, features: pd.DataFrame
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Every group's contribution of each row, the group names, and each group's sentence.

    The same sentences as the reasons of :func:`explanation_columns` (a group quotes its
    feature with the largest |contribution|), for all groups instead of the top three:
    what a per-lead waterfall shows. Returns (rows x groups, groups, rows x groups of text).
    """
    names = scorer.feature_names
    metadata = {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}
    values = contributions[names].to_numpy(dtype=np.float64)
    summed, groups = grouped_shap_values(values, names, metadata)
    representative = _representatives(values, names, groups, metadata)
    every_row = np.ones(len(values), dtype=bool)
    sentences = np.empty(summed.shape, dtype=object)
    for g in range(len(groups)):
        sentences[:, g] = _sentences(features[names], representative[:, g], every_row, metadata)
    return summed, groups, sentences


def _representatives(
    values: np.ndarray, names: Sequence[str], groups: Sequence[str], metadata: Mapping[str, FeatureMeta]
) -> np.ndarray:
    """Per row and group, the feature with the largest |contribution|: the one the reason quotes."""
    feature_groups = np.array([metadata[n].group if n in metadata else n for n in names])
    chosen = np.zeros((values.shape[0], len(groups)), dtype=np.int64)
    magnitude = np.abs(values)
    for g, group in enumerate(groups):
        members = np.flatnonzero(feature_groups == group)
        chosen[:, g] = members[np.argmax(magnitude[:, members], axis=1)]
    return chosen


def _sentences(
    feature_values: pd.DataFrame,
    feature_index: np.ndarray,
    useful: np.ndarray,
    metadata: Mapping[str, FeatureMeta],
) -> np.ndarray:
    """The sentence quoting feature ``feature_index[i]`` of row i, or None where ``useful`` is false.

    Each distinct value of a feature is put into words once, then spread over its rows.
    """
    sentences = np.full(len(feature_index), None, dtype=object)
    names = feature_values.columns.tolist()  # a pandas (Arrow-backed) index is slow to read item by item
    for f in np.unique(feature_index[useful]):
        rows = np.flatnonzero(useful & (feature_index == f))
        column = feature_values.iloc[rows, f]
        codes, uniques = pd.factorize(column.astype(object), use_na_sentinel=True)
        name = names[f]
        words = np.array(
            [_sentence(metadata, name, value) for value in uniques.tolist()] + [None], dtype=object
        )
        words[-1] = _sentence(metadata, name, None)
        sentences[rows] = words[codes]  # code -1 (missing) takes the last entry
    return sentences


def _sentence(metadata: Mapping[str, FeatureMeta], name: str, value: Any) -> str:
    meta = metadata.get(name)
    if meta is None:
        return f"{name}: {value}"
    if isinstance(value, float | np.floating) and np.isnan(value):
        value = None
    return meta.describe(value)


def column_kind(column: pd.Series) -> str | None:
    """How every sink stores a scored column: timestamp, bool, int, float or text (None: none of them)."""
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamp"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return "text"
    return None


def _percentile(probability: np.ndarray) -> np.ndarray:
    """Share of today's leads scoring at or below each lead, in percent (ties share a rank)."""
    if len(probability) == 0:
        return np.empty(0)
    ranks = pd.Series(probability).rank(method="max").to_numpy()
    return 100.0 * ranks / len(probability)


def add_trend(today: pd.DataFrame, previous: pd.DataFrame | None, settings: TrendSettings) -> pd.DataFrame:
    """``previous_probability`` and ``trend`` against the last scored run (new leads: ``new``)."""
    out = today.copy()
    if previous is None or previous.empty:
        out["previous_probability"] = np.nan
    else:
        before = previous.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[PROBABILITY]
        out["previous_probability"] = out[s.LEAD_ID].map(before).astype("float64")
    change = out[PROBABILITY] - out["previous_probability"]
    out["trend"] = np.select(
        [out["previous_probability"].isna(), change > settings.steady_band, change < -settings.steady_band],
        [TREND_NEW, TREND_UP, TREND_DOWN],
        default=TREND_STEADY,
    )
    return out


# --------------------------------------------------------------------------- drift
def reference_profile(frame: pd.DataFrame, columns: Sequence[str], bins: int = PSI_BINS) -> dict[str, Any]:
    """Bin edges and shares of each column in the training window, for the population stability index.

    Numbers get equal-mass bins (plus one for missing); categories their shares (plus
    missing and unseen levels). The result is plain JSON so it travels inside the model.
    """
    profile: dict[str, Any] = {}
    for name in columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column.dtype):
            shares = (
                column.astype(object).where(column.notna(), None).value_counts(normalize=True, dropna=False)
            )
            profile[name] = {
                "kind": "categorical",
                "shares": {("__missing__" if k is None else str(k)): float(v) for k, v in shares.items()},
            }
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            present = values[~np.isnan(values)]
            edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else []
            profile[name] = {
                "kind": "numeric",
                "edges": [float(e) for e in edges],
                "shares": _numeric_shares(values, np.asarray(edges)).tolist(),
            }
    return profile


def _numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares per bin (right-closed by the edges) and, last, the share missing."""
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype(np.float64)
    return counts / max(len(values), 1)


def population_stability(reference: Mapping[str, Any], frame: pd.DataFrame) -> dict[str, float]:
    """PSI of each profiled column of ``frame`` against the training reference.

    PSI = sum over bins of (today - reference) * ln(today / reference); above 0.1 is a
    moderate shift and above 0.25 a large one by the usual rule of thumb.
    """
    return psi_from_counts(reference, drift_counts(reference, frame), len(frame))


def drift_counts(reference: Mapping[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """Rows per bin (numbers: the reference's bins, then missing) or per level (categories).

    Counts add up over partitions of the rows (Spark buckets); shares would not.
    """
    counts: dict[str, Any] = {}
    for name, ref in reference.items():
        if name not in frame.columns:
            continue
        column = frame[name]
        if ref["kind"] == "numeric":
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            missing = np.isnan(values)
            edges = np.asarray(ref["edges"])
            bins = np.bincount(
                np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1
            )
            counts[name] = np.append(bins, missing.sum()).astype(np.int64)
        else:
            labels = column.astype(object).where(column.notna(), "__missing__").astype(str)
            labels = labels.where(labels.isin(set(ref["shares"])), UNSEEN)
            counts[name] = {str(k): int(v) for k, v in labels.value_counts().items()}
    return counts


def psi_from_counts(reference: Mapping[str, Any], counts: Mapping[str, Any], rows: int) -> dict[str, float]:
    """PSI per column from :func:`drift_counts` of all of today's rows (possibly summed over parts)."""
    psi = {}
    for name, ref in reference.items():
        if name not in counts:
            continue
        if ref["kind"] == "numeric":
            today = np.asarray(counts[name], dtype=np.float64) / max(rows, 1)
            expected = np.asarray(ref["shares"], dtype=np.float64)
        else:
            total = sum(counts[name].values())
            keys = sorted(set(ref["shares"]) | {UNSEEN})
            today = np.array([counts[name].get(k, 0) / total if total else 0.0 for k in keys])
            expected = np.array([ref["shares"].get(k, 0.0) for k in keys])
        psi[name] = _psi(expected, today)
    return psi


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected, PSI_FLOOR)
    a = np.maximum(actual, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def unseen_categories(scorer: LeadScorer, features: pd.DataFrame) -> dict[str, int]:
    """Per categorical feature, how many rows hold a level the model never saw (scored as unknown)."""
    categories = getattr(scorer.model, "categories", {}) or {}
    counts: dict[str, int] = {}
    for name, levels in categories.items():
        if name not in features.columns:
            continue
        column = features[name]
        present = column.notna()
        unseen = present & ~column.astype(object).isin(set(levels))
        if int(unseen.sum()):
            counts[name] = int(unseen.sum())
    return counts
