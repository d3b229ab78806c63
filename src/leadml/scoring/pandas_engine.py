"""Nightly scoring in bounded memory (the pandas engine), and what it shares with the Spark engine.

Both engines score leads in buckets split by a hash of the lead id. Every figure of a
lead (features, probability, exact reasons, sub-scores, expected value) depends on
that lead only, so a bucket computes it exactly as the whole table would.
What depends on all of today's leads is done once, globally: the percentile and the
tier thresholds from the probabilities of every bucket, and the model-input check and
drift from small additive per-bucket summaries. A second pass finishes every bucket's
rows with those figures and the trend against the previous partition.

The pandas engine (:func:`score_in_buckets`) splits the interim Parquet tables into
bucket files batch by batch with Arrow, so no table is ever whole in memory: peak
memory follows ``score.bucket_leads``, not the number of leads. The finished rows are
streamed into the partition's staging folder, which replaces ``as_of=YYYY-MM-DD/`` in
one rename (:func:`leadml.adapters.sinks.staged_partition`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leadml.adapters import sinks
from leadml.adapters.layout import MANIFEST
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, flat_open_features, open_lead_features
from leadml.errors import LeadmlError
from leadml.machine import release_memory
from leadml.modelling.drift import (
    column_kind,
    drift_counts,
    drift_reference,
    psi_from_counts,
    unseen_categories,
)
from leadml.modelling.evaluate import assign_tiers
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer, as_model_input
from leadml.progress import progress_iter
from leadml.scoring.experiment import (
    ArmFinish,
    ArmModels,
    finish_arms,
    rank_by_arm,
    score_arms,
    side_column,
)
from leadml.scoring.model_input import check_model_input, deal_values
from leadml.scoring.scores import TierSettings, TrendSettings, add_trend, movement_words, score_leads

logger = logging.getLogger(__name__)

PREVIOUS = "_previous_probability"
# the previous run's margin, base value and group contributions ride along as "_previous:<column>"
PREVIOUS_PREFIX = "_previous:"
ACTIVITY_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY)
SPLIT_BATCH_ROWS = 500_000  # rows of one table in memory while it is split into buckets
WRITE_BATCH_ROWS = 100_000
RUN_PREFIX = "run-"


# --------------------------------------------------------------------------- shared with Spark
def probe(
    scorer: LeadScorer, explain: bool, explainer: str, has_deal_value: bool, arms: ArmModels | None = None
) -> pd.DataFrame:
    """:func:`score_bucket` on one lead with every feature missing: the columns and kinds it returns."""
    every = scorers_of(scorer, arms)
    names = list(dict.fromkeys(name for one in every for name in one.feature_names))
    categories = {name for one in every for name in (getattr(one.model, "categories", {}) or {})}
    empty = {name: [np.nan] for name in names}
    features = pd.DataFrame({**empty, **{name: [None] for name in categories if name in empty}})
    features = as_model_input(features, names)
    features.insert(0, s.LEAD_ID, ["probe"])
    deal_value = pd.Series([np.nan]) if has_deal_value else None
    return score_bucket(scorer, features, explain, explainer, deal_value, arms)


def score_bucket(
    scorer: LeadScorer,
    features: pd.DataFrame,
    explain: bool,
    explainer: str,
    deal_value: pd.Series | None,
    arms: ArmModels | None = None,
) -> pd.DataFrame:
    """A bucket's leads scored by ``scorer``, or by every arm's model under an experiment
    (:func:`leadml.scoring.experiment.score_arms`); tiers and percentiles are provisional."""
    if arms is not None:
        return score_arms(arms, features, explain=explain, explainer=explainer, deal_value=deal_value)
    return score_leads(
        scorer, features, TierSettings(), explain=explain, explainer=explainer, deal_value=deal_value
    )


def scorers_of(scorer: LeadScorer, arms: ArmModels | None) -> list[LeadScorer]:
    """The models a run scores with: ``scorer``, or every arm's (each once) under an experiment."""
    return [scorer] if arms is None else list(arms.scorers.values())


def scores_bucket(features: pd.DataFrame, scorer: LeadScorer, arms: ArmModels | None) -> bool:
    """Whether a bucket has leads and every feature of every model (else the global check says why)."""
    return len(features) > 0 and all(
        name in features.columns for one in scorers_of(scorer, arms) for name in one.feature_names
    )


def bucket_summary(features: pd.DataFrame, scorer: LeadScorer) -> dict[str, Any]:
    """What the global checks need of a bucket's features: additive counts and a one-row witness."""
    return {
        "rows": len(features),
        "witness": _witness(features) if len(features) else None,
        "drift": drift_counts(drift_reference(scorer.reference or {}, _as_of_of(features)), features),
        "unseen": unseen_categories(scorer, features),
    }


def _as_of_of(features: pd.DataFrame) -> pd.Timestamp | None:
    """The run's date from a bucket's features (CRM snapshots carry it; None without rows)."""
    return features[s.AS_OF].iloc[0] if s.AS_OF in features.columns and len(features) else None


def _witness(features: pd.DataFrame) -> pd.DataFrame:
    """One row holding each column's first non-null value (null if none), in the column's own type.

    The witness of the witnesses of all buckets (stacked) has every column, kind and "filled
    somewhere" that ``stages.check_model_input`` looks at, so the check runs on it as it is;
    merged bucket by bucket it stays one row.

    Built from Python values, not sliced: a slice of an Arrow-backed column keeps the whole
    bucket's buffers alive, and 40 buckets' witnesses held 60 MB that way.
    """
    return pd.DataFrame(
        {name: pd.Series(features[name].dropna().iloc[:1].tolist() or [None], dtype=features[name].dtype)
         for name in features}
    )  # fmt: skip


@dataclass
class BucketSummaries:
    """Per-bucket summaries merged: rows, one witness, drift counts and unseen levels."""

    rows: int = 0
    witness: pd.DataFrame | None = None
    drift: dict[str, Any] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)

    def add(self, part: Mapping[str, Any]) -> None:
        self.rows += part["rows"]
        if part["witness"] is not None:
            stacked = [part["witness"]] if self.witness is None else [self.witness, part["witness"]]
            self.witness = _witness(pd.concat(stacked, ignore_index=True))
        for name, counts in part["drift"].items():
            if isinstance(counts, dict):
                merged = self.drift.setdefault(name, {})
                for level, n in counts.items():
                    merged[level] = merged.get(level, 0) + n
            else:
                self.drift[name] = self.drift.get(name, 0) + counts
        for name, n in part["unseen"].items():
            self.unseen[name] = self.unseen.get(name, 0) + n

    def check(
        self, scorer: LeadScorer, as_of: pd.Timestamp, source: Path, arms: ArmModels | None = None
    ) -> None:
        """The checks of a whole run, in order: any open lead, then the model-input check (of
        every arm's model under an experiment)."""
        if self.rows == 0 or self.witness is None:
            raise LeadmlError(f"no open leads as of {as_of:%Y-%m-%d} in {source}: nothing to score")
        for one in scorers_of(scorer, arms):
            check_model_input(self.witness, one)

    def psi(self, scorer: LeadScorer, as_of: pd.Timestamp | None = None) -> dict[str, float]:
        return psi_from_counts(drift_reference(scorer.reference or {}, as_of), self.drift, self.rows)


@dataclass(frozen=True)
class Finish:
    """The global figures every scored row is finished with."""

    sorted_probabilities: np.ndarray
    thresholds: Mapping[str, float]
    floor_tier: str
    trend: TrendSettings
    as_of: pd.Timestamp
    model_version: str
    schema: pa.Schema | None = None
    group_words: Mapping[str, str] = field(default_factory=dict)  # scores.movement_words
    arms: ArmFinish | None = None  # under an experiment: each lead's figures from its arm's model


def finish_rows(frame: pd.DataFrame, job: Finish) -> pd.DataFrame:
    """Percentile and tier among all of today's leads, trend, as-of and model version.

    The same figures as ``score_leads`` on all leads at once: the percentile counts the
    leads at or below (``rank(method="max")``), tiers come from ``assign_tiers`` with
    thresholds from every probability. ``frame`` carries the previous run's probability
    in :data:`PREVIOUS` (null for a new lead).
    """
    frame = frame.copy()
    previous_probability = frame.pop(PREVIOUS)
    carried = [c for c in frame.columns if c.startswith(PREVIOUS_PREFIX)]
    known = previous_probability.notna().to_numpy()
    previous = pd.DataFrame(
        {s.LEAD_ID: frame[s.LEAD_ID].to_numpy()[known], PROBABILITY: previous_probability.to_numpy()[known]}
    )
    for column in carried:
        previous[column.removeprefix(PREVIOUS_PREFIX)] = frame.pop(column).to_numpy()[known]
    probability = frame[PROBABILITY].to_numpy(dtype=np.float64)
    if job.arms is None:
        at_or_below = np.searchsorted(job.sorted_probabilities, probability, side="right").astype(np.float64)
        frame["percentile"] = 100.0 * at_or_below / len(job.sorted_probabilities)
        frame["tier"] = assign_tiers(probability, job.thresholds, job.floor_tier)
    else:  # among the leads scored by the same model, as a run with that model alone
        frame["percentile"], frame["tier"] = rank_by_arm(frame, job.arms, job.floor_tier)
    frame = add_trend(frame, previous, job.trend, job.group_words)
    frame.insert(1, s.AS_OF, pd.Series(job.as_of, index=frame.index, dtype="datetime64[us, UTC]"))
    frame["model_version"] = job.model_version
    return frame if job.arms is None else finish_arms(frame, job.arms, job.floor_tier)


def movement_words_of(scorer: LeadScorer, arms: ArmModels | None) -> dict[str, str]:
    """Every group of every model's features in words (:func:`movement_words`)."""
    words: dict[str, str] = {}
    for one in scorers_of(scorer, arms):
        words.update(movement_words(one))
    return words


def arm_finish(
    arms: ArmModels | None, probabilities: Mapping[str, list[np.ndarray]], tiers: TierSettings
) -> ArmFinish | None:
    """The global figures of an experiment's arms from each arm's probabilities of every lead."""
    if arms is None:
        return None
    merged = {arm: np.concatenate(parts) if parts else np.empty(0) for arm, parts in probabilities.items()}
    return ArmFinish.of(arms.experiment, merged, tiers, arms.versions)


@dataclass
class ScoringOutcome:
    """What ``stages.score_stage`` needs after either engine: where the rows went and their figures."""

    as_of: pd.Timestamp
    output: Path
    probabilities: np.ndarray  # of every scored lead, sorted
    tier_counts: dict[str, int]
    psi: dict[str, float]  # per feature, against the training reference
    unseen: dict[str, int]  # rows per categorical feature with a level the model never saw
    buckets: int


# --------------------------------------------------------------------------- the pandas engine
def bucket_of(lead_ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Bucket number of each lead id: a hash of the id's UTF-8 bytes (FNV-1a), modulo ``buckets``.

    Computed on Arrow's buffers, with no Python object per id: splitting tens of millions of
    events stays a matter of seconds.
    """
    array = lead_ids.combine_chunks() if isinstance(lead_ids, pa.ChunkedArray) else lead_ids
    if pa.types.is_dictionary(array.type):
        return bucket_of(array.dictionary, buckets)[array.indices.fill_null(0).to_numpy()]
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    hashes = np.empty(len(array), dtype=np.uint64)
    _fnv1a(offsets.astype(np.int64), data, hashes)
    return (hashes % np.uint64(buckets)).astype(np.int64)


@numba.njit(cache=True)
def _fnv1a(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.shape[0]):
        value = np.uint64(14695981039346656037)
        for j in range(offsets[i], offsets[i + 1]):
            value = (value ^ np.uint64(data[j])) * np.uint64(1099511628211)
        out[i] = value


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024


def _fix_mmap_threshold() -> None:
    """Serve every block of 256 KiB or more with its own mmap, returned to the system when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    which a bucket's arrays come from the heap, fragment it, and each bucket's peak sits a
    little higher than the last: at 40 buckets, 130 MB higher. Setting the threshold turns
    that adjustment off.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


ARROW_TYPES = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
}


def arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    """A fixed Arrow schema for scored rows: text columns stay text even where a bucket has no value."""
    return pa.schema(
        [
            pa.field(str(name), ARROW_TYPES.get(column_kind(frame[name]) or "text", pa.string()))
            for name in frame
        ]
    )


def time_bounds(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """The latest timestamp of each table as one-row frames (all ``resolve_as_of`` reads for
    ``latest``), read column by column in batches."""
    bounds = {}
    for table, column in ((s.LEADS, s.CREATED_AT), (s.OUTCOMES, s.CLOSED_AT), (s.ACTIVITIES, s.TIMESTAMP)):
        latest = None
        for batch in _batches(_table_path(tables_dir, table), [column]):
            top = pc.max(batch.column(0)).as_py()
            if top is not None:
                latest = top if latest is None else max(latest, top)
        stamp = pd.NaT if latest is None else pd.Timestamp(latest)
        if not pd.isna(stamp):
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        bounds[table] = pd.DataFrame({column: pd.Series([stamp], dtype="datetime64[us, UTC]")})
    return bounds


def _table_path(tables_dir: Path, table: str) -> Path:
    if not (tables_dir / MANIFEST).exists():
        raise LeadmlError(f"no ingested data in {tables_dir} (run leadml-ingest, or make ingest, first)")
    return tables_dir / f"{table}.parquet"


def _batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches, one row group in memory at a time.

    Not ``ParquetFile.iter_batches``: measured on 90 million events it held far more than
    a row group (1.44 GB peak against 0.61 GB reading row group by row group).
    """
    try:
        handle = pq.ParquetFile(path)
        for group in range(handle.num_row_groups):
            rows = handle.read_row_group(group, columns=columns)
            yield from rows.to_batches(max_chunksize=SPLIT_BATCH_ROWS)
    except (OSError, pa.ArrowException) as error:
        raise LeadmlError(f"cannot read {path}: {error}") from None


def _split(
    paths: list[Path],
    columns: list[str] | None,
    folder: Path,
    buckets: int,
    keep: Callable[[pa.Table], pa.Array] | None = None,
) -> list[Path]:
    """Rows of ``paths`` written to ``folder/bucket-<k>.arrow`` by the hash of their lead id.

    Bucket files are Arrow IPC streams with LZ4: written and read back much faster than
    Parquet, and only this run reads them. (Streams, not IPC files: each batch of the source
    may carry its own dictionary for a categorical column, which only streams allow.)
    """
    folder.mkdir(parents=True)
    targets = [folder / f"bucket-{k}.arrow" for k in range(buckets)]
    writers: list[pa.ipc.RecordBatchStreamWriter] = []
    schema: pa.Schema | None = None
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    try:
        for path in paths:
            for batch in _batches(path, columns):
                table = pa.Table.from_batches([batch])
                if keep is not None:
                    table = table.filter(keep(table))
                if schema is None:
                    schema = table.schema
                    writers = [pa.ipc.new_stream(target, schema, options=options) for target in targets]
                table = table.cast(schema)
                if buckets == 1:  # no hashing, sorting or slicing: the dictionaries hold the rows' values
                    writers[0].write_table(table)
                    continue
                bucket = bucket_of(table.column(s.LEAD_ID), buckets)
                order = np.argsort(bucket, kind="stable")
                grouped = table.take(pa.array(order))
                bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=buckets))])
                for k in range(buckets):
                    if bounds[k + 1] > bounds[k]:
                        part = grouped.slice(bounds[k], bounds[k + 1] - bounds[k])
                        writers[k].write_table(_compact_dictionaries(part))
    finally:
        for writer in writers:
            writer.close()
    return targets if writers else []


def _compact_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary columns re-encoded with only the values they hold.

    A slice keeps its source's whole dictionary: a bucket of events would carry every lead
    id of the batch, and pandas would build a category of them all for every chunk.
    """
    for index, column_field in enumerate(table.schema):
        if pa.types.is_dictionary(column_field.type):
            values = pc.cast(table.column(index), column_field.type.value_type)
            encoded = pc.dictionary_encode(values).cast(column_field.type)
            table = table.set_column(index, column_field, encoded)
    return table


def _read_bucket(paths: list[Path], k: int, empty: pd.DataFrame) -> pd.DataFrame:
    return _read_arrow(paths[k]) if paths else empty


def _read_arrow(path: Path) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pandas()


def _write_arrow(table: pa.Table, path: Path) -> None:
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(path, table.schema, options=options) as writer:
        writer.write_table(table)


def _empty_frame(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    empty = pq.read_schema(path).empty_table()
    return (empty.select(columns) if columns else empty).to_pandas()


def _clear_dead_runs(work_dir: Path) -> None:
    """Work folders of runs whose process is gone (killed, or the machine went down)."""
    for folder in work_dir.glob(f"{RUN_PREFIX}*"):
        pid = folder.name.removeprefix(RUN_PREFIX).split("-")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


class OpenLeads(Protocol):
    """Where a run's open leads come from: split into buckets once, then features bucket by bucket."""

    source: Path  # named in messages
    has_deal_value: bool

    def rows(self) -> int: ...

    def split(self, run_dir: Path, buckets: int) -> None: ...

    def features(self, k: int) -> tuple[pd.DataFrame, pd.Series | None]: ...


@dataclass
class CrmOpenLeads:
    """The CRM tables: leads created by ``as_of`` with their outcomes and earlier activities,
    features as of ``as_of`` (``open_lead_features``), deal values from the leads table."""

    source: Path
    as_of: pd.Timestamp
    settings: FeatureSettings
    # set by __post_init__ (the tables' files and empty frames) and split (the bucket files)
    paths: dict[str, Path] = field(default_factory=dict, init=False)
    empty: dict[str, pd.DataFrame] = field(default_factory=dict, init=False)
    has_deal_value: bool = field(default=False, init=False)
    parts: dict[str, list[Path]] = field(default_factory=dict, init=False)
    accounts: pd.DataFrame | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.paths = {table: _table_path(self.source, table) for table in s.CRM_TABLES}
        self.empty = {
            s.LEADS: _empty_frame(self.paths[s.LEADS]),
            s.OUTCOMES: _empty_frame(self.paths[s.OUTCOMES]),
            s.ACTIVITIES: _empty_frame(self.paths[s.ACTIVITIES], list(ACTIVITY_COLUMNS)),
        }
        self.has_deal_value = s.ESTIMATED_DEAL_VALUE in self.empty[s.LEADS].columns

    def rows(self) -> int:
        return int(pq.ParquetFile(self.paths[s.LEADS]).metadata.num_rows)

    def split(self, run_dir: Path, buckets: int) -> None:
        before = pa.scalar(self.as_of + pd.Timedelta(seconds=1), type=pa.timestamp("us", tz="UTC"))

        def microseconds(column: pa.ChunkedArray) -> pa.ChunkedArray:  # nanoseconds truncate: a filter only
            return pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False)

        def created_in_time(table: pa.Table) -> pa.Array:  # a superset: open_lead_features applies the rules
            created = microseconds(table.column(s.CREATED_AT))
            return pc.or_kleene(pc.is_null(created), pc.less(created, before))

        def earlier_events(table: pa.Table) -> pa.Array:
            return pc.less(microseconds(table.column(s.TIMESTAMP)), before)

        self.parts = {
            s.LEADS: _split([self.paths[s.LEADS]], None, run_dir / s.LEADS, buckets, created_in_time),
            s.OUTCOMES: _split([self.paths[s.OUTCOMES]], None, run_dir / s.OUTCOMES, buckets),
            s.ACTIVITIES: _split(
                [self.paths[s.ACTIVITIES]], list(ACTIVITY_COLUMNS), run_dir / s.ACTIVITIES, buckets,
                earlier_events,
            ),
        }  # fmt: skip
        self.accounts = pd.read_parquet(self.paths[s.ACCOUNTS])

    def features(self, k: int) -> tuple[pd.DataFrame, pd.Series | None]:
        tables = {name: _read_bucket(self.parts[name], k, self.empty[name]) for name in self.parts}
        tables[s.ACCOUNTS] = self.accounts
        features = open_lead_features(tables, self.as_of, self.settings)
        deal_value = deal_values(tables[s.LEADS], features[s.LEAD_ID]) if self.has_deal_value else None
        return features, deal_value


@dataclass
class FlatOpenLeads:
    """A flat table's open leads (``contract.open``, ingested to ``open_<table>.parquet``): their
    columns are the features as they are, as in training (``flat_open_features``)."""

    source: Path
    as_of: pd.Timestamp
    personal: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    has_deal_value: bool = field(default=False, init=False)  # no deal value column
    # set by split: the bucket files and the table's empty frame (a bucket without rows)
    parts: list[Path] = field(default_factory=list, init=False)
    empty: pd.DataFrame | None = field(default=None, init=False)

    def rows(self) -> int:
        return int(pq.ParquetFile(self.source).metadata.num_rows)

    def split(self, run_dir: Path, buckets: int) -> None:
        self.parts = _split([self.source], None, run_dir / "open", buckets)
        self.empty = _empty_frame(self.source)

    def features(self, k: int) -> tuple[pd.DataFrame, pd.Series | None]:
        rows = _read_bucket(self.parts, k, self.empty)
        return flat_open_features(rows, self.personal, self.exclude), None


def score_in_buckets(
    open_leads: OpenLeads,
    scorer: LeadScorer,
    as_of: pd.Timestamp,
    tiers: TierSettings,
    *,
    output_dir: Path,
    work_dir: Path,
    bucket_leads: int = 100_000,
    explain: bool = True,
    explainer: str = "fast",
    trend: TrendSettings | None = None,
    model_version: str = "",
    progress: bool = False,
    arms: ArmModels | None = None,
) -> ScoringOutcome:
    """Score every lead open at ``as_of`` bucket by bucket and replace its partition under ``output_dir``.

    ``arms``: an experiment's arms, each lead scored by every arm's model and shown its own arm's
    (:mod:`leadml.scoring.experiment`); None: every lead by ``scorer``.

    Raises :class:`~leadml.errors.SchemaMismatchError` before writing anything when today's
    features do not match the model, and :class:`~leadml.errors.LeadmlError` when no lead is open.
    """
    trend = trend or TrendSettings()
    buckets = max(1, math.ceil(open_leads.rows() / max(bucket_leads, 1)))
    run_dir = work_dir / f"{RUN_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        _clear_dead_runs(work_dir)
        _fix_mmap_threshold()
        return _score(
            open_leads, scorer, as_of, tiers, output_dir, run_dir, buckets,
            explain, explainer, trend, model_version, progress, arms,
        )  # fmt: skip
    except OSError as error:  # the work folder read-only or not a folder, the disk full: a message
        where = error.filename or work_dir
        raise LeadmlError(
            f"scoring cannot write {where} (score.work_dir): {error.strerror or error}"
        ) from None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _score(
    open_leads: OpenLeads, scorer: LeadScorer, as_of: pd.Timestamp, tiers: TierSettings, output_dir: Path,
    run_dir: Path, buckets: int, explain: bool, explainer: str, trend: TrendSettings, model_version: str,
    progress: bool, arms: ArmModels | None = None,
) -> ScoringOutcome:  # fmt: skip
    open_leads.split(run_dir, buckets)
    previous_dir = sinks.previous_partition_dir(output_dir, as_of)
    previous_parts = (
        _split(previous_files := sorted(previous_dir.glob("*.parquet")), previous_columns(previous_files),
               run_dir / "previous", buckets)
        if previous_dir is not None
        else []
    )  # fmt: skip
    scored_schema = arrow_schema(probe(scorer, explain, explainer, open_leads.has_deal_value, arms))
    summaries = BucketSummaries()
    probabilities: list[np.ndarray] = []
    arm_probabilities: dict[str, list[np.ndarray]] = {
        arm: [] for arm in (arms.experiment.names if arms else ())
    }
    scored_paths: list[Path | None] = []
    (run_dir / "scored").mkdir()
    for k in progress_iter(range(buckets), progress, "scoring lead buckets", unit="bucket"):
        features, deal_value = open_leads.features(k)
        summaries.add(bucket_summary(features, scorer))
        if not scores_bucket(features, scorer, arms):
            scored_paths.append(None)
            continue
        # tiers and percentiles here are provisional: the second pass sets them from all leads
        scored = score_bucket(scorer, features, explain, explainer, deal_value, arms)
        for arm, parts in arm_probabilities.items():
            parts.append(scored[side_column(arm, PROBABILITY)].to_numpy(dtype=np.float64))
        path = run_dir / "scored" / f"bucket-{k}.arrow"
        _write_arrow(pa.Table.from_pandas(scored, schema=scored_schema, preserve_index=False), path)
        scored_paths.append(path)
        probabilities.append(scored[PROBABILITY].to_numpy(dtype=np.float64))
        logger.info("bucket %d of %d: %d open leads scored (%d so far)", k + 1, buckets, len(scored),
                    sum(len(p) for p in probabilities))  # fmt: skip
        del features, scored
        if buckets > 1:  # one bucket is the peak anyway; a full collection costs half a second
            release_memory()
    summaries.check(scorer, as_of, open_leads.source, arms)
    everything = np.sort(np.concatenate(probabilities))
    finish = Finish(
        everything, tiers.thresholds_for(everything), tiers.floor_tier, trend, as_of, model_version,
        group_words=movement_words_of(scorer, arms), arms=arm_finish(arms, arm_probabilities, tiers),
    )  # fmt: skip
    no_rows = scored_schema.empty_table().to_pandas().assign(**{PREVIOUS: np.nan})
    final_schema = arrow_schema(finish_rows(no_rows, finish))
    tier_counts: dict[str, int] = {}

    def finished_tables() -> Iterator[pa.Table]:
        for k, path in enumerate(scored_paths):
            if path is None:
                continue
            scored = _with_previous(_read_arrow(path), previous_parts, k)
            for start in range(0, len(scored), WRITE_BATCH_ROWS):
                rows = finish_rows(scored.iloc[start : start + WRITE_BATCH_ROWS], finish)
                for tier, count in rows["tier"].value_counts().items():
                    tier_counts[str(tier)] = tier_counts.get(str(tier), 0) + int(count)
                yield pa.Table.from_pandas(rows, schema=final_schema, preserve_index=False)
            del scored
            if buckets > 1:
                release_memory()

    written = sinks.write_partition_tables(finished_tables(), final_schema, output_dir, as_of)
    return ScoringOutcome(
        as_of=as_of,
        output=written,
        probabilities=everything,
        tier_counts=dict(sorted(tier_counts.items())),
        psi=summaries.psi(scorer, as_of),
        unseen=summaries.unseen,
        buckets=buckets,
    )


def previous_columns(files: list[Path]) -> list[str]:
    """What the trend and the movement read of the previous partition: the probability, and the
    margin, base value and group contributions where that run wrote them."""
    names = sinks.scored_file_columns(files[0]) if files else []  # a damaged earlier run: one line
    wanted = [MARGIN, BASE_VALUE, *(n for n in names if n.startswith(GROUP_PREFIX))]
    return [s.LEAD_ID, PROBABILITY, *(n for n in wanted if n in names)]


def _with_previous(scored: pd.DataFrame, previous_parts: list[Path], k: int) -> pd.DataFrame:
    """``scored`` with the latest earlier run's probability (NaN for a new lead) and, as
    ``_previous:<column>``, its margin, base value and group contributions."""
    if not previous_parts:
        return scored.assign(**{PREVIOUS: np.nan})
    before = _read_bucket(previous_parts, k, pd.DataFrame()).drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    aligned = before.reindex(scored[s.LEAD_ID].to_numpy())
    carried = {f"{PREVIOUS_PREFIX}{c}": aligned[c].to_numpy(dtype=np.float64) for c in before.columns
               if c != PROBABILITY}  # fmt: skip
    return scored.assign(**{PREVIOUS: aligned[PROBABILITY].to_numpy(dtype=np.float64)}, **carried)
