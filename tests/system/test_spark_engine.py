"""score.engine=spark: the same rows, probabilities, tiers, reasons and trend as the pandas engine."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import local_tracking, project_config
from leadml.adapters import sinks
from leadml.adapters.layout import SCORING_RUN_RECORD, read_interim
from leadml.cli import run_score
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, open_lead_features
from leadml.errors import SchemaMismatchError
from leadml.modelling.drift import population_stability, unseen_categories
from leadml.scoring.model_input import deal_values, resolve_as_of
from leadml.scoring.pandas_engine import CrmOpenLeads
from leadml.scoring.scores import TierSettings, TrendSettings, score_leads
from leadml.stages.score import ScoreResult

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="the Spark engine needs Java 17 or later"),
    # PySpark 4 warns about pandas 3 on many calls; the engine keeps PySpark's pandas conversion off
    # its data path (see leadml.scoring.spark_engine), and pytest resets start_session's own filter per test
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

SMALL = {"tiers": "capacity"}  # thresholds from all of today's leads: the part no bucket can do alone
DAYS = ("2025-11-17", "2025-12-01")  # the second run has a trend against the first
REASONS = [f"{d}_reason_{i}" for d in ("positive", "negative") for i in (1, 2, 3)]


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, name, overrides, SMALL)


def _day(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


@pytest.fixture(scope="module")
def project(project_copy) -> Iterator[Path]:
    """A champion trained on a small CRM (a copy of the shared one, conftest.trained_project), and the
    pandas engine's partitions of both days."""
    root = project_copy("spark")
    with local_tracking():
        for day in DAYS:
            run_score(_cfg(root, "score", [f"score.as_of={day}"]))
        yield root


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from leadml.scoring.spark_engine import SparkSettings, start_session

    session = start_session(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="1g"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def scorer(project: Path):
    from leadml.adapters import tracking

    tracking.configure(f"sqlite:///{project / 'mlflow.db'}", "leadml-synthetic", project / "mlruns")
    return tracking.load_scorer("models:/leadml-synthetic@champion")


def _interim(project: Path) -> Path:
    return project / "data" / "scoring" / "synthetic" / "interim"  # what the pandas engine scored


def _crm_leads(tables_dir: Path, scorer, day: str) -> CrmOpenLeads:
    return CrmOpenLeads(tables_dir, _day(day), FeatureSettings.from_mapping(scorer.feature_settings))


def _spark_score(spark, tables_dir: Path, scorer, day: str, output: Path, **options):
    from leadml.scoring.spark_engine import score_with_spark

    cfg = _cfg(output, "score")  # the root only places folders this test does not use
    options.setdefault("buckets", 4)  # two groups per task, so the global pass has work to do
    return score_with_spark(
        spark,
        _crm_leads(tables_dir, scorer, day),
        scorer,
        _day(day),
        TierSettings.from_mapping(cfg.tiers),
        output_dir=output,
        explain=True,
        trend=TrendSettings(cfg.score.trend_band),
        model_version="1",
        **options,
    )


@pytest.fixture(scope="module")
def spark_runs(spark, project: Path, scorer) -> dict[str, object]:
    """The Spark engine on the pandas engine's interim tables, both days in order (for the trend)."""
    output = project / "data" / "scored-spark"
    return {day: _spark_score(spark, _interim(project), scorer, day, output) for day in DAYS}


def _by_lead(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(s.LEAD_ID, ignore_index=True)


# --------------------------------------------------------------------------- same results
@pytest.mark.parametrize("day", DAYS)
def test_both_engines_write_the_same_partition(project: Path, spark_runs, day: str) -> None:
    expected = _by_lead(sinks.read_partition(project / "data" / "scored" / "synthetic", _day(day)))
    got = _by_lead(pd.read_parquet(spark_runs[day].output))
    assert len(got) > 100 and got[s.LEAD_ID].is_unique
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-9)
    assert got["tier"].tolist() == expected["tier"].tolist()
    assert got[REASONS].equals(expected[REASONS])
    # and every other column, name, order and type included
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    assert set(got["tier"]) == {"A", "B", "C", "D"}  # capacity shares of all of today's leads
    if day == DAYS[1]:
        assert got["trend"].isin(["improving", "steady", "declining"]).any()
        assert got["trend"].eq("new").any()


def test_the_drift_record_matches_the_pandas_functions(project: Path, scorer, spark_runs) -> None:
    from leadml.modelling.drift import drift_counts, drift_reference, psi_from_counts
    from leadml.scoring.pandas_engine import BucketSummaries

    tables = read_interim(_interim(project), s.CRM_TABLES)
    features = open_lead_features(
        tables, _day(DAYS[1]), FeatureSettings.from_mapping(scorer.feature_settings)
    )
    reference = drift_reference(scorer.reference, _day(DAYS[1]))  # the run's weekday among the latest dates
    assert reference is scorer.reference["by_weekday"][str(_day(DAYS[1]).day_of_week)]
    expected = population_stability(reference, features)
    summary = BucketSummaries()
    for rows in np.array_split(np.arange(len(features)), 3):
        part = features.iloc[rows]
        summary.add(
            {"rows": len(part), "witness": None, "drift": drift_counts(reference, part), "unseen": {}}
        )
    assert psi_from_counts(reference, summary.drift, summary.rows) == pytest.approx(expected, abs=1e-12)
    assert spark_runs[DAYS[1]].psi == pytest.approx(expected, abs=1e-12)
    assert spark_runs[DAYS[1]].unseen == unseen_categories(scorer, features)


def test_latest_resolves_to_the_same_day(project: Path) -> None:
    """The stage resolves the run date once for both engines, from the tables read batch by batch."""
    from leadml.scoring.pandas_engine import time_bounds

    tables = read_interim(_interim(project), s.CRM_TABLES)
    assert resolve_as_of("latest", time_bounds(_interim(project))) == resolve_as_of("latest", tables)


def test_leads_without_any_activity_score_as_in_pandas(spark, project: Path, scorer, tmp_path: Path) -> None:
    """Half of the buckets get no activity at all: their leads still score, as the pandas code does."""
    from pyspark.sql import functions as F

    interim = tmp_path / "interim"
    shutil.copytree(_interim(project), interim)
    leads = spark.read.parquet(str(interim / "leads.parquet"))
    quiet = leads.where(F.pmod(F.xxhash64(s.LEAD_ID), F.lit(8)) < 4).select(s.LEAD_ID).toPandas()
    tables = read_interim(interim, s.CRM_TABLES)
    activities = tables[s.ACTIVITIES]
    activities[~activities[s.LEAD_ID].astype(str).isin(quiet[s.LEAD_ID])].to_parquet(
        interim / "activities.parquet"
    )
    tables = read_interim(interim, s.CRM_TABLES)

    got = _by_lead(
        pd.read_parquet(_spark_score(spark, interim, scorer, DAYS[1], tmp_path / "scored", buckets=8).output)
    )
    features = open_lead_features(
        tables, _day(DAYS[1]), FeatureSettings.from_mapping(scorer.feature_settings)
    )
    tiers = TierSettings.from_mapping(_cfg(tmp_path, "score").tiers)
    deal_value = deal_values(tables[s.LEADS], features[s.LEAD_ID])
    expected = _by_lead(score_leads(scorer, features, tiers, deal_value=deal_value))
    assert got[s.LEAD_ID].isin(quiet[s.LEAD_ID]).sum() > 50
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- the partition
def test_a_rerun_from_the_stage_config_replaces_the_partition_whole(
    spark, project: Path, scorer, spark_runs
) -> None:
    """Through ``score_in_session`` (what ``score_stage`` calls), in two files this time."""
    from leadml.scoring.spark_engine import SparkSettings, score_in_session

    first = spark_runs[DAYS[0]]
    before = _by_lead(pd.read_parquet(first.output))
    overrides = [
        f"score.as_of={DAYS[0]}",
        f"score.output_dir={first.output.parent}",
        "++score.spark.output_files=2",
    ]
    cfg = _cfg(project, "score", overrides)
    again = score_in_session(
        SparkSettings.from_mapping(cfg.score.spark),
        _crm_leads(_interim(project), scorer, DAYS[0]),
        scorer,
        _day(DAYS[0]),
        TierSettings.from_mapping(cfg.tiers),
        output_dir=Path(cfg.score.output_dir),
        model_version="1",
    )
    assert spark.range(3).count() == 3  # the session running before was left running
    assert again.output == first.output
    assert sorted(p.name for p in again.output.iterdir()) == ["part-0.parquet", "part-1.parquet"]
    assert not sinks.leftovers(first.output.parent)
    reread = _by_lead(pd.read_parquet(again.output))
    assert reread[s.LEAD_ID].is_unique
    pd.testing.assert_frame_equal(reread, before)
    pd.testing.assert_frame_equal(_by_lead(pd.read_parquet(again.output)), before)


def test_a_failed_write_leaves_the_previous_partition(spark, spark_runs) -> None:
    from leadml.scoring.spark_engine import write_partition_spark

    partition = spark_runs[DAYS[1]].output
    before = pd.read_parquet(partition)
    broken = spark.range(3).selectExpr(
        "cast(id as string) as lead_id", "cast(raise_error('disk full') as double) as probability"
    )
    with pytest.raises(Exception, match="disk full"):
        write_partition_spark(broken, partition.parent, _day(DAYS[1]))
    pd.testing.assert_frame_equal(pd.read_parquet(partition), before)
    assert not sinks.leftovers(partition.parent)


def test_a_column_gone_from_the_source_stops_before_writing(
    spark, project: Path, scorer, tmp_path: Path
) -> None:
    """As in the pandas engine: a feature empty today although filled in training is named."""
    interim = tmp_path / "interim"
    shutil.copytree(_interim(project), interim)
    leads = pd.read_parquet(interim / "leads.parquet").drop(columns=["browser"])
    leads.to_parquet(interim / "leads.parquet")
    with pytest.raises(SchemaMismatchError, match="browser"):
        _spark_score(spark, interim, scorer, DAYS[0], tmp_path / "scored")
    assert not (tmp_path / "scored").exists()


# --------------------------------------------------------------------------- a flat data set
FLAT_LATEST = "latest"  # the day after the file's last Created Date, resolved once for either engine
SPARK = ["score.engine=spark", "score.spark.buckets=4"]


@pytest.fixture(scope="module")
def flat_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str], pd.DataFrame]]:
    """The README's flat example (tests/stages/test_readme_flat.py) on a small export, trained once."""
    from hydra import compose, initialize_config_dir

    from factories import LENIENT_GATE, QUICK, exported_leads, readme_project
    from leadml.cli import CONFIG_DIR, run_train

    root = tmp_path_factory.mktemp("flat")
    leads = exported_leads()
    overrides = [*readme_project(root, leads), *QUICK, *LENIENT_GATE]
    with (
        contextlib.chdir(root),  # the example's path is relative: exports/leads.csv
        local_tracking(),
        initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"),
    ):
        assert run_train(compose("train", overrides)).promoted
    yield root, overrides, leads


def _flat_score(root: Path, overrides: list[str], engine: list[str], output: str, as_of: str) -> ScoreResult:
    from hydra import compose, initialize_config_dir

    from leadml.cli import CONFIG_DIR

    # no lead comes in between the two runs (the file is replayed): not stale for the 7-day check
    run = [*overrides, *engine, f"score.output_dir={root / output}", f"score.as_of={as_of}",
           "score.max_staleness_days=10"]  # fmt: skip
    with (
        contextlib.chdir(root),
        local_tracking(),
        initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"),
    ):
        return run_score(compose("score", run))


def _assert_same_run(root: Path, spark_run: ScoreResult, pandas_run: ScoreResult) -> None:
    """The same scoring run record (tiers, thresholds, drift warnings, notes) and MLflow metrics
    (every feature's PSI among them)."""
    from mlflow import MlflowClient

    differ = ("output", "engine", "buckets", "seconds", "run_id", "ingestion_reused")
    got, expected = (
        {k: v for k, v in json.loads((Path(run.output) / SCORING_RUN_RECORD).read_text()).items()
         if k not in differ}
        for run in (spark_run, pandas_run)
    )  # fmt: skip
    for key in ("psi_score", "expected_conversions"):
        assert got.pop(key) == pytest.approx(expected.pop(key), rel=0, abs=1e-9)
    assert got == expected
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    got, expected = ({**client.get_run(run.run_id).data.metrics, "seconds": 0.0}
                     for run in (spark_run, pandas_run))  # fmt: skip
    assert any(name.startswith("psi.Web Visits") for name in got)
    assert got == pytest.approx(expected, rel=0, abs=1e-9, nan_ok=True)


def test_a_flat_data_set_scores_the_same_on_both_engines(spark, flat_project) -> None:
    """Open rows of a flat export: the same partition, drift record and notes as the pandas engine,
    on ``latest`` and a week later (the export changed: a trend by the config's id)."""
    root, overrides, leads = flat_project
    leads = leads.copy()
    still_open = leads.loc[leads["Status"].isin(["Open", "In progress"]), "Lead ID"]
    first = {
        engine: _flat_score(root, overrides, options, f"scored-{engine}", FLAT_LATEST)
        for engine, options in (("pandas", []), ("spark", SPARK))
    }
    # a week later three open leads visited the site much more: their trend says so, keyed by Lead ID
    moved = still_open.iloc[:3]
    leads.loc[leads["Lead ID"].isin(moved), "Web Visits"] += 12
    leads.to_csv(root / "exports" / "leads.csv", index=False)
    week_later = f"{first['pandas'].as_of + pd.Timedelta(days=7):%Y-%m-%d}"
    second = {
        engine: _flat_score(root, overrides, options, f"scored-{engine}", week_later)
        for engine, options in (("pandas", []), ("spark", SPARK))
    }
    for runs in (first, second):
        pandas_run, spark_run = runs["pandas"], runs["spark"]
        assert spark_run.engine == "spark" and spark_run.buckets == 4
        assert spark_run.as_of == pandas_run.as_of and spark_run.leads == len(still_open)
        expected = _by_lead(pd.read_parquet(pandas_run.output))
        got = _by_lead(pd.read_parquet(spark_run.output))
        assert sorted(got[s.LEAD_ID]) == sorted(still_open)
        np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-9)
        assert got["tier"].tolist() == expected["tier"].tolist()
        assert got[REASONS].equals(expected[REASONS]) and got["positive_reason_1"].notna().any()
        assert got["trend"].tolist() == expected["trend"].tolist()
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
        _assert_same_run(root, spark_run, pandas_run)
        assert Path(spark_run.output).parent == root / "scored-spark"
        assert sorted(p.name for p in Path(spark_run.output).iterdir()) == [
            SCORING_RUN_RECORD,
            "part-0.parquet",
        ]
    last_created = pd.Timestamp(leads["Created Date"].max(), tz="UTC").normalize()
    assert first["spark"].as_of == last_created + pd.Timedelta(days=1)
    trend = _by_lead(pd.read_parquet(second["spark"].output)).set_index(s.LEAD_ID)["trend"]
    assert (_by_lead(pd.read_parquet(first["spark"].output))["trend"] == "new").all()
    assert (trend[moved] == "improving").all()
    assert (trend.drop(moved) == "steady").all()


# --------------------------------------------------------------------------- experiments
def test_an_experiment_scores_the_same_on_both_engines(spark, project: Path, scorer, tmp_path: Path) -> None:
    """Same arms, visible columns and side columns (conf/experiment/): the assignment is the same
    pure function in both engines' pandas code; two model URIs of one version load two scorers."""
    from leadml.scoring.experiment import ARM, HIDDEN_TIER, Experiment, side_column
    from leadml.scoring.pandas_engine import score_in_buckets
    from leadml.stages.score import arm_models

    experiment = Experiment.from_mapping(
        {"name": "engines", "arms": [
            {"name": "champion", "model": "champion", "share": 0.5},
            {"name": "pinned", "model": "models:/leadml-synthetic/1", "share": 0.3},
            {"name": "holdout", "model": "champion", "share": 0.2, "show_score": False},
        ]}
    )  # fmt: skip
    from leadml.adapters import tracking

    # the project's store: an earlier test of the module may have configured another
    tracking.configure(f"sqlite:///{project / 'mlflow.db'}", "leadml-synthetic", project / "mlruns")
    arms = arm_models(experiment, "leadml-synthetic")
    assert len(arms.scorers) == 2
    day, tiers = DAYS[1], TierSettings.from_mapping(_cfg(tmp_path, "score").tiers)
    common = {"explain": True, "trend": TrendSettings(0.02), "model_version": "1", "arms": arms}
    pandas_run = score_in_buckets(
        _crm_leads(_interim(project), scorer, day), scorer, _day(day), tiers,
        output_dir=tmp_path / "pandas", work_dir=tmp_path / "work", bucket_leads=500, **common,
    )  # fmt: skip
    spark_run = _spark_score(spark, _interim(project), scorer, day, tmp_path / "spark", arms=arms)
    expected, got = _by_lead(pd.read_parquet(pandas_run.output)), _by_lead(pd.read_parquet(spark_run.output))
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    assert set(got[ARM]) == {"champion", "pinned", "holdout"}
    assert (got.loc[got[ARM] == "holdout", "tier"] == HIDDEN_TIER).all()
    np.testing.assert_array_equal(
        got[side_column("champion", "probability")], got[side_column("pinned", "probability")]
    )
    assert spark_run.tier_counts == pandas_run.tier_counts
    np.testing.assert_allclose(spark_run.probabilities, pandas_run.probabilities, rtol=0, atol=1e-12)
