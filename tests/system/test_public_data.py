"""Data tests on the real public sets shipped beside the repository (../shared/data/public)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from factories import local_tracking
from leadml.cli import CONFIG_DIR, run_features, run_ingest, run_train
from leadml.data import schema as s
from leadml.stages.ingest import IngestSummary

PUBLIC = Path(CONFIG_DIR).parent.parent / "shared" / "data" / "public"
pytestmark = [
    pytest.mark.public_data,
    pytest.mark.skipif(not PUBLIC.exists(), reason=f"public data not found at {PUBLIC}"),
]


def _cfg(name: str, root: Path, data: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            name,
            [f"paths.root={root}", f"paths.public_data_dir={PUBLIC}", f"data={data}", *(overrides or [])],
        )


def test_x_education_flat_table_through_contracts_and_features(tmp_path: Path) -> None:
    record = run_ingest(_cfg("ingest", tmp_path, "x_education"))
    report = record.tables["leads"]
    assert report["input_rows"] == 9240
    assert report["accepted_rows"] + report["quarantined_rows"] == 9240
    summary = run_features(_cfg("features", tmp_path, "x_education"))
    snaps = pd.read_parquet(tmp_path / "data/features/x_education/snapshots.parquet")
    assert len(snaps) == report["accepted_rows"] == summary.snapshots
    assert snaps[s.LEAD_ID].is_unique
    assert snaps[s.ORDER_KEY].notna().all()
    assert 0.3 < snaps[s.LABEL].mean() < 0.45  # 38.5% of X Education's leads converted
    assert "Converted" not in snaps.columns and "Prospect ID" not in snaps.columns
    # "Select" is the form's placeholder: it must read as missing, never as a category
    for column in ("Specialization", "City", "Lead Profile"):
        assert "select" not in set(snaps[column].astype("string").dropna())
    meta = {
        m["name"]: m
        for m in json.loads((tmp_path / "data/features/x_education/feature_metadata.json").read_text())
    }
    assert meta["Lead Source"]["family"] == "source" and meta["TotalVisits"]["kind"] == "numeric"


@pytest.mark.parametrize("data", ["x_education", "olist", "bank"])
def test_train_runs_end_to_end_from_the_shared_files(
    tmp_path: Path, data: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``leadml-train data=<set>`` alone: ingest and features first, then a registered model whose
    metrics table has the model against points, logistic regression and base rate."""
    cfg = _cfg("train", tmp_path, data, ["evaluation.bootstrap=50", "evaluation.shap_rows=500"])
    with local_tracking():
        summary = run_train(cfg)
    assert summary.version == "1"
    comparison = summary.comparison
    assert {"lightgbm", "logreg_baseline", "points_baseline", "base_rate"} <= set(comparison.index)
    assert (tmp_path / "reports" / data / "model-v1.html").exists()
    printed = capsys.readouterr().out
    assert "prepare: no features in" in printed
    for row in ("lightgbm ", "logreg_baseline ", "points_baseline ", "base_rate "):
        assert f"  {row}" in printed and "ROC AUC" in printed
    model = comparison.loc["lightgbm"]
    if data == "x_education":
        assert cfg.split.kind == "order"
        # the sentinel's evidence, not a list in the config, leaves out what sales filled in
        assert summary.leakage_excluded == ("Tags", "Lead Quality")
        assert "outcome-coded" in summary.leakage_flagged["Tags"]
        assert "leakage sentinel: 2 column(s) flagged, excluded from the model" in printed
        assert 0.85 < model["roc_auc"] < 0.96  # 0.98 with the leaks
    elif data == "olist":
        assert cfg.split.kind == "time"
        assert model["roc_auc_low"] > 0.6
    else:
        assert cfg.split.kind == "order"
        # the conversion rate rises several-fold over the rows: the test window converts far more
        assert summary.split["test"]["rate"] > 3 * summary.split["train"]["rate"]
        assert not summary.promoted


def _features(tmp_path: Path, data: str) -> tuple[IngestSummary, pd.DataFrame, dict]:
    record = run_ingest(_cfg("ingest", tmp_path, data))
    run_features(_cfg("features", tmp_path, data))
    snaps = pd.read_parquet(tmp_path / f"data/features/{data}/snapshots.parquet")
    meta = json.loads((tmp_path / f"data/features/{data}/feature_metadata.json").read_text())
    return record, snaps, {m["name"]: m for m in meta}


def test_bank_is_ordered_by_row_without_the_columns_known_only_after_the_call(tmp_path: Path) -> None:
    record, snaps, meta = _features(tmp_path, "bank")
    report = record.tables["leads"]
    assert report["input_rows"] == report["accepted_rows"] + report["quarantined_rows"] == 45211
    assert report["quarantined_rows"] == 0
    assert len(snaps) == 45211 and snaps[s.LABEL].sum() == 5289  # 11.7% subscribed
    assert snaps[s.ORDER_KEY].tolist() == list(range(1, 45212))  # the file is in date order
    assert snaps[s.LEAD_ID].tolist()[:3] == ["1", "2", "3"]
    assert s.AS_OF not in snaps
    # the base rate rises over time (the data, not a bug): first 60% of rows against the last 20%
    assert snaps[s.LABEL][:27126].mean() < 0.06 < 0.3 < snaps[s.LABEL][-9042:].mean()
    after_the_call = {"duration", "campaign", "day", "month", "y"}
    assert after_the_call.isdisjoint(snaps.columns) and after_the_call.isdisjoint(meta)
    assert set(report["dropped_columns"]) == {"duration", "campaign", "day", "month"}
    # pdays -1 ("not previously contacted") is missing, exactly where previous is 0
    assert snaps["pdays"].min() >= 1
    assert snaps["pdays"].isna().equals(snaps["previous"] == 0)
    assert "unknown" not in set(snaps["poutcome"].astype("string").dropna())
    assert meta["balance"]["family"] == "fit" and meta["poutcome"]["family"] == "engagement"
    assert meta["contact"]["family"] == "source" and meta["job"]["kind"] == "categorical"


def test_olist_labels_wins_within_the_horizon_and_never_sees_the_deal_columns(tmp_path: Path) -> None:
    cfg = _cfg("ingest", tmp_path, "olist")
    outcomes = cfg.data.outcomes
    horizon = pd.Timedelta(days=outcomes.horizon_days)
    observed_from = pd.Timestamp(outcomes.observed_from, tz="UTC")
    record, snaps, meta = _features(tmp_path, "olist")

    # the same labels computed here from the two files
    folder = PUBLIC / "olist_marketing_funnel"
    mqls = pd.read_csv(folder / "olist_marketing_qualified_leads_dataset.csv", dtype=str)
    deals = pd.read_csv(folder / "olist_closed_deals_dataset.csv", dtype=str)
    assert (len(mqls), len(deals)) == (8000, 842)
    joined = mqls.merge(deals[["mql_id", "won_date"]], on="mql_id", how="left")
    first = pd.to_datetime(joined["first_contact_date"], utc=True)
    delay = pd.to_datetime(joined["won_date"], utc=True) - first
    early = first < observed_from
    end = max(first.max(), pd.to_datetime(deals["won_date"], utc=True).max())
    immature = ~early & (first + horizon > end)
    won_before_contact = delay < pd.Timedelta(0)  # one deal: quarantined, and its MQL with it
    labelled = ~early & ~immature & ~won_before_contact
    expected = joined.loc[labelled, "mql_id"]
    positives = int((labelled & (delay <= horizon)).sum())

    leads = record.tables["leads"]
    assert leads["input_rows"] == leads["accepted_rows"] + leads["quarantined_rows"] == 8000
    won_already = immature & delay.notna()  # set aside; the others are open (scored, never labels)
    assert leads["excluded_rows"] == int((early | won_already).sum()) > 1800
    assert record.labels["not_labelled"]["not labelled: before observed_from"] == int(early.sum())
    assert record.labels["not_labelled"]["not labelled: horizon not elapsed"] == int(won_already.sum())
    assert record.labels["open_leads"] == int((immature & delay.isna()).sum())
    assert leads["reasons"]["outcome row quarantined"] == int(won_before_contact.sum()) == 1
    deals_report = record.tables["outcomes"]
    assert (
        deals_report["input_rows"] == deals_report["accepted_rows"] + deals_report["quarantined_rows"] == 842
    )
    assert deals_report["reasons"] == {"won_date before first_contact_date": 1}

    assert sorted(snaps[s.LEAD_ID]) == sorted(expected)
    assert int(snaps[s.LABEL].sum()) == record.labels["positives"] == positives
    # 842 wins less those after the horizon, of MQLs not labelled, and the one dated before contact
    assert 650 < positives < 842 - record.labels["outcomes_after_horizon"]
    assert snaps[s.AS_OF].min() >= observed_from and snaps[s.AS_OF].max() == pd.Timestamp(
        "2018-05-31", tz="UTC"
    )
    by_id = snaps.set_index(s.LEAD_ID)
    row = joined.loc[labelled & (delay <= horizon)].iloc[0]
    assert by_id.loc[row["mql_id"], s.LABEL] == 1
    assert by_id.loc[row["mql_id"], s.AS_OF] == pd.Timestamp(row["first_contact_date"], tz="UTC")
    # only what is known at first contact: the MQL columns, never a closed-deal column
    assert set(meta) == {"landing_page_id", "origin"}
    assert set(deals.columns).isdisjoint(set(snaps.columns) - {"mql_id"}) and "mql_id" not in snaps
    assert "unknown" not in set(snaps["origin"].astype("string").dropna())


def test_olist_split_leaves_enough_positives_in_training(tmp_path: Path) -> None:
    """The split the config chooses (one-month windows) keeps guards.min_positives in training."""
    from leadml.modelling.split import SplitSettings, split_with_report

    cfg = _cfg("train", tmp_path, "olist")
    assert cfg.split.kind == "time" and cfg.split.test_months == 1
    _, snaps, _ = _features(tmp_path, "olist")
    parts = split_with_report(snaps, SplitSettings.from_mapping(cfg.split)).parts
    assert parts["train"][s.LABEL].sum() >= cfg.guards.min_positives
    assert parts["test"][s.LABEL].sum() >= 100
