"""leadml-score: the nightly job on a small generated CRM with a freshly trained champion."""

from __future__ import annotations

import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from factories import copy_project, local_tracking, project_config, train_project
from leadml.adapters import sinks
from leadml.adapters.layout import SCORING_RUN_RECORD, read_interim
from leadml.cli import run_score
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, open_lead_features
from leadml.errors import (
    LeadmlError,
    NoModelError,
    SchemaMismatchError,
    StaleDataError,
    TrackingUnavailableError,
)
from leadml.modelling.accounts import AccountSettings, DependenceCorrection, account_rows, apply_dependence
from leadml.modelling.drift import drift_reference, population_stability, reference_profile, unseen_categories
from leadml.modelling.reasons import group_deltas
from leadml.modelling.scorer import MARGIN
from leadml.scoring.scores import TierSettings, TrendSettings, add_trend, score_leads
from leadml.stages.report import stale_days
from leadml.stages.score import ScoreResult

SMALL = {
    "synthetic.n_leads": 6000,
    "model.n_estimators": 120,
    "model.monotone_constraints": "true",
}


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, name, overrides, SMALL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with a champion trained on a small CRM (monotone constraints on)."""
    root = tmp_path_factory.mktemp("score")
    with local_tracking():
        train_project(lambda stage: _cfg(root, stage))
    return root


@pytest.fixture
def root(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained project, so each test scores into its own folders and store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy_project(trained, tmp_path)
    return tmp_path


def _scored(
    root: Path, as_of: str = "latest", extra: tuple[str, ...] = ()
) -> tuple[ScoreResult, pd.DataFrame]:
    result = run_score(_cfg(root, "score", [f"score.as_of={as_of}", *extra]))
    frame = pd.read_parquet(Path(result.output) / sinks.PART_FILE)
    return result, frame


def _scorer(root: Path):
    from leadml.adapters import tracking

    tracking.configure(f"sqlite:///{root / 'mlflow.db'}", "leadml-synthetic", root / "mlruns")
    return tracking.load_scorer("models:/leadml-synthetic@champion")


def _open_features(root: Path, scorer) -> tuple[dict, pd.DataFrame]:
    tables = read_interim(root / "data" / "interim" / "synthetic", s.CRM_TABLES)
    as_of = pd.Timestamp("2025-12-01", tz="UTC")
    return tables, open_lead_features(tables, as_of, FeatureSettings.from_mapping(scorer.feature_settings))


# --------------------------------------------------------------------------- the job
def test_score_writes_every_open_lead_with_tiers_reasons_and_trend(root: Path) -> None:
    summary, frame = _scored(root)
    assert summary.leads == len(frame) > 100
    assert frame[s.LEAD_ID].is_unique
    assert frame["probability"].between(0, 1).all()
    assert set(frame["tier"]) <= {"A", "B", "C", "D"}
    assert sum(summary.tiers.values()) == len(frame)
    assert frame["percentile"].between(0, 100).all() and frame["percentile"].max() == 100
    assert (frame["trend"] == "new").all()  # no earlier run
    assert frame["model_version"].eq("1").all()
    assert (frame["expected_value"] >= 0).all()
    reasons = frame["positive_reason_1"].dropna()
    assert len(reasons) > 0.5 * len(frame) and reasons.str.len().gt(5).all()
    positive = frame["positive_contribution_1"].dropna()
    negative = frame["negative_contribution_1"].dropna()
    assert (positive > 0).all() and (negative < 0).all()
    # grouped: one reason per original column, so a lead's three reasons never repeat a group
    first_three = frame[[f"positive_reason_{i}" for i in (1, 2, 3)]].dropna()
    assert (first_three.nunique(axis=1) == 3).all()
    for column in ("email", "first_name", "last_name", "phone"):
        assert column not in frame.columns


def test_rerunning_a_date_replaces_it_and_a_later_run_has_a_trend(root: Path) -> None:
    first, frame = _scored(root, "2025-12-01")
    _, frame_again = _scored(root, "2025-12-01")
    pd.testing.assert_frame_equal(frame, frame_again)
    partition = Path(first.output)
    assert sorted(p.name for p in partition.iterdir()) == [SCORING_RUN_RECORD, sinks.PART_FILE]
    assert not sinks.leftovers(partition.parent)
    _, later = _scored(root, "2025-12-15")
    carried = later[later[s.LEAD_ID].isin(frame[s.LEAD_ID])]
    assert len(carried) > 0
    assert set(carried["trend"]) <= {"improving", "steady", "declining"}
    assert (later.loc[~later[s.LEAD_ID].isin(frame[s.LEAD_ID]), "trend"] == "new").all()


def test_a_later_run_says_why_each_lead_moved_exactly(root: Path) -> None:
    """The groups' changes of contribution add up to the change of margin (1e-9) for every lead
    with a previous score, and the movement sentence quotes them in points."""
    _, earlier = _scored(root, "2025-12-01")
    _, later = _scored(root, "2025-12-15")
    before = earlier.set_index(s.LEAD_ID).reindex(later[s.LEAD_ID])
    known = before[MARGIN].notna().to_numpy()
    assert known.sum() > 100
    _, deltas = group_deltas(later[known].reset_index(drop=True), before[known].reset_index(drop=True))
    change = later.loc[known, "margin_change"].to_numpy()
    np.testing.assert_allclose(deltas.sum(axis=1), change, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        change, later.loc[known, MARGIN].to_numpy() - before.loc[known, MARGIN].to_numpy(), rtol=0, atol=1e-12
    )
    moved = later.loc[known, "movement"]
    assert moved.str.match(
        r"^(rose|fell) [\d.]+ points?(: .+ \([+-][\d.]+\))?(; (rose|fell): .+)?$|^no change$"
    ).all()
    assert later.loc[~known, "movement"].isna().all()


def test_an_untracked_run_loads_the_champion_from_the_configured_store(root: Path, tmp_path_factory) -> None:
    """score.track=false logs nothing, but the registered model still comes from mlflow.tracking_uri,
    not from whichever store MLflow last pointed at (or would default to in the current folder)."""
    import mlflow

    elsewhere = tmp_path_factory.mktemp("another-store")
    mlflow.set_tracking_uri(f"sqlite:///{elsewhere / 'mlflow.db'}")  # another project's, holding nothing
    store = f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"
    summary, frame = _scored(root, "2025-12-01", ("score.track=false", store))
    assert summary.run_id is None and summary.model_version == "1" and len(frame) == summary.leads


def test_stale_data_stops_the_run_and_names_the_latest_timestamp(root: Path) -> None:
    with pytest.raises(StaleDataError, match=r"latest lead or activity is \d{4}-\d\d-\d\d \d\d:\d\d UTC, "
                       r"\d+ days before the run's date 2027-01-01") as stopped:  # fmt: skip
        _scored(root, "2027-01-01")
    assert stopped.value.exit_code == 9
    assert not (root / "data" / "scored" / "synthetic" / "as_of=2027-01-01").exists()
    summary, _ = _scored(root, "2027-01-01", ("score.max_staleness_days=null",))  # unchecked: scored
    assert summary.leads > 0
    # the run record keeps the data's latest timestamp: the report says the run is stale at the top
    record = json.loads((Path(summary.output) / SCORING_RUN_RECORD).read_text())
    assert stale_days(record, summary.as_of) > 100
    fresh, _ = _scored(root, "latest")
    assert stale_days(json.loads((Path(fresh.output) / SCORING_RUN_RECORD).read_text()), fresh.as_of) is None
    with pytest.raises(LeadmlError, match=r"score\.max_staleness_days must be"):
        _scored(root, "latest", ("score.max_staleness_days=-1",))


RECENCY = re.compile(r"^(days_since_|rw_|lead_age_days$|engagement_velocity$)")


def test_a_nightly_run_on_any_weekday_shows_no_recency_drift(root: Path) -> None:
    """Training dates fall on every weekday and tonight's leads are compared with the training rows
    of the same weekday: no weekday of a week warns of drift in a recency feature (PSI < 0.1)."""
    scorer = _scorer(root)
    tables = read_interim(root / "data" / "interim" / "synthetic", s.CRM_TABLES)
    settings = FeatureSettings.from_mapping(scorer.feature_settings)
    assert sorted(scorer.reference["by_weekday"]) == [str(day) for day in range(7)]
    end = pd.Timestamp(tables[s.ACTIVITIES][s.TIMESTAMP].max()).normalize() + pd.Timedelta(days=1)
    worst = {}
    for day in pd.date_range(end - pd.Timedelta(days=6), end):
        features = open_lead_features(tables, day, settings)
        psi = population_stability(drift_reference(scorer.reference, day), features)
        worst[f"{day:%a}"] = max(value for name, value in psi.items() if RECENCY.match(name))
    assert max(worst.values()) < 0.1, worst


def test_lead_buckets_give_the_same_rows_as_one_bucket(root: Path) -> None:
    """Percentiles, tiers and trend are global figures: splitting the leads must not change them."""
    frames = {}
    for name, bucket_leads in (("one", 1_000_000), ("many", 700)):
        extra = (f"score.bucket_leads={bucket_leads}", f"score.output_dir={root / 'scored' / name}")
        _scored(root, "2025-12-01", extra)
        summary, frames[name] = _scored(root, "2025-12-15", extra)
        assert summary.buckets == (1 if name == "one" else 9)  # 6000 leads in buckets of 700
        assert not list((root / "data" / "scoring" / "synthetic" / "work").iterdir())  # bucket files removed
    one, many = (frames[k].sort_values(s.LEAD_ID, ignore_index=True) for k in ("one", "many"))
    pd.testing.assert_frame_equal(one, many)
    assert set(one["trend"]) > {"new"}


def test_sql_sink_upserts_without_duplicates(root: Path) -> None:
    database = root / "scores.db"
    sql = [f"score.sql.url=sqlite:///{database}", "score.sql.table=lead_scores"]
    summary, frame = _scored(root, "2025-12-01", tuple(sql))
    _scored(root, "2025-12-01", tuple(sql))
    with sqlite3.connect(database) as connection:
        stored = pd.read_sql("select * from lead_scores", connection)
        accounts = pd.read_sql("select * from account_scores", connection)
    assert summary.accounts is not None and summary.accounts["sql_rows"] == len(accounts) > 0
    assert not accounts.duplicated([s.ACCOUNT_ID, s.AS_OF]).any()
    assert not any(c.startswith("group:") for c in accounts.columns)
    assert summary.sql_rows == len(frame) == len(stored)
    assert not stored.duplicated([s.LEAD_ID, s.AS_OF]).any()
    assert stored[s.AS_OF].eq("2025-12-01").all()
    merged = stored.merge(frame[[s.LEAD_ID, "probability"]], on=s.LEAD_ID, suffixes=("", "_parquet"))
    np.testing.assert_allclose(merged["probability"], merged["probability_parquet"])


def test_accounts_roll_up_the_scored_leads_with_the_trained_correction_and_a_trend(root: Path) -> None:
    """The account partition is the roll-up of the written lead partition: every open lead with an
    account counted once, the correction training fitted applied, and a trend on the next night."""
    first, frame = _scored(root, "2025-12-01")
    assert first.accounts is not None
    # beside the leads' folder, not in it: read as one data set, that folder holds leads only
    assert Path(first.accounts["output"]).parent == Path(first.output).parent.with_name("synthetic-accounts")
    assert sorted(p.name for p in Path(first.output).parent.iterdir() if not p.name.startswith(".")) == [
        Path(first.output).name
    ]
    accounts = pd.read_parquet(Path(first.accounts["output"]) / sinks.PART_FILE)
    keys = pd.read_parquet(root / "data" / "scoring" / "synthetic" / "interim" / "leads.parquet")
    keyed = frame.merge(keys[[s.LEAD_ID, s.ACCOUNT_ID]], on=s.LEAD_ID, how="left")
    assert accounts[s.ACCOUNT_ID].is_unique and len(accounts) == keyed[s.ACCOUNT_ID].nunique()
    assert accounts["n_leads"].sum() == keyed[s.ACCOUNT_ID].notna().sum() == first.accounts["leads"]
    assert list(accounts["rank"]) == list(range(1, len(accounts) + 1))
    assert accounts["account_probability"].is_monotonic_decreasing
    state = _scorer(root).accounts
    rolled = apply_dependence(
        account_rows(keyed, AccountSettings(engaged_probability=state["engaged_probability"])),
        DependenceCorrection.from_dict(state["correction"]),
    ).set_index(s.ACCOUNT_ID)
    mine = accounts.set_index(s.ACCOUNT_ID)
    np.testing.assert_allclose(
        mine["account_probability"], rolled.loc[mine.index, "account_probability"], rtol=1e-12
    )
    assert (mine["n_engaged"] == rolled.loc[mine.index, "n_engaged"]).all()
    assert (accounts["trend"] == "new").all()
    record = json.loads((Path(first.output) / SCORING_RUN_RECORD).read_text())
    assert record["accounts"]["accounts"] == len(accounts)
    later, _ = _scored(root, "2025-12-15")
    again = pd.read_parquet(Path(later.accounts["output"]) / sinks.PART_FILE).set_index(s.ACCOUNT_ID)
    both = again.index.intersection(mine.index)
    assert len(both) > 0 and (again.loc[both, "trend"] != "new").all()
    np.testing.assert_allclose(again.loc[both, "previous_probability"], mine.loc[both, "account_probability"])
    assert (again.drop(both)["trend"] == "new").all()
    # score.accounts.enabled=false: no account rows, none in the run record
    off, _ = _scored(root, "2025-12-15", ("score.accounts.enabled=false",))
    assert off.accounts is None


def test_a_run_that_dies_while_writing_leaves_the_previous_partition(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary, before = _scored(root, "2025-12-01")

    write_table = pq.ParquetWriter.write_table

    def die_in_the_partition(self, table, *args, **kwargs):  # bucket files are written, the partition not
        if ".tmp-" in str(self.where):
            raise KeyboardInterrupt("killed")
        return write_table(self, table, *args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(pq.ParquetWriter, "write_table", die_in_the_partition)
        _scored(root, "2025-12-01")
    pd.testing.assert_frame_equal(pd.read_parquet(Path(summary.output) / sinks.PART_FILE), before)
    _, after = _scored(root, "2025-12-01")  # the re-run cleans up and completes
    pd.testing.assert_frame_equal(before, after)
    assert not sinks.leftovers(Path(summary.output).parent)


def test_a_second_run_of_the_same_date_refuses_while_the_first_holds_it(root: Path) -> None:
    """The lock is held by another process (a real second scorer would be too slow for a test)."""
    first, before = _scored(root, "2025-12-01")
    base = Path(first.output).parent
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pandas as pd; from pathlib import Path; from leadml import sinks\n"
            "with sinks.date_lock(Path(sys.argv[1]), pd.Timestamp('2025-12-01', tz='UTC')):\n"
            "    print('locked', flush=True); time.sleep(60)",
            str(base),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(sinks.RunInProgressError, match=f"pid {holder.pid}") as caught:
            _scored(root, "2025-12-01")
        assert caught.value.exit_code == 7
        pd.testing.assert_frame_equal(
            sinks.read_partition(base, pd.Timestamp("2025-12-01", tz="UTC")), before
        )
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process
        holder.wait()
    _, after = _scored(root, "2025-12-01")
    pd.testing.assert_frame_equal(before, after)


def test_interrupted_swap_is_recovered(tmp_path: Path) -> None:
    """Killed between the two renames: the retired partition comes back before anything else."""
    as_of = pd.Timestamp("2025-12-01", tz="UTC")
    frame = pd.DataFrame({s.LEAD_ID: ["L1"], "probability": [0.5]})
    final = sinks.write_partition(frame, tmp_path, as_of)
    os.replace(final, tmp_path / f".{final.name}.old-deadbeef")
    sinks.recover_partition(final)
    pd.testing.assert_frame_equal(sinks.read_partition(tmp_path, as_of), frame)


# --------------------------------------------------------------------------- the scorer
def test_explanations_add_up_to_the_margin_for_every_row(root: Path) -> None:
    scorer = _scorer(root)
    _, features = _open_features(root, scorer)
    contributions = scorer.explain(features)
    margin = scorer.predict(features)["margin"].to_numpy()
    np.testing.assert_allclose(contributions.sum(axis=1).to_numpy(), margin, atol=1e-6)
    scored = score_leads(scorer, features, TierSettings())
    families = scored["fit_score"] + scored["engagement_score"] + scored["base_value"]
    other = [n for n in scorer.feature_names if scorer.metadata[n]["family"] not in ("fit", "engagement")]
    np.testing.assert_allclose(families + contributions[other].sum(axis=1).to_numpy(), margin, atol=1e-6)


def test_fast_and_lightgbm_explainers_agree_and_the_tables_are_not_pickled(root: Path) -> None:
    scorer = _scorer(root)
    _, features = _open_features(root, scorer)
    fast = scorer.explain(features, "fast")
    pd.testing.assert_frame_equal(fast, scorer.explain(features, "lightgbm"), rtol=0, atol=1e-9)
    predicted, contributions = scorer.predict_explained(features)
    np.testing.assert_allclose(predicted["margin"], scorer.predict(features)["margin"], atol=1e-9)
    pd.testing.assert_frame_equal(contributions, fast)
    assert scorer._fast_explainer is not None
    assert pickle.loads(pickle.dumps(scorer))._fast_explainer is None
    with pytest.raises(LeadmlError, match="explainer must be one of"):
        scorer.explain(features, "kernel")


def test_more_engagement_never_lowers_a_monotone_score(root: Path) -> None:
    scorer = _scorer(root)
    _, features = _open_features(root, scorer)
    monotone = [n for n in scorer.feature_names if scorer.metadata[n].get("monotone") == 1]
    assert monotone
    base = scorer.predict(features)["probability"].to_numpy()
    for name in monotone:
        raised = features.copy()
        raised[name] = raised[name].fillna(0) + 5
        filled = features.copy()
        filled[name] = filled[name].fillna(0)
        reference = scorer.predict(filled)["probability"].to_numpy()
        assert (scorer.predict(raised)["probability"].to_numpy() >= reference - 1e-12).all(), name
    assert len(base) == len(features)


def test_identity_and_contact_details_never_change_the_score(root: Path) -> None:
    scorer = _scorer(root)
    tables, features = _open_features(root, scorer)
    settings = FeatureSettings.from_mapping(scorer.feature_settings)
    leads = tables[s.LEADS].copy()
    renamed = dict(tables)
    leads[s.FIRST_NAME] = "Zed"
    leads[s.LAST_NAME] = "Nobody"
    leads[s.EMAIL] = "x" + leads[s.EMAIL].astype(str)  # same domain, other person
    renamed[s.LEADS] = leads
    again = open_lead_features(renamed, pd.Timestamp("2025-12-01", tz="UTC"), settings)
    relabelled = features.assign(**{s.LEAD_ID: "other-" + features[s.LEAD_ID].astype(str)})
    expected = scorer.predict(features)["probability"].to_numpy()
    np.testing.assert_array_equal(scorer.predict(again)["probability"].to_numpy(), expected)
    np.testing.assert_array_equal(scorer.predict(relabelled)["probability"].to_numpy(), expected)


def test_unseen_categories_are_scored_and_counted(root: Path) -> None:
    scorer = _scorer(root)
    _, features = _open_features(root, scorer)
    odd = features.copy()
    odd[s.SOURCE] = odd[s.SOURCE].astype(object)
    odd.loc[odd.index[:7], s.SOURCE] = "carrier_pigeon"
    assert unseen_categories(scorer, odd) == {s.SOURCE: 7}
    assert scorer.predict(odd)["probability"].notna().all()


# --------------------------------------------------------------------------- failures
def _score_command(root: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    """``leadml-score`` as a scheduler runs it, against the given tracking store."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "leadml-score"), f"paths.root={root}"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        check=False,
        timeout=180,
    )


def test_no_champion_gives_exit_code_2_and_a_message(tmp_path: Path) -> None:
    result = _score_command(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == NoModelError.exit_code == 2
    assert "no champion for leadml-synthetic" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_tracking_server_gives_exit_code_6(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _score_command(tmp_path, f"http://127.0.0.1:{port}")
    assert result.returncode == TrackingUnavailableError.exit_code == 6
    assert f"127.0.0.1:{port} is unreachable" in result.stderr


def test_schema_mismatch_names_the_column(root: Path) -> None:
    leads_path = root / "data" / "raw" / "synthetic" / "leads.parquet"
    pd.read_parquet(leads_path).drop(columns=["browser"]).to_parquet(leads_path)
    with pytest.raises(SchemaMismatchError, match="browser") as caught:
        _scored(root)
    assert caught.value.exit_code == 5


# --------------------------------------------------------------------------- pure parts
def test_population_stability_is_zero_on_the_reference_and_large_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=20_000), "c": pd.Categorical(rng.choice(["a", "b"], 20_000))})
    reference = reference_profile(train, ["x", "c"])
    same = pd.DataFrame({"x": rng.normal(size=20_000), "c": rng.choice(["a", "b"], 20_000)})
    shifted = pd.DataFrame({"x": rng.normal(1.0, 1.0, 20_000), "c": rng.choice(["a", "z"], 20_000)})
    assert max(population_stability(reference, same).values()) < 0.01
    psi = population_stability(reference, shifted)
    assert psi["x"] > 0.25 and psi["c"] > 0.25


def test_trend_against_the_previous_run() -> None:
    today = pd.DataFrame({s.LEAD_ID: ["a", "b", "c", "d"], "probability": [0.5, 0.2, 0.1, 0.3]})
    previous = pd.DataFrame({s.LEAD_ID: ["a", "b", "c"], "probability": [0.3, 0.21, 0.3]})
    trend = add_trend(today, previous, TrendSettings(steady_band=0.02))["trend"].tolist()
    assert trend == ["improving", "steady", "declining", "new"]


def test_capacity_tiers_follow_todays_quantiles() -> None:
    settings = TierSettings.from_mapping({"method": "capacity", "shares": {"A": 0.1, "B": 0.3, "C": 0.6}})
    probabilities = np.linspace(0.01, 0.99, 1000)
    thresholds = settings.thresholds_for(probabilities)
    assert (probabilities >= thresholds["A"]).sum() == 100
    assert (probabilities >= thresholds["B"]).sum() == 300
