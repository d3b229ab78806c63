"""The production model: feature preparation, model, calibrator and explainer in one object.

MLflow wraps a :class:`LeadScorer` as one pyfunc (see ``tracking.py``), so the same
artifact scores on one machine and inside Spark. Its input is the feature frame
(categoricals as text, numbers as floats); its output the calibrated probability and
the model's raw margin in log-odds.

Explanations are exact contributions in log-odds that add up to the margin: TreeSHAP for a
LightGBM model (``leadml.modelling.treeshap``), linear SHAP for the logistic one
(``leadml.modelling.linear_explain``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.errors import LeadmlError
from leadml.modelling.calibration import Calibrator
from leadml.modelling.linear_explain import LinearExplainer, design_matrix, is_linear, profile_design_means
from leadml.modelling.models import LightGBMModel, ScoringModel
from leadml.modelling.treeshap import FastTreeExplainer, booster_matrix

PROBABILITY, MARGIN = "probability", "margin"
BASE_VALUE = "base_value"
# exact TreeSHAP implementations: leadml.modelling.treeshap (default) or LightGBM's
# predict(pred_contrib=True);
# a logistic model has one exact explainer (leadml.modelling.linear_explain) whichever is named
EXPLAINERS = ("fast", "lightgbm")
GLOBAL = -1  # segment_positions' code of a row the global model scores


def segment_positions(values: pd.Series, lookup: Mapping[str, int]) -> np.ndarray:
    """Per row, the position (in ``lookup``'s values) of the segment its value belongs to, or
    :data:`GLOBAL` (a value of no segment, or missing).

    Values are compared as text (a request's ``"5"`` is the training data's 5) and looked up once
    per distinct value, not once per row: a million rows cost one factorisation.
    """
    categorical = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    per_level = [lookup.get(str(level), GLOBAL) for level in categorical.cat.categories]
    # code -1 (missing) takes the last entry: the global model
    return np.asarray([*per_level, GLOBAL], dtype=np.int64)[categorical.cat.codes.to_numpy()]


Frames = tuple[pd.DataFrame, ...]


@dataclass
class LeadScorer:
    model: ScoringModel
    calibrator: Calibrator
    feature_names: list[str]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the FeatureSettings the snapshots were built with: scoring rebuilds features the same way
    feature_settings: dict[str, Any] | None = None
    # training-window distributions of every feature and of the score, for drift (PSI) checks
    reference: dict[str, Any] = field(default_factory=dict)
    # tiers of the test window's evaluation: {method, thresholds (probability minimum per tier),
    # floor_tier, note}; what the served model tiers one lead with
    tiers: dict[str, Any] = field(default_factory=dict)
    # what the registered refit was fitted on: rows, positives, and the last as_of / order_key it
    # saw ("through"), so a later run rescores it only on rows it never saw
    trained: dict[str, Any] = field(default_factory=dict)
    # a flat table's id column ("Lead ID"): a request may name its lead by it, echoed as lead_id
    request_id: str | None = None
    # a flat table's synonyms per feature ({token: stored}, data.synonyms), applied to requests too
    request_synonyms: dict[str, dict[str, str]] = field(default_factory=dict)
    # a CRM model: the data config's contract settings the nightly job validates with (extra_features,
    # limits, missing_markers; ``leadml.data.contracts.configured_crm_contracts``), so the endpoint
    # checks a request's values by the same contracts; empty (an older model): the default contracts
    data_contract: dict[str, Any] = field(default_factory=dict)
    # a CRM model: how its leads roll up into accounts (leadml.modelling.accounts.AccountEvaluation.
    # state): the account key, the engaged threshold, the dependence correction fitted on history
    # and its test-window figures; empty: no account scores (a flat table, an older model)
    accounts: dict[str, Any] = field(default_factory=dict)
    # segment models (data.segments) the rows of their segments are scored by; None: the global
    # model scores every row. ``model`` and ``calibrator`` stay the global model's
    segments: SegmentRouting | None = None
    # logistic model only: the training means of its design columns (linear_explain.attach_training_means);
    # None: derived from the fitted pipeline and ``reference`` (linear_explain.profile_design_means)
    linear_means: np.ndarray | None = field(default=None, repr=False, compare=False)
    # built on first use from the booster; never pickled (the tables are large and cheap to rebuild)
    _fast_explainer: Any = field(default=None, init=False, repr=False, compare=False)
    # built on first use from the logistic pipeline; never pickled (rebuilt in milliseconds)
    _linear_explainer: Any = field(default=None, init=False, repr=False, compare=False)
    # what the single-request path compiles once per loaded model (leadml.scoring.request_plan);
    # never pickled
    _request_plan: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fast_explainer"] = None
        state["_linear_explainer"] = None
        state["_request_plan"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"segments": None, **state})  # a scorer pickled before segments existed

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        routing = getattr(self, "segments", None)  # None also for a scorer pickled before segments
        if routing is not None:
            return routing.route(self, frame, lambda scorer, rows: (scorer._own_predict(rows),))[0]
        return self._own_predict(frame)

    def _own_predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self._predicted(self.model.predict_margin(frame), frame.index)

    def predict_explained(
        self, frame: pd.DataFrame, method: str = "fast"
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:meth:`predict` and :meth:`explain` in one pass over the trees (or the design rows).

        With segment models, each segment's rows by its own model (the contributions add up to
        that model's margin), in the rows' order.
        """
        routing = getattr(self, "segments", None)
        if routing is not None:
            predicted, contributions = routing.route(
                self, frame, lambda scorer, rows: scorer._own_predict_explained(rows, method)
            )
            return predicted, contributions
        return self._own_predict_explained(frame, method)

    def _own_predict_explained(self, frame: pd.DataFrame, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:meth:`predict_explained` by this scorer's own model, whatever its segments.

        Exact TreeSHAP is additive, so the margin is the row sum of the contributions (the
        booster's own margin within 1e-12) and the trees are not walked a second time. A
        logistic model's margin is its own (:meth:`predict`'s, bit for bit), from the same design rows.
        """
        if is_linear(self.model):
            self._check_method(method)
            contributions, margin = self._linear_explained(frame)
            return self._predicted(margin, frame.index), contributions
        contributions = self._own_explain(frame, method)
        margin = contributions.to_numpy(dtype=np.float64).sum(axis=1)
        return self._predicted(margin, frame.index), contributions

    def _predicted(self, margin: np.ndarray, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame({PROBABILITY: self.calibrator.predict_proba(margin), MARGIN: margin}, index=index)

    @property
    def can_explain(self) -> bool:
        own = isinstance(self.model, LightGBMModel) or is_linear(self.model)
        return own and all(scorer.can_explain for scorer in self.segment_scorers())

    def segment_scorers(self) -> list[LeadScorer]:
        """The scorers of the segments with a model of their own (empty: the global model only)."""
        segments = getattr(self, "segments", None)  # a scorer pickled before the field existed
        return list(segments.scorers.values()) if segments is not None else []

    @property
    def explanation_method(self) -> str | None:
        """How the contributions are computed, in words (None: this model has no explainer)."""
        if isinstance(self.model, LightGBMModel):
            return "exact TreeSHAP"
        if is_linear(self.model):
            return "exact linear SHAP, each coefficient times the distance from its training mean"
        return None

    def explain(self, frame: pd.DataFrame, method: str = "fast") -> pd.DataFrame:
        """Exact contributions in log-odds, one column per feature plus ``base_value``.

        Per row, base value plus contributions equals the model's margin. For LightGBM, TreeSHAP:
        ``fast`` and ``lightgbm`` give the same numbers (within 1e-12); ``fast`` is many times
        quicker. For the logistic model, linear SHAP against the training rows
        (``leadml.modelling.linear_explain``) whichever ``method`` is named. With segment models,
        each segment's rows by its own model.
        """
        routing = getattr(self, "segments", None)
        if routing is not None:
            return routing.route(self, frame, lambda scorer, rows: (scorer._own_explain(rows, method),))[0]
        return self._own_explain(frame, method)

    def _own_explain(self, frame: pd.DataFrame, method: str) -> pd.DataFrame:
        if is_linear(self.model):
            self._check_method(method)
            return self._linear_explained(frame)[0]
        if not isinstance(self.model, LightGBMModel):
            raise TypeError(f"{type(self.model).__name__} has no explainer")
        self._check_method(method)
        prepared = self.model.prepare(frame)
        if method == "fast":
            contributions = self._fast().shap_values(booster_matrix(prepared))
        else:
            contributions = self.model.booster.predict(
                prepared, pred_contrib=True, num_iteration=self.model.best_iteration
            )
        columns = [*self.feature_names, BASE_VALUE]
        # a random-forest booster's raw contributions add up its trees: 1/trees makes them log-odds
        scaled = np.asarray(contributions, dtype=np.float64) * self.model.margin_scale
        return pd.DataFrame(scaled, columns=columns, index=frame.index)

    def prepare_explainer(self) -> None:
        """Build the explainer now (tree tables, or the linear model's means) rather than on first use."""
        if isinstance(self.model, LightGBMModel):
            self._fast()
        elif is_linear(self.model):
            self._linear()
        for scorer in self.segment_scorers():
            scorer.prepare_explainer()

    def tree_explainer(self) -> FastTreeExplainer:
        """The fast TreeSHAP of a LightGBM model (built on first use): for rows already in the
        booster's float layout (:func:`~leadml.modelling.treeshap.booster_matrix`), raw-score units."""
        if not isinstance(self.model, LightGBMModel):
            raise TypeError(f"{type(self.model).__name__} has no tree explainer")
        return self._fast()

    @staticmethod
    def _check_method(method: str) -> None:
        if method not in EXPLAINERS:
            raise LeadmlError(f"score.explainer must be one of {list(EXPLAINERS)}, got {method!r}")

    def _linear_explained(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        assert is_linear(self.model)
        values, margin = self._linear().explain_design(design_matrix(self.model, frame))
        columns = [*self.feature_names, BASE_VALUE]
        return pd.DataFrame(values, columns=columns, index=frame.index), margin

    def _linear(self) -> LinearExplainer:
        if getattr(self, "_linear_explainer", None) is None:
            means = getattr(self, "linear_means", None)  # a scorer pickled before the field existed
            profile = (getattr(self, "reference", None) or {}).get("features")
            if means is None:
                means = profile_design_means(self.model, profile)
                if not profile:  # not kept: the training profile may be set later (train sets it last)
                    return LinearExplainer.from_model(self.model, means)
            self._linear_explainer = LinearExplainer.from_model(self.model, means)
        return self._linear_explainer

    def _fast(self) -> FastTreeExplainer:
        if getattr(self, "_fast_explainer", None) is None:
            assert isinstance(self.model, LightGBMModel)
            booster, categories = self.model.booster, self.model.categories
            # the booster's category codes must be ours, or the matrix would mean something else
            trained = [list(levels) for levels in (booster.pandas_categorical or [])]
            ours = [list(categories[name]) for name in self.model.feature_names if name in categories]
            if trained != ours:
                raise LeadmlError(
                    "the booster's categorical levels differ from the model's: use score.explainer=lightgbm"
                )
            self._fast_explainer = FastTreeExplainer.from_booster(booster, self.model.best_iteration)
        return self._fast_explainer


@dataclass
class SegmentRouting:
    """The segment models a scorer routes to (``data.segments``): rows whose ``column`` holds a
    value of a chosen segment are scored by that segment's scorer, every other row by the global
    one. Only segments whose own model beat the global one on their test rows are here."""

    column: str
    segment_of: dict[str, str]  # value of ``column`` (as text) -> segment name, chosen segments only
    scorers: dict[str, LeadScorer]  # segment name -> its scorer (no routing of its own)

    def route(
        self, scorer: LeadScorer, frame: pd.DataFrame, score: Callable[[LeadScorer, pd.DataFrame], Frames]
    ) -> Frames:
        """``score`` of each block of rows by the scorer of its segment (``scorer`` for the global
        rows), put back together in ``frame``'s row order and index.

        Vectorised: one split of the rows by segment, one call of ``score`` per segment present,
        one scatter of each block's values back into place; never a call per row.
        """
        names = list(self.scorers)
        which = segment_positions(
            frame[self.column],
            {value: names.index(name) for value, name in self.segment_of.items() if name in self.scorers},
        )
        blocks = [(scorer, np.flatnonzero(which == GLOBAL))]
        blocks += [(self.scorers[name], np.flatnonzero(which == code)) for code, name in enumerate(names)]
        blocks = [(owner, rows) for owner, rows in blocks if len(rows)]
        if len(blocks) <= 1:  # every row in one segment (or none): no split, no copy
            owner = blocks[0][0] if blocks else scorer
            return score(owner, frame)
        parts = [(rows, score(owner, frame.iloc[rows])) for owner, rows in blocks]
        return tuple(
            _scattered([(rows, frames[k]) for rows, frames in parts], frame.index)
            for k in range(len(parts[0][1]))
        )


def _scattered(blocks: list[tuple[np.ndarray, pd.DataFrame]], index: pd.Index) -> pd.DataFrame:
    """One frame of ``index``'s rows from blocks of them (their positions, their values), in the
    columns of the first block: every block holds the same float columns."""
    columns = blocks[0][1].columns
    values = np.empty((len(index), len(columns)), dtype=np.float64)
    for rows, block in blocks:
        same = block if block.columns.equals(columns) else block.reindex(columns=columns, fill_value=0.0)
        values[rows] = same.to_numpy(dtype=np.float64)
    return pd.DataFrame(values, columns=columns, index=index)


def as_model_input(frame: pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """Feature columns as the pyfunc's input example holds them: categoricals as text, numbers as floats."""
    out = {}
    for name in feature_names:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column.dtype):
            out[name] = column.astype(object).where(column.notna(), None).astype("object")
        else:
            out[name] = column.astype("float64")
    return pd.DataFrame(out, index=frame.index)
