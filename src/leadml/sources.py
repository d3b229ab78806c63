"""Reading sources (CSV, Parquet, SQL through SQLAlchemy) and writing outputs atomically.

A source spec is a mapping, usually one entry of ``conf/data/*.yaml`` ``tables``:

* ``format``: csv | parquet | sql (inferred from ``path``'s suffix or ``url`` when absent)
* ``path``: CSV or Parquet file (or Parquet dataset folder)
* ``url``, and ``table`` (optionally ``schema``) or ``query``: a SQLAlchemy source. ``table``
  and ``schema`` must be plain SQL names (letters, digits, underscores; see :func:`check_sql_name`)
  and are quoted by SQLAlchemy, case kept as written; a ``query`` is the user's own SQL and runs
  as written with the URL's credentials. A bare ``postgresql://`` URL uses psycopg 3.
* ``columns``: ``{canonical_name: source_name}``; unmapped columns keep their names
* ``sep``, ``encoding``: CSV options (default ``,`` and utf-8)

CSV is read as text only, so no value is coerced before its contract sees it; only
the empty string becomes null here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from leadml.errors import ContractError, LeadmlError, SourceMissingError

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "parquet", "sql")
SPEC_KEYS: tuple[str, ...] = (
    "format",
    "path",
    "url",
    "table",
    "schema",
    "query",
    "columns",
    "sep",
    "encoding",
)
_CHUNK_BYTES = 1 << 20
_SQL_CHUNK_ROWS = 100_000
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SQLALCHEMY_LINK = re.compile(r"\(Background on this error at: [^)]*\)")
# pyarrow's "Expected 14 columns, got 15: <the record's text>"
_CSV_RECORD = re.compile(r"(Expected \d+ columns, got \d+): .*")
# a table, schema or column name taken from config: at most 63 characters, PostgreSQL's limit
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


# --------------------------------------------------------------------------- specs
def _format(spec: Mapping[str, Any]) -> str:
    if spec.get("format"):
        return str(spec["format"]).lower()
    if spec.get("url"):
        return "sql"
    suffix = Path(str(spec.get("path", ""))).suffix.lower().lstrip(".")
    return {"csv": "csv", "txt": "csv", "parquet": "parquet", "pq": "parquet"}.get(suffix, suffix)


def check_sql_name(name: Any, key: str) -> str:
    """A table, schema or column name from config, or a LeadmlError naming ``key`` and the name.

    Only plain names pass: a letter or underscore, then letters, digits or underscores, at most
    63 characters. SQLAlchemy then quotes them where needed (mixed case, reserved words), so
    they are used exactly as written; anything else (``leads; DROP TABLE outcomes; --``,
    ``x" OR 1=1 --``, spaces, dots) is refused rather than quoted into an odd but valid name.
    """
    if not isinstance(name, str) or not _SQL_NAME.fullmatch(name):
        raise LeadmlError(
            f"{key}: {name!r} is not a plain SQL name (a letter or underscore, then letters, digits "
            "or underscores, at most 63 characters)"
        )
    return name


def checked_spec(spec: Mapping[str, Any], where: str = "source") -> dict[str, Any]:
    """The spec as a plain dict with ``format`` filled in; unknown keys or formats raise LeadmlError.

    ``where`` names the spec in messages (``data.tables.leads``).
    """
    values = dict(spec)
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise LeadmlError(
            f"{where}: unknown source key(s) {', '.join(unknown)}; known: {', '.join(SPEC_KEYS)}"
        )
    values["format"] = _format(values)
    if values["format"] not in FORMATS:
        raise LeadmlError(f"source format {values['format']!r} is not one of {', '.join(FORMATS)}")
    if values["format"] == "sql":
        if not values.get("url"):
            raise LeadmlError("a sql source needs 'url' (a SQLAlchemy URL)")
        if bool(values.get("table")) == bool(values.get("query")):
            raise LeadmlError(
                f"a sql source needs exactly one of 'table' or 'query' ({mask_url(values['url'])})"
            )
        for key in ("table", "schema"):
            if values.get(key) is not None:
                check_sql_name(values[key], f"{where}.{key}")
    elif not values.get("path"):
        raise LeadmlError(f"a {values['format']} source needs 'path'")
    return values


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def masked_urls(value: Any) -> Any:
    """A config tree with every ``url`` value's password masked: what may be logged (MLflow params)."""
    if isinstance(value, Mapping):
        return {
            key: mask_url(item) if key == "url" and isinstance(item, str) else masked_urls(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked_urls(item) for item in value]
    return value


def engine_url(url: str) -> str:
    """The URL SQLAlchemy opens: a bare ``postgresql://`` gets psycopg 3, the driver leadml installs
    (SQLAlchemy 2.1 picks it too; 2.0 would pick psycopg2)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _scrubbed(message: str, url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        password = None
    text = _SQLALCHEMY_LINK.sub("", message.replace(url, mask_url(url)))
    if password:
        text = text.replace(str(password), "***")
    return " ".join(text.split())


def _short_query(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= 80 else text[:77] + "..."


def describe_source(spec: Mapping[str, Any]) -> str:
    """A one-line description for messages: "csv file data/raw/leads.csv", "sql table leads in sqlite:///x.db"."""
    values = checked_spec(spec)
    if values["format"] != "sql":
        return f"{values['format']} file {values['path']}"
    if values.get("table"):
        table = f"{values['schema']}.{values['table']}" if values.get("schema") else values["table"]
        return f"sql table {table} in {mask_url(values['url'])}"
    return f"sql query '{_short_query(values['query'])}' in {mask_url(values['url'])}"


# --------------------------------------------------------------------------- reading
def _existing_path(values: Mapping[str, Any]) -> Path:
    path = Path(values["path"])
    if not path.exists():
        raise SourceMissingError(f"{values['format']} file not found: {path}")
    return path


def _read_csv(values: Mapping[str, Any]) -> pd.DataFrame:
    path = _existing_path(values)
    encoding = values.get("encoding") or "utf-8"
    try:
        # The pyarrow engine is ~10x faster than the C engine here, and it rejects a row with
        # too many fields instead of silently shifting it into an index.
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            sep=values.get("sep") or ",",
            encoding=encoding,
            engine="pyarrow",
        )
    except pd.errors.EmptyDataError:  # no header, so none of the columns its contract requires
        raise ContractError(f"csv file {path} is empty (no header row)") from None
    except (pd.errors.ParserError, ValueError) as error:
        # pyarrow quotes the broken record, whose values may be personal data: say where it is instead
        detail, ragged = _CSV_RECORD.subn(r"\1", " ".join(str(error).split()))
        line = _first_ragged_line(path, values.get("sep") or ",", encoding) if ragged else None
        where = f" (the record starting on line {line})" if line else ""
        hint = f"; it is not {encoding}: set 'encoding' in the source" if "UTF8" in detail else ""
        raise LeadmlError(f"csv file {path} cannot be parsed: {detail}{where}{hint}") from None


def _first_ragged_line(path: Path, sep: str, encoding: str) -> int | None:
    """The line where the first record with another number of fields than the header starts, if found."""
    import csv

    if len(sep) != 1:
        return None
    try:
        with path.open(newline="", encoding=encoding, errors="replace") as handle:
            reader = csv.reader(handle, delimiter=sep)
            header = next(reader, None)
            start = reader.line_num + 1
            for record in reader:
                if header is not None and record and len(record) != len(header):
                    return start
                start = reader.line_num + 1
    except (csv.Error, OSError):  # e.g. a field beyond the csv module's size limit
        return None
    return None


def _read_parquet(values: Mapping[str, Any]) -> pd.DataFrame:
    import pyarrow

    path = _existing_path(values)
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        raise LeadmlError(f"parquet file {path} cannot be read: {' '.join(str(error).split())}") from None


def _sqlite_file(url: Any) -> Path | None:
    """The database file of a file-based SQLite URL (None for other URLs and in-memory databases)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


@contextlib.contextmanager
def _connection(url: str, description: str) -> Iterator[Any]:
    """A SQLAlchemy connection; every failure becomes a LeadmlError naming the masked URL."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise LeadmlError(f"invalid database URL {mask_url(url)}") from None
    # SQLite would silently create a missing file: a typo in the path must fail instead.
    sqlite_file = _sqlite_file(parsed)
    if sqlite_file is not None and not sqlite_file.exists():
        raise SourceMissingError(f"database file not found: {sqlite_file} ({mask_url(url)})")
    try:
        engine = sa.create_engine(engine_url(url))
    except (SQLAlchemyError, ImportError) as error:
        raise LeadmlError(f"cannot open database {mask_url(url)}: {_scrubbed(str(error), url)}") from None
    try:
        with engine.connect() as connection:
            yield connection
    except (SQLAlchemyError, pd.errors.DatabaseError) as error:
        raise LeadmlError(f"cannot read {description}: {_scrubbed(str(error), url)}") from None
    finally:
        engine.dispose()


def _sql_frames(values: Mapping[str, Any], chunksize: int | None = None) -> Iterator[pd.DataFrame]:
    import sqlalchemy as sa

    url = values["url"]
    with _connection(url, describe_source(values)) as connection:
        if values.get("table"):
            table, schema = values["table"], values.get("schema")
            if not sa.inspect(connection).has_table(table, schema=schema):
                where = f"{schema}.{table}" if schema else table
                raise SourceMissingError(f"table {where} not found in {mask_url(url)}")
            result = pd.read_sql_table(table, connection, schema=schema, chunksize=chunksize)
        else:
            result = pd.read_sql_query(sa.text(values["query"]), connection, chunksize=chunksize)
        if isinstance(result, pd.DataFrame):
            yield result
        else:
            yield from result


def _read_sql(values: Mapping[str, Any]) -> pd.DataFrame:
    frames = list(_sql_frames(values))
    return frames[0]


def rename_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None, source: str) -> pd.DataFrame:
    """Rename source columns to canonical names with ``{canonical_name: source_name}``."""
    if not columns:
        return frame
    renames = {str(source_name): str(canonical) for canonical, source_name in columns.items()}
    absent = [
        f"{source_name} (for {canonical})"
        for source_name, canonical in renames.items()
        if source_name not in frame.columns
    ]
    if absent:
        raise ContractError(
            f"{source}: the columns mapping names source column(s) {', '.join(absent)} that are "
            f"not there; present columns: {', '.join(map(str, frame.columns))}"
        )
    renamed = [renames.get(str(column), str(column)) for column in frame.columns]
    repeated = sorted({name for name in renamed if renamed.count(name) > 1})
    if repeated:
        raise ContractError(
            f"{source}: after the columns mapping, column(s) {', '.join(repeated)} appear twice"
        )
    return frame.rename(columns=renames)


_READERS = {"csv": _read_csv, "parquet": _read_parquet, "sql": _read_sql}


def read_source(spec: Mapping[str, Any]) -> pd.DataFrame:
    """Read one source and rename its columns to the canonical names (see the module docstring)."""
    values = checked_spec(spec)
    frame = _READERS[values["format"]](values)
    logger.info("read %d rows from %s", len(frame), describe_source(values))
    return rename_columns(frame, values.get("columns"), describe_source(values))


# --------------------------------------------------------------------------- fingerprints
def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)


def fingerprint_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    _hash_file(Path(path), digest)
    return digest.hexdigest()


def fingerprint_source(spec: Mapping[str, Any]) -> str:
    """sha256 of the source: the file bytes (streamed; a folder: every file by relative path),
    or for SQL the result as CSV text in the order the database returns it."""
    values = checked_spec(spec)
    digest = hashlib.sha256()
    if values["format"] == "sql":
        for number, chunk in enumerate(_sql_frames(values, chunksize=_SQL_CHUNK_ROWS)):
            digest.update(chunk.to_csv(index=False, header=number == 0, lineterminator="\n").encode())
        return digest.hexdigest()
    path = _existing_path(values)
    if path.is_dir():
        for file in sorted(item for item in path.rglob("*") if item.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            _hash_file(file, digest)
    else:
        _hash_file(path, digest)
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` that replaces it only once fully written."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise LeadmlError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_parquet_atomic(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` (without its index) to ``path`` atomically; returns the path."""
    with _atomic_file(path) as handle:
        frame.to_parquet(handle, index=False)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike[str], index: bool = True) -> Path:
    """Write ``frame`` as UTF-8 CSV to ``path`` atomically; returns the path."""
    with _atomic_file(path) as handle:
        handle.write(frame.to_csv(index=index).encode("utf-8"))
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    with _atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)
