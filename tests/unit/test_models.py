"""LightGBM, logistic regression and base-rate models on small generated snapshots."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError
from leadml.machine import (
    apply_thread_count,
    apply_wait_policy,
    available_cpus,
    cgroup_cpu_quota,
    thread_count,
)
from leadml.modelling.model_settings import model_settings_from_mapping
from leadml.modelling.models import (
    BaseRate,
    LightGBMSettings,
    LogRegSettings,
    early_stopping_split,
    fit_lightgbm,
    fit_logreg,
    threads,
)

START = pd.Timestamp("2025-01-06", tz="UTC")
FAST = LightGBMSettings(
    n_estimators=300, learning_rate=0.1, min_child_samples=20, early_stopping_rounds=20, n_jobs=1
)
CHANNELS = ["web", "partner", "event", "outbound"]


def signal_snapshots(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Snapshots whose label depends on `engagement` (up), `channel` and nothing else."""
    rng = np.random.default_rng(seed)
    engagement = rng.gamma(2.0, 1.0, n)
    channel = rng.choice(CHANNELS, n)
    channel_effect = pd.Series(channel).map({"web": 0.0, "partner": 1.0, "event": -0.5, "outbound": -1.0})
    margin = -3.0 + 0.9 * engagement + channel_effect.to_numpy()
    label = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype("int8")
    engagement[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i:05d}" for i in range(n)],
            s.AS_OF: (START + pd.to_timedelta(rng.integers(0, 52, n) * 7, unit="D")).as_unit("ns"),
            s.LABEL: label,
            "engagement": engagement,
            "noise": rng.normal(size=n),
            "channel": pd.Categorical(channel),
        }
    )
    return frame.sort_values(s.AS_OF, ignore_index=True)


METADATA = {
    "engagement": FeatureMeta("engagement", "engagement", "activity", "{value}", monotone=1),
    "noise": FeatureMeta("noise", "other", "noise", "{value}", monotone=0),
    "channel": FeatureMeta("channel", "source", "channel", "{value}", kind="categorical"),
}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = signal_snapshots()
    return frame.iloc[:3000], frame.iloc[3000:]


def test_lightgbm_beats_the_base_rate_on_signal(data) -> None:
    train, test = data
    model = fit_lightgbm(train, FAST, METADATA)
    base = BaseRate.fit(train)
    probability = model.predict_proba(test)
    assert roc_auc_score(test[s.LABEL], probability) > 0.75
    assert log_loss(test[s.LABEL], probability) < log_loss(test[s.LABEL], base.predict_proba(test))
    assert model.feature_names == ["engagement", "noise", "channel"]
    assert model.categories == {"channel": sorted(CHANNELS)}
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-model.predict_margin(test))))


def test_lightgbm_maps_unseen_categories_and_missing_values_without_crashing(data) -> None:
    train, test = data
    model = fit_lightgbm(train, FAST)
    odd = test.head(4).copy()
    odd["channel"] = pd.Categorical(["web", "brand_new", None, "partner"])
    odd.loc[odd.index[0], "engagement"] = np.nan
    probability = model.predict_proba(odd)
    assert probability.shape == (4,) and np.isfinite(probability).all()
    as_strings = odd.assign(channel=odd["channel"].astype(object))  # scoring data need not be categorical
    np.testing.assert_allclose(model.predict_proba(as_strings), probability)
    missing = odd.assign(channel=pd.Categorical([None] * 4, categories=["web"]))
    unseen = odd.assign(channel=pd.Categorical(["brand_new"] * 4))
    np.testing.assert_allclose(model.predict_proba(unseen), model.predict_proba(missing))


def test_lightgbm_names_missing_feature_columns(data) -> None:
    train, test = data
    model = fit_lightgbm(train, FAST)
    with pytest.raises(LeadmlError, match="noise"):
        model.predict_proba(test.drop(columns=["noise"]))


def test_monotone_constraints_make_the_score_non_decreasing_in_the_feature(data) -> None:
    train, test = data
    # a noisy wiggle that an unconstrained model is free to follow
    wiggly = train.assign(engagement=train["engagement"] + 0.3 * np.sin(train["engagement"] * 20))
    settings = LightGBMSettings(**{**FAST.__dict__, "monotone_constraints": True})
    model = fit_lightgbm(wiggly, settings, METADATA)
    rows = test.head(50)
    grid = np.linspace(0, 12, 60)
    scores = np.column_stack([model.predict_margin(rows.assign(engagement=value)) for value in grid])
    assert (np.diff(scores, axis=1) >= -1e-12).all()
    free = fit_lightgbm(wiggly, FAST, METADATA)  # control: without constraints the wiggle shows
    free_scores = np.column_stack([free.predict_margin(rows.assign(engagement=value)) for value in grid])
    assert (np.diff(free_scores, axis=1) < -1e-12).any()


def test_early_stopping_uses_only_the_latest_training_rows(data) -> None:
    train, _ = data
    fit_rows, stop_rows = early_stopping_split(train, 0.2)
    assert fit_rows[s.AS_OF].max() < stop_rows[s.AS_OF].min()
    assert len(stop_rows) == pytest.approx(0.2 * len(train), rel=0.15)
    model = fit_lightgbm(train, FAST)
    stopped_on = model.early_stopping_index
    assert set(stopped_on) <= set(train.index)
    assert set(stopped_on) == set(stop_rows.index)
    assert model.fit_report["fit_rows"] + model.fit_report["early_stopping_rows"] == len(train)
    assert 1 <= model.best_iteration <= FAST.n_estimators


def test_early_stopping_split_follows_order_key_without_time() -> None:
    frame = pd.DataFrame({s.LABEL: [0, 1] * 50, s.ORDER_KEY: np.arange(100, 0, -1, dtype=float)})
    fit_rows, stop_rows = early_stopping_split(frame, 0.25)
    assert fit_rows[s.ORDER_KEY].max() < stop_rows[s.ORDER_KEY].min()
    assert len(stop_rows) == 25


def test_lightgbm_model_pickles(data) -> None:
    train, test = data
    model = fit_lightgbm(train, FAST)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict_proba(test), model.predict_proba(test))


def test_logreg_learns_the_signal_and_ignores_unseen_categories(data) -> None:
    train, test = data
    model = fit_logreg(train, LogRegSettings())
    probability = model.predict_proba(test)
    assert roc_auc_score(test[s.LABEL], probability) > 0.75
    odd = test.head(3).assign(
        channel=pd.Categorical(["never_seen", None, "web"]), engagement=[np.nan, 1.0, 2.0]
    )
    odd_probability = model.predict_proba(odd)
    assert odd_probability.shape == (3,) and ((odd_probability > 0) & (odd_probability < 1)).all()
    np.testing.assert_allclose(odd_probability, 1 / (1 + np.exp(-model.predict_margin(odd))))


def test_base_rate_predicts_the_training_rate(data) -> None:
    train, test = data
    base = BaseRate.fit(train)
    assert base.predict_proba(test) == pytest.approx(np.full(len(test), train[s.LABEL].mean()))


def test_model_settings_come_from_a_mapping_and_reject_unknown_keys() -> None:
    assert model_settings_from_mapping({"name": "logreg", "C": 0.5}) == LogRegSettings(C=0.5)
    assert model_settings_from_mapping({"name": "lightgbm", "num_leaves": 15}).num_leaves == 15
    with pytest.raises(LeadmlError, match="num_leafs"):
        model_settings_from_mapping({"name": "lightgbm", "num_leafs": 15})
    with pytest.raises(LeadmlError, match=r"model\.name"):
        model_settings_from_mapping({"name": "xgboost"})


def test_early_stopping_watches_the_configured_metric(data) -> None:
    """AUC by default (calibration follows); log loss on request; anything else is refused."""
    train, test = data
    by_auc = fit_lightgbm(train, FAST)
    by_log_loss = fit_lightgbm(
        train, LightGBMSettings(**{**FAST.__dict__, "early_stopping_metric": "binary_logloss"})
    )
    assert by_auc.fit_report["early_stopping_metric"] == "auc"
    assert 0.5 < by_auc.fit_report["early_stopping_score"] <= 1.0
    assert by_log_loss.fit_report["early_stopping_metric"] == "binary_logloss"
    assert 0.0 < by_log_loss.fit_report["early_stopping_score"] < np.log(2)
    for model in (by_auc, by_log_loss):
        assert roc_auc_score(test[s.LABEL], model.predict_proba(test)) > 0.75
    with pytest.raises(LeadmlError, match="early_stopping_metric"):
        LightGBMSettings(early_stopping_metric="accuracy")


def test_logreg_fits_on_a_sample_of_large_training_windows(data) -> None:
    train, test = data
    sampled = fit_logreg(train, LogRegSettings(max_rows=1_000))
    assert sampled.categories == fit_logreg(train, LogRegSettings()).categories
    assert roc_auc_score(test[s.LABEL], sampled.predict_proba(test)) > 0.75


def test_openmp_threads_wait_passively_unless_the_environment_or_the_config_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spinning OpenMP threads collapse a fit on a busy machine (benchmarks/RESULTS.md): ``import
    leadml`` makes the wait passive before LightGBM loads, keeping a policy the user set."""
    probe = "import os, leadml, lightgbm; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "PASSIVE"
    kept = subprocess.run(
        [sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert kept.stdout.strip() == "ACTIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert apply_wait_policy("auto") == apply_wait_policy(None) == "passive"
    assert apply_wait_policy("passive") == "passive"
    with pytest.raises(LeadmlError, match="omp_wait_policy must be one of"):
        apply_wait_policy("sometimes")
    assert thread_count("auto") == available_cpus() and thread_count(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    assert apply_thread_count("auto") == available_cpus()
    assert os.environ["OMP_NUM_THREADS"] == "7" and os.environ["NUMBA_NUM_THREADS"] == str(available_cpus())
    assert (
        apply_thread_count(3) == 3 and os.environ["OMP_NUM_THREADS"] == os.environ["NUMBA_NUM_THREADS"] == "3"
    )
    with pytest.raises(LeadmlError, match=r"^threads must be auto"):
        thread_count(0)


def test_threads_follow_the_cpus_this_process_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.n_jobs=auto``: the affinity mask, capped by a container's CPU quota (v2, then v1)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert available_cpus(tmp_path) == 8  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None and available_cpus(tmp_path) == 8
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert cgroup_cpu_quota(tmp_path) == 1.5 and available_cpus(tmp_path) == 2
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == 3
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(v1) == 8
    assert threads(3) == 3
    for bad in (0, -2, "many", True, 1.5):
        with pytest.raises(LeadmlError, match=r"model\.n_jobs"):
            LightGBMSettings(n_jobs=bad)
