"""The scoring programme over time (leadml.reporting.kpis) on small frames whose figures are counted by hand.

Five leads scored on four nights of two months (September and October 2025), reported on
2025-12-01 with a 90-day horizon:

| lead | nights (tier, probability)            | outcome                         |
|------|---------------------------------------|---------------------------------|
| L1   | 09-01 (A, 0.50), 09-15 (B, 0.20)      | won 09-21, 1,000                |
| L2   | 09-01 (B, 0.20), 10-01 (A, 0.40)      | won 10-11, 3,000                |
| L3   | 09-01 (C, 0.05)                       | lost 09-10                      |
| L4   | 10-01 (D, 0.01)                       | open (its horizon ends 12-30)   |
| L5   | 09-01 (A, 0.35)                       | open (its horizon ended 11-30)  |
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.adapters.sinks import earlier_predictions
from leadml.data import schema as s
from leadml.data.features import LABEL
from leadml.errors import LeadmlError, SettingsError
from leadml.modelling.evaluate import SalesCapacity, TierSettings
from leadml.modelling.scorer import PROBABILITY
from leadml.reporting import kpis
from leadml.reporting.kpis import ALL_TIERS, KpiSettings
from leadml.reporting.leadership import flat_prediction_outcomes, prediction_outcomes

AS_OF = pd.Timestamp("2025-12-01", tz="UTC")
TIERS = ["A", "B", "C", "D"]
HORIZON = 90


def _day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _earlier() -> pd.DataFrame:
    rows = [
        ("L1", "2025-09-01", "A", 0.50), ("L1", "2025-09-15", "B", 0.20),
        ("L2", "2025-09-01", "B", 0.20), ("L2", "2025-10-01", "A", 0.40),
        ("L3", "2025-09-01", "C", 0.05),
        ("L4", "2025-10-01", "D", 0.01),
        ("L5", "2025-09-01", "A", 0.35),
    ]  # fmt: skip
    return pd.DataFrame(
        {
            s.LEAD_ID: [r[0] for r in rows],
            PROBABILITY: [r[3] for r in rows],
            "tier": [r[2] for r in rows],
            "run_date": [_day(r[1]) for r in rows],
        }
    )


def _outcomes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.LEAD_ID: ["L1", "L2", "L3"],
            s.STATUS: [s.WON, s.WON, s.LOST],
            s.CLOSED_AT: [_day("2025-09-21"), _day("2025-10-11"), _day("2025-09-10")],
            s.DEAL_VALUE: [1000.0, 3000.0, np.nan],
        }
    )


def _created() -> pd.Series:
    days = {
        "L1": "2025-08-20",
        "L2": "2025-08-25",
        "L3": "2025-09-01",
        "L4": "2025-09-28",
        "L5": "2025-08-30",
    }
    return pd.Series({lead: _day(day) for lead, day in days.items()})


def _judged() -> pd.DataFrame:
    judged = prediction_outcomes(_earlier(), AS_OF, _outcomes(), HORIZON)
    return kpis.with_closing(judged, _outcomes(), AS_OF)


def _row(table: pd.DataFrame, period: str, tier: str) -> pd.Series:
    found = table[(table["period"] == period) & (table["tier"] == tier)]
    assert len(found) == 1, (period, tier, table[["period", "tier"]])
    return found.iloc[0]


# --------------------------------------------------------------------------- per period
def test_each_month_counts_every_lead_once_by_its_first_prediction() -> None:
    result = kpis.kpis(_judged(), KpiSettings(), TIERS, _created())
    september, october = _row(result.table, "2025-09", ALL_TIERS), _row(result.table, "2025-10", ALL_TIERS)
    # September: L1 (A; its 09-15 night in B is not counted again), L2 (B), L3 (C), L5 (A)
    assert september["leads"] == 4
    assert september["sales_ready_share"] == pytest.approx(3 / 4)  # L1, L2, L5 in A or B
    assert september["resolved"] == 4 and september["won"] == 2
    assert september["conversion_rate"] == pytest.approx(0.5)
    assert september["expected"] == pytest.approx(0.50 + 0.20 + 0.05 + 0.35)
    assert september["closed"] == 3 and september["close_rate"] == pytest.approx(2 / 3)
    assert september["average_deal_size"] == pytest.approx(2000.0)
    assert september["median_days_to_close"] == pytest.approx(30.0)  # 20 (L1) and 40 (L2) days
    # October: L2 (A, won 10 days later) and L4 (D, its horizon still running)
    assert october["leads"] == 2 and october["sales_ready_share"] == pytest.approx(0.5)
    assert october["resolved"] == 1 and october["resolved_share"] == pytest.approx(0.5)
    assert october["conversion_rate"] == pytest.approx(1.0)
    assert october["expected"] == pytest.approx(0.40)
    assert october["average_deal_size"] == pytest.approx(3000.0)
    assert october["median_days_to_close"] == pytest.approx(10.0)
    assert list(result.overall()["period"]) == ["2025-09", "2025-10"]


def test_figures_per_tier() -> None:
    table = kpis.kpis(_judged(), KpiSettings(), TIERS).table
    a, b, c = (_row(table, "2025-09", tier) for tier in "ABC")
    assert (a["leads"], a["resolved"], a["won"]) == (2, 2, 1)  # L1 won, L5 ran out its horizon
    assert a["conversion_rate"] == pytest.approx(0.5)
    assert a["closed"] == 1 and a["close_rate"] == pytest.approx(1.0)
    assert (a["average_deal_size"], a["median_days_to_close"]) == (pytest.approx(1000.0), pytest.approx(20.0))
    assert b["leads"] == 1 and b["conversion_rate"] == pytest.approx(1.0)  # L2 only: L1 was in A first
    assert (b["average_deal_size"], b["median_days_to_close"]) == (pytest.approx(3000.0), pytest.approx(40.0))
    assert c["conversion_rate"] == 0 and c["close_rate"] == 0 and math.isnan(c["average_deal_size"])
    d = _row(table, "2025-10", "D")
    assert d["resolved"] == 0 and math.isnan(d["conversion_rate"])  # nothing to measure: not 0%
    # tiers best first within a period, the period's row over every tier last
    assert list(table.loc[table["period"] == "2025-09", "tier"]) == ["A", "B", "C", ALL_TIERS]


def test_a_win_after_the_horizon_is_closed_but_not_converted() -> None:
    outcomes = _outcomes()
    outcomes.loc[outcomes[s.LEAD_ID] == "L2", s.CLOSED_AT] = _day("2025-11-25")  # 85 days after 09-01
    judged = kpis.with_closing(prediction_outcomes(_earlier(), AS_OF, outcomes, 60), outcomes, AS_OF)
    b = _row(kpis.kpis(judged, KpiSettings(), TIERS).table, "2025-09", "B")
    assert b["resolved"] == 1 and b["won"] == 0  # not won within the 60 days its probability was about
    assert b["closed_won"] == 1 and b["close_rate"] == pytest.approx(1.0)  # but sales closed it
    assert b["median_days_to_close"] == pytest.approx(85.0)


def test_weeks_and_quarters() -> None:
    weekly = kpis.kpis(_judged(), KpiSettings(period="week"), TIERS).table
    # L1 was scored in two weeks: once in each; 2025-09-15 is a Monday
    third = _row(weekly, "week of 2025-09-15", ALL_TIERS)
    assert third["leads"] == 1 and third["sales_ready_share"] == 1.0
    assert _row(weekly, "week of 2025-09-15", "B")["leads"] == 1
    assert _row(weekly, "week of 2025-09-01", ALL_TIERS)["leads"] == 4
    quarterly = kpis.kpis(_judged(), KpiSettings(period="quarter"), TIERS).overall()
    assert list(quarterly["period"]) == ["2025 Q3", "2025 Q4"]
    assert list(quarterly["leads"]) == [4, 2]


def test_cohorts_by_month_of_creation() -> None:
    cohorts = kpis.kpis(_judged(), KpiSettings(), TIERS, _created()).cohorts
    assert cohorts is not None
    assert list(cohorts["cohort"]) == ["2025-08", "2025-09"]
    august, september = cohorts.iloc[0], cohorts.iloc[1]
    # August: L1, L2, L5, each by its first night (A, B, A); L1 and L2 won within the horizon
    assert (august["leads"], august["resolved"], august["won"]) == (3, 3, 2)
    assert august["conversion_rate"] == pytest.approx(2 / 3)
    assert august["sales_ready_share"] == pytest.approx(1.0)
    # September: L3 (lost) and L4 (open, D)
    assert (september["leads"], september["resolved"], september["won"]) == (2, 1, 0)
    assert september["sales_ready_share"] == 0


def test_the_latest_period_as_metrics() -> None:
    metrics, start = kpis.latest_metrics(kpis.kpis(_judged(), KpiSettings(), TIERS))
    assert start == pd.Timestamp("2025-10-01")
    assert metrics["kpi_leads"] == 2 and metrics["kpi_conversion_rate"] == pytest.approx(1.0)
    assert metrics["kpi_conversion_rate_A"] == pytest.approx(1.0)
    assert math.isnan(metrics["kpi_conversion_rate_D"])
    assert metrics["kpi_average_deal_size"] == pytest.approx(3000.0)


def test_nothing_resolved_yet_is_empty() -> None:
    judged = kpis.with_closing(
        prediction_outcomes(_earlier(), _day("2025-09-02"), _outcomes(), HORIZON),
        _outcomes(),
        _day("2025-09-02"),
    )
    assert kpis.kpis(judged, KpiSettings(), TIERS).empty
    no_runs = prediction_outcomes(_earlier().iloc[:0], AS_OF, _outcomes(), HORIZON)
    result = kpis.kpis(no_runs, KpiSettings(), TIERS, _created())
    assert result.empty and result.table.empty and result.cohorts is not None and result.cohorts.empty
    assert kpis.latest_metrics(result) == ({}, None)


def test_a_flat_table_has_conversions_but_no_closing_figures() -> None:
    labelled = pd.DataFrame({s.LEAD_ID: ["L1", "L2", "L3"], LABEL: [1, 0, 0]})
    judged = flat_prediction_outcomes(_earlier(), labelled)
    result = kpis.kpis(judged, KpiSettings(), TIERS)
    assert not result.closing and result.cohorts is None
    september = _row(result.table, "2025-09", ALL_TIERS)
    assert (september["resolved"], september["won"]) == (3, 1)  # L1, L2, L3 are labelled; L5 is not
    assert september["expected"] == pytest.approx(0.50 + 0.20 + 0.05)
    assert result.table["close_rate"].isna().all()
    assert "kpi_close_rate" not in kpis.latest_metrics(result)[0]


def test_a_run_without_tiers_counts_as_unknown() -> None:
    judged = _judged().assign(tier=lambda f: f["tier"].where(f["run_date"] > _day("2025-09-01")))
    table = kpis.kpis(judged, KpiSettings(), TIERS).table
    assert _row(table, "2025-09", kpis.UNKNOWN_TIER)["leads"] == 4
    assert _row(table, "2025-09", ALL_TIERS)["sales_ready_share"] == 0


# --------------------------------------------------------------------------- settings
def test_settings_are_checked_naming_the_key() -> None:
    assert KpiSettings.from_mapping(None) == KpiSettings()
    assert KpiSettings.from_mapping({"period": "week", "sales_ready_tier": "A"}).ready_tiers(TIERS) == ("A",)
    assert KpiSettings().ready_tiers(TIERS) == ("A", "B")
    with pytest.raises(
        LeadmlError, match=r"report\.kpis\.period must be one of month, week, quarter, got 'year'"
    ):
        KpiSettings.from_mapping({"period": "year"})
    with pytest.raises(SettingsError, match=r"report\.kpis setting\(s\) \['periods'\]"):
        KpiSettings.from_mapping({"periods": "month"})
    with pytest.raises(LeadmlError, match=r"report\.kpis\.sales_ready_tier: 'Z' is not a tier .*A, B, C, D"):
        KpiSettings(sales_ready_tier="Z").ready_tiers(TIERS)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"leads": 0}, r"tiers\.sales_capacity\.leads must be a whole number >= 1"),
        ({"leads": "many"}, r"tiers\.sales_capacity\.leads must be a whole number"),
        ({"leads": 2.5}, r"tiers\.sales_capacity\.leads must be a whole number"),
        ({"cost_per_lead": -1}, r"tiers\.sales_capacity\.cost_per_lead must be a number >= 0"),
        ({"cost": 1}, r"unknown tiers\.sales_capacity setting\(s\) \['cost'\]"),
        (5, r"tiers\.sales_capacity must be a mapping"),
    ],
)
def test_the_sales_capacity_is_checked_naming_the_key(mapping: object, message: str) -> None:
    with pytest.raises(LeadmlError, match=message):
        TierSettings.from_mapping({"method": "probability", "sales_capacity": mapping})


def test_the_shipped_tier_configs_read() -> None:
    import yaml

    from leadml.adapters.layout import CONFIG_DIR

    for name in ("probability", "capacity"):
        settings = TierSettings.from_mapping(
            yaml.safe_load((Path(CONFIG_DIR) / "tiers" / f"{name}.yaml").read_text())
        )
        assert settings.method == name and settings.sales_capacity == SalesCapacity(
            leads=None, cost_per_lead=0.0
        )
    assert TierSettings.from_mapping(
        {"sales_capacity": {"leads": 40, "cost_per_lead": 25}}
    ).sales_capacity == (SalesCapacity(leads=40, cost_per_lead=25.0))


# --------------------------------------------------------------------------- the threshold for the capacity
def _values(values: list[float]) -> kpis.DealValues:
    return kpis.DealValues(np.array(values, dtype=np.float64), len(values), 0, 0, 0)


P = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
V = [100.0, 1000.0, 100.0, 100.0, 100.0]  # expected revenue 50, 400, 30, 20, 10


def test_the_capacity_caps_the_leads_worked() -> None:
    choice = kpis.revenue_threshold(P, _values(V), 0.2, SalesCapacity(leads=2))
    assert choice.capacity == 2 and choice.configured
    assert choice.best.threshold == pytest.approx(0.4) and choice.best.leads == 2
    assert choice.best.expected_revenue == pytest.approx(450.0)
    assert choice.best.expected_conversions == pytest.approx(0.9)
    assert choice.today.threshold == 0.2 and choice.today.leads == 4
    assert choice.today.expected_revenue == pytest.approx(500.0)


def test_a_cost_per_lead_stops_before_the_capacity() -> None:
    # less 35 a lead: 15, 365, -5, -15, -25; the third lead costs more than it brings
    choice = kpis.revenue_threshold(P, _values(V), 0.2, SalesCapacity(leads=5, cost_per_lead=35.0))
    assert choice.best.threshold == pytest.approx(0.4) and choice.best.leads == 2
    assert choice.best.expected_revenue == pytest.approx(380.0)
    assert choice.today.expected_revenue == pytest.approx(15 + 365 - 5 - 15)


def test_without_a_configured_capacity_the_team_works_as_many_as_the_sales_ready_tiers_hold() -> None:
    choice = kpis.revenue_threshold(P, _values(V), 0.3, SalesCapacity())
    assert choice.capacity == 3 and not choice.configured
    assert choice.best.leads == 3 and choice.best.threshold == pytest.approx(0.3)


def test_ties_are_worked_together_or_not_at_all() -> None:
    p = np.array([0.5, 0.5, 0.1])
    choice = kpis.revenue_threshold(p, _values([100.0, 100.0, 100.0]), 0.1, SalesCapacity(leads=1))
    assert choice.best.threshold is None and choice.best.leads == 0 and choice.best.expected_revenue == 0
    costly = kpis.revenue_threshold(P, _values(V), 0.2, SalesCapacity(cost_per_lead=10_000.0))
    assert costly.best.threshold is None and costly.best.leads == 0


def test_deal_values_own_then_tier_average_then_overall_average() -> None:
    won = pd.DataFrame({"tier": ["A", "A", "B"], "deal_value": [1000.0, 3000.0, 600.0]})
    values = kpis.deal_values(pd.Series(["A", "B", "C"]), pd.Series([500.0, np.nan, np.nan]), won)
    np.testing.assert_allclose(values.values, [500.0, 600.0, 4600.0 / 3])
    assert (values.estimated, values.tier_average, values.overall_average, values.missing) == (1, 1, 1, 0)
    none = kpis.deal_values(pd.Series(["A", "B"]), None, won.iloc[:0])
    assert none.missing == 2 and np.isnan(none.values).all()


# --------------------------------------------------------------------------- the tiers of earlier runs
def test_earlier_predictions_read_the_tier_and_older_runs_without_it(tmp_path: Path) -> None:
    for day, frame in (
        ("2025-09-01", pd.DataFrame({s.LEAD_ID: ["L1"], PROBABILITY: [0.5]})),  # before tiers were stored
        ("2025-09-02", pd.DataFrame({s.LEAD_ID: ["L1", "L2"], PROBABILITY: [0.4, 0.1], "tier": ["A", "C"]})),
        (
            "2025-09-03",
            pd.DataFrame({s.LEAD_ID: ["L9"], PROBABILITY: [0.9], "tier": ["A"]}),
        ),  # the reported run
    ):
        folder = tmp_path / f"as_of={day}"
        folder.mkdir()
        frame.to_parquet(folder / "part-0.parquet", index=False)
    as_of = _day("2025-09-03")
    plain = earlier_predictions(tmp_path, as_of)
    assert list(plain.columns) == [s.LEAD_ID, PROBABILITY, "run_date"] and len(plain) == 3
    tiers = earlier_predictions(tmp_path, as_of, columns=["tier"])
    assert list(tiers.columns) == [s.LEAD_ID, PROBABILITY, "tier", "run_date"]
    assert tiers["tier"].isna().tolist() == [True, False, False]
    assert tiers["tier"].dropna().tolist() == ["A", "C"]
    assert list(earlier_predictions(tmp_path / "none", as_of, columns=["tier"]).columns) == [
        s.LEAD_ID, PROBABILITY, "tier", "run_date",
    ]  # fmt: skip
