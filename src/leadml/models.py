"""Models that turn feature snapshots into a conversion score.

Every model has ``predict_margin(frame)`` (log-odds) and ``predict_proba(frame)`` (the
probability of the positive class, one value per row). Feature columns are every column
of the training frame except the id, time, order and label columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from leadml import schema as s
from leadml.errors import LeadmlError, known_settings
from leadml.features import FeatureMeta

if TYPE_CHECKING:  # leadml.points builds on this module; it is imported where it is used
    from leadml.points import PointsSettings

logger = logging.getLogger(__name__)

NON_FEATURE_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.AS_OF, s.ORDER_KEY, s.LABEL, s.DUP_GROUP)
PROBABILITY_FLOOR = 1e-6
EARLY_STOPPING_METRICS: tuple[str, ...] = ("auc", "binary_logloss")


class ScoringModel(Protocol):
    feature_names: list[str]

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray: ...

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class LightGBMSettings:
    name: str = "lightgbm"
    n_estimators: int = 2000  # upper bound; early stopping picks the number used
    learning_rate: float = 0.03
    num_leaves: int = 31
    min_child_samples: int = 100
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
    seed: int = 0
    n_jobs: int = 2

    def __post_init__(self) -> None:
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

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> LogRegSettings:
        return cls(**known_settings(cls, mapping, "model"))


ModelSettings = LightGBMSettings | LogRegSettings


def model_settings_from_mapping(
    mapping: Mapping[str, Any], points: Mapping[str, Any] | None = None, data_name: str | None = None
) -> ModelSettings | PointsSettings:
    """Settings for the model named by ``mapping["name"]``.

    ``points`` is the data config's ``points`` block (``data.points``): model=points takes its
    rules and tiers from there (``data_name`` names the data config in its error); others ignore it.
    """
    name = mapping.get("name", "lightgbm")
    if name == "points":
        from leadml.points import PointsSettings

        return PointsSettings.from_mapping(mapping, points, data_name)
    kinds: dict[str, type[LightGBMSettings] | type[LogRegSettings]] = {
        "lightgbm": LightGBMSettings,
        "logreg": LogRegSettings,
    }
    if name not in kinds:
        raise LeadmlError(f"model.name must be one of {sorted([*kinds, 'points'])}, got {name!r}")
    return kinds[name].from_mapping(mapping)


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
    early_stopping_index: pd.Index = field(default_factory=pd.Index)  # training rows held for early stopping

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        return prepare_features(frame, self.feature_names, self.categories)

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            self.booster.predict(self.prepare(frame), raw_score=True, num_iteration=self.best_iteration),
            dtype=np.float64,
        )

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return expit(self.predict_margin(frame))


def prepare_features(
    frame: pd.DataFrame, feature_names: list[str], categories: Mapping[str, list[Any]]
) -> pd.DataFrame:
    """The model's columns in training order and dtypes; unseen categories become NaN."""
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise LeadmlError(f"scoring data lacks feature column(s) {missing}")
    prepared: dict[str, Any] = {}
    for name in feature_names:
        column = frame[name]
        if name in categories:
            values = column.astype(object).where(column.notna(), None)
            prepared[name] = pd.Categorical(values, categories=categories[name])
        else:
            prepared[name] = pd.to_numeric(column, errors="coerce").astype(np.float64).to_numpy()
    return pd.DataFrame(prepared, index=frame.index)


def fit_lightgbm(
    train: pd.DataFrame, settings: LightGBMSettings, metadata: Mapping[str, FeatureMeta] | None = None
) -> LightGBMModel:
    """Gradient-boosted trees with native categoricals and early stopping on the latest training rows."""
    started = time.perf_counter()
    names = feature_columns(train)
    categories = {c: train[c].cat.categories.tolist() for c in categorical_columns(train, names)}
    fit_rows, stop_rows = early_stopping_split(train, settings.early_stopping_fraction)
    for part_name, part in (("fit", fit_rows), ("early-stopping", stop_rows)):
        if part[s.LABEL].nunique() < 2:
            raise LeadmlError(f"the {part_name} part of the training window needs both labels")
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": settings.early_stopping_metric,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_child_samples": settings.min_child_samples,
        "feature_fraction": settings.feature_fraction,
        "bagging_fraction": settings.bagging_fraction,
        "bagging_freq": settings.bagging_freq if settings.bagging_fraction < 1 else 0,
        "lambda_l2": settings.lambda_l2,
        "seed": settings.seed,
        "num_threads": settings.n_jobs,
        "deterministic": True,
        "verbosity": -1,
    }
    if settings.monotone_constraints:
        params["monotone_constraints"] = monotone_vector(names, metadata or {}, set(categories))
    fit_set = lgb.Dataset(
        prepare_features(fit_rows, names, categories),
        label=fit_rows[s.LABEL].to_numpy(),
        categorical_feature=list(categories) or "auto",
        free_raw_data=True,
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
    pipeline.fit(model.prepare(train), train[s.LABEL].to_numpy())
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


def fit_model(
    train: pd.DataFrame,
    settings: ModelSettings | PointsSettings,
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> ScoringModel:
    """Fit the model the settings name."""
    if isinstance(settings, LightGBMSettings):
        return fit_lightgbm(train, settings, metadata)
    if isinstance(settings, LogRegSettings):
        return fit_logreg(train, settings)
    from leadml.points import fit_points

    return fit_points(train, settings.rules, settings.tiers)
