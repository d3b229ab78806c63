"""Funnel forecast on generated CRMs whose true conversion rates and deal values are known."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from leadml.cli import CONFIG_DIR, run_forecast
from leadml.data import schema as s
from leadml.errors import LeadmlError, SettingsError
from leadml.reporting.forecast import (
    ALL,
    DEAL_VALUES,
    POOLED,
    TOTAL,
    ForecastSettings,
    canonical_plan,
    forecast_forward,
    historical_rates,
    rates_table,
)
from leadml.reporting.forecast_plans import allocate, capacity_plan, leads_needed, poisson_binomial_interval
from leadml.stages.forecast import forecast_stage, read_planned_csv

RATES = {"web_organic": 0.05, "event": 0.15, "referral": 0.30}  # true conversion within the horizon
LOG_VALUE = {"web_organic": 10.0, "event": 10.6, "referral": 10.3}  # deal values: lognormal(mu, SIGMA)
SIGMA = 0.8
HORIZON = 90
START = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
MONTH = 30  # days


def crm(
    rng: np.random.Generator,
    counts: Mapping[str, int],
    days: float,
    start: pd.Timestamp = START,
    prefix: str = "L",
    rates: Mapping[str, float] = RATES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leads created uniformly over ``days`` and the full truth of their outcomes.

    A converting lead is won 1-89 days after creation; of the others a quarter are won
    after the horizon (they must not count) and the rest are lost. ``truth_converted``
    and ``truth_value`` stay in the leads table for the test to read.
    """
    names = list(counts)
    codes = np.repeat(np.arange(len(names)), list(counts.values()))
    n = len(codes)
    created = start + pd.to_timedelta(rng.uniform(0, days, n), unit="D")
    rate = np.array([rates[k] for k in names])[codes]
    converted = rng.random(n) < rate
    won_later = ~converted & (rng.random(n) < 0.25)
    delay = np.where(
        converted,
        rng.uniform(1, HORIZON - 1, n),
        np.where(won_later, HORIZON + rng.uniform(1, 60, n), rng.uniform(1, 150, n)),
    )
    won = converted | won_later
    value = np.where(won, rng.lognormal(np.array([LOG_VALUE[k] for k in names])[codes], SIGMA), np.nan)
    ids = np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), 7)).astype(object)
    leads = pd.DataFrame(
        {
            s.LEAD_ID: ids,
            s.CREATED_AT: created,
            s.SOURCE: pd.Categorical.from_codes(codes, names),
            s.OWNER: np.array(["rep_0", "rep_1", "rep_2", "rep_3"], dtype=object)[np.arange(n) % 4],
            "truth_converted": converted,
            "truth_value": np.where(converted, value, 0.0),
        }
    )
    outcomes = pd.DataFrame(
        {
            s.LEAD_ID: ids,
            s.STATUS: np.where(won, s.WON, s.LOST),
            s.CLOSED_AT: created + pd.to_timedelta(delay, unit="D"),
            s.DEAL_VALUE: value,
        }
    )
    return leads, outcomes


def known_at(leads: pd.DataFrame, outcomes: pd.DataFrame, end: pd.Timestamp) -> tuple[pd.DataFrame, ...]:
    """What an export taken at ``end`` holds: no later leads, and outcomes closed by then only.

    ``outcomes`` is row-aligned with ``leads`` (as :func:`crm` makes them).
    """
    created = (leads[s.CREATED_AT] <= end).to_numpy()
    closed = (outcomes[s.CLOSED_AT] <= end).to_numpy()
    return leads[created].reset_index(drop=True), outcomes[created & closed].reset_index(drop=True)


def held_out_month(rng: np.random.Generator, per_month: Mapping[str, int]) -> dict[str, Any]:
    """12 months of history known at their end, and the next month's leads with their truth."""
    history_leads, history_outcomes = crm(rng, {k: 12 * v for k, v in per_month.items()}, 12 * MONTH)
    end = START + 12 * MONTH * DAY
    future, _ = crm(rng, per_month, MONTH, start=end, prefix="F")
    leads, outcomes = known_at(history_leads, history_outcomes, end)
    realised = future.groupby(s.SOURCE, observed=True)[["truth_converted", "truth_value"]].sum()
    return {
        "leads": leads,
        "outcomes": outcomes,
        "end": end,
        "planned": future[s.SOURCE].value_counts().to_dict(),
        "conversions": realised["truth_converted"].astype(int).to_dict(),
        "revenue": realised["truth_value"].to_dict(),
    }


def covered(table: pd.DataFrame, row: str, low: str, high: str, truth: float) -> bool:
    return bool(table.loc[row, low] <= truth <= table.loc[row, high])


# --------------------------------------------------------------------------- history
def test_history_counts_wins_within_the_horizon_of_mature_leads_only() -> None:
    end = pd.Timestamp("2025-06-01", tz="UTC")
    leads = pd.DataFrame(
        {
            s.LEAD_ID: ["a", "b", "c", "d", "e", "f"],
            s.CREATED_AT: [end - 200 * DAY] * 4 + [end - 30 * DAY, end - 100 * DAY],
            s.SOURCE: ["web_organic", "web_organic", "web_organic", "web_organic", "web_organic", None],
        }
    )
    outcomes = pd.DataFrame(
        {
            s.LEAD_ID: ["a", "b", "c", "e", "f"],
            s.STATUS: [s.WON, s.WON, s.LOST, s.WON, s.WON],
            s.CLOSED_AT: [end - 190 * DAY, end - 100 * DAY, end - 150 * DAY, end - 10 * DAY, end - 40 * DAY],
            s.DEAL_VALUE: [1000.0, 5000.0, np.nan, 7000.0, 3000.0],
        }
    )
    # a: won 10 days in; b: won 100 days in (after the horizon); c: lost; d: still open;
    # e: created 30 days before the end (immature, its win must not count); f: no source
    history = historical_rates(leads, outcomes, HORIZON, as_of=end)
    web = history.loc["web_organic"]
    assert (web["leads"], web["won"], web["not_converted"], web["immature_leads"]) == (4, 1, 3, 1)
    assert web["conversion_rate"] == pytest.approx(0.25)
    assert web["days_to_convert_mean"] == pytest.approx(10.0)
    np.testing.assert_array_equal(web[DEAL_VALUES], [1000.0])
    assert history.loc["unknown", "won"] == 1
    assert history.loc[ALL, "leads"] == 5 and history.loc[ALL, "won"] == 2
    assert list(history.index)[-1] == ALL
    assert DEAL_VALUES not in rates_table(history).columns
    # a backtest as of 150 days before the end knows nothing of b's and f's wins yet
    earlier = historical_rates(leads, outcomes, HORIZON, as_of=end - 150 * DAY)
    assert earlier.loc[ALL, "leads"] == 0 and earlier.loc["web_organic", "immature_leads"] == 4


def test_immature_leads_are_left_out_and_would_bias_the_rate_down() -> None:
    rng = np.random.default_rng(3)
    # lead volume doubles in the last quarter: many leads too young to have converted yet
    old_leads, old_outcomes = crm(rng, {"referral": 3000}, 9 * MONTH)
    new_leads, new_outcomes = crm(
        rng, {"referral": 3000}, 3 * MONTH, start=START + 9 * MONTH * DAY, prefix="N"
    )
    end = START + 12 * MONTH * DAY
    leads, outcomes = known_at(
        pd.concat([old_leads, new_leads], ignore_index=True),
        pd.concat([old_outcomes, new_outcomes], ignore_index=True),
        end,
    )
    history = historical_rates(leads, outcomes, HORIZON)  # as_of: the end of the data
    row = history.loc["referral"]
    se = np.sqrt(0.3 * 0.7 / row["leads"])
    assert abs(row["conversion_rate"] - 0.30) < 3 * se
    young = (leads[s.CREATED_AT] + HORIZON * DAY > pd.Timestamp(history.attrs["as_of"])).sum()
    assert row["immature_leads"] == young > 2000
    # what counting every lead with the wins known so far would have said
    wins = outcomes[(outcomes[s.STATUS] == s.WON)].merge(leads, on=s.LEAD_ID)
    naive = (wins[s.CLOSED_AT] <= wins[s.CREATED_AT] + HORIZON * DAY).sum() / len(leads)
    assert naive < 0.30 - 6 * se  # 0.22 here: a quarter of the rate lost


# --------------------------------------------------------------------------- forward
def test_forward_interval_contains_the_realised_conversions_of_a_held_out_month() -> None:
    month = held_out_month(np.random.default_rng(11), {"web_organic": 800, "event": 300, "referral": 150})
    history = historical_rates(month["leads"], month["outcomes"], HORIZON)
    forecast = forecast_forward(history, month["planned"], level=0.9, draws=20_000, seed=0)
    for source, truth in month["conversions"].items():
        assert covered(forecast, source, "conversions_low", "conversions_high", truth), source
        assert forecast.loc[source, "expected_conversions"] == pytest.approx(
            RATES[source] * month["planned"][source], rel=0.25
        )
    total = sum(month["conversions"].values())
    assert covered(forecast, TOTAL, "conversions_low", "conversions_high", total)
    assert covered(forecast, TOTAL, "revenue_low", "revenue_high", sum(month["revenue"].values()))
    assert forecast.loc[TOTAL, "planned_leads"] == sum(month["planned"].values())
    assert forecast.loc[TOTAL, "expected_conversions"] == pytest.approx(
        forecast.drop(index=TOTAL)["expected_conversions"].sum()
    )
    assert 1 < forecast.loc[TOTAL, "days_to_convert"] < HORIZON
    assert set(forecast.drop(index=TOTAL)["rate_from"]) == set(RATES)


def test_ninety_percent_intervals_cover_about_ninety_percent_of_held_out_months() -> None:
    """200 histories and held-out months: each source's and the total's 90% intervals (800 of each kind)."""
    rng = np.random.default_rng(2024)
    hits: dict[str, list[bool]] = {"conversions": [], "revenue": []}
    for trial in range(200):
        month = held_out_month(rng, {"web_organic": 400, "event": 200, "referral": 100})
        history = historical_rates(month["leads"], month["outcomes"], HORIZON)
        forecast = forecast_forward(history, month["planned"], level=0.9, draws=2000, seed=trial)
        truth = {
            "conversions": {**month["conversions"], TOTAL: sum(month["conversions"].values())},
            "revenue": {**month["revenue"], TOTAL: sum(month["revenue"].values())},
        }
        for kind, values in truth.items():
            for row, value in values.items():
                hits[kind].append(covered(forecast, row, f"{kind}_low", f"{kind}_high", value))
    coverage = {kind: float(np.mean(values)) for kind, values in hits.items()}
    # counts are discrete: an interval holding at least 90% of the draws may hold a little more
    assert 0.85 <= coverage["conversions"] <= 0.95, coverage
    assert 0.85 <= coverage["revenue"] <= 0.95, coverage


def test_intervals_include_the_uncertainty_of_a_short_history() -> None:
    """A quarter of history, ten times as many planned leads: binomial noise alone would under-cover."""
    rng = np.random.default_rng(7)
    planned = {"event": 3000, "referral": 3000}
    ours, binomial_only = [], []
    for trial in range(120):  # 240 intervals
        leads, outcomes = crm(rng, {"event": 300, "referral": 300}, 90)
        history = historical_rates(leads, outcomes, HORIZON, as_of=START + 200 * DAY)
        forecast = forecast_forward(history, planned, draws=2000, seed=trial)
        for source, n in planned.items():
            truth = rng.binomial(n, RATES[source])
            ours.append(covered(forecast, source, "conversions_low", "conversions_high", truth))
            estimate = history.loc[source, "conversion_rate"]
            low, high = stats.binom.ppf([0.05, 0.95], n, estimate)
            binomial_only.append(bool(low <= truth <= high))
    assert 0.85 <= np.mean(ours) <= 0.95
    assert np.mean(binomial_only) < 0.6  # the check above could fail: this is what failing looks like


def test_unknown_planned_source_is_an_error_naming_it_unless_pooled_is_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    month = held_out_month(np.random.default_rng(5), {"web_organic": 200, "event": 100, "referral": 50})
    history = historical_rates(month["leads"], month["outcomes"], HORIZON)
    with pytest.raises(LeadmlError, match=r"source 'podcast' does not appear in the history.*'event'"):
        forecast_forward(history, {"web_organic": 100, "podcast": 40})
    with caplog.at_level(logging.WARNING, logger="leadml.reporting.forecast"):
        forecast = forecast_forward(
            history, {"web_organic": 100, "podcast": 40}, unknown_source="pooled", draws=2000
        )
    assert "podcast" in caplog.text and "pooled" in caplog.text
    assert forecast.loc["podcast", "rate_from"] == POOLED
    assert forecast.loc["podcast", "values_from"] == POOLED
    pooled = history.loc[ALL]
    assert forecast.loc["podcast", "conversion_rate"] == pytest.approx(
        (pooled["won"] + 0.5) / (pooled["leads"] + 1.0)
    )
    with pytest.raises(LeadmlError, match="unknown_source must be one of"):
        forecast_forward(history, {"web_organic": 1}, unknown_source="guess")
    with pytest.raises(LeadmlError, match="whole number"):
        forecast_forward(history, {"web_organic": -3})


def test_a_source_with_only_young_leads_says_so_and_few_wins_resample_pooled_values() -> None:
    rng = np.random.default_rng(9)
    leads, outcomes = crm(rng, {"web_organic": 2000, "event": 2000}, 300)
    young, young_outcomes = crm(rng, {"referral": 50}, 20, start=START + 300 * DAY, prefix="Y")
    sparse, sparse_outcomes = crm(rng, {"referral": 40}, 100, prefix="S")
    leads = pd.concat([leads, young], ignore_index=True)
    outcomes = pd.concat([outcomes, young_outcomes], ignore_index=True)
    history = historical_rates(*known_at(leads, outcomes, START + 330 * DAY), HORIZON)
    with pytest.raises(LeadmlError, match="'referral' has only immature leads"):
        forecast_forward(history, {"referral": 10})
    leads = pd.concat([leads, sparse], ignore_index=True)
    outcomes = pd.concat([outcomes, sparse_outcomes], ignore_index=True)
    history = historical_rates(*known_at(leads, outcomes, START + 330 * DAY), HORIZON)
    assert 0 < history.loc["referral", "won_with_value"] < 20
    forecast = forecast_forward(history, {"referral": 100, "web_organic": 100}, draws=2000)
    assert forecast.loc["referral", "rate_from"] == "referral"
    assert forecast.loc["referral", "values_from"] == POOLED
    assert forecast.loc["web_organic", "values_from"] == "web_organic"


# --------------------------------------------------------------------------- reverse
def test_leads_needed_is_consistent_with_the_forward_forecast() -> None:
    month = held_out_month(np.random.default_rng(21), {"web_organic": 400, "event": 200, "referral": 100})
    history = historical_rates(month["leads"], month["outcomes"], HORIZON)
    target, draws = 3_000_000.0, 4000
    needed = leads_needed(history, target, confidence=0.9, draws=draws, seed=1)
    median = leads_needed(history, target, confidence=0.5, draws=draws, seed=1)
    for source in RATES:
        row = needed.loc[source]
        # in expectation: the fewest leads whose expected revenue reaches the target
        expected = forecast_forward(history, {source: int(row["alone_expected"])}, draws=draws, seed=1)
        fewer = forecast_forward(history, {source: int(row["alone_expected"]) - 1}, draws=draws, seed=1)
        assert expected.loc[source, "expected_revenue"] >= target > fewer.loc[source, "expected_revenue"]
        # with 90% confidence: the 10th percentile of the forward revenue is the target
        enough = forecast_forward(
            history, {source: int(row["alone_at_confidence"])}, level=0.8, draws=draws, seed=1
        )
        assert enough.loc[source, "revenue_low"] >= 0.99 * target
        short = forecast_forward(
            history, {source: int(0.98 * row["alone_at_confidence"])}, level=0.8, draws=draws, seed=1
        )
        assert short.loc[source, "revenue_low"] < target
        assert median.loc[source, "alone_at_confidence"] < row["alone_at_confidence"]
    # the mix (default: the historical shares of leads) split in whole leads
    plan = {k: int(needed.loc[k, "mix_at_confidence"]) for k in RATES}
    assert sum(plan.values()) == needed.loc[TOTAL, "mix_at_confidence"]
    mixed = forecast_forward(history, plan, level=0.8, draws=draws, seed=1)
    assert mixed.loc[TOTAL, "revenue_low"] >= 0.99 * target
    assert needed.loc["web_organic", "share"] == pytest.approx(4 / 7, abs=0.02)
    expected_plan = {k: int(needed.loc[k, "mix_expected"]) for k in RATES}
    mixed = forecast_forward(history, expected_plan, draws=draws, seed=1)
    assert mixed.loc[TOTAL, "expected_revenue"] == pytest.approx(target, rel=0.01)


def test_leads_needed_for_a_given_mix_and_its_errors() -> None:
    month = held_out_month(np.random.default_rng(22), {"web_organic": 200, "event": 100, "referral": 50})
    history = historical_rates(month["leads"], month["outcomes"], HORIZON)
    needed = leads_needed(history, 1e6, mix={"web_organic": 1, "referral": 3}, draws=2000)
    assert needed.loc["web_organic", "share"] == pytest.approx(0.25)
    assert needed.loc["event", "mix_at_confidence"] == 0
    total = needed.loc[TOTAL, "mix_at_confidence"]
    assert needed.loc["referral", "mix_at_confidence"] == pytest.approx(0.75 * total, abs=1)
    with pytest.raises(LeadmlError, match="'podcast'"):
        leads_needed(history, 1e6, mix={"podcast": 1})
    with pytest.raises(LeadmlError, match="revenue_target must be a positive number"):
        leads_needed(history, -5)
    with pytest.raises(LeadmlError, match="not reached"):
        leads_needed(history, 1e12, draws=200, max_leads=1000)


def test_allocate_splits_whole_leads_by_largest_remainder() -> None:
    assert allocate(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    assert sum(allocate(1001, {"a": 0.57, "b": 0.29, "c": 0.14}).values()) == 1001


# --------------------------------------------------------------------------- capacity
def _scored(rng: np.random.Generator, n: int) -> pd.DataFrame:
    probability = rng.beta(1.0, 6.0, n)
    tier = np.select([probability >= 0.3, probability >= 0.15, probability >= 0.05], ["A", "B", "C"], "D")
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i:05d}" for i in range(n)],
            "probability": probability,
            "tier": tier,
            "expected_value": probability * 10_000,
        }
    ).sample(frac=1.0, random_state=0)


def test_capacity_plan_works_the_highest_probabilities_and_its_threshold_reproduces_the_count() -> None:
    scored = _scored(np.random.default_rng(1), 2000)
    plan = capacity_plan(scored, reps=3, leads_per_rep_per_day=8, days=10)
    capacity = 3 * 8 * 10
    top = scored.nlargest(capacity, "probability")
    total = plan.loc[TOTAL]
    assert total["worked_leads"] == capacity and total["open_leads"] == 2000
    assert total["expected_wins"] == pytest.approx(top["probability"].sum())
    assert total["expected_value"] == pytest.approx(top["expected_value"].sum())
    threshold = plan.attrs["threshold"]
    assert threshold == total["probability_threshold"] == top["probability"].min()
    assert (scored["probability"] >= threshold).sum() == capacity
    worked = top["tier"].value_counts()
    for tier, row in plan.drop(index=TOTAL).iterrows():
        assert row["worked_leads"] == worked.get(tier, 0)
        assert row["open_leads"] == (scored["tier"] == tier).sum()
    assert list(plan.index) == ["A", "B", "C", "D", TOTAL]
    assert plan.loc["A", "worked_share"] == 1.0 and plan.loc["D", "worked_leads"] == 0
    assert total["wins_low"] < total["expected_wins"] < total["wins_high"]
    # more capacity than leads: every lead is worked
    everything = capacity_plan(scored, reps=10, leads_per_rep_per_day=50, days=10)
    assert everything.loc[TOTAL, "worked_leads"] == 2000
    assert everything.attrs["threshold"] == scored["probability"].min()


def test_capacity_plan_reports_ties_at_the_cut_and_checks_its_input() -> None:
    scored = pd.DataFrame(
        {s.LEAD_ID: list("abcde"), "probability": [0.9, 0.5, 0.5, 0.5, 0.1], "tier": list("ABBBD")}
    )
    plan = capacity_plan(scored, reps=1, leads_per_rep_per_day=1, days=2)
    assert plan.loc[TOTAL, "worked_leads"] == 2
    assert plan.attrs["threshold"] == 0.5 and plan.attrs["tied_at_threshold"] == 2
    assert plan.loc["B", "worked_leads"] == 1
    with pytest.raises(LeadmlError, match=r"missing column\(s\) \['tier'\]"):
        capacity_plan(scored.drop(columns="tier"), 1, 1, 1)
    with pytest.raises(LeadmlError, match="outside"):
        capacity_plan(scored.assign(probability=[1.5, 0, 0, 0, 0]), 1, 1, 1)


@pytest.mark.parametrize(("n", "high"), [(300, 0.05), (3000, 0.4)])
def test_poisson_binomial_interval_matches_simulation(n: int, high: float) -> None:
    """Small variance: the exact distribution; large: the normal approximation."""
    rng = np.random.default_rng(n)
    p = rng.uniform(0.0, high, n)
    low_k, high_k = poisson_binomial_interval(p, 0.9)
    if n <= 300:
        wins = (rng.random((20_000, n)) < p).sum(axis=1)
        q_low, q_high = np.quantile(wins, [0.05, 0.95], method="inverted_cdf")
        assert abs(low_k - q_low) <= 1 and abs(high_k - q_high) <= 1
        assert np.mean((wins >= low_k) & (wins <= high_k)) >= 0.89
    else:
        sd = np.sqrt((p * (1 - p)).sum())
        assert low_k == pytest.approx(p.sum() - 1.645 * sd, abs=1.5)
        assert high_k == pytest.approx(p.sum() + 1.645 * sd, abs=1.5)
    assert poisson_binomial_interval(np.array([1.0, 1.0, 0.0]), 0.9) == (2, 2)


# --------------------------------------------------------------------------- planned leads file
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "source,leads\nweb_organic,100\nevent,lots\n",
            r"row 2 \(line 3\): column 'leads' must be a whole number",
        ),
        ("source,leads\nweb_organic,100\nevent,-4\n", r"row 2 \(line 3\): column 'leads'"),
        ("source,leads\nweb_organic,100\n,4\n", r"row 2 \(line 3\): column 'source' is empty"),
        (
            "source,leads\nweb_organic,100\nweb_organic,4\n",
            r"row 2 \(line 3\): source 'web_organic' is planned twice \(also row 1\)",
        ),
        ("channel,leads\nweb_organic,100\n", r"missing column\(s\) \['source'\]"),
        ("source,leads\n", "has a header but no rows"),
        ("", "not a readable CSV"),
    ],
)
def test_a_bad_planned_leads_file_names_the_file_row_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "plan.csv"
    path.write_text(text)
    with pytest.raises(LeadmlError, match=message) as error:
        read_planned_csv(path)
    assert str(path) in str(error.value)


def test_a_planned_leads_file_is_read_and_its_names_normalised(tmp_path: Path) -> None:
    path = tmp_path / "plan.csv"
    path.write_text("Source, Leads\nPaid Search, 120\nweb_organic,80.0\n")
    plan = read_planned_csv(path)
    assert plan == {"Paid Search": 120, "web_organic": 80}
    assert canonical_plan(plan, {}) == {"paid_search": 120, "web_organic": 80}
    assert canonical_plan({"PPC": 5}, {"ppc": "paid_search"}) == {"paid_search": 5}
    with pytest.raises(LeadmlError, match="same source 'paid_search'"):
        canonical_plan({"paid search": 1, "Paid-Search": 2}, {})
    with pytest.raises(LeadmlError, match="does not exist"):
        read_planned_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- stage and CLI
def _cfg(root: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("forecast", [f"paths.root={root}", "forecast.draws=2000", *overrides])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Interim tables of a small CRM and one scored run, where the configs expect them."""
    root = tmp_path_factory.mktemp("forecast")
    month = held_out_month(np.random.default_rng(31), {"web_organic": 200, "event": 100, "referral": 50})
    interim = root / "data/interim/synthetic"
    interim.mkdir(parents=True)
    month["leads"].drop(columns=["truth_converted", "truth_value"]).to_parquet(interim / "leads.parquet")
    month["outcomes"].to_parquet(interim / "outcomes.parquet")
    (interim / "manifest.json").write_text("{}")
    partition = root / "data/scored/synthetic/as_of=2024-12-27"
    partition.mkdir(parents=True)
    _scored(np.random.default_rng(2), 500).to_parquet(partition / "part-0.parquet")
    return root


def test_the_stage_writes_every_table_and_the_cli_prints_them(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(
        project,
        [
            f"forecast.output_dir={tmp_path}/out",
            "forecast.planned={web_organic: 300, Event: 100}",
            "forecast.revenue_target=800000",
            "forecast.mix={web_organic: 1, referral: 1}",
            "forecast.reps=2",
        ],
    )
    summary = run_forecast(cfg)
    printed = capsys.readouterr().out
    assert "400 planned leads (forecast.planned)" in printed
    assert "2 reps work 200 of 500 open leads (probability >= " in printed
    assert f"forecast.json to {tmp_path}/out" in printed
    assert summary.planned == {"web_organic": 300, "event": 100}
    assert summary.capacity_leads == 2 * 20 * 5
    for name in ("history", "forward", "reverse", "capacity"):
        table = pd.read_csv(tmp_path / f"out/{name}.csv", index_col=0)
        assert table.index[-1] in (ALL, TOTAL)
        assert list(table.columns) == list(getattr(summary, name).columns)
    record = json.loads((tmp_path / "out/forecast.json").read_text())
    assert record["settings"]["planned"] == {"web_organic": 300, "Event": 100}
    assert record["forward"][-1]["source"] == TOTAL
    assert record["revenue_target"] == 800000
    assert summary.reverse.loc["referral", "share"] == 0.5


def test_the_stage_defaults_to_the_recent_pace_and_without_a_scored_run_skips_capacity(
    project: Path, tmp_path: Path
) -> None:
    cfg = _cfg(project, [f"forecast.output_dir={tmp_path}", f"forecast.scored_dir={tmp_path}/none"])
    summary = forecast_stage(OmegaConf.to_container(cfg, resolve=True), project)
    assert summary.capacity is None and "capacity" not in summary.files
    assert summary.planned_from.startswith("the pace of the last 90 days")
    # 12 months at 200/100/50 a month: about that many per 30 days
    assert summary.planned["web_organic"] == pytest.approx(200, rel=0.25)
    assert summary.revenue_target == pytest.approx(summary.forward.loc[TOTAL, "expected_revenue"])


def test_the_stage_names_a_bad_planned_file_and_an_unknown_setting(project: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text("source,leads\nweb_organic,10\nevent,1e\n")
    cfg = _cfg(project, [f"forecast.output_dir={tmp_path}", f"forecast.planned_csv={plan}"])
    with pytest.raises(LeadmlError, match=r"plan.csv, row 2 \(line 3\): column 'leads'"):
        forecast_stage(OmegaConf.to_container(cfg, resolve=True), project)
    cfg = _cfg(project, [f"forecast.output_dir={tmp_path}", "forecast.planned={podcast: 10}"])
    with pytest.raises(LeadmlError, match="source 'podcast' does not appear"):
        forecast_stage(OmegaConf.to_container(cfg, resolve=True), project)
    with pytest.raises(SettingsError, match="forcast_days"):
        ForecastSettings.from_mapping({"forcast_days": 3})
    with pytest.raises(LeadmlError, match="not both"):
        ForecastSettings.from_mapping({"planned": {"web_organic": 1}, "planned_csv": "plan.csv"})


def test_the_stage_groups_by_another_leads_column_with_forecast_by(project: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        project, [f"forecast.output_dir={tmp_path}", "forecast.by=owner", "forecast.planned={rep_0: 100}"]
    )
    summary = forecast_stage(OmegaConf.to_container(cfg, resolve=True), project)
    history = summary.history
    assert history.index.name == "owner" and set(history.index) == {"rep_0", "rep_1", "rep_2", "rep_3", ALL}
    assert history.loc[ALL, "won"] == history.drop(index=ALL)["won"].sum()
    assert summary.grouping == "owner (forecast.by)" and summary.forward.loc["rep_0", "planned_leads"] == 100
    cfg = _cfg(project, [f"forecast.output_dir={tmp_path}", "forecast.by=channel"])
    with pytest.raises(LeadmlError, match=r"forecast.by='channel' is not a column of the leads table"):
        forecast_stage(OmegaConf.to_container(cfg, resolve=True), project)


def test_the_config_follows_the_features_horizon_and_the_paths() -> None:
    cfg = _cfg(Path("/srv/leadml"), ["features.horizon_days=60"])
    settings = ForecastSettings.from_mapping(OmegaConf.to_container(cfg.forecast, resolve=True))
    assert settings.horizon_days == 60
    assert settings.input_dir == "/srv/leadml/data/interim/synthetic"
    assert settings.scored_dir == "/srv/leadml/data/scored/synthetic"
    assert settings.output_dir == "/srv/leadml/reports/forecast/synthetic"
