"""Model selection in time: candidates compete on validation folds before the test window is seen.

The procedure that is evaluated on the test window and then refitted for production:

1. **Folds.** The latest ``folds x fold_share`` of the development rows (everything before the
   test window) are cut into ``folds`` consecutive blocks; each block is predicted by a model fitted
   on every row before it (an expanding window, like the production model predicting tonight's
   leads). A lead (or a group of exact copies) belongs to the block of its first row, so its later
   rows never validate a model that saw its earlier ones. Data without time gets random blocks
   of leads instead. Where the positive rate moved across the blocks, the mean over them weighs
   each ``fold_weighting`` times the one before it (:func:`fold_weights`); else equally.
2. **Search.** LightGBM is tuned by Optuna (TPE) within a bounded number of trials and seconds on
   the weighted mean validation ROC AUC over the folds; the number of trees is the best iteration
   of the weighted mean validation curve (one booster per fold, grown in lockstep). The space
   covers gradient boosting, LightGBM's extremely randomised trees and its random-forest mode,
   leaf sizes and regularisation. The first trial is always the configured settings, sized to the
   data. Then the best settings are tried with recency weighting (rows halving in weight every
   half-life back from the latest), in a quarter of the time kept for it; where the rate is stable
   a weighted setting must be ahead beyond one standard error to be kept.
3. **Selection.** Logistic regression, with the recency weighting that scores best, is scored on
   the same folds; the simpler model wins when it is within ``simpler_tolerance`` or one standard
   error of the best. The points sheet is scored too (for the record).
4. **Out-of-sample margins.** Every validation row keeps the margin its fold's model gave it:
   the calibrator is fitted on those (time-ordered cross-fitting), never on rows a model saw.

Pure: frames in, a :class:`Selection` out; no file I/O, no MLflow.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.evaluate import base_rate_shift
from leadml.modelling.models import (
    LightGBMSettings,
    LogRegSettings,
    ScoringModel,
    feature_columns,
    fit_lightgbm_rounds,
    fit_logreg,
    lightgbm_params,
    margin_scale,
    prepare_features,
    recency_weights,
    recency_weights_of,
    sized_lightgbm,
    time_axis,
    training_categories,
)
from leadml.modelling.split import position_column
from leadml.progress import progress_bar

logger = logging.getLogger(__name__)

LIGHTGBM, LOGREG, POINTS = "lightgbm", "logreg", "points"
CANDIDATES: tuple[str, ...] = (LIGHTGBM, LOGREG, POINTS)
FOLD, MARGIN = "fold", "margin"


@dataclass(frozen=True)
class SelectionSettings:
    """``selection:`` in the config."""

    # validation blocks at the end of the development rows, each this share of them
    folds: int = 3
    fold_share: float = 0.15
    # the LightGBM search: at most this many Optuna trials and seconds (0 trials: no search)
    trials: int = 30
    seconds: float = 60.0
    # rows a search trial fits on per fold (a random sample beyond it); the refit uses every row
    max_search_rows: int = 60_000
    early_stopping_rounds: int = 50
    # a curve still rising past this many trees (a small learning rate) has almost levelled off,
    # and every tree is paid for again by the refits and each night's scoring
    max_trees: int = 1000
    # fewest trees a LightGBM candidate may have: a validation curve that peaks at the first few
    # trees (a drifting base rate does that) would otherwise pick a fragile one-tree model
    min_trees: int = 20
    # trees of a random forest (LightGBM's rf mode: averaged, so their number is not tuned)
    forest_trees: int = 200
    # a simpler candidate within this ROC AUC of the best, or within one standard error of the
    # paired per-fold difference, wins (logistic regression over LightGBM)
    simpler_tolerance: float = 0.002
    # half-lives of recency weighting tried on the search's best settings and for logistic
    # regression, as shares of the development rows' time span (no weighting always competes;
    # empty: never weighted)
    recency: tuple[float, ...] = (0.5, 0.25, 0.1)
    # where the positive rate moved across the time-ordered folds, each counts this many times the
    # fold before it in the mean validation ROC AUC (see fold_weights; 1: always equal weights)
    fold_weighting: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "recency", tuple(float(share) for share in self.recency or ()))
        if any(not share > 0 for share in self.recency):
            raise LeadmlError(f"selection.recency must hold positive shares of the time span: {self.recency}")
        if self.folds < 1 or not 0 < self.fold_share * self.folds < 1:
            raise LeadmlError(
                "selection.folds must be at least 1 and selection.folds x selection.fold_share below 1, "
                f"got {self.folds} x {self.fold_share}"
            )
        if self.fold_weighting < 1:
            raise LeadmlError(f"selection.fold_weighting must be at least 1, got {self.fold_weighting}")
        if self.trials < 0 or self.seconds < 0:
            raise LeadmlError("selection.trials and selection.seconds must not be negative")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> SelectionSettings:
        return cls(**known_settings(cls, mapping or {}, "selection"))


@dataclass
class Fold:
    fit: np.ndarray  # positions (iloc) of the rows the fold's model is fitted on
    validate: np.ndarray  # positions of the rows it predicts
    first: Any = None  # first and last position (as_of / order_key) of the validation block
    last: Any = None
    in_time: bool = True  # a block in time (False: a random block of leads)


def fold_weights(folds: Sequence[Fold], settings: SelectionSettings, labels: np.ndarray) -> np.ndarray:
    """Weights of the folds in the mean validation score (sum 1).

    Equal, unless the folds are in time and the positive rate moved across them (:func:`rate_moved`):
    then each fold counts ``fold_weighting`` times the one before it, because the latest block is
    the closest to tonight's leads. Weighting costs a noisier choice (fewer folds in effect), which
    only a moving history pays for: on the public sets it raised bank's test ROC AUC (rate 5% to
    12% across the folds) by about 0.01, and made X Education's (a stable rate) vary by 0.015.
    """
    return _weights_of(folds, settings, rate_moved(folds, labels))


def _weights_of(folds: Sequence[Fold], settings: SelectionSettings, moving: bool) -> np.ndarray:
    ratio = settings.fold_weighting if moving else 1.0
    weights = ratio ** np.arange(len(folds), dtype=np.float64)
    return np.asarray(weights / weights.sum(), dtype=np.float64)


# the rate change (relative) beyond which the history counts as moving: half as much again (or a
# third less). On the public sets bank's latest block sits at +244% against its history, X
# Education's at +26% (a wobble it returns from in the test window) and olist's at -9%
RATE_MOVE = 0.5


def rate_moved(folds: Sequence[Fold], labels: np.ndarray) -> bool:
    """Did the positive rate of the latest validation block move from the rows before the first
    block: a two-proportion test p < 0.01 and a change beyond :data:`RATE_MOVE`? (Never for random
    blocks, which have no order.)"""
    if not folds or not all(fold.in_time for fold in folds):
        return False
    history, latest = labels[folds[0].fit], labels[folds[-1].validate]
    if not len(history) or not len(latest):
        return False
    change, p_value = base_rate_shift(int(history.sum()), len(history), int(latest.sum()), len(latest))
    return bool(p_value < 0.01 and abs(change) > RATE_MOVE)


@dataclass
class Selection:
    """What the procedure chose on the development rows, and the evidence."""

    chosen: str  # lightgbm or logreg
    lightgbm: LightGBMSettings | None  # tuned and sized settings (n_estimators = the trees to refit)
    logreg: LogRegSettings  # with the recency weighting chosen on the folds
    table: pd.DataFrame  # one row per candidate: mean and per-fold validation ROC AUC
    trials: pd.DataFrame  # one row per search trial
    # development rows validated: fold and the chosen model's out-of-sample margin, relative to the
    # base log-odds of the rows its fold's model was fitted on (see base_log_odds)
    oos: pd.DataFrame
    folds: list[Fold] = field(default_factory=list)
    sentence: str = ""
    seconds: float = 0.0
    time_unit: str = "days"  # of recency half-lives: days of as_of, else order_key units
    weights: list[float] = field(default_factory=list)  # of the folds in the mean score

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for the run and the model report."""
        return {
            "chosen": self.chosen,
            "sentence": self.sentence,
            "candidates": self.table.reset_index().to_dict(orient="records"),
            "lightgbm": None if self.lightgbm is None else _settings_record(self.lightgbm),
            "logreg_recency_half_life": self.logreg.recency_half_life,
            "folds": [
                {
                    "fit_rows": len(f.fit),
                    "validation_rows": len(f.validate),
                    "first": str(f.first),
                    "last": str(f.last),
                    "weight": round(weight, 4),
                }
                for f, weight in zip(self.folds, self.weights, strict=True)
            ],
            "trials": len(self.trials),
            "seconds": round(self.seconds, 1),
        }


def _settings_record(settings: LightGBMSettings) -> dict[str, Any]:
    keys = (
        "boosting",
        "extra_trees",
        "n_estimators",
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "lambda_l2",
        "feature_fraction",
        "bagging_fraction",
        "cat_smooth",
        "min_data_per_group",
        "recency_half_life",
    )
    return {key: getattr(settings, key) for key in keys}


def validation_folds(rows: pd.DataFrame, settings: SelectionSettings) -> list[Fold]:
    """Time-ordered expanding-window folds over the latest rows (random blocks without time)."""
    group = _groups(rows)
    column = position_column(rows)
    if column is None:
        return _random_folds(rows, group, settings)
    position = rows[column].to_numpy()
    first_of_group = pd.Series(position).groupby(group.to_numpy(), sort=False).transform("min").to_numpy()
    ordered = np.sort(position)
    folds = []
    for k in range(settings.folds):
        start = ordered[
            min(len(ordered) - 1, int(len(ordered) * (1 - settings.fold_share * (settings.folds - k))))
        ]
        end_index = int(len(ordered) * (1 - settings.fold_share * (settings.folds - k - 1)))
        in_block = position >= start
        if k < settings.folds - 1 and end_index < len(ordered):
            in_block &= position < ordered[end_index]
        # a lead's rows validate only where the lead is new: earlier rows of it were fitted on
        validate = np.flatnonzero(in_block & (first_of_group >= start))
        fit = np.flatnonzero(position < start)
        if len(validate) and len(fit):
            folds.append(
                Fold(fit, validate, _plain(position[validate].min()), _plain(position[validate].max()))
            )
    return _usable(folds, rows)


def _random_folds(rows: pd.DataFrame, group: pd.Series, settings: SelectionSettings) -> list[Fold]:
    rng = np.random.default_rng(settings.seed)
    groups = group.unique()
    shuffled = groups[rng.permutation(len(groups))]
    size = max(1, round(len(groups) * settings.fold_share))
    codes = pd.Series(np.arange(len(shuffled)), index=shuffled)
    rank = codes.reindex(group.to_numpy()).to_numpy()
    folds = []
    for k in range(settings.folds):
        held = (rank >= k * size) & (rank < (k + 1) * size)
        folds.append(Fold(np.flatnonzero(~held), np.flatnonzero(held), f"random block {k + 1}", "", False))
    return _usable(folds, rows)


def _usable(folds: list[Fold], rows: pd.DataFrame) -> list[Fold]:
    labels = rows[s.LABEL].to_numpy()
    usable = [
        fold
        for fold in folds
        if 0 < labels[fold.validate].sum() < len(fold.validate) and 0 < labels[fold.fit].sum() < len(fold.fit)
    ]
    if not usable:
        raise LeadmlError(
            "selection: no validation fold has both labels in its rows and in the rows before it "
            f"({len(rows):,} development rows, {int(labels.sum()):,} positives); "
            "too little data to choose a model"
        )
    return usable


def _groups(rows: pd.DataFrame) -> pd.Series:
    if s.DUP_GROUP in rows.columns:
        return rows[s.DUP_GROUP].astype(str).where(rows[s.DUP_GROUP].notna(), rows[s.LEAD_ID].astype(str))
    return rows[s.LEAD_ID].astype(str)


def _plain(value: Any) -> Any:
    stamp = pd.Timestamp(value) if isinstance(value, np.datetime64 | pd.Timestamp) else None
    if stamp is not None:
        return stamp.date().isoformat()
    value = value.item() if isinstance(value, np.generic) else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


@dataclass
class _CvData:
    """The development rows prepared once for LightGBM's cross-validation."""

    matrix: pd.DataFrame
    labels: np.ndarray
    names: list[str]
    categories: dict[str, list[Any]]
    folds: list[tuple[np.ndarray, np.ndarray]]
    weights: np.ndarray  # of the folds in the mean score (fold_weights)
    moving: bool  # the positive rate moved across the folds (rate_moved)
    axis: np.ndarray | None  # each row's place in time (models.time_axis), for recency weights
    dataset: lgb.Dataset | None = None  # binned once, shared by every trial (see :func:`_dataset`)

    @property
    def span(self) -> float:
        """The development rows' time span (0 without time): recency half-lives are shares of it."""
        return _span(self.axis)


def _cv_data(
    rows: pd.DataFrame, folds: Sequence[Fold], settings: SelectionSettings, moving: bool | None = None
) -> _CvData:
    if moving is None:
        moving = rate_moved(folds, rows[s.LABEL].to_numpy())
    names = feature_columns(rows)
    categories = training_categories(rows, names)
    cv_folds = [(search_rows(fold, settings), fold.validate) for fold in folds]
    return _CvData(
        prepare_features(rows, names, categories),
        rows[s.LABEL].to_numpy(),
        names,
        categories,
        cv_folds,
        _weights_of(folds, settings, moving),
        moving,
        time_axis(rows) if position_column(rows) else None,
    )


def search_rows(fold: Fold, settings: SelectionSettings) -> np.ndarray:
    """The fit rows a candidate is fitted on in a fold: all, or a random ``max_search_rows`` of
    them that keeps the latest row (the refit uses every row). Seeded by the fold, so every
    candidate sees the same rows."""
    fit = fold.fit
    if len(fit) <= settings.max_search_rows:
        return fit
    rng = np.random.default_rng([settings.seed, len(fit)])
    keep = np.sort(rng.choice(len(fit) - 1, settings.max_search_rows - 1, replace=False))
    return np.append(fit[keep], fit[-1])


def _span(axis: np.ndarray | None) -> float:
    if axis is None or not np.isfinite(axis).any():
        return 0.0
    return float(np.nanmax(axis) - np.nanmin(axis))


def _weigh_subset(subset: lgb.Dataset, axis: np.ndarray, half_life: float) -> lgb.Dataset:
    """Recency weights on a subset of the shared binned rows (set once it is constructed)."""
    subset.construct()
    subset.set_weight(recency_weights_of(axis[np.asarray(subset.used_indices)], half_life))
    return subset


def cross_validate_lightgbm(
    data: _CvData,
    settings: LightGBMSettings,
    selection: SelectionSettings,
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> tuple[float, int, list[float]]:
    """(weighted mean validation ROC AUC at the best iteration of the weighted mean curve, that
    iteration, each fold's ROC AUC there).

    One booster per fold, grown in lockstep as ``lightgbm.cv`` does, but keeping each fold's
    curve: the folds are weighted (:func:`fold_weights`), which LightGBM's mean cannot be, and
    early stopping looks at the curve only from ``min_trees`` on (a curve that peaks at the second
    tree would otherwise be scored by that peak for a model of ``min_trees`` trees).
    """
    params = {**lightgbm_params(settings, data.names, data.categories, metadata), "metric": "auc"}
    binned = _dataset(data)
    boosters = []
    for fit, validate in data.folds:
        train = binned.subset(np.sort(fit))
        if settings.recency_half_life and data.axis is not None:
            _weigh_subset(train, data.axis, settings.recency_half_life)
        booster = lgb.Booster(params, train)
        booster.add_valid(binned.subset(np.sort(validate)), "valid")
        boosters.append(booster)
    forest = settings.boosting == "rf"
    # a forest's trees are averaged, not added: more never overfit, so it grows to its size
    rounds = selection.forest_trees if forest else selection.max_trees
    curves: list[list[float]] = []
    best, best_iteration = -math.inf, 0
    for iteration in range(1, rounds + 1):
        curves.append([_grow(booster) for booster in boosters])
        score = float(data.weights @ np.asarray(curves[-1]))
        if forest or iteration < selection.min_trees:
            continue
        if score > best:
            best, best_iteration = score, iteration
        if iteration - best_iteration >= selection.early_stopping_rounds:
            break
    if forest or not best_iteration:
        best_iteration = len(curves)
    at_best = curves[best_iteration - 1]
    return float(data.weights @ np.asarray(at_best)), best_iteration, [float(v) for v in at_best]


def _grow(booster: lgb.Booster) -> float:
    """One more tree; the validation ROC AUC after it."""
    booster.update()
    return float(next(entry[2] for entry in booster.eval_valid() if entry[1] == "auc"))


def _dataset(data: _CvData) -> lgb.Dataset:
    """The development rows binned once for every trial and fold (binning 200,000 rows takes
    seconds); without pre-filtering, so each trial may choose its own leaf size."""
    if data.dataset is None:
        data.dataset = lgb.Dataset(
            data.matrix,
            label=data.labels,
            categorical_feature=list(data.categories) or "auto",
            params={"feature_pre_filter": False, "verbosity": -1},
            free_raw_data=False,
        ).construct()
    return data.dataset


def _suggest(trial: Any, base: LightGBMSettings, rows: int, positives: int) -> LightGBMSettings:
    # gradient boosting, with random thresholds (extremely randomised trees), a random forest, and
    # a forest of extremely randomised trees (what AutoML libraries often pick on drifting data)
    mode = trial.suggest_categorical("mode", ["gbdt", "extra_trees", "rf", "extra_forest"])
    forest = mode in ("rf", "extra_forest")
    rarer = max(10, min(positives, rows - positives))
    values: dict[str, Any] = {
        "boosting": "rf" if forest else "gbdt",
        "extra_trees": mode in ("extra_trees", "extra_forest"),
        "num_leaves": trial.suggest_int("num_leaves", 3, 63, log=True),
        "min_child_samples": trial.suggest_int(
            "min_child_samples", 5, max(10, min(1000, rarer // 4)), log=True
        ),
        # a forest's leaves are one Newton step from the base rate: a large L2 penalty would shrink
        # them by an amount that depends on the rows per leaf, so a refit on more rows gives margins
        # on another scale than the models its calibrator learnt from
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-2, 1.0 if forest else 100.0, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.3, 1.0),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 100.0, log=True),
        "min_data_per_group": trial.suggest_int("min_data_per_group", 5, 200, log=True),
    }
    if forest:
        values["bagging_fraction"] = trial.suggest_float("rf_bagging_fraction", 0.3, 0.9)
    else:
        values["learning_rate"] = trial.suggest_float("learning_rate", 0.01, 0.2, log=True)
        values["bagging_fraction"] = trial.suggest_float("bagging_fraction", 0.5, 1.0)
    return replace(base, **values)


def _first_trial(settings: LightGBMSettings) -> dict[str, Any]:
    """The configured settings as Optuna parameters, so the search starts from them."""
    values: dict[str, Any] = {
        "mode": _mode(settings),
        "num_leaves": int(np.clip(settings.num_leaves or 15, 3, 63)),
        "min_child_samples": int(settings.min_child_samples or 10),
        "lambda_l2": float(np.clip(settings.lambda_l2, 1e-2, 100.0)),
        "feature_fraction": float(np.clip(settings.feature_fraction, 0.3, 1.0)),
        "cat_smooth": float(np.clip(settings.cat_smooth, 1.0, 100.0)),
        "min_data_per_group": int(np.clip(settings.min_data_per_group, 5, 200)),
    }
    if settings.boosting == "rf":
        values["rf_bagging_fraction"] = float(np.clip(settings.bagging_fraction, 0.3, 0.9))
    else:
        values["learning_rate"] = float(np.clip(settings.learning_rate, 0.01, 0.2))
        values["bagging_fraction"] = float(np.clip(settings.bagging_fraction, 0.5, 1.0))
    return values


# a plain, widely used LightGBM configuration: many small steps, mid-sized trees, light L2
COMMON_START: dict[str, Any] = {
    "boosting": "gbdt",
    "extra_trees": False,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
}


def _mode(settings: LightGBMSettings) -> str:
    if settings.boosting == "rf":
        return "extra_forest" if settings.extra_trees else "rf"
    return "extra_trees" if settings.extra_trees else "gbdt"


MODE_NAMES = {
    "gbdt": "gradient boosting",
    "extra_trees": "extremely randomised trees",
    "rf": "random forest",
    "extra_forest": "forest of extremely randomised trees",
}


def tune_lightgbm(
    data: _CvData,
    base: LightGBMSettings,
    selection: SelectionSettings,
    metadata: Mapping[str, FeatureMeta] | None = None,
    progress: bool = False,
) -> tuple[LightGBMSettings, float, pd.DataFrame]:
    """The best LightGBM settings on the folds (trees in ``n_estimators``), its score, every trial."""
    import optuna

    positives, rows = int(data.labels.sum()), len(data.labels)
    half_lives = half_life_choices(data.span, selection.recency)
    records: list[dict[str, Any]] = []

    def run(settings: LightGBMSettings) -> float:
        started = time.perf_counter()
        score, trees, per_fold = cross_validate_lightgbm(data, settings, selection, metadata)
        records.append(
            {
                "roc_auc": score,
                "trees": trees,
                "fold_roc_auc": per_fold,
                **_settings_record(replace(settings, n_estimators=trees)),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        logger.info(
            "selection: trial %d ROC AUC %.4f with %d trees (%s)",
            len(records),
            score,
            trees,
            records[-1]["seconds"],
        )
        return score if np.isfinite(score) else 0.0

    searching = selection.trials > 1 and base.search
    weighing = searching and len(half_lives) > 1
    started = time.perf_counter()
    # a quarter of the time is kept for recency weighting of the best settings (below)
    budget = (selection.seconds * (0.75 if weighing else 1.0)) or None
    if not searching:
        run(base)
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=selection.seed, n_startup_trials=min(10, selection.trials))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(_first_trial(base))
        # and the settings a data scientist would try first, so the search starts from both
        study.enqueue_trial(_first_trial(replace(base, **COMMON_START)))
        bar = progress_bar(progress, selection.trials, "model search", "trial")
        study.optimize(
            lambda trial: run(_suggest(trial, base, rows, positives)),
            n_trials=selection.trials,
            timeout=budget,
            callbacks=[lambda *_: bar.update(1)] if bar is not None else None,
        )
        if bar is not None:
            bar.close()
    trials = pd.DataFrame.from_records(records)
    found = _trial_settings(base, trials.iloc[int(trials["roc_auc"].fillna(0).to_numpy().argmax())])
    if weighing:
        # then recency weighting of the best settings (see _recency_earns_its_place), within the
        # rest of the time (a run that starts in time finishes, as Optuna's trials do)
        for half_life in half_lives[1:]:
            if selection.seconds and time.perf_counter() - started > selection.seconds:
                logger.info("selection: recency half-life %g not tried: selection.seconds spent", half_life)
                continue
            run(replace(found, recency_half_life=half_life))
        trials = pd.DataFrame.from_records(records)
    best = trials.iloc[_best_trial(trials, data, selection.simpler_tolerance)]
    return _trial_settings(base, best), float(best["roc_auc"]), trials


def _trial_settings(base: LightGBMSettings, trial: pd.Series) -> LightGBMSettings:
    values = {key: trial[key] for key in _settings_record(base)}
    return replace(base, **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in values.items()})


def _best_trial(trials: pd.DataFrame, data: _CvData, tolerance: float) -> int:
    """Position of the best trial; where the rate is stable, of the best unweighted one when it is
    within reach of it (see :func:`_recency_earns_its_place`)."""
    scores = trials["roc_auc"].fillna(0).to_numpy()
    best = int(scores.argmax())
    plain = np.flatnonzero(trials["recency_half_life"].to_numpy() == 0)
    if data.moving or not len(plain) or best in plain:
        return best
    challenger = int(plain[scores[plain].argmax()])
    folds = trials["fold_roc_auc"]
    earns = _recency_earns_its_place(folds.iloc[best], folds.iloc[challenger], data.weights, tolerance)
    return best if earns else challenger


def _recency_earns_its_place(
    weighted: Sequence[float], unweighted: Sequence[float], weights: np.ndarray, tolerance: float
) -> bool:
    """Is the weighted setting ahead of the unweighted one beyond ``tolerance`` and one standard
    error of their paired per-fold difference?

    Weighting recent rows shrinks the rows a model effectively learns from, so its validation score
    varies more, and the best of many trials favours what varies: on a stable history a weighted
    trial would win the search by luck about as often as by merit. So, as between logistic
    regression and LightGBM (:func:`_choose`), the simpler (unweighted) setting wins unless the
    weighted one is clearly ahead. Where the positive rate moved by half or more the history is
    known to drift, and the best setting is taken as it is.
    """
    reach = max(tolerance, _paired_error(weighted, unweighted, weights))
    return _fold_mean(weighted, weights) > _fold_mean(unweighted, weights) + reach


def half_life_choices(span: float, shares: Sequence[float]) -> list[float]:
    """No weighting, then each share of the time span as a half-life (only no weighting without time)."""
    return [0.0] + ([round(span * share, 6) for share in shares] if span > 0 else [])


def tune_logreg(
    rows: pd.DataFrame,
    folds: Sequence[Fold],
    logreg: LogRegSettings,
    settings: SelectionSettings,
    weights: np.ndarray,
    moving: bool,
) -> tuple[LogRegSettings, tuple[np.ndarray, np.ndarray, list[float]]]:
    """Logistic regression's recency weighting chosen on the folds (weighted as ``weights``): the
    settings and their margins. Unweighted unless weighting earns its place, or the rate moved."""
    axis = time_axis(rows) if position_column(rows) else None
    results = []
    for half_life in half_life_choices(_span(axis), settings.recency):
        candidate = replace(logreg, recency_half_life=half_life)
        result = _fold_margins(rows, folds, partial(_fit_logreg, settings=candidate), settings, half_life)
        results.append((candidate, result, _fold_mean(result[2], weights)))
        logger.info(
            "selection: logistic regression, recency half-life %g: ROC AUC %.4f (folds %s)",
            half_life,
            results[-1][2],
            ", ".join(f"{auc:.4f}" for auc in result[2]),
        )
    best, plain = max(results, key=lambda found: found[2]), results[0]
    if moving or _recency_earns_its_place(best[1][2], plain[1][2], weights, settings.simpler_tolerance):
        return best[0], best[1]
    return plain[0], plain[1]


def _fit_logreg(rows: pd.DataFrame, settings: LogRegSettings) -> ScoringModel:
    return fit_logreg(rows, settings)


def _fold_margins(
    rows: pd.DataFrame, folds: Sequence[Fold], fit: Any, settings: SelectionSettings, half_life: float = 0.0
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(positions, out-of-sample margins, per-fold ROC AUC) of ``fit(fit_rows)`` models over the folds."""
    positions, margins, aucs = [], [], []
    labels = rows[s.LABEL].to_numpy()
    for fold in folds:
        fitted_on = search_rows(fold, settings)
        fit_rows = rows.iloc[fitted_on]
        model: ScoringModel = fit(fit_rows)
        anchor = base_log_odds(labels[fitted_on], recency_weights(fit_rows, half_life))
        margin = model.predict_margin(rows.iloc[fold.validate]) - anchor
        positions.append(fold.validate)
        margins.append(margin)
        aucs.append(_auc(labels[fold.validate], margin))
    return np.concatenate(positions), np.concatenate(margins), aucs


def select_model(
    rows: pd.DataFrame,
    candidates: Sequence[str],
    lightgbm: LightGBMSettings,
    logreg: LogRegSettings,
    settings: SelectionSettings,
    metadata: Mapping[str, FeatureMeta] | None = None,
    fitters: Mapping[str, Callable[[pd.DataFrame], ScoringModel]] | None = None,
    progress: bool = False,
) -> Selection:
    """Choose among ``candidates`` on time-ordered folds of the development ``rows`` (see the module).

    ``fitters`` fit the other candidates and baselines on a frame: ``logreg`` and, where the data
    config has a sheet, ``points`` (scored on the folds for the record, or the only candidate).
    """
    fitters = dict(fitters or {})
    started = time.perf_counter()
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown or not candidates:
        raise LeadmlError(f"selection candidates must be among {list(CANDIDATES)}, got {list(candidates)}")
    folds = validation_folds(rows, settings)
    labels = rows[s.LABEL].to_numpy()
    moving = rate_moved(folds, labels)
    weights = _weights_of(folds, settings, moving)
    fold_rows = int(np.mean([len(f.fit) for f in folds]))
    fold_positives = int(np.mean([labels[f.fit].sum() for f in folds]))
    table: dict[str, dict[str, Any]] = {}
    tuned: LightGBMSettings | None = None
    trials = pd.DataFrame()
    cv_data: _CvData | None = None
    if LIGHTGBM in candidates:
        cv_data = _cv_data(rows, folds, settings, moving)
        base = sized_lightgbm(lightgbm, fold_rows, fold_positives)
        tuned, score, trials = tune_lightgbm(cv_data, base, settings, metadata, progress)
        table[LIGHTGBM] = {"roc_auc": score, "trees": tuned.n_estimators, "fold_roc_auc": None}
    margins: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (LOGREG, POINTS):
        if name == LOGREG and (LOGREG in candidates or LIGHTGBM in candidates):
            logreg, (positions, margin, aucs) = tune_logreg(rows, folds, logreg, settings, weights, moving)
        elif name == POINTS and name in fitters:
            positions, margin, aucs = _fold_margins(rows, folds, fitters[name], settings)
        else:
            continue
        margins[name] = (positions, margin)
        table[name] = {"roc_auc": _fold_mean(aucs, weights), "trees": None, "fold_roc_auc": aucs}
    if LIGHTGBM in candidates:
        assert tuned is not None and cv_data is not None
        positions, margin = _lightgbm_margins(cv_data, tuned, metadata)
        margins[LIGHTGBM] = (positions, margin)
        ends = np.cumsum([len(f.validate) for f in folds])
        table[LIGHTGBM]["fold_roc_auc"] = [
            _auc(labels[part], score)
            for part, score in zip(np.split(positions, ends[:-1]), np.split(margin, ends[:-1]), strict=True)
        ]
    chosen = _choose(table, candidates, settings.simpler_tolerance, weights)
    positions, margin = margins[chosen]
    oos = pd.DataFrame(
        {FOLD: _fold_numbers(folds, positions), MARGIN: margin}, index=rows.index[positions]
    ).sort_index()
    frame = pd.DataFrame.from_dict(table, orient="index").rename_axis("candidate")
    selection = Selection(
        chosen=chosen,
        lightgbm=tuned,
        logreg=logreg,
        table=frame,
        trials=trials,
        oos=oos,
        folds=folds,
        seconds=time.perf_counter() - started,
        time_unit="days" if s.AS_OF in rows.columns else "order_key units",
        weights=[float(weight) for weight in weights],
    )
    selection.sentence = selection_sentence(selection)
    logger.info("selection: %s (%.1fs)", selection.sentence, selection.seconds)
    return selection


def _fold_numbers(folds: Sequence[Fold], positions: np.ndarray) -> np.ndarray:
    number = np.zeros(positions.max() + 1 if len(positions) else 0, dtype=np.int64)
    for k, fold in enumerate(folds, start=1):
        number[fold.validate] = k
    return number[positions]


def _lightgbm_margins(
    data: _CvData, tuned: LightGBMSettings, metadata: Mapping[str, FeatureMeta] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Relative out-of-sample margins of the tuned settings: each fold's model on all its fit rows."""
    positions, margins = [], []
    params = lightgbm_params(tuned, data.names, data.categories, metadata)
    binned = _dataset(data)
    # the rows each trial was scored on (every fit row up to selection.max_search_rows)
    for fit, validate in data.folds:
        subset = binned.subset(np.sort(fit))
        weight = None
        if tuned.recency_half_life and data.axis is not None:
            weight = _weigh_subset(subset, data.axis, tuned.recency_half_life).get_weight()
        booster = lgb.train(params, subset, num_boost_round=tuned.n_estimators)
        positions.append(validate)
        margin = booster.predict(data.matrix.iloc[validate], raw_score=True) * margin_scale(booster)
        margins.append(margin - base_log_odds(data.labels[np.sort(fit)], weight))
    return np.concatenate(positions), np.asarray(np.concatenate(margins), dtype=np.float64)


def base_log_odds(labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The log-odds of the positive rate of a model's training rows.

    Every model's margin is anchored there (LightGBM starts from it, a logistic intercept absorbs
    it), so a model fitted on a later, higher-rate history gives higher margins to the same lead.
    The calibrator therefore reads the margin relative to it (:class:`leadml.modelling.calibration.
    RelativeCalibrator`): fitted on how each fold's model, relative to its own history, did on the
    next block, it maps a refit's relative margin the same way, without counting a drifted base
    rate twice.
    """
    rate = float(np.clip(np.average(labels, weights=weights), 1e-6, 1 - 1e-6))
    return float(np.log(rate / (1 - rate)))


def chosen_half_life(selection: Selection) -> float:
    """The recency half-life of the chosen model (0: unweighted, as the points sheet always is)."""
    if selection.chosen == LIGHTGBM and selection.lightgbm is not None:
        return selection.lightgbm.recency_half_life
    return selection.logreg.recency_half_life if selection.chosen == LOGREG else 0.0


def anchor(rows: pd.DataFrame, selection: Selection) -> float:
    """:func:`base_log_odds` of the rows a refit of the chosen model is fitted on, as it weighs them."""
    return base_log_odds(rows[s.LABEL].to_numpy(), recency_weights(rows, chosen_half_life(selection)))


def _choose(
    table: Mapping[str, Mapping[str, Any]],
    candidates: Sequence[str],
    tolerance: float,
    weights: np.ndarray | None = None,
) -> str:
    """The best candidate, unless a simpler one is within reach of it: within ``tolerance`` or one
    standard error of their paired difference over the folds (the one-standard-error rule: on a
    few noisy folds a more complex model's lead is often luck of the draw)."""
    scores = {name: table[name]["roc_auc"] for name in candidates if name in table}
    scores = {name: (score if np.isfinite(score) else -math.inf) for name, score in scores.items()}
    best_name = max(scores, key=scores.__getitem__)
    for name in (POINTS, LOGREG, LIGHTGBM):  # simplest first
        if name not in scores:
            continue
        error = _paired_error(table[best_name]["fold_roc_auc"], table[name]["fold_roc_auc"], weights)
        reach = max(tolerance, error)
        if scores[name] >= scores[best_name] - reach:
            return name
    return best_name


def _paired_error(
    first: Sequence[float] | None, second: Sequence[float] | None, weights: np.ndarray | None = None
) -> float:
    """Standard error of the (weighted) mean per-fold ROC AUC difference (0 with fewer than 2 folds).

    With fold weights w (sum 1) the mean difference has variance sigma^2 x sum(w^2): with equal
    weights the familiar sigma / sqrt(folds).
    """
    if not first or not second or len(first) != len(second) or len(first) < 2:
        return 0.0
    difference = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    weights = np.full(len(difference), 1.0) if weights is None else np.asarray(weights, dtype=float)
    finite = np.isfinite(difference)
    if finite.sum() < 2:
        return 0.0
    share = weights[finite] / weights[finite].sum()
    return float(np.std(difference[finite], ddof=1) * np.sqrt(np.sum(share**2)))


def _fold_mean(aucs: Sequence[float], weights: np.ndarray) -> float:
    """The weighted mean of per-fold ROC AUCs over the folds where it is defined."""
    values = np.asarray(aucs, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return float("nan")
    return float(np.average(values[finite], weights=weights[finite]))


def selection_sentence(selection: Selection) -> str:
    """One sentence: which candidate won on the validation folds, by how much."""
    table = selection.table
    figures = ", ".join(f"{name} {row.roc_auc:.4f}" for name, row in table.iterrows())
    folds = len(selection.folds)
    what = selection.chosen
    if selection.chosen == LIGHTGBM and selection.lightgbm is not None:
        tuned = selection.lightgbm
        mode = MODE_NAMES[_mode(tuned)]
        what = (
            f"LightGBM ({mode}, {tuned.n_estimators} trees, {tuned.num_leaves} leaves, min "
            f"{tuned.min_child_samples} rows per leaf; best of {len(selection.trials)} trials)"
        )
    elif selection.chosen == POINTS:
        what = "the points sheet (model=points)"
    elif selection.chosen == LOGREG:
        what = "logistic regression"
        if LIGHTGBM in table.index:
            what += " (the simpler model, within reach of LightGBM or ahead of it)"
    half_life = chosen_half_life(selection)
    if half_life:
        amount = f"{half_life:,.0f}" if half_life >= 10 else f"{half_life:.3g}"
        what += f", recent rows weighted (weight halving every {amount} {selection.time_unit})"
    return f"chose {what} on {folds} time-ordered validation fold(s): mean ROC AUC {figures}"


def refit(
    rows: pd.DataFrame,
    selection: Selection,
    fitters: Mapping[str, Callable[[pd.DataFrame], ScoringModel]],
    metadata: Mapping[str, FeatureMeta] | None = None,
) -> ScoringModel:
    """The chosen model fitted on every row of ``rows`` with the chosen settings."""
    if selection.chosen == LIGHTGBM:
        assert selection.lightgbm is not None
        return fit_lightgbm_rounds(rows, selection.lightgbm, selection.lightgbm.n_estimators, metadata)
    if selection.chosen == LOGREG:
        return fit_logreg(rows, selection.logreg)
    return fitters[selection.chosen](rows)
