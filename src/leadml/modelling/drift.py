"""Population drift between the training rows and a scoring run: reference profiles, PSI and
unseen levels (shared by training and scoring)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.modelling.scorer import LeadScorer

logger = logging.getLogger(__name__)


PSI_BINS = 10

PSI_FLOOR = 1e-4  # share given to an empty bin so the logarithm stays finite

UNSEEN = "__unseen__"


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


# the drift references per weekday: the latest this many snapshot dates of the training rows (on the
# grid of leadml.data.calendar.snapshot_dates seven consecutive dates fall on seven weekdays)
WEEKDAY_DATES = 7
# a category keeps its own bin in a drift reference when it holds at least this share of the rows
# (at most MAX_LEVELS of them); the rest share one bin: the PSI of a code with thousands of rare
# values would otherwise measure sampling noise
MIN_LEVEL_SHARE = 0.005
MAX_LEVELS = 30


def weekday_profiles(
    rows: pd.DataFrame,
    columns: Sequence[str],
    seed: int = 0,
    max_rows: int = 200_000,
    dates: pd.DatetimeIndex | None = None,
) -> dict[str, dict[str, Any]]:
    """Drift references of the latest training dates, one per weekday of the as-of date ("0" Monday).

    Tonight's leads are compared with training rows of the same weekday and the latest period:
    recency features differ by weekday by design (on a Monday the last activity is at least
    two days old), and the lead mix moves with time, so neither is drift of the data. Empty
    when the rows have no snapshot dates (a flat table) or fewer than seven dates. ``dates``: the
    dates to profile, when not the latest of ``rows`` (:func:`latest_dates` of other rows).
    """
    if s.AS_OF not in rows.columns:
        return {}
    latest = latest_dates(rows) if dates is None else dates
    if len(latest) < WEEKDAY_DATES or latest.day_of_week.nunique() < WEEKDAY_DATES:
        return {}
    stamps = pd.to_datetime(rows[s.AS_OF], utc=True)
    out = {}
    for date in latest:
        chosen = rows[(stamps == date).to_numpy()]
        chosen = chosen.sample(min(len(chosen), max_rows // WEEKDAY_DATES), random_state=seed)
        out[str(date.day_of_week)] = lumped(reference_profile(chosen, columns))
    return out


def latest_dates(rows: pd.DataFrame) -> pd.DatetimeIndex:
    """The latest :data:`WEEKDAY_DATES` snapshot dates of ``rows`` (UTC, oldest first): the dates
    :func:`weekday_profiles` profiles."""
    dates = pd.DatetimeIndex(pd.to_datetime(rows[s.AS_OF], utc=True).unique()).sort_values()
    return dates[-WEEKDAY_DATES:]


def lumped(profile: Mapping[str, Any]) -> dict[str, Any]:
    """``profile`` with each category's rare levels in one bin (:data:`UNSEEN`, with unseen ones)."""
    out = dict(profile)
    for name, entry in profile.items():
        if entry["kind"] != "categorical":
            continue
        ranked = sorted(entry["shares"].items(), key=lambda kv: -kv[1])
        kept = {k: v for k, v in ranked[:MAX_LEVELS] if v >= MIN_LEVEL_SHARE}
        rest = 1.0 - sum(kept.values())
        out[name] = {**entry, "shares": {**kept, **({UNSEEN: rest} if rest > 1e-12 else {})}}
    return out


def drift_reference(reference: Mapping[str, Any], as_of: pd.Timestamp | None) -> Mapping[str, Any]:
    """The feature profile tonight's leads are compared with: the weekday's, else the training window's."""
    weekdays = reference.get("by_weekday") or {}
    if as_of is not None and str(pd.Timestamp(as_of).day_of_week) in weekdays:
        return weekdays[str(pd.Timestamp(as_of).day_of_week)]
    return reference.get("features") or {}


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
