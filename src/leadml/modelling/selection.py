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
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError
from leadml.modelling.folds import (
    Fold,
    Selection,
    SelectionSettings,
    base_log_odds,
    fold_auc,
    fold_mean,
    paired_error,
    rate_moved,
    validation_folds,
    weights_of,
)
from leadml.modelling.models import (
    LightGBMSettings,
    LogRegSettings,
    ScoringModel,
    fit_lightgbm_rounds,
    fit_logreg,
    lightgbm_params,
    margin_scale,
    recency_weights,
    sized_lightgbm,
)
from leadml.modelling.search import (
    MODE_NAMES,
    CvData,
    cv_data_of,
    fold_margins,
    lgb_dataset,
    search_mode,
    tune_lightgbm,
    tune_logreg,
    weigh_subset,
)

logger = logging.getLogger(__name__)

LIGHTGBM, LOGREG, POINTS = "lightgbm", "logreg", "points"
CANDIDATES: tuple[str, ...] = (LIGHTGBM, LOGREG, POINTS)
FOLD, MARGIN = "fold", "margin"


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
    weights = weights_of(folds, settings, moving)
    fold_rows = int(np.mean([len(f.fit) for f in folds]))
    fold_positives = int(np.mean([labels[f.fit].sum() for f in folds]))
    table: dict[str, dict[str, Any]] = {}
    tuned: LightGBMSettings | None = None
    trials = pd.DataFrame()
    cv_data: CvData | None = None
    if LIGHTGBM in candidates:
        cv_data = cv_data_of(rows, folds, settings, moving)
        base = sized_lightgbm(lightgbm, fold_rows, fold_positives)
        tuned, score, trials = tune_lightgbm(cv_data, base, settings, metadata, progress)
        table[LIGHTGBM] = {"roc_auc": score, "trees": tuned.n_estimators, "fold_roc_auc": None}
    margins: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (LOGREG, POINTS):
        if name == LOGREG and (LOGREG in candidates or LIGHTGBM in candidates):
            logreg, (positions, margin, aucs) = tune_logreg(rows, folds, logreg, settings, weights, moving)
        elif name == POINTS and name in fitters:
            positions, margin, aucs = fold_margins(rows, folds, fitters[name], settings)
        else:
            continue
        margins[name] = (positions, margin)
        table[name] = {"roc_auc": fold_mean(aucs, weights), "trees": None, "fold_roc_auc": aucs}
    if LIGHTGBM in candidates:
        assert tuned is not None and cv_data is not None
        positions, margin = _lightgbm_margins(cv_data, tuned, metadata)
        margins[LIGHTGBM] = (positions, margin)
        ends = np.cumsum([len(f.validate) for f in folds])
        table[LIGHTGBM]["fold_roc_auc"] = [
            fold_auc(labels[part], score)
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
    data: CvData, tuned: LightGBMSettings, metadata: Mapping[str, FeatureMeta] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Relative out-of-sample margins of the tuned settings: each fold's model on all its fit rows."""
    positions, margins = [], []
    params = lightgbm_params(tuned, data.names, data.categories, metadata)
    binned = lgb_dataset(data)
    # the rows each trial was scored on (every fit row up to selection.max_search_rows)
    for fit, validate in data.folds:
        subset = binned.subset(np.sort(fit))
        weight = None
        if tuned.recency_half_life and data.axis is not None:
            weight = weigh_subset(subset, data.axis, tuned.recency_half_life).get_weight()
        booster = lgb.train(params, subset, num_boost_round=tuned.n_estimators)
        positions.append(validate)
        margin = booster.predict(data.matrix.iloc[validate], raw_score=True) * margin_scale(booster)
        margins.append(margin - base_log_odds(data.labels[np.sort(fit)], weight))
    return np.concatenate(positions), np.asarray(np.concatenate(margins), dtype=np.float64)


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
        error = paired_error(table[best_name]["fold_roc_auc"], table[name]["fold_roc_auc"], weights)
        reach = max(tolerance, error)
        if scores[name] >= scores[best_name] - reach:
            return name
    return best_name


def selection_sentence(selection: Selection) -> str:
    """One sentence: which candidate won on the validation folds, by how much."""
    table = selection.table
    figures = ", ".join(f"{name} {row.roc_auc:.4f}" for name, row in table.iterrows())
    folds = len(selection.folds)
    what = selection.chosen
    if selection.chosen == LIGHTGBM and selection.lightgbm is not None:
        tuned = selection.lightgbm
        mode = MODE_NAMES[search_mode(tuned)]
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
