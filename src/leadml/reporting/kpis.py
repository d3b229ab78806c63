"""The scoring programme over time: KPIs per period and the threshold worth working to.

The leadership report's "The scoring programme over time" and the figures it logs to MLflow.
Everything here is pure: the earlier nights' predictions judged against their outcomes
(:func:`leadml.reporting.leadership.prediction_outcomes` or ``flat_prediction_outcomes``, read
with their ``tier``) in, tables out.

- :func:`kpi_table`: per period (month by default) and tier, the leads scored, how many have an
  outcome, the conversion rate of those, expected against realised conversions, the share that
  reached the sales-ready tiers and, with CRM outcomes, the close rate, average deal size and
  median days to close.
- :func:`cohort_table`: the same leads by the period they were created in.
- :func:`revenue_threshold`: the probability cut that maximises the expected revenue of tonight's
  leads above it for the sales team's capacity, next to today's sales-ready threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.evaluate import SalesCapacity
from leadml.modelling.scorer import PROBABILITY

# report.kpis.period: the pandas period of each choice (weeks run Monday to Sunday)
PERIODS = {"month": "M", "week": "W", "quarter": "Q"}
ALL_TIERS = "all"  # the tier column of a period's row over every tier
UNKNOWN_TIER = "(unknown)"  # a prediction of a run that stored no tier
# the figures of kpi_table that need CRM outcomes (closing dates and deal values)
CLOSING_COLUMNS = ("closed", "closed_won", "close_rate", "average_deal_size", "median_days_to_close")
KPI_COLUMNS = (
    "period", "period_start", "tier", "leads", "sales_ready_share", "resolved", "resolved_share", "won",
    "conversion_rate", "expected", *CLOSING_COLUMNS,
)  # fmt: skip
COHORT_COLUMNS = (
    "cohort", "cohort_start", "leads", "sales_ready_share", "resolved", "won", "conversion_rate", "expected",
)  # fmt: skip


@dataclass(frozen=True)
class KpiSettings:
    """``report.kpis``: the period of the KPI table and the lowest tier sales works (A and B for B)."""

    period: str = "month"
    sales_ready_tier: str = "B"

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> KpiSettings:
        values = {k: v for k, v in known_settings(cls, mapping, "report.kpis").items() if v is not None}
        period = values.get("period", cls.period)
        if period not in PERIODS:
            raise LeadmlError(f"report.kpis.period must be one of {', '.join(PERIODS)}, got {period!r}")
        return cls(
            period=str(period), sales_ready_tier=str(values.get("sales_ready_tier", cls.sales_ready_tier))
        )

    def ready_tiers(self, tiers: Sequence[str]) -> tuple[str, ...]:
        """The sales-ready tiers: ``sales_ready_tier`` and those above it in ``tiers`` (best first)."""
        tiers = [str(t) for t in tiers]
        if self.sales_ready_tier not in tiers:
            raise LeadmlError(
                f"report.kpis.sales_ready_tier: {self.sales_ready_tier!r} is not a tier of the scored run "
                f"(its tiers: {', '.join(tiers)})"
            )
        return tuple(tiers[: tiers.index(self.sales_ready_tier) + 1])


# --------------------------------------------------------------------------- periods
def period_start(dates: pd.Series, period: str) -> pd.Series:
    """The first day (midnight, no time zone) of the ``period`` each date falls in (UTC)."""
    stamps = pd.to_datetime(dates, utc=True).dt.tz_localize(None)
    return stamps.dt.to_period(PERIODS[period]).dt.start_time


def period_label(start: pd.Timestamp, period: str) -> str:
    """A period as a sales manager reads it: "2025-09", "2025 Q3", "week of 2025-09-01"."""
    if period == "month":
        return f"{start:%Y-%m}"
    if period == "quarter":
        return f"{start.year} Q{start.quarter}"
    return f"week of {start:%Y-%m-%d}"


def first_predictions(judged: pd.DataFrame, period: str) -> pd.DataFrame:
    """Each lead's first prediction in each period, with ``period_start``.

    A lead stays open for weeks and is scored every night: counted per prediction, a lead
    scored 30 nights would weigh 30 times as much as one that closed after a night, and the
    slow leads (mostly the losses) would drown the period's rates. Its first prediction in
    the period is how the lead looked when the period first saw it, so each lead counts once
    per period, with the tier sales saw first.
    """
    ordered = judged.sort_values("run_date", kind="stable")
    ordered = ordered.assign(period_start=period_start(ordered["run_date"], period))
    return ordered.drop_duplicates([s.LEAD_ID, "period_start"], keep="first").reset_index(drop=True)


# --------------------------------------------------------------------------- closing
def with_closing(judged: pd.DataFrame, outcomes: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """``judged`` with what the CRM says happened to each lead by ``as_of``, whenever it came:
    ``closed`` (won or lost before ``as_of``), ``closed_won``, ``deal_value`` and
    ``days_to_close`` (from the prediction's run date) of a win; NaN otherwise.

    Unlike ``won`` (won within the horizon of the run, what the probability is about) these
    are the sales team's figures: a win after the horizon is still a closed deal.
    """
    known = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    closed_at = pd.to_datetime(judged[s.LEAD_ID].map(known[s.CLOSED_AT]), utc=True)
    status = judged[s.LEAD_ID].map(known[s.STATUS])
    closed = (status.isin([s.WON, s.LOST]) & closed_at.notna() & (closed_at < as_of)).to_numpy()
    closed_won = closed & (status == s.WON).to_numpy()
    values = (
        pd.to_numeric(judged[s.LEAD_ID].map(known[s.DEAL_VALUE]), errors="coerce")
        if s.DEAL_VALUE in known.columns
        else pd.Series(np.nan, index=judged.index)
    )
    days = (closed_at - pd.to_datetime(judged["run_date"], utc=True)).dt.total_seconds() / 86400
    return judged.assign(
        closed=closed,
        closed_won=closed_won,
        deal_value=values.where(closed_won).to_numpy(dtype=np.float64),
        days_to_close=days.where(closed_won).to_numpy(dtype=np.float64),
    )


# --------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class Kpis:
    """The KPI tables of the earlier nights' predictions; ``closing`` says whether the CRM's
    closing figures (close rate, deal size, days to close) are in them (a flat table has none)."""

    table: pd.DataFrame  # KPI_COLUMNS: one row per period and tier, and per period over all tiers
    cohorts: pd.DataFrame | None  # COHORT_COLUMNS; None: the leads have no creation date
    period: str
    ready_tiers: tuple[str, ...]
    closing: bool

    @property
    def empty(self) -> bool:
        """No earlier prediction has an outcome yet: nothing to measure."""
        return self.table.empty or int(self.table.loc[self.table["tier"] == ALL_TIERS, "resolved"].sum()) == 0

    def overall(self) -> pd.DataFrame:
        """One row per period, over every tier, oldest first."""
        return self.table[self.table["tier"] == ALL_TIERS].reset_index(drop=True)

    def conversion_by_tier(self, tiers: Sequence[str]) -> pd.DataFrame:
        """Periods x tiers (in ``tiers`` order, then any other): each tier's conversion rate."""
        rows = self.table[self.table["tier"] != ALL_TIERS]
        wide = rows.pivot(index="period", columns="tier", values="conversion_rate")
        order = [t for t in tiers if t in wide.columns] + sorted(set(wide.columns) - set(tiers))
        periods = self.overall()["period"]
        return wide.reindex(index=periods, columns=order)


def _figures(frame: pd.DataFrame, by: list[str], ready: Sequence[str], closing: bool) -> pd.DataFrame:
    resolved = frame["resolved"].to_numpy(dtype=bool)
    parts = frame[by].assign(
        lead=1,
        resolved=resolved.astype(np.int64),
        won=(resolved & (frame["won"].to_numpy() == 1)).astype(np.int64),
        expected=np.where(resolved, frame[PROBABILITY].to_numpy(dtype=np.float64), 0.0),
        ready=frame["tier"].isin(ready).to_numpy(dtype=np.float64),
    )
    aggregations: dict[str, tuple[str, str]] = {
        "leads": ("lead", "sum"), "sales_ready_share": ("ready", "mean"), "resolved": ("resolved", "sum"),
        "won": ("won", "sum"), "expected": ("expected", "sum"),
    }  # fmt: skip
    if closing:
        parts = parts.assign(
            closed=frame["closed"].to_numpy(dtype=np.int64),
            closed_won=frame["closed_won"].to_numpy(dtype=np.int64),
            deal_value=frame["deal_value"].to_numpy(dtype=np.float64),
            days_to_close=frame["days_to_close"].to_numpy(dtype=np.float64),
        )
        aggregations.update(
            closed=("closed", "sum"), closed_won=("closed_won", "sum"),
            average_deal_size=("deal_value", "mean"), median_days_to_close=("days_to_close", "median"),
        )  # fmt: skip
    table = parts.groupby(by, sort=True, dropna=False).agg(**aggregations).reset_index()
    table["conversion_rate"] = _rate(table["won"], table["resolved"])
    table["resolved_share"] = _rate(table["resolved"], table["leads"])
    if closing:
        table["close_rate"] = _rate(table["closed_won"], table["closed"])
    return table


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, NaN where the denominator is 0 (no lead to measure, not 0%)."""
    return numerator / denominator.where(denominator > 0)


def kpi_table(
    judged: pd.DataFrame, settings: KpiSettings, ready: Sequence[str], tiers: Sequence[str] = ()
) -> pd.DataFrame:
    """The KPIs of each period (:data:`KPI_COLUMNS`), per tier and over all tiers (``tier`` "all").

    ``judged``: every earlier prediction with ``tier``, ``resolved`` and ``won``, and with the
    columns of :func:`with_closing` for the closing figures (left empty without them). Each lead
    counts once per period, by its first prediction there (:func:`first_predictions`):

    - ``leads`` scored; ``sales_ready_share``: the share of them in a ``ready`` tier;
    - ``resolved`` (their outcome within the horizon is known) and ``won`` of those: the
      ``conversion_rate`` of the resolved leads, and ``expected``, the sum of their
      probabilities, to set against ``won``. A period with leads still open
      (``resolved_share`` below 1) is not complete: its early outcomes lean to the quick
      decisions;
    - ``close_rate`` (won of the leads closed since, whenever), ``average_deal_size`` and
      ``median_days_to_close`` (from the prediction's night) of the wins.

    Rows are ordered by period, then ``tiers`` (best first), unknown tiers last, "all" at the end.
    """
    closing = set(CLOSING_COLUMNS[:2]) <= set(judged.columns)
    columns = list(KPI_COLUMNS)
    if judged.empty:
        return pd.DataFrame(columns=columns)
    first = first_predictions(judged, settings.period)
    first["tier"] = first["tier"].astype(object).where(first["tier"].notna(), UNKNOWN_TIER).astype(str)
    per_tier = _figures(first, ["period_start", "tier"], ready, closing)
    overall = _figures(first, ["period_start"], ready, closing).assign(tier=ALL_TIERS)
    rank = {tier: i for i, tier in enumerate([*tiers, UNKNOWN_TIER])}
    table = pd.concat([per_tier, overall], ignore_index=True)
    table["_rank"] = table["tier"].map(lambda t: len(rank) + 1 if t == ALL_TIERS else rank.get(t, len(rank)))
    table = table.sort_values(["period_start", "_rank", "tier"], kind="stable").drop(columns="_rank")
    table["period"] = table["period_start"].map(lambda start: period_label(start, settings.period))
    return table.reindex(columns=columns).reset_index(drop=True)


def cohort_table(
    judged: pd.DataFrame, created: pd.Series, settings: KpiSettings, ready: Sequence[str]
) -> pd.DataFrame:
    """Leads by the period they were created in (:data:`COHORT_COLUMNS`), each judged by its first
    prediction ever: leads, the share that started in a ``ready`` tier, resolved, won within the
    horizon of that first night and the conversion rate of the resolved ones.

    ``created``: each lead's creation time, indexed by lead id; a lead without one is left out.
    """
    if judged.empty:
        return pd.DataFrame(columns=list(COHORT_COLUMNS))
    first = judged.sort_values("run_date", kind="stable").drop_duplicates(s.LEAD_ID, keep="first")
    created_at = pd.to_datetime(first[s.LEAD_ID].map(created.groupby(level=0).first()), utc=True)
    first = first[created_at.notna().to_numpy()].assign(
        cohort_start=period_start(created_at.dropna(), settings.period)
    )
    if first.empty:
        return pd.DataFrame(columns=list(COHORT_COLUMNS))
    table = _figures(first, ["cohort_start"], ready, closing=False)
    table["cohort"] = table["cohort_start"].map(lambda start: period_label(start, settings.period))
    return table.reindex(columns=list(COHORT_COLUMNS))


def kpis(
    judged: pd.DataFrame,
    settings: KpiSettings,
    tiers: Sequence[str],
    created: pd.Series | None = None,
) -> Kpis:
    """The KPI table and, with creation dates (``created`` by lead id), the cohort table."""
    ready = settings.ready_tiers(tiers)
    table = kpi_table(judged, settings, ready, tiers)
    cohorts = None if created is None else cohort_table(judged, created, settings, ready)
    closing = set(CLOSING_COLUMNS[:2]) <= set(judged.columns)
    return Kpis(table=table, cohorts=cohorts, period=settings.period, ready_tiers=ready, closing=closing)


def latest_metrics(result: Kpis) -> tuple[dict[str, float], pd.Timestamp | None]:
    """The latest period's figures over all tiers (and each tier's conversion rate) as
    ``kpi_``-prefixed metrics, and the period's first day; ({}, None) without a period."""
    overall = result.overall()
    if overall.empty:
        return {}, None
    latest = overall.iloc[-1]
    names = ["leads", "sales_ready_share", "resolved", "won", "conversion_rate", "expected"]
    if result.closing:
        names += ["close_rate", "average_deal_size", "median_days_to_close"]
    metrics = {f"kpi_{name}": float(latest[name]) for name in names}
    tiers = result.table[
        (result.table["period_start"] == latest["period_start"]) & (result.table["tier"] != ALL_TIERS)
    ]
    metrics.update(
        {f"kpi_conversion_rate_{row.tier}": float(row.conversion_rate) for row in tiers.itertuples()}
    )
    return metrics, pd.Timestamp(latest["period_start"])


# --------------------------------------------------------------------------- the threshold for the capacity
@dataclass(frozen=True)
class DealValues:
    """The deal value each of tonight's leads is worth if won, and where the values came from."""

    values: np.ndarray  # per lead; NaN: no value known
    estimated: int  # leads valued by their own estimated deal value
    tier_average: int  # by the average won deal of their tier in the scored history
    overall_average: int  # by the average won deal of all the history's wins
    missing: int  # no value at all


def deal_values(tiers: pd.Series, estimated: pd.Series | None, won_deals: pd.DataFrame) -> DealValues:
    """Each lead's value: its own estimated deal value, else the average won deal of its tier
    (``won_deals``: ``tier`` and ``deal_value`` of the wins of earlier scored leads, the tier
    that scored them), else the average of every win in ``won_deals``.

    ``tiers``: tonight's tier per lead; ``estimated``: aligned with it (None: the data has none).
    """
    own = (
        pd.to_numeric(estimated, errors="coerce").to_numpy(dtype=np.float64)
        if estimated is not None
        else np.full(len(tiers), np.nan)
    )
    deals = won_deals.assign(deal_value=pd.to_numeric(won_deals["deal_value"], errors="coerce")).dropna(
        subset=["deal_value"]
    )
    by_tier = deals.groupby("tier")["deal_value"].mean() if len(deals) else pd.Series(dtype="float64")
    tier_mean = tiers.map(by_tier).to_numpy(dtype=np.float64)
    overall = float(deals["deal_value"].mean()) if len(deals) else math.nan
    has_own = np.isfinite(own)
    has_tier = ~has_own & np.isfinite(tier_mean)
    has_overall = ~has_own & ~has_tier & math.isfinite(overall)
    values = np.where(has_own, own, np.where(has_tier, tier_mean, overall if has_overall.any() else math.nan))
    return DealValues(
        values=values,
        estimated=int(has_own.sum()),
        tier_average=int(has_tier.sum()),
        overall_average=int(has_overall.sum()),
        missing=int((~has_own & ~has_tier & ~has_overall).sum()),
    )


@dataclass(frozen=True)
class WorkedLeads:
    """The leads at or above a probability threshold: how many, and what working them is expected to bring."""

    threshold: float | None  # None: no lead is worth working
    leads: int
    expected_conversions: float
    expected_revenue: float  # probability x deal value, less the cost of working each lead

    @classmethod
    def above(cls, threshold: float | None, probability: np.ndarray, net: np.ndarray) -> WorkedLeads:
        chosen = probability >= threshold if threshold is not None else np.zeros(len(probability), dtype=bool)
        return cls(
            threshold=threshold,
            leads=int(chosen.sum()),
            expected_conversions=float(probability[chosen].sum()),
            expected_revenue=float(net[chosen].sum()),
        )


@dataclass(frozen=True)
class ThresholdChoice:
    """Today's sales-ready threshold against the one that maximises expected revenue for the capacity."""

    capacity: int  # leads the team can work
    configured: bool  # the capacity is tiers.sales_capacity.leads (else: tonight's sales-ready leads)
    cost_per_lead: float
    today: WorkedLeads
    best: WorkedLeads
    values: DealValues


def revenue_threshold(
    probability: np.ndarray,
    values: DealValues,
    today_threshold: float,
    capacity: SalesCapacity,
) -> ThresholdChoice:
    """The probability threshold that maximises the expected revenue of the leads at or above it,
    working at most the capacity; and what today's sales-ready threshold gives.

    A lead's expected revenue is probability x deal value - ``cost_per_lead`` (a lead with no
    value known brings nothing and costs as the others). The leads are taken best probability
    first; a threshold keeps every lead tied at it, so only cuts between two different
    probabilities count. Without a configured capacity, the team works as many leads as
    ``today_threshold`` puts in the sales-ready tiers. The smallest number of leads wins a tie.
    """
    p = np.asarray(probability, dtype=np.float64)
    net = p * np.nan_to_num(values.values, nan=0.0) - capacity.cost_per_lead
    configured = capacity.leads is not None
    limit = int(capacity.leads) if configured else int((p >= today_threshold).sum())
    order = np.argsort(-p, kind="stable")
    ranked_p, ranked_net = p[order], net[order]
    total = np.concatenate([[0.0], np.cumsum(ranked_net)])  # total[k]: the best k leads
    cut = np.ones(len(p) + 1, dtype=bool)
    cut[1:-1] = ranked_p[:-1] > ranked_p[1:]
    cut &= np.arange(len(p) + 1) <= limit
    best = int(np.argmax(np.where(cut, total, -np.inf)))
    threshold = float(ranked_p[best - 1]) if best > 0 else None
    return ThresholdChoice(
        capacity=limit,
        configured=configured,
        cost_per_lead=capacity.cost_per_lead,
        today=WorkedLeads.above(today_threshold, p, net),
        best=WorkedLeads.above(threshold, p, net),
        values=values,
    )
