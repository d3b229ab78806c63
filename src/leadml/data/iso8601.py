"""ISO 8601 timestamps of the common fixed-width shapes read straight from Arrow's bytes.

``pd.to_datetime(format="ISO8601")`` parses about three million values a second; an export of 90
million activities spends half a minute there, most of ingestion. Nearly every CRM export writes
one of a few fixed-width shapes (``2024-07-01T00:09:30Z``, ``2024-07-01 00:09:30``,
``2024-07-01T00:09:30.123+02:00``), which numpy reads digit by digit at a hundred million bytes a
second. :func:`parse_fixed_iso` reads only the values whose every byte fits one of those shapes and
whose date exists, and leaves the rest (other shapes, 29 February of a common year, hour 24, lower
case ``z``, years outside 1900-2200) to pandas, so the result is pandas' own, value for value: a
property test holds the two to each other (``tests/unit/test_iso8601.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["FixedIso", "parse_fixed_iso"]

_DATE = 10  # YYYY-MM-DD
_TIME = 19  # YYYY-MM-DD?HH:MM:SS
_US_PER_SECOND = 1_000_000
# Years pandas reads without any question of its datetime bounds; others go to pandas itself.
_FIRST_YEAR, _LAST_YEAR = 1900, 2200
_ROWS_PER_GATHER = 1 << 18  # values read per block: a few MB of temporaries, not gigabytes


@dataclass(frozen=True)
class _Shape:
    """One fixed-width layout: a date, or a date and time with ``fraction`` digits and a zone suffix."""

    time: bool
    fraction: int  # digits after the seconds' dot (0: no dot)
    suffix: str  # "", "Z" or "+HH:MM"

    @property
    def width(self) -> int:
        if not self.time:
            return _DATE
        return _TIME + (self.fraction + 1 if self.fraction else 0) + len(self.suffix)


_SHAPES = (
    _Shape(False, 0, ""),
    *(_Shape(True, fraction, suffix) for fraction in (0, 3, 6) for suffix in ("", "Z", "+HH:MM")),
)
_BY_WIDTH = {shape.width: shape for shape in _SHAPES}
assert len(_BY_WIDTH) == len(_SHAPES), "every shape must have its own width"


@dataclass(frozen=True)
class FixedIso:
    """What :func:`parse_fixed_iso` read: per value, microseconds since 1970 UTC (meaningless where
    not ``read``), whether it was read, and whether it carried a zone (``Z`` or an offset)."""

    micros: np.ndarray
    read: np.ndarray
    zoned: np.ndarray


def parse_fixed_iso(text: pd.Series) -> FixedIso:
    """The values of ``text`` (trimmed text, nulls allowed) that have a fixed ISO 8601 shape.

    A naive value is read as UTC wall-clock time and an offset is honoured, as
    ``pd.to_datetime(..., format="ISO8601", utc=True)`` does. A value is not ``read`` where it is
    null or not one of the fixed shapes: pandas reads those.
    """
    array = pa.array(text, type=pa.large_string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    rows = len(array)
    micros = np.zeros(rows, dtype=np.int64)
    read = np.zeros(rows, dtype=bool)
    zoned = np.zeros(rows, dtype=bool)
    if rows == 0:
        return FixedIso(micros, read, zoned)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[array.offset : array.offset + rows + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    widths = np.diff(offsets)
    present = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    for width, shape in _BY_WIDTH.items():
        for block in _blocks(np.flatnonzero(present & (widths == width))):
            columns = _byte_columns(data, offsets[block], width)
            micros[block], read[block] = _read_shape(columns, shape)
            zoned[block] = bool(shape.suffix)
    return FixedIso(micros, read, zoned)


def _blocks(positions: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(positions), _ROWS_PER_GATHER):
        yield positions[start : start + _ROWS_PER_GATHER]


def _byte_columns(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(width, rows) bytes of the values starting at ``starts``: one row of the result per position."""
    windows = np.lib.stride_tricks.sliding_window_view(data, width)  # a view: no copy
    return np.ascontiguousarray(windows[starts].T)


def _digits(columns: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, all digits) of the ``count`` characters from position ``first``."""
    digits = columns[first : first + count] - np.uint8(ord("0"))  # wraps below "0": one test
    ok = (digits <= 9).all(axis=0)
    value = digits[0].astype(np.int32)
    for digit in digits[1:]:
        value = value * 10 + digit
    return value, ok


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's ``days_from_civil``)."""
    year = year - (month <= 2)
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def _read_shape(columns: np.ndarray, shape: _Shape) -> tuple[np.ndarray, np.ndarray]:
    """(microseconds, read) of values of one width, checked byte by byte against ``shape``."""
    year, ok_year = _digits(columns, 0, 4)
    month, ok_month = _digits(columns, 5, 2)
    day, ok_day = _digits(columns, 8, 2)
    ok = ok_year & ok_month & ok_day & (columns[4] == ord("-")) & (columns[7] == ord("-"))
    ok &= (year >= _FIRST_YEAR) & (year <= _LAST_YEAR) & (month >= 1) & (month <= 12)
    month = np.clip(month, 0, 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok &= (day >= 1) & (day <= _DAYS_IN_MONTH[month] + ((month == 2) & leap))
    seconds = _days_from_civil(year, month, day).astype(np.int64) * 86_400
    micros: np.ndarray | int = 0
    if shape.time:
        hour, ok_hour = _digits(columns, 11, 2)
        minute, ok_minute = _digits(columns, 14, 2)
        second, ok_second = _digits(columns, 17, 2)
        ok &= ok_hour & ok_minute & ok_second & (hour <= 23) & (minute <= 59) & (second <= 59)
        ok &= ((columns[10] == ord("T")) | (columns[10] == ord(" "))) & (columns[13] == ord(":"))
        ok &= columns[16] == ord(":")
        seconds += hour * 3600 + minute * 60 + second
        position = _TIME
        if shape.fraction:
            fraction, ok_fraction = _digits(columns, position + 1, shape.fraction)
            ok &= ok_fraction & (columns[position] == ord("."))
            micros = fraction * 10 ** (6 - shape.fraction)
            position += shape.fraction + 1
        if shape.suffix == "Z":
            ok &= columns[position] == ord("Z")
        elif shape.suffix:
            sign = columns[position]
            offset_hour, ok_offset_hour = _digits(columns, position + 1, 2)
            offset_minute, ok_offset_minute = _digits(columns, position + 4, 2)
            ok &= ((sign == ord("+")) | (sign == ord("-"))) & (columns[position + 3] == ord(":"))
            ok &= ok_offset_hour & ok_offset_minute & (offset_hour <= 18) & (offset_minute <= 59)
            direction = np.where(sign == ord("-"), -1, 1)
            seconds -= direction * (offset_hour * 3600 + offset_minute * 60)
    return seconds * _US_PER_SECOND + micros, ok
