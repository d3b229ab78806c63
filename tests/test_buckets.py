"""Splitting leads into buckets: the hash is the same whatever Arrow layout carries the ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from leadml.buckets import bucket_of


def test_bucket_of_is_the_same_for_every_arrow_layout_of_the_ids() -> None:
    ids = [f"L{i:07d}" for i in range(5000)] + ["é-ünïcode", ""]
    expected = bucket_of(pa.array(ids), 7)
    assert expected.min() >= 0 and expected.max() < 7
    layouts = {
        "large": pa.array(ids, type=pa.large_string()),
        "dictionary": pa.array(ids).dictionary_encode(),
        "chunked": pa.chunked_array([ids[:1234], ids[1234:]]),
    }
    for name, layout in layouts.items():
        np.testing.assert_array_equal(bucket_of(layout, 7), expected, err_msg=name)
    np.testing.assert_array_equal(bucket_of(pa.array(ids).slice(100, 50), 7), expected[100:150])


def test_buckets_are_filled_evenly() -> None:
    counts = np.bincount(bucket_of(pa.array([f"lead-{i}" for i in range(100_000)]), 10), minlength=10)
    assert counts.min() > 9_500 and counts.max() < 10_500
