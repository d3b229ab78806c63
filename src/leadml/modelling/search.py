"""The bounded searches of model selection: LightGBM tuned with Optuna on the validation folds,
logistic regression, recency weights."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.modelling.folds import (
    Fold,
    SelectionSettings,
    base_log_odds,
    fold_auc,
    fold_mean,
    paired_error,
    rate_moved,
    settings_record,
    weights_of,
)
from leadml.modelling.models import (
    LightGBMSettings,
    LogRegSettings,
    ScoringModel,
    feature_columns,
    fit_logreg,
    lightgbm_params,
    prepare_features,
    recency_weights,
    recency_weights_of,
    time_axis,
    training_categories,
)
from leadml.modelling.split import position_column
from leadml.progress import progress_bar

# optuna is imported inside the LightGBM search: only model search needs it

logger = logging.getLogger(__name__)


@dataclass
class CvData:
    """The development rows prepared once for LightGBM's cross-validation."""

    matrix: pd.DataFrame
    labels: np.ndarray
    names: list[str]
    categories: dict[str, list[Any]]
    folds: list[tuple[np.ndarray, np.ndarray]]
    weights: np.ndarray  # of the folds in the mean score (fold_weights)
    moving: bool  # the positive rate moved across the folds (rate_moved)
    axis: np.ndarray | None  # each row's place in time (models.time_axis), for recency weights
    dataset: lgb.Dataset | None = None  # binned once, shared by every trial (see :func:`lgb_dataset`)

    @property
    def span(self) -> float:
        """The development rows' time span (0 without time): recency half-lives are shares of it."""
        return _span(self.axis)


def cv_data_of(
    rows: pd.DataFrame, folds: Sequence[Fold], settings: SelectionSettings, moving: bool | None = None
) -> CvData:
    if moving is None:
        moving = rate_moved(folds, rows[s.LABEL].to_numpy())
    names = feature_columns(rows)
    categories = training_categories(rows, names)
    cv_folds = [(search_rows(fold, settings), fold.validate) for fold in folds]
    return CvData(
        prepare_features(rows, names, categories),
        rows[s.LABEL].to_numpy(),
        names,
        categories,
        cv_folds,
        weights_of(folds, settings, moving),
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


def weigh_subset(subset: lgb.Dataset, axis: np.ndarray, half_life: float) -> lgb.Dataset:
    """Recency weights on a subset of the shared binned rows (set once it is constructed)."""
    subset.construct()
    subset.set_weight(recency_weights_of(axis[np.asarray(subset.used_indices)], half_life))
    return subset


def cross_validate_lightgbm(
    data: CvData,
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
    binned = lgb_dataset(data)
    boosters = []
    for fit, validate in data.folds:
        train = binned.subset(np.sort(fit))
        if settings.recency_half_life and data.axis is not None:
            weigh_subset(train, data.axis, settings.recency_half_life)
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


def lgb_dataset(data: CvData) -> lgb.Dataset:
    """The development rows binned once for every trial and fold (binning 200,000 rows takes
    seconds); without pre-filtering, so each trial may choose its own leaf size.

    The raw rows are not kept in the dataset (``free_raw_data``): the subsets of the folds are cut
    from the bins alone, and with the raw rows kept LightGBM also copied each subset's rows out of
    ``data.matrix`` (the validation blocks: 45% of the development rows, again for every trial).
    """
    if data.dataset is None:
        data.dataset = lgb.Dataset(
            data.matrix,
            label=data.labels,
            categorical_feature=list(data.categories) or "auto",
            params={"feature_pre_filter": False, "verbosity": -1},
            free_raw_data=True,
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
        "mode": search_mode(settings),
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


def search_mode(settings: LightGBMSettings) -> str:
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
    data: CvData,
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
                **settings_record(replace(settings, n_estimators=trees)),
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
    values = {key: trial[key] for key in settings_record(base)}
    return replace(base, **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in values.items()})


def _best_trial(trials: pd.DataFrame, data: CvData, tolerance: float) -> int:
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
    reach = max(tolerance, paired_error(weighted, unweighted, weights))
    return fold_mean(weighted, weights) > fold_mean(unweighted, weights) + reach


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
        result = fold_margins(rows, folds, partial(_fit_logreg, settings=candidate), settings, half_life)
        results.append((candidate, result, fold_mean(result[2], weights)))
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


def fold_margins(
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
        aucs.append(fold_auc(labels[fold.validate], margin))
    return np.concatenate(positions), np.concatenate(margins), aucs
