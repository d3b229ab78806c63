"""Evaluation metrics agree with sklearn and behave as calibration and lift should."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import (
    assign_tiers,
    binary_metrics,
    bootstrap_intervals,
    capacity_thresholds,
    compare_models,
    grouped_shap_importance,
    metric_names,
    tier_table,
)


def calibrated_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probabilities = np.round(rng.beta(1.0, 6.0, n), 3)  # rounding creates ties
    labels = (rng.random(n) < probabilities).astype("int8")
    return labels, probabilities


def test_metrics_equal_sklearn() -> None:
    labels, probabilities = calibrated_sample(5000)
    metrics = binary_metrics(labels, probabilities)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(labels, probabilities), abs=1e-12)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, probabilities), abs=1e-12)
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels, probabilities), abs=1e-12)
    logit = np.log(probabilities.clip(1e-6, 1 - 1e-6) / (1 - probabilities.clip(1e-6, 1 - 1e-6)))
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(logit[:, None], labels)
    assert metrics["calibration_slope"] == pytest.approx(reference.coef_[0, 0], abs=1e-5)
    assert metrics["calibration_intercept"] == pytest.approx(reference.intercept_[0], abs=1e-5)
    assert metrics["n"] == 5000
    assert metrics["positives"] == labels.sum()
    assert metrics["base_rate"] == pytest.approx(labels.mean())
    assert list(metrics) == metric_names()


def test_calibrated_sample_has_small_ece_and_unit_slope() -> None:
    labels, probabilities = calibrated_sample(50_000)
    metrics = binary_metrics(labels, probabilities)
    assert metrics["ece"] < 0.01
    assert metrics["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert metrics["calibration_intercept"] == pytest.approx(0.0, abs=0.1)


def test_distorted_probabilities_have_large_ece_and_slope_away_from_one() -> None:
    labels, probabilities = calibrated_sample(50_000)
    overconfident = probabilities**0.5
    metrics = binary_metrics(labels, overconfident)
    assert metrics["ece"] > 0.1
    assert metrics["calibration_slope"] != pytest.approx(1.0, abs=0.2)
    assert binary_metrics(labels, probabilities, n_bins=20)["ece"] < 0.02


def test_lift_and_capture_on_a_hand_made_example() -> None:
    # 20 rows, 4 positives (base rate 0.2); the top 10% (2 rows) holds 2 positives, the top 20% 3
    probabilities = np.linspace(0.99, 0.01, 20)
    labels = np.zeros(20)
    labels[[0, 1, 3, 15]] = 1
    metrics = binary_metrics(labels, probabilities, top_shares=(0.1, 0.2))
    assert metrics["lift_at_10"] == pytest.approx(1.0 / 0.2)
    assert metrics["capture_at_10"] == pytest.approx(0.5)
    assert metrics["lift_at_20"] == pytest.approx(0.75 / 0.2)
    assert metrics["capture_at_20"] == pytest.approx(0.75)


def test_one_class_gives_nan_not_a_crash() -> None:
    metrics = binary_metrics(np.zeros(50), np.linspace(0.1, 0.9, 50))
    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["calibration_slope"])
    assert metrics["base_rate"] == 0
    assert metrics["brier"] > 0
    intervals = bootstrap_intervals(np.ones(30), np.linspace(0.1, 0.9, 30), n_boot=20)
    assert all(math.isnan(v) for v in intervals["roc_auc"])


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="within"):
        binary_metrics([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="equal length"):
        binary_metrics([0, 1, 1], [0.5, 0.2])


def test_intervals_contain_the_estimate_and_widen_with_fewer_rows() -> None:
    labels, probabilities = calibrated_sample(20_000)
    wide = bootstrap_intervals(labels[:2000], probabilities[:2000], n_boot=100)
    narrow = bootstrap_intervals(labels, probabilities, n_boot=100)
    point = binary_metrics(labels, probabilities)
    for name in (
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "calibration_slope",
        "lift_at_10",
        "capture_at_20",
    ):
        low, high = narrow[name]
        assert low <= point[name] <= high, name
        assert wide[name][1] - wide[name][0] > high - low, name


def test_same_seed_same_intervals() -> None:
    labels, probabilities = calibrated_sample(3000)
    assert bootstrap_intervals(labels, probabilities, n_boot=30, seed=3) == bootstrap_intervals(
        labels, probabilities, n_boot=30, seed=3
    )


def test_models_share_one_set_of_resamples_and_each_gets_its_own_intervals() -> None:
    """compare_models draws the resamples once for every model (issue 21); each model's intervals
    are the ones it gets alone, and a larger sample than one chunk of resamples changes nothing."""
    labels, probabilities = calibrated_sample(3000)
    rng = np.random.default_rng(7)
    models = {"model": probabilities, "noisy": np.clip(probabilities + rng.normal(0, 0.05, 3000), 0, 1)}
    leads = rng.integers(0, 2000, 3000)
    table = compare_models(labels, models, groups=leads, n_boot=40, seed=5)
    for name, values in models.items():
        alone = bootstrap_intervals(labels, values, n_boot=40, seed=5, groups=leads)
        for metric in ("roc_auc", "ece", "calibration_slope", "lift_at_10"):
            assert table.loc[name, f"{metric}_low"] == pytest.approx(alone[metric][0], abs=1e-9), metric
            assert table.loc[name, f"{metric}_high"] == pytest.approx(alone[metric][1], abs=1e-9), metric
    assert table.loc["model", "roc_auc_low"] != table.loc["noisy", "roc_auc_low"]


def test_cluster_bootstrap_is_wider_when_groups_repeat_the_same_rows() -> None:
    labels, probabilities = calibrated_sample(2000)
    # every lead appears as 5 identical snapshots: resampling rows pretends there are 10 000 leads
    repeated_labels, repeated_probabilities = np.repeat(labels, 5), np.repeat(probabilities, 5)
    leads = np.repeat(np.arange(2000), 5)
    by_row = bootstrap_intervals(repeated_labels, repeated_probabilities, n_boot=100)
    by_lead = bootstrap_intervals(repeated_labels, repeated_probabilities, n_boot=100, groups=leads)
    width = {name: bounds[1] - bounds[0] for name, bounds in by_lead.items()}
    assert width["roc_auc"] > 1.5 * (by_row["roc_auc"][1] - by_row["roc_auc"][0])
    assert by_lead["n"][0] == by_lead["n"][1] == 10_000


def test_tier_table_counts_add_up() -> None:
    labels, probabilities = calibrated_sample(10_000)
    thresholds = {"A": 0.3, "B": 0.15, "C": 0.05}
    table = tier_table(labels, probabilities, thresholds, n_boot=50)
    assert table["tier"].tolist() == ["A", "B", "C", "D"]
    assert table["rows"].sum() == 10_000
    assert table["positives"].sum() == labels.sum()
    assert (table.loc[table["tier"] == "A", "rows"] == (probabilities >= 0.3).sum()).all()
    assert (table["conversion_low"] <= table["conversion_rate"]).all()
    assert (table["conversion_rate"] <= table["conversion_high"]).all()
    assert table["conversion_rate"].is_monotonic_decreasing


def test_capacity_thresholds_hold_the_top_shares() -> None:
    probabilities = np.arange(1000) / 1000
    thresholds = capacity_thresholds(probabilities, {"A": 0.05, "B": 0.20})
    tiers = assign_tiers(probabilities, thresholds)
    assert (tiers == "A").sum() == 50
    assert (tiers == "B").sum() == 150
    assert (tiers == "D").sum() == 800


def test_capacity_thresholds_are_exact_where_floating_point_is_not() -> None:
    probabilities = np.arange(100) / 100  # 0.07 * 100 == 7.000000000000001
    thresholds = capacity_thresholds(probabilities, {"A": 0.07})
    assert (assign_tiers(probabilities, thresholds) == "A").sum() == 7


def test_compare_models_gives_the_same_columns_for_every_model() -> None:
    labels, probabilities = calibrated_sample(3000)
    models = {
        "oracle": probabilities,
        "base_rate": np.full(3000, labels.mean()),
        "noisy": np.clip(probabilities + np.random.default_rng(1).normal(0, 0.1, 3000), 0, 1),
    }
    table = compare_models(labels, models, groups=np.arange(3000) // 3, n_boot=30)
    assert table.index.tolist() == ["oracle", "base_rate", "noisy"]
    assert {"roc_auc", "roc_auc_low", "roc_auc_high", "ece_high"} <= set(table.columns)
    assert table.loc["base_rate", "roc_auc"] == pytest.approx(0.5)
    assert table.loc["oracle", "roc_auc"] > table.loc["noisy", "roc_auc"]


def test_grouped_shap_sums_within_a_group_before_the_absolute_value() -> None:
    metadata = {
        "visits_7d": FeatureMeta("visits_7d", "engagement", "page_view", "{value}"),
        "visits_30d": FeatureMeta("visits_30d", "engagement", "page_view", "{value}"),
        "employees": FeatureMeta("employees", "fit", "employees", "{value}"),
    }
    shap_values = np.array([[1.0, -1.0, 0.5], [2.0, -1.0, -0.5]])
    table = grouped_shap_importance(shap_values, ["visits_7d", "visits_30d", "employees"], metadata)
    as_dict = dict(zip(table["group"], table["mean_abs_shap"], strict=True))
    assert as_dict == {"page_view": pytest.approx(0.5), "employees": pytest.approx(0.5)}
    assert table["n_features"].sum() == 3
    assert table["share"].sum() == pytest.approx(1.0)


def test_grouped_shap_keeps_features_without_metadata_and_sorts() -> None:
    table = grouped_shap_importance(np.array([[0.1, -3.0]]), ["a", "b"], {})
    assert table["group"].tolist() == ["b", "a"]
    assert isinstance(table, pd.DataFrame)
