"""The endpoint reads a request's values by the nightly job's data contracts, and bounds its size.

The property test sends random values of the contract-checked fields through both request paths
and through the nightly job itself (``ingest_crm`` on one-row tables, then ``build_features``) and
finds them agree on every value: scored with the same feature value, refused (HTTP 400 / the lead
quarantined) alike, or missing alike (a warning / the account quarantined, the lead kept).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from test_request_plan import NOW, TOLERANCE, crm_scorer, crm_tables

from leadml.data import schema as s
from leadml.data.contracts import PLAUSIBLE_MAXIMA, IngestSettings, configured_crm_contracts, keeps_number
from leadml.data.features import FeatureSettings, build_features
from leadml.data.ingest import ingest_crm
from leadml.scoring.pyfunc import LeadScorerModel
from leadml.scoring.request_fields import WARNINGS, ContractRules, RequestError, checked_numbers
from leadml.scoring.request_limits import MAX_ACTIVITIES, MAX_ROWS, check_body, nesting_depth
from leadml.scoring.request_plan import compiled_answer
from leadml.scoring.requests import predict_request, request_features
from leadml.stages.train import data_contract

CREATED = "2025-10-15T09:30:00Z"
ACCOUNT_NUMBERS = (s.EMPLOYEES, s.ANNUAL_REVENUE, s.FOUNDED_YEAR)
OUTCOME_COLUMNS = (s.LEAD_ID, s.STATUS, s.CLOSED_AT)
ACCOUNT_TEXTS = {s.INDUSTRY: "software", "company_country": "de"}


@pytest.fixture(scope="module")
def crm() -> tuple[Any, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(21)
    tables = crm_tables(rng)
    return crm_scorer(tables, rng), tables


def _lead(**fields: Any) -> dict[str, Any]:
    return {s.LEAD_ID: "L1", s.CREATED_AT: CREATED, **ACCOUNT_TEXTS, s.EMPLOYEES: 230, **fields}


def _answers(scorer: Any, row: dict[str, Any]) -> pd.DataFrame:
    """The answer of both paths to one row, which must be the same."""
    frame = pd.DataFrame([row])
    reference = predict_request(scorer, frame, NOW, compiled=False)
    compiled = compiled_answer(scorer, frame, NOW)
    assert compiled is not None, "the compiled path left the request to the reference"
    pd.testing.assert_frame_equal(compiled, reference, check_exact=False, rtol=0, atol=TOLERANCE)
    return reference


# --------------------------------------------------------------------------- each class of value
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (s.ESTIMATED_DEAL_VALUE, -1, "row 0, field 'estimated_deal_value': '-1' is below the minimum 0"),
        (s.ESTIMATED_DEAL_VALUE, 1e308, "field 'estimated_deal_value': '1e+308' is above the maximum 1e+12"),
        (s.ESTIMATED_DEAL_VALUE, "lots", "field 'estimated_deal_value': 'lots' is not a number"),
        (s.ESTIMATED_DEAL_VALUE, "inf", "field 'estimated_deal_value': 'inf' is not a number"),
        (s.ESTIMATED_DEAL_VALUE, [5], "field 'estimated_deal_value': expected a number, got list"),
        (s.EMPLOYEES, {"n": 5}, "field 'employees': expected a number, got dict"),
        (s.CREATED_AT, "1899-12-30", "field 'created_at': '1899-12-30' is not a plausible date"),
        (s.CREATED_AT, "9999-01-01", "field 'created_at': '9999-01-01' is not a plausible date"),
        (s.CREATED_AT, "2025-02-30", "field 'created_at': '2025-02-30' is not an ISO 8601 date-time"),
        (s.CREATED_AT, "2026-01-01", "is after as_of"),  # the nightly job: "in the future"
    ],
)
def test_a_value_the_nightly_job_quarantines_its_lead_for_is_a_400_naming_the_field(
    crm, field: str, value: Any, message: str
) -> None:
    scorer, _ = crm
    for compiled in (True, False):
        with pytest.raises(RequestError) as refused:
            predict_request(scorer, pd.DataFrame([_lead(**{field: value})]), NOW, compiled=compiled)
        assert message in str(refused.value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (s.EMPLOYEES, -5, "employees '-5' is below the minimum 0"),
        (s.EMPLOYEES, 2.5, "employees '2.5' is not a whole number"),
        (s.EMPLOYEES, 1e20, "employees '1e+20' is too large for a whole number"),
        (s.ANNUAL_REVENUE, -1e9, "annual_revenue '-1000000000' is below the minimum 0"),
        (s.ANNUAL_REVENUE, "a lot", "annual_revenue 'a lot' is not a number"),
        (s.FOUNDED_YEAR, 1e20, "founded_year '1e+20' is too large for a whole number"),
        (s.FOUNDED_YEAR, 1700, "founded_year '1700' is below the minimum 1800"),
    ],
)
def test_a_value_the_nightly_job_quarantines_its_account_for_leaves_the_account_unknown_with_a_warning(
    crm, field: str, value: Any, reason: str
) -> None:
    scorer, _ = crm
    answer = _answers(scorer, _lead(**{field: value}))
    warning = answer[WARNINGS].iloc[0]
    assert f"{reason}: the account's fields scored as unknown" in warning
    features, _ = request_features(scorer, pd.DataFrame([_lead(**{field: value})]), NOW)
    assert features[[s.EMPLOYEES, s.ANNUAL_REVENUE, "company_age_years"]].isna().all(axis=None)
    assert features[s.INDUSTRY].isna().all() and features["company_country"].isna().all()
    for reason_column in [c for c in answer.columns if c.endswith(("_reason_1", "_reason_2", "_reason_3"))]:
        assert str(value) not in str(answer[reason_column].iloc[0])  # no "-5 employees"


@pytest.mark.parametrize("marker", ["NA", "null", "", " N/A ", "nan", "None"])
def test_a_missing_marker_is_missing_as_in_the_nightly_job(crm, marker: str) -> None:
    scorer, _ = crm
    answer = _answers(scorer, _lead(**{s.EMPLOYEES: marker, s.ESTIMATED_DEAL_VALUE: marker}))
    warning = answer[WARNINGS].iloc[0]
    assert "not given, scored as unknown:" in warning and "employees" in warning
    assert "estimated_deal_value" in warning and "account's fields" not in warning


def test_numbers_written_as_text_are_read_as_the_nightly_job_reads_them(crm) -> None:
    scorer, _ = crm
    as_text = _answers(scorer, _lead(**{s.EMPLOYEES: " 230 ", s.ANNUAL_REVENUE: "4.1e7"}))
    as_numbers = _answers(scorer, _lead(**{s.EMPLOYEES: 230, s.ANNUAL_REVENUE: 4.1e7}))
    assert as_text["probability"].iloc[0] == as_numbers["probability"].iloc[0]


def test_the_bounds_are_the_ones_the_model_was_trained_with(crm) -> None:
    """data.limits, the data config's missing markers and extra columns travel in the model."""
    scorer, _ = crm
    data = {"limits": {s.EMPLOYEES: {"max": 1000}}, "missing_markers": ["unknown"], "name": "x"}
    bounded = replace(scorer, data_contract=data_contract(data))
    assert json.loads(json.dumps(bounded.data_contract)) == bounded.data_contract
    rules = ContractRules.of(bounded)
    assert rules.fields[s.EMPLOYEES].spec.max == 1000
    assert ContractRules.of(scorer).fields[s.EMPLOYEES].spec.max == PLAUSIBLE_MAXIMA[s.EMPLOYEES]
    warning = _answers(bounded, _lead(**{s.EMPLOYEES: 5000}))[WARNINGS].iloc[0]
    assert "employees '5000' is above the maximum 1000" in warning
    assert "employees" in _answers(bounded, _lead(**{s.EMPLOYEES: "unknown"}))[WARNINGS].iloc[0]


# --------------------------------------------------------------------------- the property
NUMBER_VALUES = st.one_of(
    st.integers(-(10**25), 10**25),
    st.integers(-10, 3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e14, 1e14),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            *["NA", "null", "", " 42 ", "abc", "1e400", "-0", "nan", "inf", "-inf", "2.5", "1,000"],
            *["1_000", "None", "#N/A", "0x10", "2008", "1e13", "10000001", "1799", "2101", "  -5  ", "+7"],
        ]
    ),
)
DATES = st.one_of(
    st.datetimes(pd.Timestamp("1850-01-01"), pd.Timestamp("2300-01-01")).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01", "1899-12-31T23:59:59Z", "1900-01-01", "2025-02-30", "yesterday", ""]),
    st.sampled_from(["NA", "2025-11-20T15:30:12.345678Z", "2025-11-20T15:30:12.345679Z", "10000-01-01"]),
)


def _nightly(field: str, value: Any) -> tuple[str, dict[str, Any]]:
    """What the nightly job does with ``value`` of ``field`` on a lead of account A1, as of NOW:
    ("quarantined", {}) or ("scored", the lead's features)."""
    created = value if field == s.CREATED_AT else CREATED
    lead = {s.LEAD_ID: "L1", s.CREATED_AT: created, s.ACCOUNT_ID: "A1"}
    account = {s.ACCOUNT_ID: "A1", s.INDUSTRY: "software", s.COUNTRY: "de", s.EMPLOYEES: 230}
    if field == s.ESTIMATED_DEAL_VALUE:
        lead[field] = value
    elif field != s.CREATED_AT:
        account[field] = value
    raw = {
        s.LEADS: pd.DataFrame([lead]),
        s.ACCOUNTS: pd.DataFrame([account]),
        s.OUTCOMES: pd.DataFrame({name: pd.Series([], dtype=str) for name in OUTCOME_COLUMNS}),
    }
    contracts = configured_crm_contracts(None, None)
    result = ingest_crm(raw, contracts, IngestSettings(reference_time=NOW), enforce_bad_share=False)
    leads = result.tables[s.LEADS]
    if not len(leads):
        return "quarantined", {}
    settings = FeatureSettings(extra_categorical=("browser", "campaign_code"))
    features = build_features(leads, result.tables[s.ACCOUNTS], result.tables[s.ACTIVITIES], NOW, settings)
    return "scored", features.iloc[0].to_dict()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.tuples(st.sampled_from([*ACCOUNT_NUMBERS, s.ESTIMATED_DEAL_VALUE]), NUMBER_VALUES),
        st.tuples(st.just(s.CREATED_AT), DATES),
    )
)
def test_requests_and_the_nightly_job_agree_on_every_value(crm, field_value: tuple[str, Any]) -> None:
    scorer, _ = crm
    field, value = field_value
    row = _lead(**{field: value}, as_of=NOW.isoformat())
    outcome, nightly = _nightly(field, value)
    frame = pd.DataFrame([row])
    if outcome == "quarantined":
        for compiled in (True, False):
            with pytest.raises(RequestError, match=r"row 0(, field '\w+')?:"):
                predict_request(scorer, frame, NOW, compiled=compiled)
        return
    answer = _answers(scorer, row)  # both paths answer, alike
    features, _ = request_features(scorer, frame, NOW)
    for name in (s.EMPLOYEES, s.ANNUAL_REVENUE, "company_age_years", s.INDUSTRY, s.ESTIMATED_DEAL_VALUE):
        got, expected = features[name].iloc[0], nightly[name]
        if pd.isna(expected):
            assert pd.isna(got), (name, got, expected)
        elif isinstance(expected, str):
            assert got == expected, (name, got, expected)
        else:
            assert got == pytest.approx(expected, rel=1e-12), (name, got, expected)
    account_refused = pd.isna(nightly[s.INDUSTRY])  # the account was quarantined, the lead kept
    warning = answer[WARNINGS].iloc[0] or ""
    assert ("the account's fields scored as unknown" in warning) == account_refused, warning
    assert features["lead_age_days"].iloc[0] == pytest.approx(nightly["lead_age_days"], abs=1e-9)


def test_the_compiled_paths_quick_check_is_the_parsers(crm) -> None:
    """``keeps_number`` (the compiled path) keeps exactly what the contract's parser keeps."""
    spec = configured_crm_contracts(None, None)[s.ACCOUNTS].column(s.EMPLOYEES)
    for value in [0.0, -0.0, 1.0, 2.5, -1.0, 1e7, 1e7 + 1, 2.0**63, float("nan"), float("inf")]:
        rules = ContractRules.of(crm[0])
        checked = checked_numbers([value], rules.fields[s.EMPLOYEES], rules.settings)
        parsed_keeps = not checked.refused and (np.isnan(value) or checked.values[0] == value)
        assert keeps_number(spec, value) == parsed_keeps, value


# --------------------------------------------------------------------------- size and nesting
def test_nesting_is_measured_outside_strings() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert nesting_depth(b'"\\"[[["') == 0
    assert nesting_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


def test_a_deep_or_huge_body_is_refused_before_json_parses_it(monkeypatch) -> None:
    with pytest.raises(MlflowException) as deep:
        check_body(b"[" * 100_000)
    assert deep.value.get_http_status_code() == 400 and "100,000 levels deep" in deep.value.message
    assert "LEADML_MAX_REQUEST_DEPTH" in deep.value.message
    monkeypatch.setenv("LEADML_MAX_REQUEST_BYTES", "1000")
    with pytest.raises(MlflowException) as huge:
        check_body(b" " * 1001)
    assert huge.value.get_http_status_code() == 413 and "request too large: 1,001 bytes" in huge.value.message


@pytest.fixture(scope="module")
def served(crm, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The scorer saved as a pyfunc and loaded as the scoring server loads it."""
    folder = tmp_path_factory.mktemp("limits") / "model"
    mlflow.pyfunc.save_model(str(folder), python_model=LeadScorerModel(crm[0]))
    return mlflow.pyfunc.load_model(str(folder))


def _invoke(model: Any, body: str) -> tuple[int, str]:
    """MLflow's scoring server's status and answer to ``body``, through its exception handling."""
    try:
        response = scoring_server.invocations(body, "application/json", model, None)
    except MlflowException as error:  # what the server's handler turns into the HTTP answer
        return error.get_http_status_code(), error.message
    return response.status, response.response


def test_the_scoring_server_answers_a_body_nested_100000_deep_with_400(served, monkeypatch) -> None:
    body = '{"dataframe_records": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(RecursionError):  # what MLflow's own parsing does with it: HTTP 500
        json.loads(body)
    status, message = _invoke(served, body)
    assert status == 400 and "levels deep" in message
    monkeypatch.setenv("LEADML_MAX_REQUEST_BYTES", "200")
    status, message = _invoke(served, json.dumps({"dataframe_records": [_lead(note="x" * 200)]}))
    assert status == 413 and "LEADML_MAX_REQUEST_BYTES" in message


def test_rows_and_activities_per_lead_are_bounded(served, monkeypatch) -> None:
    monkeypatch.setenv(MAX_ROWS.variable, "2")
    status, message = _invoke(served, json.dumps({"dataframe_records": [_lead()] * 3}))
    assert status == 400 and "3 rows, more than 2 (LEADML_MAX_REQUEST_ROWS)" in message
    monkeypatch.setenv(MAX_ACTIVITIES.variable, "1")
    events = [{"timestamp": "2025-11-01T00:00:00Z", "activity_type": "call"}] * 2
    status, message = _invoke(served, json.dumps({"dataframe_records": [_lead(activities=events)]}))
    assert status == 400 and "row 0, field 'activities': 2 activities, more than 1" in message
    status, message = _invoke(served, json.dumps({"dataframe_records": [_lead(employees=-5)]}))
    assert status == 200 and "employees '-5' is below the minimum 0" in message
