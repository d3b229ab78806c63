"""Snapshot calendar shared by the generator's ground truth and the snapshot builder."""

from __future__ import annotations

import pandas as pd

# Snapshot dates sit on a fixed grid (every `cadence_days` from a Monday) so that
# training snapshots, ground truth and out-of-time split boundaries line up across runs.
SNAPSHOT_ANCHOR = pd.Timestamp("2000-01-03", tz="UTC")


def snapshot_dates(start: pd.Timestamp, end: pd.Timestamp, cadence_days: int) -> pd.DatetimeIndex:
    """Grid dates T (midnight UTC) with ``start < T <= end``, every ``cadence_days`` days."""
    if cadence_days < 1:
        raise ValueError(f"cadence_days must be at least 1, got {cadence_days}")
    start, end = to_utc(start), to_utc(end)
    step = pd.Timedelta(days=cadence_days)
    first = SNAPSHOT_ANCHOR + ((start - SNAPSHOT_ANCHOR) // step + 1) * step
    if first > end:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(first, end, freq=step, tz="UTC")


def to_utc(value: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp made explicit in UTC; naive values are taken to be UTC already."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
