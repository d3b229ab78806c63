"""Flat-table sources: labels from an outcomes table within a horizon, and per-column missing values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.adapters.sources import fingerprint_file
from leadml.data import schema as s
from leadml.data.contracts import REASON, SOURCE_ROW, ColumnSpec, IngestSettings, flat_contract
from leadml.data.flat import ingest_flat
from leadml.data.ingest import LABEL, check_bad_shares
from leadml.data.parsing import parse_column
from leadml.errors import ContractError, LeadmlError
from leadml.stages.ingest import IngestSummary, ingest_stage

SETTINGS = IngestSettings(reference_time="2024-06-01T00:00:00Z")
CONTRACT = {"id": "mql_id", "time": "first_contact", "categorical": ["origin"]}
OUTCOMES = {"id": "mql_id", "time": "won_date", "horizon_days": 30}


def raw_leads() -> pd.DataFrame:
    return pd.DataFrame({
        "mql_id": ["m1", "m2", "m3", "m4", "m5", "m6"],
        "first_contact": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-10", "2024-01-10", "2024-03-20"],
        "origin": ["Paid Search", "organic", "email", "email", "social", "email"],
    })  # fmt: skip


def raw_outcomes() -> pd.DataFrame:
    return pd.DataFrame({
        "mql_id": ["m1", "m2", "m4"],
        # m1 on the last day of its 30, m2 one day too late, m4 within; the deal columns ride along
        "won_date": ["2024-01-31 00:00:00", "2024-02-01 12:00:00", "2024-01-15 08:30:00"],
        "business_segment": ["pet", "car", "toys"],
        "declared_monthly_revenue": ["0", "5000", "100"],
    })  # fmt: skip


def ingest(leads=None, outcomes=None, contract=CONTRACT, spec=OUTCOMES, settings=SETTINGS, **kwargs):
    return ingest_flat(
        raw_leads() if leads is None else leads,
        flat_contract(contract, spec),
        settings,
        outcomes=raw_outcomes() if outcomes is None else outcomes,
        enforce_bad_share=False,
        **kwargs,
    )


def reasons(result, table: str) -> dict[int, str]:
    quarantine = result.quarantines[table]
    return dict(zip(quarantine[SOURCE_ROW].tolist(), quarantine[REASON].tolist(), strict=True))


# --------------------------------------------------------------------------- outcomes join
def test_label_is_an_outcome_within_the_horizon_after_the_time_column():
    result = ingest(spec={**OUTCOMES, "observed_until": "2024-06-01"})
    leads = result.tables[s.LEADS]
    assert leads[s.LEAD_ID].tolist() == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert leads[LABEL].tolist() == [1, 0, 0, 1, 0, 0]
    assert leads[s.AS_OF].tolist()[0] == pd.Timestamp("2024-01-01T00:00Z")
    assert list(leads.columns) == [s.LEAD_ID, LABEL, s.AS_OF, "origin"]
    # the closed-deal columns stay in the outcomes table; they never reach the lead table
    assert {"business_segment", "declared_monthly_revenue", "won_date"}.isdisjoint(leads.columns)
    assert "business_segment" in result.tables["outcomes"]
    assert result.reports[s.LEADS].warnings == {"outcome after the horizon (label 0)": 1}
    assert result.labels["positives"] == 2 and result.labels["outcomes_after_horizon"] == 1
    assert result.labels["observed_until_from"] == "config"


def test_leads_whose_horizon_has_not_elapsed_are_open_or_set_aside_when_won_already():
    # the data ends on 2024-02-09: leads first contacted after 2024-01-10 have not had their 30
    # days; m4 and m5 (2024-01-10) end on 2024-02-09, just in time. m7 (2024-02-01) is won on
    # 2024-02-05, within a window not over yet: set aside (its window's losses are not known);
    # m6 (2024-03-20) has no win yet: open, scored every night, never a label
    leads = pd.concat(
        [raw_leads(), pd.DataFrame({"mql_id": ["m7"], "first_contact": ["2024-02-01"], "origin": ["email"]})],
        ignore_index=True,
    )
    outcomes = pd.concat(
        [raw_outcomes(), pd.DataFrame({"mql_id": ["m7"], "won_date": ["2024-02-05 10:00:00"]})],
        ignore_index=True,
    )
    result = ingest(leads, outcomes, spec={**OUTCOMES, "observed_until": "2024-02-09T00:00:00"})
    report = result.reports[s.LEADS]
    assert result.tables[s.LEADS][s.LEAD_ID].tolist() == ["m1", "m2", "m3", "m4", "m5"]
    assert result.open_rows[s.LEADS][s.LEAD_ID].tolist() == ["m6"]
    assert LABEL not in result.open_rows[s.LEADS]
    assert reasons(result, s.LEADS) == {
        7: "not labelled: first_contact 2024-02-01T00:00:00Z + 30 days is after the end of observation "
        "2024-02-09T00:00:00+00:00 and it is won already (its window's losses are not known yet)"
    }
    assert report.accepted_rows + report.quarantined_rows == report.input_rows == 7
    assert report.excluded_rows == 1 and report.bad_rows == 0 and report.bad_share == 0.0
    assert report.reason_counts == {"not labelled: horizon not elapsed": 1}
    assert result.labels["not_labelled"]["not labelled: horizon not elapsed"] == 1
    assert result.labels["open_leads"] == 1 and result.labels["labelled_leads"] == 5
    check_bad_shares(result, IngestSettings(max_bad_share=0.0))  # set aside, not bad


def test_without_observed_until_the_data_ends_at_its_latest_timestamp():
    result = ingest()
    assert result.labels["observed_until"] == "2024-03-20T00:00:00+00:00"
    assert result.labels["observed_until_from"] == "latest timestamp in the data"
    # 2024-01-10 + 30 days is before 2024-03-20; m6 (2024-03-20) has had no time at all
    assert result.tables[s.LEADS][s.LEAD_ID].tolist() == ["m1", "m2", "m3", "m4", "m5"]


def test_leads_before_observed_from_are_not_labelled():
    spec = {**OUTCOMES, "observed_from": "2024-01-05", "observed_until": "2024-06-01"}
    result = ingest(spec=spec)
    assert result.tables[s.LEADS][s.LEAD_ID].tolist() == ["m4", "m5", "m6"]
    assert set(reasons(result, s.LEADS)) == {1, 2, 3}
    assert reasons(result, s.LEADS)[1].startswith(
        "not labelled: first_contact 2024-01-01T00:00:00Z is before"
    )
    assert result.reports[s.LEADS].excluded_rows == 3
    assert result.labels["not_labelled"] == {
        "not labelled: before observed_from": 3,
        "not labelled: horizon not elapsed": 0,
    }


def test_naive_observation_bounds_are_read_in_the_ingest_time_zone():
    settings = IngestSettings(timezone="Europe/Berlin", reference_time="2024-06-01")
    result = ingest(spec={**OUTCOMES, "observed_until": "2024-06-01"}, settings=settings)
    assert result.labels["observed_until"] == "2024-05-31T22:00:00+00:00"


def test_bad_outcome_rows_are_quarantined_with_column_and_row():
    outcomes = pd.DataFrame({
        "mql_id": ["m1", "m9", "m2", "m3", "m4", "m4", "m5", None, "m6"],
        "won_date": [
            "2024-01-20", "2024-01-20", "not a date", "2023-12-31 10:00:00", "2024-01-12", "2024-01-13",
            "2024-01-20", "2024-01-20", "",
        ],
    })  # fmt: skip
    leads = raw_leads()
    leads.loc[4, "first_contact"] = "yesterday"  # m5 is quarantined itself
    result = ingest(leads=leads, outcomes=outcomes, spec={**OUTCOMES, "observed_until": "2024-06-01"})
    assert reasons(result, "outcomes") == {
        2: "mql_id m9 not in leads",
        3: "won_date: 'not a date' is not an ISO 8601 timestamp",
        4: "won_date 2023-12-31T10:00:00Z is before the lead's first_contact 2024-01-01T00:00:00Z",
        6: "duplicate mql_id m4, kept source row 5",
        7: "mql_id m5 was quarantined in leads",
        8: "mql_id: missing value",
        9: "won_date: missing value",
    }
    report = result.reports["outcomes"]
    assert report.accepted_rows + report.quarantined_rows == report.input_rows == 9
    assert report.collateral_rows == 1  # the outcome of m5, whose lead was quarantined
    # a lead whose only outcome row was rejected has no known label: quarantined, never guessed 0
    assert reasons(result, s.LEADS) == {
        2: "outcome row quarantined (outcomes source row 3)",
        3: "outcome row quarantined (outcomes source row 4)",
        5: "first_contact: 'yesterday' is not an ISO 8601 timestamp",
        6: "outcome row quarantined (outcomes source row 9)",
    }
    leads_report = result.reports[s.LEADS]
    assert leads_report.collateral_rows == 3 and leads_report.bad_rows == 1
    table = result.tables[s.LEADS]
    assert dict(zip(table[s.LEAD_ID], table[LABEL], strict=True)) == {"m1": 1, "m4": 1}


def test_too_many_bad_outcome_rows_stop_the_run_naming_the_file(tmp_path: Path):
    bad = pd.DataFrame({"mql_id": ["m1", "x1", "x2"], "won_date": ["2024-01-02", "2024-01-02", "2024-01-02"]})
    result = ingest(
        outcomes=bad,
        outcomes_source="csv file deals.csv",
        outcomes_quarantine_path=str(tmp_path / "outcomes.parquet"),
    )
    with pytest.raises(ContractError, match=r"outcomes from csv file deals\.csv: 2 of 3 rows .*not in leads"):
        check_bad_shares(result, SETTINGS)


def test_ingest_stage_reads_the_outcomes_table_and_records_the_labels(tmp_path: Path):
    raw_leads().to_csv(tmp_path / "mqls.csv", index=False)
    outcomes = raw_outcomes()
    outcomes.loc[2, "won_date"] = "someday"
    outcomes.to_csv(tmp_path / "deals.csv", index=False)
    data = {
        "name": "tiny",
        "kind": "flat",
        "reference_time": "2024-06-01",
        "max_bad_share": 0.5,
        "table": {"format": "csv", "path": str(tmp_path / "mqls.csv")},
        "contract": CONTRACT,
        "outcomes": {"table": {"format": "csv", "path": str(tmp_path / "deals.csv")}, **OUTCOMES},
    }
    record = ingest_stage(data, tmp_path / "out")
    assert set(record.tables) == {s.LEADS, "outcomes"}
    deals = record.tables["outcomes"]
    assert deals["source"] == f"csv file {tmp_path / 'deals.csv'}"
    assert deals["reasons"] == {"won_date: not a timestamp": 1}
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine" / "outcomes.parquet")
    assert quarantine[[SOURCE_ROW, "won_date"]].values.tolist() == [[3, "someday"]]
    leads = record.tables[s.LEADS]
    assert leads["accepted_rows"] + leads["quarantined_rows"] == leads["input_rows"] == 6
    assert leads["excluded_rows"] == 0  # m6: the data ends on its first contact, so it is open
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"]["horizon_days"] == 30
    assert manifest["labels"]["not_labelled"]["not labelled: horizon not elapsed"] == 0
    assert manifest["open_rows"][s.LEADS]["rows"] == manifest["labels"]["open_leads"] == 1
    written = pd.read_parquet(tmp_path / "out" / "leads.parquet")
    assert "business_segment" not in written and LABEL in written


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("contract", "outcomes", "message"),
    [
        ({**CONTRACT, "target": "won", "positive": [1]}, OUTCOMES, "label comes from outcomes"),
        ({"id": "mql_id", "order": "n"}, OUTCOMES, "needs its own 'time' column"),
        ({**CONTRACT, "id": "source_row"}, OUTCOMES, "needs an id column"),
        (CONTRACT, {**OUTCOMES, "horizon": 30}, "unknown outcomes key"),
        (CONTRACT, {"id": "mql_id", "time": "won_date"}, "needs 'horizon_days'"),
        (CONTRACT, {**OUTCOMES, "horizon_days": 0}, "positive number"),
        (CONTRACT, {**OUTCOMES, "observed_from": "2024-02-01", "observed_until": "2024-01-01"}, "before"),
        (CONTRACT, None, "needs 'target'"),
    ],
)
def test_outcome_config_mistakes_are_named(contract, outcomes, message):
    with pytest.raises(LeadmlError, match=message):
        flat_contract(contract, outcomes)


def test_an_outcomes_table_needs_outcomes_in_the_contract_and_back():
    with pytest.raises(ContractError, match="no outcomes table"):
        ingest_flat(raw_leads(), flat_contract(CONTRACT, OUTCOMES), SETTINGS)
    contract = flat_contract(
        {"id": "mql_id", "time": "first_contact", "target": "origin", "positive": ["email"]}
    )
    with pytest.raises(ContractError, match="has a target column"):
        ingest_flat(raw_leads(), contract, SETTINGS, outcomes=raw_outcomes())


# --------------------------------------------------------------------------- per-column missing values
def test_a_columns_own_missing_values_are_missing_in_that_column_only():
    raw = pd.DataFrame({
        "pdays": ["-1", "12", "-1.0", " -1 ", "x"],
        "previous": ["-1", "0", "2", "1", "0"],
        "poutcome": ["unknown", "success", "Unknown", "failure", "other"],
        "job": ["unknown", "admin.", "retired", "unknown", "student"],
        "y": ["no", "yes", "no", "no", "yes"],
    })  # fmt: skip
    config = {
        "id": "source_row", "target": "y", "positive": ["yes"], "order": "source_row",
        "numeric": ["pdays", "previous"], "categorical": ["poutcome", "job"],
        "missing_values": {"pdays": [-1], "poutcome": ["unknown"]},
    }  # fmt: skip
    result = ingest_flat(raw, flat_contract(config), SETTINGS, enforce_bad_share=False)
    table = result.tables[s.LEADS]
    assert table["pdays"].tolist()[:4] == pytest.approx([np.nan, 12.0, np.nan, np.nan], nan_ok=True)
    assert table["previous"].tolist()[0] == -1.0  # another column's -1 is a number
    assert table["poutcome"].isna().tolist()[:4] == [True, False, True, False]
    assert "unknown" in set(table["job"].astype("str"))  # not declared missing for job
    assert reasons(result, s.LEADS) == {5: "pdays: 'x' is not a number"}


def test_numeric_missing_values_match_numbers_from_parquet_too():
    spec = ColumnSpec("pdays", "integer", missing_values=("-1",))
    typed, problems = parse_column(pd.Series([-1, 5, -1, None], dtype="Int64"), spec, SETTINGS)
    assert typed.isna().tolist() == [True, False, True, True] and problems == []


def test_missing_values_must_name_a_declared_column_and_fit_its_type():
    config = {"id": "source_row", "target": "y", "positive": ["yes"], "numeric": ["pdays"]}
    with pytest.raises(LeadmlError, match=r"undeclared column.*pday"):
        flat_contract({**config, "missing_values": {"pday": [-1]}})
    with pytest.raises(LeadmlError, match="must be numbers"):
        flat_contract({**config, "missing_values": {"pdays": ["never"]}})


# --------------------------------------------------------------------------- Excel and CSV exports
def crm_export() -> pd.DataFrame:
    """A flat export as a spreadsheet holds it: numbers, dates and text cells, some empty or bad."""
    return pd.DataFrame({
        "Lead ID": [1001, 1002, 1003, 1004, 1005, 1006],
        # naive local times: read in the ingest time zone, from text or from a date cell alike
        "Created Date": pd.to_datetime([
            "2024-01-02 09:30", "2024-01-03 14:00", "2024-02-01 08:15", "2024-02-10 17:45", None,
            "2024-03-31 02:30",  # no such local time in Berlin (clocks go forward): quarantined
        ]),
        "Status": ["Won", "Lost", "lost", "Won", "Lost", "Lost"],
        "Deal Size": [1500.5, None, 20.0, 7.0, 3.0, 1.0],
        "Web Visits": [12, "twelve", 3, 0, 5, 2],  # a number column with one text cell
        "Industry": ["Software", "retail", None, "Retail ", "software", "NA"],
    })  # fmt: skip


def ingest_export(tmp_path: Path, table: dict, name: str) -> IngestSummary:
    data = {
        "name": name,
        "kind": "flat",
        "timezone": "Europe/Berlin",
        "reference_time": "2024-06-01",
        "max_bad_share": 0.5,
        "table": table,
        "contract": {
            "id": "Lead ID",
            "target": "Status",
            "positive": ["Won"],
            "negative": ["Lost"],
            "time": "Created Date",
            "numeric": ["Deal Size", "Web Visits"],
            "categorical": ["Industry"],
        },
    }
    return ingest_stage(data, tmp_path / name)


def test_an_xlsx_export_ingests_like_the_same_export_as_csv(tmp_path: Path):
    export = crm_export()
    csv_path, xlsx_path = tmp_path / "leads.csv", tmp_path / "leads.xlsx"
    export.to_csv(csv_path, index=False)  # dates as "2024-01-02 09:30:00", as a CSV export has them
    with pd.ExcelWriter(xlsx_path, engine="openpyxl") as writer:
        pd.DataFrame({"note": ["a cover sheet"]}).to_excel(writer, sheet_name="About", index=False)
        export.to_excel(writer, sheet_name="Leads", index=False)
    from_csv = ingest_export(tmp_path, {"format": "csv", "path": str(csv_path)}, "from_csv")
    from_xlsx = ingest_export(tmp_path, {"path": str(xlsx_path), "sheet": "Leads"}, "from_xlsx")

    csv_leads = pd.read_parquet(tmp_path / "from_csv" / "leads.parquet")
    xlsx_leads = pd.read_parquet(tmp_path / "from_xlsx" / "leads.parquet")
    pd.testing.assert_frame_equal(xlsx_leads, csv_leads)
    assert csv_leads[s.LEAD_ID].tolist() == ["1001", "1003", "1004"]
    assert csv_leads[s.AS_OF].tolist()[0] == pd.Timestamp("2024-01-02 08:30", tz="UTC")
    assert csv_leads["Web Visits"].tolist() == [12.0, 3.0, 0.0]
    assert csv_leads["Deal Size"].tolist()[1:] == [20.0, 7.0]
    assert csv_leads["Industry"].tolist() == ["software", np.nan, "retail"]
    quarantined = [
        pd.read_parquet(tmp_path / name / "quarantine" / "leads.parquet")[[SOURCE_ROW, REASON]]
        for name in ("from_csv", "from_xlsx")
    ]
    pd.testing.assert_frame_equal(quarantined[1], quarantined[0])
    assert dict(quarantined[0].itertuples(index=False)) == {
        2: "Web Visits: 'twelve' is not a number",
        5: "Created Date: missing value",
        6: "Created Date: '2024-03-31 02:30:00' is not a valid local time in Europe/Berlin",
    }
    for key in ("input_rows", "accepted_rows", "quarantined_rows", "reasons", "output_fingerprint"):
        assert from_xlsx.tables[s.LEADS][key] == from_csv.tables[s.LEADS][key], key
    assert from_xlsx.tables[s.LEADS]["source"] == f"xlsx file {xlsx_path} (sheet 'Leads')"
    assert from_xlsx.tables[s.LEADS]["source_fingerprint"] == fingerprint_file(xlsx_path)


def test_leadml_ingest_stops_on_a_semicolon_file_with_one_line_and_exit_1(tmp_path: Path):
    """A user's flat config (found through hydra.searchpath) on a file separated by ';'."""
    export = tmp_path / "exports" / "leads.csv"
    export.parent.mkdir()
    crm_export().drop(columns=["Web Visits"]).to_csv(export, index=False, sep=";")
    config_dir = tmp_path / "my_configs"
    (config_dir / "data").mkdir(parents=True)
    (config_dir / "data" / "my_leads.yaml").write_text(
        "name: my_leads\n"
        "kind: flat\n"
        f"table: {{format: csv, path: {export}}}\n"
        "contract:\n"
        "  id: Lead ID\n"
        "  target: Status\n"
        "  positive: [Won]\n"
        "  negative: [Lost]\n"
        "  time: Created Date\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "leadml-ingest"),
            f"hydra.searchpath=[file://{config_dir}]",
            "data=my_leads",
            f"paths.root={tmp_path / 'project'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == LeadmlError.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"leadml-ingest: error: {export}: read 1 column with sep ',' but the header looks separated by "
        """';' ("Lead ID;Created Date;Status..."): set sep: ";" in the source"""
    ]


FUNNEL_CONFIG = """
name: funnel
kind: flat
table: {format: csv, path: exports/mqls.csv}
contract:
  id: mql_id
  time: first_contact_date
  categorical: [origin]
outcomes:
  table: {format: csv, path: exports/won_deals.csv}
  id: mql_id
  time: won_date
  horizon_days: 30
families: {origin: source}
"""


def funnel_exports(n: int = 1500, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MQLs over a year and their won deals; the export is taken 10 days after the last MQL."""
    rng = np.random.default_rng(seed)
    origin = rng.choice(["referral", "paid_search", "social"], n)
    first = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 365, n)), unit="D")
    odds = np.select([origin == "referral", origin == "paid_search"], [0.45, 0.2], 0.08)
    won = rng.random(n) < odds
    won_at = first + pd.to_timedelta(rng.integers(1, 25, n), unit="D")
    export_day = first.max() + pd.Timedelta(days=10)
    won &= won_at <= export_day  # what the CRM knows on the day of the export
    mqls = pd.DataFrame(
        {
            "mql_id": [f"M{i:05d}" for i in range(n)],
            "first_contact_date": first.strftime("%Y-%m-%d"),
            "origin": origin,
        }
    )
    deals = pd.DataFrame(
        {"mql_id": mqls["mql_id"][won], "won_date": won_at[won].strftime("%Y-%m-%d %H:%M:%S")}
    )
    return mqls, deals


def test_a_funnel_labelled_by_won_deals_scores_its_leads_whose_window_is_still_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir

    from factories import LENIENT_GATE, QUICK, local_tracking, user_configs
    from leadml.cli import CONFIG_DIR, run_score, run_train

    monkeypatch.chdir(tmp_path)
    mqls, deals = funnel_exports()
    (tmp_path / "exports").mkdir()
    mqls.to_csv(tmp_path / "exports" / "mqls.csv", index=False)
    deals.to_csv(tmp_path / "exports" / "won_deals.csv", index=False)
    folder = user_configs(tmp_path, FUNNEL_CONFIG, name="funnel")
    overrides = [f"hydra.searchpath=[file://{folder}]", "data=funnel", f"paths.root={tmp_path}"]
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        trained = run_train(compose("train", [*overrides, *QUICK, *LENIENT_GATE]))
        assert trained.promoted
        scored = run_score(compose("score", [*overrides, "score.as_of=latest"]))
    end = max(pd.Timestamp(mqls["first_contact_date"].max()), pd.Timestamp(deals["won_date"].max()))
    young = pd.to_datetime(mqls["first_contact_date"]) + pd.Timedelta(days=30) > end
    still_open = mqls.loc[young & ~mqls["mql_id"].isin(deals["mql_id"]), "mql_id"]
    rows = pd.read_parquet(scored.output)
    assert len(still_open) > 20 and sorted(rows["lead_id"]) == sorted(still_open)
    referral = rows["lead_id"].isin(mqls.loc[mqls["origin"] == "referral", "mql_id"])
    assert rows.loc[referral, "probability"].mean() > rows.loc[~referral, "probability"].mean()
