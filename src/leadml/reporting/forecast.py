"""Funnel forecast: historical conversion, forward and reverse forecasts, sales capacity.

Everything here rests on one definition, the product's label: a lead created at ``t``
*converts* when it is won with ``closed_at <= t + horizon_days``.

Rates are measured on the **mature cohort** only: leads whose whole horizon has elapsed
before the end of the data (``created_at + horizon_days <= as_of``). A younger lead may
still be won inside its horizon after the data ends; counting it as "not converted"
would bias every rate downwards, the more so the faster leads are arriving. Younger
leads are counted apart (``immature_leads``) and never enter a rate.

Forecast intervals are posterior predictive: each simulated draw takes a conversion
rate from ``Beta(won + prior, not_converted + prior)`` (the uncertainty of the
historical rate), then the number of conversions of the planned leads from
``Binomial(n, rate)`` (the noise of the future leads), then the revenue of those wins
by a two-stage bootstrap of the historical won deal values (a resampled history per
draw, then deals drawn from it, so the uncertainty of the deal-value distribution enters
too). An interval therefore widens both when few leads are planned and when the history
of a source is short. Sources are independent; the ``total`` row sums them draw by draw.

A flat table (one row per lead) labelled by dated outcomes follows the same definition. One
labelled by a target column has no dates: its rate is won / (won + lost) among the closed
leads (:func:`closed_rates`), not a rate within a horizon, and its open leads are the
immature ones. A flat table has no deal values: its revenue is missing (NaN), not 0.

The functions are pure (DataFrames in, DataFrames out); :func:`forecast_stage` (with
:func:`crm_inputs` and :func:`flat_inputs`) does the I/O for ``leadml-forecast``.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from leadml.adapters.sinks import find_partition
from leadml.adapters.sources import write_csv_atomic
from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.errors import LeadmlError, known_settings

logger = logging.getLogger(__name__)

ALL = "all"  # the pooled row of the history table
TOTAL = "total"  # the summed row of the forward, reverse and capacity tables
UNKNOWN = "unknown"  # leads without a value in the grouping column
POOLED = "all (pooled)"  # where a rate or deal values came from when a source's own are not used
PROBABILITY = "probability"  # leadml.modelling.scorer.PROBABILITY, the scored partition's column
TIER = "tier"
EXPECTED_VALUE = "expected_value"
DEAL_VALUES = "won_deal_values"  # history column: the raw won deal values, for resampling
UNKNOWN_SOURCE_RULES = ("error", "pooled")
WITHIN_HORIZON = "won within the horizon"  # history.attrs["rate"]: the product's label, on mature leads
AMONG_CLOSED = "won among closed"  # history.attrs["rate"]: a flat label without a date
POOLED_GROUP = "all_leads"  # the one group of a flat table without a source-family column

DEFAULT_PRIOR = 0.5  # Jeffreys prior on a conversion rate
MIN_WINS_FOR_VALUES = 20  # fewer won deal values than this: resample the pooled ones
EXACT_SUM_MAX = 400  # per draw, won deals are resampled one by one up to this many (CLT beyond)
REPLICATES = 200  # bootstrap replicates of the historical deal values (the two-stage bootstrap)
_CHUNK_VALUES = 2_000_000  # resampled deal values held in memory at once
_NORMAL_VARIANCE = 30.0  # Poisson-binomial: normal approximation from this variance on, exact below
_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------- checks
def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LeadmlError(
            f"{table}: missing column(s) {missing} needed by the forecast (found: {list(frame.columns)})"
        )


def _whole_number(value: Any, name: str, minimum: int = 0) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a whole number >= {minimum}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise LeadmlError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def _share(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise LeadmlError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return number


def _draws(value: Any) -> int:
    return _whole_number(value, "draws", minimum=100)


def _unknown_rule(value: str) -> str:
    if value not in UNKNOWN_SOURCE_RULES:
        raise LeadmlError(f"unknown_source must be one of {list(UNKNOWN_SOURCE_RULES)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- history
def data_end(leads: pd.DataFrame, outcomes: pd.DataFrame) -> pd.Timestamp:
    """The last moment the lead and outcome tables know about (their latest timestamp)."""
    stamps = [
        pd.to_datetime(leads[s.CREATED_AT], utc=True).max(),
        pd.to_datetime(outcomes[s.CLOSED_AT], utc=True).max() if len(outcomes) else pd.NaT,
    ]
    present = [stamp for stamp in stamps if not pd.isna(stamp)]
    if not present:
        raise LeadmlError("leads and outcomes hold no timestamps, so the forecast has no end of data")
    return max(present)


def historical_rates(
    leads: pd.DataFrame,
    outcomes: pd.DataFrame,
    horizon_days: int,
    as_of: pd.Timestamp | str | None = None,
    by: str = s.SOURCE,
) -> pd.DataFrame:
    """Conversion within ``horizon_days`` per value of ``by``, on the mature cohort, plus an ``all`` row.

    ``as_of`` is the end of what is known (default: the latest timestamp of the two
    tables); a backtest passes an earlier date, and then leads created later and outcomes
    closed later are ignored. Only leads with ``created_at + horizon_days <= as_of`` count
    (the mature cohort): younger leads could still convert inside their horizon, and
    counting them would bias the rates downwards. They are reported as ``immature_leads``.

    Columns, indexed by the values of ``by`` (missing values as ``unknown``), sorted by
    mature leads: ``leads`` (mature), ``won`` (won within the horizon), ``not_converted``,
    ``conversion_rate`` (won / leads), ``immature_leads``, ``days_to_convert_mean`` and
    ``_median`` (created -> closed of those wins), ``deal_value_mean`` and ``_median``,
    ``won_with_value`` and ``won_deal_values`` (the raw deal values of those wins as a
    float array, what :func:`forecast_forward` resamples; leave it out of a CSV with
    :func:`rates_table`). ``attrs`` holds ``as_of`` and ``horizon_days``.
    """
    horizon = _whole_number(horizon_days, "horizon_days", minimum=1)
    _require_columns(leads, (s.LEAD_ID, s.CREATED_AT, by), "leads")
    _require_columns(outcomes, (s.LEAD_ID, s.STATUS, s.CLOSED_AT, s.DEAL_VALUE), "outcomes")
    end = to_utc(as_of) if as_of is not None else data_end(leads, outcomes)
    window = pd.Timedelta(days=horizon)

    keys = leads[by].astype("string").fillna(UNKNOWN).reset_index(drop=True)
    if (keys == ALL).any():
        raise LeadmlError(f"leads: column {by!r} holds the value {ALL!r}, which names the pooled row")
    won = outcomes[(outcomes[s.STATUS].astype("string") == s.WON).to_numpy(bool)].drop_duplicates(s.LEAD_ID)
    undated = int(won[s.CLOSED_AT].isna().sum())
    if undated:
        logger.warning("%d won leads have no closed_at; they are not counted as conversions", undated)
    # the won outcome of each lead, by position (-1: none)
    position = pd.Index(won[s.LEAD_ID].astype("string")).get_indexer(leads[s.LEAD_ID].astype("string"))
    has_win = position >= 0
    created = _nanoseconds(leads[s.CREATED_AT])
    closed = np.where(has_win, _nanoseconds(won[s.CLOSED_AT])[position], np.nan)
    value = np.where(has_win, won[s.DEAL_VALUE].to_numpy("float64", na_value=np.nan)[position], np.nan)
    end_ns, window_ns = float(end.value), float(window.value)
    frame = pd.DataFrame(
        {
            "key": keys,
            "mature": created + window_ns <= end_ns,
            "converted": (closed <= created + window_ns) & (closed <= end_ns),  # NaN compares False
            "days": (closed - created) / float(_DAY.value),
            "value": value,
        }
    )[created <= end_ns]
    table = _history_table(frame, by)
    table.attrs.update(as_of=end.isoformat(), horizon_days=horizon, rate=WITHIN_HORIZON)
    logger.info(
        "history as of %s: %d mature leads, %d won within %d days, %d immature leads left out",
        end,
        table.loc[ALL, "leads"],
        table.loc[ALL, "won"],
        horizon,
        table.loc[ALL, "immature_leads"],
    )
    return table


def closed_rates(
    leads: pd.DataFrame, by: str = s.SOURCE, as_of: pd.Timestamp | str | None = None
) -> pd.DataFrame:
    """Won / (won + lost) per value of ``by`` among the closed leads of a flat table whose label has no date.

    ``leads`` holds every lead with ``label``: 1 (won), 0 (lost) or missing (still open). A
    label without a date has no horizon: a closed lead counts whenever it closed, so the rate
    is won / (won + lost) among closed leads, not a within-horizon rate, and days to convert
    are unknown (NaN). The open leads never enter a rate; they are counted as
    ``immature_leads``. The table has the columns and order of :func:`historical_rates`
    (``leads``: closed leads, ``not_converted``: lost ones; no deal values), so
    :func:`forecast_forward` reads it alike. ``attrs``: ``as_of`` (the latest lead, or None
    without a time column), ``horizon_days`` (None) and ``rate`` (:data:`AMONG_CLOSED`).
    """
    _require_columns(leads, (s.LABEL, by), "leads")
    keys = leads[by].astype("string").fillna(UNKNOWN).reset_index(drop=True)
    if (keys == ALL).any():
        raise LeadmlError(f"leads: column {by!r} holds the value {ALL!r}, which names the pooled row")
    label = pd.to_numeric(leads[s.LABEL], errors="coerce").reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "key": keys,
            "mature": label.notna().to_numpy(bool),
            "converted": (label == 1).to_numpy(bool, na_value=False),
            "days": np.nan,  # a label without a date: days to convert are unknown, not 0
            "value": np.nan,  # a flat table names no deal values
        }
    )
    table = _history_table(frame, by)
    end = None if as_of is None or pd.isna(as_of) else to_utc(as_of).isoformat()
    table.attrs.update(as_of=end, horizon_days=None, rate=AMONG_CLOSED)
    logger.info(
        "history: %d closed leads, %d won (won / (won + lost)), %d open leads left out",
        table.loc[ALL, "leads"],
        table.loc[ALL, "won"],
        table.loc[ALL, "immature_leads"],
    )
    return table


def _history_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """The history table from one row per lead (``key``, ``mature``, ``converted``, ``days``, ``value``)."""
    rows = {str(key): _rate_row(part) for key, part in frame.groupby("key", sort=False)}
    order = [*sorted(rows, key=lambda key: (-rows[key]["leads"], key)), ALL]
    rows[ALL] = _rate_row(frame)
    values = pd.Series([rows[key].pop(DEAL_VALUES) for key in order], index=order, dtype=object)
    table = pd.DataFrame.from_dict({key: rows[key] for key in order}, orient="index")
    table = table.astype({c: "int64" for c in ("leads", "won", "not_converted", "immature_leads")})
    table = table.astype({"won_with_value": "int64"})
    table[DEAL_VALUES] = values
    table.index.name = by
    return table


def _nanoseconds(stamps: pd.Series) -> np.ndarray:
    """UTC timestamps as float nanoseconds since the epoch (NaT as NaN), for fast comparisons."""
    utc = pd.to_datetime(stamps, utc=True).dt.as_unit("ns")
    values = utc.to_numpy("int64", na_value=0).astype("float64")
    values[utc.isna().to_numpy()] = np.nan
    return values


def _rate_row(part: pd.DataFrame) -> dict[str, Any]:
    mature = part["mature"].to_numpy()
    converted = part["converted"].to_numpy() & mature
    leads, won = int(mature.sum()), int(converted.sum())
    days = part["days"].to_numpy("float64")[converted]
    days = days[~np.isnan(days)]
    values = part["value"].to_numpy("float64")[converted]
    values = values[~np.isnan(values)]
    return {
        "leads": leads,
        "won": won,
        "not_converted": leads - won,
        "conversion_rate": won / leads if leads else np.nan,
        "immature_leads": int((~mature).sum()),
        "days_to_convert_mean": float(days.mean()) if len(days) else np.nan,
        "days_to_convert_median": float(np.median(days)) if len(days) else np.nan,
        "deal_value_mean": float(values.mean()) if len(values) else np.nan,
        "deal_value_median": float(np.median(values)) if len(values) else np.nan,
        "won_with_value": len(values),
        DEAL_VALUES: values.astype("float64"),
    }


def rates_table(history: pd.DataFrame) -> pd.DataFrame:
    """The history table without the raw deal-value arrays (for a CSV or a report)."""
    return history.drop(columns=[DEAL_VALUES])


def recent_volume(
    leads: pd.DataFrame,
    as_of: pd.Timestamp | str,
    period_days: int = 30,
    lookback_days: int = 90,
    by: str = s.SOURCE,
) -> dict[str, int]:
    """Leads per ``period_days`` per source at the pace of the last ``lookback_days`` before ``as_of``.

    The default plan of ``leadml-forecast`` when none is given ("the same again").
    """
    end = to_utc(as_of)
    created = pd.to_datetime(leads[s.CREATED_AT], utc=True)
    recent = leads[(created > end - pd.Timedelta(days=lookback_days)) & (created <= end)]
    counts = recent[by].astype("string").fillna(UNKNOWN).value_counts()
    scale = period_days / lookback_days
    return {str(key): round(count * scale) for key, count in counts.items() if round(count * scale) > 0}


# --------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class _SourceModel:
    """What the simulation needs about one source: Beta posterior, deal values, where they came from."""

    source: str
    alpha: float
    beta: float
    values: np.ndarray = field(repr=False)
    rate_from: str
    values_from: str
    days_to_convert: float

    @property
    def rate(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def value_mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else np.nan


def _positive(value: Any, name: str) -> float:
    """``value`` as a finite positive float, or an error naming the setting."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise LeadmlError(f"{name} must be a positive number, got {value!r}")
    return number


def _check_history(history: pd.DataFrame) -> None:
    _require_columns(
        history,
        ("leads", "won", "not_converted", "days_to_convert_mean", DEAL_VALUES),
        "history (the table of historical_rates)",
    )
    if ALL not in history.index:
        raise LeadmlError(f"history has no {ALL!r} row (make it with historical_rates)")


def _source_model(
    history: pd.DataFrame,
    source: str,
    prior: float,
    min_wins: int,
    unknown_source: str,
    revenue: bool = True,
) -> _SourceModel:
    """The posterior of ``source``'s rate and the deal values to resample (documented fallbacks).

    With ``revenue=False`` (no deal values: a flat table) the model has no values to resample.
    """
    pooled = history.loc[ALL]
    pooled_values = np.asarray(pooled[DEAL_VALUES], dtype="float64")
    if revenue and len(pooled_values) == 0:
        raise LeadmlError(
            "no won deal values in the mature history, so revenue cannot be forecast "
            "(outcomes.deal_value is empty for every win within the horizon)"
        )
    known = source in history.index and source != ALL and int(history.loc[source, "leads"]) > 0
    if not known:
        sources = [str(k) for k in history.index if k != ALL and int(history.loc[k, "leads"]) > 0]
        why = (
            "has only immature leads (none whose horizon has elapsed)"
            if source in history.index and source != ALL
            else "does not appear in the history"
        )
        if unknown_source == "error":
            raise LeadmlError(
                f"source {source!r} {why}, so it has no conversion rate; known sources: {sources}. "
                "Fix the name, or set unknown_source=pooled (forecast.unknown_source) to forecast it "
                "with the pooled rate"
            )
        logger.warning(
            "source %r %s: forecast with the pooled rate and deal values of all sources; its interval "
            "does not include how much a new source may differ from the average one",
            source,
            why,
        )
        row, rate_from = pooled, POOLED
    else:
        row, rate_from = history.loc[source], source
    values = np.asarray(row[DEAL_VALUES], dtype="float64")
    values_from = rate_from
    if not revenue:
        values, values_from = np.empty(0, dtype="float64"), ""
    elif len(values) < min_wins:
        if rate_from != POOLED:
            logger.info(
                "source %r has %d won deal values (< %d): revenue resamples the pooled ones",
                source,
                len(values),
                min_wins,
            )
        values, values_from = pooled_values, POOLED
    days = row["days_to_convert_mean"]
    if pd.isna(days):
        days = pooled["days_to_convert_mean"]
    return _SourceModel(
        source=source,
        alpha=float(row["won"]) + prior,
        beta=float(row["not_converted"]) + prior,
        values=values,
        rate_from=rate_from,
        values_from=values_from,
        days_to_convert=float(days),
    )


def _rng(seed: int, source: str) -> np.random.Generator:
    """A generator per (seed, source): a source's draws do not change when another is planned."""
    return np.random.default_rng([int(seed), zlib.crc32(source.encode("utf-8"))])


def _revenue(counts: np.ndarray, model: _SourceModel, rng: np.random.Generator) -> np.ndarray:
    """Revenue of each draw: the sum of ``counts[d]`` deal values, by a two-stage bootstrap.

    The historical deal values are only a sample of what deals are worth, so each draw
    first takes one of :data:`REPLICATES` bootstrap replicates of them (resampled with
    replacement), then draws its won deals from that replicate. The uncertainty of the
    whole distribution (mean, spread, tail) enters the interval, not only the noise of
    the future deals. Up to :data:`EXACT_SUM_MAX` deals a draw sums them one by one;
    beyond, the sum is normal with the replicate's mean and variance (central limit).
    """
    values = model.values
    m = len(values)
    replicates = max(1, min(REPLICATES, _CHUNK_VALUES // m))
    boot = values[rng.integers(0, m, size=(replicates, m))]  # one resampled history per row
    which = rng.integers(0, replicates, size=len(counts))  # the replicate of each draw
    sums = np.zeros(len(counts), dtype="float64")
    exact = np.flatnonzero((counts > 0) & (counts <= EXACT_SUM_MAX))
    ends = np.cumsum(counts[exact])
    start = 0
    while start < len(exact):
        before = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + _CHUNK_VALUES, side="right")))
        part = exact[start:stop]
        k = counts[part]
        owner = np.repeat(np.arange(len(part)), k)
        picks = boot[which[part][owner], rng.integers(0, m, int(k.sum()))]
        sums[part] = np.bincount(owner, weights=picks, minlength=len(part))
        start = stop
    large = counts > EXACT_SUM_MAX
    if large.any():
        k = counts[large].astype("float64")
        mean, sd = boot.mean(axis=1)[which[large]], boot.std(axis=1)[which[large]]
        sums[large] = np.maximum(k * mean + np.sqrt(k) * sd * rng.standard_normal(int(large.sum())), 0.0)
    return sums


def _simulate(
    n: int, model: _SourceModel, draws: int, rng: np.random.Generator, revenue: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive conversions and revenue of ``n`` new leads (one value per draw).

    Without ``revenue`` (no deal values) the revenue is NaN: missing, not 0; the conversions
    are the same draws either way.
    """
    rates = rng.beta(model.alpha, model.beta, size=draws)
    conversions = rng.binomial(n, rates)
    if not revenue:
        return conversions, np.full(draws, np.nan)
    return conversions, _revenue(conversions, model, rng)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed interval; for counts it holds at least ``level`` of the draws (NaN draws: NaN)."""
    if np.isnan(samples).any():
        return np.nan, np.nan
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(low), float(high)


# --------------------------------------------------------------------------- forward
def forecast_forward(
    history: pd.DataFrame,
    planned: Mapping[str, int],
    *,
    level: float = 0.9,
    draws: int = 20_000,
    seed: int = 0,
    prior: float = DEFAULT_PRIOR,
    min_wins: int = MIN_WINS_FOR_VALUES,
    unknown_source: str = "error",
    revenue: bool = True,
) -> pd.DataFrame:
    """Expected conversions and revenue of ``planned`` new leads per source, with ``level`` intervals.

    ``history`` is the table of :func:`historical_rates` (mature cohort only). A draw takes
    the rate from ``Beta(won + prior, not_converted + prior)``, the conversions from
    ``Binomial(planned, rate)`` and the revenue of those wins by a two-stage bootstrap of
    that source's historical won deal values (see :func:`_revenue`); a source with fewer
    than ``min_wins`` of them resamples the pooled values of all sources instead
    (``values_from`` says which: a handful of deals says little about the next ones).
    Conversions count wins within the history's horizon of each lead's creation;
    ``days_to_convert`` is the historical mean of those wins. Every source has its own
    random stream (``seed`` and its name), so adding a source leaves the others' figures
    as they were.

    Columns, indexed by source then ``total``: ``planned_leads``, ``conversion_rate``
    (posterior mean), ``expected_conversions``, ``conversions_low``/``_high``,
    ``deal_value_mean``, ``expected_revenue``, ``revenue_low``/``_high``,
    ``days_to_convert``, ``rate_from``, ``values_from``.

    A planned source with no mature history is an error naming it (a forecast must not
    quietly assume an untested channel converts like the average one); with
    ``unknown_source="pooled"`` it gets the pooled rate and values instead, with a
    warning, and ``rate_from`` says so. ``total`` sums the sources draw by draw.

    ``revenue=False`` (a history without deal values, as a flat table's): the revenue
    columns are NaN (missing, not 0) and ``values_from`` is empty; the conversions are the
    same as with revenue.
    """
    _check_history(history)
    level, draws, rule = _share(level, "level"), _draws(draws), _unknown_rule(unknown_source)
    prior = _positive(prior, "prior")
    plan = checked_plan(planned)
    rows: dict[str, dict[str, Any]] = {}
    total_conversions = np.zeros(draws, dtype="int64")
    total_revenue = np.zeros(draws, dtype="float64")
    for source, n in plan.items():
        model = _source_model(history, source, prior, min_wins, rule, revenue)
        conversions, money = _simulate(n, model, draws, _rng(seed, source), revenue)
        total_conversions += conversions
        total_revenue += money
        rows[source] = _forward_row(n, model.rate, model.value_mean, conversions, money, level)
        rows[source].update(
            days_to_convert=model.days_to_convert, rate_from=model.rate_from, values_from=model.values_from
        )
    expected = sum(row["expected_conversions"] for row in rows.values())
    n_total = sum(plan.values())
    rows[TOTAL] = _forward_row(
        n_total,
        expected / n_total if n_total else np.nan,
        np.nan,
        total_conversions,
        total_revenue,
        level,
    )
    rows[TOTAL]["expected_conversions"] = expected
    rows[TOTAL]["expected_revenue"] = sum(rows[k]["expected_revenue"] for k in plan)
    rows[TOTAL]["deal_value_mean"] = rows[TOTAL]["expected_revenue"] / expected if expected else np.nan
    rows[TOTAL]["days_to_convert"] = (
        sum(rows[k]["days_to_convert"] * rows[k]["expected_conversions"] for k in plan) / expected
        if expected
        else np.nan
    )
    rows[TOTAL].update(rate_from="", values_from="")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = s.SOURCE
    table.attrs.update(level=level, draws=draws, seed=seed)
    return table


def _forward_row(
    n: int, rate: float, value_mean: float, conversions: np.ndarray, revenue: np.ndarray, level: float
) -> dict[str, Any]:
    conversions_low, conversions_high = _interval(conversions, level)
    revenue_low, revenue_high = _interval(revenue, level)
    return {
        "planned_leads": int(n),
        "conversion_rate": rate,
        "expected_conversions": n * rate,
        "conversions_low": int(conversions_low),
        "conversions_high": int(conversions_high),
        "deal_value_mean": value_mean,
        "expected_revenue": n * rate * value_mean,
        "revenue_low": revenue_low,
        "revenue_high": revenue_high,
    }


def checked_plan(planned: Mapping[str, Any]) -> dict[str, int]:
    """``{source: leads}`` with whole, non-negative numbers of leads."""
    if not isinstance(planned, Mapping):
        raise LeadmlError(f"planned leads must be a mapping of source to leads, got {type(planned).__name__}")
    plan = {str(source): _whole_number(n, f"planned leads of {source!r}") for source, n in planned.items()}
    if not plan:
        raise LeadmlError("no planned leads: give at least one source and its number of leads")
    return plan


# --------------------------------------------------------------------------- reverse
def leads_needed(
    history: pd.DataFrame,
    revenue_target: float,
    *,
    mix: Mapping[str, float] | None = None,
    confidence: float = 0.5,
    draws: int = 20_000,
    seed: int = 0,
    prior: float = DEFAULT_PRIOR,
    min_wins: int = MIN_WINS_FOR_VALUES,
    unknown_source: str = "error",
    max_leads: int = 10_000_000,
) -> pd.DataFrame:
    """New leads needed to reach ``revenue_target``, per source alone and for a mix of sources.

    For each source with mature history: ``alone_expected``, the fewest leads whose
    expected revenue reaches the target, and ``alone_at_confidence``, the fewest whose
    revenue reaches it with probability ``confidence`` in the same simulation as
    :func:`forecast_forward` (a search over the number of leads). ``mix`` gives shares
    per source (normalised to sum to one; default: the sources' shares of mature
    historical leads); ``mix_expected`` (target / expected revenue per lead of the mix,
    rounded up) and ``mix_at_confidence`` (the fewest leads of the mix whose revenue
    reaches the target with ``confidence``) are split per source in whole leads
    (:func:`allocate`), with the totals on the ``total`` row. With ``confidence=0.5`` the
    median revenue reaches the target; a higher confidence asks for more leads. The
    search stops within 0.1% of the answer (about the simulation's own precision), and
    what it returns always reaches the confidence in the simulation. Unknown sources in
    ``mix`` follow ``unknown_source`` as in :func:`forecast_forward`.
    """
    _check_history(history)
    confidence, draws, rule = _share(confidence, "confidence"), _draws(draws), _unknown_rule(unknown_source)
    prior = _positive(prior, "prior")
    target = _positive(revenue_target, "revenue_target")
    shares = _mix_shares(history, mix)
    known = [str(k) for k in history.index if k != ALL and int(history.loc[k, "leads"]) > 0]
    sources = known + [k for k in shares if k not in known]
    models = {k: _source_model(history, k, prior, min_wins, rule) for k in sources}

    def probability(allocation: Mapping[str, int]) -> float:
        revenue = np.zeros(draws, dtype="float64")
        for source, n in allocation.items():
            revenue += _simulate(n, models[source], draws, _rng(seed, source))[1]
        return float(np.mean(revenue >= target))

    rows: dict[str, dict[str, Any]] = {}
    for source in sources:
        model = models[source]
        per_lead = model.rate * model.value_mean
        expected = math.ceil(target / per_lead)
        rows[source] = {
            "share": shares.get(source, 0.0),
            "conversion_rate": model.rate,
            "deal_value_mean": model.value_mean,
            "revenue_per_lead": per_lead,
            "alone_expected": expected,
            "alone_at_confidence": _fewest(
                lambda n, source=source: probability({source: n}),
                confidence,
                _normal_guess(lambda n, source=source: {source: n}, models, target, confidence, max_leads),
                max_leads,
            ),
        }
    per_lead_mix = sum(share * models[k].rate * models[k].value_mean for k, share in shares.items())
    mix_expected = math.ceil(target / per_lead_mix)
    mix_total = _fewest(
        lambda n: probability(allocate(n, shares)),
        confidence,
        _normal_guess(lambda n: allocate(n, shares), models, target, confidence, max_leads),
        max_leads,
    )
    for source in sources:
        rows[source]["mix_expected"] = allocate(mix_expected, shares).get(source, 0)
        rows[source]["mix_at_confidence"] = allocate(mix_total, shares).get(source, 0)
    rows[TOTAL] = {
        "share": 1.0,
        "conversion_rate": sum(share * models[k].rate for k, share in shares.items()),
        "deal_value_mean": np.nan,
        "revenue_per_lead": per_lead_mix,
        "alone_expected": np.nan,
        "alone_at_confidence": np.nan,
        "mix_expected": mix_expected,
        "mix_at_confidence": mix_total,
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    counts = ["alone_expected", "alone_at_confidence", "mix_expected", "mix_at_confidence"]
    table = table.astype(dict.fromkeys(counts, "Int64"))
    table.index.name = s.SOURCE
    table.attrs.update(revenue_target=target, confidence=confidence, draws=draws, seed=seed)
    return table


def _mix_shares(history: pd.DataFrame, mix: Mapping[str, float] | None) -> dict[str, float]:
    if mix is None:
        counts = history.drop(index=ALL)["leads"]
        counts = counts[counts > 0]
        if counts.empty:
            raise LeadmlError("the history has no mature leads, so there is no mix to forecast")
        return {str(k): float(v) / float(counts.sum()) for k, v in counts.items()}
    if not isinstance(mix, Mapping) or not mix:
        raise LeadmlError(f"mix must be a mapping of source to share, got {mix!r}")
    weights: dict[str, float] = {}
    for source, share in mix.items():
        try:
            weight = float(share)
        except (TypeError, ValueError):
            raise LeadmlError(f"mix share of {source!r} must be a number >= 0, got {share!r}") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise LeadmlError(f"mix share of {source!r} must be a number >= 0, got {share!r}")
        weights[str(source)] = weight
    total = sum(weights.values())
    if total <= 0:
        raise LeadmlError(f"mix shares must not all be zero, got {dict(mix)}")
    if abs(total - 1.0) > 1e-6:
        logger.info("mix shares sum to %s; normalised to 1", total)
    return {k: w / total for k, w in weights.items() if w > 0}


def allocate(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``total`` leads split by ``shares`` in whole leads (largest remainders), summing to ``total``."""
    raw = {k: total * share for k, share in shares.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:left]:
        counts[k] += 1
    return counts


def _revenue_moments(model: _SourceModel, n: int) -> tuple[float, float]:
    """Mean and variance of the simulated revenue of ``n`` leads (beta-binomial wins, resampled values)."""
    a, b, r = model.alpha, model.beta, model.rate
    wins_mean = n * r
    wins_variance = n * r * (1 - r) * (a + b + n) / (a + b + 1)
    values = model.values
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if len(values) > 1 else 0.0
    return wins_mean * mean, (
        wins_mean * variance
        + mean**2 * wins_variance
        + (wins_variance + wins_mean**2) * variance / len(values)
    )


def _normal_guess(
    allocation: Callable[[int], Mapping[str, int]],
    models: Mapping[str, _SourceModel],
    target: float,
    confidence: float,
    max_leads: int,
) -> int:
    """Fewest leads whose revenue reaches the target with ``confidence`` under a normal approximation.

    Only a starting point: the simulation then decides (revenue is skewed, the normal is not).
    """
    z = NormalDist().inv_cdf(confidence)

    def enough(n: int) -> bool:
        moments = [_revenue_moments(models[k], count) for k, count in allocation(n).items()]
        return sum(m for m, _ in moments) - z * math.sqrt(sum(v for _, v in moments)) >= target

    high = 1
    while not enough(high) and high < max_leads:
        high = min(2 * high, max_leads)
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _fewest(reaches: Callable[[int], float], confidence: float, guess: int, max_leads: int) -> int:
    """Smallest n with ``reaches(n) >= confidence``, ``reaches`` rising with n (up to simulation noise).

    Brackets the answer by steps growing from 2% around ``guess``, then narrows the
    bracket by interpolating on the simulated probabilities (Illinois false position) to
    within 0.1% of the answer (about the simulation's own precision), or one lead.
    """
    n = min(max(1, guess), max_leads)
    step = max(1, math.ceil(0.02 * n))
    p = reaches(n)
    if p >= confidence:
        high, p_high = n, p
        while True:
            low = max(0, high - step)
            p_low = reaches(low) if low > 0 else 0.0  # no leads, no revenue
            if p_low < confidence:
                break
            high, p_high, step = low, p_low, 2 * step
    else:
        low, p_low = n, p
        while True:
            if low >= max_leads:
                raise LeadmlError(
                    f"the revenue target is not reached with confidence {confidence} even with "
                    f"{max_leads:,} leads"
                )
            high = min(low + step, max_leads)
            p_high = reaches(high)
            if p_high >= confidence:
                break
            low, p_low, step = high, p_high, 2 * step
    kept = 0  # which end was kept last time (Illinois: halve its weight when it is kept twice)
    while high - low > max(1, high // 1000):
        share = (confidence - p_low) / (p_high - p_low) if p_high > p_low else 0.5
        middle = min(max(low + round(share * (high - low)), low + 1), high - 1)
        p_middle = reaches(middle)
        if p_middle >= confidence:
            high, p_high = middle, p_middle
            if kept == -1:
                p_low = confidence - (confidence - p_low) / 2
            kept = -1
        else:
            low, p_low = middle, p_middle
            if kept == 1:
                p_high = confidence + (p_high - confidence) / 2
            kept = 1
    return high


# --------------------------------------------------------------------------- capacity
def capacity_plan(
    open_scores: pd.DataFrame,
    reps: int,
    leads_per_rep_per_day: int,
    days: int,
    *,
    level: float = 0.9,
) -> pd.DataFrame:
    """Which open leads the team can work, highest probability first, and the wins to expect.

    ``open_scores`` is a scored partition (``probability``, ``tier``; ``lead_id`` breaks
    ties; ``expected_value`` is summed when present). The team works
    ``reps * leads_per_rep_per_day * days`` leads. Rows per tier (ordered by mean
    probability, highest first) and ``total``: ``open_leads``, ``worked_leads``,
    ``worked_share``, ``probability_threshold`` (the lowest probability worked; on the
    ``total`` row, the cut that fits the capacity: working every lead at or above it
    works ``worked_leads`` leads, plus any tied exactly at the cut, see
    ``attrs["tied_at_threshold"]``), ``expected_wins`` (sum of the worked leads'
    probabilities) with a ``level`` interval (exact Poisson-binomial, or its normal
    approximation when the variance is large), and ``expected_value``.
    """
    _require_columns(open_scores, (PROBABILITY, TIER), "scored leads")
    level = _share(level, "level")
    capacity = (
        _whole_number(reps, "reps")
        * _whole_number(leads_per_rep_per_day, "leads_per_rep_per_day")
        * _whole_number(days, "days")
    )
    probability = open_scores[PROBABILITY].astype("float64")
    bad = int((probability.isna() | (probability < 0) | (probability > 1)).sum())
    if bad:
        raise LeadmlError(f"scored leads: {bad} rows have a probability missing or outside [0, 1]")
    keys = [PROBABILITY, *([s.LEAD_ID] if s.LEAD_ID in open_scores.columns else [])]
    ranked = open_scores.sort_values(keys, ascending=[False, *[True] * (len(keys) - 1)], kind="stable")
    worked = min(capacity, len(ranked))
    ranked = ranked.assign(_worked=np.arange(len(ranked)) < worked, _tier=ranked[TIER].astype("string"))
    ranked["_tier"] = ranked["_tier"].fillna(UNKNOWN)
    has_value = EXPECTED_VALUE in ranked.columns
    order = ranked.groupby("_tier")[PROBABILITY].mean().sort_values(ascending=False).index
    rows = {str(tier): _capacity_row(ranked[ranked["_tier"] == tier], level, has_value) for tier in order}
    rows[TOTAL] = _capacity_row(ranked, level, has_value)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = TIER
    threshold = rows[TOTAL]["probability_threshold"]
    tied = int(
        (ranked[PROBABILITY] == threshold).sum()
        - (ranked.loc[ranked["_worked"], PROBABILITY] == threshold).sum()
    )
    table.attrs.update(capacity=capacity, threshold=threshold, tied_at_threshold=tied, level=level)
    if tied:
        logger.info("%d leads not worked have the same probability as the last worked lead", tied)
    return table


def _capacity_row(part: pd.DataFrame, level: float, has_value: bool) -> dict[str, Any]:
    worked = part[part["_worked"]]
    p = worked[PROBABILITY].to_numpy("float64")
    low, high = poisson_binomial_interval(p, level)
    row = {
        "open_leads": len(part),
        "worked_leads": len(worked),
        "worked_share": len(worked) / len(part) if len(part) else np.nan,
        "probability_threshold": float(p.min()) if len(p) else np.nan,
        "expected_wins": float(p.sum()),
        "wins_low": low,
        "wins_high": high,
    }
    if has_value:
        row[EXPECTED_VALUE] = float(worked[EXPECTED_VALUE].astype("float64").sum())
    return row


def poisson_binomial_interval(p: np.ndarray, level: float) -> tuple[int, int]:
    """Equal-tailed ``level`` interval of the number of successes of independent Bernoulli(p_i).

    Exact (the distribution built lead by lead) when its variance is below 30; beyond,
    the normal approximation with continuity correction, accurate there by the central
    limit theorem since every term is bounded.
    """
    p = np.asarray(p, dtype="float64")
    sure = int((p >= 1).sum())
    q = p[(p > 0) & (p < 1)]
    mean, variance = float(q.sum()), float((q * (1 - q)).sum())
    if variance == 0:
        return sure, sure
    if variance >= _NORMAL_VARIANCE:
        z = NormalDist().inv_cdf((1 + level) / 2)
        sd = math.sqrt(variance)
        low = max(0, math.ceil(mean - z * sd - 0.5))
        high = min(len(q), math.floor(mean + z * sd + 0.5))
        return sure + low, sure + high
    top = min(len(q), math.ceil(mean + 12 * math.sqrt(variance) + 30))
    pmf = np.zeros(top + 1)
    pmf[0] = 1.0
    for pi in q:
        shifted = pmf[:-1] * pi
        pmf *= 1 - pi
        pmf[1:] += shifted
    cdf = np.cumsum(pmf)
    low = int(np.searchsorted(cdf, (1 - level) / 2 - 1e-12))
    high = min(top, int(np.searchsorted(cdf, (1 + level) / 2 - 1e-12)))
    return sure + low, sure + high


# --------------------------------------------------------------------------- settings and I/O
@dataclass(frozen=True)
class ForecastSettings:
    """The ``forecast:`` section of ``conf/forecast.yaml`` (unknown keys are an error)."""

    input_dir: str = "data/interim/synthetic"
    scored_dir: str = "data/scored/synthetic"
    output_dir: str = "reports/forecast/synthetic"
    horizon_days: int = 90
    as_of: str | None = None
    by: str | None = None
    planned: Mapping[str, int] | None = None
    planned_csv: str | None = None
    planned_period_days: int = 30
    lookback_days: int = 90
    unknown_source: str = "error"
    revenue_target: float | None = None
    mix: Mapping[str, float] | None = None
    confidence: float = 0.9
    scored_as_of: str | None = None
    reps: int | None = None
    leads_per_rep_per_day: int = 20
    days: int = 5
    level: float = 0.9
    draws: int = 20_000
    seed: int = 0
    prior: float = DEFAULT_PRIOR
    min_wins: int = MIN_WINS_FOR_VALUES

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ForecastSettings:
        values = known_settings(cls, mapping, "forecast")
        values = {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}
        defaults = cls()
        values = {
            k: v
            for k, v in values.items()
            if v is not None or getattr(defaults, k) is None  # null: the default
        }
        if values.get("planned") == {}:
            values["planned"] = None
        if values.get("mix") == {}:
            values["mix"] = None
        settings = cls(**values)
        if settings.planned is not None and settings.planned_csv is not None:
            raise LeadmlError("set forecast.planned or forecast.planned_csv, not both")
        _unknown_rule(settings.unknown_source)
        return settings


def read_planned_csv(path: Path) -> dict[str, int]:
    """``{source: leads}`` from a CSV with a header ``source,leads``; any problem names the file and row.

    Rows are numbered like the quarantine's ``source_row``: 1 is the first data row (line 2).
    """
    if not path.is_file():
        raise LeadmlError(f"planned leads file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise LeadmlError(f"planned leads file {path} is not a readable CSV: {error}") from None
    frame.columns = [str(c).strip().casefold() for c in frame.columns]
    missing = [c for c in ("source", "leads") if c not in frame.columns]
    if missing:
        raise LeadmlError(
            f"planned leads file {path}: missing column(s) {missing} "
            f"(found {list(frame.columns)}; expected a header line 'source,leads')"
        )
    if frame.empty:
        raise LeadmlError(f"planned leads file {path} has a header but no rows")
    plan: dict[str, int] = {}
    rows: dict[str, int] = {}
    for number, (source, leads) in enumerate(zip(frame["source"], frame["leads"], strict=True), start=1):
        where = f"planned leads file {path}, row {number} (line {number + 1})"
        name = str(source).strip()
        if not name:
            raise LeadmlError(f"{where}: column 'source' is empty")
        text = str(leads).strip()
        try:
            plan_n = _whole_number(text, "leads")
        except LeadmlError:
            raise LeadmlError(f"{where}: column 'leads' must be a whole number >= 0, got {text!r}") from None
        if name in plan:
            raise LeadmlError(f"{where}: source {name!r} is planned twice (also row {rows[name]})")
        plan[name], rows[name] = plan_n, number
    return plan


def canonical_plan(
    planned: Mapping[str, Any], synonyms: Mapping[str, str], known: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Source names spelled as ingestion stores them (``Paid Search`` -> ``paid_search``, synonyms).

    A name that is already one of the ``known`` sources is kept as it is.
    """
    from leadml.data.contracts import normalise_token

    out: dict[str, Any] = {}
    original: dict[str, str] = {}
    for name, value in planned.items():
        token = str(name)
        if token not in known:
            token = normalise_token(token)
            token = synonyms.get(token, token)
        if token in out:
            raise LeadmlError(f"sources {original[token]!r} and {name!r} are the same source {token!r}")
        out[token], original[token] = value, str(name)
    return out


def read_scored_columns(partition: Path) -> pd.DataFrame:
    """The columns the capacity plan uses from a scored partition (not the reasons: less memory)."""
    import pyarrow.parquet as pq

    files = sorted(partition.glob("part-*.parquet"))
    names = set(pq.read_schema(files[0]).names)
    wanted = [c for c in (s.LEAD_ID, PROBABILITY, TIER, EXPECTED_VALUE) if c in names]
    return pd.concat([pd.read_parquet(f, columns=wanted) for f in files], ignore_index=True)


def _path(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _records(table: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    if table is None:
        return None
    frame = table.reset_index().astype(object)
    frame = frame.where(frame.notna(), None)
    return frame.to_dict(orient="records")


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ForecastInputs:
    """What a forecast is made from, for CRM tables and flat tables alike.

    ``leads`` holds every lead (``lead_id``, the group column ``by``, ``created_at`` when the
    data is dated): the recent pace and the default number of reps are read from it.
    ``end`` is the end of what is known and ``pace_end`` where the recent pace is measured up
    to (None: no time column, so no recent pace).
    """

    history: pd.DataFrame
    leads: pd.DataFrame
    by: str
    grouping: str
    rate: str
    end: pd.Timestamp | None
    pace_end: pd.Timestamp | None
    synonyms: Mapping[str, str] = field(default_factory=dict)
    deal_values: bool = True
    owners: bool = True
    scorable: bool = True  # leadml-score can score its open leads (a flat table needs contract.open)
    notes: tuple[str, ...] = ()

    @property
    def rate_kind(self) -> str:
        return str(self.history.attrs.get("rate", WITHIN_HORIZON))


def _synonyms(data: Mapping[str, Any], column: str) -> dict[str, str]:
    from leadml.data.contracts import IngestSettings

    return IngestSettings.from_mapping({"synonyms": data.get("synonyms")}).synonyms_for(column)


def _within_horizon(won: str, start: str, horizon: int, end: pd.Timestamp) -> str:
    return (
        f"{won} within {horizon} days of {start}, among the leads whose {horizon} days ended by "
        f"{end:%Y-%m-%d} (the mature cohort; younger leads are counted apart as immature_leads)"
    )


def crm_inputs(settings: ForecastSettings, root: Path, data: Mapping[str, Any]) -> ForecastInputs:
    """The interim CRM tables: leads and their dated outcomes, rates within the horizon."""
    from leadml.stages.common import read_interim

    tables = read_interim(_path(root, settings.input_dir), (s.LEADS, s.OUTCOMES))
    leads, outcomes = tables[s.LEADS], tables[s.OUTCOMES]
    by = settings.by or s.SOURCE
    if by not in leads.columns:
        columns = [str(c) for c in leads.columns]
        raise LeadmlError(f"forecast.by={by!r} is not a column of the leads table (columns: {columns})")
    history = historical_rates(leads, outcomes, settings.horizon_days, settings.as_of, by=by)
    end = pd.Timestamp(history.attrs["as_of"])
    return ForecastInputs(
        history=history,
        leads=leads,
        by=by,
        grouping=f"{by} (forecast.by)" if settings.by else "source (the leads' source)",
        rate=_within_horizon("won", "the lead's creation", int(history.attrs["horizon_days"]), end),
        end=end,
        pace_end=end,
        synonyms=_synonyms(data, by),
    )


def flat_grouping(data: Mapping[str, Any], columns: Any, by: str | None = None) -> tuple[str | None, str]:
    """The column that groups a flat table's leads, and why that one, in words.

    ``forecast.by`` when set; else the first column of the ``source`` family in
    ``data.families`` (the column of the leadership report's "By source"); else None: one
    pooled group, :data:`POOLED_GROUP`.
    """
    present = [str(c) for c in columns]
    if by is not None:
        if str(by) not in present:
            internal = {s.LEAD_ID, s.LABEL, s.AS_OF, s.ORDER_KEY, "dup_group"}
            raise LeadmlError(
                f"forecast.by={by!r} is not a column of data={data.get('name')}'s lead table "
                f"(columns: {[c for c in present if c not in internal]})"
            )
        return str(by), f"{by} (forecast.by)"
    families = data.get("families") or {}
    sources = [str(c) for c, family in families.items() if family == "source" and str(c) in present]
    if not sources:
        return None, f"one pooled group, {POOLED_GROUP!r} (data.families maps no column to the family source)"
    others = f"; forecast.by={sources[1]} groups by another" if len(sources) > 1 else ""
    why = f"{sources[0]}, the source-family column of data.families (as the report's By source){others}"
    return sources[0], why


# how ingest's reasons begin for the leads it sets aside unlabelled (leadml.data.ingest.NOT_LABELLED_*)
_NOT_LABELLED = "not labelled: "


def unlabelled_leads(
    interim: Path, data: Mapping[str, Any], observed_from: str | None
) -> pd.DataFrame | None:
    """The leads of a flat table labelled by outcomes that ingest set aside because their horizon
    had not elapsed: its immature leads, typed again through the contract (``lead_id``, ``as_of``
    and the other columns, as in the labelled table); None when there are none.

    Leads before ``observed_from`` (set aside too: their outcomes were not recorded) belong to
    no cohort and are left out.
    """
    from leadml.data.contracts import (
        QUARANTINE_COLUMNS,
        REASON,
        SETTINGS_KEYS,
        IngestSettings,
        flat_contract,
        validate_table,
    )
    from leadml.stages.common import FLAT_TABLE

    path = interim / "quarantine" / f"{FLAT_TABLE}.parquet"
    if not path.exists():
        return None
    rows = pd.read_parquet(path)
    rows = rows[rows[REASON].astype("string").str.startswith(_NOT_LABELLED).fillna(False).to_numpy(bool)]
    if rows.empty:
        return None
    contract = flat_contract(data["contract"], data.get("outcomes"))
    settings = IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})
    typed = validate_table(
        rows.drop(columns=[c for c in QUARANTINE_COLUMNS if c in rows.columns]).reset_index(drop=True),
        contract.table,
        settings.with_fixed_reference_time(),
        source=str(path),
        enforce_bad_share=False,
    ).accepted
    assert contract.time_column is not None  # a flat table labelled by outcomes has one
    frame = typed.rename(columns={contract.id_column: s.LEAD_ID, contract.time_column: s.AS_OF})
    if observed_from:
        frame = frame[frame[s.AS_OF] >= to_utc(observed_from)]
    return frame if len(frame) else None


def _lead_rows(part: pd.DataFrame, column: str | None, by: str, dated: bool, label: Any) -> pd.DataFrame:
    """One table's leads as the forecast reads them: ``lead_id``, ``created_at``, ``by``, ``label``."""
    frame = pd.DataFrame({s.LEAD_ID: part[s.LEAD_ID].astype("string").to_numpy()})
    if dated:
        frame[s.CREATED_AT] = part[s.AS_OF].to_numpy()
    frame[by] = part[column].astype("string").to_numpy() if column is not None else POOLED_GROUP
    frame[s.LABEL] = pd.array(label, dtype="Int64") if label is not None else pd.NA
    frame[s.LABEL] = frame[s.LABEL].astype("Int64")
    return frame


NO_DEAL_VALUES = (
    "no deal values: a flat table names none, so revenue is shown as missing (not 0) and there is "
    "no reverse forecast (leads needed for a revenue target)"
)


def flat_inputs(settings: ForecastSettings, root: Path, data: Mapping[str, Any]) -> ForecastInputs:
    """A flat table read through its contract (as ``leadml-score`` does), grouped and rated.

    Labelled by outcomes (dated won events): the CRM's definition, won within the horizon on
    the mature cohort, the leads ingest set aside as immature counted apart. Labelled by a
    target column: won / (won + lost) among the closed leads (:func:`closed_rates`), the open
    leads counted apart. Either way a flat table has no deal values and no owners.
    """
    from leadml.data.contracts import OUTCOMES_TABLE, as_tuple
    from leadml.stages.common import FLAT_TABLE, ingest_stage, open_rows_file

    name = data.get("name")
    contract = data.get("contract") or {}
    spec = data.get("outcomes") or None
    for key in ("revenue_target", "mix"):  # config errors first: they cost no time
        if getattr(settings, key) is not None:
            raise LeadmlError(
                f"forecast.{key} needs won deal values and data={name} is a flat table without any: "
                "leave it null (revenue is shown as missing, with no reverse forecast)"
            )
    if spec is None and settings.as_of is not None:
        raise LeadmlError(
            f"forecast.as_of needs dated outcomes and data={name}'s target ({contract.get('target')}) "
            "has no date: leave it null"
        )
    interim = _path(root, settings.input_dir)
    record = ingest_stage(data, interim)  # today's file through its contract, as leadml-score reads it
    labelled = pd.read_parquet(interim / f"{FLAT_TABLE}.parquet")
    column, grouping = flat_grouping(data, labelled.columns, settings.by)
    by = column or s.SOURCE
    dated = s.AS_OF in labelled.columns
    notes = [NO_DEAL_VALUES]
    if spec is not None:  # dated won events: the CRM's label
        labels = record.get("labels") or {}
        # younger leads: the open ones (not won yet) and those won already, set aside by ingest
        open_path = interim / open_rows_file(FLAT_TABLE)
        younger = [
            part
            for part in (
                pd.read_parquet(open_path) if open_path.exists() else None,
                unlabelled_leads(interim, data, labels.get("observed_from")),
            )
            if part is not None and len(part)
        ]
        parts = [labelled, *younger]
        leads = pd.concat([_lead_rows(p, column, by, dated, None) for p in parts], ignore_index=True)
        events = pd.read_parquet(interim / f"{OUTCOMES_TABLE}.parquet")
        outcomes = pd.DataFrame(
            {
                s.LEAD_ID: events[str(spec["id"])].astype("string"),
                s.STATUS: s.WON,
                s.CLOSED_AT: events[str(spec["time"])],
                s.DEAL_VALUE: np.nan,
            }
        )
        # outcomes complete only until the configured observed_until: the end of what is known
        as_of = settings.as_of
        if as_of is None and labels.get("observed_until_from") == "config":
            as_of = labels.get("observed_until")
        history = historical_rates(leads, outcomes, settings.horizon_days, as_of, by=by)
        end = pd.Timestamp(history.attrs["as_of"])
        horizon = int(history.attrs["horizon_days"])
        if float(spec["horizon_days"]) != horizon:
            notes.append(
                f"forecast.horizon_days={horizon} is not the label's outcomes.horizon_days="
                f"{float(spec['horizon_days']):g}: the rates are of wins within {horizon} days"
            )
        rate = _within_horizon(str(spec["time"]), str(contract.get("time")), horizon, end)
        pace_end: pd.Timestamp | None = min(end, to_utc(leads[s.CREATED_AT].max()))
    else:  # a target column: converted or not, with no date
        open_path = interim / open_rows_file(FLAT_TABLE)
        parts = [_lead_rows(labelled, column, by, dated, labelled[s.LABEL])]
        if open_path.exists():
            parts.append(_lead_rows(pd.read_parquet(open_path), column, by, dated, None))
        leads = pd.concat(parts, ignore_index=True)
        latest = leads[s.CREATED_AT].max() if dated else pd.NaT
        end = None if pd.isna(latest) else to_utc(latest)
        history = closed_rates(leads, by, as_of=end)
        values = {k: list(as_tuple(contract.get(k))) for k in ("positive", "negative", "open")}
        lost = values["negative"] or "the other value"
        rate = (
            f"won / (won + lost) among the closed leads, whenever they closed (target "
            f"{contract.get('target')}: won {values['positive']}, lost {lost}); "
            f"the open leads ({values['open'] or 'none declared'}) are left out, counted as immature_leads. "
            "The target has no date, so this is not a rate within a horizon and days to convert are unknown"
        )
        pace_end = end
        if not dated:
            notes.append(
                "no time column (contract.time): the rates are of every closed lead in the file, and there "
                "is no recent pace to plan from"
            )
    return ForecastInputs(
        history=history,
        leads=leads,
        by=by,
        grouping=grouping,
        rate=rate,
        end=end,
        pace_end=pace_end,
        synonyms=_synonyms(data, column) if column is not None else {},
        deal_values=False,
        owners=False,
        scorable=bool(as_tuple(contract.get("open"))),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- stage
def _plan(settings: ForecastSettings, root: Path, inputs: ForecastInputs, name: Any) -> tuple[dict, str]:
    """The planned leads per group and where they came from (CSV, config, or the recent pace)."""
    if settings.planned_csv is not None:
        path = _path(root, settings.planned_csv)
        return read_planned_csv(path), str(path)
    if settings.planned is not None:
        return dict(settings.planned), "forecast.planned"
    if inputs.pace_end is None:
        groups = [str(k) for k in inputs.history.index if k != ALL]
        shown = ", ".join(groups[:8]) + (f", ... ({len(groups)} in all)" if len(groups) > 8 else "")
        raise LeadmlError(
            f"data={name} has no time column (contract.time), so there is no recent pace to plan from: "
            f"set forecast.planned='{{{groups[0] if groups else POOLED_GROUP}: 500}}' or "
            f"forecast.planned_csv=plan.csv (leads per value of {inputs.by}: {shown})"
        )
    plan = recent_volume(
        inputs.leads, inputs.pace_end, settings.planned_period_days, settings.lookback_days, by=inputs.by
    )
    to = ""
    if inputs.end is not None and inputs.pace_end < inputs.end:
        to = f" to {inputs.pace_end:%Y-%m-%d} (the last lead)"
    period = settings.planned_period_days
    return plan, f"the pace of the last {settings.lookback_days} days{to}, per {period} days"


def _default_reps(leads: pd.DataFrame, end: pd.Timestamp, lookback_days: int) -> int:
    """The distinct owners of the leads created in the last ``lookback_days`` (the sales team)."""
    if s.OWNER not in leads.columns:
        raise LeadmlError("forecast.reps is not set and the leads have no owner column: set forecast.reps")
    created = pd.to_datetime(leads[s.CREATED_AT], utc=True)
    reps = int(leads.loc[created > end - pd.Timedelta(days=lookback_days), s.OWNER].nunique())
    if reps == 0:
        raise LeadmlError(
            f"forecast.reps is not set and no lead of the last {lookback_days} days names an owner: "
            "set forecast.reps"
        )
    return reps


def _capacity(
    settings: ForecastSettings, root: Path, inputs: ForecastInputs
) -> tuple[pd.DataFrame | None, Path | None, int | None]:
    """The capacity plan on the chosen scored run; (None, None, None) when there is no scored run."""
    partition_dir = settings.scored_dir
    partition = find_partition(_path(root, partition_dir), settings.scored_as_of)
    if partition is None:
        if inputs.scorable:
            logger.warning("no scored run in %s: no capacity plan (run leadml-score first)", partition_dir)
        return None, None, None
    if settings.reps is not None:
        reps = settings.reps
    elif inputs.owners and inputs.end is not None:
        reps = _default_reps(inputs.leads, inputs.end, settings.lookback_days)
    else:
        raise LeadmlError(
            "forecast.reps is not set and a flat table names no owners to count the sales team from: "
            "set forecast.reps (how many reps work the open leads)"
        )
    try:
        table = capacity_plan(
            read_scored_columns(partition),
            reps,
            settings.leads_per_rep_per_day,
            settings.days,
            level=settings.level,
        )
    except LeadmlError as error:
        raise LeadmlError(f"{partition}: {error}") from None
    return table, partition, reps


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def forecast_stage(cfg: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Read the data and the latest scored run, forecast, write CSVs and one JSON.

    ``cfg`` is the whole composed config (``forecast``, ``data``); relative paths are read
    from ``root``. CRM data is read from the interim tables; a flat table is read again
    through its contract (as ``leadml-score`` does, so the forecast is of today's file).
    Writes ``history.csv``, ``forward.csv``, ``reverse.csv`` (when there are deal values),
    ``capacity.csv`` (when there is a scored run) and ``forecast.json`` (everything, with
    the settings, what the rate means and how leads are grouped) to ``forecast.output_dir``,
    and returns the tables as DataFrames (``history``, ``forward``, ``reverse`` or None,
    ``capacity`` or None) with what made them.

    Defaults when a setting is null: the plan is the last ``lookback_days``' pace per
    ``planned_period_days`` (a flat table: up to its last lead; without a time column there
    is none and the plan must be given); the revenue target is the plan's expected revenue;
    reps are the distinct owners of the leads created in the last ``lookback_days`` (a flat
    table names none: set ``forecast.reps``).
    """
    started = time.perf_counter()
    settings = ForecastSettings.from_mapping(cfg.get("forecast"))
    data = cfg.get("data") or {}
    kind = data.get("kind", "crm")
    if kind == "flat":
        inputs = flat_inputs(settings, root, data)
    elif kind == "crm":
        inputs = crm_inputs(settings, root, data)
    else:
        raise LeadmlError(f"data.kind must be 'crm' or 'flat', got {kind!r} (data={data.get('name')})")
    history = inputs.history

    known = tuple(str(k) for k in history.index if k != ALL)
    plan, planned_from = _plan(settings, root, inputs, data.get("name"))
    plan = canonical_plan(plan, inputs.synonyms, known)
    common = {
        "draws": settings.draws,
        "seed": settings.seed,
        "prior": settings.prior,
        "min_wins": settings.min_wins,
        "unknown_source": settings.unknown_source,
    }
    forward = forecast_forward(history, plan, level=settings.level, revenue=inputs.deal_values, **common)
    reverse: pd.DataFrame | None = None
    target: float | None = None
    target_from: str | None = None
    if inputs.deal_values:
        target, target_from = settings.revenue_target, "forecast.revenue_target"
        if target is None:
            target, target_from = float(forward.loc[TOTAL, "expected_revenue"]), "the plan's expected revenue"
        mix = canonical_plan(settings.mix, inputs.synonyms, known) if settings.mix is not None else None
        reverse = leads_needed(history, target, mix=mix, confidence=settings.confidence, **common)
    capacity, partition, reps = _capacity(settings, root, inputs)
    no_capacity = None
    if capacity is None:
        no_capacity = "no scored run, so no capacity plan (run leadml-score first)"
        if not inputs.scorable:
            no_capacity = (
                f"no capacity plan: data={data.get('name')} has no open leads to score (contract.open), "
                "so leadml-score has no run to plan from"
            )

    out = _path(root, settings.output_dir)
    outputs = {"history": rates_table(history), "forward": forward, "reverse": reverse, "capacity": capacity}
    files: dict[str, str] = {}
    for name, table in outputs.items():
        if table is not None:
            write_csv_atomic(table, out / f"{name}.csv")
            files[name] = str(out / f"{name}.csv")
    horizon = history.attrs["horizon_days"]
    summary: dict[str, Any] = {
        "as_of": inputs.end,
        "horizon_days": None if horizon is None else int(horizon),
        "rate_kind": inputs.rate_kind,
        "rate_definition": inputs.rate,
        "group_by": inputs.by,
        "grouping": inputs.grouping,
        "planned": plan,
        "planned_from": planned_from,
        "revenue_target": target,
        "revenue_target_from": target_from,
        "mix": None
        if reverse is None
        else {str(k): float(v) for k, v in reverse["share"].drop(TOTAL).items() if v > 0},
        "confidence": settings.confidence,
        "level": settings.level,
        "scored_partition": None if partition is None else str(partition),
        "reps": reps,
        "capacity_leads": None if capacity is None else capacity.attrs["capacity"],
        "threshold": None if capacity is None else capacity.attrs["threshold"],
        "no_capacity": no_capacity,
        "notes": list(inputs.notes),
        "seconds": round(time.perf_counter() - started, 2),
    }
    record = _json_ready(
        {**summary, "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__}}
    )
    record.update({name: _records(table) for name, table in outputs.items()})
    from leadml.adapters.sources import write_json_atomic

    write_json_atomic(record, out / "forecast.json")
    files["json"] = str(out / "forecast.json")
    return {**summary, "files": files, **outputs}


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """What ``leadml-forecast`` prints of a :func:`forecast_stage` summary, one line per table."""
    level = f"{summary['level']:.0%}"
    history = summary["history"].loc[ALL]
    as_of = summary["as_of"]
    if summary["rate_kind"] == AMONG_CLOSED:
        when = f" as of {as_of:%Y-%m-%d}" if as_of is not None else " (no time column)"
        lines = [
            f"forecast: history{when}: {int(history['leads']):,} closed leads, {int(history['won']):,} won "
            f"({history['conversion_rate']:.1%} = won / (won + lost) among closed leads, not a rate within "
            f"a horizon); {int(history['immature_leads']):,} open leads left out of the rates"
        ]
    else:
        lines = [
            f"forecast: history as of {as_of:%Y-%m-%d}: {int(history['leads']):,} mature leads, "
            f"{int(history['won']):,} won within {summary['horizon_days']} days "
            f"({history['conversion_rate']:.1%}); {int(history['immature_leads']):,} younger leads "
            "left out of the rates"
        ]
    groups = len(summary["history"]) - 1
    lines.append(f"forecast: rates per {summary['grouping']}: {groups:,} group{'s' * (groups != 1)}")
    forward = summary["forward"].loc[TOTAL]
    revenue = (
        "revenue not available (no deal values)"
        if pd.isna(forward["expected_revenue"])
        else f"revenue {forward['expected_revenue']:,.0f} "
        f"[{forward['revenue_low']:,.0f}, {forward['revenue_high']:,.0f}]"
    )
    lines.append(
        f"forecast: {int(forward['planned_leads']):,} planned leads ({summary['planned_from']}): "
        f"{forward['expected_conversions']:,.1f} conversions [{int(forward['conversions_low']):,}, "
        f"{int(forward['conversions_high']):,}], {revenue} ({level} intervals)"
    )
    if summary["reverse"] is not None:
        reverse = summary["reverse"].loc[TOTAL]
        lines.append(
            f"forecast: revenue {summary['revenue_target']:,.0f} ({summary['revenue_target_from']}) needs "
            f"{int(reverse['mix_expected']):,} leads of the mix in expectation, "
            f"{int(reverse['mix_at_confidence']):,} to reach it with {summary['confidence']:.0%} confidence"
        )
    if summary["capacity"] is None:
        lines.append(f"forecast: {summary['no_capacity']}")
    else:
        capacity = summary["capacity"].loc[TOTAL]
        lines.append(
            f"forecast: {summary['reps']} reps work {int(capacity['worked_leads']):,} of "
            f"{int(capacity['open_leads']):,} open leads (probability >= {summary['threshold']:.3f}): "
            f"{capacity['expected_wins']:,.1f} wins expected [{int(capacity['wins_low']):,}, "
            f"{int(capacity['wins_high']):,}]"
        )
    lines.extend(f"forecast: note: {note}" for note in summary["notes"])
    folder = Path(summary["files"]["json"]).parent
    names = ", ".join(Path(path).name for path in summary["files"].values())
    lines.append(f"forecast: wrote {names} to {folder} ({summary['seconds']} s)")
    return lines
