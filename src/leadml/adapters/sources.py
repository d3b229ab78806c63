"""Reading sources (CSV, Parquet, Excel, SQL through SQLAlchemy) and writing outputs atomically.

A source spec is a mapping, usually one entry of ``conf/data/*.yaml`` ``tables``:

* ``format``: csv | parquet | xlsx | sql (inferred from ``path``'s suffix or ``url`` when absent)
* ``path``: CSV, Parquet (or Parquet dataset folder) or Excel (.xlsx, .xlsm) file
* ``url``, and ``table`` (optionally ``schema``) or ``query``: a SQLAlchemy source. ``table``
  and ``schema`` must be plain SQL names (letters, digits, underscores; see :func:`check_sql_name`)
  and are quoted by SQLAlchemy, case kept as written; a ``query`` is the user's own SQL and runs
  as written with the URL's credentials. A bare ``postgresql://`` URL uses psycopg 3.
* ``columns``: ``{canonical_name: source_name}``; unmapped columns keep their names
* ``sep``, ``encoding``: CSV options (default ``,`` and utf-8)
* ``sheet``: the Excel sheet, by name or 0-based index (default the first)

CSV is read as text only, so no value is coerced before its contract sees it; only
the empty string becomes null here. Excel cells keep the values openpyxl gives (numbers,
datetimes, text), which the contracts parse like their text; only a column that mixes kinds
of values is turned into text (see :func:`_mixed_as_text`).

A file that is not what its format says (an Excel workbook or a Parquet file read as CSV, a
CSV separated by another character than ``sep``, text in another encoding) stops with one line
that names the setting to change.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import uuid
import warnings
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv as arrow_csv
import pyarrow.parquet

from leadml.data.profiles import SEPARATORS
from leadml.errors import ContractError, LeadmlError, SourceMissingError, os_reason
from leadml.machine import available_cpus

# sqlalchemy is imported inside functions: only a SQL source (or a URL to mask) needs it

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "parquet", "xlsx", "sql")
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
    "sheet",
)
_CHUNK_BYTES = 1 << 20
_SQL_CHUNK_ROWS = 100_000
_CSV_BLOCK = 16 << 20  # bytes pyarrow parses at a time
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SQLALCHEMY_LINK = re.compile(r"\(Background on this error at: [^)]*\)")
# pyarrow's "Expected 14 columns, got 15: <the record's text>"
_CSV_RECORD = re.compile(r"(Expected \d+ columns, got \d+): .*")
# what a CSV header holding one column may really be separated by (the most frequent one wins)
_SEPARATORS = SEPARATORS
# first bytes of files that are not text: a zip archive (an .xlsx is one), an OLE compound
# file (an old .xls, or an encrypted .xlsx), Parquet; and the byte order marks of UTF-16
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PARQUET_MAGIC = b"PAR1"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# a table, schema or column name taken from config: at most 63 characters, PostgreSQL's limit
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


# --------------------------------------------------------------------------- specs
def source_format(spec: Mapping[str, Any]) -> str:
    if spec.get("format"):
        return str(spec["format"]).lower()
    if spec.get("url"):
        return "sql"
    suffix = Path(str(spec.get("path", ""))).suffix.lower().lstrip(".")
    return {
        "csv": "csv",
        "txt": "csv",
        "parquet": "parquet",
        "pq": "parquet",
        "xlsx": "xlsx",
        "xlsm": "xlsx",
    }.get(suffix, suffix)


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
    values["format"] = source_format(values)
    if values["format"] == "xls":
        raise LeadmlError(
            f"{where}: .xls (Excel 97-2003) is not supported; save the workbook as .xlsx or CSV"
        )
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
    if values.get("sheet") is not None:
        _check_sheet_key(values, where)
    if values.get("encoding"):
        _check_encoding(values, where)
    return values


def _check_encoding(values: Mapping[str, Any], where: str) -> None:
    """An ``encoding`` Python has no codec for, refused before any reader (or a helper that opens
    the file to say where it broke) meets it as a LookupError."""
    encoding = str(values["encoding"])
    try:
        codecs.lookup(encoding)
    except LookupError:
        named = "" if where == "source" else f"{where}: "
        raise LeadmlError(
            f"{named}{values['format']} file {values.get('path')}: unknown encoding {encoding!r}; set "
            "encoding: to a Python codec name such as utf-8, latin-1, cp1252 or utf-16"
        ) from None


def _check_sheet_key(values: Mapping[str, Any], where: str) -> None:
    sheet = values["sheet"]
    if values["format"] != "xlsx":
        raise LeadmlError(f"{where}.sheet: a {values['format']} source has no sheets (sheet is for xlsx)")
    if isinstance(sheet, bool) or not isinstance(sheet, str | int):
        raise LeadmlError(f"{where}.sheet: {sheet!r} is neither a sheet name nor a 0-based sheet number")


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


def scrubbed(message: str, url: str) -> str:
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
        sheet = f" (sheet {values['sheet']!r})" if values.get("sheet") is not None else ""
        return f"{values['format']} file {values['path']}{sheet}"
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


def binary_kind(path: Path) -> str | None:
    """What a file that is not text is, from its first bytes: xlsx, zip, xls or parquet (None: maybe text).

    An OLE compound file is an old .xls workbook, or an .xlsx saved with a password.
    """
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return "xlsx" if _is_workbook(path) else "zip"
    if head.startswith(_OLE_MAGIC):
        return "xls"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    return None


def _is_workbook(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.startswith("xl/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _refuse_binary(path: Path) -> None:
    """A workbook, an archive or a Parquet file given as CSV: say which format to set instead."""
    kind = binary_kind(path)
    if kind is None:
        return
    raise LeadmlError(
        {
            "xlsx": f"{path} is an Excel workbook, not a CSV file: set format: xlsx in the source "
            "(and sheet: if not the first)",
            "xls": f"{path} is an old Excel workbook (.xls), not a CSV file: .xls is not supported; "
            "save it as .xlsx or CSV",
            "parquet": f"{path} is a Parquet file, not a CSV file: set format: parquet in the source",
            "zip": f"{path} is a zip archive, not a CSV file: extract the CSV file and set path to it",
        }[kind]
    )


def _read_csv(values: Mapping[str, Any]) -> pd.DataFrame:
    path = _existing_path(values)
    _refuse_binary(path)
    sep = values.get("sep") or ","
    encoding = values.get("encoding") or "utf-8"
    _refuse_wide_text(path, encoding)
    _check_unique_header(path, _header_fields(path, sep, encoding))
    try:
        # The pyarrow engine is ~10x faster than the C engine here, and it rejects a row with
        # too many fields instead of silently shifting it into an index.
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            sep=sep,
            encoding=encoding,
            engine="pyarrow",
        )
    except pd.errors.EmptyDataError:  # no header, so none of the columns its contract requires
        raise ContractError(f"csv file {path} is empty (no header row)") from None
    except (pd.errors.ParserError, ValueError) as error:
        # pyarrow quotes the broken record, whose values may be personal data: say where it is instead
        detail, ragged = _CSV_RECORD.subn(r"\1", " ".join(str(error).split()))
        if "UTF8" in detail or isinstance(error, UnicodeDecodeError):
            raise LeadmlError(_not_encoded_as(path, encoding)) from None
        # a value holding the separator makes a wrongly separated file ragged before it is read
        _check_separator(path, _header_fields(path, sep, encoding), sep)
        line = _first_ragged_line(path, sep, encoding) if ragged else None
        where = f" (the record starting on line {line})" if line else ""
        raise LeadmlError(f"csv file {path} cannot be parsed: {detail}{where}") from None
    except OSError as error:  # e.g. a folder, or no permission to read
        raise LeadmlError(f"csv file {path} cannot be read: {error.strerror or error}") from None
    _check_separator(path, list(frame.columns), sep)
    return frame


def _check_separator(path: Path, header: Sequence[Any] | None, sep: str) -> None:
    """Raise when the header is one column holding another separator: the file is separated by that.

    Without this the contract would report every required column missing, naming as the one
    present column the whole header line.
    """
    if header is None or len(header) != 1:
        return
    text = str(header[0])
    counts = {other: text.count(other) for other in _SEPARATORS if other != sep}
    other = max(counts, key=lambda candidate: counts[candidate])
    if not counts[other]:
        return
    fields = text.split(other)
    shown = other.join(fields[:3])
    if len(shown) > 60:
        shown = shown[:60] + "..."
    elif len(fields) > 3:
        shown += "..."
    shown = shown.replace("\t", "\\t")
    raise LeadmlError(
        f'{path}: read 1 column with sep {sep!r} but the header looks separated by {other!r} ("{shown}"): '
        f"set sep: {json.dumps(other)} in the source"
    )


def _header_fields(path: Path, sep: str, encoding: str) -> list[str] | None:
    """The fields of the file's first record as ``sep`` splits them (None when it cannot be read)."""
    if len(sep) != 1:
        return None
    try:
        with path.open(newline="", encoding=encoding, errors="replace") as handle:
            return next(csv.reader(handle, delimiter=sep), None)
    except (csv.Error, OSError):
        return None


def _check_unique_header(path: Path, header: Sequence[str] | None) -> None:
    """Refuse a header naming one column twice: pandas would read the second as ``name.1``, which
    no contract or mapping names, and the file's values would go unchecked. Empty names (the
    trailing separators of a spreadsheet export) are left alone."""
    first: dict[str, int] = {}
    for position, name in enumerate(header or (), start=1):
        if name.strip() and name in first:
            raise LeadmlError(
                f"csv file {path}: the header names column {name!r} twice (columns {first[name]} and "
                f"{position}); rename or remove one of them"
            )
        first.setdefault(name, position)


# first bytes of UTF-32 and UTF-16 text: its byte order marks (UTF-32's first: they share FF FE)
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def wide_text(head: bytes) -> tuple[str, str] | None:
    """(codec to set, why) when ``head`` (a file's first bytes) is UTF-32 or UTF-16 text: a byte
    order mark, or mostly-ASCII text with NULs between its bytes (saved without a mark)."""
    for bom, codec in _WIDE_BOMS:
        if head.startswith(bom):
            return codec, f"it starts with a {codec.upper()} byte order mark"
    for width, codec in ((4, "utf-32"), (2, "utf-16")):
        sample = head[: len(head) // width * width]
        if len(sample) < 4 * width:
            continue
        nul = [sample[lane::width].count(0) / (len(sample) // width) for lane in range(width)]
        text = [lane for lane, share in enumerate(nul) if share < 0.5]
        if len(text) == 1 and all(share > 0.9 for lane, share in enumerate(nul) if lane != text[0]):
            order = "le" if text[0] == 0 else "be"
            return f"{codec}-{order}", f"NUL bytes between its characters: {codec.upper()} without a mark"
    return None


def _refuse_wide_text(path: Path, encoding: str) -> None:
    """UTF-16 or UTF-32 text read with a narrow encoding: say so before the parser meets its NUL
    bytes (it would report a ragged record, or split one line into many)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return
    with contextlib.suppress(OSError), path.open("rb") as handle:
        found = wide_text(handle.read(4096))
        if found is not None:
            codec, why = found
            raise LeadmlError(
                f"csv file {path} cannot be parsed: it looks like {codec[:6].upper()} text, not {encoding} "
                f"({why}); set encoding: {codec} in the source"
            )


def _not_encoded_as(path: Path, encoding: str) -> str:
    """The message for text that does not decode: where, and the encoding to try instead."""
    with path.open("rb") as handle:
        head = handle.read(2)
    if head in _UTF16_BOMS and "16" not in encoding:
        where, suggestion = "it starts with a UTF-16 byte order mark", "utf-16"
    else:
        found = first_undecodable_byte(path, encoding)
        where = f"byte 0x{found[1]:02x} on line {found[0]}" if found else "an undecodable byte"
        suggestion = "latin-1"
    return (
        f"csv file {path} cannot be parsed: it is not {encoding} text ({where}); "
        f"set encoding: {suggestion} in the source (or the encoding it was saved in)"
    )


def first_undecodable_byte(path: Path, encoding: str) -> tuple[int, int] | None:
    """(line, byte value) of the first byte that does not decode in ``encoding``, if found; streamed."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                # error.object may begin with an incomplete character carried over, never a newline
                return line + error.object[: error.start].count(b"\n"), error.object[error.start]
            line += chunk.count(b"\n")
    return None


def _first_ragged_line(path: Path, sep: str, encoding: str) -> int | None:
    """The line where the first record with another number of fields than the header starts, if found."""
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
    path = _existing_path(values)
    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        raise LeadmlError(f"parquet file {path} cannot be read: {' '.join(str(error).split())}") from None


def _read_xlsx(values: Mapping[str, Any]) -> pd.DataFrame:
    """One sheet of an Excel workbook, its cells as openpyxl reads them (formulas: their saved value)."""
    path = _existing_path(values)
    _refuse_non_workbook(path)
    with warnings.catch_warnings():
        # openpyxl warns about styles, data validation and other parts it does not keep, never data
        warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
        try:
            workbook = pd.ExcelFile(path, engine="openpyxl")
        except Exception as error:  # openpyxl raises anything from BadZipFile to KeyError on a damaged file
            raise LeadmlError(
                f"xlsx file {path} cannot be read as an Excel workbook: {_detail(error)}"
            ) from None
        with workbook:
            sheet = chosen_sheet(values.get("sheet"), workbook.sheet_names, path)
            try:
                frame = pd.read_excel(workbook, sheet_name=sheet, keep_default_na=False, na_values=[""])
            except Exception as error:
                raise LeadmlError(
                    f"xlsx file {path}, sheet {sheet!r}, cannot be read: {_detail(error)}"
                ) from None
    frame.columns = [str(column) for column in frame.columns]  # a header cell may hold a number or date
    return _mixed_as_text(frame)


def _detail(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _refuse_non_workbook(path: Path) -> None:
    """A file given as xlsx that is not one (a CSV, an .xls, a Parquet file): say what to set instead."""
    kind = binary_kind(path)
    if kind == "xls":
        raise LeadmlError(
            f"xlsx file {path} is an old Excel workbook (.xls) or one saved with a password: neither is "
            "supported; save it as .xlsx without a password, or as CSV"
        )
    if kind == "parquet":
        raise LeadmlError(f"xlsx file {path} is a Parquet file: set format: parquet in the source")
    if kind is None and path.is_file():
        raise LeadmlError(
            f"xlsx file {path} is not an Excel workbook (an .xlsx file is a zip archive, this one is not): "
            "if it is CSV text, set format: csv in the source"
        )


def chosen_sheet(asked: Any, names: Sequence[str], path: Path) -> str:
    """The sheet ``asked`` names: a name (whose case Excel ignores), a 0-based number, or None: the first."""
    if asked is None and names:
        return names[0]
    if isinstance(asked, int) and 0 <= asked < len(names):
        return names[asked]
    if isinstance(asked, str):
        found = [name for name in names if name == asked] or [
            name for name in names if name.casefold() == asked.casefold()
        ]
        if found:
            return found[0]
    what = f"{asked} (counting from 0)" if isinstance(asked, int) else repr(asked)
    present = ", ".join(map(repr, names)) or "(none)"
    raise LeadmlError(f"xlsx file {path} has no sheet {what}; sheets present: {present}")


def _mixed_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns whose cells mix kinds of values (numbers and text, dates and text) as text.

    Such a column cannot be stored as Parquet as it is, and its contract parses text anyway;
    a whole number reads as in a CSV export (``12``, not ``12.0``).
    """
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and values.dropna().map(type).nunique() > 1:
            frame[column] = values.map(_cell_text, na_action="ignore").astype("str")
    return frame


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
        raise LeadmlError(f"cannot open database {mask_url(url)}: {scrubbed(str(error), url)}") from None
    try:
        with engine.connect() as connection:
            yield connection
    except (SQLAlchemyError, pd.errors.DatabaseError) as error:
        raise LeadmlError(f"cannot read {description}: {scrubbed(str(error), url)}") from None
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


_READERS = {"csv": _read_csv, "parquet": _read_parquet, "xlsx": _read_xlsx, "sql": _read_sql}


def read_source(spec: Mapping[str, Any]) -> pd.DataFrame:
    """Read one source and rename its columns to the canonical names (see the module docstring)."""
    values = checked_spec(spec)
    frame = _READERS[values["format"]](values)
    logger.info("read %d rows from %s", len(frame), describe_source(values))
    return rename_columns(frame, values.get("columns"), describe_source(values))


# --------------------------------------------------------------------------- batches
def source_batches(
    spec: Mapping[str, Any], rows: int, categories: Collection[str] = ()
) -> Iterator[pd.DataFrame]:
    """A source read again from its start, about ``rows`` rows at a time, as :func:`read_source`
    reads it (same columns and values: the frames concatenated equal its frame).

    A Parquet file and a CSV file stream; a Parquet folder, a workbook or a SQL source is read
    whole as one batch. At least one frame comes, empty for a source without rows.
    ``categories`` (canonical names): text columns of a file read as pandas categoricals from
    Arrow dictionaries, so the few distinct values of a category column are decoded and checked
    once per batch instead of once per row; a column stored as numbers stays as it is.
    """
    values = checked_spec(spec)
    source = describe_source(values)
    path = Path(values["path"]) if values.get("path") else None
    mapping = {str(canonical): str(name) for canonical, name in (values.get("columns") or {}).items()}
    encoded = [mapping.get(name, name) for name in categories]
    if values["format"] == "parquet" and path is not None and path.is_file():
        frames = _parquet_batches(path, rows, encoded)
    elif values["format"] == "csv":
        frames = _csv_batches(values, rows, encoded)
    else:
        frames = iter([_READERS[values["format"]](values)])
    for frame in frames:
        yield rename_columns(frame, values.get("columns"), source)


def _parquet_batches(path: Path, rows: int, encoded: Sequence[str]) -> Iterator[pd.DataFrame]:
    """Row group by row group, each through a reader of its own: one reader over a whole file keeps
    what it decoded until it is closed (340 MB after 23 million events, growing with the file).
    ``encoded``: text columns read as dictionaries (numbers are left as they are)."""
    try:
        with pyarrow.parquet.ParquetFile(path) as parquet:
            groups = parquet.num_row_groups
            encoded = [name for name in encoded if name in parquet.schema_arrow.names]  # else a KeyError
        yielded = False
        for group in range(groups):
            with pyarrow.parquet.ParquetFile(path, read_dictionary=encoded) as parquet:
                for batch in parquet.iter_batches(batch_size=rows, row_groups=[group]):
                    yielded = True
                    yield pyarrow.Table.from_batches([batch]).to_pandas()
        if not yielded:
            yield pyarrow.parquet.ParquetFile(path).schema_arrow.empty_table().to_pandas()
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        raise LeadmlError(f"parquet file {path} cannot be read: {' '.join(str(error).split())}") from None


_DICTIONARY_TEXT = pyarrow.dictionary(pyarrow.int32(), pyarrow.string())


def _csv_batches(values: Mapping[str, Any], rows: int, encoded: Sequence[str]) -> Iterator[pd.DataFrame]:
    """CSV as text, as :func:`_read_csv` reads it (``encoded`` columns as dictionaries of text);
    anything unusual (a repeated header name, a read error) goes through :func:`_read_csv`, whose
    messages say what to change."""
    path = _existing_path(values)
    _refuse_binary(path)
    _refuse_wide_text(path, values.get("encoding") or "utf-8")
    try:
        names = _csv_reader(values, None).schema.names
    except (pyarrow.ArrowException, OSError, ValueError):  # encodings were checked by checked_spec
        yield _read_csv(values)
        return
    if len(set(names)) != len(names) or not names:
        yield _read_csv(values)
        return
    _check_separator(path, names, values.get("sep") or ",")
    types = {name: _DICTIONARY_TEXT if name in encoded else pyarrow.string() for name in names}
    schema = pyarrow.schema(list(types.items()))
    pending = schema.empty_table()
    yielded = False
    try:
        for batch in _csv_reader(values, types):  # blocks of _CSV_BLOCK bytes, cut into batches of rows
            pending = pyarrow.concat_tables([pending, pyarrow.Table.from_batches([batch])])
            while len(pending) >= rows:
                yield pending.slice(0, rows).to_pandas()
                pending, yielded = pending.slice(rows), True
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        _read_csv(values)  # raises the message that names the line or the setting
        raise LeadmlError(f"csv file {path} cannot be parsed: {' '.join(str(error).split())}") from None
    if len(pending) or not yielded:
        yield pending.to_pandas()


def _csv_reader(values: Mapping[str, Any], types: Mapping[str, Any] | None) -> Any:
    """pyarrow's streaming CSV reader with :func:`_read_csv`'s options: every column text, only the
    empty string null (``types``: the header's columns, text or dictionaries of text; None to read
    just the header)."""
    return arrow_csv.open_csv(
        values["path"],
        read_options=arrow_csv.ReadOptions(encoding=values.get("encoding") or "utf-8", block_size=_CSV_BLOCK),
        parse_options=arrow_csv.ParseOptions(delimiter=values.get("sep") or ","),
        convert_options=arrow_csv.ConvertOptions(
            column_types=dict(types or {}),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


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
    """A temporary file beside ``path`` that replaces it only once fully written.

    The file is created with the mode any program gives a new file (0666 less the umask, so 0644
    as a rule), as the HTML and Parquet outputs are: tempfile's would be private (0600), and a
    report or a run record is read by others.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise LeadmlError(f"cannot write {target}: {os_reason(error)}") from None
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


def write_parquet_files(frames: Mapping[str | os.PathLike[str], pd.DataFrame]) -> None:
    """Write several frames atomically (:func:`write_parquet_atomic`), side by side on the CPUs
    this process may use: Arrow encodes and compresses without holding the GIL, so the activity
    table no longer waits for the others. The first error is raised once every write has ended."""
    workers = max(1, min(len(frames), available_cpus()))
    if workers == 1:
        for path, frame in frames.items():
            write_parquet_atomic(frame, path)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="leadml-write") as pool:
        writes = [pool.submit(write_parquet_atomic, frame, path) for path, frame in frames.items()]
    for write in writes:
        write.result()


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
