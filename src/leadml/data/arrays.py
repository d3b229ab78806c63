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
    value_set = pc.cast(pa.array(np.asarray(universe, dtype=object), from_pandas=True), pa.large_string())
    found = pc.index_in(array, value_set=value_set)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


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
