"""What the notebooks show, as pure functions: the data and the funnel, and a model's errors.

``notebooks/01-explore-leads.ipynb`` and ``notebooks/02-model-diagnostics.ipynb`` hold no
logic of their own: every table and chart they show comes from here (or from
``leadml.modelling.evaluate``, ``leadml.reporting.plots`` and ``leadml.scoring.scores``), so it is tested
like the
rest of the package. Functions take the ingested tables (``data/interim/<name>/``), an
ingest manifest, training snapshots or a :class:`~leadml.modelling.scorer.LeadScorer`, and return
DataFrames or matplotlib Figures; none reads files or talks to MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.modelling.reasons import grouped_reasons
from leadml.modelling.scorer import MARGIN, PROBABILITY, LeadScorer, as_model_input
from leadml.modelling.split import TEST, SplitSettings, split_with_report, window_fingerprint

ALL = "all"  # the pooled row of a per-source table
UNKNOWN = "unknown"  # a missing source
FUNNEL_STAGES: tuple[str, ...] = ("created", "engaged", "closed", "won")
UNCALIBRATED = "uncalibrated"
MISS, FALSE_ALARM = "confident miss", "false alarm"
_DAY_SECONDS = 86_400.0
_QUARANTINE_COLUMNS = ("input_rows", "accepted_rows", "quarantined_rows", "collateral_rows", "bad_share")


# --------------------------------------------------------------------------- helpers
def _positions(keys: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each key in the unique ``index`` (-1 where absent); categorical keys by category."""
    if isinstance(keys.dtype, pd.CategoricalDtype):
        per_category = index.get_indexer(keys.cat.categories)
        codes = keys.cat.codes.to_numpy()
        return np.where(codes >= 0, per_category[np.maximum(codes, 0)], -1)
    return index.get_indexer(keys)


def _keys(column: pd.Series) -> pd.Series:
    """Values of a grouping column as text, missing as ``unknown``."""
    return column.astype("string").fillna(UNKNOWN).astype(object)


def _utc(stamps: pd.Series) -> np.ndarray:
    """Timestamps as a numpy datetime64 array in UTC (NaT where missing)."""
    return pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy()


def _status(leads: pd.DataFrame, outcomes: pd.DataFrame) -> np.ndarray:
    """Each lead's status (``won``, ``lost`` or ``open``); a lead without an outcome row is open."""
    latest = outcomes.drop_duplicates(s.LEAD_ID, keep="last")
    if latest.empty:
        return np.full(len(leads), s.OPEN, dtype=object)
    position = _positions(leads[s.LEAD_ID], pd.Index(latest[s.LEAD_ID]))
    status = latest[s.STATUS].astype(object).to_numpy()
    return np.where(position >= 0, status[np.maximum(position, 0)], s.OPEN).astype(object)


def _month(stamps: pd.Series) -> pd.Series:
    """The first day of each timestamp's calendar month (UTC), without a time zone."""
    utc = pd.to_datetime(stamps, utc=True).dt.tz_localize(None)
    return utc.dt.to_period("M").dt.to_timestamp()


# --------------------------------------------------------------------------- volume
def monthly_volume(leads: pd.DataFrame, by: str = s.SOURCE) -> pd.DataFrame:
    """Leads created per calendar month (UTC, rows) and value of ``by`` (columns, largest first).

    Months without a lead are present with zeros, so a gap in the CRM export shows as a gap.
    """
    if leads.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="month"))
    month = _month(leads[s.CREATED_AT])
    table = pd.crosstab(month.rename("month"), _keys(leads[by]).rename(by).to_numpy())
    every_month = pd.date_range(month.min(), month.max(), freq="MS", name="month")
    table = table.reindex(every_month, fill_value=0)
    table = table[table.sum().sort_values(ascending=False).index]
    table.columns.name = by
    return table


def monthly_outcomes(leads: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per month of creation: leads, and how many are won, lost or still open at the end of the data.

    Recent months are mostly open: their leads have not had the time to close. A conversion
    rate over all leads therefore falls towards the end of the data although nothing
    changed (right censoring), which is why the model's label looks at a fixed horizon
    and the forecast counts only leads whose horizon has passed.
    """
    status = pd.Series(_status(leads, outcomes), index=leads.index)
    table = pd.crosstab(_month(leads[s.CREATED_AT]).rename("month"), status)
    table = table.reindex(columns=[s.WON, s.LOST, s.OPEN], fill_value=0)
    table.columns.name = None
    table.insert(0, "leads", table.sum(axis=1))
    for name in (s.WON, s.LOST, s.OPEN):
        table[f"{name}_share"] = table[name] / table["leads"]
    return table


# --------------------------------------------------------------------------- funnel
def funnel(
    leads: pd.DataFrame, outcomes: pd.DataFrame, activities: pd.DataFrame, by: str = s.SOURCE
) -> pd.DataFrame:
    """Leads at each funnel stage per value of ``by``, with the conversion of every step, and an ``all`` row.

    The stages are nested, so each step rate reads "of the leads at the previous stage":

    - ``created``: every lead;
    - ``engaged``: at least one recorded activity (any type, any time);
    - ``closed``: engaged and closed (won or lost);
    - ``won``: engaged and won.

    ``engaged_rate`` is engaged / created, ``close_rate`` closed / engaged, ``win_rate``
    won / closed and ``conversion_rate`` won / created. Won leads without any recorded
    activity fall out of the nested funnel and are counted apart in ``won_unengaged`` (a
    CRM where many deals close without a logged touch loses the behaviour the model
    learns from). Still-open leads lower ``close_rate``: compare sources of similar age.
    """
    lead_ids = pd.Index(leads[s.LEAD_ID].drop_duplicates())
    engaged_positions = np.unique(_positions(activities[s.LEAD_ID], lead_ids))
    engaged_by_id = np.zeros(len(lead_ids), dtype=bool)
    engaged_by_id[engaged_positions[engaged_positions >= 0]] = True
    engaged = engaged_by_id[_positions(leads[s.LEAD_ID], lead_ids)]
    status = _status(leads, outcomes)
    closed = np.isin(status, [s.WON, s.LOST])
    won = status == s.WON
    frame = pd.DataFrame(
        {
            by: _keys(leads[by]).to_numpy(),
            "created": 1,
            "engaged": engaged.astype("int64"),
            "closed": (engaged & closed).astype("int64"),
            "won": (engaged & won).astype("int64"),
            "won_unengaged": (~engaged & won).astype("int64"),
        }
    )
    counts = frame.groupby(by, sort=False).sum().sort_values("created", ascending=False)
    counts.loc[ALL] = frame.drop(columns=by).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        counts["engaged_rate"] = counts["engaged"] / counts["created"]
        counts["close_rate"] = counts["closed"] / counts["engaged"]
        counts["win_rate"] = counts["won"] / counts["closed"]
        counts["conversion_rate"] = counts["won"] / counts["created"]
    counts.index.name = by
    return counts


def funnel_figure(table: pd.DataFrame) -> Figure:
    """Left: leads at each stage (the ``all`` row) with the step rates; right: conversion per source."""
    figure, (stages, sources) = plt.subplots(1, 2, figsize=(12.0, 4.5))
    pooled = table.loc[ALL, list(FUNNEL_STAGES)].astype("float64")
    bars = stages.bar(list(FUNNEL_STAGES), pooled.to_numpy(), color="#2458d6")
    for previous, bar, count in zip([None, *pooled.to_numpy()[:-1]], bars, pooled.to_numpy(), strict=True):
        label = f"{count:,.0f}" if previous is None else f"{count:,.0f}\n({count / max(previous, 1):.0%})"
        stages.annotate(label, (bar.get_x() + bar.get_width() / 2, count), ha="center", va="bottom")
    stages.set(ylabel="leads", title="Funnel, all sources (step conversion in brackets)")
    stages.margins(y=0.2)
    per_source = table.drop(index=ALL)["conversion_rate"].sort_values()
    sources.barh(per_source.index.astype(str), per_source.to_numpy(), color="#2458d6")
    sources.axvline(table.loc[ALL, "conversion_rate"], color="grey", linestyle="--", label="all sources")
    sources.set(xlabel="won / created", title="Conversion by source")
    sources.xaxis.set_major_formatter(PercentFormatter(1.0))
    sources.legend(loc="lower right")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- time to close
def days_to_close(leads: pd.DataFrame, outcomes: pd.DataFrame, by: str = s.SOURCE) -> pd.DataFrame:
    """One row per closed lead: ``lead_id``, ``by``, ``status`` (won, lost), ``days`` from creation to close.

    Leads without a closing time, or closed before they were created, are left out.
    """
    closed = outcomes[outcomes[s.STATUS].astype(object).isin([s.WON, s.LOST])].drop_duplicates(
        s.LEAD_ID, keep="last"
    )
    position = _positions(closed[s.LEAD_ID], pd.Index(leads[s.LEAD_ID].drop_duplicates()))
    unique_leads = leads.drop_duplicates(s.LEAD_ID).reset_index(drop=True)
    found = position >= 0
    closed, position = closed[found], position[found]
    created = _utc(unique_leads[s.CREATED_AT])[position]
    closed_at = _utc(closed[s.CLOSED_AT])
    days = (closed_at - created) / np.timedelta64(1, "s") / _DAY_SECONDS
    frame = pd.DataFrame(
        {
            s.LEAD_ID: closed[s.LEAD_ID].astype(object).to_numpy(),
            by: _keys(unique_leads[by]).to_numpy()[position],
            s.STATUS: closed[s.STATUS].astype(object).to_numpy(),
            "days": days.astype("float64"),
        }
    )
    return frame[frame["days"].notna() & (frame["days"] >= 0)].reset_index(drop=True)


def time_to_close(days: pd.DataFrame, by: str = s.SOURCE) -> pd.DataFrame:
    """Per value of ``by`` (and ``all``): closed leads, median and 90th percentile of days, won and lost.

    ``days`` is a :func:`days_to_close` frame. Lost leads that take as long as won ones
    are leads sales kept warm for nothing; a long won tail sets how long a horizon the
    label needs.
    """
    rows: dict[str, dict[str, float]] = {}
    groups = [(str(key), part) for key, part in days.groupby(by, sort=False)]
    for key, part in [*groups, (ALL, days)]:
        row: dict[str, float] = {}
        for status in (s.WON, s.LOST):
            values = part.loc[part[s.STATUS] == status, "days"]
            row[status] = len(values)
            row[f"{status}_median_days"] = float(values.median()) if len(values) else np.nan
            row[f"{status}_p90_days"] = float(values.quantile(0.9)) if len(values) else np.nan
        rows[key] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table.astype({s.WON: "int64", s.LOST: "int64"})
    order = [*table.drop(index=ALL).sort_values(s.WON, ascending=False).index, ALL]
    table = table.loc[order]
    table.index.name = by
    return table


def time_to_close_figure(days: pd.DataFrame, max_days: float | None = None) -> Figure:
    """Distribution of days from creation to close, won against lost (a :func:`days_to_close` frame)."""
    figure, axes = plt.subplots(figsize=(8.0, 4.0))
    upper = max_days if max_days is not None else (float(days["days"].quantile(0.99)) if len(days) else 1.0)
    bins = np.linspace(0.0, max(upper, 1.0), 50)
    for status, colour in ((s.WON, "#1a9850"), (s.LOST, "#d73027")):
        values = days.loc[days[s.STATUS] == status, "days"].clip(upper=bins[-1])
        axes.hist(
            values, bins=bins, alpha=0.6, density=True, color=colour, label=f"{status} ({len(values):,})"
        )
    axes.set(xlabel="days from creation to close", ylabel="share of leads per day", title="Time to close")
    axes.legend()
    return figure


# --------------------------------------------------------------------------- behaviour
def activity_mix(activities: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Events per closed lead by kind of activity, won against lost, counting only events up to the close.

    Page views are split by page category (``page_view: pricing``). Columns: ``won`` and
    ``lost`` (events per won or lost lead, leads without events included), ``won_reach``
    and ``lost_reach`` (share of those leads with at least one such event) and ``ratio``
    (won / lost per lead; above 1, the activity is more typical of leads that were won).
    Sorted by ``ratio``. Only what happened before the close counts: activity after it
    (the onboarding call of a won deal) would flatter the behaviour of winners.
    """
    closed = outcomes[outcomes[s.STATUS].astype(object).isin([s.WON, s.LOST])].drop_duplicates(
        s.LEAD_ID, keep="last"
    )
    is_won = (closed[s.STATUS].astype(object) == s.WON).to_numpy()
    n_won, n_lost = int(is_won.sum()), int((~is_won).sum())
    position = _positions(activities[s.LEAD_ID], pd.Index(closed[s.LEAD_ID]))
    known = position >= 0
    closed_at = _utc(closed[s.CLOSED_AT])[np.maximum(position, 0)] if len(closed) else np.datetime64("NaT")
    stamp = _utc(activities[s.TIMESTAMP])
    before_close = pd.isna(closed_at) | (stamp <= closed_at)
    keep = known & before_close
    category = (
        activities[s.PAGE_CATEGORY]
        if s.PAGE_CATEGORY in activities
        else pd.Series(None, index=activities.index, dtype=object)
    )
    events = pd.DataFrame(
        {
            "type": activities[s.ACTIVITY_TYPE].astype(object).to_numpy()[keep],
            "category": category.astype(object).to_numpy()[keep],
            "lead": position[keep],
            "won": is_won[position[keep]],
        }
    )
    events.loc[events["type"] != s.PAGE_VIEW, "category"] = None
    if events.empty:
        columns = [s.WON, s.LOST, f"{s.WON}_reach", f"{s.LOST}_reach", "ratio"]
        empty = pd.DataFrame(columns=columns, index=pd.Index([], name="activity"), dtype="float64")
        empty.attrs.update(won_leads=n_won, lost_leads=n_lost)
        return empty
    counts = events.groupby(["type", "category", "won"], dropna=False).agg(
        events=("lead", "size"), leads=("lead", "nunique")
    )
    table = counts.unstack("won", fill_value=0)
    table = table.reindex(
        columns=pd.MultiIndex.from_product([["events", "leads"], [True, False]]), fill_value=0
    )
    labels = [
        f"{kind}: {category}" if isinstance(category, str) else str(kind) for kind, category in table.index
    ]
    with np.errstate(divide="ignore", invalid="ignore"):
        mix = pd.DataFrame(
            {
                s.WON: table[("events", True)].to_numpy() / max(n_won, 1),
                s.LOST: table[("events", False)].to_numpy() / max(n_lost, 1),
                f"{s.WON}_reach": table[("leads", True)].to_numpy() / max(n_won, 1),
                f"{s.LOST}_reach": table[("leads", False)].to_numpy() / max(n_lost, 1),
            },
            index=pd.Index(labels, name="activity"),
        )
        mix["ratio"] = mix[s.WON] / mix[s.LOST]
    mix.attrs.update(won_leads=n_won, lost_leads=n_lost)
    return mix.sort_values("ratio", ascending=False)


def activity_mix_figure(mix: pd.DataFrame) -> Figure:
    """Events per closed lead by activity, won against lost (an :func:`activity_mix` table)."""
    shown = mix.iloc[::-1]
    figure, axes = plt.subplots(figsize=(8.0, 0.35 * len(shown) + 1.5))
    rows = np.arange(len(shown))
    axes.barh(rows + 0.2, shown[s.WON].to_numpy(), height=0.4, color="#1a9850", label="won")
    axes.barh(rows - 0.2, shown[s.LOST].to_numpy(), height=0.4, color="#d73027", label="lost")
    axes.set_yticks(rows, shown.index.astype(str))
    axes.set(xlabel="events per lead before the close", title="Activity of won and lost leads")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- data quality
def ingest_summary(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Per table of an ingest manifest: rows read, accepted and quarantined, and the bad share.

    ``collateral_rows`` are rows rejected only because a related row was (an outcome of a
    quarantined lead); ``bad_share`` is what ``data.max_bad_share`` is checked against.
    """
    rows = {
        table: {column: report.get(column, 0) for column in _QUARANTINE_COLUMNS}
        for table, report in manifest.get("tables", {}).items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(_QUARANTINE_COLUMNS))
    table.index.name = "table"
    return table


def quarantine_reasons(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Every reason rows were quarantined, per table, with its row count, most frequent first."""
    records = [
        {"table": table, "reason": reason, "rows": int(count)}
        for table, report in manifest.get("tables", {}).items()
        for reason, count in (report.get("reasons") or {}).items()
    ]
    frame = pd.DataFrame(records, columns=["table", "reason", "rows"])
    return frame.sort_values(["rows", "table"], ascending=[False, True], ignore_index=True)


def missing_shares(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """Share of missing values per column (only columns with any), largest first."""
    chosen = frame[list(columns)] if columns is not None else frame
    shares = chosen.isna().mean() if len(chosen) else pd.Series(0.0, index=chosen.columns)
    return shares[shares > 0].sort_values(ascending=False).rename("missing_share")


# --------------------------------------------------------------------------- snapshots
def label_rates(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Per as-of date of the training snapshots: open leads, how many were won within the horizon, the rate.

    The rate the model learns, date by date. A trend in it is what an out-of-time test
    window feels and a random split would hide; the last dates stop where the horizon
    would run past the end of the data (censored snapshots are left out).
    """
    table = snapshots.groupby(s.AS_OF, sort=True)[s.LABEL].agg(snapshots="size", positives="sum")
    table["rate"] = table["positives"] / table["snapshots"]
    return table


# --------------------------------------------------------------------------- model diagnostics
def scorer_metadata(scorer: LeadScorer) -> dict[str, FeatureMeta]:
    """The scorer's feature metadata as :class:`~leadml.data.features.FeatureMeta` (reasons are built
    from it)."""
    return {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}


def evaluation_rows(snapshots: pd.DataFrame, train_config: Mapping[str, Any]) -> pd.DataFrame:
    """The test window of the snapshots as the training run split it (its ``split`` and ``features.exclude``).

    With the run's own config (``tracking.model_run``) these are the rows the model's
    reported metrics were measured on; ``stages.window_fingerprint`` of them equals the
    run's logged ``test`` digest when the snapshots have not changed since.
    """
    exclude = (train_config.get("features") or {}).get("exclude") or ()
    kept = snapshots.drop(columns=[c for c in exclude if c in snapshots.columns])
    split = SplitSettings.from_mapping(train_config.get("split") or {})
    return split_with_report(kept, split).parts[TEST]


def matches_logged_window(rows: pd.DataFrame, datasets: Mapping[str, str], window: str = TEST) -> bool | None:
    """Whether ``rows`` are the window the training run logged (same fingerprint); None if none was logged."""
    logged = datasets.get(window)
    return None if not logged else window_fingerprint(rows).startswith(str(logged))


def predict_rows(scorer: LeadScorer, rows: pd.DataFrame) -> pd.DataFrame:
    """Labels and predictions of snapshot rows, on the rows' index.

    Columns: ``lead_id``, ``as_of`` and ``source`` where present, ``label``,
    ``probability`` (calibrated), ``uncalibrated`` (the model's own probability, the
    logistic of its margin) and ``margin`` (log-odds).
    """
    predicted = scorer.predict(as_model_input(rows, scorer.feature_names))
    keys = [c for c in (s.LEAD_ID, s.AS_OF, s.SOURCE) if c in rows.columns]
    out = rows[keys].copy()
    if s.SOURCE in out:
        out[s.SOURCE] = _keys(out[s.SOURCE]).to_numpy()
    out[s.LABEL] = rows[s.LABEL].to_numpy()
    out[PROBABILITY] = predicted[PROBABILITY].to_numpy()
    margin = predicted[MARGIN].to_numpy(dtype="float64")
    out[UNCALIBRATED] = 1.0 / (1.0 + np.exp(-margin))
    out[MARGIN] = margin
    return out


def segment_calibration(predicted: pd.DataFrame, by: str = s.SOURCE) -> pd.DataFrame:
    """Per value of ``by`` (and ``all``): rows, positives, observed rate, mean predicted probability, gap.

    ``gap`` is predicted minus observed: a model calibrated overall can still promise too
    much for one source (gap > 0) and too little for another, which tiers and expected
    revenue per source inherit.
    """
    groups = [(str(key), part) for key, part in predicted.groupby(by, sort=False)]
    rows = {
        key: {
            "rows": len(part),
            "positives": int(part[s.LABEL].sum()),
            "observed": float(part[s.LABEL].mean()),
            "predicted": float(part[PROBABILITY].mean()),
        }
        for key, part in [*groups, (ALL, predicted)]
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["gap"] = table["predicted"] - table["observed"]
    order = [*table.drop(index=ALL).sort_values("rows", ascending=False).index, ALL]
    table = table.loc[order]
    table.index.name = by
    return table


def explain_sample(
    scorer: LeadScorer, rows: pd.DataFrame, n: int = 2000, seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame]:
    """Exact SHAP values (rows x features, log-odds) of a random sample of ``rows`` and its features.

    What ``evaluate.grouped_shap_importance`` and ``plots.shap_beeswarm_figure`` take.
    """
    sample = rows.sample(min(len(rows), n), random_state=seed)
    features = as_model_input(sample, scorer.feature_names)
    contributions = scorer.explain(features)
    return contributions[scorer.feature_names].to_numpy(dtype="float64"), sample[scorer.feature_names]


def largest_errors(
    scorer: LeadScorer, rows: pd.DataFrame, predicted: pd.DataFrame, n: int = 10, n_reasons: int = 3
) -> pd.DataFrame:
    """The ``n`` most confident misses and the ``n`` most confident false alarms, with the model's reasons.

    A confident miss is a won snapshot (label 1) with one of the lowest probabilities, a
    false alarm a snapshot not won within the horizon with one of the highest. Each lead
    appears once per kind, with its most extreme snapshot. ``predicted`` is
    :func:`predict_rows` of ``rows`` (same index). ``reasons_for`` and ``reasons_against``
    are the ``n_reasons`` groups that pushed the score up and down most, as the nightly
    report words them, with their contribution in log-odds.
    """
    misses = predicted[predicted[s.LABEL] == 1].sort_values(PROBABILITY, kind="stable")
    alarms = predicted[predicted[s.LABEL] == 0].sort_values(PROBABILITY, ascending=False, kind="stable")
    if s.LEAD_ID in predicted:
        misses, alarms = misses.drop_duplicates(s.LEAD_ID), alarms.drop_duplicates(s.LEAD_ID)
    chosen = pd.concat([misses.head(n).assign(kind=MISS), alarms.head(n).assign(kind=FALSE_ALARM)])
    keys = [c for c in (s.LEAD_ID, s.AS_OF, s.SOURCE) if c in chosen.columns]
    out = chosen[["kind", *keys, s.LABEL, PROBABILITY]].reset_index(drop=True)
    if not scorer.can_explain or chosen.empty:
        return out
    features = as_model_input(rows.loc[chosen.index], scorer.feature_names)
    contributions = scorer.explain(features)
    summed, _, sentences = grouped_reasons(contributions, scorer, features)
    out["reasons_for"] = _worded(summed, sentences, n_reasons, positive=True)
    out["reasons_against"] = _worded(summed, sentences, n_reasons, positive=False)
    return out


def _worded(summed: np.ndarray, sentences: np.ndarray, n: int, positive: bool) -> list[str]:
    """Per row, the ``n`` largest (or most negative) group contributions as "sentence (+0.42)", joined."""
    sign = 1.0 if positive else -1.0
    order = np.argsort(-sign * summed, axis=1, kind="stable")[:, :n]
    texts = []
    for row, groups in enumerate(order):
        parts = [f"{sentences[row, g]} ({summed[row, g]:+.2f})" for g in groups if sign * summed[row, g] > 0]
        texts.append("; ".join(parts))
    return texts
