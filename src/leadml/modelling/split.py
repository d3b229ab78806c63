"""Out-of-time train / calibration / test split of training snapshots.

Three kinds:

- ``time`` (default): windows by ``as_of`` date. The latest ``test_months`` months of
  snapshot dates are test, the ``calibration_months`` months before that calibration,
  everything earlier train; ``gap_days`` of snapshot dates before each later window are
  left out so labels of one window do not look into the next.
- ``order``: flat tables with an ``order_key`` column; fractions of rows instead of months.
- ``random``: stratified by lead, only for data without time.

``test_start`` / ``test_end`` pin the test window to (test_start, test_end] of ``as_of`` or
``order_key`` instead of the latest months or fraction (``leadml-backtest`` moves it back in
time); rows after ``test_end`` are left out. With an explicit ``test_start`` on order data,
``calibration_fraction`` is the share of the rows before the test window.

A lead never has snapshots on both sides of a boundary: it belongs to the window of its
first snapshot, and its snapshots in later windows are purged (never moved back in time).
Assigning leads by their last snapshot instead would select on the outcome (a lead stops
having snapshots when it closes), which inflates the positive rate of earlier windows.

A flat table whose rows include exact copies of another row carries a ``dup_group`` column (the
lead id of the group's first row, see :func:`leadml.data.ingest.find_duplicates`): a group is kept in
one window the same way, by the window of its first row for kinds time and order (its rows in
later windows are dropped and counted as ``duplicate_rows``), and drawn as a whole for kind random.
Without the column every row is its own group.

:func:`resolve_split` picks the kind the snapshots allow when the configured one needs a column
they lack (time -> order -> random), with a note saying so.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.errors import LeadmlError, known_settings

logger = logging.getLogger(__name__)

TRAIN, CALIBRATION, TEST = "train", "calibration", "test"
WINDOWS: tuple[str, ...] = (TRAIN, CALIBRATION, TEST)
SPLIT_KINDS: tuple[str, ...] = ("time", "order", "random")
_GAP = "gap"
_LATER = "later"  # after an explicit test_end


@dataclass(frozen=True)
class SplitSettings:
    kind: str = "time"
    test_months: int = 3
    calibration_months: int = 3
    gap_days: int = 0
    test_fraction: float = 0.2
    calibration_fraction: float = 0.2
    seed: int = 0
    allow_random_with_time: bool = False
    # explicit test window (test_start, test_end] of as_of (a date) or order_key (a number) for
    # kind time or order; None: the latest test_months / test_fraction, up to the last row
    test_start: Any = None
    test_end: Any = None

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise LeadmlError(f"split.kind must be one of {SPLIT_KINDS}, got {self.kind!r}")
        if self.test_months < 1 or self.calibration_months < 1:
            raise LeadmlError("split.test_months and split.calibration_months must be at least 1")
        if self.gap_days < 0:
            raise LeadmlError("split.gap_days must not be negative")
        fractions = (self.test_fraction, self.calibration_fraction)
        if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 1:
            raise LeadmlError(
                "split.test_fraction and split.calibration_fraction must be in (0, 1) and sum to less than 1"
            )
        if self.kind == "random" and (self.test_start is not None or self.test_end is not None):
            raise LeadmlError("split.test_start and split.test_end need split.kind time or order")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SplitSettings:
        return cls(**known_settings(cls, mapping, "split"))


@dataclass(frozen=True)
class SplitResult:
    """The three windows plus what was left out to keep them apart."""

    parts: dict[str, pd.DataFrame]
    # every kept row, window after window (train, calibration, test): each part is a slice of it
    rows: pd.DataFrame
    purged_rows: dict[str, int]  # rows of leads first seen in an earlier window, per window dropped from
    gap_rows: int  # rows dated inside a gap
    bounds: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # window -> (first, last) boundary
    later_rows: int = 0  # rows after an explicit split.test_end
    # rows dropped per window because an exact copy of the row (same dup_group) is in an earlier window
    duplicate_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))

    def development(self) -> pd.DataFrame:
        """The rows before the test window (train, then calibration): a slice of :attr:`rows`."""
        return self.rows.iloc[: len(self.parts[TRAIN]) + len(self.parts[CALIBRATION])]

    def without(self, columns: list[str]) -> SplitResult:
        """The same split with ``columns`` left out of every window (in one copy of the rows)."""
        rows = self.rows.drop(columns=columns)
        return replace(self, rows=rows, parts=window_slices(rows, {n: len(p) for n, p in self.parts.items()}))


RowTaker = Callable[[pd.DataFrame, np.ndarray], pd.DataFrame]


def take_rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows of ``frame`` at ``positions``, in that order (``frame`` is left as it is)."""
    return frame.take(positions)


@dataclass(frozen=True)
class SplitPlan:
    """Which rows of the snapshots each window keeps, and what was left out: a split before its
    rows are copied out of the snapshots (:meth:`apply`)."""

    kind: str
    positions: dict[str, np.ndarray]  # window -> positions (iloc) of its rows in the snapshots, in order
    purged_rows: dict[str, int]
    gap_rows: int
    bounds: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    later_rows: int = 0
    duplicate_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))

    def kept(self, windows: Sequence[str] = WINDOWS) -> np.ndarray:
        """Positions of the rows of ``windows``, window after window."""
        return np.concatenate([self.positions[name] for name in windows])

    def apply(self, snapshots: pd.DataFrame, take: RowTaker = take_rows) -> SplitResult:
        """The windows' rows taken out of ``snapshots`` (by ``take``) as one frame, window after
        window, each window a slice of it.

        The same rows, order and index as ``snapshots[mask]`` of each window, in one copy of the
        kept rows rather than one per window: a slice shares its frame's memory (pandas copies on
        write only), so the windows and the development rows before the test window
        (:meth:`SplitResult.development`) cost the rows once. At a million leads the windows hold
        3.3 GB of the snapshots' 4.4 GB: a copy per window, then one of the development rows and
        one of every labelled row for the refit, held 9.6 GB.
        """
        rows = take(snapshots, self.kept())
        return SplitResult(
            parts=window_slices(rows, {name: len(kept) for name, kept in self.positions.items()}),
            rows=rows,
            purged_rows=self.purged_rows,
            gap_rows=self.gap_rows,
            bounds=self.bounds,
            later_rows=self.later_rows,
            duplicate_rows=self.duplicate_rows,
        )


def split_snapshots(snapshots: pd.DataFrame, settings: SplitSettings) -> dict[str, pd.DataFrame]:
    """Windows ``train``, ``calibration`` and ``test`` of the snapshots (see :func:`split_with_report`)."""
    return split_with_report(snapshots, settings).parts


def split_with_report(snapshots: pd.DataFrame, settings: SplitSettings) -> SplitResult:
    """Split the snapshots and report the rows purged and left in gaps."""
    return plan_split(snapshots, settings).apply(snapshots)


def plan_split(snapshots: pd.DataFrame, settings: SplitSettings) -> SplitPlan:
    """The rows of each window (see :func:`split_with_report`), checked and logged, not yet copied."""
    _require_columns(snapshots, (s.LEAD_ID, s.LABEL))
    if settings.kind == "random":
        plan = _random_split(snapshots, settings)
    else:
        column = s.AS_OF if settings.kind == "time" else s.ORDER_KEY
        _require_columns(snapshots, (column,))
        position = snapshots[column]
        if position.isna().any():
            raise LeadmlError(f"split {settings.kind}: {int(position.isna().sum())} rows have no {column}")
        assign, bounds = (_time_windows if settings.kind == "time" else _order_windows)(position, settings)
        first_position = position.groupby(snapshots[s.LEAD_ID], sort=False, observed=True).transform("min")
        group_window = None
        if s.DUP_GROUP in snapshots.columns:
            group_first = first_position.groupby(snapshots[s.DUP_GROUP], sort=False, observed=True)
            group_window = assign(group_first.transform("min"))
        plan = _purged_plan(settings.kind, assign(position), assign(first_position), bounds, group_window)
    _check_plan(plan, snapshots[s.LABEL])
    logger.info(
        "split %s: %s; purged %s; copies of an earlier window's rows %s; %d rows in gaps, "
        "%d after the test window",
        settings.kind,
        ", ".join(f"{name} {len(kept)} rows" for name, kept in plan.positions.items()),
        plan.purged_rows,
        plan.duplicate_rows,
        plan.gap_rows,
        plan.later_rows,
    )
    return plan


RANDOM_FALLBACK_NOTE = (
    "no time or order column (data.contract.time / order): random split by lead, so the test figures "
    "are not out of time"
)


def resolve_split(snapshots: pd.DataFrame, settings: SplitSettings) -> tuple[SplitSettings, str | None]:
    """The split settings the snapshots allow, and a one-line note when they differ from ``settings``.

    Kind time without ``as_of`` but with ``order_key`` becomes kind order (the data config gave
    ``order:`` but did not choose ``split=order``); kind time or order with neither column becomes
    kind random (a flat table with neither ``time:`` nor ``order:``). Kind order with only ``as_of``
    and an explicit kind random are left as they are (:func:`split_with_report` says what is
    wrong). An explicit ``test_start`` / ``test_end`` cannot follow a change of kind: refused.
    """
    if settings.kind == "random":
        return settings, None
    has_time, has_order = s.AS_OF in snapshots.columns, s.ORDER_KEY in snapshots.columns
    if (settings.kind == "time" and has_time) or (settings.kind == "order" and (has_order or has_time)):
        return settings, None
    if settings.kind == "time" and has_order:
        kind, missing = "order", "no time column (data.contract.time)"
        note = (
            f"{missing}: split by the order column (data.contract.order) instead, the last "
            f"{settings.test_fraction:.0%} of rows by {s.ORDER_KEY} are the test window"
        )
    else:
        kind, missing, note = "random", "no time or order column", RANDOM_FALLBACK_NOTE
    if settings.test_start is not None or settings.test_end is not None:
        raise LeadmlError(
            f"split.test_start / split.test_end need split.kind={settings.kind}, but the data has {missing}"
        )
    return replace(settings, kind=kind), note


def split_summary(parts: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Rows, leads, positives, positive rate and date (or order) range per window."""
    summary: dict[str, dict[str, Any]] = {}
    for name, part in parts.items():
        positives = int(part[s.LABEL].sum())
        entry: dict[str, Any] = {
            "rows": len(part),
            "leads": int(part[s.LEAD_ID].nunique()),
            "positives": positives,
            "rate": positives / len(part) if len(part) else float("nan"),
        }
        for column in (s.AS_OF, s.ORDER_KEY):
            if column in part.columns and len(part):
                first, last = part[column].min(), part[column].max()
                entry[f"first_{column}"] = _plain(first)
                entry[f"last_{column}"] = _plain(last)
        summary[name] = entry
    return summary


def position_column(frame: pd.DataFrame) -> str | None:
    """The column that orders rows in time: ``as_of``, else ``order_key``, else None (row order)."""
    return next((column for column in (s.AS_OF, s.ORDER_KEY) if column in frame.columns), None)


def latest_rows(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The latest ``fraction`` of the rows, by ``as_of``, else ``order_key``, else row order.

    Whole dates (order values) stay together, as in ``models.early_stopping_split``: the cut
    falls before the date holding the first kept row, so a little more than ``fraction`` may
    be kept, never less; ``fraction`` 1 keeps every row.
    """
    if not 0 < fraction <= 1:
        raise LeadmlError(f"the latest share of rows must be in (0, 1], got {fraction}")
    keep = min(len(frame), max(1, math.ceil(len(frame) * fraction - 1e-9)))
    column = position_column(frame)
    if column is None or frame.empty:
        return frame.iloc[len(frame) - keep :]
    position = frame[column]
    cut = position.sort_values(kind="stable").iloc[len(frame) - keep]
    return frame[(position >= cut).to_numpy()]


WindowAssigner = Callable[[pd.Series], np.ndarray]


def _time_windows(as_of: pd.Series, settings: SplitSettings) -> tuple[WindowAssigner, dict[str, tuple]]:
    last = as_of.max() if settings.test_end is None else _as_date(settings.test_end, as_of)
    gap = pd.Timedelta(days=settings.gap_days)
    test_start = (  # exclusive
        last - pd.DateOffset(months=settings.test_months)
        if settings.test_start is None
        else _as_date(settings.test_start, as_of)
    )
    _check_test_bounds(test_start, last)
    calibration_end = test_start - gap
    calibration_start = calibration_end - pd.DateOffset(months=settings.calibration_months)  # exclusive
    train_end = calibration_start - gap

    def assign(values: pd.Series) -> np.ndarray:
        return np.select(
            [
                values <= train_end,
                values <= calibration_start,
                values <= calibration_end,
                values <= test_start,
                values <= last,
            ],
            [TRAIN, _GAP, CALIBRATION, _GAP, TEST],
            default=_LATER,
        )

    bounds = {
        TRAIN: (as_of.min(), train_end),
        CALIBRATION: (calibration_start, calibration_end),
        TEST: (test_start, last),
    }
    return assign, bounds


def _order_windows(order_key: pd.Series, settings: SplitSettings) -> tuple[WindowAssigner, dict[str, tuple]]:
    last = order_key.max() if settings.test_end is None else float(settings.test_end)
    in_range = order_key[order_key <= last]
    if settings.test_start is None:
        test_start = in_range.quantile(1 - settings.test_fraction)
        calibration_start = in_range.quantile(1 - settings.test_fraction - settings.calibration_fraction)
    else:
        test_start = float(settings.test_start)
        before = in_range[in_range <= test_start]
        calibration_start = before.quantile(1 - settings.calibration_fraction) if len(before) else test_start
    _check_test_bounds(test_start, last)

    def assign(values: pd.Series) -> np.ndarray:
        return np.select(
            [values <= calibration_start, values <= test_start, values <= last],
            [TRAIN, CALIBRATION, TEST],
            default=_LATER,
        )

    bounds = {
        TRAIN: (order_key.min(), calibration_start),
        CALIBRATION: (calibration_start, test_start),
        TEST: (test_start, last),
    }
    return assign, bounds


def _as_date(value: Any, like: pd.Series) -> pd.Timestamp:
    """A configured date as a timestamp comparable with ``like`` (UTC when it has no zone)."""
    stamp = pd.Timestamp(value)
    zone = getattr(like.dtype, "tz", None)
    if zone is not None and stamp.tzinfo is None:
        stamp = stamp.tz_localize(zone)
    elif zone is None and stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return stamp


def _check_test_bounds(test_start: Any, test_end: Any) -> None:
    if not test_start < test_end:
        raise LeadmlError(
            f"split: the test window must start before it ends, got test_start {_plain(test_start)} "
            f"and test_end {_plain(test_end)}"
        )


def _purged_plan(
    kind: str,
    window: np.ndarray,
    lead_window: np.ndarray,
    bounds: dict[str, tuple],
    group_window: np.ndarray | None = None,
) -> SplitPlan:
    """Rows kept in their window when their lead (and their group of copies) starts there."""
    in_gap = window == _GAP
    purged = (window != lead_window) & ~in_gap
    copied = np.zeros(len(window), dtype=bool)
    if group_window is not None:
        copied = (window != group_window) & ~in_gap & ~purged
    dropped = purged | copied
    return SplitPlan(
        kind=kind,
        positions={name: np.flatnonzero((window == name) & ~dropped) for name in WINDOWS},
        purged_rows={name: int(((window == name) & purged).sum()) for name in WINDOWS},
        gap_rows=int(in_gap.sum()),
        bounds=bounds,
        later_rows=int((window == _LATER).sum()),
        duplicate_rows={name: int(((window == name) & copied).sum()) for name in WINDOWS},
    )


def window_slices(rows: pd.DataFrame, sizes: Mapping[str, int]) -> dict[str, pd.DataFrame]:
    """Consecutive slices of ``rows``, one of each size of ``sizes`` in its order."""
    ends = np.cumsum(list(sizes.values()), dtype=np.int64)
    return {name: rows.iloc[end - size : end] for (name, size), end in zip(sizes.items(), ends, strict=True)}


def _random_split(snapshots: pd.DataFrame, settings: SplitSettings) -> SplitPlan:
    if s.AS_OF in snapshots.columns and not settings.allow_random_with_time:
        raise LeadmlError(
            f"split.kind=random refused: the data has an {s.AS_OF!r} column, so evaluation must be out of "
            "time (use split=time, or set split.allow_random_with_time=true to override)"
        )
    # by lead, or by group of exact copies when the table has them (a flat table: one row per lead)
    key = s.DUP_GROUP if s.DUP_GROUP in snapshots.columns else s.LEAD_ID
    group_label = snapshots.groupby(key, sort=True, observed=True)[s.LABEL].max()
    rng = np.random.default_rng(settings.seed)
    draw = pd.Series(np.empty(len(group_label), dtype=object), index=group_label.index)
    # stratify by shuffling within each class and cutting at the same fractions
    for _, groups in group_label.groupby(group_label):
        order = rng.permutation(len(groups))
        n_test = round(len(groups) * settings.test_fraction)
        n_calibration = round(len(groups) * settings.calibration_fraction)
        names = np.full(len(groups), TRAIN, dtype=object)
        names[order[:n_test]] = TEST
        names[order[n_test : n_test + n_calibration]] = CALIBRATION
        draw[groups.index] = names
    window = snapshots[key].map(draw).to_numpy()
    return SplitPlan(
        kind="random",
        positions={name: np.flatnonzero(window == name) for name in WINDOWS},
        purged_rows=dict.fromkeys(WINDOWS, 0),
        gap_rows=0,
    )


def _check_plan(plan: SplitPlan, labels: pd.Series) -> None:
    for name in WINDOWS:
        kept = plan.positions[name]
        where = _describe_bounds(plan.bounds.get(name), plan.kind)
        if not len(kept):
            purged = plan.purged_rows.get(name, 0)
            copies = plan.duplicate_rows.get(name, 0)
            why = "".join(
                f" ({count} rows purged: {reason} first seen in an earlier window)"
                for count, reason in ((purged, "their leads were"), (copies, "exact copies of them were"))
                if count
            )
            raise LeadmlError(f"split {plan.kind}: the {name} window{where} is empty{why}")
        if int(labels.iloc[kept].sum()) == 0:
            raise LeadmlError(
                f"split {plan.kind}: the {name} window{where} has no positive labels ({len(kept)} rows)"
            )


def _describe_bounds(bounds: tuple | None, kind: str) -> str:
    if bounds is None:
        return ""
    first, last = (_plain(value) for value in bounds)
    column = s.AS_OF if kind == "time" else s.ORDER_KEY
    return f" ({column} {first} to {last})"


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise LeadmlError(f"split needs column(s) {missing}, missing from the snapshots")


def window_fingerprint(rows: pd.DataFrame) -> str:
    """SHA-256 of a window's rows (keys, label and features): equal windows, equal fingerprints."""
    hashed = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()
