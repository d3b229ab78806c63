"""Models that turn feature snapshots into a conversion score.

Every model has ``predict_margin(frame)`` (log-odds) and ``predict_proba(frame)`` (the
probability of the positive class, one value per row). Feature columns are every column
of the training frame except the id, time, order and label columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, known_settings
from leadml.machine import thread_count

logger = logging.getLogger(__name__)

NON_FEATURE_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.AS_OF, s.ORDER_KEY, s.LABEL, s.DUP_GROUP)
PROBABILITY_FLOOR = 1e-6
EARLY_STOPPING_METRICS: tuple[str, ...] = ("auc", "binary_logloss")
BOOSTING_MODES: tuple[str, ...] = ("gbdt", "rf")


class ScoringModel(Protocol):
    feature_names: list[str]

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray: ...

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...


def threads(setting: int | str) -> int:
    """``model.n_jobs`` as a thread count: ``auto`` is :func:`leadml.machine.available_cpus`."""
    return thread_count(setting, "model.n_jobs")


@dataclass(frozen=True)
class LightGBMSettings:
    name: str = "lightgbm"
    n_estimators: int = 2000  # upper bound; early stopping picks the number used
    learning_rate: float = 0.03
    # None ("auto" in the config): sized from the training rows' positives (:func:`sized_lightgbm`)
    num_leaves: int | None = 31
    min_child_samples: int | None = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 100
    early_stopping_fraction: float = 0.2
    # the booster only has to rank (the calibrator maps margins to probabilities), so by default
    # trees are added while the ranking improves; log loss keeps rewarding sharper margins long
    # after the ranking stopped improving
    early_stopping_metric: str = "auc"
    monotone_constraints: bool = False
    # LightGBM's extremely randomised trees (random thresholds) and random-forest mode (averaged
    # trees on bagged rows): both read by the fast explainer like any LightGBM tree
    extra_trees: bool = False
    boosting: str = "gbdt"
    # smoothing of categorical splits (LightGBM's cat_smooth, min_data_per_group)
    cat_smooth: float = 10.0
    min_data_per_group: int = 100
    # rows weighted by recency, halving every this many days of ``as_of`` (units of ``order_key``
    # without dates) back from the latest training row; 0: every row weighs the same. Chosen by
    # the search on time-ordered folds (``selection.recency``)
    recency_half_life: float = 0.0
    # tune within selection's budget (Optuna, time-ordered validation); false: these settings only
    search: bool = True
    seed: int = 0
    # threads: auto (the CPUs this process may use, see available_cpus) or a number
    n_jobs: int | str = "auto"

    def __post_init__(self) -> None:
        threads(self.n_jobs)  # a bad value stops here, naming the setting
        for name in ("num_leaves", "min_child_samples"):
            if getattr(self, name) == "auto":
                object.__setattr__(self, name, None)
        if self.boosting not in BOOSTING_MODES:
            raise LeadmlError(f"model.boosting must be one of {BOOSTING_MODES}, got {self.boosting!r}")
        if not 0 < self.early_stopping_fraction < 1:
            raise LeadmlError("model.early_stopping_fraction must be in (0, 1)")
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise LeadmlError(
                f"model.early_stopping_metric must be one of {EARLY_STOPPING_METRICS}, "
                f"got {self.early_stopping_metric!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> LightGBMSettings:
        return cls(**known_settings(cls, mapping, "model"))


@dataclass(frozen=True)
class LogRegSettings:
    name: str = "logreg"
    C: float = 1.0  # inverse L2 strength on standardised features
    max_iter: int = 2000
    min_frequency: int = 20  # rarer categories share one "infrequent" column
    # fit on a random sample of at most this many rows: a linear model's coefficients settle
    # long before a million rows, while its dense one-hot design matrix grows with every row
    max_rows: int = 500_000
    seed: int = 0
    # Newton steps with a Cholesky solve: a handful of iterations where lbfgs needs ~80 on the
    # one-hot design (same optimum; 3.4 s -> 2.0 s per fit on 60,000 snapshots)
    solver: str = "newton-cholesky"
    # as LightGBMSettings.recency_half_life (chosen on the validation folds by model selection)
    recency_half_life: float = 0.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> LogRegSettings:
        return cls(**known_settings(cls, mapping, "model"))


ModelSettings = LightGBMSettings | LogRegSettings


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column not in NON_FEATURE_COLUMNS]


def categorical_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]


def early_stopping_split(train: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit rows, early-stopping rows): the latest ``fraction`` of the training window.

    Ordered by ``as_of``, else ``order_key``, else row order. Whole dates stay on one
    side so the early-stopping rows are strictly later than every fit row.
    """
    if s.AS_OF in train.columns or s.ORDER_KEY in train.columns:
        position = train[s.AS_OF] if s.AS_OF in train.columns else train[s.ORDER_KEY]
        cut = position.sort_values().iloc[int(len(train) * (1 - fraction))]
        is_late = (position >= cut).to_numpy()
        if is_late.all():  # a single date: fall back to row order
            is_late = np.arange(len(train)) >= int(len(train) * (1 - fraction))
    else:
        is_late = np.arange(len(train)) >= int(len(train) * (1 - fraction))
    return train[~is_late], train[is_late]


@dataclass
class LightGBMModel:
    booster: lgb.Booster
    feature_names: list[str]
    categories: dict[str, list[Any]]  # training categories per categorical column; others map to NaN
    best_iteration: int
    fit_report: dict[str, Any] = field(default_factory=dict)  # JSON-ready figures of the fit
    early_stopping_index: pd.Index = field(
        default_factory=lambda: pd.Index([])
    )  # training rows held for early stopping

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        return prepare_features(frame, self.feature_names, self.categories)

    @property
    def margin_scale(self) -> float:
        """1, or 1/trees for a random-forest booster (see :func:`margin_scale`)."""
        return margin_scale(self.booster, self.best_iteration)

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray:
        raw = self.booster.predict(self.prepare(frame), raw_score=True, num_iteration=self.best_iteration)
        return np.asarray(raw, dtype=np.float64) * self.margin_scale

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return expit(self.predict_margin(frame))


def prepare_features(
    frame: pd.DataFrame, feature_names: list[str], categories: Mapping[str, list[Any]]
) -> pd.DataFrame:
    """The model's columns in training order and dtypes; unseen categories become NaN.

    Float columns are taken as they are, without a copy (read-only views of ``frame``'s own
    arrays, which pandas copies on write): the development rows of a million leads are 3 GB of
    floats, and a copy of them per fit, search and prediction came on top of LightGBM's own.
    """
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise LeadmlError(f"scoring data lacks feature column(s) {missing}")
    prepared: dict[str, Any] = {}
    for name in feature_names:
        column = frame[name]
        if name in categories:
            values = column.astype(object)
            # Unseen values become missing here: pandas 4 refuses them in the Categorical itself.
            values = values.where(column.notna() & values.isin(categories[name]), None)
            prepared[name] = pd.Categorical(values, categories=categories[name])
        elif column.dtype == np.float64:
            prepared[name] = column.to_numpy()
        else:
            prepared[name] = pd.to_numeric(column, errors="coerce").astype(np.float64).to_numpy()
    # copy=False: one block per column rather than the floats consolidated into a new 2-d block
    return pd.DataFrame(prepared, index=frame.index, copy=False)


def margin_scale(booster: lgb.Booster, iterations: int | None = None) -> float:
    """What turns a booster's raw score into log-odds: 1, or 1/trees in random-forest mode.

    LightGBM's ``raw_score`` (and ``pred_contrib``) add up the trees even when it averages them for
    probabilities (``boosting="rf"``); scaling by 1/trees makes the margin and every contribution
    log-odds again, and keeps them additive.
    """
    if booster.params.get("boosting", "gbdt") not in ("rf", "random_forest"):
        return 1.0
    trees = booster.current_iteration() if not iterations or iterations <= 0 else iterations
    return 1.0 / max(1, min(trees, booster.current_iteration()))


def sized_lightgbm(settings: LightGBMSettings, rows: int, positives: int) -> LightGBMSettings:
    """``settings`` with ``num_leaves`` and ``min_child_samples`` left to "auto" sized from the data.

    The leaf size follows the rarer class (a twentieth of it, 10 to 300 rows), so a few hundred
    leads still get splits while hundreds of thousands get the smooth leaves that generalise;
    fewer than 1,000 of the rarer class get shallower trees (7 leaves instead of 15).
    """
    rarer = max(1, min(positives, rows - positives))
    sized = {}
    if settings.min_child_samples is None:
        sized["min_child_samples"] = int(np.clip(round(rarer / 20), 10, 300))
    if settings.num_leaves is None:
        sized["num_leaves"] = 15 if rarer >= 1000 else 7
    return replace(settings, **sized) if sized else settings


def lightgbm_params(
    settings: LightGBMSettings,
    names: list[str],
    categories: Mapping[str, list[Any]],
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> dict[str, Any]:
    """LightGBM's parameters for ``settings`` (sized first: see :func:`sized_lightgbm`)."""
    if settings.num_leaves is None or settings.min_child_samples is None:
        raise LeadmlError("lightgbm settings must be sized (sized_lightgbm) before fitting")
    rf = settings.boosting == "rf"
    bagging = settings.bagging_fraction < 1 or rf
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": settings.early_stopping_metric,
        "boosting": settings.boosting,
        "extra_trees": settings.extra_trees,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_child_samples": settings.min_child_samples,
        "feature_fraction": settings.feature_fraction,
        # random-forest mode needs bagging
        "bagging_fraction": min(settings.bagging_fraction, 0.9) if rf else settings.bagging_fraction,
        "bagging_freq": max(settings.bagging_freq, 1) if bagging else 0,
        "lambda_l2": settings.lambda_l2,
        "cat_smooth": settings.cat_smooth,
        "min_data_per_group": settings.min_data_per_group,
        "seed": settings.seed,
        "num_threads": threads(settings.n_jobs),
        "deterministic": True,
        "verbosity": -1,
    }
    if settings.monotone_constraints:
        params["monotone_constraints"] = monotone_vector(names, metadata or {}, set(categories))
    return params


def training_categories(train: pd.DataFrame, names: list[str]) -> dict[str, list[Any]]:
    return {c: train[c].cat.categories.tolist() for c in categorical_columns(train, names)}


def training_dataset(
    rows: pd.DataFrame,
    names: list[str],
    categories: Mapping[str, list[Any]],
    weight: np.ndarray | None = None,
) -> lgb.Dataset:
    """LightGBM's view of ``rows``: the model's columns and the label, categoricals native."""
    return lgb.Dataset(
        prepare_features(rows, names, categories),
        label=rows[s.LABEL].to_numpy(),
        weight=weight,
        categorical_feature=list(categories) or "auto",
        free_raw_data=True,
    )


EPOCH = pd.Timestamp(0, tz="UTC")


def time_axis(rows: pd.DataFrame) -> np.ndarray | None:
    """Each row's place in time as a number: days of ``as_of``, else ``order_key``, else None."""
    if s.AS_OF in rows.columns:
        days = (pd.to_datetime(rows[s.AS_OF], utc=True) - EPOCH) / pd.Timedelta(days=1)
        return np.asarray(days, dtype=np.float64)
    if s.ORDER_KEY in rows.columns:
        return np.asarray(pd.to_numeric(rows[s.ORDER_KEY], errors="coerce"), dtype=np.float64)
    return None


def recency_weights_of(axis: np.ndarray | None, half_life: float) -> np.ndarray | None:
    """Weights halving every ``half_life`` back from the latest row of ``axis``, mean 1.

    Lead populations drift (campaigns, markets, a CRM's own process), and the latest rows say
    most about tonight's leads; the half-life is chosen on time-ordered validation folds, where
    0 (every row weighs the same) competes with it. The mean is 1 so that regularisation and leaf
    sizes keep their meaning. None: unweighted.
    """
    if not half_life or axis is None or len(axis) == 0 or not np.isfinite(axis).any():
        return None
    age = np.nan_to_num(np.nanmax(axis) - axis, nan=0.0)
    weights = np.exp2(-age / half_life)
    return np.asarray(weights / weights.mean(), dtype=np.float64)


def recency_weights(rows: pd.DataFrame, half_life: float) -> np.ndarray | None:
    """:func:`recency_weights_of` the rows' time axis (None without one or without a half-life)."""
    return recency_weights_of(time_axis(rows), half_life) if half_life else None


def split_trees(booster: lgb.Booster, iterations: int) -> int:
    """How many of the first ``iterations`` trees split at least once (0: a constant model)."""
    trees = booster.dump_model(num_iteration=iterations)["tree_info"]
    return sum(1 for tree in trees if tree.get("num_leaves", 1) > 1)


def fit_lightgbm_rounds(
    train: pd.DataFrame,
    settings: LightGBMSettings,
    rounds: int,
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> LightGBMModel:
    """LightGBM on every row of ``train`` with a fixed number of trees (chosen by validation before).

    The refit of a selected procedure: no rows are held back, because the number of trees was
    already chosen on time-ordered validation folds (:mod:`leadml.modelling.selection`).
    """
    started = time.perf_counter()
    names = feature_columns(train)
    categories = training_categories(train, names)
    positives = int(train[s.LABEL].sum())
    if positives in (0, len(train)):
        raise LeadmlError("the training rows need both labels")
    settings = sized_lightgbm(settings, len(train), positives)
    params = lightgbm_params(settings, names, categories, metadata)
    weight = recency_weights(train, settings.recency_half_life)
    booster = lgb.train(
        params, training_dataset(train, names, categories, weight), num_boost_round=max(1, int(rounds))
    )
    report = {
        "fit_rows": len(train),
        "trees": int(rounds),
        "split_trees": split_trees(booster, int(rounds)),
        "num_leaves": settings.num_leaves,
        "min_child_samples": settings.min_child_samples,
        "fit_seconds": time.perf_counter() - started,
    }
    logger.info("lightgbm: %d trees on %d rows, %.1fs", rounds, len(train), report["fit_seconds"])
    # the booster kept its binned training rows (0.4 GB at a million leads) as long as the model lived
    booster.free_dataset()
    return LightGBMModel(booster, names, categories, int(rounds), report, pd.Index([]))


def fit_lightgbm(
    train: pd.DataFrame, settings: LightGBMSettings, metadata: Mapping[str, FeatureMeta] | None = None
) -> LightGBMModel:
    """Gradient-boosted trees with native categoricals and early stopping on the latest training rows."""
    started = time.perf_counter()
    names = feature_columns(train)
    categories = training_categories(train, names)
    fit_rows, stop_rows = early_stopping_split(train, settings.early_stopping_fraction)
    for part_name, part in (("fit", fit_rows), ("early-stopping", stop_rows)):
        if part[s.LABEL].nunique() < 2:
            raise LeadmlError(f"the {part_name} part of the training window needs both labels")
    settings = sized_lightgbm(settings, len(fit_rows), int(fit_rows[s.LABEL].sum()))
    params = lightgbm_params(settings, names, categories, metadata)
    fit_set = training_dataset(
        fit_rows, names, categories, recency_weights(fit_rows, settings.recency_half_life)
    )
    stop_set = lgb.Dataset(
        prepare_features(stop_rows, names, categories), label=stop_rows[s.LABEL].to_numpy(), reference=fit_set
    )
    booster = lgb.train(
        params,
        fit_set,
        num_boost_round=settings.n_estimators,
        valid_sets=[stop_set],
        valid_names=["early_stopping"],
        callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
    )
    best_iteration = booster.best_iteration or booster.current_iteration()
    report = {
        "fit_rows": len(fit_rows),
        "early_stopping_rows": len(stop_rows),
        "best_iteration": best_iteration,
        "early_stopping_metric": settings.early_stopping_metric,
        "early_stopping_score": float(booster.best_score["early_stopping"][settings.early_stopping_metric]),
        "split_trees": split_trees(booster, best_iteration),
        "fit_seconds": time.perf_counter() - started,
    }
    logger.info(
        "lightgbm: %d trees (of at most %d), early-stopping %s %.4f on %d rows, %.1fs",
        best_iteration,
        settings.n_estimators,
        settings.early_stopping_metric,
        report["early_stopping_score"],
        len(stop_rows),
        report["fit_seconds"],
    )
    return LightGBMModel(booster, names, categories, best_iteration, report, stop_rows.index)


def monotone_vector(
    names: list[str], metadata: Mapping[str, FeatureMeta], categorical: set[str]
) -> list[int]:
    """LightGBM's monotone_constraints aligned with ``names``; categoricals are never constrained."""
    return [
        0 if name in categorical or name not in metadata else int(metadata[name].monotone) for name in names
    ]


@dataclass
class LogRegModel:
    pipeline: Pipeline
    feature_names: list[str]
    categories: dict[str, list[Any]]

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        prepared = prepare_features(frame, self.feature_names, self.categories)
        # sklearn's imputers want plain object columns with np.nan for missing categories
        for name in self.categories:
            prepared[name] = prepared[name].astype(object).where(prepared[name].notna(), np.nan)
        return prepared

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.pipeline.decision_function(self.prepare(frame)), dtype=np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self.prepare(frame))[:, 1]


def fit_logreg(train: pd.DataFrame, settings: LogRegSettings) -> LogRegModel:
    """Standardised logistic regression with one-hot categoricals: the transparent baseline."""
    started = time.perf_counter()
    names = feature_columns(train)
    categorical = categorical_columns(train, names)
    numeric = [name for name in names if name not in categorical]
    categories = {c: train[c].cat.categories.tolist() for c in categorical}
    numeric_steps = Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    )
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            (
                "encode",
                OneHotEncoder(handle_unknown="ignore", min_frequency=settings.min_frequency),
            ),
        ]
    )
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)]
                ),
            ),
            ("model", LogisticRegression(C=settings.C, max_iter=settings.max_iter, solver=settings.solver)),
        ]
    )
    model = LogRegModel(pipeline, names, categories)
    if len(train) > settings.max_rows:
        train = train.sample(settings.max_rows, random_state=settings.seed)
        logger.info("logreg: fitting on a random %d of the training rows", settings.max_rows)
    weight = recency_weights(train, settings.recency_half_life)
    pipeline.fit(model.prepare(train), train[s.LABEL].to_numpy(), model__sample_weight=weight)
    logger.info("logreg: %d features fitted in %.1fs", len(names), time.perf_counter() - started)
    return model


@dataclass
class BaseRate:
    """Predicts the training positive rate for every row: the floor every model must beat."""

    rate: float
    feature_names: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, train: pd.DataFrame) -> BaseRate:
        return cls(float(train[s.LABEL].mean()))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        clipped = float(np.clip(self.rate, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))
        return np.full(len(frame), clipped)

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray:
        return logit(self.predict_proba(frame))
