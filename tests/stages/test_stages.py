"""Whole stages on small generated data: generate -> ingest -> features, through the configs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from leadml.cli import CONFIG_DIR, run_features, run_generate, run_ingest
from leadml.data import schema as s
from leadml.errors import LeadmlError

SMALL = ["synthetic.n_leads=3000", "synthetic.start=2025-01-01", "synthetic.end=2026-01-01"]


def _cfg(name: str, root: Path, overrides: list[str] | tuple[str, ...] = ()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, [f"paths.root={root}", *SMALL, *overrides])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    run_generate(_cfg("generate", root))
    run_ingest(_cfg("ingest", root))
    run_features(_cfg("features", root))
    return root


def test_generate_is_skipped_when_present_and_deterministic(pipeline: Path, tmp_path: Path) -> None:
    raw = pipeline / "data/raw/synthetic"
    before = (raw / "leads.parquet").stat().st_mtime_ns
    run_generate(_cfg("generate", pipeline))
    assert (raw / "leads.parquet").stat().st_mtime_ns == before
    run_generate(_cfg("generate", tmp_path))
    for table in (s.LEADS, s.ACTIVITIES, s.OUTCOMES):
        pd.testing.assert_frame_equal(
            pd.read_parquet(raw / f"{table}.parquet"),
            pd.read_parquet(tmp_path / f"data/raw/synthetic/{table}.parquet"),
        )


def test_generate_reruns_when_the_settings_change(tmp_path: Path) -> None:
    first = run_generate(_cfg("generate", tmp_path, ["synthetic.n_leads=500"]))
    again = run_generate(_cfg("generate", tmp_path, ["synthetic.n_leads=500"]))
    assert (first.written, again.written) == ("new", "kept") and again.created_at == first.created_at
    changed = run_generate(_cfg("generate", tmp_path, ["synthetic.n_leads=500", "synthetic.seed=7"]))
    assert changed.written == "replaced" and changed.seed == 7 and changed.created_at != first.created_at
    assert (
        run_generate(_cfg("generate", tmp_path, ["synthetic.n_leads=500", "synthetic.seed=7"])).written
        == "kept"
    )


def test_ingest_accounts_for_every_row(pipeline: Path) -> None:
    interim = pipeline / "data/interim/synthetic"
    record = json.loads((interim / "manifest.json").read_text())
    for table, report in record["tables"].items():
        raw_rows = len(pd.read_parquet(pipeline / f"data/raw/synthetic/{table}.parquet"))
        assert report["input_rows"] == raw_rows
        assert report["accepted_rows"] + report["quarantined_rows"] == raw_rows, table
        quarantine = pd.read_parquet(interim / "quarantine" / f"{table}.parquet")
        assert len(quarantine) == report["quarantined_rows"]
        assert quarantine["reason"].str.len().gt(0).all()
        assert len(pd.read_parquet(interim / f"{table}.parquet")) == report["output_rows"]
        assert report["source_fingerprint"] and report["output_fingerprint"]
    # the generator's messy rows were caught, each kind with its reason
    reasons = " ".join(pd.read_parquet(interim / "quarantine/activities.parquet")["reason"])
    assert "not in leads" in reasons and "future" in reasons
    leads = pd.read_parquet(interim / "leads.parquet")
    assert leads[s.LEAD_ID].is_unique and str(leads[s.CREATED_AT].dt.tz) == "UTC"
    assert set(leads[s.SOURCE].dropna().unique()) <= set(s.SOURCES)


def test_features_are_point_in_time_snapshots_without_personal_data(pipeline: Path) -> None:
    out = pipeline / "data/features/synthetic"
    snaps = pd.read_parquet(out / "snapshots.parquet")
    meta = {m["name"]: m for m in json.loads((out / "feature_metadata.json").read_text())}
    assert not set(s.PERSONAL_DATA_COLUMNS) & set(snaps.columns)
    assert {s.DEAL_VALUE, s.STATUS, s.CLOSED_AT, s.TRUE_PROBABILITY}.isdisjoint(snaps.columns)
    assert set(meta) == set(snaps.columns) - {s.LEAD_ID, s.AS_OF, s.LABEL}
    assert {"browser", "campaign_code"} <= set(meta)
    assert not snaps.duplicated([s.LEAD_ID, s.AS_OF]).any()
    assert 0.01 < snaps[s.LABEL].mean() < 0.5
    end = pd.Timestamp("2026-01-01", tz="UTC")
    assert (snaps[s.AS_OF] + pd.Timedelta(days=90) <= end).all()  # censored windows left out
    # a lead's snapshots stop once it closes
    outcomes = pd.read_parquet(pipeline / "data/interim/synthetic/outcomes.parquet").set_index(s.LEAD_ID)
    closed = outcomes[s.CLOSED_AT].reindex(snaps[s.LEAD_ID]).to_numpy()
    assert not (pd.Series(closed).notna().to_numpy() & (snaps[s.AS_OF].to_numpy() >= closed)).any()


def test_labels_agree_with_the_generators_ground_truth(pipeline: Path) -> None:
    """Snapshots the generator knew were open get, on average, the label its true probability says."""
    snaps = pd.read_parquet(pipeline / "data/features/synthetic/snapshots.parquet")
    truth = pd.read_parquet(pipeline / "data/raw/synthetic/ground_truth.parquet")
    joined = snaps.merge(truth, on=[s.LEAD_ID, s.AS_OF], how="inner")
    assert len(joined) > 0.9 * len(snaps)
    assert joined[s.LABEL].mean() == pytest.approx(joined[s.TRUE_PROBABILITY].mean(), abs=0.02)
    by_truth = joined.groupby(pd.qcut(joined[s.TRUE_PROBABILITY], 4, duplicates="drop"), observed=True)[
        s.LABEL
    ]
    assert by_truth.mean().is_monotonic_increasing


def test_sql_source_gives_the_same_tables_as_parquet(pipeline: Path, tmp_path: Path) -> None:
    database = tmp_path / "crm.sqlite"
    with sqlite3.connect(database) as connection:
        for table in s.CRM_TABLES:
            frame = pd.read_parquet(pipeline / f"data/raw/synthetic/{table}.parquet")
            frame.to_sql(table, connection, index=False)
    url = f"sqlite:///{database}"
    overrides = [f"+data.tables.{t}.url={url}" for t in s.CRM_TABLES]
    overrides += [f"data.tables.{t}.format=sql" for t in s.CRM_TABLES]
    overrides += [f"~data.tables.{t}.path" for t in s.CRM_TABLES]
    overrides += [f"+data.tables.{t}.table={t}" for t in s.CRM_TABLES]
    overrides += ["data.reference_time=2026-11-01"]
    record = run_ingest(_cfg("ingest", tmp_path, overrides))
    parquet = json.loads((pipeline / "data/interim/synthetic/manifest.json").read_text())
    for table in s.CRM_TABLES:
        assert record.tables[table]["accepted_rows"] == parquet["tables"][table]["accepted_rows"]
        assert record.tables[table]["output_fingerprint"] == parquet["tables"][table]["output_fingerprint"]


def test_features_before_ingest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LeadmlError, match="run leadml-ingest"):
        run_features(_cfg("features", tmp_path))


def test_cli_reports_a_missing_source_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from leadml.cli import ingest; ingest()", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3  # SourceMissingError: the documented exit code
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "accounts.parquet" in message[0], result.stderr


def test_too_many_bad_rows_stop_the_run_and_keep_them(pipeline: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for table in s.CRM_TABLES:
        frame = pd.read_parquet(pipeline / f"data/raw/synthetic/{table}.parquet")
        if table == s.ACTIVITIES:
            frame.loc[frame.index[: len(frame) // 10], s.TIMESTAMP] = "yesterday-ish"
        frame.to_parquet(raw / f"{table}.parquet")
    overrides = [f"data.tables.{t}.path={raw}/{t}.parquet" for t in s.CRM_TABLES]
    with pytest.raises(LeadmlError, match=r"activities.*quarantine") as error:
        run_ingest(_cfg("ingest", tmp_path, overrides))
    assert "timestamp" in str(error.value)
    quarantine = pd.read_parquet(tmp_path / "data/interim/synthetic/quarantine/activities.parquet")
    assert (quarantine[s.TIMESTAMP] == "yesterday-ish").sum() >= 0.09 * len(
        pd.read_parquet(raw / "activities.parquet")
    )
    assert not (tmp_path / "data/interim/synthetic/activities.parquet").exists()


def test_upstream_seconds_follow_the_manifest_links(tmp_path: Path) -> None:
    from leadml.stages.train import upstream_seconds

    interim = tmp_path / "interim.json"
    interim.write_text(json.dumps({"stage": "ingest", "seconds": 8.5}))
    features = {"stage": "features", "seconds": 10.25, "input_manifest": str(interim)}
    assert upstream_seconds(features) == {"features": 10.25, "ingest": 8.5}
    assert upstream_seconds({"stage": "features", "seconds": 1, "input_manifest": "gone.json"}) == {
        "features": 1.0
    }
