"""The fast array helpers agree with the obvious slow versions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from leadml.data.arrays import argsort_int, positions_in


@given(st.lists(st.integers(-(2**40), 2**40), max_size=300))
def test_argsort_int_sorts_like_numpy(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    order = argsort_int(array)
    assert sorted(order.tolist()) == list(range(len(values)))
    assert np.array_equal(array[order], np.sort(array))


def test_argsort_int_falls_back_for_huge_ranges() -> None:
    array = np.array([2**62, -(2**62), 0], dtype=np.int64)
    assert array[argsort_int(array)].tolist() == sorted(array.tolist())


@given(st.lists(st.sampled_from(["a", "b", "c", "zz", None]), max_size=50))
def test_positions_in_matches_a_dictionary_lookup(values: list[str | None]) -> None:
    universe = pd.Index(["c", "a", "b"])
    expected = [universe.get_loc(v) if v in universe else -1 for v in values]
    as_text = pd.Series(values, dtype="str")
    assert positions_in(as_text, universe).tolist() == expected
    assert positions_in(as_text.astype("category"), universe).tolist() == expected
