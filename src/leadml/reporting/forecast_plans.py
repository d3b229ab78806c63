"""The funnel forecast backwards and sideways: the leads needed for a revenue target (reverse) and
the capacity plan of the open leads."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.reporting.forecast import (
    ALL,
    DEFAULT_PRIOR,
    EXPECTED_VALUE,
    MIN_WINS_FOR_VALUES,
    NORMAL_VARIANCE,
    PROBABILITY,
    TIER,
    TOTAL,
    UNKNOWN,
    SourceModel,
    check_history,
    checked_draws,
    checked_positive,
    checked_share,
    require_columns,
    simulate_source,
    source_model_of,
    source_rng,
    unknown_rule,
    whole_number,
)

logger = logging.getLogger(__name__)


def leads_needed(
    history: pd.DataFrame,
    revenue_target: float,
    *,
    mix: Mapping[str, float] | None = None,
    confidence: float = 0.5,
    draws: int = 20_000,
    seed: int = 0,
    prior: float = DEFAULT_PRIOR,
    min_wins: int = MIN_WINS_FOR_VALUES,
    unknown_source: str = "error",
    max_leads: int = 10_000_000,
) -> pd.DataFrame:
    """New leads needed to reach ``revenue_target``, per source alone and for a mix of sources.

    For each source with mature history: ``alone_expected``, the fewest leads whose
    expected revenue reaches the target, and ``alone_at_confidence``, the fewest whose
    revenue reaches it with probability ``confidence`` in the same simulation as
    :func:`forecast_forward` (a search over the number of leads). ``mix`` gives shares
    per source (normalised to sum to one; default: the sources' shares of mature
    historical leads); ``mix_expected`` (target / expected revenue per lead of the mix,
    rounded up) and ``mix_at_confidence`` (the fewest leads of the mix whose revenue
    reaches the target with ``confidence``) are split per source in whole leads
    (:func:`allocate`), with the totals on the ``total`` row. With ``confidence=0.5`` the
    median revenue reaches the target; a higher confidence asks for more leads. The
    search stops within 0.1% of the answer (about the simulation's own precision), and
    what it returns always reaches the confidence in the simulation. Unknown sources in
    ``mix`` follow ``unknown_source`` as in :func:`forecast_forward`.
    """
    check_history(history)
    confidence, draws, rule = (
        checked_share(confidence, "confidence"),
        checked_draws(draws),
        unknown_rule(unknown_source),
    )
    prior = checked_positive(prior, "prior")
    target = checked_positive(revenue_target, "revenue_target")
    shares = _mix_shares(history, mix)
    known = [str(k) for k in history.index if k != ALL and int(history.loc[k, "leads"]) > 0]
    sources = known + [k for k in shares if k not in known]
    models = {k: source_model_of(history, k, prior, min_wins, rule) for k in sources}

    def probability(allocation: Mapping[str, int]) -> float:
        revenue = np.zeros(draws, dtype="float64")
        for source, n in allocation.items():
            revenue += simulate_source(n, models[source], draws, source_rng(seed, source))[1]
        return float(np.mean(revenue >= target))

    rows: dict[str, dict[str, Any]] = {}
    for source in sources:
        model = models[source]
        per_lead = model.rate * model.value_mean
        expected = math.ceil(target / per_lead)
        rows[source] = {
            "share": shares.get(source, 0.0),
            "conversion_rate": model.rate,
            "deal_value_mean": model.value_mean,
            "revenue_per_lead": per_lead,
            "alone_expected": expected,
            "alone_at_confidence": _fewest(
                lambda n, source=source: probability({source: n}),
                confidence,
                _normal_guess(lambda n, source=source: {source: n}, models, target, confidence, max_leads),
                max_leads,
            ),
        }
    per_lead_mix = sum(share * models[k].rate * models[k].value_mean for k, share in shares.items())
    mix_expected = math.ceil(target / per_lead_mix)
    mix_total = _fewest(
        lambda n: probability(allocate(n, shares)),
        confidence,
        _normal_guess(lambda n: allocate(n, shares), models, target, confidence, max_leads),
        max_leads,
    )
    for source in sources:
        rows[source]["mix_expected"] = allocate(mix_expected, shares).get(source, 0)
        rows[source]["mix_at_confidence"] = allocate(mix_total, shares).get(source, 0)
    rows[TOTAL] = {
        "share": 1.0,
        "conversion_rate": sum(share * models[k].rate for k, share in shares.items()),
        "deal_value_mean": np.nan,
        "revenue_per_lead": per_lead_mix,
        "alone_expected": np.nan,
        "alone_at_confidence": np.nan,
        "mix_expected": mix_expected,
        "mix_at_confidence": mix_total,
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    counts = ["alone_expected", "alone_at_confidence", "mix_expected", "mix_at_confidence"]
    table = table.astype(dict.fromkeys(counts, "Int64"))
    table.index.name = s.SOURCE
    table.attrs.update(revenue_target=target, confidence=confidence, draws=draws, seed=seed)
    return table


def _mix_shares(history: pd.DataFrame, mix: Mapping[str, float] | None) -> dict[str, float]:
    if mix is None:
        counts = history.drop(index=ALL)["leads"]
        counts = counts[counts > 0]
        if counts.empty:
            raise LeadmlError("the history has no mature leads, so there is no mix to forecast")
        return {str(k): float(v) / float(counts.sum()) for k, v in counts.items()}
    if not isinstance(mix, Mapping) or not mix:
        raise LeadmlError(f"mix must be a mapping of source to share, got {mix!r}")
    weights: dict[str, float] = {}
    for source, share in mix.items():
        try:
            weight = float(share)
        except (TypeError, ValueError):
            raise LeadmlError(f"mix share of {source!r} must be a number >= 0, got {share!r}") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise LeadmlError(f"mix share of {source!r} must be a number >= 0, got {share!r}")
        weights[str(source)] = weight
    total = sum(weights.values())
    if total <= 0:
        raise LeadmlError(f"mix shares must not all be zero, got {dict(mix)}")
    if abs(total - 1.0) > 1e-6:
        logger.info("mix shares sum to %s; normalised to 1", total)
    return {k: w / total for k, w in weights.items() if w > 0}


def allocate(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``total`` leads split by ``shares`` in whole leads (largest remainders), summing to ``total``."""
    raw = {k: total * share for k, share in shares.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:left]:
        counts[k] += 1
    return counts


def _revenue_moments(model: SourceModel, n: int) -> tuple[float, float]:
    """Mean and variance of the simulated revenue of ``n`` leads (beta-binomial wins, resampled values)."""
    a, b, r = model.alpha, model.beta, model.rate
    wins_mean = n * r
    wins_variance = n * r * (1 - r) * (a + b + n) / (a + b + 1)
    values = model.values
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if len(values) > 1 else 0.0
    return wins_mean * mean, (
        wins_mean * variance
        + mean**2 * wins_variance
        + (wins_variance + wins_mean**2) * variance / len(values)
    )


def _normal_guess(
    allocation: Callable[[int], Mapping[str, int]],
    models: Mapping[str, SourceModel],
    target: float,
    confidence: float,
    max_leads: int,
) -> int:
    """Fewest leads whose revenue reaches the target with ``confidence`` under a normal approximation.

    Only a starting point: the simulation then decides (revenue is skewed, the normal is not).
    """
    z = NormalDist().inv_cdf(confidence)

    def enough(n: int) -> bool:
        moments = [_revenue_moments(models[k], count) for k, count in allocation(n).items()]
        return sum(m for m, _ in moments) - z * math.sqrt(sum(v for _, v in moments)) >= target

    high = 1
    while not enough(high) and high < max_leads:
        high = min(2 * high, max_leads)
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _fewest(reaches: Callable[[int], float], confidence: float, guess: int, max_leads: int) -> int:
    """Smallest n with ``reaches(n) >= confidence``, ``reaches`` rising with n (up to simulation noise).

    Brackets the answer by steps growing from 2% around ``guess``, then narrows the
    bracket by interpolating on the simulated probabilities (Illinois false position) to
    within 0.1% of the answer (about the simulation's own precision), or one lead.
    """
    n = min(max(1, guess), max_leads)
    step = max(1, math.ceil(0.02 * n))
    p = reaches(n)
    if p >= confidence:
        high, p_high = n, p
        while True:
            low = max(0, high - step)
            p_low = reaches(low) if low > 0 else 0.0  # no leads, no revenue
            if p_low < confidence:
                break
            high, p_high, step = low, p_low, 2 * step
    else:
        low, p_low = n, p
        while True:
            if low >= max_leads:
                raise LeadmlError(
                    f"the revenue target is not reached with confidence {confidence} even with "
                    f"{max_leads:,} leads"
                )
            high = min(low + step, max_leads)
            p_high = reaches(high)
            if p_high >= confidence:
                break
            low, p_low, step = high, p_high, 2 * step
    kept = 0  # which end was kept last time (Illinois: halve its weight when it is kept twice)
    while high - low > max(1, high // 1000):
        share = (confidence - p_low) / (p_high - p_low) if p_high > p_low else 0.5
        middle = min(max(low + round(share * (high - low)), low + 1), high - 1)
        p_middle = reaches(middle)
        if p_middle >= confidence:
            high, p_high = middle, p_middle
            if kept == -1:
                p_low = confidence - (confidence - p_low) / 2
            kept = -1
        else:
            low, p_low = middle, p_middle
            if kept == 1:
                p_high = confidence + (p_high - confidence) / 2
            kept = 1
    return high


def capacity_plan(
    open_scores: pd.DataFrame,
    reps: int,
    leads_per_rep_per_day: int,
    days: int,
    *,
    level: float = 0.9,
) -> pd.DataFrame:
    """Which open leads the team can work, highest probability first, and the wins to expect.

    ``open_scores`` is a scored partition (``probability``, ``tier``; ``lead_id`` breaks
    ties; ``expected_value`` is summed when present). The team works
    ``reps * leads_per_rep_per_day * days`` leads. Rows per tier (ordered by mean
    probability, highest first) and ``total``: ``open_leads``, ``worked_leads``,
    ``worked_share``, ``probability_threshold`` (the lowest probability worked; on the
    ``total`` row, the cut that fits the capacity: working every lead at or above it
    works ``worked_leads`` leads, plus any tied exactly at the cut, see
    ``attrs["tied_at_threshold"]``), ``expected_wins`` (sum of the worked leads'
    probabilities) with a ``level`` interval (exact Poisson-binomial, or its normal
    approximation when the variance is large), and ``expected_value``.
    """
    require_columns(open_scores, (PROBABILITY, TIER), "scored leads")
    level = checked_share(level, "level")
    capacity = (
        whole_number(reps, "reps")
        * whole_number(leads_per_rep_per_day, "leads_per_rep_per_day")
        * whole_number(days, "days")
    )
    probability = open_scores[PROBABILITY].astype("float64")
    bad = int((probability.isna() | (probability < 0) | (probability > 1)).sum())
    if bad:
        raise LeadmlError(f"scored leads: {bad} rows have a probability missing or outside [0, 1]")
    keys = [PROBABILITY, *([s.LEAD_ID] if s.LEAD_ID in open_scores.columns else [])]
    ranked = open_scores.sort_values(keys, ascending=[False, *[True] * (len(keys) - 1)], kind="stable")
    worked = min(capacity, len(ranked))
    ranked = ranked.assign(_worked=np.arange(len(ranked)) < worked, _tier=ranked[TIER].astype("string"))
    ranked["_tier"] = ranked["_tier"].fillna(UNKNOWN)
    has_value = EXPECTED_VALUE in ranked.columns
    order = ranked.groupby("_tier")[PROBABILITY].mean().sort_values(ascending=False).index
    rows = {str(tier): _capacity_row(ranked[ranked["_tier"] == tier], level, has_value) for tier in order}
    rows[TOTAL] = _capacity_row(ranked, level, has_value)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = TIER
    threshold = rows[TOTAL]["probability_threshold"]
    tied = int(
        (ranked[PROBABILITY] == threshold).sum()
        - (ranked.loc[ranked["_worked"], PROBABILITY] == threshold).sum()
    )
    table.attrs.update(capacity=capacity, threshold=threshold, tied_at_threshold=tied, level=level)
    if tied:
        logger.info("%d leads not worked have the same probability as the last worked lead", tied)
    return table


def _capacity_row(part: pd.DataFrame, level: float, has_value: bool) -> dict[str, Any]:
    worked = part[part["_worked"]]
    p = worked[PROBABILITY].to_numpy("float64")
    low, high = poisson_binomial_interval(p, level)
    row = {
        "open_leads": len(part),
        "worked_leads": len(worked),
        "worked_share": len(worked) / len(part) if len(part) else np.nan,
        "probability_threshold": float(p.min()) if len(p) else np.nan,
        "expected_wins": float(p.sum()),
        "wins_low": low,
        "wins_high": high,
    }
    if has_value:
        row[EXPECTED_VALUE] = float(worked[EXPECTED_VALUE].astype("float64").sum())
    return row


def poisson_binomial_interval(p: np.ndarray, level: float) -> tuple[int, int]:
    """Equal-tailed ``level`` interval of the number of successes of independent Bernoulli(p_i).

    Exact (the distribution built lead by lead) when its variance is below 30; beyond,
    the normal approximation with continuity correction, accurate there by the central
    limit theorem since every term is bounded.
    """
    p = np.asarray(p, dtype="float64")
    sure = int((p >= 1).sum())
    q = p[(p > 0) & (p < 1)]
    mean, variance = float(q.sum()), float((q * (1 - q)).sum())
    if variance == 0:
        return sure, sure
    if variance >= NORMAL_VARIANCE:
        z = NormalDist().inv_cdf((1 + level) / 2)
        sd = math.sqrt(variance)
        low = max(0, math.ceil(mean - z * sd - 0.5))
        high = min(len(q), math.floor(mean + z * sd + 0.5))
        return sure + low, sure + high
    top = min(len(q), math.ceil(mean + 12 * math.sqrt(variance) + 30))
    pmf = np.zeros(top + 1)
    pmf[0] = 1.0
    for pi in q:
        shifted = pmf[:-1] * pi
        pmf *= 1 - pi
        pmf[1:] += shifted
    cdf = np.cumsum(pmf)
    low = int(np.searchsorted(cdf, (1 - level) / 2 - 1e-12))
    high = min(top, int(np.searchsorted(cdf, (1 + level) / 2 - 1e-12)))
    return sure + low, sure + high
