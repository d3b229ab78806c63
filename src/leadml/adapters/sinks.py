"""Where scored leads go: date partitions of Parquet, replaced atomically, and an optional SQL table.

A partition ``as_of=YYYY-MM-DD/`` is written to a hidden temporary folder beside it and
renamed into place, so a run that dies leaves the previous partition untouched and a
re-run of the same date replaces it whole (never appends). The SQL sink (SQLite or PostgreSQL)
upserts by (lead id, as-of) in one transaction: ``INSERT ... ON CONFLICT (lead_id, as_of) DO
UPDATE``. Its table and column names must be plain SQL names and go through a SQLAlchemy
``Table`` (quoted where needed); every value is a bound parameter. A table created by an earlier
run gains the columns it lacks (an experiment's ``arm`` and side columns) as nullable columns; a
column whose type cannot hold the scores' stops the run before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leadml.adapters.sources import check_sql_name, engine_url, mask_url, scrubbed
from leadml.data import schema as s
from leadml.data.calendar import date_setting
from leadml.errors import LeadmlError, OutputError, ScoreTableError, os_reason
from leadml.modelling.drift import column_kind
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.modelling.scorer import PROBABILITY

# imported inside functions: sqlalchemy (only when a SQL sink is configured) and fcntl (POSIX only)

logger = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
PARTITION_PREFIX = "as_of="


class RunInProgressError(LeadmlError):
    """Another run is scoring the same date into the same folder."""

    exit_code = 7


@contextlib.contextmanager
def date_lock(base: Path, as_of: pd.Timestamp) -> Iterator[None]:
    """Hold an exclusive lock on one date's partition for the whole run, or refuse at once.

    Two runs of one date would otherwise interleave their trend reads, Parquet swap and SQL
    upserts. The lock is an OS file lock (``flock``), released when the process ends, even
    by SIGKILL, so a dead run never blocks the next one.
    """
    import fcntl

    path = base / f".lock-{PARTITION_PREFIX}{as_of:%Y-%m-%d}"
    try:
        base.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 (closed by the with block below)
    except OSError as error:  # read-only, not a folder, disk full: a message, not a traceback
        raise cannot_write_scores(base, error) from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInProgressError(
                f"another run is scoring {as_of:%Y-%m-%d} into {base} ({holder}); try again when it ends"
            ) from None
        try:
            _sign(handle)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sign(handle: IO[str]) -> None:
    """Write the holder into the lock file; a full disk fails here first (the lock file is the
    run's first write), so the message names the folder rather than a file nobody asked for.

    Written past Python's buffer: text left in it would fail again, uncaught, when the file closes.
    """
    holder = f"pid {os.getpid()} since {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M:%S} UTC"
    try:
        os.ftruncate(handle.fileno(), 0)
        os.write(handle.fileno(), holder.encode())  # appended (mode a+): at 0 once truncated
    except OSError as error:
        raise cannot_write_scores(Path(handle.name).parent, error) from None


def cannot_write_scores(folder: Path, error: OSError) -> OutputError:
    """One line for a scores folder that cannot be written: read-only, not a folder, disk full."""
    return OutputError(f"cannot write scores to {folder} (score.output_dir): {os_reason(error)}")


def partition_dir(base: Path, as_of: pd.Timestamp) -> Path:
    return base / f"{PARTITION_PREFIX}{as_of:%Y-%m-%d}"


@contextlib.contextmanager
def staged_partition(base: Path, as_of: pd.Timestamp) -> Iterator[Path]:
    """A hidden staging folder beside the partition of ``as_of``, swapped into place on success.

    The caller creates the folder and writes its part files; when the block ends without
    an error the old partition is retired, the staging folder renamed into place and the
    retired one removed. On an error the staging folder is removed and the old partition
    stays as it was. Interrupted runs' leftovers are cleared first (:func:`recover_partition`).
    """
    final = partition_dir(base, as_of)
    try:
        base.mkdir(parents=True, exist_ok=True)
        recover_partition(final)
    except OSError as error:
        raise cannot_write_scores(final, error) from None
    token = uuid.uuid4().hex[:8]
    staging = base / f".{final.name}.tmp-{token}"
    try:
        yield staging
        for part in staging.glob("*.parquet"):
            _fsync(part)
        retired = base / f".{final.name}.old-{token}"
        if final.exists():
            os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise cannot_write_scores(final, error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_partition(frame: pd.DataFrame, base: Path, as_of: pd.Timestamp) -> Path:
    """Replace the partition of ``as_of`` under ``base`` with ``frame``; returns its folder."""
    with staged_partition(base, as_of) as staging:
        staging.mkdir()
        frame.to_parquet(staging / PART_FILE, index=False)
    return partition_dir(base, as_of)


def write_partition_tables(
    tables: Iterable[pa.Table], schema: pa.Schema, base: Path, as_of: pd.Timestamp
) -> Path:
    """Replace the partition of ``as_of`` with ``tables`` streamed into one part file (bounded memory)."""
    with staged_partition(base, as_of) as staging:
        staging.mkdir()
        with pq.ParquetWriter(staging / PART_FILE, schema) as writer:
            for table in tables:
                writer.write_table(table)
    return partition_dir(base, as_of)


def recover_partition(final: Path) -> None:
    """Undo a run that died between its two renames: bring the retired partition back.

    Staging folders of dead runs are removed; a retired copy is restored only when the
    partition itself is missing (otherwise the new one landed and the old one is litter).
    """
    for leftover in sorted(final.parent.glob(f".{final.name}.*")):
        if ".old-" in leftover.name and not final.exists():
            os.replace(leftover, final)
            logger.warning("restored %s from an interrupted run", final)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def leftovers(base: Path) -> list[Path]:
    """Staging or retired partition folders of interrupted runs under ``base`` (not the lock files)."""
    return sorted(p for p in base.glob(f".{PARTITION_PREFIX}*") if ".tmp-" in p.name or ".old-" in p.name)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_partition(base: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every part file of the partition (the Spark engine writes several with score.spark.output_files)."""
    return pd.read_parquet(partition_dir(base, as_of))


def written_partitions(base: Path) -> dict[pd.Timestamp, Path]:
    """Every partition under ``base`` with at least one part file (either engine's), oldest first."""
    found: dict[pd.Timestamp, Path] = {}
    for folder in base.glob(f"{PARTITION_PREFIX}*") if base.exists() else ():
        try:
            day = pd.Timestamp(folder.name.removeprefix(PARTITION_PREFIX), tz="UTC")
        except ValueError:
            continue
        if folder.is_dir() and any(folder.glob("part-*.parquet")):
            found[day] = folder
    return dict(sorted(found.items()))


def previous_partition_dir(base: Path, as_of: pd.Timestamp) -> Path | None:
    """The latest partition strictly before ``as_of``."""
    earlier = [folder for day, folder in written_partitions(base).items() if day < as_of.normalize()]
    return earlier[-1] if earlier else None


def find_partition(base: Path, as_of: str | None, key: str = "as_of") -> Path | None:
    """The partition of ``as_of`` (YYYY-MM-DD), or the latest for ``latest``/None; None if there is none.

    ``key``: the config key ``as_of`` came from, named when it is not a date."""
    if as_of in (None, "", "latest"):
        found = written_partitions(base)
        return list(found.values())[-1] if found else None
    day = date_setting(as_of, key, "latest or YYYY-MM-DD")
    found = written_partitions(base)
    if day not in found:
        latest = ", ".join(f"{d:%Y-%m-%d}" for d in list(found)[-5:]) or "none"
        raise LeadmlError(f"no scored run for {as_of} in {base} (latest runs: {latest})")
    return found[day]


def check_identifier(name: str, what: str) -> str:
    """A SQL table or column name (``what``: its config key), or a LeadmlError naming both.

    The rule of :func:`leadml.adapters.sources.check_sql_name`: letters, digits and underscores.
    """
    return check_sql_name(name, what)


def upsert_partition(url: str, table: str, folder: Path, batch_rows: int = 50_000) -> int:
    """:func:`upsert_frames` of a written partition, read in batches (bounded memory)."""

    def frames() -> Iterator[pd.DataFrame]:
        for part in sorted(folder.glob("part-*.parquet")):
            handle = pq.ParquetFile(part)
            # the groups' contributions stay in the partition: what the next run reads to say why a
            # lead moved; the table holds what a CRM shows (and a group's name need not be a SQL name)
            columns = [n for n in handle.schema_arrow.names if not n.startswith(GROUP_PREFIX)]
            for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pandas()

    return upsert_frames(url, table, frames())


def upsert_frames(
    url: str,
    table: str,
    frames: Iterable[pd.DataFrame],
    keys: Sequence[str] = (s.LEAD_ID, s.AS_OF),
    what: str = "score.sql.table",
) -> int:
    """Insert or update every frame's rows keyed by ``keys`` (lead id and as-of), all in one transaction.

    The table is created from the first frame's columns when it does not exist. Table and
    column names must be plain identifiers; values are bound parameters. ``what``: the table's
    config key, named when its name is not a plain identifier.
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    check_identifier(table, what)
    keys = tuple(keys)
    written = 0
    engine = None
    try:
        engine = sa.create_engine(engine_url(url))
        with engine.begin() as connection:
            statement = None
            for frame in frames:
                if statement is None:
                    for column in frame.columns:
                        check_identifier(column, "score column")
                    metadata = sa.MetaData()
                    columns = [
                        sa.Column(name, _sql_type(frame[name]), primary_key=name in keys)
                        for name in frame.columns
                    ]
                    target = sa.Table(table, metadata, *columns)
                    metadata.create_all(connection, checkfirst=True)
                    add_missing_columns(connection, target, mask_url(url), keys)
                    statement = _upsert_statement(engine.dialect.name, target, list(frame.columns), keys)
                records = _records(frame)
                for start in range(0, len(records), 5_000):
                    connection.execute(statement, records[start : start + 5_000])
                written += len(records)
    except (SQLAlchemyError, ImportError) as error:
        # the driver's own message: SQLAlchemy's would repeat the statement and thousands of values
        detail = getattr(error, "orig", None) or error
        if isinstance(error, ArgumentError):
            detail = "invalid database URL"
        raise LeadmlError(
            f"cannot write scores to table {table} in {mask_url(url)}: {scrubbed(str(detail), url)}"
        ) from None
    finally:
        if engine is not None:
            engine.dispose()
    return written


def add_missing_columns(
    connection: Any, target: Any, where: str, keys: Sequence[str] = (s.LEAD_ID, s.AS_OF)
) -> list[str]:
    """Give the existing table ``target`` describes (its columns: the scores') every column it lacks,
    nullable, in the type a new table would have; returns their names.

    A table created before an experiment has no ``arm``, ``experiment`` or ``arm_<name>_*`` column.
    Every column is checked before any is added: a column of the scores' whose type in the table
    cannot hold their values (text or probabilities into an integer) is one :class:`ScoreTableError`
    line naming the table and column, and the table is left as it was. ``where``: the database, as
    messages name it (its password masked).
    """
    import sqlalchemy as sa

    dialect = connection.dialect
    present = {c["name"]: c["type"] for c in sa.inspect(connection).get_columns(target.name)}
    for column in target.columns:
        _check_column(target.name, column, present, where, dialect, keys)
    missing = [column for column in target.columns if column.name not in present]
    quoted = dialect.identifier_preparer
    for column in missing:
        connection.execute(
            sa.text(
                f"ALTER TABLE {quoted.format_table(target)} ADD COLUMN {quoted.quote(column.name)} "
                f"{column.type.compile(dialect=dialect)}"
            )
        )
    if missing:
        logger.info(
            "score table %s in %s: added nullable column(s) %s", target.name, where,
            ", ".join(f"{c.name} {c.type.compile(dialect=dialect)}" for c in missing),
        )  # fmt: skip
    return [column.name for column in missing]


def _check_column(
    table: str, column: Any, present: Mapping[str, Any], where: str, dialect: Any, keys: Sequence[str]
) -> None:
    """A column of the scores against the table's column of that name (if any); a key must be there."""
    if column.name not in present:
        if column.name in keys:
            what = "score.sql.table" if s.LEAD_ID in keys else "score.sql.account_table"
            raise ScoreTableError(
                f"score table {table} in {where} has no column {column.name}: not a leadml score table "
                f"(keyed by {', '.join(keys)}); name another table in {what} (nothing was written)"
            )
        return
    existing = present[column.name]
    if not _holds(existing, column.type):
        raise ScoreTableError(
            f"score table {table} in {where}: column {column.name} is {existing.compile(dialect=dialect)}, "
            f"which cannot hold the scores' {column.type.compile(dialect=dialect)}; change or drop that "
            f"column, or name another table in score.sql.table (nothing was written)"
        )


def _holds(existing: Any, wanted: Any) -> bool:
    """Whether a table column of type ``existing`` holds the values of a new column of type ``wanted``.

    A column SQLite declared without a type (NullType) holds anything.
    """
    import sqlalchemy as sa

    if isinstance(existing, sa.types.NullType):
        return True
    families = (  # the type a new table would have -> the types that hold its values
        (sa.Boolean, (sa.Boolean, sa.Integer)),
        (sa.Integer, (sa.Integer, sa.Numeric)),
        (sa.Float, (sa.Float, sa.Numeric)),
        (sa.DateTime, (sa.DateTime,)),
        (sa.String, (sa.String,)),
    )
    holders = next((types for kind, types in families if isinstance(wanted, kind)), (type(wanted),))
    return isinstance(existing, holders)


def _upsert_statement(dialect: str, target, columns: list[str], keys: Sequence[str]):  # type: ignore[no-untyped-def]
    keys = list(keys)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise LeadmlError(f"the score sink supports SQLite and PostgreSQL, not {dialect}")
    statement = insert(target)
    updates = {c: statement.excluded[c] for c in columns if c not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=updates)


def _sql_type(column: pd.Series):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    if column.name == s.AS_OF:
        return sa.String(10)
    kinds = {
        "bool": sa.Boolean(),
        "int": sa.BigInteger(),
        "float": sa.Float(),  # double precision in PostgreSQL, REAL (8 bytes) in SQLite
        "timestamp": sa.DateTime(timezone=True),  # timestamptz in PostgreSQL; SQLite keeps UTC text
    }
    return kinds.get(column_kind(column) or "text", sa.Text())


def _records(frame: pd.DataFrame) -> list[dict]:
    """Plain Python values for the driver: None for every missing value, timestamps in UTC."""
    out = frame.copy()
    if s.AS_OF in out:
        out[s.AS_OF] = pd.to_datetime(out[s.AS_OF], utc=True).dt.strftime("%Y-%m-%d")
    for name in out.columns:
        if isinstance(out[name].dtype, pd.DatetimeTZDtype) and name != s.AS_OF:
            out[name] = out[name].dt.tz_convert("UTC")
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")


def scored_partition(scored_dir: Path, as_of: str | None, key: str = "report.as_of") -> Path:
    """The partition of ``as_of`` (YYYY-MM-DD), or the latest one for ``latest``/None."""
    partition = find_partition(scored_dir, as_of, key)
    if partition is None:
        raise LeadmlError(f"no scored run in {scored_dir} (run leadml-score, or make score, first)")
    return partition


def read_scored_file(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One part file of a scored partition; a truncated or damaged one is a LeadmlError naming it."""
    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise LeadmlError(_damaged(path, error)) from None


def scored_file_columns(path: Path) -> list[str]:
    """The column names of one part file (its footer only), or a LeadmlError naming a damaged file."""
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise LeadmlError(_damaged(path, error)) from None


def _damaged(path: Path, error: BaseException) -> str:
    detail = " ".join(str(error).split())[:200]
    return f"{path} cannot be read ({detail}): damaged or cut short; score that date again (leadml-score)"


def read_scored(partition: Path) -> pd.DataFrame:
    files = sorted(partition.glob("*.parquet"))
    if not files:
        raise LeadmlError(f"{partition} holds no Parquet file")
    frame = pd.concat([read_scored_file(f) for f in files], ignore_index=True)
    for column in (s.LEAD_ID, PROBABILITY, "tier"):
        if column not in frame.columns:
            raise LeadmlError(f"{partition}: column {column!r} missing: not a leadml scored run")
    return frame


def read_run_record(partition: Path, record_name: str) -> dict[str, Any]:
    path = partition / record_name
    if not path.exists():
        logger.warning("%s has no run record: model health shows the rows only", partition)
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LeadmlError(_damaged(path, error)) from None
    if not isinstance(record, dict):
        raise LeadmlError(f"{path} is not a scoring run record (a JSON object): score that date again")
    return record


def earlier_predictions(scored_dir: Path, as_of: pd.Timestamp, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Every prediction of the runs before ``as_of``: lead id, probability, run date.

    ``columns``: more columns of the scored partitions to read (``tier``); a partition written
    before a column existed gives it as missing (NaN), so older runs still count. A run under an
    experiment adds each lead's ``arm`` and ``own_arm_probability``: the probability its arm's
    model gave it (a holdout lead's too, whose visible probability is blank); empty for the runs
    without one.
    """
    wanted = list(dict.fromkeys([s.LEAD_ID, PROBABILITY, *columns]))
    frames = []
    for run_date, partition in written_partitions(scored_dir).items():
        if run_date >= as_of:
            continue
        rows = [_file_predictions(path, wanted) for path in sorted(partition.glob("*.parquet"))]
        frames.append(pd.concat(rows, ignore_index=True).assign(run_date=run_date))
    if not frames:
        return pd.DataFrame(columns=[*wanted, "run_date"])
    return pd.concat(frames, ignore_index=True)


def _file_predictions(path: Path, wanted: list[str]) -> pd.DataFrame:
    """The ``wanted`` columns of one part file (missing ones empty), with each lead's arm and its
    arm's own probability when the file was scored under an experiment."""
    names = scored_file_columns(path)
    present = [c for c in wanted if c in names]
    if s.ARM not in names:
        return read_scored_file(path, columns=present).reindex(columns=wanted)
    sides = [name for name in names if name.startswith("arm_") and name.endswith(f"_{PROBABILITY}")]
    rows = read_scored_file(path, columns=list(dict.fromkeys([*present, s.ARM, *sides])))
    own = pd.Series(np.nan, index=rows.index)
    for arm in rows[s.ARM].dropna().unique():
        mine = rows[s.ARM] == arm
        own[mine] = rows.loc[mine, s.arm_column(str(arm), PROBABILITY)]
    return rows.reindex(columns=[*wanted, s.ARM]).assign(**{s.OWN_ARM_PROBABILITY: own.to_numpy()})
