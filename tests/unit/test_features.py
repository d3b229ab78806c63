"""Point-in-time features and snapshots: exact values, labels, censoring, leakage-freedom."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import BASE, accounts_table, activities_table, at, leads_table, outcomes_table, tables
from leadml.data import schema as s
from leadml.data.calendar import snapshot_dates
from leadml.data.features import (
    LABEL,
    FeatureSettings,
    build_features,
    build_training_snapshots,
    corporate_email_flag,
    feature_metadata,
    open_lead_features,
    seniority_from_title,
)

SETTINGS = FeatureSettings(cadence_days=7, horizon_days=30, half_life_days=7.0)
# every Monday from BASE: the dates these tests reason about (the grid itself spreads over weekdays)
WEEKLY = [at(days) for days in range(7, 200, 7)]


def features_of(leads: pd.DataFrame, activities: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    return build_features(leads, accounts_table(), activities, as_of, SETTINGS)


def test_seniority_rules_read_titles_as_people_write_them() -> None:
    titles = pd.Series(
        [
            "VP of Engineering",
            "Chief Executive Officer",
            "Senior Data Analyst",
            "Marketing Intern",
            "Director, IT Operations",
            "Head of Procurement",
            "Vice President, Sales",
            "President",
            "Sales Manager",
            "Data Analyst",
            None,
            "  ",
            "Astronaut",
        ]
    )
    assert list(seniority_from_title(titles)) == [
        "vp",
        "c_level",
        "senior_individual",
        "intern_student",
        "director",
        "vp",
        "vp",
        "c_level",
        "manager",
        "individual",
        "unknown",
        "unknown",
        "other",
    ]


def test_corporate_email_flag_distinguishes_free_mail_and_missing() -> None:
    flags = corporate_email_flag(
        pd.Series(["a@acme.com", "B@GMAIL.COM ", None, "not-an-address"]), ["gmail.com"]
    )
    assert flags.iloc[0] == 1.0 and flags.iloc[1] == 0.0
    assert math.isnan(flags.iloc[2]) and math.isnan(flags.iloc[3])


def test_features_count_only_events_strictly_before_as_of() -> None:
    leads = leads_table([{s.LEAD_ID: "L1", s.CREATED_AT: at(0)}])
    activities = activities_table(
        [
            ("L1", at(1), "page_view", "pricing"),
            ("L1", at(25), "page_view", "pricing"),
            ("L1", at(26.5), "email_open", None),
            ("L1", at(28), "demo_request", None),  # exactly at T: not before T
            ("L1", at(29), "meeting", None),  # after T
        ]
    )
    row = features_of(leads, activities, at(28)).iloc[0]
    assert row["n_page_pricing_7d"] == 1 and row["n_page_pricing_30d"] == 2
    assert row["n_page_view_30d"] == 2 and row["n_email_open_7d"] == 1
    assert row["n_demo_request_90d"] == 0 and row["n_meeting_90d"] == 0
    assert row["n_events_7d"] == 2 and row["n_events_90d"] == 3
    assert row["days_since_last_activity"] == pytest.approx(1.5)
    assert row["days_since_first_activity"] == pytest.approx(27)
    assert row["days_since_last_page_pricing"] == pytest.approx(3)
    assert row["days_since_last_email_open"] == pytest.approx(1.5)
    assert math.isnan(row["days_since_last_demo_request"]) and math.isnan(row["days_since_last_meeting"])
    assert row["rw_page_pricing"] == pytest.approx(2 ** (-27 / 7) + 2 ** (-3 / 7))
    assert row["engagement_velocity"] == pytest.approx(2 / 7 - 1 / 30)
    assert row["lead_age_days"] == pytest.approx(28)
    assert row["seniority"] == "director" and row["corporate_email"] == 1.0
    assert row[s.INDUSTRY] == "software" and row[s.EMPLOYEES] == 250
    assert row["company_age_years"] == 2025 - 2005


def test_personal_data_never_becomes_a_feature() -> None:
    leads = leads_table([{s.LEAD_ID: "L1", s.CREATED_AT: at(0)}])
    frame = features_of(leads, activities_table([]), at(10))
    assert not set(s.PERSONAL_DATA_COLUMNS) & set(frame.columns)
    with pytest.raises(ValueError, match="personal data"):
        FeatureSettings(lead_categorical=(s.SOURCE, s.EMAIL))


def test_no_activity_gives_zero_counts_and_unknown_recency() -> None:
    leads = leads_table([{s.LEAD_ID: "L1", s.CREATED_AT: at(0)}])
    row = features_of(leads, activities_table([]), at(10)).iloc[0]
    assert row["n_events_90d"] == 0 and row["rw_meeting"] == 0
    assert math.isnan(row["days_since_last_activity"])


def test_snapshot_labels_closed_leads_and_censoring() -> None:
    leads = leads_table(
        [
            {s.LEAD_ID: "WON", s.CREATED_AT: at(0.5)},
            {s.LEAD_ID: "LOST", s.CREATED_AT: at(0.5)},
            {s.LEAD_ID: "OPEN", s.CREATED_AT: at(0.5)},
        ]
    )
    outcomes = outcomes_table(
        [
            ("WON", "won", at(40.2), 5000.0),
            ("LOST", "lost", at(15.0), None),
            ("OPEN", "open", None, None),
        ]
    )
    activities = activities_table([("OPEN", at(100), "email_open", None)])  # data ends at day 100
    snaps = build_training_snapshots(tables(leads, outcomes, activities), SETTINGS, dates=WEEKLY)
    dates = sorted(snaps[s.AS_OF].unique())
    assert dates[0] == at(7) and dates[-1] == at(70)  # 70 + 30 <= 100 < 77 + 30
    won = snaps[snaps[s.LEAD_ID] == "WON"].set_index(s.AS_OF)[LABEL]
    assert list(won.index) == [at(d) for d in (7, 14, 21, 28, 35)]  # closed on day 40: no later snapshot
    assert list(won) == [0, 1, 1, 1, 1]  # won on day 40.2: within 30 days from day 14 on
    lost = snaps[snaps[s.LEAD_ID] == "LOST"]
    assert list(lost[s.AS_OF]) == [at(7), at(14)] and lost[LABEL].sum() == 0
    assert snaps[snaps[s.LEAD_ID] == "OPEN"][LABEL].sum() == 0


def test_scoring_features_equal_training_snapshot_features() -> None:
    leads = leads_table([{s.LEAD_ID: "L1", s.CREATED_AT: at(0.5)}, {s.LEAD_ID: "L2", s.CREATED_AT: at(3)}])
    activities = activities_table(
        [("L1", at(2), "page_view", "docs"), ("L2", at(12), "webinar", None), ("L2", at(60), "call", None)]
    )
    all_tables = tables(
        leads, outcomes_table([("L1", "open", None, None), ("L2", "open", None, None)]), activities
    )
    snaps = build_training_snapshots(all_tables, SETTINGS, dates=WEEKLY)
    training = snaps[snaps[s.AS_OF] == at(14)].drop(columns=LABEL).reset_index(drop=True)
    scoring = build_features(leads, all_tables[s.ACCOUNTS], activities, at(14), SETTINGS)
    pd.testing.assert_frame_equal(training, scoring, check_categorical=False)


def test_every_feature_has_metadata_with_a_template() -> None:
    leads = leads_table([{s.LEAD_ID: "L1", s.CREATED_AT: at(0)}])
    frame = features_of(leads, activities_table([]), at(10))
    meta = feature_metadata(frame.columns, SETTINGS)
    assert set(meta) == set(frame.columns) - {s.LEAD_ID, s.AS_OF}
    assert meta["n_page_pricing_7d"].describe(3) == "3 pricing-page visits in the last 7 days"
    assert meta["n_page_pricing_7d"].family == "engagement" and meta["n_page_pricing_7d"].monotone == 1
    assert meta["seniority"].family == "fit" and meta[s.SOURCE].family == "source"
    assert meta["n_unsubscribe_30d"].monotone == -1
    for name, entry in meta.items():
        assert entry.describe(1.0), name


# ---------------------------------------------------------------- property: no leakage from after T
AS_OF_DAY = 50
ACTIVITY = st.sampled_from(s.ACTIVITY_TYPES)
PAGE = st.sampled_from(s.PAGE_CATEGORIES)


@st.composite
def crm_history(draw: st.DrawFn) -> dict[str, pd.DataFrame]:
    n_leads = draw(st.integers(1, 5))
    lead_rows, outcome_rows, events = [], [], []
    for i in range(n_leads):
        lead_id = f"L{i}"
        created = draw(st.floats(0, 45))
        lead_rows.append(
            {
                s.LEAD_ID: lead_id,
                s.CREATED_AT: at(created),
                s.ACCOUNT_ID: draw(st.sampled_from(["A1", "A2", "A404"])),
                s.JOB_TITLE: draw(st.sampled_from(["CEO", "Analyst", None])),
            }
        )
        status = draw(st.sampled_from(s.STATUSES))
        closed = None if status == s.OPEN else at(created + draw(st.floats(0.01, 150)))
        outcome_rows.append((lead_id, status, closed, 1000.0 if status == s.WON else None))
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(ACTIVITY)
            events.append(
                (lead_id, at(draw(st.floats(-10, 160))), kind, draw(PAGE) if kind == s.PAGE_VIEW else None)
            )
    return tables(leads_table(lead_rows), outcomes_table(outcome_rows), activities_table(events))


@st.composite
def history_and_future_edit(draw: st.DrawFn) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """A history and a copy in which only facts dated at or after T were added, deleted or changed."""
    original = draw(crm_history())
    t = at(AS_OF_DAY)
    activities = original[s.ACTIVITIES].copy()
    future = activities[s.TIMESTAMP] >= t
    keep = [not (is_future and draw(st.booleans())) for is_future in future]
    edited = activities.loc[np.array(keep, dtype=bool)].copy()
    for idx in edited.index[edited[s.TIMESTAMP] >= t]:
        if draw(st.booleans()):
            edited.loc[idx, s.TIMESTAMP] = t + pd.to_timedelta(draw(st.floats(0, 100)), unit="D")
            edited.loc[idx, s.ACTIVITY_TYPE] = draw(ACTIVITY)
            edited.loc[idx, s.PAGE_CATEGORY] = (
                draw(PAGE) if edited.loc[idx, s.ACTIVITY_TYPE] == s.PAGE_VIEW else None
            )
    lead_ids = list(original[s.LEADS][s.LEAD_ID])
    extra = [
        (
            draw(st.sampled_from(lead_ids)),
            t + pd.to_timedelta(draw(st.floats(0, 100)), unit="D"),
            "meeting",
            None,
        )
        for _ in range(draw(st.integers(0, 5)))
    ]
    edited = pd.concat([edited, activities_table(extra)], ignore_index=True)
    edited[s.EVENT_ID] = [f"X{i}" for i in range(len(edited))]
    outcomes = original[s.OUTCOMES].copy()
    for idx in outcomes.index:
        closed = outcomes.loc[idx, s.CLOSED_AT]
        still_open_at_t = pd.isna(closed) or closed > t
        if still_open_at_t and draw(st.booleans()):
            status = draw(st.sampled_from(s.STATUSES))
            outcomes.loc[idx, s.STATUS] = status
            outcomes.loc[idx, s.CLOSED_AT] = (
                pd.NaT if status == s.OPEN else t + pd.to_timedelta(draw(st.floats(0.01, 100)), unit="D")
            )
    return original, {**original, s.ACTIVITIES: edited, s.OUTCOMES: outcomes}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_and_future_edit())
def test_facts_after_as_of_change_no_feature(pair: tuple[dict, dict]) -> None:
    original, edited = pair
    end = at(AS_OF_DAY + 400)
    before = (
        build_training_snapshots(original, SETTINGS, end=end, dates=[at(AS_OF_DAY)])
        if _any_open(original)
        else None
    )
    after = (
        build_training_snapshots(edited, SETTINGS, end=end, dates=[at(AS_OF_DAY)])
        if _any_open(edited)
        else None
    )
    assert (before is None) == (after is None)
    if before is not None:
        pd.testing.assert_frame_equal(before.drop(columns=LABEL), after.drop(columns=LABEL))


def _any_open(history: dict[str, pd.DataFrame]) -> bool:
    t = at(AS_OF_DAY)
    created_before = history[s.LEADS].set_index(s.LEAD_ID)[s.CREATED_AT] < t
    closed = history[s.OUTCOMES].set_index(s.LEAD_ID)[s.CLOSED_AT].reindex(created_before.index)
    return bool((created_before & ~(closed <= t)).any())


def test_base_is_on_the_weekly_grid() -> None:
    assert BASE.dayofweek == 0 and np.isclose((BASE - pd.Timestamp("2000-01-03", tz="UTC")).days % 7, 0)


def test_the_snapshot_grid_spreads_over_the_weekdays() -> None:
    """A cadence of whole weeks would put every training date on one weekday while the nightly
    job runs on all of them: seven consecutive dates fall on seven weekdays, the mean cadence and
    the grid's place are kept, and a cadence that is no multiple of 7 is left as it is."""
    for cadence in (7, 14, 28):
        grid = snapshot_dates(pd.Timestamp("2024-01-01"), pd.Timestamp("2026-01-01"), cadence)
        for start in range(len(grid) - 7):
            assert grid[start : start + 7].day_of_week.nunique() == 7
        assert abs(pd.Series(grid).diff().dt.days.mean() - cadence) < 1
        later = snapshot_dates(pd.Timestamp("2025-01-01"), pd.Timestamp("2026-01-01"), cadence)
        assert set(later) <= set(grid)  # a later start keeps the same dates
    ten = snapshot_dates(pd.Timestamp("2025-01-01"), pd.Timestamp("2025-06-01"), 10)
    assert set(pd.Series(ten).diff().dt.days.dropna()) == {10}


def test_nightly_features_are_the_training_snapshot_of_the_same_date() -> None:
    """``open_lead_features`` narrows the tables to the open leads before building anything: it must
    still give exactly the rows and values of a training snapshot on that date."""
    rng = np.random.default_rng(7)
    leads = leads_table(
        [{s.LEAD_ID: f"L{i}", s.CREATED_AT: at(float(rng.uniform(0, 150)))} for i in range(80)]
    )
    outcomes = []
    for i, created in enumerate(leads[s.CREATED_AT]):
        status = ["open", "won", "lost"][i % 3]
        closed = None if status == "open" else created + pd.Timedelta(days=float(rng.uniform(1, 60)))
        outcomes.append((f"L{i}", status, closed, 1000.0 if status == "won" else None))
    kinds = ["page_view", "email_open", "webinar", "form_submit", "call"]
    events = [
        (
            f"L{rng.integers(80)}",
            at(float(rng.uniform(0, 200))),
            kind,
            "pricing" if kind == "page_view" else None,
        )
        for kind in rng.choice(kinds, 600)
    ]
    all_tables = tables(leads, outcomes_table(outcomes), activities_table(events))
    dates = [at(40), at(95), at(160)]
    snapshots = build_training_snapshots(all_tables, SETTINGS, end=at(400), dates=dates)
    for as_of in dates:
        nightly = open_lead_features(all_tables, as_of, SETTINGS)
        training = snapshots[snapshots[s.AS_OF] == as_of].drop(columns=LABEL)
        assert len(nightly) > 10
        pd.testing.assert_frame_equal(
            nightly.sort_values(s.LEAD_ID, ignore_index=True),
            training.sort_values(s.LEAD_ID, ignore_index=True),
            check_categorical=False,
        )
