"""Fast array helpers for tens of millions of rows (ids to positions, integer argsort)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def positions_in(values: pd.Series | pd.Index, universe: Sequence[Any] | pd.Index) -> np.ndarray:
    """Position of each value in ``universe`` (-1 when absent or null).

    Categorical input (how ingestion stores ids and types) is looked up once per
    category; anything else goes through Arrow's hash lookup, which is several times
    faster than pandas' ``get_indexer`` on tens of millions of strings.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        by_category = np.append(positions_in(pd.Index(values.cat.categories.astype(str)), universe), -1)
        return by_category[np.asarray(values.cat.codes, dtype=np.int64)]  # code -1 (null) picks the -1
    array = pc.cast(pa.array(values, from_pandas=True), pa.large_string())
    value_set = pc.cast(_as_arrow(universe), pa.large_string())
    found = pc.index_in(array, value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _as_arrow(values: Sequence[Any] | pd.Index) -> pa.Array:
    """An Arrow array of ``values``: without copying when pandas already holds them in Arrow (ids of
    millions of leads looked up batch after batch), else through Python objects."""
    held = getattr(values, "array", None)
    if isinstance(held, pd.arrays.ArrowStringArray):
        return pa.array(held)
    return pa.array(np.asarray(values, dtype=object), from_pandas=True)


def is_in(values: pd.Series | pd.Index, universe: Sequence[Any] | pd.Index) -> np.ndarray:
    """Boolean mask of ``values`` found in ``universe``; pandas' ``isin`` on Arrow strings
    walks a Python list and takes seconds per million rows."""
    return positions_in(values, universe) >= 0


def argsort_int(values: np.ndarray) -> np.ndarray:
    """``np.argsort`` for int64, about ten times faster for tens of millions of values.

    Packs (value, position) into one int64 and sorts that, when the value range fits.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(values.min())
    span = int(values.max()) - low
    index_bits = max(1, int(n - 1).bit_length())
    if span.bit_length() + index_bits > 62:
        return np.argsort(values)
    packed = ((values - low) << index_bits) | np.arange(n, dtype=np.int64)
    return np.sort(packed) & ((1 << index_bits) - 1)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def text_hash(values: pd.Series) -> np.ndarray:
    """A 64-bit hash of each text value (nulls hash to 0), from Arrow's bytes without Python objects:
    a polynomial over each value's bytes, then mixed. For spreading keys over files, not security;
    equal text gives an equal hash in any batch."""
    array = pa.array(values, from_pandas=True, type=pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8)
    data = (
        np.frombuffer(array.buffers()[2], dtype=np.uint8)
        if array.buffers()[2] is not None
        else np.zeros(0, np.uint8)
    )
    lengths = offsets[1:] - offsets[:-1]
    hashes = np.zeros(n, dtype=np.uint64)
    longest = int(lengths.max()) if n else 0
    if longest:
        powers = _MIX ** np.arange(longest, dtype=np.uint64)  # wraps modulo 2**64 on purpose
        # a slice of rows at a time: the bytes widened to 64 bits take 8 times the text (0.9 GB
        # of temporaries for 4 million ids at once)
        for start in range(0, n, HASH_CHUNK_ROWS):
            stop = min(n, start + HASH_CHUNK_ROWS)
            hashes[start:stop] = _polynomial(data, offsets[start : stop + 1], powers)
    hashes ^= lengths.astype(np.uint64) * _MIX
    hashes ^= hashes >> np.uint64(31)
    hashes *= np.uint64(0xBF58476D1CE4E5B9)
    hashes ^= hashes >> np.uint64(29)
    return np.where(array.is_null().to_numpy(zero_copy_only=False), np.uint64(0), hashes)


def repeated_text(values: pd.Series) -> np.ndarray:
    """``values.duplicated(keep=False)`` of text: the rows whose value some other row also holds.

    Most keys are unique, so the values are hashed (:func:`text_hash`) and sorted, and only rows
    whose hash repeats are compared as text: 2.5 times faster than pandas on two million ids.
    """
    hashes = text_hash(values)
    ordered = np.sort(hashes)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    repeated = np.zeros(len(values), dtype=bool)
    if len(repeats):
        doubtful = np.flatnonzero(np.isin(hashes, repeats))
        repeated[doubtful] = values.iloc[doubtful].duplicated(keep=False).to_numpy()
    return repeated


# rows from which a batch of ids is worth dictionary-encoding before :meth:`IdLookup.positions`
REPEATS_WORTH_ENCODING = 10_000


def _polynomial(data: np.ndarray, offsets: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Sum of each value's bytes times :data:`_MIX` to the power of their position (modulo 2**64),
    for the values between consecutive ``offsets`` into ``data``."""
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    first, last = int(starts[0]), int(ends[-1])
    longest = int(lengths.max())
    if not longest:
        return np.zeros(len(lengths), dtype=np.uint64)
    if (lengths == longest).all():  # ids of one width (the common case): one row of bytes each
        rows = data[first:last].reshape(len(lengths), longest).astype(np.uint64)
        return (rows * powers[:longest]).sum(axis=1, dtype=np.uint64)
    position = np.arange(last - first, dtype=np.int64) - np.repeat(starts - first, lengths)
    weighted = data[first:last].astype(np.uint64) * powers[position]
    hashes = np.zeros(len(lengths), dtype=np.uint64)
    filled = lengths > 0
    hashes[filled] = np.add.reduceat(weighted, (starts - first)[filled])
    return hashes


# rows hashed at a time by text_hash
HASH_CHUNK_ROWS = 1 << 16


class IdLookup:
    """Positions of text ids in a fixed ``universe`` (as :func:`positions_in`), for looking up batch
    after batch: Arrow's lookup builds its hash table of the universe again on every call, which for
    millions of lead ids costs more than the batch. Here the universe's hashes are sorted once
    (16 bytes an id); a batch is hashed, found by binary search and each match checked against the id
    itself. Rows whose hash the universe holds more than once (a collision) go through Arrow."""

    def __init__(self, universe: pd.Series | pd.Index) -> None:
        self.values = pa.array(pd.Series(universe, dtype="str"), type=pa.large_string())
        hashes = text_hash(pd.Series(self.values, dtype="str"))
        self.order = np.argsort(hashes, kind="stable")  # stable: the first of equal ids comes first
        self.hashes = hashes[self.order]
        shared = self.hashes[1:] == self.hashes[:-1]
        self.shared = np.unique(self.hashes[1:][shared])  # hashes held by more than one id

    def positions(self, values: pd.Series | pd.Index) -> np.ndarray:
        """Position of each value in the universe (-1 when absent or null)."""
        if isinstance(values.dtype, pd.CategoricalDtype):
            by_category = np.append(self.positions(pd.Index(values.cat.categories.astype(str))), -1)
            return by_category[np.asarray(values.cat.codes, dtype=np.int64)]
        text = pd.Series(values, dtype="str") if not isinstance(values.dtype, pd.StringDtype) else values
        if len(self.hashes) == 0 or len(text) == 0:
            return np.full(len(text), -1, dtype=np.int64)
        if len(text) >= REPEATS_WORTH_ENCODING:
            # the activities name each lead many times: look up each distinct id once
            array = pa.array(text, from_pandas=True, type=pa.large_string())
            if isinstance(array, pa.ChunkedArray):
                array = array.combine_chunks()  # one dictionary for every chunk
            encoded = pc.dictionary_encode(array)
            if len(encoded.dictionary) * 2 <= len(text):
                by_value = np.append(self.positions(pd.Series(encoded.dictionary, dtype="str")), -1)
                codes = encoded.indices.fill_null(len(encoded.dictionary))
                return by_value[codes.to_numpy(zero_copy_only=False)]
        hashes = text_hash(text)
        # searching in sorted order: each search starts where the last ended (several times faster)
        order = np.argsort(hashes)
        at = np.empty(len(hashes), dtype=np.int64)
        at[order] = np.minimum(np.searchsorted(self.hashes, hashes[order]), len(self.hashes) - 1)
        candidates = self.order[at]
        same = pc.equal(self.values.take(pa.array(candidates)), pa.array(text, type=pa.large_string()))
        found = (self.hashes[at] == hashes) & same.fill_null(False).to_numpy(zero_copy_only=False)
        positions = np.where(found, candidates, -1).astype(np.int64)
        doubtful = ~found & np.isin(hashes, self.shared)
        if doubtful.any():
            positions[doubtful] = positions_in(text[doubtful], pd.Series(self.values, dtype="str"))
        return positions
