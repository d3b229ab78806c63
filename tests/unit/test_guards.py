"""Guards stop training on too little data and name leaking features."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from leadml.data.features import LABEL, FeatureMeta
from leadml.errors import LeadmlError
from leadml.modelling.guards import (
    OutcomeLevelSettings,
    check_minimum_data,
    enforce_leakage,
    leakage_report,
    outcome_coded_levels,
    stratified_subsample,
)


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
    with caplog.at_level(logging.WARNING, logger="leadml.modelling.guards"):
        flagged = enforce_leakage(report, "warn")
    assert set(flagged) == {"label_echo", "closing_note"}
    assert "label_echo" in caplog.text


def test_enforce_with_nothing_flagged_and_bad_action() -> None:
    table, metadata = planted_training_table()
    clean = leakage_report(table[["lead_id", LABEL, "signal", "noise"]], metadata)
    assert enforce_leakage(clean, "stop") == []
    with pytest.raises(LeadmlError, match="leakage_action"):
        enforce_leakage(clean, "ignore")


def status_field_table(n: int = 8000, seed: int = 3) -> tuple[pd.DataFrame, dict[str, FeatureMeta]]:
    """A CRM status field sales fill in during follow-up: a third of its rows name the outcome.

    Alone it ranks well below the AUC threshold (most rows are blank or say "contacted"), which
    is why the single-feature AUC test misses it and the outcome-coded test must not.
    """
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(signal - 0.6)))).astype("int8")
    recorded = rng.random(n) < 0.3
    status = np.where(
        recorded,
        np.where(label == 1, rng.choice(["closed_won", "will_enrol"], n), rng.choice(["ringing", "lost"], n)),
        np.where(rng.random(n) < 0.5, "contacted", None),
    )
    # an honest category with a rare level that converts far less than average
    seniority = np.where(signal < -2.2, "student", rng.choice(["staff", "manager", "director"], n))
    table = pd.DataFrame(
        {
            "lead_id": np.arange(n),
            LABEL: label,
            "signal": signal,
            "status": pd.Categorical(status),
            "seniority": pd.Categorical(seniority),
        }
    )
    kinds = {"signal": "numeric", "status": "categorical", "seniority": "categorical"}
    metadata = {name: FeatureMeta(name, "other", name, "{value}", kind=kind) for name, kind in kinds.items()}
    return table, metadata


def test_outcome_coded_levels_are_judged_against_the_base_rate() -> None:
    labels = np.r_[np.ones(300), np.zeros(9700)]  # base rate 3%
    rare_but_ordinary = pd.Series(np.r_[["a"] * 6, ["b"] * 294, ["a"] * 194, ["b"] * 9506])
    # level a converts at 3%, level b at 3%: nothing certain about either
    assert outcome_coded_levels(rare_but_ordinary, labels) == (0.0, [])
    # a level converting at 0.5% when the base is 3% is not yet "all but certain" either
    mixed = pd.Series(np.r_[["x"] * 10, ["y"] * 290, ["x"] * 1990, ["y"] * 7710])
    assert outcome_coded_levels(mixed, labels)[0] == 0.0
    # but a level that never converts across thousands of rows is
    never = pd.Series(np.r_[["y"] * 300, ["x"] * 6000, ["y"] * 3700])
    share, levels = outcome_coded_levels(never, labels)
    assert levels == ["x"] and share == pytest.approx(0.6)


def test_outcome_coded_levels_ignore_small_levels_and_count_missing_as_a_level() -> None:
    labels = np.r_[np.ones(15), np.zeros(485), np.ones(100), np.zeros(400)]
    values = pd.Series([*["won_note"] * 15, *[None] * 485, *["a", "b"] * 250])
    share, levels = outcome_coded_levels(values, labels)
    assert levels == ["(missing)"] and share == pytest.approx(0.485)
    assert outcome_coded_levels(values, labels, OutcomeLevelSettings(min_rows=10))[1] == [
        "(missing)",
        "won_note",
    ]


def test_a_status_field_is_flagged_as_outcome_coded_though_its_auc_is_moderate() -> None:
    table, metadata = status_field_table()
    report = leakage_report(table, metadata).set_index("feature")
    status = report.loc["status"]
    assert status["strength"] < 0.95 and not status["too_predictive"]
    assert status["outcome_coded"] and status["flagged"]
    assert 0.25 < status["outcome_levels_share"] < 0.35
    assert set(status["outcome_levels"].split("; ")) == {"closed_won", "will_enrol", "ringing", "lost"}
    assert status["reason"].startswith(
        f"outcome-coded: {status['outcome_levels_share']:.0%} of rows in levels"
    )
    for honest in ("signal", "seniority"):
        assert not report.loc[honest, "flagged"], honest
    assert report.loc["signal", "outcome_levels_share"] == 0.0  # numbers are left to the AUC test


def test_enforce_exclude_returns_the_names_without_stopping(caplog: pytest.LogCaptureFixture) -> None:
    table, metadata = status_field_table()
    with caplog.at_level(logging.INFO, logger="leadml.modelling.guards"):
        excluded = enforce_leakage(leakage_report(table, metadata), "exclude")
    assert excluded == ["status"]
    assert "excluded from training: status: outcome-coded" in caplog.text
