"""Evaluation of probability scores: discrimination, calibration, lift, intervals, tiers.

Every metric is computed by one weighted implementation: the point estimate uses unit
weights and the bootstrap uses resample counts as weights over rows sorted once. That
keeps the bootstrap vectorised (no re-sorting per resample) and guarantees the point
estimate and its interval measure exactly the same thing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, known_settings

logger = logging.getLogger(__name__)

DEFAULT_TOP_SHARES: tuple[float, ...] = (0.05, 0.10, 0.20)
DEFAULT_N_BINS = 10
FLOOR_TIER = "D"  # the tier of every lead below the lowest minimum, unless conf/tiers names another
CONFIDENCE = 0.95
# metrics where a lower value is better (paired_share_better)
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})
_PROBABILITY_CLIP = 1e-6  # for logit(p) in the calibration fit only
_NEWTON_STEPS = 25
# rows x resamples held in memory at once by the bootstrap: ~16 MB per array, ~370 MB peak RSS at 100k rows
_BOOTSTRAP_CELLS_PER_CHUNK = 2_000_000


def metric_names(top_shares: Sequence[float] = DEFAULT_TOP_SHARES) -> list[str]:
    """Names of the metrics ``binary_metrics`` returns, in order."""
    names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "calibration_slope", "calibration_intercept"]
    for share in top_shares:
        names += [f"lift_at_{_percent(share)}", f"capture_at_{_percent(share)}"]
    return [*names, "base_rate", "n", "positives"]


def _percent(share: float) -> str:
    return f"{100 * share:g}"


@dataclass(frozen=True)
class _SortedScores:
    """Labels and probabilities sorted once by descending probability, with tie groups."""

    labels: np.ndarray  # float64 0/1
    probabilities: np.ndarray  # float64
    tie_starts: np.ndarray  # first position of each run of equal probabilities
    row_loss: np.ndarray  # per-row log loss
    row_squared_error: np.ndarray
    logit: np.ndarray
    order: np.ndarray  # position in the caller's arrays of each sorted row


def _validated(
    labels: np.ndarray | pd.Series, probabilities: np.ndarray | pd.Series
) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels, dtype="float64")
    p = np.asarray(probabilities, dtype="float64")
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities must be 1-d of equal length, got {y.shape} and {p.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be within [0, 1] and not NaN")
    return y, p


def _sorted_scores(labels: np.ndarray | pd.Series, probabilities: np.ndarray | pd.Series) -> _SortedScores:
    y, p = _validated(labels, probabilities)
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    tie_starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if len(p) else np.zeros(0, dtype="int64")
    eps = np.finfo("float64").eps
    clipped = np.clip(p, eps, 1 - eps)
    row_loss = -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))
    edge_clipped = np.clip(p, _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
    logit = np.log(edge_clipped) - np.log1p(-edge_clipped)
    return _SortedScores(y, p, tie_starts, row_loss, (p - y) ** 2, logit, order)


def _weighted_metrics(
    scores: _SortedScores, weights: np.ndarray, n_bins: int, top_shares: Sequence[float]
) -> dict[str, np.ndarray]:
    """All metrics for each row of ``weights`` (resamples x rows, aligned with the sorted rows)."""
    y = scores.labels
    total = weights.sum(axis=1)
    positive_weights = weights * y
    positives = positive_weights.sum(axis=1)
    negatives = total - positives
    # overflow: the calibration fit diverges on separable or one-class resamples, which end up NaN
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        base_rate = positives / total
        both_classes = (positives > 0) & (negatives > 0)

        pos_per_tie = np.add.reduceat(positive_weights, scores.tie_starts, axis=1)
        neg_per_tie = np.add.reduceat(weights, scores.tie_starts, axis=1) - pos_per_tie
        neg_above_or_tied = np.cumsum(neg_per_tie, axis=1)
        neg_below = negatives[:, None] - neg_above_or_tied
        auc = (pos_per_tie * (neg_below + 0.5 * neg_per_tie)).sum(axis=1) / (positives * negatives)
        auc = np.where(both_classes, auc, np.nan)

        cum_pos = np.cumsum(pos_per_tie, axis=1)
        cum_all = cum_pos + neg_above_or_tied
        precision = np.divide(cum_pos, cum_all, out=np.zeros_like(cum_pos), where=cum_all > 0)
        average_precision = (pos_per_tie * precision).sum(axis=1) / positives
        average_precision = np.where(positives > 0, average_precision, np.nan)

        log_loss = weights @ scores.row_loss / total
        brier = weights @ scores.row_squared_error / total

        cum_weight_before = np.cumsum(weights, axis=1) - weights
        ece = _equal_mass_ece(scores, weights, cum_weight_before, total, n_bins)
        slope, intercept = _calibration_fit(scores, weights, both_classes)

        metrics: dict[str, np.ndarray] = {
            "roc_auc": auc,
            "pr_auc": average_precision,
            "log_loss": log_loss,
            "brier": brier,
            "ece": ece,
            "calibration_slope": slope,
            "calibration_intercept": intercept,
        }
        for share in top_shares:
            in_top = cum_weight_before < share * total[:, None]
            top_weight = (weights * in_top).sum(axis=1)
            top_positives = (positive_weights * in_top).sum(axis=1)
            lift = (top_positives / top_weight) / base_rate
            metrics[f"lift_at_{_percent(share)}"] = np.where(positives > 0, lift, np.nan)
            metrics[f"capture_at_{_percent(share)}"] = np.where(
                positives > 0, top_positives / positives, np.nan
            )
    metrics["base_rate"] = base_rate
    metrics["n"] = total
    metrics["positives"] = positives
    return metrics


def _equal_mass_ece(
    scores: _SortedScores, weights: np.ndarray, cum_weight_before: np.ndarray, total: np.ndarray, n_bins: int
) -> np.ndarray:
    """ECE over bins of equal (weighted) row count; a row's bin is where its weight's midpoint falls."""
    n_resamples = weights.shape[0]
    midpoint = (cum_weight_before + 0.5 * weights) / total[:, None]
    bins = np.minimum((midpoint * n_bins).astype("int64"), n_bins - 1)
    flat = (bins + n_bins * np.arange(n_resamples)[:, None]).ravel()
    size = n_resamples * n_bins
    bin_weight = np.bincount(flat, weights.ravel(), minlength=size).reshape(n_resamples, n_bins)
    bin_labels = np.bincount(flat, (weights * scores.labels).ravel(), minlength=size)
    bin_probabilities = np.bincount(flat, (weights * scores.probabilities).ravel(), minlength=size)
    gap = np.abs(bin_labels - bin_probabilities).reshape(n_resamples, n_bins)
    # sum_b (W_b / W) * |mean_y_b - mean_p_b| simplifies to sum_b |sum_y_b - sum_p_b| / W
    return np.where(bin_weight.sum(axis=1) > 0, gap.sum(axis=1) / total, np.nan)


def _calibration_fit(
    scores: _SortedScores, weights: np.ndarray, both_classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unpenalised weighted logistic regression of the label on logit(p), by Newton steps per resample.

    Resamples start from the fit on the rows as they are (their solutions lie close to it), which
    takes a few Newton steps fewer than starting every one from intercept 0 and slope 1.
    """
    n_resamples = weights.shape[0]
    x = scores.logit
    y = scores.labels
    intercept = np.zeros(n_resamples)
    slope = np.ones(n_resamples)
    if n_resamples > 1:
        start_slope, start_intercept = _calibration_fit(scores, np.ones((1, len(y))), np.ones(1, dtype=bool))
        if np.isfinite(start_slope[0]) and np.isfinite(start_intercept[0]):
            intercept[:], slope[:] = start_intercept[0], start_slope[0]
    for _ in range(_NEWTON_STEPS):
        mu = 1.0 / (1.0 + np.exp(-(intercept[:, None] + slope[:, None] * x)))
        residual = weights * (y - mu)
        curvature = weights * mu * (1 - mu)
        g0, g1 = residual.sum(axis=1), residual @ x
        h00, h01, h11 = curvature.sum(axis=1), curvature @ x, curvature @ (x * x)
        det = h00 * h11 - h01 * h01
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        intercept = intercept + np.nan_to_num(step0)
        slope = slope + np.nan_to_num(step1)
        if np.nanmax(np.abs(np.r_[step0, step1, 0.0])) < 1e-10:
            break
    # without both classes, or with a constant score, the regression has no finite solution
    defined = both_classes & (np.abs(det) > 1e-12)
    return np.where(defined, slope, np.nan), np.where(defined, intercept, np.nan)


def binary_metrics(
    labels: np.ndarray | pd.Series,
    probabilities: np.ndarray | pd.Series,
    n_bins: int = DEFAULT_N_BINS,
    top_shares: Sequence[float] = DEFAULT_TOP_SHARES,
) -> dict[str, float]:
    """Discrimination, calibration and lift of probabilities against 0/1 labels.

    Undefined metrics (AUC with one class, calibration slope of a constant score) are NaN.
    Lift and capture at the top k% order rows by probability; ties on the cut are broken
    by input order.
    """
    scores = _sorted_scores(labels, probabilities)
    values = _weighted_metrics(scores, np.ones((1, len(scores.labels))), n_bins, top_shares)
    return {name: float(values[name][0]) for name in metric_names(top_shares)}


def _resample_counts(
    n_rows: int, n_boot: int, seed: int, groups: np.ndarray | pd.Series | None
) -> Iterator[np.ndarray]:
    """Chunks of bootstrap count weights (resamples x rows, in the rows' own order).

    With groups, whole groups are drawn with replacement and every row of a drawn group
    gets the group's count, so correlated snapshots of one lead stay together. The chunks are
    drawn once per evaluation and shared by every model scored on the same rows (paired
    intervals, and the draws paid once rather than once per model).
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        codes, n_units = np.arange(n_rows), n_rows
    else:
        codes, uniques = pd.factorize(np.asarray(groups), use_na_sentinel=False)
        n_units = len(uniques)
    chunk = max(1, _BOOTSTRAP_CELLS_PER_CHUNK // max(n_rows, 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        unit_counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=size).astype("float64")
        yield unit_counts[:, codes]


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def bootstrap_intervals(
    labels: np.ndarray | pd.Series,
    probabilities: np.ndarray | pd.Series,
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | pd.Series | None = None,
    n_bins: int = DEFAULT_N_BINS,
    top_shares: Sequence[float] = DEFAULT_TOP_SHARES,
) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap intervals of every metric of ``binary_metrics``.

    Pass ``groups`` (e.g. lead ids) to resample whole groups. The same seed draws the same
    resamples for any probabilities of the same rows, so intervals of models are paired.
    """
    return paired_intervals(labels, {"": probabilities}, n_boot, seed, groups, n_bins, top_shares)[""]


def paired_intervals(
    labels: np.ndarray | pd.Series,
    models: Mapping[str, np.ndarray | pd.Series],
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | pd.Series | None = None,
    n_bins: int = DEFAULT_N_BINS,
    top_shares: Sequence[float] = DEFAULT_TOP_SHARES,
) -> dict[str, dict[str, tuple[float, float]]]:
    """:func:`bootstrap_intervals` of several models' probabilities of the same rows, on one set
    of resamples: each chunk of resample weights is drawn once and reordered for each model."""
    scores = {name: _sorted_scores(labels, probabilities) for name, probabilities in models.items()}
    draws = {name: {metric: [] for metric in metric_names(top_shares)} for name in models}
    for counts in _resample_counts(len(np.asarray(labels)), n_boot, seed, groups):
        for name, sorted_scores in scores.items():
            weights = counts[:, sorted_scores.order]
            for metric, values in _weighted_metrics(sorted_scores, weights, n_bins, top_shares).items():
                draws[name][metric].append(values)
    return {
        name: {metric: _percentile_interval(np.concatenate(parts)) for metric, parts in model.items()}
        for name, model in draws.items()
    }


def paired_share_better(
    labels: np.ndarray | pd.Series,
    challenger: np.ndarray | pd.Series,
    incumbent: np.ndarray | pd.Series,
    metric: str = "roc_auc",
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | pd.Series | None = None,
) -> float:
    """The share of bootstrap resamples (by ``groups``) of the same rows in which ``challenger``'s
    ``metric`` beats ``incumbent``'s (higher, or lower for a loss): how sure a gain on a few hundred
    rows is. Both are scored on one set of resamples (paired); NaN without a resample to judge."""
    models = {"challenger": challenger, "incumbent": incumbent}
    scores = {name: _sorted_scores(labels, probabilities) for name, probabilities in models.items()}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in models}
    for counts in _resample_counts(len(np.asarray(labels)), n_boot, seed, groups):
        for name, sorted_scores in scores.items():
            values = _weighted_metrics(sorted_scores, counts[:, sorted_scores.order], DEFAULT_N_BINS, ())
            draws[name].append(values[metric])
    if not draws["challenger"]:
        return float("nan")
    new, old = np.concatenate(draws["challenger"]), np.concatenate(draws["incumbent"])
    judged = np.isfinite(new) & np.isfinite(old)
    if not judged.any():
        return float("nan")
    better = new[judged] < old[judged] if metric in LOWER_IS_BETTER else new[judged] > old[judged]
    return float(better.mean())


def assign_tiers(
    probabilities: np.ndarray | pd.Series, thresholds: Mapping[str, float], floor_tier: str = FLOOR_TIER
) -> np.ndarray:
    """Tier of each probability: the highest tier whose minimum it reaches, else ``floor_tier``."""
    p = np.asarray(probabilities, dtype="float64")
    tiers = np.full(len(p), floor_tier, dtype=object)
    for tier, minimum in sorted(thresholds.items(), key=lambda item: item[1]):
        tiers[p >= minimum] = tier
    return tiers


def tier_table(
    labels: np.ndarray | pd.Series,
    probabilities: np.ndarray | pd.Series,
    thresholds: Mapping[str, float],
    floor_tier: str = FLOOR_TIER,
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Rows, positives, conversion rate with a 95% bootstrap interval, and mean probability per tier.

    ``thresholds`` maps tier name to the minimum calibrated probability of that tier;
    rows below every threshold fall into ``floor_tier``. Tiers are listed best first.
    """
    y, p = _validated(labels, probabilities)
    tiers = assign_tiers(p, thresholds, floor_tier)
    names = [t for t, _ in sorted(thresholds.items(), key=lambda item: -item[1])]
    if floor_tier not in thresholds:
        names.append(floor_tier)
    membership = np.stack([tiers == name for name in names]).astype("float64")  # tiers x rows
    rates: list[np.ndarray] = []
    for weights in _resample_counts(len(y), n_boot, seed, groups):
        with np.errstate(divide="ignore", invalid="ignore"):
            rates.append((weights * y) @ membership.T / (weights @ membership.T))
    draws = np.concatenate(rates) if rates else np.full((0, len(names)), np.nan)
    rows = membership.sum(axis=1)
    positives = membership @ y
    with np.errstate(divide="ignore", invalid="ignore"):
        intervals = [_percentile_interval(draws[:, i]) for i in range(len(names))]
        table = pd.DataFrame(
            {
                "tier": names,
                "min_probability": [thresholds.get(name, 0.0) for name in names],
                "rows": rows.astype("int64"),
                "positives": positives.astype("int64"),
                "conversion_rate": positives / rows,
                "conversion_low": [low for low, _ in intervals],
                "conversion_high": [high for _, high in intervals],
                "mean_probability": membership @ p / rows,
            }
        )
    return table


@dataclass(frozen=True)
class SalesCapacity:
    """What the sales team can work (``tiers.sales_capacity``), for the revenue-maximising threshold.

    ``leads``: open leads the team can work at once; None: as many as tonight's sales-ready tiers
    hold. ``cost_per_lead``: what working one lead costs, in the unit of the deal values.
    """

    leads: int | None = None
    cost_per_lead: float = 0.0

    @classmethod
    def from_mapping(cls, mapping: Any) -> SalesCapacity:
        if mapping is not None and not isinstance(mapping, Mapping):
            raise LeadmlError(
                f"tiers.sales_capacity must be a mapping of leads and cost_per_lead, got {mapping!r}"
            )
        values = known_settings(cls, mapping, "tiers.sales_capacity")
        leads, cost = values.get("leads"), values.get("cost_per_lead")
        return cls(
            leads=None if leads is None else _whole(leads, "tiers.sales_capacity.leads", minimum=1),
            cost_per_lead=0.0 if cost is None else _non_negative(cost, "tiers.sales_capacity.cost_per_lead"),
        )


def _whole(value: Any, name: str, minimum: int) -> int:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise LeadmlError(f"{name} must be a whole number >= {minimum} (or null), got {value!r}")
    return int(number)


def _non_negative(value: Any, name: str) -> float:
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and number >= 0):
        raise LeadmlError(f"{name} must be a number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class TierSettings:
    """How probabilities become tiers (conf/tiers): fixed minimums, or capacity shares of the leads;
    and the sales team's capacity (``sales_capacity``, read by the leadership report)."""

    method: str = "probability"
    thresholds: Mapping[str, float] = field(default_factory=lambda: {"A": 0.30, "B": 0.15, "C": 0.05})
    shares: Mapping[str, float] = field(default_factory=lambda: {"A": 0.05, "B": 0.20, "C": 0.50})
    floor_tier: str = FLOOR_TIER
    sales_capacity: SalesCapacity = field(default_factory=SalesCapacity)

    def __post_init__(self) -> None:
        if self.method not in ("probability", "capacity"):
            raise LeadmlError(f"tiers.method must be 'probability' or 'capacity', got {self.method!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> TierSettings:
        values = known_settings(cls, mapping, "tiers")
        capacity = SalesCapacity.from_mapping(values.pop("sales_capacity", None))
        values = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None}
        return cls(**values, sales_capacity=capacity)

    def thresholds_for(self, probabilities: np.ndarray) -> dict[str, float]:
        """Probability minimum of each tier: fixed, or the capacity quantiles of today's leads."""
        if self.method == "capacity":
            return capacity_thresholds(probabilities, dict(self.shares))
        return dict(self.thresholds)


def capacity_thresholds(
    probabilities: np.ndarray | pd.Series, shares: Mapping[str, float]
) -> dict[str, float]:
    """Probability thresholds so that each tier and the tiers above it hold the top ``share`` of rows.

    Shares are cumulative (A: 0.05, B: 0.20 means A is the top 5% and A+B the top 20%).
    Ties at a cut can put slightly more rows above it.
    """
    p = np.sort(np.asarray(probabilities, dtype="float64"))[::-1]
    if len(p) == 0:
        raise ValueError("capacity thresholds need at least one probability")
    thresholds = {}
    for tier, share in shares.items():
        if not 0 < share <= 1:
            raise ValueError(f"tier {tier}: share must be in (0, 1], got {share}")
        # round first: 0.07 * 100 is 7.000000000000001 in floating point, which ceil makes 8
        rows_in = max(1, int(np.ceil(round(share * len(p), 9))))
        thresholds[tier] = float(p[rows_in - 1])
    return thresholds


def compare_models(
    labels: np.ndarray | pd.Series,
    models: Mapping[str, np.ndarray | pd.Series],
    groups: np.ndarray | pd.Series | None = None,
    n_boot: int = 200,
    seed: int = 0,
    n_bins: int = DEFAULT_N_BINS,
    top_shares: Sequence[float] = DEFAULT_TOP_SHARES,
) -> pd.DataFrame:
    """One row per model with every metric and its ``_low``/``_high`` bootstrap bounds.

    All models are evaluated on the same rows and the same resamples.
    """
    rows = {}
    intervals = paired_intervals(labels, models, n_boot, seed, groups, n_bins, top_shares)
    for name, probabilities in models.items():
        point = binary_metrics(labels, probabilities, n_bins, top_shares)
        row: dict[str, float] = {}
        for metric, value in point.items():
            row[metric] = value
            row[f"{metric}_low"], row[f"{metric}_high"] = intervals[name][metric]
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def grouped_shap_values(
    shap_values: np.ndarray, feature_names: Sequence[str], metadata: Mapping[str, FeatureMeta]
) -> tuple[np.ndarray, list[str]]:
    """SHAP values summed per original group (rows x groups), with the group names.

    Features without metadata form a group of their own.
    """
    values = np.asarray(shap_values, dtype="float64")
    if values.ndim != 2 or values.shape[1] != len(feature_names):
        raise ValueError(
            f"shap_values shape {values.shape} does not match {len(feature_names)} feature names"
        )
    feature_groups = [metadata[f].group if f in metadata else f for f in feature_names]
    codes, groups = pd.factorize(pd.Series(feature_groups))
    membership = np.zeros((len(feature_names), len(groups)))
    membership[np.arange(len(feature_names)), codes] = 1.0
    return values @ membership, [str(g) for g in groups]


def grouped_shap_importance(
    shap_values: np.ndarray, feature_names: Sequence[str], metadata: Mapping[str, FeatureMeta]
) -> pd.DataFrame:
    """Mean |SHAP| per original group, largest first.

    Contributions of one group's features are summed per row before taking the absolute
    value, so features that push in opposite directions partly cancel as they do in the score.
    """
    summed, groups = grouped_shap_values(shap_values, feature_names, metadata)
    feature_groups = pd.Series([metadata[f].group if f in metadata else f for f in feature_names])
    importance = np.abs(summed).mean(axis=0) if len(summed) else np.zeros(len(groups))
    table = pd.DataFrame(
        {
            "group": groups,
            "mean_abs_shap": importance,
            "n_features": feature_groups.value_counts().reindex(groups).to_numpy(),
        }
    )
    total = table["mean_abs_shap"].sum()
    table["share"] = table["mean_abs_shap"] / total if total > 0 else 0.0
    return table.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


def base_rate_shift(
    history_positives: int, history_rows: int, positives: int, rows: int
) -> tuple[float, float]:
    """(relative change of the rate, two-sided p-value of a two-proportion z-test) period vs history."""
    before, after = history_positives / history_rows, positives / rows
    pooled = (history_positives + positives) / (history_rows + rows)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / history_rows + 1 / rows))
    p_value = float(2 * norm.sf(abs(after - before) / spread)) if spread > 0 else 1.0
    change = (after - before) / before if before > 0 else math.inf
    return change, p_value


def base_rate_drift(
    split: Mapping[str, Mapping[str, Any]], p_value: float = 0.01, min_relative_change: float = 0.25
) -> dict[str, Any]:
    """Did the positive rate of the test window move from its history's (train + calibration)?

    Flagged when a two-proportion test gives p below ``p_value`` and the rate changed by more
    than ``min_relative_change`` (the thresholds of ``leadml-backtest``); then calibration on
    the latest rows (``calibration.recent_fraction``) may help, and the backtest shows whether.
    """
    history_rows = split["train"]["rows"] + split["calibration"]["rows"]
    history_positives = split["train"]["positives"] + split["calibration"]["positives"]
    test_rows, test_positives = split["test"]["rows"], split["test"]["positives"]
    if not history_rows or not test_rows:
        return {"flagged": False, "sentence": ""}
    change, p = base_rate_shift(history_positives, history_rows, test_positives, test_rows)
    flagged = p < p_value and abs(change) > min_relative_change
    rates = ", ".join(f"{window} {split[window]['rate']:.1%}" for window in ("train", "calibration", "test"))
    sentence = f"base rate {rates}"
    if flagged:
        sentence += (
            f": the test window's rate moved {change:+.0%} from its history's"
            f" ({'p < 0.001' if p < 0.001 else f'p = {p:.3f}'}); expect"
            " calibration to suffer (try calibration.recent_fraction=0.25, and leadml-backtest)"
        )
    return {"change": change, "p_value": p, "flagged": flagged, "sentence": sentence}
