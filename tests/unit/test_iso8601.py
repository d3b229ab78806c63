"""The fixed-width ISO 8601 reader gives pandas' own timestamps, value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml.data.contracts import OFFSET_PATTERN, TIMESTAMP_UNIT
from leadml.data.iso8601 import parse_fixed_iso
from leadml.data.parsing import _iso_timestamps

# Every shape the reader knows, and near misses of each: a digit or separator changed.
TEMPLATES = (
    "2024-07-01",
    "2024-07-01T00:09:30",
    "2024-07-01 00:09:30",
    "2024-07-01T00:09:30Z",
    "2024-07-01T00:09:30+02:00",
    "2024-07-01T00:09:30-11:30",
    "2024-07-01T00:09:30.123",
    "2024-07-01 00:09:30.123Z",
    "2024-07-01T00:09:30.123456+05:45",
    "2024-07-01T00:09:30.123456",
    "2024-07-01T00:09:30.123456789Z",
    "2024-07-01T00:09",
    "2024-07-01T00:09:30+0200",
)
CHARACTERS = "0123456789-:T Zz+.t/"


@st.composite
def timestamp_texts(draw: st.DrawFn) -> str:
    text = list(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(text) - 1))
        text[position] = draw(st.sampled_from(CHARACTERS))
    return "".join(text)


def _reference(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    parsed = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce")
    zoned = texts.str.contains(OFFSET_PATTERN, regex=True).to_numpy(dtype=bool, na_value=False)
    return parsed.dt.as_unit(TIMESTAMP_UNIT).array.asi8, zoned


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(timestamp_texts(), st.none()), min_size=1, max_size=40))
def test_same_timestamps_as_pandas(values: list[str | None]) -> None:
    texts = pd.Series(values, dtype="str")
    parsed, zoned = _iso_timestamps(texts)
    expected, expected_zoned = _reference(texts)
    assert str(parsed.dtype) == f"datetime64[{TIMESTAMP_UNIT}, UTC]"
    np.testing.assert_array_equal(parsed.array.asi8, expected)
    present = expected != np.iinfo(np.int64).min
    np.testing.assert_array_equal(zoned[present], expected_zoned[present])


def test_calendar_edges_read_as_pandas_reads_them() -> None:
    texts = pd.Series(
        [
            "2024-02-29T12:00:00Z",  # leap year
            "2023-02-29T12:00:00Z",  # not a leap year: unparseable
            "1900-02-29",  # 1900 was not a leap year
            "2000-02-29",  # 2000 was
            "2024-12-31T23:59:59.999999-18:00",
            "2024-01-01T24:00:00",  # hour 24: left to pandas
            "2024-01-01T23:59:60",  # leap second
            "1899-12-31T23:59:59Z",  # outside the reader's years: pandas reads it
            "0000-00-00 00:00:00",
        ],
        dtype="str",
    )
    parsed, _ = _iso_timestamps(texts)
    np.testing.assert_array_equal(parsed.array.asi8, _reference(texts)[0])


def test_reader_reads_the_usual_export_itself() -> None:
    """The fast path is taken (not only pandas' fallback), so a regression to slow is visible."""
    texts = pd.Series(
        ["2024-07-01T00:09:30Z", "2024-07-01 00:09:30", "2024-07-01", "01/07/2024"], dtype="str"
    )
    fixed = parse_fixed_iso(texts)
    assert fixed.read.tolist() == [True, True, True, False]
    assert fixed.zoned.tolist() == [True, False, False, False]
