"""Guards stop training on too little data and name leaking features."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from leadml.errors import LeadmlError
from leadml.features import LABEL, FeatureMeta
from leadml.guards import check_minimum_data, enforce_leakage, leakage_report, stratified_subsample


def planted_training_table(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, FeatureMeta]]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(signal - 2)))).astype("int8")
    closing_note = np.where(label == 1, rng.normal(size=n), np.nan)
    noise_with_gaps = np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n))
    table = pd.DataFrame(
        {
            "lead_id": np.arange(n) // 3,
            LABEL: label,
            "signal": signal,
            "label_echo": label + rng.normal(0, 0.01, n),
            "closing_note": closing_note,
            "noise": noise_with_gaps,
            "noise_category": pd.Categorical(rng.choice(["a", "b", "c", None], n)),
        }
    )
    kinds = {"noise_category": "categorical"}
    metadata = {
        name: FeatureMeta(name, "other", name, "{value}", kind=kinds.get(name, "numeric"))
        for name in ("signal", "label_echo", "closing_note", "noise", "noise_category")
    }
    return table, metadata


def test_minimum_data_passes_when_enough() -> None:
    table = pd.DataFrame({LABEL: np.r_[np.ones(100), np.zeros(900)]})
    check_minimum_data(table)


def test_minimum_data_names_what_is_missing_and_the_override() -> None:
    table = pd.DataFrame({LABEL: np.r_[np.ones(10), np.zeros(490)]})
    with pytest.raises(LeadmlError) as caught:
        check_minimum_data(table)
    message = str(caught.value)
    assert "500 training snapshots, need at least 1000" in message
    assert "10 positive labels, need at least 100" in message
    assert "guards.min_snapshots=" in message and "guards.min_positives=" in message


def test_minimum_data_only_positives_missing() -> None:
    table = pd.DataFrame({LABEL: np.r_[np.ones(5), np.zeros(5000)]})
    with pytest.raises(LeadmlError, match="5 positive labels") as caught:
        check_minimum_data(table)
    assert "snapshots, need" not in str(caught.value)


def test_leakage_report_flags_the_planted_leaks_and_not_the_noise() -> None:
    table, metadata = planted_training_table()
    report = leakage_report(table, metadata).set_index("feature")
    assert report.loc["label_echo", "too_predictive"]
    assert report.loc["label_echo", "auc"] > 0.99
    assert report.loc["closing_note", "post_outcome"]
    assert report.loc["closing_note", "flagged"]
    for clean in ("signal", "noise", "noise_category"):
        assert not report.loc[clean, "flagged"], clean
    assert 0.4 < report.loc["noise", "auc"] < 0.6
    assert report.loc["signal", "auc"] > 0.65
    assert report.index[0] in {"label_echo", "closing_note"}


def test_a_feature_that_predicts_the_negative_class_is_flagged_too() -> None:
    table, metadata = planted_training_table()
    table["label_echo"] = -table["label_echo"]
    report = leakage_report(table, metadata).set_index("feature")
    assert report.loc["label_echo", "too_predictive"]


def test_leakage_report_subsamples_keeping_the_label_share() -> None:
    labels = np.r_[np.ones(100), np.zeros(900)]
    rows = stratified_subsample(labels, 500, seed=0)
    assert len(rows) == 500
    assert labels[rows].sum() == 50
    table, metadata = planted_training_table()
    report = leakage_report(table, metadata, max_rows=2000).set_index("feature")
    assert report.loc["label_echo", "flagged"] and not report.loc["noise", "flagged"]


def test_enforce_stop_names_each_feature_and_the_ways_out() -> None:
    table, metadata = planted_training_table()
    report = leakage_report(table, metadata)
    with pytest.raises(LeadmlError) as caught:
        enforce_leakage(report, "stop")
    message = str(caught.value)
    assert "label_echo: single-feature AUC" in message
    assert "closing_note:" in message and "post_outcome" in message
    assert "features.exclude=[" in message and "guards.leakage_action=warn" in message
    assert "noise" not in message


def test_enforce_warn_logs_and_returns_names(caplog: pytest.LogCaptureFixture) -> None:
    table, metadata = planted_training_table()
    report = leakage_report(table, metadata)
    with caplog.at_level(logging.WARNING, logger="leadml.guards"):
        flagged = enforce_leakage(report, "warn")
    assert set(flagged) == {"label_echo", "closing_note"}
    assert "label_echo" in caplog.text


def test_enforce_with_nothing_flagged_and_bad_action() -> None:
    table, metadata = planted_training_table()
    clean = leakage_report(table[["lead_id", LABEL, "signal", "noise"]], metadata)
    assert enforce_leakage(clean, "stop") == []
    with pytest.raises(LeadmlError, match="leakage_action"):
        enforce_leakage(clean, "ignore")
