"""Always-valid inference on the difference of two conversion rates, for experiments read nightly.

An experiment's readout is looked at every night. A fixed-sample test (a z-test at 5%) looked at
thirty times declares a winner in about a quarter of experiments where there is none. This module
implements the mixture sequential probability ratio test (mSPRT) with a normal mixing
distribution, in the form of

    Ramesh Johari, Pete Koomen, Leonid Pekelis and David Walsh, "Always Valid Inference:
    Continuous Monitoring of A/B Tests", Operations Research 70(3):1806-1821, 2022
    (first as "Peeking at A/B Tests: Why it matters, and what to do about it", KDD 2017),

the method behind Optimizely's Stats Engine. With ``theta`` the difference of the rates
(arm B minus arm A), ``d`` its estimate and ``V`` the estimate's variance, the mixture
likelihood ratio against ``theta = 0`` under a ``N(0, tau^2)`` mixture is

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

and ``p = min over looks of 1 / Lambda`` is an always-valid p-value: under ``theta = 0`` the
chance that it *ever* falls below ``alpha``, however often and whenever it is looked at, is at
most ``alpha`` (asymptotically, through the normal approximation of the rates). Inverting the
test gives a confidence sequence: ``d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) +
log((V + tau^2) / V)))`` holds the true difference at every look at once with probability at least
``1 - alpha``; the running intersection over looks keeps that guarantee.

``tau`` tunes where the test has its power: it is set to the difference the experiment was
planned to detect (the minimum lift of interest times the baseline rate), as the paper advises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chisquare, norm

# a rate is judged only once each arm has this many outcomes and wins plus losses: the normal
# approximation the guarantee rests on is poor below it
MIN_OUTCOMES = 30
MIN_EVENTS = 5


@dataclass(frozen=True)
class Looks:
    """The test at each look (one per night), cumulative: arrays of the same length."""

    difference: np.ndarray  # rate B - rate A at the look (NaN before MIN_OUTCOMES)
    p_value: np.ndarray  # always-valid p-value: the running minimum of 1 / Lambda
    low: np.ndarray  # confidence sequence of the difference (running intersection)
    high: np.ndarray

    def last(self) -> tuple[float, float, float, float]:
        """(difference, p-value, low, high) at the latest look."""
        return (
            float(self.difference[-1]),
            float(self.p_value[-1]),
            float(self.low[-1]),
            float(self.high[-1]),
        )


def _variance(wins: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The variance of a rate's estimate; the rate shrunk half a lead to 1/2 so that 0 wins do not
    give a variance of 0 (and a certain verdict) on a small arm."""
    shrunk = (wins + 0.5) / (leads + 1.0)
    return shrunk * (1.0 - shrunk) / np.maximum(leads, 1.0)


def log_mixture_ratio(difference: np.ndarray, variance: np.ndarray, tau: float) -> np.ndarray:
    """log Lambda of the normal-mixture SPRT (the module's formula), computed in logs."""
    tau2 = tau * tau
    return 0.5 * np.log(variance / (variance + tau2)) + difference**2 * tau2 / (
        2.0 * variance * (variance + tau2)
    )


def half_width(variance: np.ndarray | float, tau: float, alpha: float) -> np.ndarray:
    """Half the width of the confidence sequence at a look with this variance."""
    tau2 = tau * tau
    variance = np.asarray(variance, dtype=np.float64)
    return np.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2.0 * math.log(1.0 / alpha) + np.log((variance + tau2) / variance))
    )


def sequential_looks(
    wins_a: np.ndarray,
    leads_a: np.ndarray,
    wins_b: np.ndarray,
    leads_b: np.ndarray,
    tau: float,
    alpha: float,
) -> Looks:
    """The mSPRT at each look from the cumulative wins and outcomes of arms A and B at that look.

    Looks before both arms reach :data:`MIN_OUTCOMES` outcomes and :data:`MIN_EVENTS` wins and
    losses have a NaN difference, a p-value of 1 and an unbounded interval: they neither count
    nor spend anything.
    """
    wins_a, leads_a, wins_b, leads_b = (
        np.asarray(x, dtype=np.float64) for x in (wins_a, leads_a, wins_b, leads_b)
    )
    ready = (np.minimum(leads_a, leads_b) >= MIN_OUTCOMES) & (
        np.minimum.reduce([wins_a, wins_b, leads_a - wins_a, leads_b - wins_b]) >= MIN_EVENTS
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = np.where(ready, wins_b / leads_b - wins_a / leads_a, np.nan)
        variance = _variance(wins_a, leads_a) + _variance(wins_b, leads_b)
        log_ratio = np.where(ready, log_mixture_ratio(difference, variance, tau), -np.inf)
        width = np.where(ready, half_width(variance, tau, alpha), np.inf)
    p_value = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_ratio)))
    low = np.maximum.accumulate(np.where(ready, difference - width, -np.inf))
    high = np.minimum.accumulate(np.where(ready, difference + width, np.inf))
    return Looks(difference=difference, p_value=p_value, low=low, high=high)


def detection_chance(
    rate_a: float, rate_b: float, leads: float, share_a: float, share_b: float, tau: float, alpha: float
) -> float:
    """The chance that the test has rejected by the time ``leads`` compared leads have outcomes.

    The chance of crossing the boundary at that last look alone: a lower bound of the chance of
    having crossed at any look up to it (the test may cross earlier and drift back).
    """
    n_a, n_b = leads * share_a / (share_a + share_b), leads * share_b / (share_a + share_b)
    variance = rate_a * (1 - rate_a) / n_a + rate_b * (1 - rate_b) / n_b
    width = float(half_width(variance, tau, alpha))
    scale = math.sqrt(variance)
    difference = rate_b - rate_a
    return float(norm.cdf((difference - width) / scale) + norm.cdf((-difference - width) / scale))


def planned_leads(
    rate_a: float, lift: float, share_a: float, share_b: float, alpha: float, power: float
) -> int:
    """About how many compared leads with outcomes (both arms together) the test needs to detect a
    relative ``lift`` of ``rate_a`` with at least ``power`` (see :func:`detection_chance`)."""
    rate_b = min(rate_a * (1.0 + lift), 1.0 - 1e-9)
    tau = abs(rate_b - rate_a)
    if not 0.0 < rate_a < 1.0 or tau == 0.0:
        raise ValueError(f"no sample size for a rate of {rate_a} and a lift of {lift}")
    low, high = 2.0, 2.0
    while detection_chance(rate_a, rate_b, high, share_a, share_b, tau, alpha) < power:
        low, high = high, high * 2.0
        if high > 1e12:
            raise ValueError(f"a lift of {lift} on a rate of {rate_a} cannot be detected")
    while high - low > 1.0:
        middle = (low + high) / 2.0
        if detection_chance(rate_a, rate_b, middle, share_a, share_b, tau, alpha) >= power:
            high = middle
        else:
            low = middle
    return math.ceil(high)


def sample_ratio_p_value(counts: np.ndarray, shares: np.ndarray) -> float:
    """Chi-square test of the arms' lead counts against their shares (a sample ratio mismatch: a
    broken assignment or a lost partition makes any comparison of the arms meaningless)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() == 0 or len(counts) < 2:
        return 1.0
    expected = np.asarray(shares, dtype=np.float64) / np.sum(shares) * counts.sum()
    return float(chisquare(counts, expected).pvalue)
