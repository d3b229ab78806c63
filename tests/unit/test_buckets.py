"""Splitting leads into buckets: the hash is the same whatever Arrow layout carries the ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from leadml.scoring.pandas_engine import bucket_of


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


def test_split_keeps_every_row_when_batches_carry_different_dictionaries(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from leadml.scoring import pandas_engine as buckets

    path = tmp_path / "activities.parquet"
    parts = [
        pa.table(
            {"lead_id": [f"L{i}" for i in range(6)], "kind": pa.array(list("aabbcc")).dictionary_encode()}
        ),
        pa.table(
            {"lead_id": [f"L{i}" for i in range(6)], "kind": pa.array(list("zzyyaa")).dictionary_encode()}
        ),
    ]
    with pq.ParquetWriter(path, parts[0].schema) as writer:
        for part in parts:
            writer.write_table(part)
    monkeypatch.setattr(buckets, "SPLIT_BATCH_ROWS", 6)
    files = buckets._split([path], None, tmp_path / "split", 3)
    frames = [buckets._read_bucket(files, k, None) for k in range(3)]
    rows = sorted(
        (lead, kind) for frame in frames for lead, kind in zip(frame["lead_id"], frame["kind"], strict=True)
    )
    expected = sorted(
        (lead, kind)
        for part in parts
        for lead, kind in zip(*(c.to_pylist() for c in part.columns), strict=True)
    )
    assert rows == expected
    for frame in frames:  # a bucket's categories are its own values, not its source batch's
        assert set(frame["kind"].cat.categories) == set(frame["kind"])
