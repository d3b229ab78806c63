"""Start a data set from a file: ``leadml-init path/to/export.csv`` writes a commented flat data config.

A new user has one export (CSV, Excel or Parquet) and no config. This module reads the file with
the sources' own reader (:func:`leadml.adapters.sources.read_source`, after sniffing the separator,
encoding and format it needs), profiles every column and proposes what a hand-written ``kind:
flat`` config holds (see the README's "Adding your own data set"): the id, the target and its
positive, negative and open values (or, given a second file of dated outcomes, an ``outcomes:``
block), the time or order column, column types, personal data, missing markers, and the columns
that look filled in after the outcome. It then runs the proposal through ingestion in memory (the
contract, exactly as ``leadml-ingest`` would) and measures those suspicious columns with the
leakage sentinel's own functions (:mod:`leadml.modelling.guards`) on the label that ingestion
gives. The written YAML says why each entry was proposed, so the user edits a config rather than
writes one, and it trains as it is.

This module is the I/O shell (:func:`init_data_config`, :func:`main`). Everything that decides is
a pure function of frames and text, a layer below: :mod:`leadml.data.profiles` (the file's text and
each column's profile), :mod:`leadml.data.proposal` (the choices), :mod:`leadml.data.config_yaml`
(the commented YAML) and :mod:`leadml.modelling.proposal_check` (the proposal ingested in memory and
measured with the sentinel).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leadml.adapters.layout import CONFIG_DIR
from leadml.adapters.sources import (
    binary_kind,
    chosen_sheet,
    first_undecodable_byte,
    read_source,
    source_format,
)
from leadml.data.config_yaml import flow_list
from leadml.data.profiles import (
    SNIFF_BYTES,
    Proposal,
    Source,
    complete_lines,
    count_text,
    detect_separator,
    encoding_from_bom,
    header_problem,
    sample_records,
)
from leadml.data.proposal import propose
from leadml.errors import ContractError, LeadmlError, SourceMissingError
from leadml.modelling.proposal_check import finish

PROGRAM = "leadml-init"


_CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


# --------------------------------------------------------------------------- proposals


# --------------------------------------------------------------------------- file sniffing


# --------------------------------------------------------------------------- column profiles


# --------------------------------------------------------------------------- choices


# --------------------------------------------------------------------------- outcomes from a second file


# --------------------------------------------------------------------------- the proposal


# --------------------------------------------------------------------------- checking


# --------------------------------------------------------------------------- finishing


# --------------------------------------------------------------------------- YAML


# --------------------------------------------------------------------------- I/O shell
def _checked_file(path: Path) -> None:
    if not path.exists():
        raise SourceMissingError(f"{path}: no such file")
    if path.is_dir():
        raise LeadmlError(f"{path} is a folder, not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise LeadmlError(f"{path} cannot be read: {error.strerror or error}") from None


def detect_encoding(path: Path) -> tuple[str, str]:
    """The encoding of a text file and why: a byte order mark, else UTF-8 when every byte decodes
    as UTF-8, else Windows-1252 (what Excel writes on Windows), else Latin-1 (every byte decodes)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    announced = encoding_from_bom(head)
    if announced:
        return announced
    found = first_undecodable_byte(path, "utf-8")
    if found is None:
        return "utf-8", "every byte decodes as UTF-8"
    where = f"byte 0x{found[1]:02x} on line {found[0]:,} is not UTF-8"
    if first_undecodable_byte(path, "cp1252") is None:
        return "cp1252", f"{where}; every byte decodes as Windows-1252"
    return "latin-1", f"{where}, nor Windows-1252"


def sniff_source(path: Path, sheet: str | None = None) -> Source:
    """How to read ``path``: its format (by suffix, corrected by its first bytes), and for CSV its
    encoding and separator; for a workbook the sheet. Raises LeadmlError with one line naming the file."""
    _checked_file(path)
    kind = binary_kind(path)
    if kind == "xls" or path.suffix.lower() == ".xls":
        raise LeadmlError(f"{path}: .xls (Excel 97-2003) is not supported; save the workbook as .xlsx or CSV")
    if kind == "zip":
        raise LeadmlError(f"{path} is a zip archive: extract the file inside and give that")
    suffix_format = source_format({"path": str(path)})
    found = kind or "csv"
    notes: list[str] = [
        found
        if suffix_format == found
        else f"{found} (by its content; named {path.suffix or 'without a suffix'})"
    ]
    if sheet is not None and found != "xlsx":
        raise LeadmlError(f"{path}: --sheet is for an Excel workbook, and this is a {found} file")
    if found == "xlsx":
        chosen, note = _sheet(path, sheet)
        return Source(path, "xlsx", sheet=chosen, notes=(*notes, note))
    if found == "parquet":
        return Source(path, "parquet", notes=tuple(notes))
    encoding, encoding_why = detect_encoding(path)
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES + 1)
    sample = complete_lines(head[:SNIFF_BYTES].decode(encoding, errors="replace"), len(head) <= SNIFF_BYTES)
    if not sample.strip():
        raise ContractError(f"csv file {path} is empty (no header row)")
    sep, sep_why = detect_separator(sample)
    problem = header_problem(sample_records(sample, sep))
    if problem:
        raise LeadmlError(
            f"{path}: the first line looks like data, not column names ({problem}): add a header line "
            "with the column names"
        )
    notes += [f"sep {json.dumps(sep)}: {sep_why}", f"{encoding}: {encoding_why}"]
    return Source(path, "csv", sep=sep, encoding=encoding, notes=tuple(notes))


def _sheet(path: Path, asked: str | None) -> tuple[str, str]:
    """The workbook's sheet to read, by name (--sheet, a name or a 0-based number; default the first)."""

    try:
        import openpyxl  # only for an Excel file: pandas needs it there too, nowhere else

        workbook = openpyxl.load_workbook(path, read_only=True)
        names = list(workbook.sheetnames)
        workbook.close()
    except Exception as error:  # openpyxl raises anything from BadZipFile to KeyError on a damaged file
        raise LeadmlError(
            f"{path} cannot be read as an Excel workbook: {' '.join(str(error).split())}"
        ) from None
    wanted: str | int | None = asked
    if asked is not None and asked not in names and asked.isdigit():
        wanted = int(asked)
    chosen = chosen_sheet(wanted, names, path)
    others = [name for name in names if name != chosen]
    note = f"sheet {chosen!r}" + (
        f" of {len(names)} ({', '.join(map(repr, others))} not read)" if others else ""
    )
    return chosen, note


def read_frame(source: Source) -> pd.DataFrame:
    """The file through the sources' own reader (what ingestion will read)."""
    try:
        return read_source(source.spec())
    except LeadmlError:
        raise
    except (OSError, UnicodeError, ValueError) as error:
        raise LeadmlError(f"{source.path} cannot be read: {' '.join(str(error).split())}") from None


def config_name(path: Path, name: str | None) -> str:
    """The data set's name: ``--name`` or the file's name in lower case with ``_`` for other characters."""
    if name is not None:
        if not _CONFIG_NAME.fullmatch(name):
            raise LeadmlError(
                f"--name {name!r}: use letters, digits, '_' and '-' (it names a file and a folder)"
            )
        return name
    stem = re.sub(r"[^a-z0-9]+", "_", path.stem.casefold()).strip("_")
    return stem or "leads"


@dataclass(frozen=True)
class Written:
    """A written config: where, what it proposes, its text."""

    path: Path
    proposal: Proposal
    text: str


def init_data_config(
    paths: Sequence[Path],
    *,
    name: str | None = None,
    out: Path = Path("conf/data"),
    sheet: str | None = None,
    force: bool = False,
    target: str | None = None,
) -> Written:
    """Read the file (and the outcomes file), propose, check and write ``<out>/<name>.yaml``."""
    first = paths[0]
    if target is not None and len(paths) > 1:
        raise LeadmlError("--target and an outcomes file: the label comes from one of them, give either")
    chosen = config_name(first, name)
    destination = out / f"{chosen}.yaml"
    if destination.exists() and not force:
        raise LeadmlError(
            f"{destination} exists: give --force to overwrite it, or --name for another data set"
        )
    source = sniff_source(first, sheet)
    frame = read_frame(source)
    if frame.empty:
        raise ContractError(f"{first} has a header but no rows")
    events = events_source = None
    if len(paths) > 1:
        events_source = sniff_source(paths[1])
        events = read_frame(events_source)
    proposal = propose(frame, source, chosen, target=target, events=events, events_source=events_source)
    proposal, text = finish(proposal, frame, events)
    try:
        out.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
    except OSError as error:
        raise LeadmlError(f"cannot write {destination}: {error.strerror or error}") from None
    return Written(destination, proposal, text)


def _train_command(written: Written) -> str:
    """How to train the written config: Hydra finds ``conf/data/`` of this repository by itself,
    another folder ``<configs>/data/`` through ``hydra.searchpath``."""

    folder = written.path.parent
    command = f"leadml-train data={written.proposal.name}"
    if folder.resolve() == Path(CONFIG_DIR).resolve() / "data":
        return command
    if folder.name != "data":
        return (
            f"{command}, once {written.path.name} is in a folder data/ of a config folder on hydra.searchpath"
        )
    return f"leadml-train hydra.searchpath=[file://{folder.parent}] data={written.proposal.name}"


def summary_lines(written: Written) -> list[str]:
    """What leadml-init prints: what it read and proposed, and how to train it."""
    proposal = written.proposal
    source = proposal.source
    lines = [
        f"init: read {source.path} ({proposal.rows:,} rows, {proposal.columns:,} columns; "
        + ", ".join(source.notes)
        + ")"
    ]
    if proposal.target is not None:
        label = f"target {proposal.target.column} (positive {flow_list(proposal.target.positive)})"
    elif proposal.outcomes is not None:
        outcomes = proposal.outcomes
        label = (
            f"outcomes from {outcomes.source.path.name} by {outcomes.id} within {outcomes.horizon_days} days"
        )
    if proposal.time is not None:
        when = f"time {proposal.time.column}"
    elif proposal.order is not None:
        when = f"order {proposal.order.column} (split=order)"
    else:
        when = "no time or order (random split)"
    lines.append(f"init: id {proposal.id.column}; {label}; {when}")
    if proposal.suspects:
        verb = "looks" if len(proposal.suspects) == 1 else "look"
        names = ", ".join(entry.column for entry in proposal.suspects)
        count = count_text(len(proposal.suspects), "column")
        lines.append(f"init: {count} {verb} filled in after the outcome, dropped: {names}")
    lines += [f"init: {note}" for note in proposal.notes]
    lines.append(f"init: wrote {written.path}")
    lines.append(f"init: train it with: {_train_command(written)}")
    return lines


def parser() -> argparse.ArgumentParser:
    build = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Propose a commented flat data config for an export (CSV, Excel or Parquet).",
    )
    build.add_argument(
        "path", type=Path, help="the export: one row per lead (.csv/.txt, .xlsx/.xlsm, .parquet)"
    )
    build.add_argument(
        "outcomes",
        type=Path,
        nargs="?",
        help="optional: dated outcomes (won deals) holding the leads' id values",
    )
    build.add_argument("--name", help="the data set's name (default: the file's name)")
    build.add_argument("--out", type=Path, default=Path("conf/data"), help="folder to write <name>.yaml into")
    build.add_argument("--sheet", help="the workbook's sheet, by name or 0-based number (default: the first)")
    build.add_argument("--target", help="the outcome column, when it is not found by itself")
    build.add_argument("--force", action="store_true", help="overwrite an existing config")
    return build


def main(argv: Sequence[str] | None = None) -> None:
    """``leadml-init PATH [OUTCOMES] [--name NAME] [--out conf/data] [--sheet S] [--target T] [--force]``."""
    arguments = parser().parse_args(argv)
    paths = [arguments.path] + ([arguments.outcomes] if arguments.outcomes else [])
    try:
        written = init_data_config(
            paths,
            name=arguments.name,
            out=arguments.out,
            sheet=arguments.sheet,
            force=arguments.force,
            target=arguments.target,
        )
    except LeadmlError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    for line in summary_lines(written):
        print(line, flush=True)
