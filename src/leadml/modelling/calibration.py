"""Calibrators: map a model's margin (log-odds) to a probability that means what it says.

Fitted on the calibration window, after the model. Every calibrator is monotone
non-decreasing in the margin, so the calibrated model keeps the booster's ranking of
leads, except that isotonic regression is a step function: leads whose margins fall on
one step get the same probability (ties). ``describe()`` reports how many steps there are.

``recent_fraction`` fits the calibrator on the latest part of its rows only
(:meth:`CalibrationSettings.window`): when the base rate drifts, a map fitted on recent rows
misses the next period by less. ``describe()`` records which rows the calibrator saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from leadml.data import schema as s
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.split import latest_rows, position_column

logger = logging.getLogger(__name__)

PROBABILITY_FLOOR = 1e-6
METHODS: tuple[str, ...] = ("isotonic", "sigmoid", "none", "auto")
# "none" competes too: a calibrator is kept only where it lowers out-of-sample log loss
AUTO_CANDIDATES: tuple[str, ...] = ("isotonic", "sigmoid", "none")


@dataclass(frozen=True)
class CalibrationSettings:
    name: str = "isotonic"  # one of METHODS
    cv_folds: int = 5  # folds for method "auto"
    seed: int = 0
    # fit on the latest share of the calibration rows only (the out-of-sample predictions of the
    # validation folds); None: all of them
    recent_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise LeadmlError(f"calibration.name must be one of {METHODS}, got {self.name!r}")
        if self.cv_folds < 2:
            raise LeadmlError("calibration.cv_folds must be at least 2")
        if self.recent_fraction is not None and not 0 < self.recent_fraction <= 1:
            raise LeadmlError(
                f"calibration.recent_fraction must be null or in (0, 1], got {self.recent_fraction}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> CalibrationSettings:
        return cls(**known_settings(cls, mapping, "calibration"))

    def window(self, calibration: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        """(rows to fit the calibrator on, their description for ``fit_calibrator(window=...)``).

        The whole calibration window, or with ``recent_fraction`` its latest rows by ``as_of``
        (whole dates kept together), else ``order_key``, else row order.
        """
        if self.recent_fraction is None or self.recent_fraction >= 1:
            return calibration, describe_window(calibration, len(calibration), None)
        rows = latest_rows(calibration, self.recent_fraction)
        return rows, describe_window(rows, len(calibration), self.recent_fraction)


def describe_window(rows: pd.DataFrame, of_rows: int, recent_fraction: float | None) -> dict[str, Any]:
    """``calibration_rows`` and a sentence naming the rows a calibrator is fitted on."""
    positives = int(rows[s.LABEL].sum()) if s.LABEL in rows.columns else 0
    column = position_column(rows)
    span = ""
    if column is not None and len(rows):
        first, last = (_plain(value) for value in (rows[column].min(), rows[column].max()))
        span = f" ({column} {first} to {last})"
    which = (
        "every out-of-sample row"
        if recent_fraction is None
        else f"the latest {recent_fraction:.0%} of the out-of-sample rows"
    )
    return {
        "calibration_rows": len(rows),
        "calibration_window": f"{which}{span}: {len(rows):,} of {of_rows:,} rows, {positives:,} positives",
    }


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Calibrator(Protocol):
    method: str

    def predict_proba(self, margin: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def _clip(probability: np.ndarray) -> np.ndarray:
    return np.clip(probability, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


@dataclass
class IdentityCalibrator:
    """No calibration: the sigmoid of the margin."""

    method: str = "none"
    details: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, margin: np.ndarray) -> np.ndarray:
        return _clip(expit(np.asarray(margin, dtype=np.float64)))

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "preserves_ranking": "exactly", **self.details}


@dataclass
class SigmoidCalibrator:
    """Platt scaling on the margin: p = sigmoid(slope * margin + intercept), slope >= 0."""

    slope: float
    intercept: float
    method: str = "sigmoid"
    details: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, margin: np.ndarray) -> np.ndarray:
        return _clip(expit(self.slope * np.asarray(margin, dtype=np.float64) + self.intercept))

    def describe(self) -> dict[str, Any]:
        ranking = "exactly" if self.slope > 0 else "no (constant: the margin carries no signal)"
        return {
            "method": self.method,
            "slope": self.slope,
            "intercept": self.intercept,
            "preserves_ranking": ranking,
            **self.details,
        }


@dataclass
class IsotonicCalibrator:
    """Centred isotonic regression of the label on the margin (Oron and Flournoy, 2017).

    Plain isotonic regression is a step function: every lead on one step gets the same
    probability, which throws away ranking (ROC AUC) the model had. Here each step is replaced by
    its centre and the probability interpolates linearly between centres, so it rises strictly
    with the margin inside the fitted range and stays flat (clipped) beyond the outer centres.

    Held as plain arrays (the fitted regression's thresholds and the margin range it saw), so the
    saved model stores them as data (:mod:`leadml.modelling.scorer_state`).
    """

    x_thresholds: np.ndarray
    y_thresholds: np.ndarray
    margin_range: tuple[float, float]
    method: str = "isotonic"
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_regression(cls, regression: IsotonicRegression) -> IsotonicCalibrator:
        return cls(
            np.asarray(regression.X_thresholds_, dtype=np.float64),
            np.asarray(regression.y_thresholds_, dtype=np.float64),
            (float(regression.X_min_), float(regression.X_max_)),
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A calibrator pickled when it held the fitted ``IsotonicRegression`` itself (before 0.2.0)."""
        regression = state.pop("regression", None)
        if regression is not None:
            state = {**vars(IsotonicCalibrator.from_regression(regression)), **state}  # its method, details
        self.__dict__.update(state)

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.x_thresholds, self.y_thresholds
        levels, block = np.unique(y, return_inverse=True)
        centres = np.bincount(block, weights=x) / np.bincount(block)
        return centres, levels

    def predict_proba(self, margin: np.ndarray) -> np.ndarray:
        centres, levels = self._knots()
        values = np.asarray(margin, dtype=np.float64)
        probability = np.interp(values, centres, levels)
        # beyond the outer centres the map is flat; a vanishing slope keeps the margin's order there
        # too (ties would cost ROC AUC), moving no probability by 2e-6 or more
        outside = values - np.clip(values, centres[0], centres[-1])
        return _clip(probability + 1e-6 * np.arctan(outside))

    def describe(self) -> dict[str, Any]:
        levels = np.unique(self.y_thresholds)
        return {
            "method": self.method,
            "steps": len(levels),
            "margin_range": [float(self.margin_range[0]), float(self.margin_range[1])],
            "preserves_ranking": "exactly (interpolated between the steps' centres)",
            **self.details,
        }


@dataclass
class RelativeCalibrator:
    """A calibrator of margins relative to the base log-odds of the model's training rows.

    ``predict_proba(margin)`` is ``inner.predict_proba(margin - offset)``, ``offset`` being the
    log-odds of the positive rate the model was fitted on (``leadml.modelling.folds.base_log_odds``):
    the calibrator was fitted on out-of-sample margins of models fitted on earlier histories,
    each taken relative to its own history's rate, so a refit on a history with another rate is
    mapped the same way. Monotone in the margin like ``inner``.
    """

    inner: Calibrator
    offset: float
    level: float = 0.0  # log-odds added to the calibrated probability (``level_shift``)

    @property
    def method(self) -> str:
        return self.inner.method

    @property
    def details(self) -> dict[str, Any]:
        return self.inner.details  # type: ignore[attr-defined,no-any-return]

    def predict_proba(self, margin: np.ndarray) -> np.ndarray:
        probability = self.inner.predict_proba(np.asarray(margin, dtype=np.float64) - self.offset)
        return shift_log_odds(probability, self.level) if self.level else probability

    def describe(self) -> dict[str, Any]:
        levelled = {"level_shift": self.level} if self.level else {}
        return {**self.inner.describe(), "margin_offset": self.offset, **levelled}


def shift_log_odds(probability: np.ndarray, shift: float) -> np.ndarray:
    """Every probability moved by one constant in log-odds (a monotone map: ranking kept)."""
    return _clip(expit(logit(_clip(np.asarray(probability, dtype=np.float64))) + shift))


def level_shift(probability: np.ndarray, rate: float) -> float:
    """The constant in log-odds that moves the mean of ``probability`` to ``rate``.

    Calibration-in-the-large on the latest rows: the shape (how probabilities spread around
    their mean) stays the calibrator's, the level follows the latest base rate. 0 when ``rate``
    is 0 or 1 (no finite shift reaches it).
    """
    if not 0 < rate < 1:
        return 0.0
    margin = logit(_clip(np.asarray(probability, dtype=np.float64)))
    low, high = -20.0, 20.0
    for _ in range(60):  # bisection: the mean probability rises with the shift
        middle = (low + high) / 2
        if expit(margin + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def fit_calibrator(
    scores_margin: np.ndarray,
    labels: np.ndarray,
    method: str,
    *,
    cv_folds: int = 5,
    seed: int = 0,
    window: Mapping[str, Any] | None = None,
) -> Calibrator:
    """A calibrator from margins and 0/1 labels of the calibration window.

    ``auto`` compares isotonic and sigmoid by mean log loss over stratified ``cv_folds``
    folds of these rows, records both losses, and refits the winner on all rows.
    ``window`` (from :meth:`CalibrationSettings.window`) is kept in ``describe()``.
    """
    margin = np.asarray(scores_margin, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    _check_inputs(margin, y, method)
    if method == "auto":
        losses = cross_validated_log_loss(margin, y, AUTO_CANDIDATES, cv_folds=cv_folds, seed=seed)
        choice = min(losses, key=losses.__getitem__)
        calibrator = _fit_one(margin, y, choice)
        calibrator.details.update({"chosen_by": "auto", "cv_log_loss": losses, "cv_folds": cv_folds})
        logger.info(
            "calibration auto: %s (cv log loss %s)", choice, {k: round(v, 5) for k, v in losses.items()}
        )
    else:
        calibrator = _fit_one(margin, y, method)
    calibrator.details.update(window or {})
    return calibrator


def cross_validated_log_loss(
    margin: np.ndarray, labels: np.ndarray, methods: tuple[str, ...], *, cv_folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Mean held-out log loss of each method over the same stratified folds."""
    folds = min(cv_folds, int(np.bincount(labels, minlength=2).min()))
    if folds < 2:
        raise LeadmlError("calibration auto needs at least 2 rows of each label")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    losses: dict[str, list[float]] = {method: [] for method in methods}
    for fit_index, held_index in splitter.split(margin.reshape(-1, 1), labels):
        for method in methods:
            calibrator = _fit_one(margin[fit_index], labels[fit_index], method)
            predicted = calibrator.predict_proba(margin[held_index])
            losses[method].append(log_loss(labels[held_index], predicted, labels=[0, 1]))
    return {method: float(np.mean(values)) for method, values in losses.items()}


def _fit_one(
    margin: np.ndarray, labels: np.ndarray, method: str
) -> IsotonicCalibrator | SigmoidCalibrator | IdentityCalibrator:
    if method == "isotonic":
        regression = IsotonicRegression(
            y_min=PROBABILITY_FLOOR, y_max=1 - PROBABILITY_FLOOR, increasing=True, out_of_bounds="clip"
        )
        regression.fit(margin, labels.astype(np.float64))
        return IsotonicCalibrator.from_regression(regression)
    if method == "sigmoid":
        slope, intercept = _platt(margin, labels)
        return SigmoidCalibrator(slope, intercept)
    if method == "none":
        return IdentityCalibrator()
    raise LeadmlError(f"calibration method must be one of {METHODS}, got {method!r}")


def _platt(margin: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    # Unpenalised logistic fit of two parameters; the slope is bounded at zero so the
    # calibrator can never reverse the model's ranking.
    def loss_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = params[0] * margin + params[1]
        loss = -np.mean(labels * log_expit(z) + (1 - labels) * log_expit(-z))
        residual = expit(z) - labels
        return float(loss), np.array([np.mean(residual * margin), np.mean(residual)])

    rate = float(np.clip(labels.mean(), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))
    start = np.array([1.0, 0.0]) if margin.std() > 0 else np.array([0.0, np.log(rate / (1 - rate))])
    result = minimize(
        loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)]
    )
    return float(result.x[0]), float(result.x[1])


def _check_inputs(margin: np.ndarray, labels: np.ndarray, method: str) -> None:
    if method not in METHODS:
        raise LeadmlError(f"calibration method must be one of {METHODS}, got {method!r}")
    if margin.shape != labels.shape or margin.ndim != 1:
        raise LeadmlError(f"calibration needs one margin per label, got {margin.shape} and {labels.shape}")
    if not np.isfinite(margin).all():
        raise LeadmlError("calibration margins must be finite")
    if method != "none" and len(np.unique(labels)) < 2:
        raise LeadmlError("calibration needs both labels in the calibration window")


def fit_on_window(
    margin: Callable[[pd.DataFrame], np.ndarray], calibration: pd.DataFrame, settings: CalibrationSettings
) -> Calibrator:
    """The calibrator ``settings`` name, fitted on (the recent part of) the calibration window's rows,
    ``margin`` being the model's margin function; its description says which rows it saw."""
    rows, window = settings.window(calibration)
    return fit_calibrator(
        margin(rows),
        rows[s.LABEL].to_numpy(),
        settings.name,
        cv_folds=settings.cv_folds,
        seed=settings.seed,
        window=window,
    )
