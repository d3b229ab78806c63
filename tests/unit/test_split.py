"""Out-of-time, out-of-order and random splits of training snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml.adapters.layout import take_apart
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.split import (
    RANDOM_FALLBACK_NOTE,
    WINDOWS,
    SplitSettings,
    latest_rows,
    plan_split,
    resolve_split,
    split_snapshots,
    split_summary,
    split_with_report,
)

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


# --------------------------------------------------------------------------- exact copies (dup_group)
def flat_rows_with_copies(n_groups: int = 600, seed: int = 0) -> pd.DataFrame:
    """One row per lead (a flat table); groups of 1 to 4 exact copies spread over the whole file."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 1, 1, 2, 3, 4], n_groups)
    group = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(group)  # copies of one row lie anywhere in the file
    label = (rng.random(n_groups) < 0.3).astype("int8")[group]
    frame = pd.DataFrame(
        {
            s.LEAD_ID: [str(i + 1) for i in range(len(group))],
            s.ORDER_KEY: np.arange(len(group), dtype="float64") + 1,
            s.AS_OF: (START + pd.to_timedelta(rng.integers(0, 730, len(group)), unit="D")).as_unit("ns"),
            s.LABEL: label,
            "x": rng.normal(size=n_groups)[group],
        }
    )
    first_row = pd.Series(np.arange(len(group))).groupby(group).transform("min").to_numpy()
    frame.insert(1, s.DUP_GROUP, frame[s.LEAD_ID].to_numpy()[first_row])
    return frame


def _windows_per_group(result) -> pd.Series:
    kept = pd.concat([part.assign(window=name) for name, part in result.parts.items()])
    return kept.groupby(s.DUP_GROUP)["window"].nunique()


@pytest.mark.parametrize(
    "settings_",
    [
        SplitSettings(kind="time", test_months=4, calibration_months=4),
        SplitSettings(kind="time", test_months=4, calibration_months=4, gap_days=20),
        SplitSettings(kind="order"),
        SplitSettings(kind="random", allow_random_with_time=True),
    ],
    ids=["time", "time-gap", "order", "random"],
)
def test_exact_copies_never_straddle_a_window_boundary(settings_: SplitSettings) -> None:
    frame = flat_rows_with_copies()
    result = split_with_report(frame, settings_)
    assert (_windows_per_group(result) == 1).all()
    kept = sum(len(part) for part in result.parts.values())
    dropped = sum(result.purged_rows.values()) + sum(result.duplicate_rows.values())
    assert kept + dropped + result.gap_rows + result.later_rows == len(frame)
    assert sum(result.purged_rows.values()) == 0  # one row per lead: only copies are dropped
    if settings_.kind == "random":
        assert kept == len(frame) and sum(result.duplicate_rows.values()) == 0
        return
    assert result.duplicate_rows["train"] == 0  # nothing is moved back in time
    assert result.duplicate_rows["calibration"] > 0 and result.duplicate_rows["test"] > 0
    # a group is kept in the window of its first row (by as_of or order_key), and only there
    column = s.AS_OF if settings_.kind == "time" else s.ORDER_KEY
    first = frame.groupby(s.DUP_GROUP)[column].min()
    for part in result.parts.values():
        kept_first = part.groupby(s.DUP_GROUP)[column].min()
        assert (kept_first == first.loc[kept_first.index]).all()


def test_copies_dropped_from_a_later_window_are_counted_apart_from_purged_leads() -> None:
    frame = pd.DataFrame(
        {
            s.LEAD_ID: ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
            s.DUP_GROUP: ["1", "2", "3", "1", "5", "6", "3", "8", "1", "6"],
            s.ORDER_KEY: np.arange(10, dtype="float64"),
            s.LABEL: np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1], "int8"),
        }
    )
    result = split_with_report(
        frame, SplitSettings(kind="order", test_fraction=0.3, calibration_fraction=0.3)
    )
    assert sorted(result.parts["train"][s.LEAD_ID]) == ["1", "2", "3", "4"]  # 4 is a copy of 1: same window
    assert sorted(result.parts["calibration"][s.LEAD_ID]) == ["5", "6"]  # 7 copies 3 (train): dropped
    assert sorted(result.parts["test"][s.LEAD_ID]) == ["8"]  # 9 copies 1, 10 copies 6: dropped
    assert result.duplicate_rows == {"train": 0, "calibration": 1, "test": 2}
    assert result.purged_rows == {"train": 0, "calibration": 0, "test": 0}


def test_random_split_draws_groups_of_copies_whole_and_groups_of_one_like_leads() -> None:
    frame = flat_rows_with_copies(n_groups=2000).drop(columns=[s.AS_OF, s.ORDER_KEY])
    result = split_with_report(frame, SplitSettings(kind="random"))
    assert (_windows_per_group(result) == 1).all()
    assert 0.15 < len(result.parts["test"]) / len(frame) < 0.25
    # every row its own group: the same draw as by lead without the column
    alone = frame.assign(**{s.DUP_GROUP: frame[s.LEAD_ID]})
    by_group = split_snapshots(alone, SplitSettings(kind="random"))
    by_lead = split_snapshots(frame.drop(columns=[s.DUP_GROUP]), SplitSettings(kind="random"))
    for name, part in by_lead.items():
        assert by_group[name][s.LEAD_ID].tolist() == part[s.LEAD_ID].tolist()


# --------------------------------------------------------------------------- resolve_split
def _columns(*names: str) -> pd.DataFrame:
    return pd.DataFrame(columns=[s.LEAD_ID, s.LABEL, *names])


def test_resolve_split_keeps_settings_the_snapshots_allow() -> None:
    for settings_, frame in [
        (SplitSettings(), _columns(s.AS_OF)),
        (SplitSettings(kind="order"), _columns(s.ORDER_KEY)),
        (SplitSettings(kind="random"), _columns()),
        (SplitSettings(kind="random"), _columns(s.AS_OF)),  # split_with_report refuses it, as ever
        (SplitSettings(kind="order"), _columns(s.AS_OF)),  # an explicit order: split_with_report says why
    ]:
        assert resolve_split(frame, settings_) == (settings_, None)


def test_resolve_split_falls_back_to_order_then_random_with_a_note() -> None:
    default = SplitSettings(test_months=2, seed=4)
    settings_, note = resolve_split(_columns(s.ORDER_KEY), default)
    assert settings_.kind == "order" and settings_.seed == 4 and settings_.test_months == 2
    assert note is not None and note.startswith("no time column (data.contract.time): split by the order")
    assert "the last 20% of rows by order_key are the test window" in note
    for settings_ in (default, SplitSettings(kind="order")):
        resolved, note = resolve_split(_columns(), settings_)
        assert resolved.kind == "random" and resolved.test_fraction == settings_.test_fraction
        assert note == (
            "no time or order column (data.contract.time / order): random split by lead, so the test "
            "figures are not out of time"
        )
        assert note == RANDOM_FALLBACK_NOTE


def test_resolve_split_refuses_explicit_test_bounds_it_cannot_keep() -> None:
    with pytest.raises(LeadmlError, match=r"test_end need split.kind=time, but the data has no time column"):
        resolve_split(_columns(s.ORDER_KEY), SplitSettings(test_start="2024-01-01", test_end="2024-02-01"))
    with pytest.raises(LeadmlError, match="but the data has no time or order column"):
        resolve_split(_columns(), SplitSettings(kind="order", test_start=10.0))


@pytest.mark.parametrize(
    "settings_",
    [
        SplitSettings(test_months=3, calibration_months=3, gap_days=14),
        SplitSettings(kind="order", test_fraction=0.2, calibration_fraction=0.2),
        SplitSettings(kind="random", allow_random_with_time=True),
    ],
)
def test_a_planned_split_copies_the_rows_once_and_each_window_is_a_slice_of_them(
    settings_: SplitSettings,
) -> None:
    frame = weekly_snapshots()
    frame[s.ORDER_KEY] = np.arange(len(frame))
    frame["kind"] = pd.Categorical(np.where(frame["x"] > 0, "a", "b"))
    plan = plan_split(frame, settings_)
    result = plan.apply(frame)
    # each window: the snapshots' rows of its positions, in the snapshots' order, index kept
    for name in WINDOWS:
        expected = frame.iloc[plan.positions[name]]
        assert np.all(np.diff(plan.positions[name]) > 0)
        pd.testing.assert_frame_equal(result.parts[name], expected)
    development = pd.concat([result.parts["train"], result.parts["calibration"]])
    pd.testing.assert_frame_equal(result.development(), development)
    pd.testing.assert_frame_equal(result.rows, pd.concat([development, result.parts["test"]]))
    narrower = result.without(["x"])
    assert all("x" not in part.columns for part in narrower.parts.values())
    pd.testing.assert_frame_equal(narrower.parts["test"], result.parts["test"].drop(columns=["x"]))
    # taken apart column by column: the same windows, and the snapshots left without columns
    apart = plan.apply(frame.copy(), take_apart)
    for name in WINDOWS:
        pd.testing.assert_frame_equal(apart.parts[name], result.parts[name])


def test_taking_a_frame_apart_equals_take_and_empties_it() -> None:
    frame = weekly_snapshots(n_leads=50)
    frame["kind"] = pd.Categorical(np.where(frame["x"] > 0, "a", "b"))
    frame.attrs["source"] = "snapshots"
    positions = np.random.default_rng(1).permutation(len(frame))[: len(frame) // 2]
    expected = frame.take(positions)
    taken = take_apart(frame, positions)
    pd.testing.assert_frame_equal(taken, expected)
    assert taken.attrs == {"source": "snapshots"}
    assert frame.columns.empty
