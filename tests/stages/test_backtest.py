"""leadml-backtest: rolling folds on generated feature tables, drift flags, outputs and the MLflow run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import flat_leads, local_tracking, project_config
from leadml.cli import run_backtest
from leadml.data import schema as s
from leadml.data.features import flat_feature_metadata, metadata_to_json
from leadml.errors import LeadmlError
from leadml.modelling.backtest import BacktestSettings, backtest_periods, summary_sentences
from leadml.modelling.evaluate import base_rate_shift

# small models and guards for tables of a few thousand rows
QUICK = {
    "guards.min_snapshots": 300,
    "guards.min_positives": 30,
    "model.min_child_samples": 50,
    "model.n_jobs": 1,
    "evaluation.shap_rows": 0,
}


def _cfg(root: Path, *overrides: str):
    """The backtest config of a project under ``root``: the generated feature tables have no raw data
    to rebuild them from, and no points sheet."""
    return project_config(root, "backtest", ["++prepare=never", "++data.points=null", *overrides], QUICK)


def drifting_table(n: int = 16000, seed: int = 0, rates: tuple[float, float] = (0.05, 0.30)) -> pd.DataFrame:
    """One row per lead in order: a stable signal (x1, x2, channel) while the base rate climbs."""
    return flat_leads(n, seed, rates)


def write_features(root: Path, snapshots: pd.DataFrame, name: str = "synthetic") -> None:
    out = root / "data" / "features" / name
    out.mkdir(parents=True)
    snapshots.to_parquet(out / "snapshots.parquet", index=False)
    meta = flat_feature_metadata(snapshots, {"x1": "fit", "x2": "engagement"})
    (out / "feature_metadata.json").write_text(json.dumps(metadata_to_json(meta)))
    (out / "manifest.json").write_text(json.dumps({"stage": "features", "fingerprint": "test"}))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_rising_base_rate_is_flagged_and_recent_calibration_helps(root: Path) -> None:
    write_features(root, drifting_table())
    cfg = _cfg(root, "split=order", "backtest.folds=4", "backtest.test_share=0.4")
    with local_tracking():
        summary = run_backtest(cfg)
    table = summary.table
    assert list(table["period"]) == [1, 2, 3, 4]
    assert (table["rows"] == 1600).all()  # 40% of 16,000 rows in four equal periods
    assert table["base_rate"].iloc[-1] > table["base_rate"].iloc[0] * 1.3
    assert table["base_rate_shift"].sum() >= 3
    assert (table["history_base_rate"] < table["base_rate"]).all()
    assert (table["roc_auc"] > 0.7).all() and (table["baseline_rate_roc_auc"] == 0.5).all()
    assert table["ece_recent"].mean() < table["ece"].mean()
    assert (table["recent_calibration_rows"] < table["calibration_rows"]).all()
    assert {"score_psi", "max_feature_psi", "top_drift_features", "baseline_logreg_ece"} <= set(table.columns)
    sentences = summary.summary
    assert sentences[0].startswith("base rate rose from")
    assert "recent-window calibration (latest 25% of the out-of-sample rows) lowered ECE" in sentences[1]

    out = root / "reports" / "synthetic"
    csv = pd.read_csv(out / "backtest.csv")
    assert len(csv) == 4 and "ece_recent" in csv.columns
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "backtest.json").read_text())
    assert record["summary"] == list(sentences) and len(record["periods"]) == 4
    flagged = table.loc[table["base_rate_shift"], "period"]
    assert record["flags"]["base_rate_shift"] == [int(period) for period in flagged]

    from mlflow import MlflowClient

    client = MlflowClient(summary.tracking_uri)
    run = client.get_run(summary.run_id)
    assert run.info.run_name == "backtest-lightgbm"
    history = client.get_metric_history(summary.run_id, "backtest.ece_recent")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert run.data.params["backtest.folds"] == "4"
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "backtest")}
    assert artifacts == {"backtest/backtest.csv", "backtest/backtest.png", "backtest/backtest.json"}


def test_time_periods_keep_whole_dates_and_follow_the_snapshot_dates(root: Path) -> None:
    table = drifting_table(n=9000, seed=1, rates=(0.15, 0.15))
    weeks = np.repeat(np.arange(90), 100)
    table = table.drop(columns=[s.ORDER_KEY]).assign(
        **{s.AS_OF: pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(7 * weeks, unit="D")}
    )
    table[s.AS_OF] = table[s.AS_OF].dt.as_unit("ns")
    write_features(root, table)
    cfg = _cfg(root, "backtest.folds=3", "backtest.test_share=0.3", "split.calibration_months=2")
    with local_tracking():
        summary = run_backtest(cfg)
    result = summary.table
    assert (result["rows"] == 900).all()  # 9 whole weeks of 100 rows each
    starts = pd.to_datetime(result["period_start"])
    assert (starts.diff().dropna() == pd.Timedelta(weeks=9)).all()
    assert (pd.to_datetime(result["cutoff"]) + pd.Timedelta(weeks=1) == starts).all()
    assert not result["base_rate_shift"].any()  # a stable rate: nothing to flag
    assert summary.summary[0].startswith("base rate held steady")


def test_too_little_data_names_the_fold_and_the_fix(root: Path) -> None:
    write_features(root, drifting_table(n=3000))
    history = r"fold 1 of 5 .*not enough training data.*smaller backtest\.test_share"
    with pytest.raises(LeadmlError, match=history):
        run_backtest(_cfg(root, "split=order", "backtest.test_share=0.8", "guards.min_snapshots=1000"))
    with pytest.raises(LeadmlError, match=r"fold 1 of 40 .*positives.*fewer backtest\.folds"):
        run_backtest(_cfg(root, "split=order", "backtest.folds=40"))
    with pytest.raises(LeadmlError, match="split=time or split=order"):
        run_backtest(_cfg(root, "split=random"))


def test_periods_are_equal_slices_at_the_end_and_dates_stay_whole() -> None:
    periods = backtest_periods(pd.Series(np.arange(1000.0), name=s.ORDER_KEY), folds=5, test_share=0.5)
    assert [p.rows for p in periods] == [100] * 5
    assert periods[0].cutoff == 499 and periods[0].first == 500 and periods[-1].last == 999
    assert all(a.last == b.cutoff for a, b in itertools.pairwise(periods))
    dates = pd.Series(np.repeat(np.arange(10), [50, 50, 50, 50, 50, 50, 50, 150, 10, 40]), name=s.AS_OF)
    periods = backtest_periods(dates, folds=2, test_share=0.4)
    assert [(p.first, p.last, p.rows) for p in periods] == [(7, 7, 150), (8, 9, 50)]
    with pytest.raises(LeadmlError, match=r"period is empty.*fewer backtest\.folds"):
        backtest_periods(dates, folds=4, test_share=0.4)


def test_base_rate_shift_needs_significance_and_size() -> None:
    change, p_value = base_rate_shift(800, 10000, 300, 1000)  # 8% -> 30%
    assert change == pytest.approx(2.75) and p_value < 1e-12
    change, p_value = base_rate_shift(800, 10000, 85, 1000)  # 8% -> 8.5%: noise
    assert p_value > 0.01


def test_summary_says_when_recent_calibration_did_not_help() -> None:
    table = pd.DataFrame(
        {
            "period": [1, 2],
            "base_rate": [0.10, 0.10],
            "base_rate_shift": [False, False],
            "ece": [0.02, 0.02],
            "ece_recent": [0.03, 0.01],
            "score_psi": [0.05, 0.15],
            "max_feature_psi": [0.02, 0.03],
            "population": ["stable", "watch"],
            "top_drift_features": ["x 0.02", "x 0.03"],
            "roc_auc": [0.8, 0.78],
        }
    )
    sentences = summary_sentences(table, BacktestSettings())
    assert sentences[0].startswith("base rate held steady") and "no period differs" in sentences[0]
    assert "did not help: ECE lower in 1 of 2 periods (mean 0.020 -> 0.020)" in sentences[1]
    assert sentences[2].startswith("population to watch (PSI > 0.1) in period 2")
