"""Cross-table CRM rules, flat tables with a target, and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leadml.data import schema as s
from leadml.data.contracts import REASON, SOURCE_ROW, IngestSettings, crm_contracts, flat_contract
from leadml.data.flat import ingest_flat
from leadml.data.ingest import (
    LABEL,
    ORDER_KEY,
    IngestResult,
    check_bad_shares,
    frame_fingerprint,
    ingest_crm,
    manifest,
)
from leadml.errors import ContractError, LeadmlError

SETTINGS = IngestSettings(reference_time="2024-06-01T00:00:00Z")
UNKNOWN_ACCOUNT = "account_id not in accounts (lead kept, firmographics missing)"
FEB, MAR, APR = "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"
CONTRACTS = crm_contracts()


def raw_crm() -> dict[str, pd.DataFrame]:
    """A small CRM export as text, with one of each cross-table problem."""
    return {
        s.ACCOUNTS: pd.DataFrame({
            s.ACCOUNT_ID: ["A1", "A2"], s.INDUSTRY: ["Software", "Retail"], s.EMPLOYEES: ["120", "8"],
        }),
        s.LEADS: pd.DataFrame({
            s.LEAD_ID: ["L1", "L2", "L3", "L4", "L5"],
            s.CREATED_AT: ["2024-01-01T09:00:00Z"] * 5,
            s.ACCOUNT_ID: ["A1", "A2", "A1", "A9", None],  # A9 is unknown: the lead stays
            s.EMAIL: ["a@x.io", None, None, None, None],
        }),
        s.OUTCOMES: pd.DataFrame({
            s.LEAD_ID: ["L1", "L2", "L999", "L5"],  # L3 and L4 have no outcome row: open
            s.STATUS: ["Closed Won", "lost", "won", "open"],
            s.CLOSED_AT: ["2024-03-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", None],
            s.DEAL_VALUE: ["5000", None, "10", None],
        }),
        s.ACTIVITIES: pd.DataFrame({
            s.EVENT_ID: ["E1", "E2", "E3", "E4"],
            s.LEAD_ID: ["L1", "L1", "L999", "L2"],
            s.TIMESTAMP: ["2024-01-02T10:00:00Z", "2023-12-31T10:00:00Z", "2024-01-02T10:00:00Z",
                          "2024-01-03T10:00:00+01:00"],
            s.ACTIVITY_TYPE: ["page_view", "Email Open", "call", "demo"],
            s.PAGE_CATEGORY: ["pricing", None, None, None],
        }),
    }  # fmt: skip


def ingest(raw: dict[str, pd.DataFrame], **options) -> IngestResult:
    result = ingest_crm(raw, CONTRACTS, SETTINGS, **{"enforce_bad_share": False, **options})
    for table, report in result.reports.items():
        assert report.accepted_rows + report.quarantined_rows == report.input_rows == len(raw.get(table, []))
        assert len(result.quarantines[table]) == report.quarantined_rows
        assert len(result.tables[table]) == report.accepted_rows + report.added_rows
    return result


def reasons(result: IngestResult, table: str) -> dict[int, str]:
    quarantine = result.quarantines[table]
    return dict(zip(quarantine[SOURCE_ROW], quarantine[REASON], strict=True))


def test_events_and_outcomes_of_unknown_leads_are_quarantined():
    result = ingest(raw_crm())
    assert reasons(result, s.OUTCOMES) == {3: "lead_id L999 not in leads"}
    assert reasons(result, s.ACTIVITIES) == {3: "lead_id L999 not in leads"}
    assert result.reports[s.ACTIVITIES].reason_counts == {"lead_id not in leads": 1}


def test_a_lead_with_an_unknown_account_is_kept_and_counted():
    result = ingest(raw_crm())
    assert "L4" in set(result.tables[s.LEADS][s.LEAD_ID])
    assert result.reports[s.LEADS].warnings == {UNKNOWN_ACCOUNT: 1}


def test_leads_without_an_outcome_row_are_open_and_counted():
    result = ingest(raw_crm())
    outcomes = result.tables[s.OUTCOMES].set_index(s.LEAD_ID)
    assert outcomes[s.STATUS].astype(str).to_dict() == {"L1": "won", "L2": "lost", "L5": "open", "L3": "open",
                                                         "L4": "open"}  # fmt: skip
    assert outcomes.loc[["L3", "L4"], s.CLOSED_AT].isna().all()
    report = result.reports[s.OUTCOMES]
    assert report.added_rows == 2
    assert report.warnings == {"leads without an outcome row, set to open": 2}
    assert result.tables[s.OUTCOMES][s.STATUS].dtype == pd.CategoricalDtype(pd.Index(s.STATUSES, dtype="str"))


def test_status_and_closed_at_must_agree():
    raw = raw_crm()
    raw[s.OUTCOMES][s.CLOSED_AT] = [None, FEB, MAR, APR]
    result = ingest(raw)
    assert reasons(result, s.OUTCOMES) == {
        1: "status won without closed_at",
        3: "lead_id L999 not in leads",
        4: "status open with closed_at",
    }


def test_a_lead_whose_only_outcome_row_is_broken_is_quarantined_with_its_events():
    raw = raw_crm()
    raw[s.OUTCOMES][s.CLOSED_AT] = [None, FEB, MAR, None]
    result = ingest(raw)
    # L1 was won, but without closed_at we cannot say when: guessing "open" would teach a wrong label
    assert reasons(result, s.LEADS) == {1: "outcome row quarantined (outcomes source row 1)"}
    assert "L1" not in set(result.tables[s.OUTCOMES][s.LEAD_ID])
    assert reasons(result, s.ACTIVITIES) == {
        1: "lead_id L1 was quarantined in leads", 2: "lead_id L1 was quarantined in leads",
        3: "lead_id L999 not in leads",
    }  # fmt: skip
    assert result.reports[s.LEADS].reason_counts == {"outcome row quarantined": 1}
    # rows lost only because the row they belong to was lost do not count against max_bad_share
    assert result.reports[s.LEADS].collateral_rows == 1
    assert result.reports[s.ACTIVITIES].collateral_rows == 2
    assert result.reports[s.ACTIVITIES].bad_rows == 1


def test_an_unparseable_closed_at_is_reported_once_not_as_a_missing_one():
    raw = raw_crm()
    raw[s.OUTCOMES][s.CLOSED_AT] = ["soon", FEB, MAR, None]
    result = ingest(raw)
    assert reasons(result, s.OUTCOMES)[1] == "closed_at: 'soon' is not an ISO 8601 timestamp"


def test_rows_of_quarantined_leads_are_collateral_not_bad():
    raw = raw_crm()
    raw[s.LEADS][s.CREATED_AT] = ["2024-01-01T09:00:00Z"] * 4 + ["someday"]
    raw[s.ACTIVITIES][s.LEAD_ID] = ["L5", "L5", "L5", "L1"]
    result = ingest(raw)
    assert reasons(result, s.OUTCOMES)[4] == "lead_id L5 was quarantined in leads"
    report = result.reports[s.ACTIVITIES]
    assert (report.quarantined_rows, report.collateral_rows, report.bad_share) == (3, 3, 0.0)
    check_bad_shares(result, IngestSettings(max_bad_share=0.3))  # leads: 1 of 5; outcomes: L999 only


def test_closed_before_created_is_quarantined():
    raw = raw_crm()
    raw[s.OUTCOMES][s.CLOSED_AT] = ["2023-12-01T00:00:00Z", FEB, MAR, None]
    result = ingest(raw)
    assert reasons(result, s.OUTCOMES)[1] == (
        "closed_at 2023-12-01T00:00:00Z is before the lead's created_at 2024-01-01T09:00:00Z"
    )


def test_activities_before_the_lead_was_created_are_kept_and_counted():
    result = ingest(raw_crm())
    assert "E2" in set(result.tables[s.ACTIVITIES][s.EVENT_ID])
    assert result.reports[s.ACTIVITIES].warnings == {"activities before the lead's created_at (kept)": 1}


def test_accepted_crm_tables_have_stable_dtypes():
    tables = ingest(raw_crm()).tables
    assert {column: str(dtype) for column, dtype in tables[s.ACTIVITIES].dtypes.items()} == {
        s.EVENT_ID: "str", s.LEAD_ID: "str", s.TIMESTAMP: "datetime64[us, UTC]",
        s.ACTIVITY_TYPE: "category", s.PAGE_CATEGORY: "category",
    }  # fmt: skip
    activity_types = tables[s.ACTIVITIES][s.ACTIVITY_TYPE].astype(str).tolist()
    assert activity_types == ["page_view", "email_open", "demo_request"]
    assert tables[s.ACTIVITIES][s.TIMESTAMP].iloc[2] == pd.Timestamp("2024-01-03T09:00:00Z")
    assert str(tables[s.ACCOUNTS][s.EMPLOYEES].dtype) == "Int64"
    assert str(tables[s.OUTCOMES][s.DEAL_VALUE].dtype) == "float64"
    assert str(tables[s.LEADS][s.CREATED_AT].dtype) == "datetime64[us, UTC]"


def test_missing_accounts_and_activities_are_empty_tables():
    raw = raw_crm()
    del raw[s.ACCOUNTS], raw[s.ACTIVITIES]
    result = ingest(raw)
    assert result.tables[s.ACTIVITIES].empty
    assert result.reports[s.LEADS].warnings[UNKNOWN_ACCOUNT] == 4
    with pytest.raises(ContractError, match="missing CRM table"):
        ingest_crm({s.LEADS: raw[s.LEADS]}, CONTRACTS, SETTINGS)


def test_the_bad_share_is_checked_per_table_after_the_cross_table_rules():
    with pytest.raises(ContractError) as error:
        ingest_crm(raw_crm(), CONTRACTS, SETTINGS, sources={s.OUTCOMES: "csv file outcomes.csv"},
                   quarantine_paths={s.OUTCOMES: "q/outcomes.parquet"})  # fmt: skip
    assert "outcomes from csv file outcomes.csv: 1 of 4 rows (25.0%)" in str(error.value)
    assert "q/outcomes.parquet" in str(error.value)
    assert "lead_id not in leads (1)" in str(error.value)
    # the entry point can write the quarantine first and then check
    result = ingest(raw_crm())
    with pytest.raises(ContractError):
        check_bad_shares(result, SETTINGS)
    check_bad_shares(result, IngestSettings(max_bad_share=0.5))


# --------------------------------------------------------------------------- flat tables
def raw_flat() -> pd.DataFrame:
    return pd.DataFrame({
        "Prospect ID": ["p1", "p2", "p3", "p4", "p5", "p6"],
        "Lead Number": ["101", "102", "103", "104", "105", "106"],
        "Lead Source": ["Google", "Olark Chat", "google", "Select", "Direct", "Google"],
        "TotalVisits": ["3", "", "7", "1", "0", "2"],
        "Converted": ["1", "0", "1", None, "0", "2"],
        "Tags": ["Will revert", "Ringing", "Closed", "", "", ""],
        "Email": ["a@x", "b@x", "c@x", "d@x", "e@x", "f@x"],
    })  # fmt: skip


FLAT = {
    "id": "Prospect ID", "target": "Converted", "positive": [1], "negative": [0], "order": "Lead Number",
    "categorical": ["Lead Source"], "numeric": ["TotalVisits"], "personal": ["Email"],
    "drop": ["Tags", "Gone"],
}  # fmt: skip


def test_flat_table_with_a_target_becomes_leads_with_labels():
    settings = IngestSettings(reference_time="2024-06-01", missing_markers=("Select",))
    contract = flat_contract({**FLAT, "open": [2]})
    result = ingest_flat(raw_flat(), contract, settings, enforce_bad_share=False)
    table, report = result.tables[s.LEADS], result.reports[s.LEADS]
    assert report.accepted_rows + report.quarantined_rows == report.input_rows == 6
    assert list(table.columns[:3]) == [s.LEAD_ID, LABEL, ORDER_KEY]
    assert table[s.LEAD_ID].tolist() == ["p1", "p2", "p3", "p5"]
    assert table[LABEL].tolist() == [1, 0, 1, 0]
    assert table[LABEL].dtype == "int64"
    assert table[ORDER_KEY].tolist() == [101.0, 102.0, 103.0, 105.0]
    assert table["Lead Source"].astype(str).tolist() == ["google", "olark_chat", "google", "direct"]
    assert np.isnan(table["TotalVisits"].iloc[1])
    assert "Converted" not in table and "Tags" not in table
    assert report.dropped_columns == ("Tags",)
    assert report.personal_columns == ("Email",)
    assert reasons(result, s.LEADS) == {4: "Converted: missing value"}
    # the open lead is validated like the others and kept apart, without a label
    open_rows = result.open_rows[s.LEADS]
    assert open_rows[s.LEAD_ID].tolist() == ["p6"] and LABEL not in open_rows
    assert open_rows["Lead Source"].astype(str).tolist() == ["google"]
    assert open_rows[ORDER_KEY].tolist() == [106.0]


def test_a_target_value_declared_nowhere_stops_with_each_value_and_its_count():
    raw = pd.concat([raw_flat(), raw_flat().assign(**{"Prospect ID": list("abcdef")})], ignore_index=True)
    with pytest.raises(ContractError) as error:
        ingest_flat(raw, flat_contract(FLAT), SETTINGS, enforce_bad_share=False)
    assert str(error.value) == (
        "leads from the flat table: target column Converted has values under none of contract.positive, "
        "contract.negative and contract.open: '2' (2 rows); add each to contract.positive (converted), "
        "contract.negative (did not convert) or contract.open (still open: scored every night, never a label)"
    )


def test_flat_target_without_negatives_takes_the_one_other_value_as_negative():
    # YAML reads an unquoted yes as True
    config = {"id": "source_row", "target": "y", "positive": [True], "order": "source_row"}
    raw = pd.DataFrame({"y": ["yes", "no", "No", None], "age": ["30", "41", "25", "50"]})
    result = ingest_flat(raw, flat_contract(config), SETTINGS, enforce_bad_share=False)
    table = result.tables[s.LEADS]
    assert table[LABEL].tolist() == [1, 0, 0]
    assert table[s.LEAD_ID].tolist() == ["1", "2", "3"]
    assert table[ORDER_KEY].tolist() == [1.0, 2.0, 3.0]
    assert table["age"].tolist() == ["30", "41", "25"]  # undeclared: passed through unchanged
    assert reasons(result, s.LEADS) == {4: "y: missing value"}
    assert result.labels == {
        "negative_taken": "y: 'no' (2 rows) taken as the negative value, "
        "the only one besides contract.positive"
    }
    # two other values: which one is a loss (and which still open) is never guessed
    raw = pd.DataFrame({"Status": ["Won", "Lost", "Open", "Lost"]})
    config = {"id": "source_row", "target": "Status", "positive": ["Won"], "order": "source_row"}
    with pytest.raises(ContractError, match=r"has 2 values besides contract.positive and no "
                       r"contract.negative: 'Lost' \(2 rows\), 'Open' \(1 row\); add each"):  # fmt: skip
        ingest_flat(raw, flat_contract(config), SETTINGS, enforce_bad_share=False)
    table = ingest_flat(raw, flat_contract({**config, "open": ["open"]}), SETTINGS).tables[s.LEADS]
    assert table[LABEL].tolist() == [1, 0, 0]


def test_a_target_value_under_two_keys_is_a_config_error():
    config = {**FLAT, "target": "Status", "positive": ["Won"], "negative": ["Lost"], "open": ["lost"]}
    with pytest.raises(LeadmlError, match=r"'lost' is under both contract\.negative and contract\.open"):
        flat_contract(config)


def test_flat_time_column_becomes_a_utc_as_of():
    config = {"id": "mql_id", "target": "won", "positive": ["yes"], "negative": ["no"], "time": "contact"}
    contact = ["2018-02-01", "2018-03-05"]
    raw = pd.DataFrame({"mql_id": ["m1", "m2"], "won": ["Yes", "no"], "contact": contact})
    result = ingest_flat(raw, flat_contract(config), IngestSettings(reference_time="2024-01-01"))
    table = result.tables[s.LEADS]
    assert table[s.AS_OF].tolist() == [pd.Timestamp("2018-02-01T00:00Z"), pd.Timestamp("2018-03-05T00:00Z")]
    assert "contact" not in table
    assert table[LABEL].tolist() == [1, 0]


# --------------------------------------------------------------------------- manifest
def test_manifest_is_json_and_fingerprints_follow_the_data():
    result = ingest(raw_crm())
    record = manifest(
        result,
        sources={table: f"csv file {table}.csv" for table in s.CRM_TABLES},
        source_fingerprints={table: "abc" for table in s.CRM_TABLES},
        output_paths={table: f"out/{table}.parquet" for table in s.CRM_TABLES},
        settings=SETTINGS,
        created_at=pd.Timestamp("2024-06-01", tz="UTC"),
    )
    decoded = json.loads(json.dumps(record, allow_nan=False))
    outcomes = decoded["tables"][s.OUTCOMES]
    assert (outcomes["input_rows"], outcomes["accepted_rows"], outcomes["quarantined_rows"]) == (4, 3, 1)
    assert outcomes["output_rows"] == 5
    assert outcomes["reasons"] == {"lead_id not in leads": 1}
    assert outcomes["output_path"] == "out/outcomes.parquet"
    assert decoded["settings"]["reference_time"] == "2024-06-01T00:00:00+00:00"
    leads = result.tables[s.LEADS]
    assert frame_fingerprint(leads) == frame_fingerprint(leads.copy())
    assert frame_fingerprint(leads) != frame_fingerprint(leads.iloc[:-1])
    assert outcomes["output_fingerprint"] == frame_fingerprint(result.tables[s.OUTCOMES])


def test_respelt_category_values_are_counted_with_examples_for_the_summary():
    from leadml.data.ingest import respelt_categories, respelt_sentence

    settings = IngestSettings(reference_time="2024-06-01", missing_markers=("Select",))
    contract = flat_contract({**FLAT, "categorical": ["Lead Source"]}).table
    respelt = respelt_categories(raw_flat(), contract, settings)
    # 'google' is stored as written; 'Select' is missing; the numeric target is not a category
    examples = {"Google": "google", "Olark Chat": "olark_chat", "Direct": "direct"}
    assert respelt == {"Lead Source": {"values": 3, "examples": examples}}
    assert respelt_sentence("leads", respelt) == (
        "leads: category values are stored trimmed, in lower case, separators as _ (points rules and "
        "filters use that spelling): Lead Source 'Google' -> 'google' (+2 more); all in the ingest manifest"
    )
