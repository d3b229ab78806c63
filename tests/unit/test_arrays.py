"""The fast array helpers agree with the obvious slow versions."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml.data import arrays
from leadml.data.arrays import IdLookup, argsort_int, positions_in, repeated_text, text_hash


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


IDS = st.one_of(
    st.none(), st.sampled_from(["L1", "L2", "l1", " L1", "", "L\x00", "🚀", "x" * 300]), st.text(max_size=5)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(IDS, max_size=40), st.lists(IDS, max_size=40))
def test_an_id_lookup_finds_what_arrow_finds(universe: list, values: list) -> None:
    present = pd.Series([value for value in universe if value is not None], dtype="str")
    wanted = pd.Series(values, dtype="str")
    lookup = IdLookup(present)
    expected = positions_in(wanted, pd.Index(present))
    np.testing.assert_array_equal(lookup.positions(wanted), expected)
    np.testing.assert_array_equal(lookup.positions(wanted.astype("category")), expected)
    with mock.patch.object(arrays, "REPEATS_WORTH_ENCODING", 1):  # each distinct value looked up once
        np.testing.assert_array_equal(lookup.positions(pd.concat([wanted] * 3)), np.tile(expected, 3))


def test_an_id_lookup_survives_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id in one of three buckets: the lookup must still tell them apart (through Arrow)."""
    real = arrays.text_hash
    monkeypatch.setattr(arrays, "text_hash", lambda values: real(values) % np.uint64(3))
    universe = pd.Series([f"L{i}" for i in range(50)], dtype="str")
    wanted = pd.Series(["L7", "L49", "nope", None, "L0"], dtype="str")
    np.testing.assert_array_equal(IdLookup(universe).positions(wanted), [7, 49, -1, -1, 0])


@settings(max_examples=200, deadline=None)
@given(st.lists(IDS.filter(lambda value: value is not None), max_size=40))
def test_repeated_text_is_pandas_duplicated_keep_false(values: list) -> None:
    text = pd.Series(values, dtype="str", index=np.arange(len(values)) * 7)  # any index
    expected = text.duplicated(keep=False).to_numpy()
    np.testing.assert_array_equal(repeated_text(text), expected)
    with mock.patch.object(arrays, "text_hash", lambda values: text_hash(values) % np.uint64(2)):
        np.testing.assert_array_equal(repeated_text(text), expected)  # colliding hashes compared as text


def test_text_hashes_do_not_depend_on_the_batch() -> None:
    values = pd.Series(["E00001", "E00002", "a", "", None, "E00001"], dtype="str")
    whole = text_hash(values)
    assert whole[0] == whole[5] and whole[0] != whole[1] and whole[4] == 0
    np.testing.assert_array_equal(text_hash(values.iloc[:2]), whole[:2])  # one width: the fast path
    np.testing.assert_array_equal(text_hash(values.iloc[2:]), whole[2:])


@pytest.mark.parametrize("values", [["E00001", "E00002", "E00003"], ["a", "", None, "bcd", "🚀", "x" * 40]])
def test_text_hashes_do_not_depend_on_the_slices_they_are_computed_in(values: list) -> None:
    text = pd.Series(values * 3, dtype="str")
    whole = text_hash(text)
    with mock.patch.object(arrays, "HASH_CHUNK_ROWS", 2):
        np.testing.assert_array_equal(text_hash(text), whole)
    with mock.patch.object(arrays, "HASH_CHUNK_ROWS", 1):
        np.testing.assert_array_equal(text_hash(text), whole)
