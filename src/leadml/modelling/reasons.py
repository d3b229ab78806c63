"""Reasons in words: the largest grouped contributions of a lead, as sentences."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.data.wording import missing_values
from leadml.modelling.evaluate import grouped_shap_values
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer

logger = logging.getLogger(__name__)


N_REASONS = 3
# the scored partition's column of each group's exact contribution (log-odds), read by the next run
# to say why a lead moved; not for the SQL sink (a group's name need not be a SQL identifier)
GROUP_PREFIX = "group:"
# the model's own change between two runs, in a movement (the base value moved: a new model)
MODEL_CHANGE = "(model)"
MOVERS_PER_DIRECTION = 3
# words for the groups whose column name does not read well; the others are worded from their
# 7-day count's plural ("pricing-page visits"), or are their column's name
GROUP_WORDS = {
    "job_title": "seniority",
    "email": "e-mail domain",
    "created_at": "lead age",
    "founded_year": "company age",
    "country": "country",
    "activity": "all activity",
    "source": "lead source",
    MODEL_CHANGE: "model updated",
}


def group_words(group: str, metadata: Mapping[str, FeatureMeta]) -> str:
    """A group's name in words: "pricing-page visits", "employees", "lead source"."""
    if group in GROUP_WORDS:
        return GROUP_WORDS[group]
    weekly = metadata.get(f"n_{group}_7d")
    if weekly is not None and weekly.plural:
        return weekly.plural
    if weekly is not None and weekly.template.startswith("{value:.0f} "):  # a model from before the wording
        return weekly.template.removeprefix("{value:.0f} ").removesuffix(" in the last 7 days")
    return group.replace("_", " ") if group.islower() else group


def points(value: float) -> str:
    """Percentage points with their sign: "+9", "-2.5" (whole from 10 up)."""
    text = f"{value:+.0f}" if abs(value) >= 10 else f"{value:+.1f}"
    return text.replace(".0", "") if text.endswith(".0") else text


def movement_sentence(change_points: float, moves: Sequence[tuple[str, float]]) -> str:
    """ "rose 12 points: 4 pricing-page visits ... (+9), ...; fell: ... (-2)" from (words, points) moves.

    The largest rises and falls (at most :data:`MOVERS_PER_DIRECTION` each, none under 0.05 points).
    """
    if abs(change_points) < 0.05:
        return "no change"
    verb = "rose" if change_points > 0 else "fell"
    amount = points(abs(change_points)).lstrip("+")
    head = f"{verb} {amount} {'point' if amount == '1' else 'points'}"
    ups = sorted((m for m in moves if m[1] >= 0.05), key=lambda m: -m[1])[:MOVERS_PER_DIRECTION]
    downs = sorted((m for m in moves if m[1] <= -0.05), key=lambda m: m[1])[:MOVERS_PER_DIRECTION]
    first, second = (ups, downs) if change_points > 0 else (downs, ups)
    parts = [head + (": " + ", ".join(f"{w} ({points(v)})" for w, v in first) if first else "")]
    if second:
        other = "fell" if change_points > 0 else "rose"
        parts.append(f"{other}: " + ", ".join(f"{w} ({points(v)})" for w, v in second))
    return "; ".join(parts)


def group_deltas(today: pd.DataFrame, before: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Each group's change of contribution between two runs (rows of ``today``; ``before`` aligned).

    A group one of the models does not have counts 0 there; a changed base value (a new model)
    is one more group, :data:`MODEL_CHANGE`. Together they add up to the change of the margin.
    """
    columns = [c for c in today.columns if c.startswith(GROUP_PREFIX)]
    columns += [c for c in before.columns if c.startswith(GROUP_PREFIX) and c not in columns]
    now = today.reindex(columns=columns).to_numpy(dtype=np.float64)
    then = before.reindex(columns=columns).to_numpy(dtype=np.float64)
    now, then = np.nan_to_num(now, nan=0.0), np.nan_to_num(then, nan=0.0)
    base = today[BASE_VALUE].to_numpy(dtype=np.float64) - before[BASE_VALUE].to_numpy(dtype=np.float64)
    groups = [c.removeprefix(GROUP_PREFIX) for c in columns] + [MODEL_CHANGE]
    return groups, np.column_stack([now - then, base])


@dataclass(frozen=True)
class Movement:
    """How the leads of a run moved since their previous run, group by group."""

    rows: np.ndarray  # positions in today's rows of the leads the previous run scored
    groups: list[str]  # the groups (and MODEL_CHANGE) the points are of
    points: np.ndarray  # (rows x groups) each group's share of the change, percentage points
    change_probability: np.ndarray
    change_margin: np.ndarray


def movements(today: pd.DataFrame, before: pd.DataFrame | None) -> Movement | None:
    """Each lead's move since ``before`` (the previous run's rows, indexed by lead id); None when
    either run lacks the margin, base value or groups' contributions, or no lead was scored before."""
    needed = (PROBABILITY, MARGIN, BASE_VALUE)
    if before is None or any(c not in today.columns or c not in before.columns for c in needed):
        return None
    if not any(c.startswith(GROUP_PREFIX) for c in before.columns):
        return None
    aligned = before.reindex(today[s.LEAD_ID].to_numpy())
    known = np.flatnonzero(aligned[MARGIN].notna().to_numpy() & today[MARGIN].notna().to_numpy())
    if len(known) == 0:
        return None
    now, then = today.iloc[known].reset_index(drop=True), aligned.iloc[known].reset_index(drop=True)
    groups, deltas = group_deltas(now, then)
    change_margin = (now[MARGIN] - then[MARGIN]).to_numpy(dtype=np.float64)
    change_probability = (now[PROBABILITY] - then[PROBABILITY]).to_numpy(dtype=np.float64)
    points = movement_points(change_probability, change_margin, deltas)
    return Movement(known, groups, points, change_probability, change_margin)


def movement_points(
    change_probability: np.ndarray, change_margin: np.ndarray, deltas: np.ndarray
) -> np.ndarray:
    """Each group's share of a probability change, in percentage points (rows x groups).

    ``deltas`` are the groups' exact log-odds changes (they add up to ``change_margin``); the
    probability moved by ``change_probability`` through the monotone calibrator, so each group
    gets the same share of it as of the margin: the points add up to the change exactly.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(np.abs(change_margin) > 1e-12, 100.0 * change_probability / change_margin, 0.0)
    return deltas * scale[:, None]


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
    representative = representatives(values, names, groups, metadata)
    every_row = np.ones(len(values), dtype=bool)
    sentences = np.empty(summed.shape, dtype=object)
    for g in range(len(groups)):
        sentences[:, g] = reason_sentences(features[names], representative[:, g], every_row, metadata)
    return summed, groups, sentences


def representatives(
    values: np.ndarray, names: Sequence[str], groups: Sequence[str], metadata: Mapping[str, FeatureMeta]
) -> np.ndarray:
    """Per row and group, the feature with the largest |contribution|: the one the reason quotes."""
    feature_groups = np.array([metadata[n].group if n in metadata else n for n in names])
    return largest_members(values, [np.flatnonzero(feature_groups == group) for group in groups])


def largest_members(values: np.ndarray, members: Sequence[np.ndarray]) -> np.ndarray:
    """Per row and group (``members[g]``: its features' positions), the member with the largest
    |contribution| in ``values`` (rows x features)."""
    chosen = np.zeros((values.shape[0], len(members)), dtype=np.int64)
    magnitude = np.abs(values)
    for g, group_members in enumerate(members):
        chosen[:, g] = group_members[np.argmax(magnitude[:, group_members], axis=1)]
    return chosen


def reason_sentences(
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
            [sentence_of(metadata, name, value) for value in uniques.tolist()] + [None], dtype=object
        )
        words[-1] = sentence_of(metadata, name, None)
        sentences[rows] = words[codes]  # code -1 (missing) takes the last entry
    return sentences


def uninformative_missing(feature_values: pd.DataFrame, metadata: Mapping[str, FeatureMeta]) -> np.ndarray:
    """(rows x features) True where a value is missing and its feature's missingness says nothing.

    Such a value may pull a lead down (the model's exact contribution stays in the waterfall), but
    is never given as a reason in its favour: "no job title recorded" is not why a lead is good
    unless the training rows showed that leads without one convert differently
    (``FeatureMeta.missing_informative``, decided by the features stage).
    """
    out = np.zeros(feature_values.shape, dtype=bool)
    for f, name in enumerate(feature_values.columns):
        meta = metadata.get(name)
        if meta is None or meta.missing_informative or not meta.wording:
            continue
        out[:, f] = missing_values(feature_values[name])
    return out


def sentence_of(metadata: Mapping[str, FeatureMeta], name: str, value: Any) -> str:
    """The reason quoting one value of feature ``name`` (None or NaN: the value is missing)."""
    meta = metadata.get(name)
    if meta is None:
        return f"{name}: {value}"
    if isinstance(value, float | np.floating) and np.isnan(value):
        value = None
    return meta.describe(value)
