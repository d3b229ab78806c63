"""The training stage end to end on small generated data with a temporary SQLite tracking store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from leadml.cli import CONFIG_DIR, run_features, run_generate, run_ingest, run_train
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.scoring.request_fields import known_fields

SMALL = [
    "synthetic.n_leads=8000",
    "synthetic.start=2024-07-01",
    "synthetic.end=2026-01-01",
    "evaluation.bootstrap=20",
    "evaluation.shap_rows=300",
    "guards.leakage_max_rows=20000",
    "selection.trials=3",
    "selection.seconds=0",  # bounded by trials only: the same choice on a busy machine
]
QUICK_LIGHTGBM = ["model.n_estimators=150", "model.learning_rate=0.1", "model.early_stopping_rounds=20"]


def _cfg(root: Path, overrides: list[str] | tuple[str, ...] = (), name: str = "train"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        model = [] if any(o.startswith("model=") for o in overrides) else QUICK_LIGHTGBM
        return compose(name, [f"paths.root={root}", *SMALL, *model, *overrides])


@pytest.fixture(scope="module")
def features_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    for stage, run in (("generate", run_generate), ("ingest", run_ingest), ("features", run_features)):
        run(_cfg(root, name=stage))
    return root


@pytest.fixture
def root(features_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder (own tracking store) holding the shared feature files."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(features_root / "data", tmp_path / "data")
    return tmp_path


def test_train_registers_promotes_and_compares_with_the_champion(root: Path) -> None:
    first = run_train(_cfg(root))
    assert first.promoted and first.version == "1" and first.champion_before is None
    assert first.has_oracle
    assert first.leakage_checked > 10 and not first.leakage_flagged  # the sentinel's one line
    comparison = first.comparison
    assert {"lightgbm", "lightgbm_uncalibrated", "logreg_baseline", "base_rate", "oracle"} <= set(
        comparison.index
    )
    assert comparison.loc["lightgbm", "roc_auc"] > comparison.loc["base_rate", "roc_auc"] + 0.2
    assert (root / "mlflow.db").exists()
    second = run_train(_cfg(root))
    assert second.version == "2" and second.champion_before == "1"
    assert any("champion" in reason for reason in second.reasons)

    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(second.run_id)
    assert run.data.params["model.name"] == "lightgbm"
    assert "test.lightgbm.roc_auc" in run.data.metrics
    gap = comparison.loc["oracle", "roc_auc"] - comparison.loc["lightgbm", "roc_auc"]
    assert run.data.metrics["oracle_gap.roc_auc"] == pytest.approx(
        second.comparison.loc["oracle", "roc_auc"] - second.comparison.loc["lightgbm", "roc_auc"]
    )
    assert gap > -0.02  # a model far above the oracle would mean a leak
    assert first.calibration["verdict"].startswith(("improved", "not improved"))
    inputs = {
        next(tag.value for tag in d.tags if tag.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"train", "calibration", "test"}
    for window, dataset in inputs.items():
        assert dataset.name == f"synthetic-{window}" and len(dataset.digest) == 36
        assert json.loads(dataset.profile)["num_rows"] == second.split[window]["rows"]
    assert len({d.digest for d in inputs.values()}) == 3
    artifacts = {a.path for a in client.list_artifacts(second.run_id)}
    assert {"config.yaml", "metrics_comparison.csv", "promotion.json", "plots"} <= artifacts
    champion = str(client.get_model_version_by_alias("leadml-synthetic", "champion").version)
    assert champion in ("1", "2")


def test_champion_pyfunc_scores_feature_rows(root: Path) -> None:
    import mlflow

    run_train(_cfg(root))
    model = mlflow.pyfunc.load_model("models:/leadml-synthetic@champion")
    snapshots = pd.read_parquet(root / "data/features/synthetic/snapshots.parquet").head(50)
    # no input schema: MLflow's check of it cost more than the answer (leadml reads every field itself)
    assert model.metadata.get_input_schema() is None and model.metadata.get_output_schema() is not None
    # the fields of both request shapes (features, lead fields): no personal column in either
    assert not set(s.PERSONAL_DATA_COLUMNS) & set(known_fields(model.unwrap_python_model().scorer))
    inputs = model.unwrap_python_model().scorer.feature_names
    frame = snapshots[inputs].copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    predicted = model.predict(frame)
    assert predicted["probability"].between(0, 1).all() and len(predicted) == 50


def test_logreg_sigmoid_exclusions_and_another_tracking_store(root: Path) -> None:
    other_store = root / "elsewhere" / "tracking.db"
    other_store.parent.mkdir()
    overrides = [
        "model=logreg",
        "calibration=sigmoid",
        "split.test_months=2",
        "features.exclude=[browser,seniority]",
        f"mlflow.tracking_uri=sqlite:///{other_store}",
    ]
    summary = run_train(_cfg(root, overrides))
    assert "logreg" in summary.comparison.index
    assert summary.calibration["method"] == "sigmoid"
    assert summary.tracking_uri == f"sqlite:///{other_store}" and other_store.exists()
    assert not (root / "mlflow.db").exists()

    from mlflow import MlflowClient

    run = MlflowClient().get_run(summary.run_id)
    assert run.data.params["split.test_months"] == "2"
    import mlflow

    scorer = (
        mlflow.pyfunc.load_model(f"models:/leadml-synthetic/{summary.version}").unwrap_python_model().scorer
    )
    assert {"browser", "seniority"}.isdisjoint(known_fields(scorer))


def test_planted_leak_is_caught_by_name(root: Path) -> None:
    path = root / "data/features/synthetic/snapshots.parquet"
    snapshots = pd.read_parquet(path)
    rng = np.random.default_rng(0)
    snapshots["days_to_close_entered_by_sales"] = snapshots[s.LABEL] * 5 + rng.normal(0, 0.5, len(snapshots))
    snapshots.to_parquet(path)
    meta_path = root / "data/features/synthetic/feature_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.append(
        {
            "name": "days_to_close_entered_by_sales",
            "family": "other",
            "group": "days_to_close_entered_by_sales",
            "template": "{value}",
            "monotone": 0,
            "kind": "numeric",
        }
    )
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LeadmlError, match=r"days_to_close_entered_by_sales.*features\.exclude"):
        run_train(_cfg(root))

    # with leakage_action=exclude the sentinel's evidence decides, and the run records it
    import mlflow

    summary = run_train(_cfg(root, ["guards.leakage_action=exclude"]))
    assert summary.leakage_excluded == ("days_to_close_entered_by_sales",)
    assert "single-feature AUC" in summary.leakage_flagged["days_to_close_entered_by_sales"]
    run = mlflow.get_run(summary.run_id)
    assert run.data.tags["leakage.excluded"] == "days_to_close_entered_by_sales"
    scorer = (
        mlflow.pyfunc.load_model(f"models:/leadml-synthetic/{summary.version}").unwrap_python_model().scorer
    )
    assert "days_to_close_entered_by_sales" not in known_fields(scorer)
    assert "left out of the model" in Path(summary.report).read_text()


def test_pure_noise_is_never_promoted(root: Path) -> None:
    snapshots = pd.read_parquet(root / "data/features/synthetic/snapshots.parquet")
    everything_but_noise = [
        c for c in snapshots.columns if c not in (s.LEAD_ID, s.AS_OF, s.LABEL, "campaign_code")
    ]
    summary = run_train(_cfg(root, [f"features.exclude=[{','.join(everything_but_noise)}]"]))
    assert not summary.promoted
    assert any("floor" in reason for reason in summary.reasons)


def _comparison(calibrated: tuple[float, float], raw: tuple[float, float]) -> pd.DataFrame:
    rows = {"lightgbm": calibrated, "lightgbm_uncalibrated": raw}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["log_loss", "ece"])


def _split(calibration_rate: float, test_rate: float) -> dict:
    return {"calibration": {"rate": calibration_rate, "positives": 900}, "test": {"rate": test_rate}}


def test_calibration_verdict_says_whether_it_helped_and_why_not() -> None:
    from leadml.modelling.train import calibration_verdict

    better = calibration_verdict(_comparison((0.20, 0.005), (0.21, 0.03)), "lightgbm", _split(0.1, 0.1))
    assert better.startswith("improved") and "0.2000 against 0.2100" in better
    drift = calibration_verdict(_comparison((0.22, 0.03), (0.21, 0.02)), "lightgbm", _split(0.05, 0.1))
    assert drift.startswith("not improved") and "positive rate moved from 5.00%" in drift
    already = calibration_verdict(_comparison((0.21, 0.006), (0.21, 0.004)), "lightgbm", _split(0.1, 0.1))
    assert "already calibrated" in already
    small = calibration_verdict(_comparison((0.22, 0.03), (0.21, 0.02)), "lightgbm", _split(0.1, 0.1))
    assert "calibration_months" in small


def test_recent_window_calibration_is_recorded_and_shap_rows_zero_skips_explanations(root: Path) -> None:
    summary = run_train(_cfg(root, ["calibration.recent_fraction=0.5", "evaluation.shap_rows=0"]))
    calibration = summary.calibration
    window_rows = summary.split["calibration"]["rows"]
    assert 0.5 * window_rows <= calibration["calibration_rows"] < window_rows
    assert calibration["calibration_window"].startswith("the latest 50% of the out-of-sample rows (as_of ")

    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient().list_artifacts(summary.run_id)}
    assert "calibration.json" in artifacts and "shap_importance.csv" not in artifacts


def _windows(train: tuple[int, int], calibration: tuple[int, int], test: tuple[int, int]) -> dict:
    return {
        name: {"rows": rows, "positives": positives, "rate": positives / rows}
        for name, (rows, positives) in {"train": train, "calibration": calibration, "test": test}.items()
    }


def test_base_rate_drift_flags_a_moved_test_window_and_not_noise() -> None:
    from leadml.modelling.train import base_rate_drift

    moved = base_rate_drift(_windows((27127, 1367), (9042, 1066), (9042, 2856)))  # the bank data
    assert moved["flagged"] and moved["change"] > 3
    assert moved["sentence"].startswith("base rate train 5.0%, calibration 11.8%, test 31.6%: the test")
    assert "p < 0.001" in moved["sentence"] and "calibration.recent_fraction" in moved["sentence"]
    steady = base_rate_drift(_windows((30000, 3000), (10000, 1010), (10000, 1030)))
    assert (
        not steady["flagged"] and steady["sentence"] == "base rate train 10.0%, calibration 10.1%, test 10.3%"
    )
    # significant but small (a large sample): not worth a warning
    assert not base_rate_drift(_windows((10**6, 10**5), (10**6, 10**5), (10**6, 1.1 * 10**5)))["flagged"]


def test_gate_requires_beating_the_points_sheet_when_there_is_one() -> None:
    from leadml.modelling.gate import promotion_gate

    settings = {"min_roc_auc": 0.5, "max_ece": 1.0, "min_gain_over_logreg": 0.0, "champion_tolerance": 0.005}
    candidate = {"roc_auc": 0.64, "roc_auc_low": 0.62, "roc_auc_high": 0.66, "ece": 0.02}
    logreg = {"roc_auc": 0.60}
    assert promotion_gate(candidate, logreg, None, settings).promote
    beaten = promotion_gate(candidate, logreg, None, settings, points={"roc_auc": 0.69})
    assert not beaten.promote
    assert any(reason.startswith("keep the sheet") and "0.6900" in reason for reason in beaten.reasons)
    lenient = promotion_gate(
        candidate, logreg, None, {**settings, "min_gain_over_points": -0.1}, points={"roc_auc": 0.69}
    )
    assert lenient.promote
