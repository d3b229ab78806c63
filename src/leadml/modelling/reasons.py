"""Reasons in words: the largest grouped contributions of a lead, as sentences."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import grouped_shap_values
from leadml.modelling.scorer import LeadScorer

logger = logging.getLogger(__name__)


N_REASONS = 3


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
    chosen = np.zeros((values.shape[0], len(groups)), dtype=np.int64)
    magnitude = np.abs(values)
    for g, group in enumerate(groups):
        members = np.flatnonzero(feature_groups == group)
        chosen[:, g] = members[np.argmax(magnitude[:, members], axis=1)]
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
