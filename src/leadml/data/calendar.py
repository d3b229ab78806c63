"""Snapshot calendar shared by the generator's ground truth and the snapshot builder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from leadml.errors import LeadmlError

# Snapshot dates sit on a fixed grid (every `cadence_days` from a Monday) so that
# training snapshots, ground truth and out-of-time split boundaries line up across runs.
SNAPSHOT_ANCHOR = pd.Timestamp("2000-01-03", tz="UTC")
DAYS_PER_WEEK = 7


def snapshot_dates(start: pd.Timestamp, end: pd.Timestamp, cadence_days: int) -> pd.DatetimeIndex:
    """Grid dates T (midnight UTC) with ``start < T <= end``, one every ``cadence_days`` days.

    A cadence of whole weeks would put every date on one weekday (Mondays from the anchor),
    while the nightly job scores on every weekday: recency features ("last activity 2 days
    ago") then differ between training and scoring by the weekend alone. So the k-th date of
    such a grid moves ``k mod 7`` days later: seven consecutive dates fall on seven different
    weekdays, the mean cadence is unchanged and the grid stays fixed across runs.
    """
    if cadence_days < 1:
        raise ValueError(f"cadence_days must be at least 1, got {cadence_days}")
    start, end = to_utc(start), to_utc(end)
    step = pd.Timedelta(days=cadence_days)
    first = (start - SNAPSHOT_ANCHOR) // step - 1  # the shift is under a week: one step back is enough
    last = (end - SNAPSHOT_ANCHOR) // step
    if last < first:
        return pd.DatetimeIndex([], tz="UTC")
    k = np.arange(first, last + 1, dtype=np.int64)
    shift = k % DAYS_PER_WEEK if cadence_days % DAYS_PER_WEEK == 0 else np.zeros_like(k)
    dates = SNAPSHOT_ANCHOR + pd.to_timedelta(k * cadence_days + shift, unit="D")
    return pd.DatetimeIndex(dates[(dates > start) & (dates <= end)], tz="UTC").as_unit("ns")


def to_utc(value: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp made explicit in UTC; naive values are taken to be UTC already."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def date_setting(value: Any, key: str, expected: str = "YYYY-MM-DD") -> pd.Timestamp:
    """The date a config key names, as midnight UTC; a LeadmlError naming ``key`` when it is not one.

    pandas refuses ``2026-02-30`` or ``notadate`` with a traceback and reads ``nat`` or an empty
    text as NaT, which later comparisons turn into a TypeError: each is one line naming the key.
    ``expected`` is what the key accepts, in the message.
    """
    try:
        stamp = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise LeadmlError(f"{key} must be {expected}, got {value!r}")
    return to_utc(stamp).normalize()
