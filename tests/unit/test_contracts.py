"""Contract checks on single tables: every failure lands in quarantine with its reason, or raises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadml.data import schema as s
from leadml.data.contracts import (
    DEFAULT_SYNONYMS,
    REASON,
    SOURCE_ROW,
    TABLE,
    ColumnSpec,
    IngestSettings,
    TableContract,
    crm_contracts,
    flat_contract,
    normalise_token,
    with_limits,
)
from leadml.data.validation import ValidatedTable, validate_table
from leadml.errors import ContractError, LeadmlError

REFERENCE = "2024-06-01T00:00:00Z"
SETTINGS = IngestSettings(reference_time=REFERENCE)
CONTRACTS = crm_contracts()


def balanced(result: ValidatedTable, raw: pd.DataFrame) -> ValidatedTable:
    """The invariant of every validation: nothing dropped, nothing counted twice."""
    assert len(result.accepted) + len(result.quarantine) == len(raw)
    assert result.report.input_rows == len(raw)
    assert result.report.accepted_rows == len(result.accepted)
    assert result.report.quarantined_rows == len(result.quarantine)
    rows = np.concatenate([result.accepted_source_rows, result.quarantine[SOURCE_ROW].to_numpy()])
    assert sorted(rows.tolist()) == list(range(1, len(raw) + 1))
    return result


def validate(raw: pd.DataFrame, table: str, config: IngestSettings = SETTINGS, **options) -> ValidatedTable:
    return balanced(validate_table(raw, CONTRACTS[table], config, **options), raw)


def reasons(result: ValidatedTable) -> dict[int, str]:
    return dict(zip(result.quarantine[SOURCE_ROW], result.quarantine[REASON], strict=True))


def accounts(employees: list[str]) -> pd.DataFrame:
    return pd.DataFrame({s.ACCOUNT_ID: [f"A{i}" for i in range(len(employees))], s.EMPLOYEES: employees})


def leads(**columns: list) -> pd.DataFrame:
    count = len(next(iter(columns.values())))
    base = {s.LEAD_ID: [f"L{i}" for i in range(count)], s.CREATED_AT: ["2024-01-01T00:00:00Z"] * count}
    return pd.DataFrame({**base, **columns})


# --------------------------------------------------------------------------- missing columns
def test_missing_required_column_names_the_source_the_column_and_what_is_present():
    raw = pd.DataFrame({s.LEAD_ID: ["L1"], "created": ["2024-01-01"]})
    with pytest.raises(ContractError) as error:
        validate_table(raw, CONTRACTS[s.LEADS], SETTINGS, source="csv file /data/raw/leads.csv")
    message = str(error.value)
    assert "/data/raw/leads.csv" in message
    assert "missing required column(s) created_at" in message
    assert "present columns: lead_id, created" in message


def test_missing_optional_columns_are_added_as_typed_nulls_and_reported():
    result = validate(leads(source=["web"]), s.LEADS)
    assert result.accepted[s.ESTIMATED_DEAL_VALUE].isna().all()
    assert result.accepted[s.ESTIMATED_DEAL_VALUE].dtype == "float64"
    assert s.EMAIL in result.report.missing_optional_columns
    assert result.report.personal_columns == s.PERSONAL_DATA_COLUMNS


# --------------------------------------------------------------------------- wrong types
def test_text_in_a_number_column_is_quarantined_with_the_value_and_row():
    raw = accounts(["12"] * 30 + ["abc"])
    result = validate(raw, s.ACCOUNTS)
    assert reasons(result) == {31: "employees: 'abc' is not a number"}
    assert result.report.reason_counts == {"employees: not a number": 1}
    assert result.accepted[s.EMPLOYEES].dtype == "Int64"
    assert result.accepted[s.EMPLOYEES].tolist() == [12] * 30


def test_text_in_a_number_column_above_the_threshold_fails_with_a_clear_message():
    raw = accounts(["12", "abc", "n/a?", "7"] * 5)
    with pytest.raises(ContractError) as error:
        validate_table(raw, CONTRACTS[s.ACCOUNTS], SETTINGS, source="csv file accounts.csv",
                       quarantine_path="data/interim/x/quarantine/accounts.parquet")  # fmt: skip
    message = str(error.value)
    assert "accounts from csv file accounts.csv" in message
    assert "10 of 20 rows (50.0%)" in message
    assert "data/interim/x/quarantine/accounts.parquet" in message
    assert "employees: not a number (10)" in message


def test_the_threshold_is_a_share_of_input_rows():
    raw = accounts(["1"] * 95 + ["x"] * 5)
    validate(raw, s.ACCOUNTS)  # 5.0% is not above 5%
    with pytest.raises(ContractError, match=r"6\.0%"):
        validate_table(accounts(["1"] * 94 + ["x"] * 6), CONTRACTS[s.ACCOUNTS], SETTINGS)
    relaxed = IngestSettings(reference_time=REFERENCE, max_bad_share=0.1)
    validate(accounts(["1"] * 94 + ["x"] * 6), s.ACCOUNTS, relaxed)


def test_whole_numbers_and_ranges():
    raw = accounts(["3", "3.0", "2.5", "-1", " 40 ", "1e3", "inf"])
    result = validate(raw, s.ACCOUNTS, enforce_bad_share=False)
    assert result.accepted[s.EMPLOYEES].tolist() == [3, 3, 40, 1000]
    assert reasons(result) == {
        3: "employees: '2.5' is not a whole number",
        4: "employees: '-1' is below the minimum 0",
        7: "employees: 'inf' is not a number",
    }


def test_native_numbers_from_parquet_or_sql_are_checked_too():
    raw = pd.DataFrame({s.ACCOUNT_ID: ["A1", "A2", "A3"], s.EMPLOYEES: [5.0, np.nan, -2.0]})
    result = validate(raw, s.ACCOUNTS, enforce_bad_share=False)
    assert result.accepted[s.EMPLOYEES].tolist() == [5, pd.NA]
    assert reasons(result) == {3: "employees: '-2' is below the minimum 0"}


def test_boolean_columns_read_common_spellings():
    contract = TableContract("t", (ColumnSpec("id", nullable=False), ColumnSpec("flag", "boolean")), ("id",))
    raw = pd.DataFrame({"id": list("abcdefg"), "flag": ["Yes", "no", "TRUE", "0", "", "maybe", "Y"]})
    result = balanced(validate_table(raw, contract, SETTINGS, enforce_bad_share=False), raw)
    assert result.accepted["flag"].dtype == "boolean"
    assert result.accepted["flag"].tolist() == [True, False, True, False, pd.NA, True]
    assert reasons(result) == {6: "flag: 'maybe' is not a boolean (true/false, yes/no, 1/0)"}


# --------------------------------------------------------------------------- categories
def test_unknown_outcome_status_is_quarantined_after_normalisation():
    raw = pd.DataFrame({
        s.LEAD_ID: ["L1", "L2", "L3", "L4"],
        s.STATUS: ["Closed Won", " LOST ", "teleported", "Open"],
        s.CLOSED_AT: ["2024-02-01", "2024-02-01", "2024-02-01", None],
    })  # fmt: skip
    result = validate(raw, s.OUTCOMES, enforce_bad_share=False)
    assert result.accepted[s.STATUS].astype(str).tolist() == ["won", "lost", "open"]
    assert reasons(result) == {3: "status: 'teleported' is not one of won, lost, open"}
    assert list(result.accepted[s.STATUS].cat.categories) == list(s.STATUSES)


def test_unknown_activity_type_names_the_allowed_values():
    raw = pd.DataFrame({
        s.LEAD_ID: ["L1"] * 3, s.TIMESTAMP: ["2024-01-01T00:00:00Z"] * 3,
        s.ACTIVITY_TYPE: ["Page View", "teleport", "EmailOpen"],
    })  # fmt: skip
    result = validate(raw, s.ACTIVITIES, enforce_bad_share=False)
    allowed = ", ".join(s.ACTIVITY_TYPES)
    assert reasons(result) == {2: f"activity_type: 'teleport' is not one of {allowed}"}
    assert result.accepted[s.ACTIVITY_TYPE].astype(str).tolist() == ["page_view", "email_open"]


def test_synonyms_and_case_folding_with_config_extensions():
    config = IngestSettings(reference_time=REFERENCE, synonyms={"source": {"Google CPC": "Paid Search"}})
    raw = leads(
        source=["Paid Search", "PPC", " paid-search ", "google cpc", "PaidSearch", "Trade.Show", "Fresh"],
        country=["USA", "United Kingdom", "U.K.", "germany", "DE", "de", "Narnia"],
    )
    result = validate(raw, s.LEADS, config)
    expected_sources = ["paid_search"] * 5 + ["event", "fresh"]
    assert result.accepted[s.SOURCE].astype(str).tolist() == expected_sources
    assert result.accepted[s.COUNTRY].astype(str).tolist() == ["us", "gb", "gb", "de", "de", "de", "narnia"]
    # open categories keep only the values seen, sorted, so the dtype is stable across runs
    assert list(result.accepted[s.SOURCE].cat.categories) == ["event", "fresh", "paid_search"]


def test_normalise_token_and_default_synonyms_are_normalised():
    assert normalise_token("  Paid-Search.Ads ") == "paid_search_ads"
    for mapping in DEFAULT_SYNONYMS.values():
        for spelling, canonical in mapping.items():
            assert normalise_token(spelling) == spelling
            assert normalise_token(canonical) == canonical
    allowed = {s.STATUS: s.STATUSES, s.ACTIVITY_TYPE: s.ACTIVITY_TYPES, s.PAGE_CATEGORY: s.PAGE_CATEGORIES}
    for column, values in allowed.items():
        assert set(DEFAULT_SYNONYMS[column].values()) <= set(values)


def test_missing_markers_become_null_and_config_adds_more():
    raw = leads(job_title=["Select", "NA", " ", "CTO"], source=["select", "n/a", "", "Web"])
    plain = validate(raw, s.LEADS)
    assert plain.accepted[s.JOB_TITLE].tolist()[1:] == [np.nan, np.nan, "CTO"]
    assert plain.accepted[s.JOB_TITLE].iloc[0] == "Select"
    configured = validate(raw, s.LEADS, IngestSettings(reference_time=REFERENCE, missing_markers=("Select",)))
    assert configured.accepted[s.JOB_TITLE].isna().tolist() == [True, True, True, False]
    assert configured.accepted[s.SOURCE].isna().tolist() == [True, True, True, False]


def test_null_in_a_non_nullable_column_is_quarantined():
    raw = leads(created_at=["2024-01-01", "", None])
    result = validate(raw, s.LEADS, enforce_bad_share=False)
    assert reasons(result) == {2: "created_at: missing value", 3: "created_at: missing value"}


# --------------------------------------------------------------------------- duplicates
def test_duplicate_ids_keep_the_most_complete_row_then_the_first():
    raw = pd.DataFrame({
        s.LEAD_ID: ["L1", "L1", "L2", "L2", "L2"],
        s.CREATED_AT: ["2024-01-01"] * 5,
        s.JOB_TITLE: [None, "CTO", "CEO", "CFO", None],
    })  # fmt: skip
    result = validate(raw, s.LEADS, enforce_bad_share=False)
    assert result.accepted[s.JOB_TITLE].tolist() == ["CTO", "CEO"]
    assert reasons(result) == {
        1: "duplicate lead_id L1, kept source row 2",
        4: "duplicate lead_id L2, kept source row 3",
        5: "duplicate lead_id L2, kept source row 3",
    }
    assert result.report.reason_counts == {"duplicate lead_id": 3}


def test_a_broken_row_never_displaces_a_good_duplicate():
    raw = pd.DataFrame({
        s.LEAD_ID: ["L1", "L1"], s.CREATED_AT: ["not a date", "2024-01-01"], s.JOB_TITLE: ["CTO", None],
    })  # fmt: skip
    result = validate(raw, s.LEADS, enforce_bad_share=False)
    assert result.accepted_source_rows.tolist() == [2]
    assert reasons(result) == {1: "created_at: 'not a date' is not an ISO 8601 timestamp"}


def test_optional_unique_event_ids_may_be_missing_but_not_repeated():
    raw = pd.DataFrame({
        s.EVENT_ID: ["E1", None, "E1", None], s.LEAD_ID: ["L1"] * 4,
        s.TIMESTAMP: ["2024-01-01T00:00:00Z"] * 4, s.ACTIVITY_TYPE: ["call"] * 4,
    })  # fmt: skip
    result = validate(raw, s.ACTIVITIES, enforce_bad_share=False)
    assert reasons(result) == {3: "duplicate event_id E1, kept source row 1"}


def test_duplicate_rule_first_and_last():
    raw = pd.DataFrame({"id": ["a", "a", "a"], "x": [None, "full", None]})
    for rule, kept in (("first", 1), ("last", 3), ("most_complete", 2)):
        contract = TableContract("t", (ColumnSpec("id", nullable=False), ColumnSpec("x")), ("id",), rule)
        result = balanced(validate_table(raw, contract, SETTINGS, enforce_bad_share=False), raw)
        assert result.accepted_source_rows.tolist() == [kept]


# --------------------------------------------------------------------------- timestamps
def test_unparseable_and_future_timestamps_are_quarantined():
    raw = leads(created_at=["2024-01-01T10:00:00Z", "yesterday", "2024-02-30", "2030-01-01T00:00:00Z"])
    result = validate(raw, s.LEADS, enforce_bad_share=False)
    assert reasons(result) == {
        2: "created_at: 'yesterday' is not an ISO 8601 timestamp",
        3: "created_at: '2024-02-30' is not an ISO 8601 timestamp",
        4: "created_at: '2030-01-01T00:00:00Z' is in the future (after 2024-06-01T00:00:00+00:00)",
    }
    assert result.report.reason_counts == {"created_at: not a timestamp": 2, "created_at: in the future": 1}


def test_the_same_instant_written_three_ways_gives_the_same_utc_time():
    config = IngestSettings(reference_time=REFERENCE, timezone="Europe/Berlin")
    raw = leads(created_at=["2024-03-01T10:00:00+01:00", "2024-03-01T09:00:00Z", "2024-03-01 10:00:00"])
    result = validate(raw, s.LEADS, config)
    assert str(result.accepted[s.CREATED_AT].dtype) == "datetime64[us, UTC]"
    assert result.accepted[s.CREATED_AT].nunique() == 1
    assert result.accepted[s.CREATED_AT].iloc[0] == pd.Timestamp("2024-03-01T09:00:00Z")


def test_naive_text_is_utc_unless_a_time_zone_is_configured():
    raw = leads(created_at=["2024-01-10 12:00", "2024-01-10"])
    utc = validate(raw, s.LEADS).accepted[s.CREATED_AT]
    assert utc.tolist() == [pd.Timestamp("2024-01-10T12:00Z"), pd.Timestamp("2024-01-10T00:00Z")]
    york = validate(raw, s.LEADS, IngestSettings(reference_time=REFERENCE, timezone="America/New_York"))
    expected = [pd.Timestamp("2024-01-10T17:00Z"), pd.Timestamp("2024-01-10T05:00Z")]
    assert york.accepted[s.CREATED_AT].tolist() == expected


def test_real_datetime_columns_of_any_resolution_become_utc():
    aware = pd.Series(pd.to_datetime(["2024-03-01T10:00:00+01:00"] * 2, utc=True)).dt.as_unit("ns")
    naive = pd.Series(pd.to_datetime(["2024-03-01 10:00:00"] * 2)).dt.as_unit("s")
    config = IngestSettings(reference_time=REFERENCE, timezone="Europe/Berlin")
    for values in (aware, naive):
        result = validate(leads(created_at=values), s.LEADS, config)
        assert str(result.accepted[s.CREATED_AT].dtype) == "datetime64[us, UTC]"
        assert (result.accepted[s.CREATED_AT] == pd.Timestamp("2024-03-01T09:00:00Z")).all()


def test_local_times_that_do_not_exist_are_quarantined():
    config = IngestSettings(reference_time=REFERENCE, timezone="Europe/Berlin")
    raw = leads(created_at=["2024-03-31 02:30", "2024-03-31 03:30"])
    result = validate(raw, s.LEADS, config, enforce_bad_share=False)
    assert reasons(result) == {1: "created_at: '2024-03-31 02:30' is not a valid local time in Europe/Berlin"}


# --------------------------------------------------------------------------- quarantine frame
def test_quarantine_keeps_original_text_all_reasons_and_the_table():
    raw = pd.DataFrame({
        s.ACCOUNT_ID: ["A1", "A2"], s.EMPLOYEES: ["ten", "5"], s.FOUNDED_YEAR: ["1066", "2001"],
        "crm_note": ["keep me", "me too"],
    })  # fmt: skip
    result = validate(raw, s.ACCOUNTS, enforce_bad_share=False)
    row = result.quarantine.iloc[0]
    assert row[REASON] == "employees: 'ten' is not a number; founded_year: '1066' is below the minimum 1800"
    assert (row[s.EMPLOYEES], row["crm_note"]) == ("ten", "keep me")
    assert (row[SOURCE_ROW], row[TABLE]) == (1, "accounts")
    assert list(result.quarantine.columns) == [*raw.columns, SOURCE_ROW, REASON, TABLE]
    assert result.accepted["crm_note"].tolist() == ["me too"]  # undeclared columns pass through


def test_a_clean_table_has_an_empty_quarantine_with_the_same_columns():
    raw = accounts(["1", "2"])
    result = validate(raw, s.ACCOUNTS)
    assert result.quarantine.empty
    assert list(result.quarantine.columns) == [*raw.columns, SOURCE_ROW, REASON, TABLE]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["7", "0", "-3", "x", "", "2.5", " 12 ", "NA", "1e2"]), max_size=30),
       st.lists(st.sampled_from(["A1", "A2", "A3", "", " A1"]), max_size=30))  # fmt: skip
def test_accepted_plus_quarantined_is_always_the_input(employees, ids):
    size = min(len(employees), len(ids))
    raw = pd.DataFrame({s.ACCOUNT_ID: ids[:size], s.EMPLOYEES: employees[:size]}, dtype="str")
    result = validate(raw, s.ACCOUNTS, enforce_bad_share=False)
    assert result.accepted[s.ACCOUNT_ID].is_unique
    assert (result.quarantine[REASON].str.len() > 0).all()


# --------------------------------------------------------------------------- settings and config
def test_settings_from_mapping_rejects_unknown_keys_and_extends_defaults():
    config = IngestSettings.from_mapping({
        "timezone": "Europe/Berlin", "reference_time": None, "max_bad_share": 0.1,
        "synonyms": {"source": {"Adwords Campaign": "paid_search"}}, "missing_markers": ["Select"],
    })  # fmt: skip
    assert config.synonyms_for("source")["adwords_campaign"] == "paid_search"
    assert config.synonyms_for("source")["ppc"] == "paid_search"
    assert {"select", "", "na"} <= config.all_missing_markers()
    with pytest.raises(LeadmlError, match="unknown ingest setting"):
        IngestSettings.from_mapping({"time_zone": "UTC"})
    with pytest.raises(LeadmlError, match="unknown time zone"):
        IngestSettings.from_mapping({"timezone": "Mars/Olympus"})


def test_contracts_reject_inconsistent_declarations():
    with pytest.raises(LeadmlError):
        ColumnSpec("x", "float", allowed=("a",))
    with pytest.raises(LeadmlError):
        TableContract("t", (ColumnSpec("id"),), primary_key=("id",))  # a key must be non-nullable
    with pytest.raises(LeadmlError, match="unknown flat-table key"):
        flat_contract({"id": "id", "target": "y", "positive": [1], "taget": "y"})


def test_crm_contracts_accept_extra_declared_columns():
    contracts = crm_contracts({s.LEADS: [ColumnSpec("browser", "category", required=False)]})
    raw = leads(browser=["Chrome", "chrome "], campaign_code=["c-1", "c-2"])
    result = balanced(validate_table(raw, contracts[s.LEADS], SETTINGS), raw)
    assert result.accepted["browser"].astype(str).tolist() == ["chrome", "chrome"]
    assert result.accepted["campaign_code"].tolist() == ["c-1", "c-2"]
    assert result.report.passthrough_columns == ("campaign_code",)


def test_amounts_and_counts_beyond_plausible_are_quarantined_naming_the_bound() -> None:
    """1e308 is finite: accepted, it made the expected revenue infinite and a card of 300 digits."""
    raw = leads(**{s.ESTIMATED_DEAL_VALUE: ["5000", "1e308", "1e12", "1.5e12"]})
    result = validate(raw, s.LEADS, enforce_bad_share=False)
    assert list(result.accepted[s.ESTIMATED_DEAL_VALUE]) == [5000.0, 1e12]
    assert reasons(result) == {
        2: "estimated_deal_value: '1e308' is above the maximum 1e+12",
        4: "estimated_deal_value: '1.5e12' is above the maximum 1e+12",
    }
    assert validate(
        accounts(["50", "99999999"]), s.ACCOUNTS, enforce_bad_share=False
    ).report.reason_counts == {"employees: above maximum": 1}


def test_data_limits_replace_a_number_column_s_bounds() -> None:
    limited = with_limits(CONTRACTS, {s.ESTIMATED_DEAL_VALUE: {"max": 100}, s.EMPLOYEES: {"max": None}})
    spec = limited[s.LEADS].column(s.ESTIMATED_DEAL_VALUE)
    assert (spec.min, spec.max) == (0, 100.0)  # the minimum kept, the maximum replaced
    assert limited[s.ACCOUNTS].column(s.EMPLOYEES).max is None  # null: no bound
    raw = leads(**{s.ESTIMATED_DEAL_VALUE: ["99", "101"]})
    result = balanced(validate_table(raw, limited[s.LEADS], SETTINGS, enforce_bad_share=False), raw)
    assert list(result.accepted[s.ESTIMATED_DEAL_VALUE]) == [99.0]
    assert CONTRACTS[s.LEADS].column(s.ESTIMATED_DEAL_VALUE).max == 1e12  # the defaults untouched


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"deal_size": {"max": 1}}, r"data\.limits\.deal_size: no table declares 'deal_size' as a number"),
        ({s.SOURCE: {"max": 1}}, r"data\.limits\.source: no table declares"),
        ({s.EMPLOYEES: {"maximum": 1}}, r"data\.limits\.employees must be a mapping of min and/or max"),
        ({s.EMPLOYEES: 5}, r"data\.limits\.employees must be a mapping"),
        ({s.EMPLOYEES: {"max": "lots"}}, r"data\.limits\.employees: min and max must be numbers"),
        ({s.EMPLOYEES: {"min": 10, "max": 5}}, r"data\.limits\.employees: min 10 is above max 5"),
    ],
)
def test_bad_data_limits_name_the_key(limits: dict, message: str) -> None:
    with pytest.raises(LeadmlError, match=message):
        with_limits(CONTRACTS, limits)
