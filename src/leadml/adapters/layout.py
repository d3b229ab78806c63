"""Where the stages keep what they hand on: file names, manifests, the interim tables and snapshots.

Stages hand data on through files (Parquet tables, JSON manifests) so each one can be re-run
alone; this module is the one place that knows their names and how to read them back.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError
from leadml.machine import release_arrow_memory

logger = logging.getLogger(__name__)


# the project's Hydra configs (conf/ beside src/): the entry points' config path
CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")
MANIFEST = "manifest.json"


# the scoring run's summary inside its partition (a leading "_": Parquet readers skip it)
SCORING_RUN_RECORD = "_scoring_run.json"


SNAPSHOTS = "snapshots.parquet"


FEATURE_METADATA = "feature_metadata.json"


FLAT_TABLE = "leads"


# Columns stored as dictionary-encoded Parquet: repeated ids and codes load as
# categoricals, which makes the features stage's lookups several times faster.
CATEGORICAL_ON_DISK = {s.ACTIVITIES: (s.LEAD_ID,)}


# data.name: one folder name under data/, reports/ and models/ (and the MLflow names built from it)
_DATA_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def check_data_name(name: Any) -> str:
    """``data.name``, or a LeadmlError: it is joined to every output folder, so ``../../x`` or
    ``a/b`` would write outside them. Letters, digits, ``_``, ``-`` and ``.`` (not first)."""
    if not isinstance(name, str) or not _DATA_NAME.fullmatch(name):
        raise LeadmlError(
            f"data.name must be a plain name (letters, digits, _, - and ., not starting with ., "
            f"at most 100 characters; no path separators), got {name!r}"
        )
    return name


def open_rows_file(table: str) -> str:
    """File name of a flat table's open leads (``contract.open``) next to its labelled rows."""
    return f"open_{table}.parquet"


def dictionary_encoded(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in CATEGORICAL_ON_DISK.get(table, ()) if c in frame.columns]
    return frame.astype(dict.fromkeys(columns, "category")) if columns else frame


def read_interim(input_dir: Path, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The validated tables of a finished ingestion; a clear error when it has not run."""
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no ingested data in {input_dir} (run leadml-ingest, or make ingest, first)")
    return {table: pd.read_parquet(input_dir / f"{table}.parquet") for table in tables}


# columns copied between two returns of Arrow's freed memory in take_apart (at a million leads a
# column is 46 MB: eight hold a tenth of the snapshots)
RELEASE_EVERY_COLUMNS = 8


def take_apart(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """``frame.take(positions)`` that empties ``frame`` column by column as it copies the rows.

    For the snapshots :func:`read_features` reads (a block per column), whose split keeps three
    quarters of them: each column is freed once copied, and Arrow's allocator hands the memory back
    every few columns, so the split needs about the snapshots' memory rather than theirs and the
    windows' together (7.7 GB at a million leads). ``frame`` is left without columns.
    """
    if not frame.columns.is_unique:
        return frame.take(positions)
    index = frame.index.take(positions)
    columns: dict[Any, Any] = {}
    for count, name in enumerate(list(frame.columns), start=1):
        columns[name] = frame[name].array.take(positions)
        del frame[name]
        if count % RELEASE_EVERY_COLUMNS == 0:
            release_arrow_memory()
    release_arrow_memory()
    rows = pd.DataFrame(columns, index=index, copy=False)
    rows.attrs = dict(frame.attrs)
    return rows


def read_features(
    input_dir: Path, exclude: Iterable[str] = ()
) -> tuple[pd.DataFrame, dict[str, FeatureMeta], dict[str, Any], list[dict[str, Any]]]:
    """(snapshots, metadata, manifest, metadata records) of the features stage, ``exclude`` left out."""
    if not (input_dir / MANIFEST).exists():
        raise LeadmlError(f"no features in {input_dir} (run leadml-features, or make features, first)")
    # Arrow's buffers freed column by column as they become pandas columns (one block each): read
    # whole, the snapshots of a million leads (4.4 GB) took 2.5 times their size at the peak
    snapshots = pd.read_parquet(
        input_dir / SNAPSHOTS, to_pandas_kwargs={"split_blocks": True, "self_destruct": True}
    )
    release_arrow_memory()
    features_manifest = json.loads((input_dir / MANIFEST).read_text())
    metadata_records = json.loads((input_dir / FEATURE_METADATA).read_text())
    metadata = {m["name"]: FeatureMeta(**m) for m in metadata_records}
    snapshots = snapshots.drop(columns=[c for c in exclude if c in snapshots])
    metadata = {name: meta for name, meta in metadata.items() if name in snapshots.columns}
    return snapshots, metadata, features_manifest, metadata_records
