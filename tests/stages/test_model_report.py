"""The model report written by leadml-train: pure pieces on small frames, then two real trainings."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from factories import local_tracking, project_config
from leadml.cli import run_train
from leadml.data import schema as s
from leadml.modelling.evaluate import compare_models, tier_table
from leadml.modelling.gate import GateDecision
from leadml.modelling.train import TrainingResult
from leadml.reporting.model_report import (
    RunInfo,
    champion_comparison,
    metric_table,
    model_report_context,
    oracle_gap,
    render_model_report,
    tier_records,
)
from leadml.stages.train import TrainResult

HOSTILE = "<script>alert(1)</script>"
HOSTILE_COLUMN = '<img src=x onerror="alert(2)">'
SMALL = {}
SECTIONS = (
    "summary",
    "metrics",
    "charts",
    "calibration",
    "tiers",
    "importance",
    "champion",
    "gate",
    "leakage",
    "split",
    "run",
)
CHARTS = ("chart-reliability", "chart-roc", "chart-pr", "chart-gains", "chart-importance")


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, name, overrides, SMALL)


def _chart(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*src="([^"]*)"', page)
    assert match, f"no {element_id} image"
    return match.group(1)


def _assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
    assert "<script" not in page and "<link" not in page


# --------------------------------------------------------------------------- pure pieces
def _fake_result() -> TrainingResult:
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.beta(1, 8, n)
    labels = (rng.random(n) < truth).astype("int64")
    noisy = np.clip(truth + rng.normal(0, 0.03, n), 1e-4, 1 - 1e-4)
    probabilities = {
        "lightgbm": noisy,
        "lightgbm_uncalibrated": np.clip(noisy * 1.3, 1e-4, 1 - 1e-4),
        "logreg_baseline": np.clip(truth + rng.normal(0, 0.08, n), 1e-4, 1 - 1e-4),
        "base_rate": np.full(n, labels.mean()),
        "oracle": truth,
    }
    leads = np.arange(n) // 2
    comparison = compare_models(labels, probabilities, groups=leads, n_boot=10)
    tiers = tier_table(labels, noisy, {"A": 0.3, "B": 0.15, "C": 0.05}, n_boot=10, groups=leads)
    leakage = pd.DataFrame(
        {
            "feature": [HOSTILE_COLUMN, "n_visit_7d"],
            "kind": ["numeric", "numeric"],
            "auc": [0.99, 0.7],
            "strength": [0.99, 0.7],
            "present_positive": [1.0, 0.6],
            "present_negative": [0.02, 0.4],
            "too_predictive": [True, False],
            "post_outcome": [True, False],
            "flagged": [True, False],
            "reason": [f"single-feature AUC 0.990 {HOSTILE}", ""],
        }
    )
    importance = pd.DataFrame(
        {
            "group": [HOSTILE_COLUMN, "visits"],
            "mean_abs_shap": [0.4, 0.1],
            "n_features": [1, 3],
            "share": [0.8, 0.2],
        }
    )
    window = {"rows": n, "leads": n // 2, "positives": int(labels.sum()), "rate": float(labels.mean())}
    split = {
        name: {**window, "first_as_of": first, "last_as_of": last}
        for name, first, last in (
            ("train", "2024-07-01", "2025-03-31"),
            ("calibration", "2025-04-01", "2025-06-30"),
            ("test", "2025-07-01", "2025-09-30"),
        )
    }
    return TrainingResult(
        scorer=SimpleNamespace(feature_names=["a", "b"]),  # type: ignore[arg-type]
        model_name="lightgbm",
        split=split,
        purged_rows={"calibration": 12, "test": 7},
        leakage=leakage,
        leakage_flagged=[HOSTILE_COLUMN],
        leakage_excluded=[],
        comparison=comparison,
        tiers=tiers,
        calibration={
            "method": "isotonic",
            "chosen_by": "auto",
            "cv_log_loss": {"isotonic": 0.3, "sigmoid": 0.31},
            "steps": 12,
            "verdict": f"not improved: {HOSTILE}",
        },
        test=pd.DataFrame({s.LABEL: labels}),
        windows={},
        probabilities=probabilities,
        shap_importance=importance,
        shap_sample=None,
        seconds={"split": 0.1, "fit": 1.0},
    )


def test_report_pieces_and_escaping() -> None:
    result = _fake_result()
    table = metric_table(result.comparison, "lightgbm")
    assert [row["model"] for row in table] == [
        "lightgbm",
        "lightgbm_uncalibrated",
        "logreg_baseline",
        "base_rate",
        "oracle",
    ]
    assert table[0]["highlight"] and all(c["low"] <= c["value"] <= c["high"] for c in table[0]["cells"][:2])
    gap = oracle_gap(result.comparison, "lightgbm")
    assert gap is not None and gap["roc_auc"] > 0 and not gap["suspicious"]
    assert oracle_gap(result.comparison.drop(index="oracle"), "lightgbm") is None
    tiers = tier_records(result.tiers)
    assert [t["tier"] for t in tiers] == ["A", "B", "C", "D"]
    assert sum(t["share_of_rows"] for t in tiers) == pytest.approx(1.0)
    assert sum(t["share_of_wins"] for t in tiers) == pytest.approx(1.0)

    candidate = result.comparison.loc["lightgbm"]
    assert "no champion" in champion_comparison(None, None, candidate, "1")["sentence"]
    assert "could not score" in champion_comparison("1", None, candidate, "2")["sentence"]
    worse = {"roc_auc": candidate["roc_auc"] - 0.05, "log_loss": candidate["log_loss"] + 0.01}
    rows = {r["metric"]: r for r in champion_comparison("1", worse, candidate, "2")["rows"]}
    assert rows["ROC AUC"]["delta"] == pytest.approx(0.05) and rows["ROC AUC"]["better"] is True
    assert rows["log loss"]["better"] is True

    decision = GateDecision(False, [f"ECE above the ceiling {HOSTILE}"])
    run = RunInfo("run-1", "2", "leadml-test", "sqlite:///x.db", "1", worse, {"features": 3.0}, 9.0)
    config = {
        "data": {"name": "synthetic"},
        "model": {"name": "lightgbm", "num_leaves": 15},
        "promotion": {"min_roc_auc": 0.6, "max_ece": 0.03},
        "guards": {"leakage_action": "warn"},
    }
    page = render_model_report(model_report_context(result, decision, run, config))
    _assert_self_contained(page)
    assert HOSTILE not in page and HOSTILE_COLUMN not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x" in page
    for chart in CHARTS:
        assert len(_chart(page, chart)) > 5000
    assert 'id="champion-table"' in page and "version 1 remains champion" in page
    assert "Possible leakage in 1 column" in page and "guards.leakage_action=warn" in page


# --------------------------------------------------------------------------- make train
@pytest.fixture(scope="module")
def trained_twice(project_copy) -> tuple[Path, TrainResult, TrainResult, str]:
    """A project trained twice (the second run has a champion to compare with) and what train printed:
    the shared project's data (generated, ingested, featured), in a store of its own."""
    root = project_copy("model_report", tracking=False)
    # the first run ends its data six weeks early, so its refit never saw the second run's latest
    # test rows: the second compares with it there
    last = pd.read_parquet(root / "data" / "features" / "synthetic" / "snapshots.parquet")[s.AS_OF].max()
    earlier = f"+split.test_end={(last - pd.Timedelta(days=42)).date().isoformat()}"
    printed = io.StringIO()
    with local_tracking(), contextlib.redirect_stdout(printed):
        first = run_train(_cfg(root, "train", [earlier]))
        second = run_train(_cfg(root, "train"))
    return root, first, second, printed.getvalue()


def test_train_writes_logs_and_links_the_report(
    trained_twice: tuple[Path, TrainResult, TrainResult, str],
) -> None:
    root, first, second, printed = trained_twice
    for summary in (first, second):
        path = Path(summary.report)
        assert path == root / "reports" / "synthetic" / f"model-v{summary.version}.html"
        assert path.exists() and not list(path.parent.glob(".*partial"))
        assert f"train: report {path}\n" in printed
        assert f"selection: {summary.selection}\n" in printed and summary.selection.startswith("chose ")
    # the registered model is the refit on every labelled row; the first run's data ended early
    assert second.deployment["refit"] and second.deployment["rows"] > first.deployment["rows"]
    assert printed.count("deployed: the same procedure refitted on every labelled row") == 2
    page = Path(second.report).read_text(encoding="utf-8")
    assert 'id="selection-table"' in page and "the same procedure refitted on every labelled row" in page

    from mlflow import MlflowClient

    with local_tracking():
        client = MlflowClient(tracking_uri=second.tracking_uri)
        artifacts = {a.path for a in client.list_artifacts(second.run_id, "report")}
        assert f"report/model-v{second.version}.html" in artifacts
        tags = client.get_run(second.run_id).data.tags
    assert Path(tags["report"]) == Path(second.report).resolve()
    assert tags["report_artifact"] == f"report/model-v{second.version}.html"


def test_report_sections_charts_gate_and_champion(
    trained_twice: tuple[Path, TrainResult, TrainResult, str],
) -> None:
    _, first, second, _ = trained_twice
    page = Path(second.report).read_text(encoding="utf-8")
    _assert_self_contained(page)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    models = set(re.findall(r'data-model="([^"]+)"', page))
    assert {"lightgbm", "lightgbm_uncalibrated", "logreg_baseline", "base_rate", "oracle"} <= models
    for chart in CHARTS:
        assert len(_chart(page, chart)) > 5000
    assert "Oracle gap: ROC AUC" in page
    for reason in second.reasons:
        assert reason.replace("'", "&#39;") in page
    assert 'id="champion-table"' in page and f"champion (v{second.champion_before})" in page
    assert all(f'<tr><td><span class="tier tier-{tier}">' in page for tier in "ABCD")
    assert re.search(r"<td>test</td><td>\d{4}-\d{2}-\d{2}</td><td>\d{4}-\d{2}-\d{2}</td>", page)

    first_page = Path(first.report).read_text(encoding="utf-8")
    assert "There was no champion before" in first_page and 'id="champion-table"' not in first_page
    assert "promoted to champion" in first_page


def test_accounts_are_judged_on_the_test_window_and_kept_in_the_model(
    trained_twice: tuple[Path, TrainResult, TrainResult, str],
) -> None:
    """Issue 24: the leads of one account roll up into a calibrated account score (ECE at most
    0.03 on the test window's accounts), the correction is kept in the registered model's state."""
    _, _, second, _ = trained_twice
    page = Path(second.report).read_text(encoding="utf-8")
    section = page.split('<section id="accounts">', 1)[1].split("</section>", 1)[0]
    assert "corrected for dependence (deployed)" in section and "fitted on " in section

    from mlflow import MlflowClient

    from leadml.adapters import tracking

    with local_tracking():
        metrics = MlflowClient(tracking_uri=second.tracking_uri).get_run(second.run_id).data.metrics
        tracking.configure(second.tracking_uri, "leadml-synthetic", Path(second.report).parents[2] / "mlruns")
        scorer = tracking.load_scorer(f"models:/{second.registered_model}/{second.version}")
    assert metrics["test.accounts.account_probability.ece"] <= 0.03
    assert metrics["test.accounts.account_probability.roc_auc"] > 0.75
    assert scorer.accounts["key"] == s.ACCOUNT_ID and scorer.accounts["correction"]["fitted"]
    assert scorer.accounts["test"]["account_probability"]["ece"] == pytest.approx(
        metrics["test.accounts.account_probability.ece"]
    )
