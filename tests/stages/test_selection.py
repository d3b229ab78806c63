"""Model selection in time and the refit: each failure mode of issue 17 on small generated data.

- a few hundred rows with real signal give a model that splits, and no "no signal" verdict;
- labels independent of the features give "no signal";
- validation folds never put a lead (or a group of copies) on both sides;
- under a rising base rate, the refit on every labelled row beats the model of the training window;
- where the relation drifts, recent rows are weighted more, chosen on the latest folds;
- the gate allows for the test window's size and a moved base rate, says "too little data",
  "keep the sheet" and "fitting failure" when they are the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from factories import flat_leads
from leadml.cli import CONFIG_DIR
from leadml.data import schema as s
from leadml.data.features import flat_feature_metadata
from leadml.modelling.calibration import CalibrationSettings, fit_calibrator
from leadml.modelling.folds import SelectionSettings, fold_weights, validation_folds
from leadml.modelling.gate import (
    FITTING_FAILURE,
    KEEP_THE_SHEET,
    NO_SIGNAL,
    GateEvidence,
    InTimeCalibration,
    fitting_failure_reason,
    promotion_gate,
)
from leadml.modelling.models import (
    LightGBMSettings,
    LogRegSettings,
    fit_lightgbm_rounds,
    fit_logreg,
    recency_weights,
    sized_lightgbm,
    time_axis,
)
from leadml.modelling.search import cross_validate_lightgbm, cv_data_of
from leadml.modelling.selection import LIGHTGBM, LOGREG, MARGIN, select_model
from leadml.modelling.train import TOO_LITTLE_DATA, in_time_calibration, latest_calibrator, train_and_evaluate
from leadml.stages.train import unseen_rows

GATE = {
    "min_roc_auc": 0.6,
    "max_ece": 0.03,
    "min_gain_over_logreg": 0.0,
    "min_gain_over_points": 0.0,
    "champion_tolerance": 0.005,
}


def leads(
    n: int, seed: int = 0, signal: float = 1.0, rates: tuple[float, float] = (0.2, 0.2)
) -> pd.DataFrame:
    """One row per lead in order: two numbers and a channel carry ``signal``; the base rate moves
    from ``rates[0]`` to ``rates[1]`` over the rows."""
    return flat_leads(n, seed, rates, signal, event=0.8)


def config(*overrides: str) -> dict[str, Any]:
    """The composed train config for generated flat data: order split, no points sheet."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            [
                "split=order",
                "evaluation.bootstrap=100",
                "evaluation.shap_rows=100",
                "selection.trials=6",
                "++data.points=null",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def train(frame: pd.DataFrame, *overrides: str, deploy: bool = True):  # type: ignore[no-untyped-def]
    metadata = flat_feature_metadata(frame, {"x1": "fit", "x2": "engagement"})
    return train_and_evaluate(frame, metadata, config(*overrides), deploy=deploy)


def gate(result: Any, settings: dict[str, Any] | None = None) -> Any:
    """The gate as the train stage calls it."""
    from leadml.modelling.gate import gate_evidence
    from leadml.modelling.train import base_rate_drift

    metrics = result.comparison
    evidence = gate_evidence(result, bool(base_rate_drift(result.split)["flagged"]))
    return promotion_gate(
        metrics.loc[result.model_name], metrics.loc["logreg_baseline"], None, settings or GATE, None, evidence
    )


# --------------------------------------------------------------------------- small data, real signal
def test_a_few_hundred_rows_with_signal_give_a_model_that_splits_and_no_no_signal_verdict() -> None:
    result = train(leads(600, seed=1), "selection.trials=4")
    model = result.evaluated.model
    if result.selection.chosen == LIGHTGBM:
        assert model.fit_report["split_trees"] > 0
    margin = model.predict_margin(result.test)
    assert np.std(margin) > 0, "a constant model"
    decision = gate(result)
    assert not any(reason.startswith(NO_SIGNAL) for reason in decision.reasons)
    # 600 rows are fewer than guards.min_snapshots: trained, then refused for that reason
    assert any(reason.startswith(TOO_LITTLE_DATA) for reason in decision.reasons)
    assert result.comparison.loc["lightgbm", "roc_auc"] > 0.65


def test_the_default_leaf_size_follows_the_data() -> None:
    auto = LightGBMSettings(num_leaves=None, min_child_samples=None)
    small, large = sized_lightgbm(auto, 400, 80), sized_lightgbm(auto, 300_000, 30_000)
    assert (small.min_child_samples, small.num_leaves) == (10, 7)
    assert (large.min_child_samples, large.num_leaves) == (300, 15)
    frame = leads(400, seed=2)
    model = fit_lightgbm_rounds(frame, small, 50)
    assert model.fit_report["split_trees"] > 0


def test_a_model_without_a_split_is_a_fitting_failure_not_no_signal() -> None:
    frame = leads(400, seed=3)
    model = fit_lightgbm_rounds(frame, LightGBMSettings(min_child_samples=300, num_leaves=15), 30)
    assert model.fit_report["split_trees"] == 0
    reason = fitting_failure_reason(model)
    assert reason is not None and reason.startswith(FITTING_FAILURE) and "min_child_samples 300" in reason
    chance = {"roc_auc": 0.5, "roc_auc_low": 0.5, "roc_auc_high": 0.5, "ece": 0.01}
    decision = promotion_gate(
        chance, {"roc_auc": 0.7}, None, GATE, None, GateEvidence(fitting_failure=reason)
    )
    assert decision.reasons[0].startswith(FITTING_FAILURE)
    assert not any(r.startswith(NO_SIGNAL) for r in decision.reasons)


def test_labels_independent_of_the_features_give_no_signal() -> None:
    result = train(leads(6000, seed=4, signal=0.0), "selection.trials=3")
    decision = gate(result, {**GATE, "min_roc_auc": 0.0, "max_ece": 1.0, "min_gain_over_logreg": -1.0})
    assert not decision.promote
    assert any(reason.startswith(NO_SIGNAL) for reason in decision.reasons)


# --------------------------------------------------------------------------- folds
def test_validation_folds_are_later_than_their_fit_rows_and_keep_leads_and_copies_whole() -> None:
    frame = leads(3000, seed=5)
    # leads with several rows, and groups of copies
    frame[s.LEAD_ID] = [f"L{i // 3:05d}" for i in range(len(frame))]
    frame[s.ORDER_KEY] = np.arange(len(frame)) // 2
    frame[s.DUP_GROUP] = [f"G{i // 7:05d}" for i in range(len(frame))]
    folds = validation_folds(frame, SelectionSettings(folds=3, fold_share=0.15))
    assert len(folds) == 3
    position = frame[s.ORDER_KEY].to_numpy()
    for fold in folds:
        assert position[fold.fit].max() < position[fold.validate].min()
        for key in (s.LEAD_ID, s.DUP_GROUP):
            assert set(frame[key].iloc[fold.fit]).isdisjoint(frame[key].iloc[fold.validate])
    covered = np.concatenate([fold.validate for fold in folds])
    assert len(covered) == len(set(covered))


def test_data_without_time_gets_random_folds_of_whole_leads() -> None:
    frame = leads(2000, seed=6).drop(columns=[s.ORDER_KEY])
    folds = validation_folds(frame, SelectionSettings(folds=3, fold_share=0.2))
    assert len(folds) == 3
    for fold in folds:
        assert set(frame[s.LEAD_ID].iloc[fold.fit]).isdisjoint(frame[s.LEAD_ID].iloc[fold.validate])
        assert 350 <= len(fold.validate) <= 450


def test_selection_prefers_the_simpler_model_within_its_tolerance_and_records_every_trial() -> None:
    frame = leads(4000, seed=7)  # a linear truth: logistic regression is as good as trees
    metadata = flat_feature_metadata(frame, {})
    settings = SelectionSettings(trials=5, seconds=0, simpler_tolerance=0.02)  # trials only: not load-bound
    selection = select_model(
        frame, (LIGHTGBM, LOGREG), LightGBMSettings(), LogRegSettings(), settings, metadata
    )
    assert selection.chosen == LOGREG
    # the search's 5 trials, then its best settings with each of the 3 recency half-lives
    trials = selection.trials
    assert len(trials) == 5 + 3 and {"roc_auc", "trees", "boosting", "fold_roc_auc"} <= set(trials.columns)
    assert (trials["recency_half_life"].iloc[:5] == 0).all() and (
        trials["recency_half_life"].iloc[5:] > 0
    ).all()
    assert selection.oos.index.isin(frame.index).all() and np.isfinite(selection.oos["margin"]).all()
    assert "logistic regression" in selection.sentence
    strict = select_model(
        frame, (LIGHTGBM, LOGREG), LightGBMSettings(), LogRegSettings(), SelectionSettings(trials=1), metadata
    )
    table = strict.table
    expected = LOGREG if table.loc[LOGREG, "roc_auc"] >= table.loc[LIGHTGBM, "roc_auc"] - 0.002 else LIGHTGBM
    assert strict.chosen == expected


# --------------------------------------------------------------------------- recency
def drifting_leads(n: int, seed: int) -> pd.DataFrame:
    """Leads whose relation turns over the rows: x2 counts against a lead early and for it late
    (a campaign that changed whom it reaches), x1 pays off throughout."""
    frame = leads(n, seed=seed)
    progress = frame[s.ORDER_KEY].to_numpy() / n
    rng = np.random.default_rng(seed + 100)
    margin = -1.2 + frame["x1"].to_numpy() + (4 * progress - 2) * frame["x2"].to_numpy()
    frame[s.LABEL] = (rng.random(n) < expit(margin)).astype("int8")
    return frame


def test_recency_weights_halve_every_half_life_back_from_the_latest_row_and_average_one() -> None:
    frame = pd.DataFrame({s.ORDER_KEY: [0.0, 10.0, 20.0, 30.0]})
    weights = recency_weights(frame, 10.0)
    assert weights is not None
    assert np.allclose(weights[:-1] / weights[1:], 0.5) and np.isclose(weights.mean(), 1.0)
    assert recency_weights(frame, 0.0) is None
    assert recency_weights(frame.rename(columns={s.ORDER_KEY: "other"}), 10.0) is None
    dates = pd.DataFrame({s.AS_OF: pd.to_datetime(["2025-01-01", "2025-01-15"], utc=True)})
    assert np.allclose(np.diff(time_axis(dates)), 14.0)  # days, time zone or not
    assert np.allclose(
        time_axis(dates.assign(**{s.AS_OF: dates[s.AS_OF].dt.tz_localize(None)})), time_axis(dates)
    )


def test_the_latest_fold_weighs_most_where_the_rate_moves_and_otherwise_all_weigh_the_same() -> None:
    rising = leads(3000, seed=11, rates=(0.05, 0.3))
    settings = SelectionSettings(folds=3, fold_share=0.15, fold_weighting=2)
    labels = rising[s.LABEL].to_numpy()
    weights = fold_weights(validation_folds(rising, settings), settings, labels)
    assert np.allclose(weights, np.array([1, 2, 4]) / 7)
    random = validation_folds(rising.drop(columns=[s.ORDER_KEY]), settings)
    assert np.allclose(fold_weights(random, settings, labels), 1 / 3)
    assert np.allclose(
        fold_weights(validation_folds(rising, settings), SelectionSettings(fold_weighting=1), labels), 1 / 3
    )
    # where the rate is stable the folds weigh the same: weighting would only add noise
    frame = leads(3000, seed=11)
    assert np.allclose(
        fold_weights(validation_folds(frame, settings), settings, frame[s.LABEL].to_numpy()), 1 / 3
    )


def test_the_search_score_is_the_weighted_mean_of_each_fold_at_one_tree_count() -> None:
    frame = leads(3000, seed=12, rates=(0.05, 0.3))  # a moving rate: the folds weigh 1, 2, 4
    settings = SelectionSettings(folds=3, fold_share=0.15, max_search_rows=1500, fold_weighting=2)
    folds = validation_folds(frame, settings)
    data = cv_data_of(frame, folds, settings)
    assert np.allclose(data.weights, np.array([1, 2, 4]) / 7)
    lightgbm = LightGBMSettings(
        num_leaves=7, min_child_samples=20, learning_rate=0.1, recency_half_life=500.0
    )
    score, trees, per_fold = cross_validate_lightgbm(data, lightgbm, settings)
    assert settings.min_trees <= trees <= settings.max_trees
    assert np.isclose(score, float(data.weights @ np.asarray(per_fold)))
    # each fold's figure is the model of its own (sampled, weighted) fit rows with that many trees
    fit, validate = data.folds[-1]
    model = fit_lightgbm_rounds(frame.iloc[np.sort(fit)], lightgbm, trees)
    own = roc_auc_score(frame[s.LABEL].iloc[validate], model.predict_margin(frame.iloc[validate]))
    assert abs(own - per_fold[-1]) < 0.01  # the same model up to the binning of its rows


def test_where_the_relation_drifts_recent_rows_are_weighted_and_that_pays_later() -> None:
    frame = drifting_leads(6000, seed=13)
    metadata = flat_feature_metadata(frame, {})
    selection = select_model(
        frame,
        (LIGHTGBM, LOGREG),
        LightGBMSettings(),
        LogRegSettings(),
        SelectionSettings(trials=1, seconds=0),
        metadata,
    )
    assert selection.logreg.recency_half_life > 0
    assert "recent rows weighted" in selection.sentence or selection.chosen == LIGHTGBM
    later = drifting_leads(7500, seed=14).iloc[6000:]  # what comes after: x2 counts for a lead
    weighted = fit_logreg(frame, selection.logreg).predict_margin(later)
    plain = fit_logreg(frame, LogRegSettings()).predict_margin(later)
    assert roc_auc_score(later[s.LABEL], weighted) > roc_auc_score(later[s.LABEL], plain) + 0.02
    # recency is a choice of the folds, never imposed: none competes, and time-less data gets none
    timeless = select_model(
        frame.drop(columns=[s.ORDER_KEY]),
        (LOGREG,),
        LightGBMSettings(),
        LogRegSettings(),
        SelectionSettings(trials=1, seconds=0),
        metadata,
    )
    assert timeless.logreg.recency_half_life == 0


# --------------------------------------------------------------------------- refit
def test_under_a_rising_base_rate_the_refit_beats_the_training_window_model() -> None:
    frame = leads(12000, seed=8, rates=(0.04, 0.35))
    # the relation moves too: the event channel only pays off in the later rows
    late = frame[s.ORDER_KEY].to_numpy() > 0.6 * len(frame)
    rng = np.random.default_rng(9)
    boost = np.where(late & (frame["channel"] == "partner").to_numpy(), 2.0, 0.0)
    base = logit(0.04 + (0.35 - 0.04) * frame[s.ORDER_KEY].to_numpy() / len(frame))
    frame[s.LABEL] = (rng.random(len(frame)) < expit(base + frame["x1"] + boost)).astype("int8")
    result = train(frame, "selection.trials=3", "guards.min_snapshots=100", "guards.min_positives=10")
    assert result.deployment["refit"] and result.deployment["rows"] == len(result.development) + len(
        result.test
    )
    # score leads that come after every labelled row, drawn like the latest ones
    future = leads(4000, seed=10, rates=(0.35, 0.35))
    future[s.LABEL] = (
        rng.random(len(future))
        < expit(logit(0.35) + future["x1"] + np.where(future["channel"] == "partner", 2.0, 0.0))
    ).astype("int8")
    refit_auc = roc_auc_score(future[s.LABEL], result.scorer.predict(future)["probability"])
    window = result.windows["train"]
    old = train_and_evaluate(
        window,
        flat_feature_metadata(window, {}),
        config("selection.trials=3", "guards.min_snapshots=100", "guards.min_positives=10"),
        deploy=False,
    ).evaluated
    old_auc = roc_auc_score(future[s.LABEL], old.predict(future)["probability"])
    assert refit_auc > old_auc + 0.01
    # and the refit is calibrated to the latest base rate, not the history's
    assert abs(result.scorer.predict(future)["probability"].mean() - future[s.LABEL].mean()) < 0.08


def test_the_refit_records_what_it_saw_and_a_later_run_rescores_it_only_on_unseen_rows() -> None:
    test = pd.DataFrame({s.ORDER_KEY: [1.0, 5.0, 9.0]})
    trained = {"refit": True, "position_column": s.ORDER_KEY, "through": 5.0}
    assert unseen_rows(test, trained).tolist() == [False, False, True]
    assert unseen_rows(test, {}) is None  # an older champion: compared on every row as before
    assert not unseen_rows(test, {"refit": True, "position_column": None, "through": None}).any()
    dated = pd.DataFrame({s.AS_OF: pd.to_datetime(["2025-01-01", "2025-03-01"], utc=True)})
    stamp = {"refit": True, "position_column": s.AS_OF, "through": "2025-02-01T00:00:00+00:00"}
    assert unseen_rows(dated, stamp).tolist() == [False, True]


# --------------------------------------------------------------------------- calibration and the gate
def test_calibration_auto_keeps_no_calibrator_when_none_helps() -> None:
    rng = np.random.default_rng(11)
    margin = rng.normal(size=20000)
    labels = (rng.random(len(margin)) < expit(margin)).astype(int)  # already calibrated
    calibrator = fit_calibrator(margin, labels, "auto")
    assert "none" in calibrator.details["cv_log_loss"]
    assert calibrator.method == "none"
    shifted = (rng.random(len(margin)) < expit(2 * margin - 1)).astype(int)
    assert fit_calibrator(margin, shifted, "auto").method != "none"


def test_the_ece_ceiling_allows_for_a_small_test_window_but_not_for_real_miscalibration() -> None:
    noisy = {"roc_auc": 0.9, "ece": 0.035, "ece_low": 0.023, "ece_high": 0.050}
    decision = promotion_gate(noisy, {"roc_auc": 0.85}, None, GATE)
    assert decision.promote and any("inside the interval" in reason for reason in decision.reasons)
    bad = {"roc_auc": 0.9, "ece": 0.08, "ece_low": 0.06, "ece_high": 0.10}
    decision = promotion_gate(bad, {"roc_auc": 0.85}, None, GATE)
    assert not decision.promote and any("above the ceiling" in reason for reason in decision.reasons)


def moved_rate_rows(
    test_rates: tuple[float, float], seed: int = 12, n_test: int = 8000
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Labelled rows, out-of-sample margins of the folds (rate 5%) and of a test window whose
    rate goes from ``test_rates[0]`` to ``test_rates[1]`` over its rows; margins relative."""
    rng = np.random.default_rng(seed)
    n_folds = 6000
    margin = rng.normal(size=n_folds + n_test)
    base = np.concatenate([np.full(n_folds, logit(0.05)), logit(np.linspace(*test_rates, n_test))])
    labelled = pd.DataFrame(
        {
            s.LEAD_ID: np.arange(n_folds + n_test).astype(str),
            s.ORDER_KEY: np.arange(n_folds + n_test),
            s.LABEL: (rng.random(len(margin)) < expit(base + margin)).astype("int8"),
        }
    )
    folds = pd.Series(margin[:n_folds] + logit(0.05), index=labelled.index[:n_folds], name=MARGIN)
    test = pd.Series(margin[n_folds:] + logit(0.05), index=labelled.index[n_folds:], name=MARGIN)
    return labelled, folds, test


def test_a_moved_base_rate_is_judged_on_the_deployed_calibration_in_time() -> None:
    settings = CalibrationSettings.from_mapping({"name": "sigmoid"})
    moved = {"roc_auc": 0.75, "ece": 0.15, "ece_low": 0.14, "ece_high": 0.16}
    # the rate stepped up to 30% and stayed: levelled on the window's earlier half, the
    # deployed calibration is right on its later half
    settled = in_time_calibration(*moved_rate_rows((0.3, 0.3)), settings, n_boot=100, seed=0)
    assert settled["in_time_ece_low"] < 0.03 and abs(settled["in_time_mean_probability"] - 0.3) < 0.03
    evidence = GateEvidence(base_rate_moved=True, in_time=InTimeCalibration.of(settled))
    decision = promotion_gate(moved, {"roc_auc": 0.7}, None, GATE, None, evidence)
    assert decision.promote and any("base rate's move" in reason for reason in decision.reasons)
    # the rate kept rising inside the window: no calibrator fitted on the past follows it
    rising = in_time_calibration(*moved_rate_rows((0.1, 0.6)), settings, n_boot=100, seed=0)
    assert rising["in_time_ece_low"] > 0.03 and rising["in_time_rate_later"] > rising["in_time_rate_earlier"]
    evidence = GateEvidence(base_rate_moved=True, in_time=InTimeCalibration.of(rising))
    decision = promotion_gate(moved, {"roc_auc": 0.7}, None, GATE, None, evidence)
    assert not decision.promote and any("kept moving" in reason for reason in decision.reasons)


def test_the_deployed_calibrator_takes_its_level_from_the_latest_rows() -> None:
    labelled, folds, test = moved_rate_rows((0.3, 0.3), n_test=3000)
    settings = CalibrationSettings.from_mapping({"name": "sigmoid"})
    plain = latest_calibrator(labelled, folds, test, settings, level=False)
    levelled = latest_calibrator(labelled, folds, test, settings, level=True)
    rate = labelled.loc[test.index, s.LABEL].mean()
    assert abs(levelled.predict_proba(test.to_numpy()).mean() - rate) < 1e-6
    # without a level: fitted on the latest 6,000 rows, half of them folds at 5%
    assert plain.predict_proba(test.to_numpy()).mean() < rate - 0.05
    # a shift in log-odds keeps the ranking
    order = np.argsort(test.to_numpy())
    assert np.all(np.diff(levelled.predict_proba(test.to_numpy())[order]) >= 0)
    assert levelled.describe()["level_shift"] > 0


def test_too_little_data_and_a_better_sheet_are_said_as_such() -> None:
    good = {"roc_auc": 0.8, "ece": 0.01, "roc_auc_low": 0.75, "roc_auc_high": 0.85}
    note = f"{TOO_LITTLE_DATA}: 400 training snapshots, need at least 1000"
    decision = promotion_gate(good, {"roc_auc": 0.78}, None, GATE, None, GateEvidence(too_little_data=note))
    assert not decision.promote
    assert any(
        r.startswith(TOO_LITTLE_DATA) and "logistic baseline reached ROC AUC 0.7800" in r
        for r in decision.reasons
    )
    decision = promotion_gate(good, {"roc_auc": 0.78}, None, GATE, {"roc_auc": 0.83})
    assert not decision.promote
    sheet = [r for r in decision.reasons if r.startswith(KEEP_THE_SHEET)]
    assert sheet and "0.8300" in sheet[0] and "0.8000" in sheet[0]


def test_a_champion_trained_on_the_test_window_is_not_compared_on_it() -> None:
    good = {"roc_auc": 0.8, "ece": 0.01}
    note = {"note": "champion v3 was trained on this test window"}
    decision = promotion_gate(good, {"roc_auc": 0.7}, note, GATE)
    assert decision.promote and note["note"] in decision.reasons
