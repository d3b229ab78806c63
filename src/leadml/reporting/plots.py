"""Evaluation plots as matplotlib Figures; callers save or log them and close them.

Nothing here shows a window: the Agg backend is selected before pyplot is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")


import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from sklearn.metrics import precision_recall_curve, roc_curve

from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import DEFAULT_N_BINS, grouped_shap_values

matplotlib.use("Agg")


from leadml.modelling.backtest import BacktestSettings

logger = logging.getLogger(__name__)

Scores = Mapping[str, np.ndarray | pd.Series]
_SIZE = (6.0, 5.0)
_REFERENCE_STYLE = {"color": "grey", "linestyle": "--", "linewidth": 1}


def equal_mass_calibration_curve(
    labels: np.ndarray | pd.Series, probabilities: np.ndarray | pd.Series, n_bins: int = DEFAULT_N_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted probability and observed rate in bins of equal row count."""
    y = np.asarray(labels, dtype="float64")
    p = np.asarray(probabilities, dtype="float64")
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(p))) if len(b)]
    return np.array([p[b].mean() for b in bins]), np.array([y[b].mean() for b in bins])


def reliability_figure(
    labels: np.ndarray | pd.Series, models: Scores, n_bins: int = DEFAULT_N_BINS
) -> Figure:
    """Observed conversion against mean predicted probability per equal-mass bin, one line per model."""
    figure, axes = plt.subplots(figsize=_SIZE)
    upper = 0.0
    for name, probabilities in models.items():
        predicted, observed = equal_mass_calibration_curve(labels, probabilities, n_bins)
        axes.plot(predicted, observed, marker="o", label=name)
        upper = max(upper, predicted.max(initial=0), observed.max(initial=0))
    upper = min(1.0, upper * 1.05) if upper > 0 else 1.0
    axes.plot([0, upper], [0, upper], label="perfectly calibrated", **_REFERENCE_STYLE)
    axes.set(
        xlabel="mean predicted probability",
        ylabel="observed conversion rate",
        title=f"Reliability ({n_bins} equal-mass bins)",
    )
    axes.legend(loc="upper left")
    return figure


def roc_figure(labels: np.ndarray | pd.Series, models: Scores) -> Figure:
    """ROC curve per model with the chance diagonal."""
    figure, axes = plt.subplots(figsize=_SIZE)
    for name, probabilities in models.items():
        false_positive, true_positive, _ = roc_curve(labels, probabilities)
        axes.plot(false_positive, true_positive, label=name)
    axes.plot([0, 1], [0, 1], label="chance", **_REFERENCE_STYLE)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes.legend(loc="lower right")
    return figure


def precision_recall_figure(labels: np.ndarray | pd.Series, models: Scores) -> Figure:
    """Precision-recall curve per model with the base rate as the no-skill line."""
    figure, axes = plt.subplots(figsize=_SIZE)
    for name, probabilities in models.items():
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        axes.plot(recall, precision, label=name)
    base_rate = float(np.mean(np.asarray(labels, dtype="float64")))
    axes.plot([0, 1], [base_rate, base_rate], label=f"base rate {base_rate:.3f}", **_REFERENCE_STYLE)
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    axes.legend(loc="upper right")
    return figure


def cumulative_gains(
    labels: np.ndarray | pd.Series, probabilities: np.ndarray | pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Share of leads contacted (best first) and share of all conversions captured, from (0, 0)."""
    y = np.asarray(labels, dtype="float64")
    order = np.argsort(-np.asarray(probabilities, dtype="float64"), kind="stable")
    captured = np.cumsum(y[order]) / max(y.sum(), 1.0)
    contacted = np.arange(1, len(y) + 1) / len(y)
    return np.r_[0.0, contacted], np.r_[0.0, captured]


def gains_figure(labels: np.ndarray | pd.Series, models: Scores) -> Figure:
    """Cumulative gains per model with the random-order line."""
    figure, axes = plt.subplots(figsize=_SIZE)
    for name, probabilities in models.items():
        contacted, captured = cumulative_gains(labels, probabilities)
        axes.plot(contacted, captured, label=name)
    axes.plot([0, 1], [0, 1], label="random order", **_REFERENCE_STYLE)
    axes.set(
        xlabel="share of leads contacted", ylabel="share of conversions captured", title="Cumulative gains"
    )
    axes.legend(loc="lower right")
    return figure


def shap_importance_figure(importance: pd.DataFrame, top: int = 15) -> Figure:
    """Horizontal bars of mean |SHAP| per group (a ``grouped_shap_importance`` table), largest on top."""
    shown = importance.head(top).iloc[::-1]
    figure, axes = plt.subplots(figsize=(7.0, 0.35 * len(shown) + 1.5))
    axes.barh(shown["group"].astype(str), shown["mean_abs_shap"])
    axes.set(xlabel="mean |SHAP| (log-odds)", title="What drives the score, by original column")
    figure.tight_layout()
    return figure


def _numeric_view(features: pd.DataFrame) -> np.ndarray:
    """Features as floats for colouring: categories by their code, missing as NaN."""
    columns = []
    for name in features.columns:
        values = features[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy(dtype="float64")
            columns.append(np.where(codes < 0, np.nan, codes))
        else:
            columns.append(pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
    return np.column_stack(columns) if columns else np.zeros((len(features), 0))


def shap_beeswarm_figure(
    shap_values: np.ndarray,
    features: pd.DataFrame,
    metadata: Mapping[str, FeatureMeta] | None = None,
    top: int = 12,
    by_group: bool = False,
) -> Figure:
    """SHAP beeswarm of the ``top`` features (coloured by feature value) or of the top groups.

    Grouped values have no single feature value, so the group beeswarm is uncoloured.
    """
    import shap  # slow to import; only this plot needs it

    names: Sequence[str] = list(features.columns)
    if by_group:
        values, names = grouped_shap_values(shap_values, names, metadata or {})
        data = None
    else:
        values, data = np.asarray(shap_values, dtype="float64"), _numeric_view(features)
    explanation = shap.Explanation(values=values, data=data, feature_names=list(names))
    shown = min(top, values.shape[1])
    figure, axes = plt.subplots(figsize=(8.0, 0.4 * shown + 1.5))
    shap.plots.beeswarm(
        explanation,
        max_display=shown,
        ax=axes,
        show=False,
        plot_size=None,
        color_bar=data is not None,
        group_remaining_features=False,
    )
    axes.set_title("SHAP values by " + ("original column" if by_group else "feature"))
    return figure


def score_distribution_figure(probabilities: np.ndarray, thresholds: Mapping[str, float]) -> Figure:
    """Histogram of today's calibrated probabilities with the tier thresholds marked."""
    figure, axes = plt.subplots(figsize=(7.0, 3.6))
    values = np.asarray(probabilities, dtype=np.float64)
    upper = float(np.quantile(values, 0.999)) if len(values) else 1.0
    axes.hist(values, bins=np.linspace(0, max(upper, 1e-3), 50), color="#2458d6", alpha=0.85)
    for tier, threshold in sorted(thresholds.items(), key=lambda item: item[1]):
        if threshold <= upper:
            axes.axvline(threshold, **_REFERENCE_STYLE)
            axes.annotate(f"{tier} ≥ {threshold:.0%}", (threshold, 0.95), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="grey")  # fmt: skip
    axes.set(xlabel="calibrated probability of conversion", ylabel="open leads", title="Score distribution")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def backtest_figure(table: pd.DataFrame, settings: BacktestSettings) -> Figure:
    """ROC AUC, ECE and Brier (standard and recent-window calibration), base rate and PSI per period."""
    x = table["period"].to_numpy()
    figure, axes = plt.subplots(2, 3, figsize=(14.0, 7.5))
    (auc, ece, brier), (rate, psi, pr) = axes

    auc.plot(x, table["roc_auc"], marker="o", label="model")
    for name, label in (("baseline_logreg", "logistic baseline"), ("baseline_points", "points baseline")):
        if f"{name}_roc_auc" in table:
            auc.plot(x, table[f"{name}_roc_auc"], marker=".", label=label)
    auc.set(title="ROC AUC", ylabel="ROC AUC")

    for panel, metric, title in ((ece, "ece", "ECE (equal-mass bins)"), (brier, "brier", "Brier score")):
        panel.plot(x, table[metric], marker="o", label="calibration window")
        panel.plot(
            x, table[f"{metric}_recent"], marker="s", label=f"latest {settings.recent_fraction:.0%} of it"
        )
        panel.set(title=title, ylabel=metric.upper() if metric == "ece" else "Brier")
    ece.set_ylim(bottom=0)

    rate.plot(x, table["base_rate"], marker="o", label="period")
    rate.plot(x, table["history_base_rate"], marker=".", linestyle="--", label="training history")
    shifted = table["base_rate_shift"].to_numpy(dtype=bool)
    if shifted.any():
        rate.scatter(x[shifted], table["base_rate"][shifted], s=120, facecolors="none", edgecolors="red",
                     label="shift flagged", zorder=3)  # fmt: skip
    rate.yaxis.set_major_formatter(PercentFormatter(1.0))
    rate.set(title="Base rate", ylabel="positive rate")
    rate.set_ylim(bottom=0)

    psi.plot(x, table["score_psi"], marker="o", label="calibrated score")
    psi.plot(x, table["max_feature_psi"], marker=".", label="most drifting feature")
    for level, label, style in ((settings.watch_psi, "watch", ":"), (settings.shift_psi, "shift", "--")):
        psi.axhline(level, color="grey", linestyle=style, linewidth=1, label=f"{label} ({level:g})")
    psi.set(title="Population stability against the training window", ylabel="PSI")
    psi.set_ylim(bottom=0)

    pr.plot(x, table["pr_auc"], marker="o", label="model")
    pr.plot(x, table["base_rate"], color="grey", linestyle="--", linewidth=1, label="no skill (base rate)")
    pr.set(title="PR AUC", ylabel="PR AUC")
    pr.set_ylim(bottom=0)

    for panel in axes.ravel():
        panel.set_xticks(x)
        panel.set_xlabel("period")
        panel.legend(loc="best", fontsize=8)
    figure.suptitle("Rolling backtest: train before each cutoff, test on the next period")
    figure.tight_layout()
    return figure


def experiment_looks_figure(looks: pd.DataFrame, compare: str, top_tier: str) -> Figure:
    """Per arm against the baseline, night by night: the difference in conversion of the compared
    leads and its always-valid interval (it only narrows: each night's holds with the others')."""
    figure, axes = plt.subplots(figsize=(7.5, 3.6))
    compared = "all leads" if compare == "all" else f"tier {top_tier} leads"
    for arm, rows in looks.groupby("arm", sort=False):
        ready = rows[np.isfinite(rows["difference"].to_numpy(dtype=np.float64))]
        if ready.empty:
            continue
        nights = pd.to_datetime(ready["night"]).dt.tz_localize(None)
        line = axes.plot(nights, ready["difference"], marker=".", label=str(arm))[0]
        axes.fill_between(nights, ready["low"].clip(lower=-1.0), ready["high"].clip(upper=1.0),
                          color=line.get_color(), alpha=0.18, linewidth=0)  # fmt: skip
    axes.axhline(0.0, **_REFERENCE_STYLE)
    if not axes.lines[1:]:  # only the reference line: no night with enough outcomes yet
        axes.text(0.5, 0.5, "too few outcomes yet", transform=axes.transAxes, ha="center", color="grey")
    else:
        axes.legend(loc="best", fontsize=8)
    axes.set(ylabel="conversion: arm minus baseline", title=f"Difference in conversion of {compared}")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    figure.autofmt_xdate()
    return figure


def kpi_figure(overall: pd.DataFrame, by_tier: pd.DataFrame) -> Figure:
    """The scoring programme per period: each tier's conversion rate (``by_tier``: periods x tiers),
    and expected against realised conversions of the resolved leads (``overall``: ``period``,
    ``expected``, ``won``)."""
    figure, (rates, counts) = plt.subplots(1, 2, figsize=(11.0, 3.8))
    x = np.arange(len(overall))
    labels = overall["period"].astype(str).to_list()
    for tier in by_tier.columns:
        rates.plot(x, by_tier[tier].to_numpy(dtype=np.float64), marker="o", label=f"tier {tier}")
    rates.yaxis.set_major_formatter(PercentFormatter(1.0))
    rates.set(title="Conversion rate of resolved leads, by tier", ylabel="converted")
    rates.set_ylim(bottom=0)
    width = 0.4
    counts.bar(
        x - width / 2,
        overall["expected"].to_numpy(dtype=np.float64),
        width,
        label="expected",
        color="#9bb3ea",
    )
    counts.bar(
        x + width / 2, overall["won"].to_numpy(dtype=np.float64), width, label="realised", color="#2458d6"
    )
    counts.set(title="Expected against realised conversions", ylabel="resolved leads converted")
    for panel in (rates, counts):
        panel.set_xticks(x, labels, rotation=30 if len(x) > 6 else 0, ha="right" if len(x) > 6 else "center")
        panel.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure
