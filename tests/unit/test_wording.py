"""The reason style guide: golden sentences of a fixed set of leads, and the wording rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factories import activities_table, at, leads_table, outcomes_table, tables
from leadml.data import schema as s
from leadml.data import wording
from leadml.data.features import (
    FeatureSettings,
    feature_metadata,
    flat_feature_metadata,
    flat_snapshots,
    missing_is_informative,
    open_lead_features,
)

SETTINGS = FeatureSettings(cadence_days=7, horizon_days=28)
AS_OF = at(30)  # BASE + 30 days, midnight UTC


def _golden_leads() -> tuple[pd.DataFrame, dict]:
    """Three leads as of day 30: a busy director, a quiet one without a title, a new free-mail one."""
    leads = leads_table([
        {s.LEAD_ID: "L1", s.CREATED_AT: at(0)},
        {s.LEAD_ID: "L2", s.CREATED_AT: at(-400), s.JOB_TITLE: None, s.SOURCE: "paid_social",
         s.ACCOUNT_ID: "A2", s.COUNTRY: "gb"},
        {s.LEAD_ID: "L3", s.CREATED_AT: at(29.5), s.JOB_TITLE: "VP Sales", s.EMAIL: "x@gmail.com",
         s.SOURCE: "referral", s.ESTIMATED_DEAL_VALUE: 2_500_000.0},
    ])  # fmt: skip
    activities = activities_table([
        ("L1", at(29.6), "page_view", "pricing"),
        ("L1", at(28.2), "page_view", "pricing"),
        ("L1", at(27.0), "email_click", None),
        ("L1", at(25.0), "demo_request", None),
        ("L1", at(2.0), "webinar", None),
        ("L2", at(-200), "email_open", None),
        ("L3", at(29.8), "form_submit", None),
    ])  # fmt: skip
    outcomes = outcomes_table([(lead, "open", None, None) for lead in ("L1", "L2", "L3")])
    all_tables = tables(leads, outcomes, activities)
    features = open_lead_features(all_tables, AS_OF, SETTINGS).set_index(s.LEAD_ID)
    return features, feature_metadata(features.columns, SETTINGS)


GOLDEN = {
    ("L1", "n_page_pricing_7d"): "2 pricing-page visits in the last 7 days",
    ("L1", "n_email_click_7d"): "1 e-mail click in the last 7 days",
    ("L1", "n_events_7d"): "4 activities in the last 7 days",
    ("L1", "n_webinar_7d"): "no webinars attended in the last 7 days",
    ("L1", "n_webinar_30d"): "1 webinar attended in the last 30 days",
    ("L1", "days_since_last_demo_request"): "last requested a demo 5 days ago",
    ("L1", "days_since_last_page_pricing"): "last visited the pricing page yesterday",
    ("L1", "days_since_last_meeting"): "never had a meeting",
    ("L1", "days_since_last_activity"): "last activity yesterday",
    ("L1", "days_since_first_activity"): "first activity 28 days ago",
    ("L1", "rw_email_click"): "about 1 e-mail click lately",
    ("L1", "rw_meeting"): "no meetings in the last 2 weeks",
    ("L1", "lead_age_days"): "lead created 30 days ago",
    ("L1", "seniority"): "a director",
    ("L1", "corporate_email"): "corporate e-mail address",
    ("L1", s.INDUSTRY): "industry: Software",
    ("L1", "company_country"): "company based in United States",
    ("L1", s.COUNTRY): "contact based in United States",
    ("L1", s.EMPLOYEES): "250 employees",
    ("L1", s.ANNUAL_REVENUE): "annual revenue $40 million",
    ("L1", "revenue_per_employee"): "revenue per employee $160,000",
    ("L1", s.SOURCE): "lead source: Web Organic",
    ("L1", s.ESTIMATED_DEAL_VALUE): "estimated deal value $10,000",
    ("L1", "engagement_velocity"): "about 4 more activities a week than the month before",
    ("L2", "seniority"): "no job title recorded",
    ("L2", "days_since_last_activity"): "last activity about 8 months ago",
    ("L2", "n_events_30d"): "no activities in the last 30 days",
    ("L2", "lead_age_days"): "lead created about 14 months ago",
    ("L2", s.COUNTRY): "contact based in United Kingdom",
    ("L2", "company_country"): "company based in Germany",
    ("L2", s.EMPLOYEES): "12 employees",
    ("L2", s.SOURCE): "lead source: Paid Social",
    ("L2", "engagement_velocity"): "activity steady against the month before",
    ("L3", "corporate_email"): "free e-mail address (such as Gmail)",
    ("L3", "seniority"): "a VP or head of department",
    ("L3", "lead_age_days"): "lead created yesterday",
    ("L3", "days_since_last_form_submit"): "last submitted a form yesterday",
    ("L3", s.ESTIMATED_DEAL_VALUE): "estimated deal value $2.5 million",
    ("L3", "company_age_years"): "company founded 20 years ago",
}


def test_golden_sentences_of_a_fixed_set_of_leads() -> None:
    features, meta = _golden_leads()
    got = {key: meta[key[1]].describe(features.loc[key[0], key[1]]) for key in GOLDEN}
    assert got == GOLDEN


def test_no_sentence_of_any_feature_reads_like_code() -> None:
    """Every feature of the golden leads, every value: none of the patterns the issue counted."""
    features, meta = _golden_leads()
    bad = (" 0.0 ", "1 activities", "(1 = yes)", "unknown", "half-life", "weighted", "_", ".0 ")
    for lead in features.index:
        for name, entry in meta.items():
            text = f" {entry.describe(features.loc[lead, name])} "
            assert not any(pattern in text for pattern in bad), (lead, name, text)
            assert not text.strip().endswith(".0"), (lead, name, text)


@pytest.mark.parametrize(
    ("days", "words"),
    [(0.0, "today"), (0.2, "yesterday"), (1.0, "yesterday"), (1.01, "2 days ago"), (45, "45 days ago"),
     (61, "about 2 months ago"), (800, "about 2 years ago")],
)  # fmt: skip
def test_days_ago_counts_calendar_days_before_the_run(days: float, words: str) -> None:
    assert wording.days_ago(days) == words


def test_numbers_money_and_labels() -> None:
    assert (
        wording.number(3.0) == "3" and wording.number(1234.5) == "1,234" and wording.number(2.345) == "2.35"
    )
    assert wording.number(0.01234) == "0.012"
    assert wording.money(1_200) == "$1,200" and wording.money(3.4e6) == "$3.4 million"
    assert wording.money(2e9) == "$2 billion" and wording.money(-5) == "-$5"
    assert wording.counted(1, "employee", "employees") == "1 employee"
    assert wording.window(14) == "the last 2 weeks" and wording.window(30) == "the last 30 days"
    assert wording.label("c_level", {}) == "C Level"
    assert wording.label(1152.0, {}) == "1152" and wording.label("1152.0", {}) == "1152"
    assert wording.label("us", {}, countries=True) == "United States"
    assert wording.label("web_organic", {"web_organic": "organic search"}) == "organic search"
    assert wording.is_missing("unknown") and wording.is_missing(np.nan) and not wording.is_missing("x")


@pytest.mark.parametrize(
    ("column", "code"),
    [("campaign_code", True), ("Zip", True), ("Lead Number", True), ("account_id", True),
     ("employees", False), ("codeine_dose", False), ("TotalVisits", False)],
)  # fmt: skip
def test_code_columns_are_told_by_their_name(column: str, code: bool) -> None:
    assert wording.is_code_name(column) is code


def test_configured_labels_reach_the_sentences() -> None:
    features, _ = _golden_leads()
    meta = feature_metadata(features.columns, SETTINGS, {"source": {"Web Organic": "organic search"},
                                                          "country": {"gb": "Britain"}})  # fmt: skip
    assert meta[s.SOURCE].describe("web_organic") == "lead source: organic search"
    assert meta["company_country"].describe("gb") == "company based in Britain"


def test_a_flat_table_reads_flags_codes_and_numbers() -> None:
    table = pd.DataFrame({
        s.LEAD_ID: ["a", "b", "c"], "label": [1, 0, 0],
        "Do Not Email": [1.0, 0.0, np.nan], "Zip": [10115.0, 80331.0, 10115.0],
        "Total Time Spent": [1532.0, 12.5, 0.0], "Lead Source": ["olark_chat", "google", None],
    })  # fmt: skip
    snapshots = flat_snapshots(table)
    meta = flat_feature_metadata(snapshots, {})
    assert isinstance(snapshots["Zip"].dtype, pd.CategoricalDtype)  # a code: a category
    assert meta["Zip"].describe(snapshots["Zip"].iloc[0]) == "Zip: 10115"
    assert meta["Do Not Email"].describe(1.0) == "Do Not Email: yes"
    assert meta["Total Time Spent"].describe(1532.0) == "Total Time Spent: 1,532"
    assert meta["Total Time Spent"].describe(12.5) == "Total Time Spent: 12.5"
    assert meta["Lead Source"].describe("olark_chat") == "Lead Source: Olark Chat"
    assert meta["Lead Source"].describe(None) == "no Lead Source recorded"


def test_missingness_is_informative_only_with_a_material_significant_gap() -> None:
    rng = np.random.default_rng(0)
    missing = rng.random(20_000) < 0.3
    random_label = (rng.random(20_000) < 0.1).astype(float)
    assert not missing_is_informative(random_label, missing)
    telling = np.where(missing, rng.random(20_000) < 0.2, rng.random(20_000) < 0.1).astype(float)
    assert missing_is_informative(telling, missing)
    assert not missing_is_informative(telling[:40], missing[:40])  # too few rows to tell
