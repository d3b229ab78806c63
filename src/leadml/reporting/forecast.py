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
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.calendar import date_setting, to_utc
from leadml.data.contracts import normalise_token
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
NORMAL_VARIANCE = 30.0  # Poisson-binomial: normal approximation from this variance on, exact below
_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------- checks
def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LeadmlError(
            f"{table}: missing column(s) {missing} needed by the forecast (found: {list(frame.columns)})"
        )


def whole_number(value: Any, name: str, minimum: int = 0) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a whole number >= {minimum}, got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise LeadmlError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def checked_share(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise LeadmlError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return number


def checked_draws(value: Any) -> int:
    return whole_number(value, "draws", minimum=100)


def unknown_rule(value: str) -> str:
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
    horizon = whole_number(horizon_days, "horizon_days", minimum=1)
    require_columns(leads, (s.LEAD_ID, s.CREATED_AT, by), "leads")
    require_columns(outcomes, (s.LEAD_ID, s.STATUS, s.CLOSED_AT, s.DEAL_VALUE), "outcomes")
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
    require_columns(leads, (s.LABEL, by), "leads")
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
class SourceModel:
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


def checked_positive(value: Any, name: str) -> float:
    """``value`` as a finite positive float, or an error naming the setting."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeadmlError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise LeadmlError(f"{name} must be a positive number, got {value!r}")
    return number


def check_history(history: pd.DataFrame) -> None:
    require_columns(
        history,
        ("leads", "won", "not_converted", "days_to_convert_mean", DEAL_VALUES),
        "history (the table of historical_rates)",
    )
    if ALL not in history.index:
        raise LeadmlError(f"history has no {ALL!r} row (make it with historical_rates)")


def source_model_of(
    history: pd.DataFrame,
    source: str,
    prior: float,
    min_wins: int,
    unknown_source: str,
    revenue: bool = True,
) -> SourceModel:
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
    return SourceModel(
        source=source,
        alpha=float(row["won"]) + prior,
        beta=float(row["not_converted"]) + prior,
        values=values,
        rate_from=rate_from,
        values_from=values_from,
        days_to_convert=float(days),
    )


def source_rng(seed: int, source: str) -> np.random.Generator:
    """A generator per (seed, source): a source's draws do not change when another is planned."""
    return np.random.default_rng([int(seed), zlib.crc32(source.encode("utf-8"))])


def _revenue(counts: np.ndarray, model: SourceModel, rng: np.random.Generator) -> np.ndarray:
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


def simulate_source(
    n: int, model: SourceModel, draws: int, rng: np.random.Generator, revenue: bool = True
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
    check_history(history)
    level, draws, rule = checked_share(level, "level"), checked_draws(draws), unknown_rule(unknown_source)
    prior = checked_positive(prior, "prior")
    plan = checked_plan(planned)
    rows: dict[str, dict[str, Any]] = {}
    total_conversions = np.zeros(draws, dtype="int64")
    total_revenue = np.zeros(draws, dtype="float64")
    for source, n in plan.items():
        model = source_model_of(history, source, prior, min_wins, rule, revenue)
        conversions, money = simulate_source(n, model, draws, source_rng(seed, source), revenue)
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
    plan = {str(source): whole_number(n, f"planned leads of {source!r}") for source, n in planned.items()}
    if not plan:
        raise LeadmlError("no planned leads: give at least one source and its number of leads")
    return plan


# --------------------------------------------------------------------------- reverse


# --------------------------------------------------------------------------- capacity


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
        unknown_rule(settings.unknown_source)
        if settings.as_of is not None:
            date_setting(settings.as_of, "forecast.as_of", "null (the data's end) or YYYY-MM-DD")
        if settings.scored_as_of not in (None, "", "latest"):
            date_setting(settings.scored_as_of, "forecast.scored_as_of", "latest, null or YYYY-MM-DD")
        return settings


def canonical_plan(
    planned: Mapping[str, Any], synonyms: Mapping[str, str], known: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Source names spelled as ingestion stores them (``Paid Search`` -> ``paid_search``, synonyms).

    A name that is already one of the ``known`` sources is kept as it is.
    """
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


# --------------------------------------------------------------------------- inputs


# --------------------------------------------------------------------------- stage
