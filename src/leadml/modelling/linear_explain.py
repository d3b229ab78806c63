"""Exact additive explanations of the logistic model (``models.LogRegModel``), in log-odds.

The logistic pipeline's margin is linear in its design row ``z`` (standardised numbers, then
the one-hot columns of each categorical): ``f(x) = b + sum_k w_k z_k(x)``. With the training
rows as background, the interventional (linear) SHAP value of an original column ``j`` is

    phi_j(x) = sum over the design columns k of j of  w_k * (z_k(x) - mean_k)

where ``mean_k`` is the mean of design column ``k`` over the training rows, and the base value
is ``b + sum_k w_k mean_k``. Base value plus the contributions is the margin exactly (up to
rounding), for any row: missing numbers and unseen or missing categories go through the same
imputer and encoder as the margin, so their contributions are finite by construction. A
column at its training mean contributes 0. The result has the layout of
``LeadScorer.explain`` for LightGBM: one column per feature, then the base value.

The means come either from the training rows themselves (:func:`training_design_means`,
what :func:`attach_training_means` stores on the scorer at train time) or, for a scorer
without them, from what the fitted pipeline and the scorer already hold
(:func:`profile_design_means`): a standardised column has training mean 0 by construction
(the scaler was fitted on the imputed training rows), and a one-hot column's training mean
is the share of its level(s) in the training window's profile (``LeadScorer.reference``), with
missing values counted as the level the imputer fills in. The profile covers every training
row up to ``train.REFERENCE_ROWS`` (200,000) rows, so both give the same means there; above
it the profile is a random sample and the means are estimates (additivity is exact either way).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from leadml.errors import LeadmlError
from leadml.modelling.models import LogRegModel

logger = logging.getLogger(__name__)

MISSING = "__missing__"  # the key of missing values in a categorical profile (scoring.reference_profile)


def is_linear(model: Any) -> bool:
    """Whether ``model`` is the logistic model this module explains."""
    return isinstance(model, LogRegModel)


def design_matrix(model: LogRegModel, frame: pd.DataFrame) -> np.ndarray | sp.spmatrix:
    """The design rows the logistic regression sees (dense, or sparse as the pipeline makes them)."""
    return model.pipeline[:-1].transform(model.prepare(frame))


def training_design_means(model: LogRegModel, rows: pd.DataFrame) -> np.ndarray:
    """The mean of every design column over ``rows`` (the training rows): exact background means."""
    if len(rows) == 0:
        raise LeadmlError("no training rows to take the logistic model's design means from")
    design = design_matrix(model, rows)
    return np.asarray(design.mean(axis=0), dtype=np.float64).ravel()


@dataclass(frozen=True)
class _Block:
    """One transformer of the pipeline's ColumnTransformer: its input columns and output slice."""

    transformer: Any
    columns: list[str]
    start: int
    widths: list[int]  # design columns per input column, in order

    @property
    def last(self) -> Any:
        return self.transformer[-1] if isinstance(self.transformer, Pipeline) else self.transformer


def _column_transformer(model: LogRegModel) -> ColumnTransformer:
    steps = model.pipeline[:-1].steps
    if len(steps) != 1 or not isinstance(steps[0][1], ColumnTransformer):
        raise LeadmlError(
            "the logistic pipeline is not one ColumnTransformer before the regression: "
            "its design columns cannot be traced back to the features"
        )
    return steps[0][1]


def _encoder_widths(encoder: OneHotEncoder) -> list[int]:
    """Design columns per input column of a fitted encoder (infrequent levels share one, drop removes one)."""
    try:
        infrequent = list(encoder.infrequent_categories_)
    except AttributeError:  # no min_frequency / max_categories: nothing is grouped
        infrequent = [None] * len(encoder.categories_)
    dropped = getattr(encoder, "drop_idx_", None)
    widths = []
    for i, levels in enumerate(encoder.categories_):
        width = len(levels)
        if infrequent[i] is not None:
            width -= len(infrequent[i]) - 1
        if dropped is not None and dropped[i] is not None:
            width -= 1
        widths.append(width)
    return widths


def _blocks(model: LogRegModel) -> list[_Block]:
    """The pipeline's transformers with the design columns each input column owns."""
    transformer = _column_transformer(model)
    names_in = list(getattr(transformer, "feature_names_in_", model.feature_names))
    blocks = []
    for name, fitted, columns in transformer.transformers_:
        if isinstance(fitted, str) and fitted == "drop":
            continue
        if isinstance(columns, str):
            columns = [columns]
        columns = [names_in[c] if isinstance(c, int | np.integer) else str(c) for c in columns]
        out = transformer.output_indices_[name]
        width = out.stop - out.start
        if not columns or width == 0:
            continue
        last = fitted[-1] if isinstance(fitted, Pipeline) else fitted
        widths = _encoder_widths(last) if isinstance(last, OneHotEncoder) else [1] * len(columns)
        if sum(widths) != width:
            raise LeadmlError(
                f"the logistic pipeline's {name!r} transformer makes {width} design columns from "
                f"{len(columns)} features in a way leadml cannot trace back to them"
            )
        blocks.append(_Block(fitted, columns, out.start, widths))
    return blocks


def profile_design_means(model: LogRegModel, profile: Mapping[str, Any] | None) -> np.ndarray:
    """The training means of the design columns from the fitted pipeline and a training profile.

    ``profile`` is ``LeadScorer.reference["features"]`` (``scoring.reference_profile`` of the
    training window). Standardised columns: 0, the mean the scaler removed from the imputed
    training rows. One-hot columns: the shares of the profile's levels, missing values counted
    as the imputer's level and levels the model does not know as the model scores them; a
    categorical column without a profile takes its imputed (most frequent) level as background.
    """
    profile = profile or {}
    estimator = model.pipeline[-1]
    means = np.zeros(np.asarray(estimator.coef_).shape[-1], dtype=np.float64)
    known = getattr(model, "categories", {}) or {}
    for block in _blocks(model):
        stop = block.start + sum(block.widths)
        last = block.last
        if isinstance(last, StandardScaler):
            if not last.with_mean and last.mean_ is not None:
                means[block.start : stop] = last.mean_ / last.scale_
            continue  # with_mean: the training mean of every scaled column is 0
        if not isinstance(last, OneHotEncoder):
            logger.warning(
                "logistic explanations: no training means for %s; contributions are measured from 0",
                ", ".join(block.columns),
            )
            continue
        offset = block.start
        for position, (name, width) in enumerate(zip(block.columns, block.widths, strict=True)):
            entry = profile.get(name) or {}
            shares = dict(entry.get("shares") or {}) if entry.get("kind") == "categorical" else {}
            if not shares:
                logger.warning(
                    "logistic explanations: %s has no training profile; its most frequent level is the base",
                    name,
                )
                shares = {MISSING: 1.0}
            by_text = {str(level): level for level in known.get(name, [])}
            values = [np.nan if key == MISSING else by_text.get(str(key), np.nan) for key in shares]
            probe = pd.DataFrame(
                {column: pd.Series([np.nan] * len(values), dtype=object) for column in block.columns}
            )
            probe[name] = pd.Series(values, dtype=object)
            encoded = block.transformer.transform(probe)
            encoded = encoded.toarray() if sp.issparse(encoded) else np.asarray(encoded)
            own = sum(block.widths[:position])
            weights = np.fromiter(shares.values(), dtype=np.float64, count=len(shares))
            means[offset : offset + width] = weights @ encoded[:, own : own + width]
            offset += width
    return means


@dataclass
class LinearExplainer:
    """Exact linear SHAP of a fitted logistic pipeline: plain arrays, cheap to rebuild and to pickle."""

    feature_names: list[str]
    owner: np.ndarray  # (design columns,) index of the feature each design column belongs to
    coef: np.ndarray  # (design columns,) the regression's coefficients
    means: np.ndarray  # (design columns,) training means of the design columns
    intercept: float
    estimator: Any = None  # the fitted LogisticRegression: its own decision_function gives the margin

    @classmethod
    def from_model(cls, model: LogRegModel, means: np.ndarray | None = None) -> LinearExplainer:
        """The explainer of ``model`` with these design means (default: zeros, i.e. measured from 0)."""
        estimator = model.pipeline[-1]
        coefficients = np.asarray(estimator.coef_, dtype=np.float64)
        if coefficients.ndim != 2 or coefficients.shape[0] != 1:
            raise LeadmlError("the logistic model is not a binary classifier: nothing to explain")
        coef = coefficients[0].copy()
        index = {name: i for i, name in enumerate(model.feature_names)}
        owner = np.full(coef.shape[0], -1, dtype=np.int64)
        for block in _blocks(model):
            missing = [name for name in block.columns if name not in index]
            if missing:
                raise LeadmlError(f"the logistic pipeline uses columns that are not features: {missing}")
            owner[block.start : block.start + sum(block.widths)] = np.repeat(
                [index[name] for name in block.columns], block.widths
            )
        if (owner < 0).any():
            raise LeadmlError("some design columns of the logistic pipeline belong to no feature")
        if means is None:
            means = np.zeros_like(coef)
        means = np.asarray(means, dtype=np.float64).reshape(-1)
        if means.shape != coef.shape:
            raise LeadmlError(
                f"{means.shape[0]} design means for {coef.shape[0]} design columns: "
                "the stored means belong to another model"
            )
        intercept = float(np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)[0])
        return cls(list(model.feature_names), owner, coef, means, intercept, estimator)

    @property
    def base_value(self) -> float:
        return self.intercept + float(self.coef @ self.means)

    def explain_design(self, design: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
        """(contributions with the base value as last column, margin) of design rows.

        The margin is the regression's own ``decision_function``; the contributions add up to it.
        """
        n_features = len(self.feature_names)
        weights = np.zeros((self.coef.shape[0], n_features), dtype=np.float64)
        weights[np.arange(self.coef.shape[0]), self.owner] = self.coef
        offset = np.bincount(self.owner, weights=self.coef * self.means, minlength=n_features)
        grouped = design @ weights  # sparse or dense design: a dense (rows x features) product
        grouped = grouped.toarray() if sp.issparse(grouped) else np.asarray(grouped, dtype=np.float64)
        out = np.empty((grouped.shape[0], n_features + 1), dtype=np.float64)
        np.subtract(grouped, offset, out=out[:, :n_features])
        out[:, n_features] = self.base_value
        if self.estimator is not None:
            margin = np.asarray(self.estimator.decision_function(design), dtype=np.float64).reshape(-1)
        else:
            margin = np.asarray(design @ self.coef, dtype=np.float64).reshape(-1) + self.intercept
        return out, margin


def attach_training_means(scorer: Any, rows: pd.DataFrame) -> None:
    """Store on ``scorer`` the design means of its logistic model over ``rows`` (the training rows).

    What ``train`` may call once the scorer exists: the explanations are then exact against
    the training rows whatever their number (without it, ``profile_design_means`` derives them
    from the training profile). Does nothing for a model that is not logistic.
    """
    if not is_linear(scorer.model):
        return
    scorer.linear_means = training_design_means(scorer.model, rows)
    scorer._linear_explainer = None
