"""The CRM tables through their contracts batch by batch: memory bounded by a batch, not a table.

:func:`ingest_crm_streamed` gives what :func:`leadml.data.ingest.ingest_crm` gives for the same
tables (the accepted rows, the quarantine row for row, the reports) and writes them straight to
Parquet. Each table is read from its source twice:

1. every batch goes through :func:`~leadml.data.validation.validate_table` with its duplicate keys
   left out; the typed rows it accepts are spilled to an Arrow file per batch, its quarantined rows
   likewise, and each accepted row's key (with its source row and its count of filled values) to
   one of :data:`PARTITIONS` files chosen by a hash of the key, so that rows sharing a key meet in
   one file;
2. each key file is resolved on its own with the whole-table rule
   (:func:`~leadml.data.validation.duplicate_problems`); then the spilled batches are written out
   without the losing rows, whose original values come from reading their source batch again and
   join the quarantine in source-row order.

What one table needs of another is kept compactly between the passes: the accepted lead ids with
their created_at (outcomes' and activities' checks), the quarantined lead ids (collateral rows), the
accepted outcome ids (open defaults). Open categories are the values that survived in the whole
table, sorted, in every batch written, so the file reads back as the in-memory path wrote it.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leadml.adapters.layout import CATEGORICAL_ON_DISK
from leadml.data import schema as s
from leadml.data.arrays import IdLookup, is_in, text_hash
from leadml.data.contracts import REASON, SOURCE_ROW, IngestSettings, RowCheck, TableContract
from leadml.data.ingest import (
    BEFORE_CREATED,
    LEAD_QUARANTINED,
    NO_OUTCOME,
    UNKNOWN_ACCOUNT,
    activities_before_created,
    check_has_rows,
    closed_before_created_check,
    open_outcomes,
    status_check,
    unknown_lead_check,
)
from leadml.data.parsing import respelt_values
from leadml.data.validation import (
    TableReport,
    duplicate_keys,
    duplicate_problems,
    quarantine_frame,
    validate_table,
)
from leadml.errors import LeadmlError
from leadml.machine import release_memory

logger = logging.getLogger(__name__)

__all__ = ["PARTITIONS", "Reader", "StreamedIngest", "ingest_crm_streamed"]

Reader = Callable[[], Iterator[pd.DataFrame]]  # a table read again from its start, batch by batch

PARTITIONS = 64  # key files per key: 90 million event ids resolve 1.4 million at a time
_ROW = "__source_row"  # spilled rows' 1-based source row
_FILLED = "__filled"  # spilled keys' count of non-null values (the most_complete rule)
_CATEGORY = "category"  # a removed row's reason category
_COLLATERAL = "collateral"


@dataclass(frozen=True)
class StreamedIngest:
    """What :func:`ingest_crm_streamed` wrote, per table: the report, the rows and dtypes of the
    accepted table's file, and the category values written another way (see ``respelt_categories``)."""

    reports: dict[str, TableReport]
    output_rows: dict[str, int]
    columns: dict[str, dict[str, str]]
    respelt: dict[str, dict[str, dict[str, Any]]]


@dataclass
class _Spill:
    """One table after its first pass: its accepted candidates and quarantined rows per batch, on disk."""

    contract: TableContract
    folder: Path
    accepted: _Frames
    quarantined: _Frames
    starts: list[int] = field(default_factory=list)  # 0-based first source row of each batch
    keys: list[_KeyFiles] = field(default_factory=list)  # per key, its rows by partition
    template: pd.DataFrame | None = None  # accepted rows' columns and dtypes (no rows)
    quarantine_template: pd.DataFrame | None = None
    report: TableReport | None = None  # the first pass's counts, summed over the batches
    removed: pd.DataFrame | None = None  # accepted candidates taken out later (sorted by source row)
    raw: pd.DataFrame | None = None  # the raw rows, while the table is one batch
    batch_rows: int = 1
    respelt: dict[str, dict[str, str]] = field(default_factory=dict)

    def candidates(self, columns: Sequence[str], removed: bool = False) -> pd.DataFrame:
        """``columns`` of the accepted rows (candidates not removed; with ``removed``, the removed
        ones instead), in source order, with their source rows."""
        parts = [
            frame.loc[self.is_removed(frame[_ROW].to_numpy()) == removed]
            for frame in self.accepted.all([*columns, _ROW])
        ]
        return pd.concat(parts, ignore_index=True)

    def is_removed(self, rows: np.ndarray) -> np.ndarray:
        if self.removed is None or self.removed.empty:
            return np.zeros(len(rows), dtype=bool)
        return np.isin(rows, self.removed[SOURCE_ROW].to_numpy(), assume_unique=True)

    def removed_before_moves(self) -> np.ndarray:
        """Source rows removed by the table's own rules (duplicates), not as collateral of another table."""
        if self.removed is None or self.removed.empty:
            return np.zeros(0, dtype=np.int64)
        own = ~self.removed[_COLLATERAL].to_numpy(dtype=bool)
        return self.removed[SOURCE_ROW].to_numpy()[own]

    def quarantined_values(self, column: str) -> pd.DataFrame:
        """``column`` (as written) and the source row of the first pass's quarantined rows."""
        parts = list(self.quarantined.all([column, SOURCE_ROW]))
        if not parts:
            return pd.DataFrame({column: pd.Series(dtype="str"), SOURCE_ROW: pd.Series(dtype="int64")})
        return pd.concat(parts, ignore_index=True)

    def remove(self, rows: pd.DataFrame) -> None:
        """Take accepted candidates out: ``rows`` has their source row, reason, category, collateral."""
        if rows.empty:
            return
        parts = [part for part in (self.removed, rows) if part is not None and not part.empty]
        merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else rows
        self.removed = merged.sort_values(SOURCE_ROW, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- Arrow spill files
class _Frames:
    """Frames of a table's batches: the first kept in memory while it is the only one (a table of one
    batch never touches the disk), every one in an Arrow file from the second on."""

    def __init__(self, folder: Path, stem: str) -> None:
        self.folder, self.stem = folder, stem
        self.items: list[pd.DataFrame | Path | None] = []

    def append(self, frame: pd.DataFrame | None) -> None:
        """Add the next batch's frame (None: nothing for that batch)."""
        if len(self.items) == 1 and isinstance(self.items[0], pd.DataFrame):
            self.items[0] = self._spilled(self.items[0], 0)
        if frame is not None and self.items:
            frame = self._spilled(frame, len(self.items))
        self.items.append(frame)

    def _spilled(self, frame: pd.DataFrame, number: int) -> Path:
        return _write_ipc(frame, self.folder / f"{self.stem}-{number:05d}.arrow")

    def __len__(self) -> int:
        return len(self.items)

    def get(self, number: int, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        item = self.items[number]
        if item is None:
            return None
        if isinstance(item, pd.DataFrame):
            return item if columns is None else item[list(columns)]
        return _read_ipc(item, columns)

    def all(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        for number in range(len(self.items)):
            frame = self.get(number, columns)
            if frame is not None:
                yield frame


# spill files compressed: a third of the disk and of the page cache for little CPU
_SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def _write_ipc(frame: pd.DataFrame, path: Path) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with (
        pa.OSFile(str(path), "wb") as sink,
        pa.ipc.new_file(sink, table.schema, options=_SPILL_OPTIONS) as writer,
    ):
        writer.write_table(table)
    return path


def _read_ipc(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
        if columns is not None:
            table = table.select(list(columns))
        return table.to_pandas()


class _KeyFiles:
    """Accepted rows' keys (with source row and filled count), by a hash of the key: the first batch's
    in memory while it is the only one, else appended to :data:`PARTITIONS` Arrow stream files."""

    def __init__(self, folder: Path, key: Sequence[str]) -> None:
        self.folder, self.key = folder, list(key)
        self.held: pd.DataFrame | None = None
        self.batches = 0
        self.writers: dict[int, Any] = {}
        self.rows = np.zeros(PARTITIONS, dtype=np.int64)
        self.schema: pa.Schema | None = None

    def add(self, keys: pd.DataFrame) -> None:
        self.batches += 1
        if self.batches == 1:
            self.held = keys
            return
        if self.held is not None:
            held, self.held = self.held, None
            self._write(held)
        self._write(keys)

    def _write(self, keys: pd.DataFrame) -> None:
        if keys.empty:
            return
        part = (_key_hash(keys, self.key) % np.uint64(PARTITIONS)).astype(np.int64)
        order = np.argsort(part, kind="stable")  # stable: each partition keeps source order
        table = pa.Table.from_pandas(keys.iloc[order], schema=self.schema, preserve_index=False)
        self.schema = table.schema
        bounds = np.searchsorted(part[order], np.arange(PARTITIONS + 1))
        for number in np.flatnonzero(np.diff(bounds)):
            if number not in self.writers:
                path = self.folder / f"part-{number:03d}.arrow"
                self.writers[number] = pa.ipc.new_stream(str(path), self.schema, options=_SPILL_OPTIONS)
            self.writers[number].write_table(table.slice(bounds[number], bounds[number + 1] - bounds[number]))
            self.rows[number] += bounds[number + 1] - bounds[number]

    def groups(self, rows: int) -> Iterator[pd.DataFrame]:
        """The keys, partitions read together up to about ``rows`` rows (rows sharing a key always
        come in one frame, in source order)."""
        if self.held is not None:
            yield self.held
            return
        for writer in self.writers.values():
            writer.close()
        self.writers = {number: None for number in self.writers}
        group: list[int] = []
        held = 0
        for number in sorted(self.writers):
            if group and held + self.rows[number] > rows:
                yield self._read(group)
                group, held = [], 0
            group.append(number)
            held += int(self.rows[number])
        if group:
            yield self._read(group)

    def _read(self, numbers: Sequence[int]) -> pd.DataFrame:
        tables = []
        for number in numbers:
            with pa.OSFile(str(self.folder / f"part-{number:03d}.arrow"), "rb") as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        frame = pa.concat_tables(tables).to_pandas()
        if len(numbers) > 1:  # partitions interleave in the source
            frame = frame.sort_values(_ROW, kind="stable")
        return frame.reset_index(drop=True)


def _key_hash(keys: pd.DataFrame, key: Sequence[str]) -> np.ndarray:
    """One 64-bit hash per row of the ``key`` columns, the same for the same key in any batch."""
    hashes = np.zeros(len(keys), dtype=np.uint64)
    for column in key:
        values = keys[column]
        if isinstance(values.dtype, pd.StringDtype):
            column_hash = text_hash(values)
        else:
            column_hash = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
        hashes = (hashes * np.uint64(0x100000001B3)) ^ column_hash
    return hashes


def _plain_keys(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """Key columns with categories as their values: every batch has its own categories."""
    return frame[list(key)].apply(
        lambda column: (
            column.astype(column.cat.categories.dtype)
            if isinstance(column.dtype, pd.CategoricalDtype)
            else column
        )
    )


# --------------------------------------------------------------------------- first pass
def _first_pass(
    read: Reader,
    contract: TableContract,
    settings: IngestSettings,
    folder: Path,
    *,
    source: str,
    quarantine_path: str | None,
    row_checks: Sequence[RowCheck] = (),
) -> _Spill:
    """Every batch through the contract without duplicate keys, spilled (see the module docstring)."""
    folder.mkdir(parents=True)
    spill = _Spill(contract, folder, _Frames(folder, "accepted"), _Frames(folder, "quarantine"))
    keys = duplicate_keys(contract)
    for number, key in enumerate(keys):
        (folder / f"key-{number}").mkdir()
        spill.keys.append(_KeyFiles(folder / f"key-{number}", key))
    counts: Counter[str] = Counter()
    start = 0
    for number, raw in enumerate(read()):
        rows = np.arange(start + 1, start + len(raw) + 1, dtype=np.int64)
        validated = validate_table(
            raw,
            contract,
            settings,
            source=source,
            quarantine_path=quarantine_path,
            row_checks=row_checks,
            enforce_bad_share=False,
            source_rows=rows,
            defer_duplicates=True,
        )
        spill.accepted.append(validated.accepted.assign(**{_ROW: validated.accepted_source_rows}))
        quarantine = validated.quarantine
        spill.quarantined.append(quarantine if len(quarantine) else None)
        # a table of one batch keeps its raw rows for the quarantine of its duplicates; more are read again
        spill.raw = raw if number == 0 else None
        if spill.template is None:
            spill.template = validated.accepted.iloc[:0]
            spill.quarantine_template = quarantine.iloc[:0]
            spill.report = replace(validated.report, input_rows=0, accepted_rows=0, quarantined_rows=0)
        filled = validated.accepted.notna().sum(axis=1).to_numpy(dtype=np.int64)
        for key, files in zip(keys, spill.keys, strict=True):
            present = validated.accepted[key].notna().all(axis=1).to_numpy()
            key_frame = _plain_keys(validated.accepted, key).assign(
                **{_ROW: validated.accepted_source_rows, _FILLED: filled}
            )
            files.add(key_frame.loc[present])
        counts.update(validated.report.reason_counts)
        spill.report = replace(
            spill.report,
            input_rows=spill.report.input_rows + len(raw),
            accepted_rows=spill.report.accepted_rows + len(validated.accepted),
            quarantined_rows=spill.report.quarantined_rows + len(quarantine),
        )
        _add_respelt(spill.respelt, raw, contract, settings)
        spill.starts.append(start)
        spill.batch_rows = max(spill.batch_rows, len(raw))
        start += len(raw)
        logger.info("%s: %s rows checked", contract.name, f"{start:,}")
    spill.report = replace(spill.report, reason_counts=dict(counts.most_common()))
    return spill


def _add_respelt(
    found: dict[str, dict[str, str]], raw: pd.DataFrame, contract: TableContract, settings: IngestSettings
) -> None:
    """Category values written another way, added in order of first appearance (as for a whole table)."""
    for spec in contract.columns:
        if spec.dtype == "category" and spec.name in raw.columns:
            changes = respelt_values(raw[spec.name], spec, settings)
            column = found.setdefault(spec.name, {})
            for written, stored in changes.items():
                column.setdefault(written, stored)


def _respelt_record(found: Mapping[str, Mapping[str, str]], examples: int = 3) -> dict[str, dict[str, Any]]:
    return {
        column: {"values": len(changes), "examples": dict(list(changes.items())[:examples])}
        for column, changes in found.items()
        if changes
    }


# --------------------------------------------------------------------------- duplicates
def _resolve_duplicates(spill: _Spill) -> None:
    """Each key's duplicates, group of partitions by group, in key order (a loser of one key is not a
    candidate for the next), as :func:`validate_table` resolves them for a whole table."""
    contract = spill.contract
    for key, files in zip(duplicate_keys(contract), spill.keys, strict=True):
        losers = []
        for frame in files.groups(spill.batch_rows):
            frame = frame.loc[~spill.is_removed(frame[_ROW].to_numpy())].reset_index(drop=True)
            rows = frame[_ROW].to_numpy()
            everyone = np.ones(len(frame), dtype=bool)
            filled = frame[_FILLED].to_numpy()
            for problem in duplicate_problems(frame[key], everyone, key, contract.duplicates, rows, filled):
                positions = np.flatnonzero(problem.mask)
                losers.append(
                    pd.DataFrame(
                        {
                            SOURCE_ROW: rows[positions],
                            REASON: problem.messages.reindex(positions).to_numpy(dtype=object),
                            _CATEGORY: problem.category,
                            _COLLATERAL: False,
                        }
                    )
                )
        if losers:
            spill.remove(pd.concat(losers, ignore_index=True))


# --------------------------------------------------------------------------- second pass
def _final_report(spill: _Spill, **changes: Any) -> TableReport:
    report = spill.report
    removed = spill.removed if spill.removed is not None else pd.DataFrame(columns=[_CATEGORY, _COLLATERAL])
    counts = Counter(report.reason_counts)
    counts.update(removed[_CATEGORY].value_counts(sort=False).to_dict())
    return replace(
        report,
        accepted_rows=report.accepted_rows - len(removed),
        quarantined_rows=report.quarantined_rows + len(removed),
        reason_counts=dict(counts.most_common()),
        collateral_rows=report.collateral_rows + int(removed[_COLLATERAL].sum()),
        **changes,
    )


def _final_categories(
    spill: _Spill, on_disk: Sequence[str]
) -> tuple[dict[str, pd.CategoricalDtype], list[str]]:
    """The values that survived in the whole table, sorted: per open category column its categories
    (what the in-memory path's categories are: settled when the table is validated, so a lead moved
    out later for its outcome keeps its values among them); and the text columns stored as categories
    (``on_disk``), whose dictionaries are each row group's own (:class:`_ParquetOut`)."""
    contract = spill.contract
    columns = [
        spec.name
        for spec in contract.columns
        if spec.dtype == "category" and spec.allowed is None and spec.name in spill.template.columns
    ]
    stored = [column for column in on_disk if column in spill.template.columns and column not in columns]
    if not columns:
        return {}, stored
    seen: dict[str, set[Any]] = {column: set() for column in columns}
    settled = spill.removed_before_moves()
    for frame in spill.accepted.all([*columns, _ROW]):
        frame = frame.loc[~np.isin(frame[_ROW].to_numpy(), settled, assume_unique=True)]
        for column in columns:
            codes = frame[column].cat.codes.to_numpy()
            seen[column].update(frame[column].cat.categories[np.unique(codes[codes >= 0])])
    categories = {
        column: pd.CategoricalDtype(pd.Index(sorted(seen[column]), dtype="str"))
        if seen[column]
        else _empty_categories(spill.template[column])
        for column in columns
    }
    return categories, stored


def _mostly_distinct(contract: TableContract) -> set[str]:
    """Columns whose values rarely repeat: the unique one-column keys and the timestamps."""
    unique = {key[0] for key in duplicate_keys(contract) if len(key) == 1}
    return unique | {spec.name for spec in contract.columns if spec.dtype == "timestamp"}


def _empty_categories(column: pd.Series) -> pd.CategoricalDtype:
    """A column without a value keeps the categories' dtype the whole table gives it (a Parquet file
    reads an empty object column back unlike an empty text one)."""
    return column.dtype if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category").dtype


ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default, so a file has the row groups of a whole frame written


class _ParquetOut:
    """Frames appended to one Parquet file in row groups of :data:`ROW_GROUP_ROWS` rows, whatever the
    batches, as pandas writes the whole frame ``final`` describes (its dtypes, no rows).

    Columns of ``stored`` arrive as text and are written dictionary-encoded, each row group with a
    dictionary of its own values. One dictionary of the whole column in every row group (what
    pandas writes for a categorical) held every distinct value for the whole pass and made the
    Parquet writer encode all of them again per row group: at 4 million leads, the activities'
    lead ids took 0.5 GB more than at a million. A reader gets the same values; pandas unifies the
    dictionaries in order of first appearance rather than sorted.
    """

    def __init__(
        self, path: Path, final: pd.DataFrame, stored: Sequence[str] = (), plain: Collection[str] = ()
    ) -> None:
        self.path, self.stored = path, list(stored)
        # Parquet tries a dictionary for every column and gives up once it is large: for ids that are
        # unique and for timestamps, that is a fifth of the writing time for nothing
        self.dictionary_columns = [name for name in final.columns if name not in plain]
        # without a row, the file is the whole frame's: the stored columns as categories of nothing
        self.final = final.astype(dict.fromkeys(self.stored, "category")) if self.stored else final
        schema = pa.Schema.from_pandas(final, preserve_index=False)
        for name in self.stored:
            dictionary = pa.dictionary(pa.int32(), pa.large_string())
            schema = schema.set(schema.get_field_index(name), pa.field(name, dictionary))
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        self.pending.append(pa.Table.from_pandas(frame, preserve_index=False))
        self.pending_rows += len(frame)
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(whole_groups=True)

    def _flush(self, whole_groups: bool) -> None:
        table = pa.concat_tables(self.pending, promote_options="permissive")
        rows = (len(table) // ROW_GROUP_ROWS) * ROW_GROUP_ROWS if whole_groups else len(table)
        rest = table.slice(rows)
        self.pending, self.pending_rows = ([rest], len(rest)) if len(rest) else ([], 0)
        if rows == 0:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                str(self.path), self.schema, use_dictionary=self.dictionary_columns
            )
        self.writer.write_table(self._typed(table.slice(0, rows)), row_group_size=ROW_GROUP_ROWS)

    def _typed(self, table: pa.Table) -> pa.Table:
        columns = []
        for target in self.schema:
            column = table.column(target.name)
            if target.name in self.stored:  # one dictionary for the row group: its chunks combined
                column = pc.dictionary_encode(column.cast(pa.large_string()).combine_chunks())
            columns.append(column.cast(target.type))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def close(self) -> None:
        """Finish the file; without any row, it is written as pandas writes the empty frame."""
        if self.pending:
            self._flush(whole_groups=False)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.final.to_parquet(self.path, index=False)
            return
        self.writer.close()


def _second_pass(
    spill: _Spill,
    read: Reader,
    output: Path,
    quarantine: Path,
    *,
    on_disk: Sequence[str] = (),
    appended: pd.DataFrame | None = None,
    each_batch: Callable[[pd.DataFrame], None] | None = None,
) -> dict[str, str]:
    """Write the accepted rows (``appended`` after them) and the whole quarantine; the table's dtypes."""
    categories, stored = _final_categories(spill, on_disk)
    final = spill.template.astype(categories) if categories else spill.template
    removed = spill.removed if spill.removed is not None else pd.DataFrame(columns=[SOURCE_ROW, REASON])
    raw_batches = None if not len(removed) else iter([spill.raw]) if spill.raw is not None else read()
    table_out = _ParquetOut(output, final, stored, plain=_mostly_distinct(spill.contract))
    quarantine_out = _ParquetOut(quarantine, spill.quarantine_template)
    for number in range(len(spill.accepted)):
        frame = spill.accepted.get(number).copy()
        kept = frame.loc[~spill.is_removed(frame.pop(_ROW).to_numpy())].reset_index(drop=True)
        written = kept.astype(categories) if categories else kept
        if each_batch is not None:
            each_batch(written)
        table_out.write(written)
        raw = next(raw_batches) if raw_batches is not None else None
        parts = [part for part in (spill.quarantined.get(number),) if part is not None]
        if raw is not None:
            parts.append(_moved_rows(raw, removed, spill.starts[number], spill.contract.name))
        parts = [part for part in parts if len(part)]
        if parts:
            merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            quarantine_out.write(merged.sort_values(SOURCE_ROW, kind="stable").reset_index(drop=True))
    if appended is not None and len(appended):
        table_out.write(appended.astype(categories) if categories else appended)
    table_out.close()
    quarantine_out.close()
    # the validated table's dtypes, before columns are stored as categories (as the manifest records)
    return {str(column): str(dtype) for column, dtype in spill.template.dtypes.items()}


def _moved_rows(raw: pd.DataFrame, removed: pd.DataFrame, start: int, table: str) -> pd.DataFrame:
    """Quarantine rows of the removed candidates in the batch that starts at source row ``start`` + 1."""
    rows = removed[SOURCE_ROW].to_numpy()
    inside = (rows > start) & (rows <= start + len(raw))
    positions = rows[inside] - start - 1
    reasons = pd.Series(removed[REASON].to_numpy()[inside], index=positions, dtype="str")
    source_rows = np.arange(start + 1, start + len(raw) + 1, dtype=np.int64)
    return quarantine_frame(raw.reset_index(drop=True), positions, reasons, table, source_rows)


# --------------------------------------------------------------------------- the CRM tables
def _empty_reader(contract: TableContract) -> Reader:
    def read() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame({spec.name: pd.Series(dtype="str") for spec in contract.columns})

    return read


def _leads_without_outcome(leads: _Spill, outcomes: _Spill) -> pd.DataFrame:
    """Accepted leads whose every outcome row was quarantined: removed rows (collateral), as
    ``_quarantine_leads_without_outcome`` moves them."""
    rejected = outcomes.quarantined_values(s.LEAD_ID)
    rejected_ids = rejected[s.LEAD_ID].str.strip()
    losers = outcomes.candidates([s.LEAD_ID], removed=True)
    ids = pd.concat([rejected_ids, losers[s.LEAD_ID].astype("str")], ignore_index=True)
    first_rows = pd.concat([rejected[SOURCE_ROW], losers[_ROW]], ignore_index=True).to_numpy(dtype=np.int64)
    if ids.empty:
        return pd.DataFrame()
    accepted = leads.candidates([s.LEAD_ID])
    lead_ids = accepted[s.LEAD_ID]
    lost = ~is_in(lead_ids, outcomes.candidates([s.LEAD_ID])[s.LEAD_ID]) & is_in(lead_ids, ids)
    if not lost.any():
        return pd.DataFrame()
    first_row = pd.Series(first_rows).groupby(ids.to_numpy()).min()
    rows = lead_ids[lost].map(first_row).astype("int64").astype("str")
    return pd.DataFrame(
        {
            SOURCE_ROW: accepted.loc[lost, _ROW].to_numpy(),
            REASON: ("outcome row quarantined (outcomes source row " + rows + ")").to_numpy(dtype=object),
            _CATEGORY: "outcome row quarantined",
            _COLLATERAL: True,
        }
    )


def _quarantined_lead_ids(leads: _Spill) -> pd.Series:
    """The lead_id of every quarantined lead row as written (trimmed by the check)."""
    written = leads.quarantined_values(s.LEAD_ID)[s.LEAD_ID]
    removed = leads.candidates([s.LEAD_ID], removed=True)[s.LEAD_ID].astype("str")
    return pd.concat([written, removed], ignore_index=True)


def _with_warning(report: TableReport, warning: str, count: int) -> TableReport:
    if count == 0:
        return report
    return replace(report, warnings={**report.warnings, warning: int(count)})


def ingest_crm_streamed(
    readers: Mapping[str, Reader],
    contracts: Mapping[str, TableContract],
    settings: IngestSettings,
    *,
    outputs: Mapping[str, Path],
    quarantines: Mapping[str, Path],
    spill_dir: Path,
    sources: Mapping[str, str] | None = None,
) -> StreamedIngest:
    """Validate the CRM tables batch by batch and write them (see the module docstring).

    ``readers`` needs leads and outcomes; a missing accounts or activities table counts as empty.
    ``spill_dir`` must not exist; it is removed at the end. The bad share is not checked here: call
    :func:`~leadml.data.ingest.check_bad_shares` once the quarantine files are written.
    """
    settings = settings.with_fixed_reference_time()
    sources = dict(sources or {})
    readers = {table: readers.get(table) or _empty_reader(contracts[table]) for table in s.CRM_TABLES}
    try:
        spill_dir.mkdir(parents=True)
    except OSError as error:  # e.g. a file where the output folder should be
        raise LeadmlError(f"cannot write {spill_dir.parent}: {error.strerror or error}") from None
    try:
        return _ingest(_Run(readers, contracts, settings, outputs, quarantines, spill_dir, sources))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


@dataclass(frozen=True)
class _Run:
    readers: Mapping[str, Reader]
    contracts: Mapping[str, TableContract]
    settings: IngestSettings
    outputs: Mapping[str, Path]
    quarantines: Mapping[str, Path]
    spill_dir: Path
    sources: Mapping[str, str]


def _release_after(spill: _Spill) -> None:
    """Freed memory back to the system after a table of several batches. A table of one batch is
    small, and the full garbage collection alone costs about 0.1 s (a tenth of a small ingestion)."""
    if len(spill.starts) > 1:
        release_memory()


def _ingest(run: _Run) -> StreamedIngest:
    def first(table: str, row_checks: Sequence[RowCheck] = ()) -> _Spill:
        spill = _first_pass(
            run.readers[table],
            run.contracts[table],
            run.settings,
            run.spill_dir / table,
            source=run.sources.get(table, f"the {table} frame"),
            quarantine_path=str(run.quarantines[table]),
            row_checks=row_checks,
        )
        _resolve_duplicates(spill)
        _release_after(spill)  # a table's batches freed: the next step starts from this table's state only
        return spill

    reports: dict[str, TableReport] = {}
    columns: dict[str, dict[str, str]] = {}
    rows: dict[str, int] = {}

    def second(table: str, spill: _Spill, report: TableReport, **options: Any) -> None:
        columns[table] = _second_pass(
            spill,
            run.readers[table],
            run.outputs[table],
            run.quarantines[table],
            on_disk=CATEGORICAL_ON_DISK.get(table, ()),
            **options,
        )
        reports[table] = report
        rows[table] = report.accepted_rows + report.added_rows
        if table != s.LEADS:  # the leads' spill still answers the activities' checks
            shutil.rmtree(spill.folder, ignore_errors=True)
        _release_after(spill)

    accounts = first(s.ACCOUNTS)
    account_ids = accounts.candidates([s.ACCOUNT_ID])[s.ACCOUNT_ID]
    second(s.ACCOUNTS, accounts, _final_report(accounts))

    leads = first(s.LEADS)
    if leads.report.input_rows == 0:
        check_has_rows(pd.DataFrame(), s.LEADS, run.sources.get(s.LEADS, "the leads frame"))
    lead_accounts = leads.candidates([s.ACCOUNT_ID])[s.ACCOUNT_ID]
    unknown_accounts = int((lead_accounts.notna().to_numpy() & ~is_in(lead_accounts, account_ids)).sum())
    del account_ids, lead_accounts

    lead_frame = leads.candidates([s.LEAD_ID, s.CREATED_AT]).drop(columns=_ROW)
    lead_ids = IdLookup(lead_frame[s.LEAD_ID])  # one lookup of millions of ids for every check
    outcome_checks = [
        unknown_lead_check(lead_frame[s.LEAD_ID], _quarantined_lead_ids(leads), lead_ids),
        status_check,
        closed_before_created_check(lead_frame, lead_ids),
    ]
    outcomes = first(s.OUTCOMES, outcome_checks)
    # the checks hold the lead ids and their lookup: freed before the leads' second pass builds them
    # again for what is left (two sets of millions of ids at once were the outcomes' peak)
    del outcome_checks, lead_frame, lead_ids
    leads.remove(_leads_without_outcome(leads, outcomes))
    leads_report = _with_warning(_final_report(leads), UNKNOWN_ACCOUNT, unknown_accounts)
    second(s.LEADS, leads, leads_report)

    lead_frame = leads.candidates([s.LEAD_ID, s.CREATED_AT]).drop(columns=_ROW)
    lead_ids = IdLookup(lead_frame[s.LEAD_ID])
    outcome_ids = outcomes.candidates([s.LEAD_ID])[s.LEAD_ID]
    missing = lead_frame[s.LEAD_ID][~is_in(lead_frame[s.LEAD_ID], outcome_ids)].reset_index(drop=True)
    del outcome_ids
    added = open_outcomes(outcomes.template, missing) if len(missing) else None
    outcomes_report = _final_report(outcomes, added_rows=len(missing))
    outcomes_report = replace(
        outcomes_report, collateral_rows=outcomes_report.reason_counts.get(LEAD_QUARANTINED, 0)
    )
    second(s.OUTCOMES, outcomes, _with_warning(outcomes_report, NO_OUTCOME, len(missing)), appended=added)

    lead_check = unknown_lead_check(lead_frame[s.LEAD_ID], _quarantined_lead_ids(leads), lead_ids)
    shutil.rmtree(leads.folder, ignore_errors=True)
    activities = first(s.ACTIVITIES, [lead_check])
    before_created = 0

    def count_early(batch: pd.DataFrame) -> None:
        nonlocal before_created
        before_created += activities_before_created(batch, lead_frame, lead_ids)

    report = _final_report(activities)
    report = replace(report, collateral_rows=report.reason_counts.get(LEAD_QUARANTINED, 0))
    second(s.ACTIVITIES, activities, report, each_batch=count_early)
    reports[s.ACTIVITIES] = _with_warning(report, BEFORE_CREATED, before_created)

    spills = {s.ACCOUNTS: accounts, s.LEADS: leads, s.OUTCOMES: outcomes, s.ACTIVITIES: activities}
    return StreamedIngest(
        reports={table: reports[table] for table in s.CRM_TABLES},
        output_rows=rows,
        columns=columns,
        respelt={table: _respelt_record(spill.respelt) for table, spill in spills.items()},
    )
