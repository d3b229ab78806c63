"""Performance before outcomes: what tonight's calibrated probabilities say the model will score.

A lead's outcome takes months to arrive, yet a calibrated probability already says how often a
lead like it converts. Taking every scored lead's outcome as an independent draw with its own
probability gives the *expected* ROC AUC, top-tier precision and conversions of tonight's
population: confidence-based performance estimation (CBPE), as NannyML does it
(https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html; the method
is the one of NannyML's "Estimating model performance without labels").

Own code, not the ``nannyml`` package: NannyML 0.13 pins ``lightgbm<4.6`` (this project runs
LightGBM 4.7) and brings FLAML, plotly, kaleido, seaborn, gcsfs and s3fs into the scoring
environment for one formula. The estimate here is also exact rather than a curve on a grid.

What it assumes, and cannot see: that the probabilities are calibrated *on tonight's leads*. A
shift in who the leads are (covariate shift) is what it estimates well; a change in what makes a
lead convert (concept drift) leaves the probabilities, and so the estimate, unmoved. Calibration
itself cannot be estimated without outcomes (by construction the estimate assumes it): what is
reported instead is where the expected conversions lie (per tier), for the report to check
against what happened once the outcomes are in.

Pure functions on arrays; no file I/O and no MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from leadml.modelling.evaluate import TierSettings, assign_tiers

# the chance that the realised ROC AUC falls in the estimate's interval, if calibration holds
INTERVAL_LEVEL = 0.95


@dataclass(frozen=True)
class PerformanceEstimate:
    """The performance tonight's scored leads are expected to show once their outcomes are in."""

    leads: int
    expected_conversions: float
    # expected ROC AUC (NaN: fewer than two leads, or every probability 0 or 1)
    roc_auc: float
    # the range the realised ROC AUC falls in with INTERVAL_LEVEL chance if calibration holds
    # (the outcomes' own randomness: roc_auc_interval); NaN when roc_auc is
    roc_auc_low: float
    roc_auc_high: float
    top_tier: str | None  # the highest tier holding a lead; None: no tiers given
    top_tier_leads: int
    top_tier_precision: float  # expected share of the top tier's leads that convert (NaN: none)
    # expected conversions per tier, highest tier first, and each tier's share of them
    conversions_by_tier: dict[str, float] = field(default_factory=dict)
    share_by_tier: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The estimate as plain JSON values (NaN as None), for the run record and MLflow."""
        return {
            "leads": self.leads,
            "expected_conversions": self.expected_conversions,
            "roc_auc": _plain(self.roc_auc),
            "roc_auc_interval": [_plain(self.roc_auc_low), _plain(self.roc_auc_high)],
            "top_tier": self.top_tier,
            "top_tier_leads": self.top_tier_leads,
            "top_tier_precision": _plain(self.top_tier_precision),
            "conversions_by_tier": dict(self.conversions_by_tier),
            "share_by_tier": dict(self.share_by_tier),
        }


def _plain(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def expected_roc_auc(probabilities: np.ndarray, scores: np.ndarray | None = None) -> float:
    """The ROC AUC expected when each lead converts independently with its ``probabilities``.

    Exact, in O(n log n): E[concordant pairs] / E[positive x negative pairs], every pair (i, j)
    weighted by P(i converts, j does not) = p_i (1 - p_j), a tie of ``scores`` counting one half
    (as ``sklearn.metrics.roc_auc_score`` counts it). ``scores``: what the leads are ranked by
    (default: the probabilities themselves, as the tiers rank them).

    A ratio of expectations, as NannyML's estimator (expected TPR and FPR curves) is: the
    expectation of the ratio differs by O(1/n), far below the outcomes' own noise at hundreds
    of leads (tests/unit/test_estimation.py measures both).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    s = p if scores is None else np.asarray(scores, dtype=np.float64)
    if len(p) < 2:
        return float("nan")
    order = np.argsort(s, kind="stable")
    p, s = p[order], s[order]
    # groups of tied scores, lowest first
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    positive = np.add.reduceat(p, starts)  # expected converters per group
    negative = np.add.reduceat(1.0 - p, starts)
    own_pairs = np.add.reduceat(p * (1.0 - p), starts)  # a lead is never paired with itself
    below = np.cumsum(negative) - negative  # expected non-converters ranked strictly lower
    concordant = float(np.sum(positive * below) + 0.5 * np.sum(positive * negative - own_pairs))
    pairs = float(p.sum() * (1.0 - p).sum() - np.sum(p * (1.0 - p)))
    return concordant / pairs if pairs > 0 else float("nan")


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each score from 1, ties sharing their mean rank (as the Mann-Whitney U counts them)."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    ranked = s[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(s)]
    mean_rank = (starts + ends + 1) / 2.0  # positions starts..ends-1, counted from 1
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def realised_roc_auc(converted: np.ndarray, scores: np.ndarray) -> float:
    """The ROC AUC of known outcomes (Mann-Whitney U, ties one half); NaN without both classes."""
    y = np.asarray(converted, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = float(average_ranks(scores)[y].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def roc_auc_interval(
    probabilities: np.ndarray,
    scores: np.ndarray | None = None,
    level: float = INTERVAL_LEVEL,
    centre: float | None = None,
) -> tuple[float, float]:
    """The range the realised ROC AUC falls in with ``level`` chance when each lead converts
    independently with its probability: a normal approximation by the delta method, O(n).

    With the scores' ranks r fixed, the realised AUC is (S - P(P+1)/2) / (P (n - P)), S the rank
    sum of the converters and P their number (Mann-Whitney U). S and P are sums of independent
    Bernoulli outcomes, so their variances and covariance are exact (sums of p(1-p) r^2, p(1-p),
    p(1-p) r); the AUC's variance is the gradient of that ratio through them. A simulation of 400
    outcome draws took 15 s at a million leads; this takes a sort, and agrees with it within a few
    thousandths of AUC from a few hundred leads on (tests/unit/test_estimation.py).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    s = p if scores is None else np.asarray(scores, dtype=np.float64)
    if centre is None:  # the caller's expected_roc_auc(p, s), when it has it: one sort fewer
        centre = expected_roc_auc(p, s)
    if not np.isfinite(centre):
        return float("nan"), float("nan")
    ranks = average_ranks(s)
    spread = p * (1.0 - p)
    converters, rank_sum = float(p.sum()), float(p @ ranks)
    others = len(p) - converters
    pairs = converters * others
    concordant = rank_sum - converters * (converters + 1) / 2
    by_rank_sum = 1.0 / pairs
    by_converters = (-(converters + 0.5) * pairs - concordant * (others - converters)) / pairs**2
    variance = (
        by_rank_sum**2 * float(spread @ ranks**2)
        + 2 * by_rank_sum * by_converters * float(spread @ ranks)
        + by_converters**2 * float(spread.sum())
    )
    half = NormalDist().inv_cdf(0.5 + level / 2) * np.sqrt(max(variance, 0.0))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def estimate_performance(
    probabilities: np.ndarray, tiers: np.ndarray | None = None, tier_order: Sequence[str] = ()
) -> PerformanceEstimate:
    """The expected performance of one scored population (each lead's calibrated probability and tier).

    ``tier_order``: the tiers highest first (the top tier is the first that holds a lead).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    auc = expected_roc_auc(p)
    low, high = roc_auc_interval(p, centre=auc)
    by_tier = _conversions_by_tier(p, tiers, tier_order)
    top = next((tier for tier in by_tier if np.any(np.asarray(tiers) == tier)), None)
    in_top = np.asarray(tiers) == top if top is not None else np.zeros(len(p), dtype=bool)
    expected = float(p.sum())
    return PerformanceEstimate(
        leads=len(p),
        expected_conversions=expected,
        roc_auc=auc,
        roc_auc_low=low,
        roc_auc_high=high,
        top_tier=top,
        top_tier_leads=int(in_top.sum()),
        top_tier_precision=float(p[in_top].mean()) if in_top.any() else float("nan"),
        conversions_by_tier=by_tier,
        share_by_tier={
            tier: value / expected if expected > 0 else float("nan") for tier, value in by_tier.items()
        },
    )


def _conversions_by_tier(
    p: np.ndarray, tiers: np.ndarray | None, tier_order: Sequence[str]
) -> dict[str, float]:
    """Expected conversions per tier in ``tier_order``, then any tier it does not name."""
    if tiers is None:
        return {}
    labels = np.asarray(tiers).astype(str)
    names = [*tier_order, *sorted(set(labels) - set(tier_order))]
    return {str(tier): float(p[labels == tier].sum()) for tier in names}


def estimate_scored_run(probabilities: np.ndarray, tier_settings: TierSettings) -> PerformanceEstimate:
    """The estimate of one nightly run: its leads' probabilities, tiered as the engines tier them
    (:func:`leadml.modelling.evaluate.assign_tiers` with the run's thresholds)."""
    p = np.asarray(probabilities, dtype=np.float64)
    thresholds = tier_settings.thresholds_for(p)
    tiers = assign_tiers(p, thresholds, tier_settings.floor_tier)
    highest_first = [tier for tier, _ in sorted(thresholds.items(), key=lambda item: -item[1])]
    return estimate_performance(p, tiers, [*highest_first, tier_settings.floor_tier])


@dataclass(frozen=True)
class EstimateCheck:
    """The estimated ROC AUC against the model's test-window figure (``score.estimate_warning_drop``)."""

    test_roc_auc: float | None  # None: the model records none (trained before leadml recorded it)
    drop: float | None  # test-window figure minus the estimate; None without either
    warning: str | None  # set when the drop exceeds the allowed one


def check_estimate(
    estimated_roc_auc: float, test_roc_auc: float | None, allowed_drop: float | None
) -> EstimateCheck:
    """Whether the estimate fell more than ``allowed_drop`` below the test window (None: not checked)."""
    if test_roc_auc is None or not np.isfinite(test_roc_auc) or not np.isfinite(estimated_roc_auc):
        return EstimateCheck(test_roc_auc=test_roc_auc, drop=None, warning=None)
    drop = float(test_roc_auc) - float(estimated_roc_auc)
    warning = None
    if allowed_drop is not None and drop > allowed_drop:
        warning = (
            f"estimated ROC AUC {estimated_roc_auc:.3f} of tonight's leads is {drop:.3f} below the "
            f"test window's {test_roc_auc:.3f} (score.estimate_warning_drop={allowed_drop:g}): the "
            f"leads the model ranks are harder to tell apart than those it was tested on"
        )
    return EstimateCheck(test_roc_auc=float(test_roc_auc), drop=drop, warning=warning)


def recorded_test_roc_auc(trained: Mapping[str, Any] | None) -> float | None:
    """The test-window ROC AUC a scorer records (``scorer.trained["test_roc_auc"]``), else None."""
    value = (trained or {}).get("test_roc_auc")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
