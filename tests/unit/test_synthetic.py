"""The synthetic CRM: determinism, shape, messiness, exact ground truth and the signal it carries."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from factories import REPO
from leadml.data import schema as s
from leadml.data.calendar import snapshot_dates
from leadml.data.synthetic import (
    SyntheticSettings,
    absorption_probability,
    generate_crm,
    settings_from_mapping,
)
from leadml.data.synthetic_world import BROWSER, CAMPAIGN_CODE

CONF = REPO / "conf" / "synthetic"
ONE_YEAR = {"start": "2024-07-01", "end": "2025-07-01"}
CLEAN = SyntheticSettings(n_leads=4_000, messiness=0.0, seed=7, **ONE_YEAR)
MESSY = SyntheticSettings(n_leads=2_000, messiness=0.05, seed=7, **ONE_YEAR)

COLUMNS = {
    s.ACCOUNTS: [
        s.ACCOUNT_ID,
        s.COMPANY_NAME,
        s.INDUSTRY,
        s.EMPLOYEES,
        s.ANNUAL_REVENUE,
        s.COUNTRY,
        s.FOUNDED_YEAR,
    ],
    s.LEADS: [
        s.LEAD_ID,
        s.CREATED_AT,
        s.ACCOUNT_ID,
        s.SOURCE,
        s.OWNER,
        s.JOB_TITLE,
        s.COUNTRY,
        s.FIRST_NAME,
        s.LAST_NAME,
        s.EMAIL,
        s.PHONE,
        s.ESTIMATED_DEAL_VALUE,
        BROWSER,
        CAMPAIGN_CODE,
    ],
    s.OUTCOMES: [s.LEAD_ID, s.STATUS, s.CLOSED_AT, s.DEAL_VALUE],
    s.ACTIVITIES: [s.EVENT_ID, s.LEAD_ID, s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY],
    s.GROUND_TRUTH: [s.LEAD_ID, s.AS_OF, s.HORIZON_DAYS, s.TRUE_PROBABILITY],
}
STRING_COLUMNS = {
    s.ACCOUNT_ID,
    s.COMPANY_NAME,
    s.INDUSTRY,
    s.COUNTRY,
    s.LEAD_ID,
    s.CREATED_AT,
    s.SOURCE,
    s.OWNER,
    s.JOB_TITLE,
    s.FIRST_NAME,
    s.LAST_NAME,
    s.EMAIL,
    s.PHONE,
    BROWSER,
    s.STATUS,
    s.CLOSED_AT,
    s.EVENT_ID,
    s.TIMESTAMP,
    s.ACTIVITY_TYPE,
    s.PAGE_CATEGORY,
}
# keyword rules in order of precedence, as an analyst would write them
SENIORITY_RULES = (
    ("junior", r"\b(?:student|intern|trainee)\b"),
    ("c_level", r"\b(?:chief|ceo|cto|cfo|coo|cmo|cio|founder)\b"),
    ("vp", r"\b(?:vp|svp|evp|vice president)\b"),
    ("director", r"\bdirector\b"),
    ("head", r"\bhead\b"),
    ("manager", r"\bmanager\b"),
    ("senior", r"\b(?:senior|sr|staff)\b"),
)


@pytest.fixture(scope="module")
def clean() -> dict[str, pd.DataFrame]:
    return generate_crm(CLEAN)


@pytest.fixture(scope="module")
def messy() -> dict[str, pd.DataFrame]:
    return generate_crm(MESSY)


@pytest.fixture(scope="module")
def lead_outcomes(clean: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per lead with its outcome, firmographics and activity counts by kind."""
    activities = clean[s.ACTIVITIES]
    kind = activities[s.ACTIVITY_TYPE].where(
        activities[s.PAGE_CATEGORY].isna(), "page_" + activities[s.PAGE_CATEGORY]
    )
    counts = pd.crosstab(activities[s.LEAD_ID], kind)
    frame = (
        clean[s.LEADS]
        .merge(clean[s.OUTCOMES], on=s.LEAD_ID)
        .merge(clean[s.ACCOUNTS][[s.ACCOUNT_ID, s.EMPLOYEES]], on=s.ACCOUNT_ID)
    )
    frame = frame.join(counts, on=s.LEAD_ID).fillna({column: 0 for column in counts.columns})
    frame["won"] = frame[s.STATUS] == s.WON
    return frame


def _instants(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def _unparseable(values: pd.Series) -> pd.Series:
    return values.notna() & _instants(values).isna()


# --------------------------------------------------------------------------- settings
def test_settings_from_mapping_and_the_shipped_configs() -> None:
    assert (
        settings_from_mapping({"n_leads": 10, "start": "2025-01-01", "end": "2025-03-01"}).account_count == 2
    )
    default = settings_from_mapping(OmegaConf.to_container(OmegaConf.load(CONF / "default.yaml")))
    million = settings_from_mapping(OmegaConf.to_container(OmegaConf.load(CONF / "million.yaml")))
    assert default == SyntheticSettings()
    assert (default.n_leads, million.n_leads) == (50_000, 1_000_000)


def test_settings_from_mapping_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown synthetic setting\(s\) \[.n_lead., .wobble.\]"):
        settings_from_mapping({"n_lead": 5, "wobble": 1, "seed": 3})


@pytest.mark.parametrize(
    "bad",
    [
        {"n_leads": 0},
        {"messiness": 0.9},
        {"end": "2024-01-01"},
        {"start": "2024-07-01T12:00"},
        {"start": "not a date"},
        {"horizon_days": 0},
    ],
)
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="invalid synthetic settings"):
        SyntheticSettings(**bad)


# --------------------------------------------------------------------------- determinism and shape
def test_same_seed_same_data_other_seed_other_data() -> None:
    small = SyntheticSettings(n_leads=500, **ONE_YEAR)
    first, second = generate_crm(small), generate_crm(small)
    for table in COLUMNS:
        pd.testing.assert_frame_equal(first[table], second[table])
    other = generate_crm(SyntheticSettings(n_leads=500, seed=43, **ONE_YEAR))
    assert not first[s.LEADS][s.CREATED_AT].equals(other[s.LEADS][s.CREATED_AT])
    assert not first[s.GROUND_TRUTH][s.TRUE_PROBABILITY].equals(other[s.GROUND_TRUTH][s.TRUE_PROBABILITY])


def test_tables_columns_and_types(clean: dict[str, pd.DataFrame]) -> None:
    assert set(clean) == set(COLUMNS)
    for table, columns in COLUMNS.items():
        frame = clean[table]
        assert list(frame.columns) == columns, table
        for column in set(columns) & STRING_COLUMNS:
            assert pd.api.types.is_string_dtype(frame[column]), (table, column)
    assert pd.api.types.is_integer_dtype(clean[s.ACCOUNTS][s.EMPLOYEES])
    assert pd.api.types.is_integer_dtype(clean[s.ACCOUNTS][s.FOUNDED_YEAR])
    assert pd.api.types.is_integer_dtype(clean[s.LEADS][CAMPAIGN_CODE])
    assert pd.api.types.is_float_dtype(clean[s.LEADS][s.ESTIMATED_DEAL_VALUE])
    truth = clean[s.GROUND_TRUTH]
    assert str(truth[s.AS_OF].dtype) == "datetime64[ns, UTC]"
    assert (truth[s.AS_OF] == truth[s.AS_OF].dt.normalize()).all()
    assert (truth[s.HORIZON_DAYS] == CLEAN.horizon_days).all()
    assert clean[s.LEADS][s.LEAD_ID].str.fullmatch(r"L\d{7}").all()
    assert clean[s.ACCOUNTS][s.ACCOUNT_ID].str.fullmatch(r"A\d{6}").all()
    assert clean[s.ACTIVITIES][s.EVENT_ID].is_unique


def test_shares_of_outcomes_and_events_are_realistic() -> None:
    tables = generate_crm(SyntheticSettings(n_leads=2_000, messiness=0.0))  # the default two years
    status = tables[s.OUTCOMES][s.STATUS].value_counts(normalize=True)
    assert 0.08 <= status[s.WON] <= 0.15
    assert 0.10 <= status[s.OPEN] <= 0.30
    assert 25 <= len(tables[s.ACTIVITIES]) / 2_000 <= 50
    timestamps = _instants(tables[s.ACTIVITIES][s.TIMESTAMP])
    weekend_share = (timestamps.dt.dayofweek >= 5).mean()
    assert weekend_share < 0.1  # weekends are quiet


# --------------------------------------------------------------------------- clean and messy data
def test_clean_data_is_clean(clean: dict[str, pd.DataFrame]) -> None:
    leads, outcomes, activities, accounts = (
        clean[t] for t in (s.LEADS, s.OUTCOMES, s.ACTIVITIES, s.ACCOUNTS)
    )
    assert leads[s.LEAD_ID].is_unique and outcomes[s.LEAD_ID].is_unique
    assert set(activities[s.LEAD_ID]) <= set(leads[s.LEAD_ID])
    end = pd.Timestamp(CLEAN.end, tz="UTC")
    for column in (leads[s.CREATED_AT], activities[s.TIMESTAMP], outcomes[s.CLOSED_AT].dropna()):
        instants = _instants(column)
        assert instants.notna().all() and (instants < end).all()
    assert set(leads[s.SOURCE]) <= set(s.SOURCES) and set(leads[s.COUNTRY]) <= set(s.COUNTRIES)
    assert set(accounts[s.INDUSTRY]) <= set(s.INDUSTRIES) and set(accounts[s.COUNTRY]) <= set(s.COUNTRIES)
    assert set(outcomes[s.STATUS]) <= set(s.STATUSES)
    assert set(activities[s.ACTIVITY_TYPE]) <= set(s.ACTIVITY_TYPES)
    assert set(activities[s.PAGE_CATEGORY].dropna()) <= set(s.PAGE_CATEGORIES)
    assert (activities[s.PAGE_CATEGORY].notna() == (activities[s.ACTIVITY_TYPE] == s.PAGE_VIEW)).all()
    assert not accounts[[s.INDUSTRY, s.EMPLOYEES, s.COUNTRY]].isna().any().any()
    assert not leads[[s.JOB_TITLE, s.COUNTRY, s.PHONE]].isna().any().any()
    # closing: closed_at exactly for closed leads, deal value exactly for won ones
    assert (outcomes[s.CLOSED_AT].isna() == (outcomes[s.STATUS] == s.OPEN)).all()
    assert (outcomes[s.DEAL_VALUE].notna() == (outcomes[s.STATUS] == s.WON)).all()


def test_created_at_mixes_offsets_of_the_same_instant(clean: dict[str, pd.DataFrame]) -> None:
    created = clean[s.LEADS][s.CREATED_AT]
    suffixes = created.str.extract(r"\d{2}:\d{2}:\d{2}(.*)$", expand=False)
    assert set(suffixes) == {"Z", "+00:00", "+01:00", "-05:00", ""}
    # business hours in UTC whatever the offset the wall clock was written in
    hours = _instants(created).dt.hour
    assert hours.between(8, 20).mean() > 0.6


def test_events_fall_between_creation_and_close(clean: dict[str, pd.DataFrame]) -> None:
    events = clean[s.ACTIVITIES].assign(at=lambda f: _instants(f[s.TIMESTAMP]))
    span = events.groupby(s.LEAD_ID)["at"].agg(["min", "max"])
    leads = clean[s.LEADS].set_index(s.LEAD_ID)
    outcomes = clean[s.OUTCOMES].set_index(s.LEAD_ID)
    assert (span["min"] >= _instants(leads[s.CREATED_AT]).reindex(span.index)).all()
    closed = _instants(outcomes[s.CLOSED_AT]).reindex(span.index)
    assert (span["max"] <= closed)[closed.notna()].all()
    closed_leads = outcomes[s.CLOSED_AT].notna()
    assert (_instants(outcomes[s.CLOSED_AT]) >= _instants(leads[s.CREATED_AT]))[closed_leads].all()


def test_messy_data_has_every_kind_of_defect(messy: dict[str, pd.DataFrame]) -> None:
    leads, outcomes, activities, accounts = (
        messy[t] for t in (s.LEADS, s.OUTCOMES, s.ACTIVITIES, s.ACCOUNTS)
    )
    duplicated = leads[leads[s.LEAD_ID].duplicated(keep=False)]
    assert len(duplicated) > 0
    # the copy is the less complete row of its pair
    assert (duplicated.groupby(s.LEAD_ID)[s.PHONE].count() == 1).all()
    for frame, columns in (
        (accounts, [s.INDUSTRY, s.EMPLOYEES, s.COUNTRY]),
        (leads, [s.JOB_TITLE, s.COUNTRY]),
    ):
        assert frame[columns].isna().any().all(), columns
    assert not set(leads[s.SOURCE]) <= set(s.SOURCES)
    assert {"United States", "USA", "UK"} & set(leads[s.COUNTRY].dropna()) and not set(
        accounts[s.COUNTRY].dropna()
    ) <= set(s.COUNTRIES)
    assert not set(outcomes[s.STATUS]) <= set(s.STATUSES)
    assert not set(activities[s.ACTIVITY_TYPE]) <= set(s.ACTIVITY_TYPES)
    assert not set(activities[s.LEAD_ID]) <= set(leads[s.LEAD_ID])
    future = pd.Timestamp("2030-01-01", tz="UTC")
    for column in (leads[s.CREATED_AT], outcomes[s.CLOSED_AT], activities[s.TIMESTAMP]):
        assert _unparseable(column).any(), column.name
        assert (_instants(column) >= future).any(), column.name


def test_messiness_leaves_the_world_and_its_truth_alone(messy: dict[str, pd.DataFrame]) -> None:
    clean = generate_crm(SyntheticSettings(n_leads=MESSY.n_leads, messiness=0.0, seed=MESSY.seed, **ONE_YEAR))
    pd.testing.assert_frame_equal(clean[s.GROUND_TRUTH], messy[s.GROUND_TRUTH])
    assert messy[s.GROUND_TRUTH][s.TRUE_PROBABILITY].between(0, 1).all()
    assert set(messy[s.GROUND_TRUTH][s.LEAD_ID]) <= set(clean[s.LEADS][s.LEAD_ID])


# --------------------------------------------------------------------------- ground truth
def test_absorption_probability_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    n_chains, period, k, horizon, runs = 3, 7, 4, 20, 40_000
    matrices = rng.random((n_chains, period, k, k))
    matrices[:, :, :, 3] *= 0.1  # rarely into the target, so absorption is neither certain nor rare ...
    matrices[:, :, 3, :] = np.eye(k)[3]  # ... and the target absorbing
    matrices /= matrices.sum(axis=-1, keepdims=True)
    exact = absorption_probability(matrices, horizon, target_state=3)
    assert exact.shape == (n_chains, k) and np.allclose(exact[:, 3], 1.0)
    for chain in range(n_chains):
        state = np.zeros(runs, dtype=np.int64)
        for day in range(horizon):
            cumulative = np.cumsum(matrices[chain, day % period], axis=1)
            state = (rng.random(runs)[:, None] > cumulative[state]).sum(axis=1)
        estimate = (state == 3).mean()
        assert 0.05 < exact[chain, 0] < 0.95
        assert estimate == pytest.approx(exact[chain, 0], abs=4 * np.sqrt(0.25 / runs))


def test_truth_covers_exactly_the_open_leads_on_every_grid_date(clean: dict[str, pd.DataFrame]) -> None:
    truth = clean[s.GROUND_TRUTH]
    grid = snapshot_dates(pd.Timestamp(CLEAN.start), pd.Timestamp(CLEAN.end), CLEAN.snapshot_cadence_days)
    assert set(truth[s.AS_OF]) == set(grid)  # horizons running past the end included
    assert truth[s.TRUE_PROBABILITY].between(0, 1).all()
    assert not truth.duplicated([s.LEAD_ID, s.AS_OF]).any()
    created = _instants(clean[s.LEADS].set_index(s.LEAD_ID)[s.CREATED_AT])
    closed = _instants(clean[s.OUTCOMES].set_index(s.LEAD_ID)[s.CLOSED_AT])
    for as_of in grid[::5]:
        is_open = (created < as_of) & (closed.isna() | (closed > as_of))
        assert set(truth.loc[truth[s.AS_OF] == as_of, s.LEAD_ID]) == set(is_open[is_open].index)


def test_truth_is_calibrated_against_what_happened(clean: dict[str, pd.DataFrame]) -> None:
    """The exact probability agrees with the realised outcome within the horizon, overall and by decile."""
    horizon = pd.Timedelta(days=CLEAN.horizon_days)
    truth = clean[s.GROUND_TRUTH]
    truth = truth[truth[s.AS_OF] + horizon <= pd.Timestamp(CLEAN.end, tz="UTC")]
    outcomes = clean[s.OUTCOMES].set_index(s.LEAD_ID)
    closed = _instants(outcomes[s.CLOSED_AT]).reindex(truth[s.LEAD_ID]).to_numpy()
    won = (outcomes[s.STATUS] == s.WON).reindex(truth[s.LEAD_ID]).to_numpy()
    label = won & (closed > truth[s.AS_OF].to_numpy()) & (closed <= (truth[s.AS_OF] + horizon).to_numpy())
    probability = truth[s.TRUE_PROBABILITY].to_numpy()
    assert label.mean() == pytest.approx(probability.mean(), rel=0.15)
    deciles = pd.qcut(probability, 5, labels=False, duplicates="drop")
    realised = pd.Series(label).groupby(deciles).mean()
    expected = pd.Series(probability).groupby(deciles).mean()
    assert np.allclose(realised, expected, atol=0.03)
    assert realised.is_monotonic_increasing


def test_truth_is_higher_for_leads_that_went_on_to_win(clean: dict[str, pd.DataFrame]) -> None:
    mean_truth = clean[s.GROUND_TRUTH].groupby(s.LEAD_ID)[s.TRUE_PROBABILITY].mean()
    status = clean[s.OUTCOMES].set_index(s.LEAD_ID)[s.STATUS].reindex(mean_truth.index)
    assert mean_truth[status == s.WON].mean() > 3 * mean_truth[status == s.LOST].mean()


# --------------------------------------------------------------------------- signal and noise
def test_won_leads_asked_for_more_demos(lead_outcomes: pd.DataFrame) -> None:
    by_status = lead_outcomes.groupby(s.STATUS)["demo_request"].mean()
    assert by_status[s.WON] > 3 * by_status[s.LOST]


def test_conversion_differs_by_source(lead_outcomes: pd.DataFrame) -> None:
    closed = lead_outcomes[lead_outcomes[s.STATUS] != s.OPEN]
    rates = closed.groupby(s.SOURCE)["won"].mean()
    assert rates["referral"] > 3 * rates["paid_social"]
    assert rates.max() - rates.min() > 0.15


def test_noise_columns_carry_no_signal(lead_outcomes: pd.DataFrame) -> None:
    overall = lead_outcomes["won"].mean()
    by_browser = lead_outcomes.groupby(BROWSER)["won"].agg(["mean", "size"])
    z = (by_browser["mean"] - overall) / np.sqrt(overall * (1 - overall) / by_browser["size"])
    assert (z.abs() < 3).all(), by_browser
    assert (by_browser["mean"] - overall).abs().max() < 0.05
    assert abs(np.corrcoef(lead_outcomes[CAMPAIGN_CODE], lead_outcomes["won"])[0, 1]) < 0.05


def test_pricing_views_tell_more_at_large_companies(lead_outcomes: pd.DataFrame) -> None:
    """The share of pricing views in a lead's activity separates won from lost at large companies only."""
    closed = lead_outcomes[lead_outcomes[s.STATUS] != s.OPEN]
    kinds = [column for column in closed.columns if column.startswith("page_") or column in s.ACTIVITY_TYPES]

    def won_over_lost(group: pd.DataFrame) -> float:
        events = group[kinds].sum(axis=1)
        active = group[events >= 5]
        share = active["page_pricing"] / events[events >= 5]
        return share[active["won"]].mean() / share[~active["won"]].mean()

    small, large = closed[closed[s.EMPLOYEES] < 50], closed[closed[s.EMPLOYEES] >= 1000]
    assert won_over_lost(large) > 1.5 > 1.1 > won_over_lost(small)
    # at small companies pricing pages are visited whatever the outcome
    assert (small["page_pricing"] > 0).mean() > 1.5 * (large["page_pricing"] > 0).mean()


def test_seniority_is_recoverable_from_titles_and_matters(lead_outcomes: pd.DataFrame) -> None:
    titles = lead_outcomes[s.JOB_TITLE].str.lower()
    level = pd.Series("individual", index=titles.index)
    undecided = pd.Series(True, index=titles.index)
    for name, pattern in SENIORITY_RULES:
        hit = titles.str.contains(pattern, regex=True) & undecided
        level[hit] = name
        undecided &= ~hit
    assert set(level) == {name for name, _ in SENIORITY_RULES} | {"individual"}
    won = lead_outcomes[lead_outcomes[s.STATUS] != s.OPEN].groupby(level)["won"].mean()
    assert won["director"] > 2 * won["junior"] and won["vp"] > won["individual"]
    assert re.search(r"[a-z]", "".join(lead_outcomes[s.JOB_TITLE].head(50)))  # written as people do


def test_free_mail_is_commoner_among_poor_fits(lead_outcomes: pd.DataFrame) -> None:
    free = lead_outcomes[s.EMAIL].str.contains(r"@(?:gmail|yahoo|hotmail|outlook)\.com$")
    assert 0.05 < free.mean() < 0.4
    students = lead_outcomes[s.JOB_TITLE].str.contains("student|intern", case=False)
    assert free[students].mean() > 2 * free[~students].mean()
    closed = lead_outcomes[s.STATUS] != s.OPEN
    assert lead_outcomes.loc[closed & free, "won"].mean() < lead_outcomes.loc[closed & ~free, "won"].mean()


def test_every_step_up_the_funnel_logs_its_marker_after_the_days_other_events() -> None:
    """Steps up log their state's marker event; steps down, staying and closing log nothing."""
    from leadml.data import synthetic as syn

    step_kind = np.full(syn.N_TRANSIENT, -1, dtype=np.int64)
    for target, name in syn.STEP_EVENT_BY_STATE.items():
        step_kind[target] = syn._kind_index(name)
    current = np.array([0, 1, 2, 2, 3, 3, 1], dtype=np.int64)
    next_state = np.array([1, 2, 3, 1, 3, syn.STATE_WON, syn.STATE_LOST], dtype=np.int8)
    last_second = np.array([0, 5_000, 80_000, 0, 0, 0, 0], dtype=np.int64)
    existing = (np.array([1]), np.array([5_000]), np.array([0], dtype=np.int64))
    owner_row, seconds, kinds = syn._with_step_events(
        np.random.default_rng(0), current, next_state, last_second, existing, step_kind
    )
    assert (owner_row[:1], seconds[:1], kinds[:1]) == (existing[0], existing[1], existing[2])
    assert owner_row[1:].tolist() == [0, 1, 2]  # only the three steps up
    names = [[kind for kind, _ in syn.EVENT_KINDS][k] for k in kinds[1:]]
    assert names == [syn.STEP_EVENT_BY_STATE[1], syn.STEP_EVENT_BY_STATE[2], syn.STEP_EVENT_BY_STATE[3]]
    assert (seconds[1:] >= last_second[:3]).all() and (seconds < syn.SECONDS_PER_DAY).all()
