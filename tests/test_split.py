"""Out-of-time, out-of-order and random splits of training snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml import schema as s
from leadml.errors import LeadmlError
from leadml.split import SplitSettings, latest_rows, split_snapshots, split_summary, split_with_report

START = pd.Timestamp("2024-01-01", tz="UTC")


def weekly_snapshots(n_leads: int = 400, weeks: int = 78, seed: int = 0) -> pd.DataFrame:
    """Leads created over `weeks` weeks, each snapshotted weekly for up to 12 weeks after creation."""
    rng = np.random.default_rng(seed)
    rows = []
    for lead in range(n_leads):
        first_week = int(rng.integers(0, weeks))
        for week in range(first_week, min(weeks, first_week + int(rng.integers(1, 13)))):
            rows.append((f"L{lead:04d}", START + pd.Timedelta(weeks=week), int(rng.random() < 0.2)))
    frame = pd.DataFrame(rows, columns=[s.LEAD_ID, s.AS_OF, s.LABEL])
    frame[s.AS_OF] = frame[s.AS_OF].dt.as_unit("ns")
    frame[s.LABEL] = frame[s.LABEL].astype("int8")
    frame["x"] = rng.normal(size=len(frame))
    return frame


def test_time_windows_are_in_order_and_no_lead_crosses_a_boundary() -> None:
    parts = split_snapshots(weekly_snapshots(), SplitSettings(test_months=3, calibration_months=3))
    assert parts["train"][s.AS_OF].max() < parts["calibration"][s.AS_OF].min()
    assert parts["calibration"][s.AS_OF].max() < parts["test"][s.AS_OF].min()
    leads = [set(parts[name][s.LEAD_ID]) for name in ("train", "calibration", "test")]
    assert not leads[0] & leads[1] and not leads[0] & leads[2] and not leads[1] & leads[2]


def test_test_window_is_the_latest_months() -> None:
    snapshots = weekly_snapshots()
    parts = split_snapshots(snapshots, SplitSettings(test_months=3, calibration_months=3))
    last = snapshots[s.AS_OF].max()
    assert parts["test"][s.AS_OF].min() > last - pd.DateOffset(months=3)
    assert parts["calibration"][s.AS_OF].min() > last - pd.DateOffset(months=6)


def test_leads_keep_their_first_window_and_later_rows_are_purged_and_counted() -> None:
    snapshots = weekly_snapshots()
    result = split_with_report(snapshots, SplitSettings())
    kept = sum(len(part) for part in result.parts.values())
    assert kept + sum(result.purged_rows.values()) + result.gap_rows == len(snapshots)
    assert result.purged_rows["train"] == 0  # nothing is ever moved backwards in time
    assert result.purged_rows["calibration"] > 0 and result.purged_rows["test"] > 0
    first_seen = snapshots.groupby(s.LEAD_ID)[s.AS_OF].min()
    for part in result.parts.values():
        # every lead kept in a window has its first snapshot there
        assert (part.groupby(s.LEAD_ID)[s.AS_OF].min() == first_seen[part[s.LEAD_ID].unique()]).all()


def test_purge_counts_on_a_hand_made_frame() -> None:
    dates = pd.to_datetime(["2024-01-01", "2024-06-01", "2024-09-01", "2024-11-01", "2024-12-01"], utc=True)
    frame = pd.DataFrame(
        {
            s.LEAD_ID: ["a", "a", "a", "b", "c", "c", "d", "d", "e", "f"],
            s.AS_OF: dates[[0, 2, 3, 0, 2, 4, 3, 4, 1, 2]].as_unit("ns"),
            s.LABEL: np.array([1, 0, 1, 1, 1, 1, 1, 0, 0, 1], dtype="int8"),
        }
    )
    result = split_with_report(frame, SplitSettings(test_months=2, calibration_months=3))
    assert sorted(result.parts["train"][s.LEAD_ID]) == ["a", "b", "e"]
    assert sorted(result.parts["calibration"][s.LEAD_ID]) == ["c", "f"]
    assert sorted(result.parts["test"][s.LEAD_ID]) == ["d", "d"]
    assert result.purged_rows == {"train": 0, "calibration": 1, "test": 2}


def test_gap_days_leave_rows_out_between_windows() -> None:
    snapshots = weekly_snapshots()
    result = split_with_report(snapshots, SplitSettings(gap_days=30))
    parts = result.parts
    assert result.gap_rows > 0
    assert parts["calibration"][s.AS_OF].min() - parts["train"][s.AS_OF].max() > pd.Timedelta(days=30)
    assert parts["test"][s.AS_OF].min() - parts["calibration"][s.AS_OF].max() > pd.Timedelta(days=30)


def test_empty_window_error_names_the_window_and_its_dates() -> None:
    snapshots = weekly_snapshots(weeks=8)  # two months of data cannot hold three windows of months
    with pytest.raises(LeadmlError, match=r"the train window \(as_of .* to .*\) is empty"):
        split_snapshots(snapshots, SplitSettings(test_months=1, calibration_months=1))


def test_window_emptied_by_the_purge_says_so() -> None:
    dates = pd.to_datetime(["2024-01-01", "2024-07-01", "2024-12-01"], utc=True).as_unit("ns")
    frame = pd.DataFrame(
        {
            s.LEAD_ID: ["a", "a", "b", "c"],
            s.AS_OF: dates[[0, 2, 0, 1]],
            s.LABEL: np.array([1, 1, 0, 1], "int8"),
        }
    )
    with pytest.raises(LeadmlError, match=r"the test window .* is empty \(1 rows purged"):
        split_snapshots(frame, SplitSettings(test_months=3, calibration_months=3))


def test_window_without_positives_is_refused() -> None:
    snapshots = weekly_snapshots()
    last = snapshots[s.AS_OF].max()
    snapshots.loc[snapshots[s.AS_OF] > last - pd.DateOffset(months=3), s.LABEL] = 0
    with pytest.raises(LeadmlError, match=r"test window .* has no positive labels"):
        split_snapshots(snapshots, SplitSettings())


def test_order_split_uses_fractions_of_the_order_key_and_purges() -> None:
    snapshots = (
        weekly_snapshots()
        .drop(columns=[s.AS_OF])
        .assign(**{s.ORDER_KEY: lambda f: np.arange(len(f), dtype=float)})
    )
    result = split_with_report(
        snapshots, SplitSettings(kind="order", test_fraction=0.2, calibration_fraction=0.2)
    )
    parts = result.parts
    assert parts["train"][s.ORDER_KEY].max() < parts["calibration"][s.ORDER_KEY].min()
    assert parts["calibration"][s.ORDER_KEY].max() < parts["test"][s.ORDER_KEY].min()
    assert sum(len(p) for p in parts.values()) + sum(result.purged_rows.values()) == len(snapshots)
    assert set(parts["train"][s.LEAD_ID]).isdisjoint(parts["test"][s.LEAD_ID])


def test_random_split_refuses_time_data_unless_allowed() -> None:
    snapshots = weekly_snapshots()
    with pytest.raises(LeadmlError, match="random refused"):
        split_snapshots(snapshots, SplitSettings(kind="random"))
    parts = split_snapshots(snapshots, SplitSettings(kind="random", allow_random_with_time=True))
    assert sum(len(p) for p in parts.values()) == len(snapshots)


def test_random_split_is_by_lead_and_stratified() -> None:
    snapshots = weekly_snapshots(n_leads=2000).drop(columns=[s.AS_OF])
    parts = split_snapshots(
        snapshots, SplitSettings(kind="random", test_fraction=0.25, calibration_fraction=0.25)
    )
    leads = [set(p[s.LEAD_ID]) for p in parts.values()]
    assert not leads[0] & leads[1] and not leads[0] & leads[2] and not leads[1] & leads[2]
    lead_positive = snapshots.groupby(s.LEAD_ID)[s.LABEL].max()
    rates = [lead_positive[list(lead_set)].mean() for lead_set in leads]
    assert max(rates) - min(rates) < 0.01
    assert len(leads[2]) == pytest.approx(500, abs=2)


def test_summary_counts_rows_leads_positives_and_dates() -> None:
    parts = split_snapshots(weekly_snapshots(), SplitSettings())
    summary = split_summary(parts)
    for name, part in parts.items():
        assert summary[name]["rows"] == len(part)
        assert summary[name]["leads"] == part[s.LEAD_ID].nunique()
        assert summary[name]["positives"] == int(part[s.LABEL].sum())
        assert summary[name]["last_as_of"] == part[s.AS_OF].max().date().isoformat()


def test_rows_without_a_date_are_refused_not_put_in_a_window() -> None:
    snapshots = weekly_snapshots()
    snapshots.loc[3, s.AS_OF] = pd.NaT
    with pytest.raises(LeadmlError, match="1 rows have no as_of"):
        split_snapshots(snapshots, SplitSettings())


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(LeadmlError, match="test_month"):
        SplitSettings.from_mapping({"kind": "time", "test_month": 3})
    with pytest.raises(LeadmlError, match=r"split\.kind"):
        SplitSettings.from_mapping({"kind": "weekly"})


@settings(max_examples=40, deadline=None)
@given(
    first_weeks=st.lists(st.integers(0, 80), min_size=30, max_size=120),
    lengths=st.lists(st.integers(1, 8), min_size=120, max_size=120),
    gap_days=st.sampled_from([0, 14]),
)
def test_any_snapshots_split_into_disjoint_ordered_windows(
    first_weeks: list[int], lengths: list[int], gap_days: int
) -> None:
    rows = [
        (f"L{lead}", START + pd.Timedelta(weeks=week), (lead + week) % 3 == 0)
        for lead, first in enumerate(first_weeks)
        for week in range(first, first + lengths[lead])
    ]
    frame = pd.DataFrame(rows, columns=[s.LEAD_ID, s.AS_OF, s.LABEL]).astype({s.LABEL: "int8"})
    try:
        result = split_with_report(frame, SplitSettings(gap_days=gap_days))
    except LeadmlError as error:  # small draws can leave a window empty; the message must say which
        assert "window" in str(error)
        return
    parts = result.parts
    assert parts["train"][s.AS_OF].max() < parts["calibration"][s.AS_OF].min()
    assert parts["calibration"][s.AS_OF].max() < parts["test"][s.AS_OF].min()
    leads = [set(parts[name][s.LEAD_ID]) for name in ("train", "calibration", "test")]
    assert not leads[0] & leads[1] and not leads[0] & leads[2] and not leads[1] & leads[2]
    kept = sum(len(part) for part in parts.values())
    assert kept + sum(result.purged_rows.values()) + result.gap_rows == len(frame)


def test_explicit_time_bounds_pin_the_test_window_and_leave_later_rows_out() -> None:
    snapshots = weekly_snapshots()
    start, end = START + pd.Timedelta(weeks=40), START + pd.Timedelta(weeks=52)
    result = split_with_report(
        snapshots, SplitSettings(test_start=start, test_end=end.date().isoformat(), calibration_months=2)
    )
    test = result.parts["test"]
    assert test[s.AS_OF].min() > start and test[s.AS_OF].max() == end
    assert result.parts["calibration"][s.AS_OF].max() <= start
    assert result.parts["calibration"][s.AS_OF].min() > start - pd.DateOffset(months=2)
    assert result.later_rows == int((snapshots[s.AS_OF] > end).sum()) > 0
    kept = sum(len(part) for part in result.parts.values())
    assert kept + sum(result.purged_rows.values()) + result.gap_rows + result.later_rows == len(snapshots)
    default = split_with_report(snapshots, SplitSettings())
    explicit = split_with_report(
        snapshots, SplitSettings(test_start=default.bounds["test"][0], test_end=snapshots[s.AS_OF].max())
    )
    for name in ("train", "calibration", "test"):  # the defaults are the explicit bounds they imply
        assert explicit.parts[name].equals(default.parts[name])


def test_explicit_order_bounds_take_the_calibration_share_of_the_rows_before() -> None:
    frame = weekly_snapshots().drop(columns=[s.AS_OF])
    frame[s.ORDER_KEY] = np.arange(len(frame), dtype=float)
    result = split_with_report(
        frame, SplitSettings(kind="order", test_start=999.0, test_end=1199.0, calibration_fraction=0.25)
    )
    parts = result.parts
    assert parts["test"][s.ORDER_KEY].min() >= 1000 and parts["test"][s.ORDER_KEY].max() <= 1199
    assert parts["calibration"][s.ORDER_KEY].min() >= 750 and parts["calibration"][s.ORDER_KEY].max() <= 999
    assert parts["train"][s.ORDER_KEY].max() < 750
    assert result.later_rows == len(frame) - 1200


def test_explicit_bounds_are_checked() -> None:
    with pytest.raises(LeadmlError, match="start before it ends"):
        split_snapshots(weekly_snapshots(), SplitSettings(test_start="2025-01-01", test_end="2024-12-01"))
    with pytest.raises(LeadmlError, match=r"test_start and split\.test_end need"):
        SplitSettings(kind="random", test_end=3)


def test_latest_rows_keep_whole_dates_order_or_row_order() -> None:
    snapshots = weekly_snapshots()
    latest = latest_rows(snapshots, 0.1)
    assert len(latest) >= 0.1 * len(snapshots)
    assert latest[s.AS_OF].min() > snapshots.drop(index=latest.index)[s.AS_OF].max()
    assert len(latest_rows(snapshots, 1.0)) == len(snapshots)
    ordered = pd.DataFrame({s.ORDER_KEY: [5.0, 1.0, 3.0, 2.0, 4.0]})
    assert sorted(latest_rows(ordered, 0.4)[s.ORDER_KEY]) == [4.0, 5.0]
    assert list(latest_rows(pd.DataFrame({"x": range(10)}), 0.25)["x"]) == [7, 8, 9]
    with pytest.raises(LeadmlError, match="latest share"):
        latest_rows(ordered, 0)
