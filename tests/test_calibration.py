"""Calibrators map a margin to a probability, monotonely and within bounds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from leadml.calibration import PROBABILITY_FLOOR, CalibrationSettings, fit_calibrator
from leadml.errors import LeadmlError

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
    assert set(losses) == {"isotonic", "sigmoid"} and losses[expected] == min(losses.values())


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
