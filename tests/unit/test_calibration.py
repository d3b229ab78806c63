"""Calibrators map a margin to a probability, monotonely and within bounds."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.calibration import PROBABILITY_FLOOR, CalibrationSettings, fit_calibrator

METHODS = ("isotonic", "sigmoid", "none", "auto")


def sigmoid_truth(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Margins whose true probability is a smooth sigmoid of the margin (scaled and shifted)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2, n)
    return margin, (rng.random(n) < expit(0.5 * margin - 1.0)).astype(int)


def step_truth(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Margins whose true probability jumps from 0.05 to 0.9 at margin 1: no sigmoid fits it."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2, n)
    return margin, (rng.random(n) < np.where(margin > 1, 0.9, 0.05)).astype(int)


@pytest.mark.parametrize("method", METHODS)
def test_calibrators_are_monotone_bounded_and_picklable(method: str) -> None:
    margin, labels = sigmoid_truth()
    calibrator = fit_calibrator(margin, labels, method)
    grid = np.linspace(-30, 30, 2001)  # far outside the fitted range too
    probability = calibrator.predict_proba(grid)
    assert (np.diff(probability) >= 0).all()
    assert probability.min() >= PROBABILITY_FLOOR and probability.max() <= 1 - PROBABILITY_FLOOR
    restored = pickle.loads(pickle.dumps(calibrator))
    np.testing.assert_array_equal(restored.predict_proba(grid), probability)
    description = calibrator.describe()
    assert description["method"] == calibrator.method and "preserves_ranking" in description


def test_isotonic_lowers_the_log_loss_of_a_miscalibrated_score() -> None:
    margin, labels = sigmoid_truth(seed=1)
    held_margin, held_labels = sigmoid_truth(seed=2)
    calibrator = fit_calibrator(margin, labels, "isotonic")
    raw = log_loss(held_labels, expit(held_margin))  # overconfident and shifted
    calibrated = log_loss(held_labels, calibrator.predict_proba(held_margin))
    assert calibrated < raw - 0.05
    assert calibrator.describe()["steps"] > 2


@pytest.mark.parametrize(("make", "expected"), [(sigmoid_truth, "sigmoid"), (step_truth, "isotonic")])
def test_auto_picks_the_method_that_fits_the_truth(make, expected: str) -> None:
    margin, labels = make()
    calibrator = fit_calibrator(margin, labels, "auto", cv_folds=5, seed=0)
    description = calibrator.describe()
    assert calibrator.method == expected
    assert description["chosen_by"] == "auto"
    losses = description["cv_log_loss"]
    assert set(losses) == {"isotonic", "sigmoid", "none"} and losses[expected] == min(losses.values())


def test_sigmoid_recovers_platt_parameters_and_never_reverses_the_ranking() -> None:
    margin, labels = sigmoid_truth(n=20000)
    calibrator = fit_calibrator(margin, labels, "sigmoid")
    assert calibrator.slope == pytest.approx(0.5, abs=0.05)
    assert calibrator.intercept == pytest.approx(-1.0, abs=0.1)
    reversed_calibrator = fit_calibrator(-margin, labels, "sigmoid")
    assert reversed_calibrator.slope == 0.0  # a flat line at the base rate, not a reversal
    assert reversed_calibrator.predict_proba(np.array([0.0]))[0] == pytest.approx(labels.mean(), abs=0.01)


def test_none_is_the_sigmoid_of_the_margin() -> None:
    margin, labels = sigmoid_truth(n=100)
    np.testing.assert_allclose(fit_calibrator(margin, labels, "none").predict_proba(margin), expit(margin))


def test_bad_inputs_fail_with_a_clear_message() -> None:
    with pytest.raises(LeadmlError, match="method"):
        fit_calibrator(np.zeros(4), np.array([0, 1, 0, 1]), "beta")
    with pytest.raises(LeadmlError, match="both labels"):
        fit_calibrator(np.zeros(4), np.zeros(4), "isotonic")
    with pytest.raises(LeadmlError, match="finite"):
        fit_calibrator(np.array([0.0, np.nan]), np.array([0, 1]), "sigmoid")
    with pytest.raises(LeadmlError, match="cv_fold"):
        CalibrationSettings.from_mapping({"name": "auto", "cv_fold": 3})


def _calibration_window(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A calibration window over 8 weekly dates of 50 rows each."""
    rng = np.random.default_rng(seed)
    dates = pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(7 * (np.arange(n) // 50), unit="D")
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i}" for i in range(n)],
            s.AS_OF: dates,
            s.LABEL: (rng.random(n) < 0.3).astype("int8"),
        }
    ).sample(frac=1, random_state=seed)  # row order must not matter


def test_recent_window_keeps_the_latest_whole_dates_and_says_so() -> None:
    frame = _calibration_window()
    rows, window = CalibrationSettings(recent_fraction=0.3).window(frame)
    assert len(rows) == 150  # 30% of 400 rows is 120, rounded up to the 3 latest whole dates
    assert rows[s.AS_OF].min() == frame[s.AS_OF].max() - pd.Timedelta(weeks=2)
    assert window["calibration_rows"] == 150
    assert window["calibration_window"].startswith(
        "the latest 30% of the out-of-sample rows (as_of 2025-02-10 to 2025-02-24): 150 of 400 rows"
    )
    whole, described = CalibrationSettings().window(frame)
    assert whole is frame and described["calibration_window"].startswith("every out-of-sample row")
    ordered = frame.drop(columns=[s.AS_OF]).assign(**{s.ORDER_KEY: np.arange(400.0)})
    recent, _ = CalibrationSettings(recent_fraction=0.25).window(ordered)
    assert sorted(recent[s.ORDER_KEY]) == list(np.arange(300.0, 400.0))
    unordered = frame.drop(columns=[s.AS_OF])
    assert CalibrationSettings(recent_fraction=0.1).window(unordered)[0].equals(unordered.iloc[-40:])


def test_calibrator_records_its_window() -> None:
    margin, labels = sigmoid_truth(n=500)
    window = {"calibration_rows": 500, "calibration_window": "the whole calibration window: 500 of 500 rows"}
    for method in METHODS:
        description = fit_calibrator(margin, labels, method, window=window).describe()
        assert description["calibration_rows"] == 500 and "whole" in description["calibration_window"]


def test_recent_window_follows_a_rising_base_rate() -> None:
    rng = np.random.default_rng(3)
    n = 8000
    margin = rng.normal(0, 1.5, n + 2000)
    shift = np.linspace(-2.5, -0.5, n + 2000)  # the base rate climbs over the rows
    labels = (rng.random(n + 2000) < expit(margin + shift)).astype(int)
    frame = pd.DataFrame({s.ORDER_KEY: np.arange(n, dtype=float), s.LABEL: labels[:n], "margin": margin[:n]})
    test_margin, test_labels = margin[n:], labels[n:]
    errors = {}
    for fraction in (None, 0.2):
        rows, window = CalibrationSettings(recent_fraction=fraction).window(frame)
        calibrator = fit_calibrator(
            rows["margin"].to_numpy(), rows[s.LABEL].to_numpy(), "sigmoid", window=window
        )
        errors[fraction] = abs(calibrator.predict_proba(test_margin).mean() - test_labels.mean())
    assert errors[0.2] < errors[None] / 2


def test_recent_fraction_must_be_a_share() -> None:
    for bad in (0, -0.1, 1.5):
        with pytest.raises(LeadmlError, match="recent_fraction"):
            CalibrationSettings(recent_fraction=bad)
    assert CalibrationSettings.from_mapping({"name": "auto", "recent_fraction": None}).recent_fraction is None


def test_isotonic_keeps_the_ranking_between_its_steps() -> None:
    """Centred isotonic regression: probabilities interpolate between the steps' centres, so two
    leads with different margins inside the fitted range never tie (ties cost ROC AUC)."""
    rng = np.random.default_rng(3)
    margin = rng.normal(size=3000)
    labels = (rng.random(3000) < 1 / (1 + np.exp(-margin))).astype(int)
    calibrator = fit_calibrator(margin, labels, "isotonic")
    inside = np.sort(rng.uniform(*np.quantile(margin, [0.2, 0.8]), size=500))
    probability = calibrator.predict_proba(inside)
    assert (np.diff(probability) > 0).all()
    assert calibrator.describe()["preserves_ranking"].startswith("exactly")
    # still a calibration: the mean matches the rate
    assert abs(calibrator.predict_proba(margin).mean() - labels.mean()) < 0.01
