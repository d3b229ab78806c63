"""Hostile and malformed input, and personal data that must never leave the raw tables.

Part one feeds property-based CRM tables through ingestion (the contracts), the point-in-time
features (training snapshots and the nightly build) and the scoring of a small trained model:
wrong types in a column, all-null columns, 100,000-character strings, odd unicode (RTL marks,
zero-width characters, emoji, NUL), negative counts and head counts, dates in 1900 and 2100,
duplicate ids and unknown categories. Nothing may raise but a LeadmlError (a one-line message
for the user), and accepted + quarantined rows = input rows in every table.

Part two trains, scores and reports a small synthetic project and scans every artifact of the
training and the scoring run for the raw leads' names, e-mail addresses and phone numbers.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import assert_batches_ingest_as_whole_tables, local_tracking, project_config, train_project
from leadml.cli import run_report, run_score
from leadml.data import schema as s
from leadml.data.contracts import IngestSettings, column_specs_from_config, crm_contracts
from leadml.data.features import FeatureSettings, build_training_snapshots, open_lead_features
from leadml.data.ingest import check_bad_shares, ingest_crm
from leadml.errors import LeadmlError, SchemaMismatchError
from leadml.scoring.model_input import check_model_input
from leadml.scoring.scores import TierSettings, score_leads

SMALL = {"synthetic.n_leads": 1500}
MODEL = "leadml-synthetic"
REFERENCE_TIME = pd.Timestamp("2026-01-01", tz="UTC")
HUGE = "x" * 100_000


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, name, overrides, SMALL)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small synthetic project trained, scored once and reported with the default settings."""
    root = tmp_path_factory.mktemp("hostile")
    with local_tracking():
        train_project(lambda stage: _cfg(root, stage))
        scored = run_score(_cfg(root, "score"))
        report = run_report(_cfg(root, "report"))
        from leadml.adapters import tracking

        scorer = tracking.load_scorer(f"models:/{MODEL}@champion")
    return {"root": root, "scored": scored, "report": report, "scorer": scorer}


# --------------------------------------------------------------------------- strategies
LEAD_IDS = ["L1", "L2", "L3", "L4", " L1 ", "l2", "L3\u200b", "🚀", "L\x00", "", None]
ACCOUNT_IDS = ["A1", "A2", "A9", " a1", "", None]
ODD_TEXT = [
    "\u202eevil\u202c",  # right-to-left override
    "zero\u200bwidth\u200d",
    "\ufeffbom",
    "emoji 🚀🔥👩‍👩‍👧",
    "nul\x00byte",
    "e\u0301\u0301",  # combining accents
    "\U0001d518\U0001d52b\U0001d526",  # mathematical fraktur letters
    "'; DROP TABLE leads; --",
    "<script>alert(1)</script>",
    "=HYPERLINK(1)",
    " \n\r\t ",
    "",
    "NA",
    "null",
    HUGE,
]
ODD_DATES = [
    "1900-01-01",
    "1900-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
    "1677-09-22",
    "0001-01-01",
    "2100-01-01T00:00:00Z",
    "9999-12-31",
    "2024-02-30",
    "2025-06-01T12:00:00+14:00",
    "2025-06-01 12:00",
    "13/45/2025",
]


def _iso(moment: pd.Timestamp) -> str:
    return moment.isoformat()


def _valid_time(start: str = "2024-06-01", end: str = "2025-12-01") -> st.SearchStrategy[str]:
    low, high = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    seconds = int((high - low).total_seconds())
    return st.integers(0, seconds).map(lambda x: _iso(low + pd.Timedelta(seconds=x)))


HOSTILE = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(ODD_TEXT),
    st.sampled_from(ODD_DATES),
)


def _cell(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, HOSTILE)


@st.composite
def _column(draw: st.DrawFn, valid: st.SearchStrategy[Any], rows: int, typed: str | None) -> pd.Series:
    """One column of ``rows`` values: cell by cell, all null, or one consistent type (as Parquet gives)."""
    mode = draw(st.sampled_from(["clean", "clean", "cells", "null", "typed" if typed else "cells"]))
    if mode == "clean":
        return pd.Series(draw(st.lists(valid, min_size=rows, max_size=rows)), dtype="object")
    if mode == "null":
        return pd.Series([None] * rows, dtype="object")
    if mode == "typed" and typed == "float":
        values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=rows, max_size=rows))
        return pd.Series(values, dtype="float64")
    if mode == "typed" and typed == "int":
        values = draw(st.lists(st.integers(-(2**40), 2**40), min_size=rows, max_size=rows))
        return pd.Series(values, dtype="int64")
    if mode == "typed" and typed == "timestamp":
        moments = st.datetimes(
            pd.Timestamp("1890-01-01").to_pydatetime(), pd.Timestamp("2110-01-01").to_pydatetime()
        )
        values = draw(st.lists(st.one_of(moments, st.none()), min_size=rows, max_size=rows))
        return pd.Series(pd.to_datetime(values, utc=draw(st.booleans())))
    if mode == "typed" and typed == "text":
        values = draw(
            st.lists(
                st.one_of(st.text(max_size=8), st.none(), st.sampled_from(ODD_TEXT)),
                min_size=rows,
                max_size=rows,
            )
        )
        return pd.Series(values, dtype="str")
    return pd.Series(draw(st.lists(_cell(valid), min_size=rows, max_size=rows)), dtype="object")


@st.composite
def _table(
    draw: st.DrawFn,
    columns: dict[str, tuple[st.SearchStrategy[Any], str | None]],
    max_rows: int,
    min_rows: int = 0,
) -> pd.DataFrame:
    rows = draw(st.integers(min_rows, max_rows))
    return pd.DataFrame(
        {name: draw(_column(valid, rows, typed)) for name, (valid, typed) in columns.items()},
        index=pd.RangeIndex(rows),
    )


TEXT = st.text(max_size=6)
LEAD_COLUMNS = {
    s.LEAD_ID: (st.sampled_from(LEAD_IDS), "text"),
    s.CREATED_AT: (_valid_time("2024-06-01", "2025-06-01"), "timestamp"),
    s.ACCOUNT_ID: (st.sampled_from(ACCOUNT_IDS), "text"),
    s.SOURCE: (st.sampled_from([*s.SOURCES, "Paid Search", "PAID-SEARCH", "carrier_pigeon"]), "text"),
    s.OWNER: (st.sampled_from(["rep_01", "Rep 02", "r\u202e"]), "text"),
    s.JOB_TITLE: (st.sampled_from(["VP Sales", "Chief Executive", "intern", "Director of IT", ""]), "text"),
    s.COUNTRY: (st.sampled_from([*s.COUNTRIES, "Deutschland", "U.S.A.", "Atlantis"]), "text"),
    s.FIRST_NAME: (TEXT, "text"),
    s.LAST_NAME: (TEXT, "text"),
    s.EMAIL: (st.sampled_from(["a@acme.com", "b@gmail.com", "no-at-sign", "@", "x@", "a@b@c"]), "text"),
    s.PHONE: (TEXT, "text"),
    s.ESTIMATED_DEAL_VALUE: (st.sampled_from(["1000", "-5", "1e400", "NaN", "12,5", 2500.0]), "float"),
    "browser": (st.sampled_from(["chrome", "firefox", "Netscape 4"]), "text"),
    "campaign_code": (st.sampled_from(["17", "-3", "x"]), "int"),
}
ACCOUNT_COLUMNS = {
    s.ACCOUNT_ID: (st.sampled_from(ACCOUNT_IDS), "text"),
    s.COMPANY_NAME: (TEXT, "text"),
    s.INDUSTRY: (st.sampled_from([*s.INDUSTRIES, "SaaS", "alchemy"]), "text"),
    s.EMPLOYEES: (st.sampled_from(["250", "-12", "0", "1e12", "twelve", 40]), "int"),
    s.ANNUAL_REVENUE: (st.sampled_from(["4e7", "-1", "inf", 1.5e6]), "float"),
    s.COUNTRY: (st.sampled_from(["us", "DE", "Narnia"]), "text"),
    s.FOUNDED_YEAR: (st.sampled_from(["2005", "1700", "3000", "-1"]), "int"),
}
OUTCOME_COLUMNS = {
    s.LEAD_ID: (st.sampled_from(LEAD_IDS), "text"),
    s.STATUS: (st.sampled_from(["won", "lost", "open", "Closed Won", "maybe"]), "text"),
    s.CLOSED_AT: (st.one_of(st.none(), _valid_time("2024-07-01", "2025-12-01")), "timestamp"),
    s.DEAL_VALUE: (st.sampled_from(["1000", "-1", None]), "float"),
}
ACTIVITY_COLUMNS = {
    s.EVENT_ID: (st.sampled_from(["E1", "E2", "E3", "E1 ", None]), "text"),
    s.LEAD_ID: (st.sampled_from([*LEAD_IDS, "L404"]), "text"),
    s.TIMESTAMP: (_valid_time("2024-06-01", "2025-12-01"), "timestamp"),
    s.ACTIVITY_TYPE: (st.sampled_from([*s.ACTIVITY_TYPES, "Page View", "EMAIL-OPEN", "fax"]), "text"),
    s.PAGE_CATEGORY: (st.sampled_from([*s.PAGE_CATEGORIES, "Pricing", "casino", None]), "text"),
}


@st.composite
def crm_tables(draw: st.DrawFn) -> dict[str, pd.DataFrame]:
    return {
        s.ACCOUNTS: draw(_table(ACCOUNT_COLUMNS, 4)),
        s.LEADS: draw(_table(LEAD_COLUMNS, 8, min_rows=1)),
        s.OUTCOMES: draw(_table(OUTCOME_COLUMNS, 8)),
        s.ACTIVITIES: draw(_table(ACTIVITY_COLUMNS, 16)),
    }


# --------------------------------------------------------------------------- the pipeline on hostile tables
CONTRACTS = crm_contracts(
    {s.LEADS: column_specs_from_config({"categorical": ["browser"], "numeric": ["campaign_code"]})}
)
INGEST = IngestSettings(reference_time=REFERENCE_TIME, missing_markers=("", "NA", "null"))
AS_OF_DATES = [pd.Timestamp("2025-01-06", tz="UTC"), pd.Timestamp("2025-09-01", tz="UTC")]


def _balanced(raw: dict[str, pd.DataFrame], result: Any) -> None:
    for table, frame in raw.items():
        report = result.reports[table]
        assert report.input_rows == len(frame), table
        assert report.accepted_rows + report.quarantined_rows == len(frame), table
        assert len(result.quarantines[table]) == report.quarantined_rows, table
        assert len(result.tables[table]) == report.accepted_rows + report.added_rows, table


def _point_in_time(features: pd.DataFrame, activities: pd.DataFrame) -> None:
    """Counts are never negative, and a lead's first and last activity are its first and last accepted
    events strictly before the as-of date (recomputed here from the accepted table)."""
    counts = features[[c for c in features.columns if c.startswith(("n_", "rw_"))]]
    assert (counts.fillna(0).to_numpy() >= 0).all()
    for as_of, rows in features.groupby(s.AS_OF):
        before = activities[activities[s.TIMESTAMP] < as_of]
        span = before.groupby(before[s.LEAD_ID].astype(str))[s.TIMESTAMP].agg(["min", "max"])
        ids = rows[s.LEAD_ID].astype(str)
        for column, edge in (("days_since_first_activity", "min"), ("days_since_last_activity", "max")):
            moments = pd.DatetimeIndex(span[edge].reindex(ids.to_numpy()), tz="UTC")
            expected = (as_of - moments).total_seconds().to_numpy() / 86_400
            actual = rows[column].to_numpy(float)
            np.testing.assert_allclose(actual, expected, atol=2 / 86_400, err_msg=column)


def run_pipeline(raw: dict[str, pd.DataFrame], scorer: Any) -> None:
    """Ingest, features and scoring of ``raw``; a LeadmlError may stop it, nothing else."""
    try:
        result = ingest_crm(raw, CONTRACTS, INGEST, enforce_bad_share=False)
    except LeadmlError:
        return
    _balanced(raw, result)
    with contextlib.suppress(LeadmlError):  # the run would stop here; the rest must hold all the same
        check_bad_shares(result, INGEST)
    tables = result.tables
    model_settings = FeatureSettings.from_mapping(scorer.feature_settings)
    try:
        snapshots = build_training_snapshots(tables, model_settings, end=REFERENCE_TIME, dates=AS_OF_DATES)
    except LeadmlError:
        snapshots = None  # no accepted lead
    if snapshots is not None:
        _point_in_time(snapshots, tables[s.ACTIVITIES])
    for as_of in AS_OF_DATES:
        features = open_lead_features(tables, as_of, model_settings)
        assert features[s.LEAD_ID].is_unique
        _point_in_time(features, tables[s.ACTIVITIES])
        if features.empty:
            continue
        try:
            check_model_input(features, scorer)
        except SchemaMismatchError as error:  # a few hostile leads easily leave a column empty
            if "missing column" in str(error) or "mistyped" in str(error):
                continue
        scored = score_leads(scorer, features, TierSettings())
        assert len(scored) == len(features)
        assert scored["probability"].between(0, 1).all()


@settings(max_examples=35, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(crm_tables())
def test_hostile_tables_give_a_message_or_a_balanced_result_never_a_crash(project: dict, raw: dict) -> None:
    run_pipeline(raw, project["scorer"])


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(crm_tables(), st.integers(1, 6))
def test_hostile_tables_checked_batch_by_batch_equal_the_whole_tables_row_for_row(
    raw: dict, batch_rows: int
) -> None:
    """The nightly job's ingestion in batches (bounded memory) against the whole tables in memory:
    the same accepted rows, quarantine and reports, or the same stop."""
    with tempfile.TemporaryDirectory(prefix="leadml-batches-") as folder:
        assert_batches_ingest_as_whole_tables(raw, CONTRACTS, INGEST, batch_rows, Path(folder))


def test_events_before_1900_are_quarantined_not_silently_dropped_by_the_features(project: dict) -> None:
    """The features' time keys hold 1900 to 2172: an older event used to vanish from "first activity"."""
    raw = {
        s.LEADS: pd.DataFrame({s.LEAD_ID: ["L1"], s.CREATED_AT: ["2024-06-01T00:00:00Z"]}),
        s.OUTCOMES: pd.DataFrame(columns=[s.LEAD_ID, s.STATUS, s.CLOSED_AT]),
        s.ACTIVITIES: pd.DataFrame(
            {
                s.EVENT_ID: ["E1", "E2", "E3"],
                s.LEAD_ID: ["L1", "L1", "L1"],
                s.TIMESTAMP: ["1899-12-30T00:00:00Z", "0001-01-01", "2024-07-01T08:00:00Z"],
                s.ACTIVITY_TYPE: ["call", "call", "page_view"],
            }
        ),
    }
    result = ingest_crm(raw, CONTRACTS, INGEST, enforce_bad_share=False)
    reasons = result.quarantines[s.ACTIVITIES]["reason"].tolist()
    assert len(reasons) == 2 and all("is before 1900-01-01" in reason for reason in reasons)
    run_pipeline(raw, project["scorer"])  # first and last activity checked against the accepted events


def test_hostile_rows_in_the_real_sources_go_through_the_nightly_job(project: dict, tmp_path: Path) -> None:
    """The whole job (Parquet sources, interim copy, lead buckets, partition) with hostile rows among
    the real ones: they are scored or quarantined with a reason, and every table balances."""
    raw = project["root"] / "data" / "raw" / "synthetic"
    hostile = {
        s.LEAD_ID: ["H1", "H2", "H3", "H3", "H4", "H5", "H6"],
        s.CREATED_AT: ["1900-01-01", "2100-01-01", "2025-01-01T00:00:00Z", "2025-02-01", "not a date",
                       "2025-03-01T12:00:00+14:00", "2025-04-01"],
        s.SOURCE: ["\u202eevil\u202c", "emoji 🚀", "Paid Search", "nul\x00byte", HUGE, "", "carrier_pigeon"],
        s.JOB_TITLE: [HUGE, "VP\u200bSales", None, "intern", "ceo", "\ufeffDirector", "e\u0301"],
        s.ESTIMATED_DEAL_VALUE: [0.0, float("inf"), 1e300, float("nan"), -5.0, -0.0, 12.5],
        "browser": ["Netscape 4", HUGE, None, "chrome", "🚀", "\x00", "firefox"],
        "campaign_code": [-1, 2**62, 0, 7, 8, 9, 10],
    }  # fmt: skip
    leads = pd.read_parquet(raw / "leads.parquet")
    leads = pd.concat(
        [leads, pd.DataFrame(hostile).astype({s.ESTIMATED_DEAL_VALUE: "float64"})], ignore_index=True
    )
    activities = pd.read_parquet(raw / "activities.parquet")
    odd_events = pd.DataFrame({
        s.EVENT_ID: ["X1", "X2", "X3", "X4"],
        s.LEAD_ID: ["H1", "H3", "H6", "H6"],
        s.TIMESTAMP: ["1899-12-31T23:59:59Z", "2025-06-01T00:00:00Z", "2025-06-02", "2025-06-03"],
        s.ACTIVITY_TYPE: ["call", "Page View", "fax", "EMAIL-OPEN"],
        s.PAGE_CATEGORY: [None, "Pricing", None, HUGE],
    })  # fmt: skip
    activities = pd.concat([activities, odd_events.astype(activities.dtypes.to_dict())], ignore_index=True)
    leads.to_parquet(tmp_path / "leads.parquet", index=False)
    activities.to_parquet(tmp_path / "activities.parquet", index=False)
    overrides = [
        f"data.tables.leads.path={tmp_path / 'leads.parquet'}",
        f"data.tables.activities.path={tmp_path / 'activities.parquet'}",
        "data.max_bad_share=0.5",
        "score.as_of=2025-12-01",
        *(f"score.{key}={tmp_path / key}" for key in ("output_dir", "interim_dir", "work_dir")),
    ]
    with local_tracking():
        summary = run_score(_cfg(project["root"], "score", overrides))
    scored = pd.read_parquet(summary.output)
    assert scored[s.LEAD_ID].is_unique and scored["probability"].between(0, 1).all()
    hostile_scored = set(scored[s.LEAD_ID]) & set(hostile[s.LEAD_ID])
    assert hostile_scored == {"H1", "H3", "H5", "H6"}  # created in 1900 is old, not wrong; H3 once
    manifest = json.loads((tmp_path / "interim_dir" / "manifest.json").read_text())
    for table, report in manifest["tables"].items():
        assert report["accepted_rows"] + report["quarantined_rows"] == report["input_rows"], table
    quarantined = pd.read_parquet(tmp_path / "interim_dir" / "quarantine" / "leads.parquet").set_index(
        s.LEAD_ID
    )
    assert "in the future" in quarantined.loc["H2", "reason"]
    assert "not an ISO 8601 timestamp" in quarantined.loc["H4", "reason"]
    assert "estimated_deal_value: '-5' is below the minimum 0" in quarantined.loc["H4", "reason"]
    # 1e300 is beyond the plausible deal value: that H3 goes, and the other H3 is kept (a broken row
    # never displaces a sound one)
    assert quarantined.loc["H3", "reason"] == "estimated_deal_value: '1e+300' is above the maximum 1e+12"
    events = pd.read_parquet(tmp_path / "interim_dir" / "quarantine" / "activities.parquet").set_index(
        s.EVENT_ID
    )
    assert "before 1900-01-01" in events.loc["X1", "reason"] and "not one of" in events.loc["X3", "reason"]


# --------------------------------------------------------------------------- personal data
class PersonalData:
    """The raw leads' e-mail addresses, phone numbers (as written and as digits) and "first last"
    names, and a scan for them.

    A file is read as text in every encoding values take inside it (UTF-8; UTF-32 at each byte
    offset, for the NumPy string arrays of a pickle; a Parquet file also through its rows), and
    every position of the text is looked up by its first characters in a table of the values: one
    pass per text, whatever the number of leads.
    """

    KEY = 7  # characters looked up at each position: the shortest value ("Ana Lee") has 7

    def __init__(self, leads: pd.DataFrame) -> None:
        self.emails = set(leads[s.EMAIL].dropna().str.strip())
        phones = leads[s.PHONE].dropna().str.strip()
        self.phones = set(phones) | {re.sub(r"\D", "", phone) for phone in phones}
        first, last = leads[s.FIRST_NAME].str.strip(), leads[s.LAST_NAME].str.strip()
        self.names = set((first + " " + last).dropna())
        values = {value for value in self.emails | self.phones | self.names if len(value) >= self.KEY}
        assert min(len(self.emails), len(self.phones), len(self.names)) > 100
        self.by_key: dict[str, list[str]] = {}
        for value in values:
            self.by_key.setdefault(value[: self.KEY], []).append(value)

    def in_text(self, text: str) -> set[str]:
        found, key, by_key = set(), self.KEY, self.by_key
        for start in range(len(text) - key + 1):
            candidates = by_key.get(text[start : start + key])
            if candidates:
                found.update(value for value in candidates if text.startswith(value, start))
        return found

    def in_file(self, path: Path) -> set[str]:
        data = path.read_bytes()
        texts = [data.decode("utf-8", errors="ignore")]
        texts += [data[offset:].decode("utf-32-le", errors="ignore") for offset in range(4)]
        columns: set[str] = set()
        if zipfile.is_zipfile(path):  # a skops pipeline: its members are compressed
            with zipfile.ZipFile(path) as archive:
                texts += [archive.read(name).decode("utf-8", errors="ignore") for name in archive.namelist()]
        if path.suffix in (".parquet", ".csv"):  # a table: its columns, and the values themselves
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
            columns = {f"column {name}" for name in frame.columns if name in s.PERSONAL_DATA_COLUMNS}
            texts.append(frame.to_csv(index=False))  # Parquet pages are compressed
        return columns.union(*(self.in_text(text) for text in texts))


def artifacts(root: Path) -> Iterator[Path]:
    """Every file the training and the scoring run leave outside the input data."""
    folders = [
        root / "mlruns",  # both runs' artifacts: plots, tables, the pyfunc, its input example
        root / "reports",  # the model report and the leadership report with its CSV
        root / "data" / "features",  # training snapshots, feature metadata, manifest
        root / "data" / "scored",  # the scored partition and its run record
    ]
    for folder in folders:
        yield from sorted(path for path in folder.rglob("*") if path.is_file())
    yield root / "mlflow.db"  # params, tags, metrics, datasets and the registry
    yield root / "data" / "interim" / "synthetic" / "manifest.json"


@pytest.fixture(scope="module")
def personal(project: dict) -> PersonalData:
    return PersonalData(pd.read_parquet(project["root"] / "data" / "raw" / "synthetic" / "leads.parquet"))


def test_the_scanner_finds_personal_data_where_it_is(project: dict, personal: PersonalData) -> None:
    """The control: the validated leads hold every kind, and a pickle hides none of them."""
    leads = pd.read_parquet(project["root"] / "data" / "interim" / "synthetic" / "leads.parquet")
    found = personal.in_file(project["root"] / "data" / "interim" / "synthetic" / "leads.parquet")
    assert found & personal.emails and found & personal.phones
    assert found >= {f"column {name}" for name in s.PERSONAL_DATA_COLUMNS}
    email, phone = leads[s.EMAIL].dropna().iloc[0], leads[s.PHONE].dropna().iloc[0]
    name = f"{leads[s.FIRST_NAME].iloc[0]} {leads[s.LAST_NAME].iloc[0]}"
    pickled = project["root"] / "control.pkl"  # NumPy text (UTF-32), a pandas Series, a plain str
    pickled.write_bytes(
        pickle.dumps({"array": np.array([email, "x"]), "series": pd.Series([name]), "str": phone})
    )
    try:
        assert personal.in_file(pickled) >= {email, name, phone}
    finally:
        pickled.unlink()


def test_no_artifact_of_training_or_scoring_holds_personal_data(
    project: dict, personal: PersonalData
) -> None:
    files = list(artifacts(project["root"]))
    names = {path.name for path in files}
    assert {"scorer.json", "input_example.json", "MLmodel", "feature_metadata.json"} <= names
    assert names & {"booster.txt", "logistic.skops"}  # the champion's model as data
    assert {"part-0.parquet", "snapshots.parquet", "model-v1.html", "mlflow.db"} <= names
    assert any(name.startswith("leads-") and name.endswith(".html") for name in names)
    leaks = {
        str(path.relative_to(project["root"])): sorted(found)[:3]
        for path in files
        if (found := personal.in_file(path))
    }
    assert not leaks


def test_no_logged_param_tag_or_dataset_holds_personal_data(project: dict, personal: PersonalData) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project['root'] / 'mlflow.db'}")
    runs = [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
    ]
    assert {run.info.run_name.split("-")[0] for run in runs} >= {"train", "score"}
    logged = []
    for run in runs:
        logged += [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics]
        for dataset_input in run.inputs.dataset_inputs if run.inputs else ():
            dataset = dataset_input.dataset
            logged += [dataset.name, dataset.source, dataset.schema, dataset.profile]
    for version in client.search_model_versions(f"name='{MODEL}'"):
        logged += [version.source, version.description, *version.tags.items(), version.run_id]
    assert len(logged) > 100
    assert not personal.in_text(json.dumps(logged, default=str))
