"""Start a data set from a file: ``leadml-init path/to/export.csv`` writes a commented flat data config.

A new user has one export (CSV, Excel or Parquet) and no config. This module reads the file with
the sources' own reader (:func:`leadml.adapters.sources.read_source`, after sniffing the separator, encoding
and format it needs), profiles every column and proposes what a hand-written ``kind: flat`` config
holds (see the README's "Adding your own data set"): the id, the target and its positive, negative
and open values (or, given a second file of dated outcomes, an ``outcomes:`` block), the time or
order column, column types, personal data, missing markers, and the columns that look filled in
after the outcome. It then runs the proposal through ingestion in memory (the contract, exactly as
``leadml-ingest`` would) and measures those suspicious columns with the leakage sentinel's own
functions (:mod:`leadml.modelling.guards`) on the label that ingestion gives. The written YAML says why each
entry was proposed, so the user edits a config rather than writes one, and it trains as it is.

Everything that decides is a pure function of frames and text (:func:`propose`, :func:`render`,
:func:`detect_separator`, ...); :func:`init_data_config` and :func:`main` are the I/O shell.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from leadml.adapters.layout import CONFIG_DIR
from leadml.adapters.sources import (
    _SEPARATORS,
    _binary_kind,
    _first_undecodable_byte,
    _format,
    _sheet_name,
    read_source,
)
from leadml.data import schema as s
from leadml.data.contracts import (
    DEFAULT_MISSING_MARKERS,
    FALSE_TOKENS,
    SETTINGS_KEYS,
    SOURCE_ROW,
    TRUE_TOKENS,
    IngestSettings,
    as_text,
    flat_contract,
    normalise_token,
)
from leadml.data.features import FLAT_KEY_COLUMNS, LABEL, flat_feature_metadata, flat_snapshots
from leadml.data.ingest import ingest_flat
from leadml.errors import ContractError, LeadmlError, SourceMissingError
from leadml.modelling.guards import OutcomeLevelSettings, leakage_report, outcome_coded_levels, value_bins

PROGRAM = "leadml-init"
# bytes of a CSV file read to find its separator and header
SNIFF_BYTES = 256 * 1024
# complete records of that sample compared (the header and the lines after it)
SNIFF_RECORDS = 200
# the project's default label horizon (features.horizon_days), proposed for outcomes
HORIZON_DAYS = 90
# the split's default windows (conf/split/time.yaml): test and calibration months
DEFAULT_WINDOW_MONTHS = 3
# guards' minimums (conf/guards/default.yaml), checked against the rows a training window gets
MIN_SNAPSHOTS = 1000
MIN_POSITIVES = 100
# share of rows before the test and calibration windows (split=order's 20% + 20%)
TRAIN_SHARE = 0.6
MAX_BAD_SHARE = 0.05
# a text column with more distinct values than this share of its filled rows is free text or a key
HIGH_CARDINALITY_SHARE = 0.5
HIGH_CARDINALITY_MIN = 20
# a target has 2 to 5 values
TARGET_VALUES = (2, 5)
# rank correlation with the row number above which a column follows the file's order
ORDER_CORRELATION = 0.9
# a column whose values come in at most this share of the runs shuffled rows give recurs like months
RUN_SHARE = 0.05
YAML_WIDTH = 100
# why a date column other than the time column is dropped
NOT_A_FEATURE = "a flat table's features are its columns as they are, and a date is not one"


def _words(text: str, sep: str | None = None) -> frozenset[str]:
    return frozenset(text.split(sep))


# values that stand for "nothing chosen" on a form or in an export, compared trimmed and case-folded;
# the contract's DEFAULT_MISSING_MARKERS are missing already
PLACEHOLDERS = _words(
    "select|please select|-- select --|--select--|choose|choose one|-|--|?|not specified|not provided"
    "|unspecified|not available|none selected",
    "|",
)
# values that may mean "missing" or be an answer of their own: proposed in a comment only
MAYBE_MISSING = _words("unknown|undefined|not known|missing|no data|not set|n.a.", "|")
# numbers that often stand for "never" or "not recorded" in a column of counts or days
NUMERIC_SENTINELS = (-1.0, -999.0, -9999.0, 999.0, 9999.0, 99999.0)
# target values (normalised tokens) meaning converted, lost, and still open
POSITIVE_TOKENS = TRUE_TOKENS | _words(
    "won win closed_won won_deal converted convert success successful subscribed signed customer purchased "
    "paid sold sale accepted booked"
)
NEGATIVE_TOKENS = FALSE_TOKENS | _words(
    "lost lose closed_lost lost_deal not_converted disqualified unqualified rejected declined churned failed "
    "failure dead junk cancelled canceled no_sale"
)
OPEN_TOKENS = _words(
    "open new in_progress working nurture nurturing pending contacted not_contacted attempted_to_contact "
    "engaging engaged qualified negotiation proposal active follow_up prospect mql sql opportunity waiting "
    "on_hold in_review"
)

_TARGET_NAME = re.compile(
    r"status|convert|\bwon\b|\bwin\b|outcome|result|stage|target|label|closed|success|subscri|purchas"
    r"|churn|signed|^y$|^is_?customer",
    re.I,
)
_ID_NAME = re.compile(r"(^|[\s_-])(id|uuid|guid|key)$|^id[\s_-]|_id$|\bid\b", re.I)
_ORDER_NAME = re.compile(r"number|\bno\b|\bnr\b|\bseq|sequence|counter|serial|index", re.I)
_CREATED_NAME = re.compile(
    r"creat|first|start|signup|sign_up|register|submit|received|arriv|date_added|added|opened|contact_date"
    r"|^date$|lead_date|inquiry",
    re.I,
)
_LATER_NAME = re.compile(r"clos|won|lost|last|modif|updat|end|convert|change|due|expir", re.I)
_EVENT_NAME = re.compile(r"won|clos|convert|sign|purchas|date|time", re.I)
_PERSON_NAME = re.compile(
    r"^(first|last|full|middle|given|family|sur|contact|customer|client|lead|person|user)?[\s_-]?name$"
    r"|address|street|post_?code|zip|birth|\bdob\b|\bssn\b|passport|\biban\b|^ip$|ip_address",
    re.I,
)
_PHONE_NAME = re.compile(r"phone|mobile|\btel\b|telephone|\bfax\b|\bcell\b", re.I)
_EMAIL_VALUE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE_VALUE = re.compile(r"^\+?[\d\s().\-/]{7,24}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}")
_OTHER_DATE = re.compile(r"^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(\s|$)")
_DECIMAL_COMMA = re.compile(r"^-?\d{1,3}(\.\d{3})*,\d+$|^-?\d+,\d+$")
_CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_PLAIN_SCALAR = re.compile(r"[A-Za-z_/][A-Za-z0-9 _./()+-]*[A-Za-z0-9_.)]|[A-Za-z_]")
# families (conf/data/*.yaml families:) guessed from column names; the rest is "other"
FAMILY_NAMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "source",
        re.compile(
            r"\bsource\b|\borigin\b|\bchannel\b|\bcampaign\b|\butm|\bmedium\b|\breferr|\blanding"
            r"|how did you hear",
            re.I,
        ),
    ),
    (
        "engagement",
        re.compile(
            r"visits?\b|\bpage ?views?\b|\btime spent\b|\bsessions?\b|\bclicks?\b|\bopens?\b|\bdownloads?\b"
            r"|\bwebinars?\b|\bactivity$",
            re.I,
        ),
    ),
    (
        "fit",
        re.compile(
            r"\bindustry\b|\bcountry\b|\bcity\b|\bregion\b|\bemployees\b|company size|\brevenue\b|\bjob\b"
            r"|\btitle\b|occupation|^age$|^education$|speciali[sz]ation|\bsegment\b|\brole\b|seniority|\bincome\b",
            re.I,
        ),
    ),
)
# columns ingestion adds to a flat table, and those the quarantine adds: a data column may not be named so
RESERVED = frozenset({*FLAT_KEY_COLUMNS, "source_row", "reason", "table"})

# column kinds
EMPTY = "empty"
CONSTANT = "constant"
BOOLEAN = "boolean"
INTEGER = "integer"
NUMERIC = "numeric"
TIMESTAMP = "timestamp"
CATEGORICAL = "categorical"
TEXT = "text"
DATE_TEXT = "date_text"
DECIMAL_COMMA = "decimal_comma"
# contract column groups in the order they are written
GROUPS: tuple[str, ...] = ("personal", "boolean", "integer", "numeric", "categorical")


# --------------------------------------------------------------------------- proposals
@dataclass(frozen=True)
class Source:
    """How a file is read: what ``table:`` (or ``outcomes.table:``) gets, and why. ``path`` is the
    path as given (messages name it so); the config holds it absolute (see :meth:`spec`)."""

    path: Path
    format: str
    sep: str | None = None
    encoding: str | None = None
    sheet: str | None = None
    notes: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """The source spec for :func:`leadml.adapters.sources.read_source` (and for the config)."""
        spec: dict[str, Any] = {"format": self.format, "path": os.path.abspath(self.path)}
        if self.sep not in (None, ","):
            spec["sep"] = self.sep
        if self.encoding not in (None, "utf-8"):
            spec["encoding"] = self.encoding
        if self.sheet is not None:
            spec["sheet"] = self.sheet
        return spec


@dataclass(frozen=True)
class Profile:
    """One column as the contract will see it: filled rows, distinct values, a kind and the evidence."""

    name: str
    rows: int
    filled: int
    distinct: int
    kind: str
    detail: str
    unique: bool = False
    personal: str | None = None
    median_date: pd.Timestamp | None = None
    values: tuple[tuple[str, int], ...] = ()  # the most frequent values as written, with counts
    placeholders: tuple[str, ...] = ()  # values that stand for "nothing chosen"
    maybe_missing: tuple[str, ...] = ()  # values that may stand for "missing" (a comment)
    number_markers: tuple[str, ...] = ()  # a few text values in a column of numbers: missing
    sentinel: str | None = None  # a number that may stand for "never" (a comment)


@dataclass(frozen=True)
class Entry:
    """A proposed column (or value) and why."""

    column: str
    why: str


@dataclass(frozen=True)
class Target:
    """The target column, its positive, negative and open values, why, and what is unsure."""

    column: str
    positive: tuple[Any, ...]
    negative: tuple[Any, ...]
    open: tuple[Any, ...]
    why: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcomes:
    """The ``outcomes:`` block: a second file of dated outcomes joined by the id, and why."""

    source: Source
    lead_id: str  # the leads' column its id values join
    id: str
    time: str
    horizon_days: int
    observed_from: str | None
    why: tuple[str, ...]


@dataclass(frozen=True)
class Proposal:
    """Everything the written config holds, each entry with the reason it was proposed."""

    name: str
    source: Source
    rows: int
    columns: int
    id: Entry
    target: Target | None = None
    outcomes: Outcomes | None = None
    time: Entry | None = None
    order: Entry | None = None
    drop: tuple[Entry, ...] = ()
    suspects: tuple[Entry, ...] = ()
    groups: Mapping[str, tuple[Entry, ...]] = field(default_factory=dict)
    missing_markers: tuple[Entry, ...] = ()
    missing_notes: tuple[str, ...] = ()
    families: Mapping[str, str] = field(default_factory=dict)
    split: Mapping[str, int] = field(default_factory=dict)
    split_why: str = ""
    max_bad_share: float = MAX_BAD_SHARE
    bad_share_why: str = ""
    notes: tuple[str, ...] = ()  # header comments: what was checked, what to look at
    kept_strongest: str = ""

    @property
    def global_package(self) -> bool:
        """The config chooses other groups (split=order) or sets their values: a global package."""
        return self.order is not None or bool(self.split)


# --------------------------------------------------------------------------- file sniffing
def detect_separator(text: str) -> tuple[str, str]:
    """The separator of CSV text (the first lines of a file) and the evidence.

    Each of ``,`` ``;`` tab ``|`` splits the complete records of the sample; the one whose header
    has the most fields (at least two) while at least 90% of the records have as many wins. A
    count on real records, rather than csv.Sniffer's guess on characters, so a quoted value
    holding a comma does not mislead it.
    """
    best: tuple[int, str] | None = None
    for sep in (",", *[other for other in _SEPARATORS if other != ","]):
        records = sample_records(text, sep)
        if len(records) < 1 or len(records[0]) < 2:
            continue
        width = len(records[0])
        body = records[1:]
        if body and sum(len(record) == width for record in body) < 0.9 * len(body):
            continue
        if best is None or width > best[0]:
            best = (width, sep)
    if best is None:
        return ",", "no separator among , ; tab | splits the header: one column"
    width, sep = best
    lines = len(sample_records(text, sep))
    return sep, f"{width} fields on {'the header' if lines == 1 else f'each of the first {lines:,} lines'}"


def sample_records(text: str, sep: str, limit: int = SNIFF_RECORDS) -> list[list[str]]:
    """The first ``limit`` records of CSV text split by ``sep`` (quoted line breaks kept in their field)."""
    try:
        records = [record for record in csv.reader(io.StringIO(text), delimiter=sep) if record]
    except csv.Error:
        return []
    return records[:limit]


def complete_lines(sample: str, whole_file: bool) -> str:
    """The sample without its last line when the file goes on (that line may be cut in the middle)."""
    if whole_file or "\n" not in sample:
        return sample
    return sample[: sample.rfind("\n") + 1]


def header_problem(records: Sequence[Sequence[str]]) -> str | None:
    """Why the first record looks like data rather than column names (None: it looks like a header).

    A column whose values are numbers (or ISO dates) below a header field that is a number (or a
    date) too votes "no header"; at least half of those columns voting so decides.
    """
    if len(records) < 3:
        return None
    header, body = records[0], records[1:]
    typed = voting = 0
    for position, name in enumerate(header):
        values = [
            record[position].strip() for record in body if position < len(record) and record[position].strip()
        ]
        if len(values) < 2:
            continue
        for looks in (_is_number_text, _is_iso_date_text):
            if sum(map(looks, values)) >= 0.9 * len(values):
                typed += 1
                voting += looks(name.strip())
                break
    if typed and voting and voting * 2 >= typed:
        return f"{voting} of its {typed} columns of numbers or dates hold a number or date there too"
    return None


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_iso_date_text(value: str) -> bool:
    return bool(_ISO_DATE.match(value))


def encoding_from_bom(head: bytes) -> tuple[str, str] | None:
    """The encoding a byte order mark announces (None: no mark)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", "starts with a UTF-8 byte order mark (Excel's 'CSV UTF-8')"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16", "starts with a UTF-16 byte order mark"
    return None


# --------------------------------------------------------------------------- column profiles
def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _shown(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def cleaned_text(values: pd.Series, markers: Iterable[str] = ()) -> pd.Series:
    """A column as trimmed text with missing values (the contract's markers and ``markers``) as nulls."""
    text = as_text(values).str.strip()
    missing = {marker.casefold() for marker in (*DEFAULT_MISSING_MARKERS, *markers)}
    return text.mask(text.str.casefold().isin(missing) | text.isna())


def profile_column(name: str, values: pd.Series, markers: Iterable[str] = ()) -> Profile:
    """What a column holds, as the contract will read it (``markers``: proposed missing markers)."""
    raw = as_text(values).str.strip()
    text = cleaned_text(values, markers)
    filled_text = text.dropna()
    rows, filled = len(values), len(filled_text)
    counts = filled_text.value_counts()
    base = {
        "name": name,
        "rows": rows,
        "filled": filled,
        "distinct": len(counts),
        "values": tuple((str(value), int(count)) for value, count in counts.head(8).items()),
        "placeholders": _found(raw, PLACEHOLDERS),
        "maybe_missing": _found(raw, MAYBE_MISSING),
        "unique": filled == rows and len(counts) == rows,
    }
    missing = f", {_count(rows - filled, 'row')} missing" if filled < rows else ""
    if filled == 0:
        return Profile(**base, kind=EMPTY, detail="empty in every row")
    personal = _personal(name, filled_text)
    if personal:
        return Profile(**base, kind=TEXT, detail=f"{personal}{missing}", personal=personal)
    tokens = {normalise_token(str(value)) for value in counts.index} if len(counts) <= 4 else set()
    if len(counts) == 1 and filled == rows:
        return Profile(**base, kind=CONSTANT, detail=f"{_shown(str(counts.index[0]))!r} in every row")
    if (
        1 <= len(tokens) <= 2
        and tokens <= TRUE_TOKENS | FALSE_TOKENS
        and not (tokens <= TRUE_TOKENS and len(tokens) == 2)
    ):
        shown = "/".join(str(value) for value in counts.index)
        return Profile(**base, kind=BOOLEAN, detail=f"{shown}{missing}")
    numbers = _numbers(filled_text, base, missing)
    if numbers is not None:
        return numbers
    dates = _dates(filled_text, base, missing)
    if dates is not None:
        return dates
    if len(counts) > HIGH_CARDINALITY_MIN and len(counts) > HIGH_CARDINALITY_SHARE * filled:
        return Profile(
            **base, kind=TEXT, detail=f"{len(counts):,} different values in {filled:,} rows{missing}"
        )
    return Profile(**base, kind=CATEGORICAL, detail=f"{_count(len(counts), 'value')}{missing}")


def _found(raw: pd.Series, values: frozenset[str]) -> tuple[str, ...]:
    """The values of ``raw`` (as written) whose trimmed, case-folded text is one of ``values``."""
    present = raw.dropna()
    matches = present[present.str.casefold().isin(values)]
    return tuple(str(value) for value in matches.value_counts().index)


def _personal(name: str, filled: pd.Series) -> str | None:
    """What kind of personal data a column holds (by its values or, for names, by its name)."""
    sample = filled.head(2000)
    if sample.str.match(_EMAIL_VALUE).mean() >= 0.5:
        return "e-mail addresses"
    dates = sample.str.match(_ISO_DATE) | sample.str.match(_OTHER_DATE)
    phone_like = sample.str.match(_PHONE_VALUE) & (sample.str.count(r"\d") >= 7) & ~dates
    grouped = sample.str.contains(r"^\+|\(|\d[\s/-]+\d")  # +49 ..., (555) ..., 555-0100: not a plain number
    if phone_like.mean() >= 0.5 and (_PHONE_NAME.search(name) or grouped[phone_like].mean() >= 0.5):
        return "phone numbers"
    if _PERSON_NAME.search(name.strip()):
        return "personal data (by its name)"
    return None


def _numbers(filled: pd.Series, base: dict[str, Any], missing: str) -> Profile | None:
    """A column of numbers (integer or numeric); a few text values among them are proposed as missing."""
    numbers = pd.to_numeric(filled, errors="coerce")
    parsed = numbers.notna() & np.isfinite(numbers.astype("float64"))
    if not parsed.any():
        if filled.str.match(_DECIMAL_COMMA).mean() >= 0.9 and filled.str.contains(",").any():
            return Profile(**base, kind=DECIMAL_COMMA, detail="numbers written with a decimal comma")
        return None
    others = filled[~parsed]
    markers: tuple[str, ...] = ()
    if len(others):
        distinct = others.value_counts()
        if len(distinct) > 2 or len(others) > 0.5 * len(filled) or parsed.sum() < 20:
            return None
        markers = tuple(str(value) for value in distinct.index)
    present = numbers[parsed].astype("float64")
    whole = bool((present == np.floor(present)).all())
    kind = INTEGER if whole else NUMERIC
    low, high = present.min(), present.max()
    words = "whole numbers" if whole else "numbers"
    detail = f"{words} {_number(low)} to {_number(high)}{missing}"
    if markers:
        detail += "; " + ", ".join(
            f"{value!r} ({_count(int((others == value).sum()), 'row')})" for value in markers
        )
        detail += " read as missing"
    return Profile(
        **base,
        kind=kind,
        detail=detail,
        number_markers=markers,
        sentinel=_sentinel(present),
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def _sentinel(numbers: pd.Series) -> str | None:
    """A number standing apart from the rest that may mean "never" (``-1`` days since a contact)."""
    for value in NUMERIC_SENTINELS:
        marked = numbers == value
        share = float(marked.mean())
        if share < 0.05 or marked.all():
            continue
        rest = numbers[~marked]
        if (value < 0 and rest.min() >= 0) or (value > 0 and rest.max() < value / 2):
            others = ">= 0" if value < 0 else "far below"
            return f"{_number(value)} in {share:.0%} of its rows, every other value {others}"
    return None


def _dates(filled: pd.Series, base: dict[str, Any], missing: str) -> Profile | None:
    """A column of ISO 8601 timestamps (what the contract reads), or dates in another form."""
    if filled.str.match(_ISO_DATE).mean() >= 0.99:
        parsed = pd.to_datetime(filled, format="ISO8601", utc=True, errors="coerce")
        if parsed.notna().mean() >= 0.99:
            detail = f"dates {parsed.min():%Y-%m-%d} to {parsed.max():%Y-%m-%d}{missing}"
            return Profile(**base, kind=TIMESTAMP, detail=detail, median_date=parsed.median())
    if filled.str.match(_OTHER_DATE).mean() >= 0.9:
        example = str(filled.iloc[0])
        return Profile(**base, kind=DATE_TEXT, detail=f"dates written like {example!r}")
    return None


def placeholder_markers(profiles: Mapping[str, Profile]) -> tuple[Entry, ...]:
    """Values standing for "nothing chosen" (X Education's ``Select``), for ``missing_markers``."""
    found: dict[str, list[str]] = {}
    for profile in profiles.values():
        for value in profile.placeholders:
            found.setdefault(value, []).append(profile.name)
    entries = []
    for value, columns in sorted(found.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(columns[:4]) + (f" and {len(columns) - 4} more" if len(columns) > 4 else "")
        entries.append(
            Entry(
                value, f"{value!r} stands for 'nothing chosen' in {_count(len(columns), 'column')} ({shown})"
            )
        )
    return tuple(entries)


def number_markers(profiles: Mapping[str, Profile]) -> tuple[Entry, ...]:
    """A few text values in a column of numbers (``n/a``-like): missing, for ``missing_markers``.

    Every column's markers, because a column's own ``missing_values`` must be numbers in a number
    column (the contract compares them as numbers)."""
    found: dict[str, list[str]] = {}
    for profile in profiles.values():
        for value in profile.number_markers:
            found.setdefault(value, []).append(profile.name)
    return tuple(
        Entry(value, f"{value!r} stands among the numbers of {', '.join(columns)}")
        for value, columns in found.items()
    )


# --------------------------------------------------------------------------- choices
def choose_target(profiles: Mapping[str, Profile], forced: str | None = None) -> Target | None:
    """The outcome column (2-5 values, named like an outcome, or the only yes/no column) and its values.

    Values are sorted into positive (won, converted, yes, 1, true ...), negative (lost, no, 0 ...)
    and open (open, new, in progress ...). A value none of the word lists knows goes under open,
    never a label, with a note: an unknown value counted as a loss would teach the model wrong.
    """
    if forced is not None:
        if forced not in profiles:
            raise LeadmlError(f"--target {forced!r} is not a column; columns: {', '.join(profiles)}")
        return target_values(profiles[forced], "named with --target")
    candidates = [
        profile
        for profile in profiles.values()
        if TARGET_VALUES[0] <= profile.distinct <= TARGET_VALUES[1]
        and profile.filled >= 0.95 * profile.rows
        and profile.kind in (BOOLEAN, CATEGORICAL, INTEGER)
        and not profile.personal
    ]
    named = [profile for profile in candidates if _TARGET_NAME.search(profile.name)]
    proposals = [target_values(profile, "named like an outcome") for profile in named]
    known = [target for target in proposals if target.positive and not target.notes]
    if known:
        return known[0]
    if proposals and proposals[0].positive:
        return proposals[0]
    binary = [profile for profile in candidates if profile.distinct == 2]
    if len(binary) == 1:
        return target_values(binary[0], "the only column with two values")
    return None


def target_values(profile: Profile, reason: str) -> Target:
    """Positive, negative and open values of a target column, with the counts as evidence."""
    positive, negative, open_, unsure = [], [], [], []
    for value, _ in profile.values if profile.distinct <= 8 else ():
        token = normalise_token(value)
        if token in POSITIVE_TOKENS:
            positive.append(value)
        elif token in NEGATIVE_TOKENS:
            negative.append(value)
        elif token in OPEN_TOKENS:
            open_.append(value)
        else:
            unsure.append(value)
    notes = []
    if not positive and unsure and len(unsure) + len(negative) == 2 and not open_:
        # two values and no known positive word: the rarer unknown one is the conversion (usually)
        rarer = min(unsure, key=lambda value: dict(profile.values)[value])
        positive.append(rarer)
        unsure.remove(rarer)
        notes.append(
            f"{rarer!r} taken as positive because it is the rarer value; swap if it is the other way round"
        )
    if unsure:
        shown = ", ".join(repr(value) for value in unsure)
        notes.append(
            f"{shown} under open (scored, never a label) because it names no outcome; move it to positive "
            "or negative if it is one"
        )
        if not negative and len(unsure) == 1 and positive:
            negative, unsure = unsure, []
            notes[-1] = f"{negative[0]!r} taken as negative: the only other value"
        open_ += unsure
    counts = dict(profile.values)
    shown_counts = ", ".join(f"{value} ({counts[value]:,} rows)" for value, _ in profile.values)
    why = f"{_count(profile.distinct, 'value')}: {shown_counts}; {reason}"
    return Target(
        profile.name,
        tuple(_yaml_value(value) for value in positive),
        tuple(_yaml_value(value) for value in negative),
        tuple(_yaml_value(value) for value in open_),
        why,
        tuple(notes),
    )


def _yaml_value(value: str) -> Any:
    """A target value as the config writes it: whole numbers as numbers (``1``), text as written."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def choose_id(profiles: Mapping[str, Profile], frame: pd.DataFrame) -> Entry:
    """The lead id: a column filled in every row with no value twice, preferably named like an id
    and text; ``source_row`` (the row number) when there is none."""
    candidates = [
        profile
        for profile in profiles.values()
        if profile.unique and profile.kind in (TEXT, CATEGORICAL, INTEGER) and not profile.personal
    ]
    if not candidates:
        return Entry(
            SOURCE_ROW, "no column is filled in every row with no value twice: the row number is the id"
        )
    candidates.sort(
        key=lambda p: (
            not _ID_NAME.search(p.name),
            p.kind == INTEGER and _follows_rows(frame[p.name]) is not None,
        )
    )
    chosen = candidates[0]
    return Entry(chosen.name, f"{chosen.rows:,} unique values, none missing: the id")


def _follows_rows(values: pd.Series) -> float | None:
    """Rank correlation of a column of numbers with the row number, when it is strong (None: it is not)."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or len(numbers) < 3:
        return None
    correlation = numbers.rank().corr(
        pd.Series(np.arange(len(numbers)), index=numbers.index, dtype="float64")
    )
    return float(correlation) if abs(correlation) >= ORDER_CORRELATION else None


def choose_time(profiles: Mapping[str, Profile]) -> tuple[Entry | None, tuple[Entry, ...]]:
    """The time column (as_of: when the lead arrived) and the other date columns (dropped).

    Of the date columns filled in at least 95% of rows, the one named like a creation date, else
    the one with the earliest values: a lead is scored when it arrives, so later dates (closed,
    last activity) are not known then. Every other date column is dropped: a flat table's
    features are its columns as they are, and a date is not a feature.
    """
    dates = [profile for profile in profiles.values() if profile.kind == TIMESTAMP]
    usable = [profile for profile in dates if profile.filled >= 0.95 * profile.rows]
    if not usable:
        return None, tuple(
            Entry(p.name, f"{p.detail}: too often missing to be the time column; {NOT_A_FEATURE}")
            for p in dates
        )
    usable.sort(
        key=lambda p: (not _CREATED_NAME.search(p.name), bool(_LATER_NAME.search(p.name)), p.median_date)
    )
    chosen = usable[0]
    reasons = []
    if _CREATED_NAME.search(chosen.name):
        reasons.append("named like a creation date")
    if len(dates) > 1:
        reasons.append(
            f"the earliest of {len(dates)} date columns"
            if chosen.median_date == min(p.median_date for p in usable)
            else f"one of {len(dates)} date columns"
        )
    why = (
        f"{chosen.detail}"
        + (f"; {', '.join(reasons)}" if reasons else "")
        + ": when the lead arrived (as_of, split=time)"
    )
    dropped = tuple(
        Entry(p.name, f"{p.detail}: a date other than the time column; {NOT_A_FEATURE}")
        for p in dates
        if p.name != chosen.name
    )
    return Entry(chosen.name, why), dropped


def choose_order(profiles: Mapping[str, Profile], frame: pd.DataFrame, id_column: str) -> Entry | None:
    """Without a time column: what orders the rows in time, for split=order.

    An increasing unique number that follows the rows (``Lead Number``; rank correlation with the
    row number of at least 0.9 either way) or is named like one; else ``source_row`` when the file
    looks sorted by time (the id follows the rows, or a column's values recur in long runs as
    months do in a file in date order); else None (leadml-train then splits at random).
    """
    numbered = []
    for profile in profiles.values():
        if profile.kind != INTEGER or not profile.unique or profile.name == id_column:
            continue
        correlation = _follows_rows(frame[profile.name])
        if correlation is not None or _ORDER_NAME.search(profile.name):
            numbered.append((profile, correlation))
    if numbered:
        numbered.sort(key=lambda item: -abs(item[1] or 0.0))
        profile, correlation = numbered[0]
        if correlation is None:
            why = "unique whole numbers named like a sequence number: the order the leads came in"
        else:
            way = "the rows" if correlation > 0 else "the rows backwards: the file lists the newest first"
            why = (
                f"unique whole numbers that follow {way} (rank correlation {correlation:+.2f} with the row "
                "number); the order the leads came in"
            )
        return Entry(profile.name, why + " (split=order)")
    if id_column != SOURCE_ROW:
        correlation = _follows_rows(frame[id_column])
        if correlation is not None and correlation > 0:
            why = f"the id {id_column} increases with the row number: the file is in arrival order"
            return Entry(SOURCE_ROW, why + " (split=order)")
    runs = _recurring_runs(profiles, frame)
    if runs is not None:
        return Entry(
            SOURCE_ROW, runs + ": the file looks sorted by time, so the row number orders it (split=order)"
        )
    return None


def _recurring_runs(profiles: Mapping[str, Profile], frame: pd.DataFrame) -> str | None:
    """Evidence that the rows are sorted by time: the column whose values come in the fewest runs
    against what shuffled rows would give (at most 5% of them), yet recur (more runs than values, as
    months do over several years). A column sorted alphabetically has one run per value and is no
    evidence; a nearly constant one has few runs shuffled too."""
    rows = len(frame)
    best: tuple[float, str] | None = None
    for profile in profiles.values():
        if profile.kind not in (CATEGORICAL, INTEGER) or profile.distinct < 2 or profile.filled < rows:
            continue
        values = frame[profile.name]
        runs = int((values != values.shift()).sum())
        shares = values.value_counts(normalize=True).to_numpy()
        shuffled = 1 + (rows - 1) * (1 - float((shares**2).sum()))
        ratio = runs / shuffled
        if (
            shuffled >= 50
            and profile.distinct < runs
            and ratio <= RUN_SHARE
            and (best is None or ratio < best[0])
        ):
            best = (
                ratio,
                f"{profile.name} comes in {runs:,} runs of its {profile.distinct:,} values over {rows:,} "
                f"rows (shuffled rows would give about {shuffled:,.0f})",
            )
    return best[1] if best else None


def family_of(column: str) -> str | None:
    """The feature family (source, engagement, fit) a column's name suggests; None: other."""
    for family, pattern in FAMILY_NAMES:
        if pattern.search(column):
            return family
    return None


# --------------------------------------------------------------------------- outcomes from a second file
def choose_outcomes(
    leads: pd.DataFrame,
    profiles: Mapping[str, Profile],
    time: Entry | None,
    events: pd.DataFrame,
    source: Source,
    first_path: Path,
) -> Outcomes:
    """An ``outcomes:`` block: the second file's column holding the leads' id values, and its date.

    The id is the leads' unique column that holds most of the second file's values (at least 90%:
    an outcome of an unknown lead is quarantined). The date is the second file's ISO date column,
    preferably named like the event (won, closed). ``horizon_days`` is the project's default 90,
    with the measured days from the leads' time to the event as evidence. ``observed_from``:
    when no outcome is dated before some day although leads start much earlier, and the leads
    before it converted within the horizon at under a fifth of the rate of those after, outcomes
    were not recorded yet: those leads are not labelled rather than taught as losses.
    """
    if time is None:
        raise LeadmlError(
            f"{first_path}: outcomes from a second file need this file's own time column (the horizon "
            "starts there), and none of its columns holds ISO 8601 dates"
        )
    link = _linked_columns(leads, profiles, events)
    if link is None:
        raise LeadmlError(
            f"{source.path}: no column holds the values of a unique column of the first file (its lead id), "
            "so it cannot label the leads"
        )
    lead_id, event_id, share = link
    event_profiles = {column: profile_column(column, events[column]) for column in events.columns}
    dates = [
        profile
        for profile in event_profiles.values()
        if profile.kind == TIMESTAMP and profile.filled >= 0.95 * profile.rows and profile.name != event_id
    ]
    if not dates:
        raise LeadmlError(
            f"{source.path}: no column holds ISO 8601 dates filled in every row: the outcome's date is "
            "needed to label leads within a horizon"
        )
    dates.sort(key=lambda p: (not _EVENT_NAME.search(p.name), p.filled < p.rows, p.median_date))
    event_time = dates[0].name
    lead_times = pd.to_datetime(cleaned_text(leads[time.column]), format="ISO8601", utc=True, errors="coerce")
    lead_times.index = as_text(leads[lead_id])
    event_times = pd.to_datetime(
        cleaned_text(events[event_time]), format="ISO8601", utc=True, errors="coerce"
    )
    event_times.index = as_text(events[event_id])
    event_times = event_times[~event_times.index.duplicated()]
    why = [
        f"{event_id}: {share:.0%} of its {int(events[event_id].notna().sum()):,} values are {lead_id} values "
        f"of the first file (the lead id); {event_time}: {dates[0].detail}, the date of the outcome",
        *_horizon_evidence(lead_times, event_times),
    ]
    observed_from, evidence = _observed_from(lead_times, event_times)
    if evidence:
        why.append(evidence)
    return Outcomes(source, lead_id, event_id, event_time, HORIZON_DAYS, observed_from, tuple(why))


def _linked_columns(
    leads: pd.DataFrame, profiles: Mapping[str, Profile], events: pd.DataFrame
) -> tuple[str, str, float] | None:
    """(leads' id column, the events' column holding its values, the share held), the best pair."""
    best: tuple[str, str, float] | None = None
    for profile in profiles.values():
        if not profile.unique or profile.personal:
            continue
        ids = set(as_text(leads[profile.name]))
        for column in events.columns:
            present = as_text(events[column]).dropna()
            if present.empty:
                continue
            share = float(present.isin(ids).mean())
            if share >= 0.9 and (best is None or share > best[2]):
                best = (profile.name, str(column), share)
    return best


def _horizon_evidence(lead_times: pd.Series, event_times: pd.Series) -> list[str]:
    """Days from the lead's time to its outcome, as quantiles: the evidence for the horizon."""
    days = ((event_times - lead_times.reindex(event_times.index)).dt.total_seconds() / 86400).dropna()
    if days.empty:
        return []
    quantiles = days.quantile([0.5, 0.8, 0.9])
    within = float((days <= HORIZON_DAYS).mean())
    return [
        f"days from the lead's time to its outcome: median {quantiles[0.5]:.1f}, 80% {quantiles[0.8]:.1f}, "
        f"90% {quantiles[0.9]:.1f}; {HORIZON_DAYS} days (the project's default horizon) holds {within:.0%} "
        "of them: a lead is positive when its outcome comes within horizon_days of its time"
    ]


def _observed_from(lead_times: pd.Series, event_times: pd.Series) -> tuple[str | None, str | None]:
    """The day outcomes begin to be recorded, when the leads before it look unobserved (see
    :func:`choose_outcomes`); (None, None) otherwise."""
    first_event = event_times.min()
    if pd.isna(first_event):
        return None, None
    day = first_event.normalize()
    before = lead_times < day
    if before.mean() < 0.05 or lead_times.min() > day - pd.Timedelta(days=30):
        return None, None
    delay = event_times.reindex(lead_times.index) - lead_times
    won = (delay >= pd.Timedelta(0)) & (delay <= pd.Timedelta(days=HORIZON_DAYS))
    rate_before, rate_after = float(won[before].mean()), float(won[~before].mean())
    if rate_after == 0 or rate_before >= rate_after / 5:
        return None, None
    return f"{day:%Y-%m-%d}", (
        f"observed_from: no outcome is dated before {day:%Y-%m-%d} although leads start "
        f"{lead_times.min():%Y-%m-%d}, and the {int(before.sum()):,} leads before it have an outcome within "
        f"{HORIZON_DAYS} days at {rate_before:.1%} against {rate_after:.1%} after it: outcomes were not "
        "recorded yet, so those leads are not labelled (null labels them, as losses)"
    )


# --------------------------------------------------------------------------- the proposal
def propose(
    frame: pd.DataFrame,
    source: Source,
    name: str,
    *,
    target: str | None = None,
    events: pd.DataFrame | None = None,
    events_source: Source | None = None,
) -> Proposal:
    """The data config for ``frame`` (read from ``source``), before it is checked (see :func:`check`).

    ``events`` (read from ``events_source``): a second table of dated outcomes (won deals) that
    labels the leads instead of a target column.
    """
    raw_profiles = {str(column): profile_column(str(column), frame[column]) for column in frame.columns}
    markers = placeholder_markers(raw_profiles) + number_markers(raw_profiles)
    marker_values = [entry.column for entry in markers]
    profiles = {
        column: profile_column(column, frame[column], marker_values) if marker_values else profile
        for column, profile in raw_profiles.items()
    }
    drop: list[Entry] = []
    reserved = [column for column in profiles if column in RESERVED or not column.strip()]
    for column in reserved:
        drop.append(
            Entry(column, "a column leadml adds under this name (or one without a name) cannot be kept")
        )
        profiles.pop(column)
    time, other_dates = choose_time(profiles)
    outcomes = None
    if events is not None and events_source is not None:
        outcomes = choose_outcomes(frame, profiles, time, events, events_source, source.path)
        proposed_target = None
        id_entry = Entry(
            outcomes.lead_id,
            f"{len(frame):,} unique values, none missing, and the outcomes' ids are its values: the id",
        )
    else:
        proposed_target = choose_target(profiles, target)
        if proposed_target is None:
            raise LeadmlError(
                f"{source.path}: no column looks like the outcome (2 to 5 values, named like status, "
                "converted, won, outcome, stage or y, or the only yes/no column): name it with --target "
                "COLUMN, or give the outcomes (won deals: the lead id and a date) as a second file"
            )
        id_entry = choose_id(profiles, frame)
    order = None if time is not None else choose_order(profiles, frame, id_entry.column)
    taken = {id_entry.column, time.column if time else None, order.column if order else None}
    if proposed_target is not None:
        taken.add(proposed_target.column)
    drop += list(other_dates)
    rest = [profile for column, profile in profiles.items() if column not in taken | {e.column for e in drop}]
    groups, dropped, notes = grouped(rest)
    families = {
        entry.column: family
        for group in ("boolean", "integer", "numeric", "categorical")
        for entry in groups.get(group, ())
        if (family := family_of(entry.column))
    }
    return Proposal(
        name=name,
        source=source,
        rows=len(frame),
        columns=frame.shape[1],
        id=id_entry,
        target=proposed_target,
        outcomes=outcomes,
        time=time,
        order=order,
        drop=(*drop, *dropped),
        groups=groups,
        missing_markers=markers,
        missing_notes=notes,
        families=families,
    )


def grouped(
    profiles: Iterable[Profile],
) -> tuple[dict[str, tuple[Entry, ...]], tuple[Entry, ...], tuple[str, ...]]:
    """The contract groups of the columns that are not id, target or time (each with its evidence),
    the columns to drop with the reason, and the commented missing-value proposals."""
    groups: dict[str, list[Entry]] = {group: [] for group in GROUPS}
    dropped: list[Entry] = []
    notes: list[str] = []
    for profile in profiles:
        placed = _place(profile)
        if isinstance(placed, Entry):
            dropped.append(placed)
            continue
        groups[placed].append(Entry(profile.name, profile.detail))
        if note := _maybe_missing_note(profile):
            notes.append(note)
    return (
        {group: tuple(entries) for group, entries in groups.items() if entries},
        tuple(dropped),
        tuple(notes),
    )


def _place(profile: Profile) -> str | Entry:
    """The contract group of a column that is not id, target or time, or an Entry to drop it."""
    if profile.personal:
        return "personal"
    if profile.kind == EMPTY:
        return Entry(profile.name, "empty in every row")
    if profile.kind == CONSTANT:
        return Entry(profile.name, f"{profile.detail}: carries nothing")
    if profile.kind == TEXT:
        return Entry(profile.name, f"{profile.detail}: free text or a key, no use as a category")
    if profile.kind == DATE_TEXT:
        return Entry(
            profile.name,
            f"{profile.detail}: the contract reads ISO 8601 dates (2024-02-13) only; {NOT_A_FEATURE}",
        )
    if profile.kind == DECIMAL_COMMA:
        return Entry(
            profile.name,
            f"{profile.detail}: the contract reads a decimal point only; write it with one to keep it",
        )
    if profile.kind == INTEGER and profile.unique:
        return Entry(profile.name, "unique whole numbers in every row: a key, not a feature")
    return {BOOLEAN: "boolean", INTEGER: "integer", NUMERIC: "numeric"}.get(profile.kind, "categorical")


def _maybe_missing_note(profile: Profile) -> str | None:
    """A commented proposal for a value that may mean "missing" (conservative: never applied)."""
    if profile.maybe_missing and profile.kind in (CATEGORICAL, BOOLEAN):
        return f"{profile.name}: [{', '.join(_scalar(value) for value in profile.maybe_missing)}]"
    if profile.sentinel and profile.kind in (INTEGER, NUMERIC):
        value = profile.sentinel.split(" ")[0].replace(",", "")
        return f"{profile.name}: [{value}]  # {profile.sentinel}"
    return None


# --------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class Checked:
    """What ingestion made of the proposal: rows, labels, bad shares and the training rows."""

    input_rows: int
    accepted_rows: int
    labelled: int
    positives: int
    open_rows: int
    excluded_rows: int
    bad_shares: Mapping[str, float]
    reasons: Mapping[str, Mapping[str, int]]
    snapshots: pd.DataFrame


def data_section(text: str) -> dict[str, Any]:
    """The ``data`` mapping a written config gives (as Hydra reads the YAML: through OmegaConf)."""

    values = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    assert isinstance(values, dict)
    return dict(values["data"]) if "data" in values and isinstance(values["data"], dict) else dict(values)


def check(text: str, frame: pd.DataFrame, events: pd.DataFrame | None = None) -> Checked:
    """Run the written config's contract over the frames in memory, as ``leadml-ingest`` would, and
    build the training rows as ``leadml-features`` would (nothing is written)."""

    data = data_section(text)
    contract = flat_contract(data["contract"], data.get("outcomes"))
    settings = IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})
    result = ingest_flat(
        frame,
        contract,
        settings,
        source=str(data["table"]["path"]),
        enforce_bad_share=False,
        outcomes=events if contract.outcomes is not None else None,
    )
    table = result.tables[contract.table.name]
    snapshots = flat_snapshots(table, personal=data["contract"].get("personal") or ())
    report = result.reports[contract.table.name]
    open_rows = sum(len(rows) for rows in result.open_rows.values())
    return Checked(
        input_rows=report.input_rows,
        accepted_rows=report.accepted_rows,
        labelled=len(table),
        positives=int(table[LABEL].sum()),
        open_rows=open_rows,
        excluded_rows=report.excluded_rows,
        bad_shares={name: float(item.bad_share) for name, item in result.reports.items()},
        reasons={name: dict(item.reason_counts) for name, item in result.reports.items()},
        snapshots=snapshots,
    )


def suspects(snapshots: pd.DataFrame) -> tuple[list[Entry], str]:
    """The features that look filled in after the outcome, with the leakage sentinel's evidence;
    and a line naming the strongest features kept.

    The sentinel's own report (:func:`leadml.modelling.guards.leakage_report`, its default thresholds) on
    every labelled row: single-feature AUC above 0.95, filled for most positives and few
    negatives, or a category with 10% of its rows in levels whose outcome is all but certain. The
    last test is applied to numbers too, on the sentinel's quantile bins (:func:`value_bins`): a
    range of values that nearly fixes the outcome (bank's call ``duration``: no call under a
    minute ends in a subscription) is what a value recorded at the outcome looks like. Training
    leaves numbers to the AUC test; here it is a proposal the user reviews.
    """
    meta = flat_feature_metadata(snapshots, {})
    if not meta or snapshots[LABEL].nunique() < 2:
        return [], ""
    report = leakage_report(snapshots, meta, label=LABEL, group_column=s.LEAD_ID)
    labels = snapshots[LABEL].to_numpy(dtype="float64")
    found: list[Entry] = []
    kept: list[str] = []
    for row in report.itertuples():
        name = str(row.feature)
        shares = f"{row.present_positive:.0%} of positive rows and {row.present_negative:.0%} of the others"
        presence = f"filled for {shares}"
        evidence = [f"single-feature AUC {row.auc:.2f}"] if row.too_predictive else []
        if row.post_outcome:
            evidence.append(presence)
        if row.outcome_coded:
            levels = str(row.outcome_levels).split("; ")
            rates = _level_rates(snapshots[name], labels, levels)
            evidence.append(
                f"{row.outcome_levels_share:.0%} of rows in levels that name the outcome ({rates})"
            )
        elif row.kind == "numeric":
            bins = pd.Series(value_bins(snapshots[name], "numeric"), index=snapshots.index)
            share, levels = outcome_coded_levels(bins, labels, OutcomeLevelSettings())
            if share >= OutcomeLevelSettings().max_share:
                rates = _range_rates(snapshots[name], bins, labels, levels)
                evidence.append(f"{share:.0%} of rows in value ranges that name the outcome ({rates})")
        if not evidence:
            if len(kept) < 3:
                kept.append(f"{name} {row.strength:.2f}")
            continue
        if not row.too_predictive:
            evidence.insert(0, f"single-feature AUC {row.auc:.2f}")
        if not row.post_outcome and abs(row.present_positive - row.present_negative) >= 0.1:
            evidence.append(presence)
        found.append(Entry(name, "; ".join(evidence)))
    strongest = f"the strongest kept, by single-feature max(AUC, 1 - AUC): {', '.join(kept)}" if kept else ""
    return found, strongest


def _level_rates(values: pd.Series, labels: np.ndarray, levels: Sequence[str], shown: int = 4) -> str:
    """The first outcome-coded levels of a category with their positive rate."""
    text = values.astype("string").fillna("(missing)").to_numpy()
    rates = pd.Series(labels).groupby(text).mean()
    parts = [f"{_shown(level)} {rates.get(level, float('nan')):.0%} positive" for level in levels[:shown]]
    return ", ".join(parts) + (f" and {len(levels) - shown} more" if len(levels) > shown else "")


def _range_rates(
    values: pd.Series, bins: pd.Series, labels: np.ndarray, levels: Sequence[str], shown: int = 3
) -> str:
    """Value ranges of the outcome-coded bins with their positive rate; neighbouring bins that name
    the same outcome (both nearly all positive, or both nearly none) are merged into one range."""
    missing_bin = int(bins[values.isna()].iloc[0]) if values.isna().any() else None
    base = float(labels.mean())
    high = {int(level): bool(labels[(bins == int(level)).to_numpy()].mean() > base) for level in levels}
    runs: list[list[int]] = []
    for code in sorted(high):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and code == last + 1
            and missing_bin not in (code, last)
            and high[code] == high[last]
        ):
            runs[-1].append(code)
        else:
            runs.append([code])
    parts = []
    for run in runs:
        rows = bins.isin(run).to_numpy()
        rate = float(labels[rows].mean())
        if run == [missing_bin]:
            parts.append(f"missing: {rate:.1%} positive")
        else:
            inside = values[rows]
            parts.append(f"{_number(inside.min())} to {_number(inside.max())}: {rate:.1%} positive")
    return ", ".join(parts[:shown]) + (f" and {len(parts) - shown} more" if len(parts) > shown else "")


# --------------------------------------------------------------------------- finishing
def finish(
    proposal: Proposal, frame: pd.DataFrame, events: pd.DataFrame | None = None
) -> tuple[Proposal, str]:
    """Check the proposal through ingestion, measure the suspicious columns on the label it gives,
    size the split and the bad-row threshold to the data; the final proposal and its YAML."""
    first = check(render(proposal), frame, events)
    found, strongest = suspects(first.snapshots)
    proposal = _without(proposal, found)
    proposal = replace(proposal, suspects=tuple(found), kept_strongest=strongest)
    proposal = _with_bad_share(proposal, first)
    proposal = _with_split(proposal, first)
    text = render(proposal)
    final = check(text, frame, events)
    proposal = replace(proposal, notes=_notes(proposal, final))
    return proposal, render(proposal)


def _without(proposal: Proposal, dropped: Sequence[Entry]) -> Proposal:
    """The proposal with ``dropped`` columns out of the groups, families and missing-value notes."""
    names = {entry.column for entry in dropped}
    groups = {
        group: kept
        for group, entries in proposal.groups.items()
        if (kept := tuple(entry for entry in entries if entry.column not in names))
    }
    return replace(
        proposal,
        groups=groups,
        families={column: family for column, family in proposal.families.items() if column not in names},
        missing_notes=tuple(note for note in proposal.missing_notes if note.split(":")[0] not in names),
    )


def _with_bad_share(proposal: Proposal, checked: Checked) -> Proposal:
    """Raise ``max_bad_share`` above the share the file has, saying which reasons quarantine rows."""
    worst = max(checked.bad_shares.values(), default=0.0)
    if worst <= MAX_BAD_SHARE:
        return proposal
    reasons = {reason: count for table in checked.reasons.values() for reason, count in table.items()}
    top = ", ".join(
        f"{reason} ({count:,})" for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:3]
    )
    share = math.ceil(worst * 100 + 1) / 100
    why = (
        f"{worst:.1%} of the rows break the contract ({top}): above the default {MAX_BAD_SHARE:.0%}, so "
        f"set to {share:.2f}; look at quarantine/ after ingest"
    )
    return replace(proposal, max_bad_share=share, bad_share_why=why)


def _with_split(proposal: Proposal, checked: Checked) -> Proposal:
    """Shorter time windows when the labelled rows span less than a year (the default test and
    calibration windows are 3 months each, which would leave little or nothing to train on)."""
    if proposal.time is None or s.AS_OF not in checked.snapshots.columns or checked.snapshots.empty:
        return proposal
    times = checked.snapshots[s.AS_OF]
    months = (times.max() - times.min()).days / 30.44
    if months >= 4 * DEFAULT_WINDOW_MONTHS:
        return proposal
    window = max(1, min(DEFAULT_WINDOW_MONTHS, int(months // 4)))
    why = (
        f"the labelled rows span {months:.1f} months ({times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}): "
        f"test and calibration windows of {_count(window, 'month')} each leave the rest to train on "
        f"(the default is {DEFAULT_WINDOW_MONTHS} months each)"
    )
    return replace(proposal, split={"test_months": window, "calibration_months": window}, split_why=why)


def _notes(proposal: Proposal, checked: Checked) -> tuple[str, ...]:
    rate = checked.positives / checked.labelled if checked.labelled else 0.0
    quarantined = checked.input_rows - checked.accepted_rows - checked.excluded_rows
    line = (
        f"Checked through the contract: {checked.accepted_rows:,} of {checked.input_rows:,} rows accepted"
        + (f", {quarantined:,} quarantined" if quarantined else "")
        + (f", {checked.excluded_rows:,} not labelled" if checked.excluded_rows else "")
        + f"; {checked.labelled:,} labelled, {checked.positives:,} positive ({rate:.1%})"
        + (f", {checked.open_rows:,} open" if checked.open_rows else "")
        + "."
    )
    notes = [line]
    train_rows, train_positives = checked.labelled * TRAIN_SHARE, checked.positives * TRAIN_SHARE
    if train_rows < MIN_SNAPSHOTS or train_positives < MIN_POSITIVES:
        notes.append(
            f"Small for training: about {train_rows:,.0f} rows and {train_positives:,.0f} positives fall in "
            f"the training window, and leadml-train asks for {MIN_SNAPSHOTS:,} and {MIN_POSITIVES:,} "
            "(guards.min_snapshots, guards.min_positives); lower them knowing the model will be less reliable"
        )
    return tuple(notes)


# --------------------------------------------------------------------------- YAML
def _scalar(value: Any) -> str:
    """A YAML scalar that reads back (through OmegaConf, as Hydra reads it) as exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN_SCALAR.fullmatch(text) and ": " not in text and " #" not in text and _reads_back(text):
        return text
    return json.dumps(text.replace("${", "\\${"), ensure_ascii=False)


def _reads_back(text: str) -> bool:

    try:
        return OmegaConf.create(f"k: {text}\n")["k"] == text
    except Exception:  # anything OmegaConf cannot read as a plain scalar is quoted instead
        return False


def _flow(values: Iterable[Any]) -> str:
    return "[" + ", ".join(_scalar(value) for value in values) + "]"


def _comment(text: str, indent: str, width: int = YAML_WIDTH) -> list[str]:
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}# ",
        break_on_hyphens=False,
    ) or [f"{indent}#"]


def _item(value: Any, why: str, indent: str) -> list[str]:
    """A block list item with its reason: on the same line when short, else on the lines above."""
    line = f"{indent}- {_scalar(value)}"
    if len(line) + len(why) + 4 <= YAML_WIDTH:
        return [f"{line}  # {why}"]
    return [*_comment(why, indent), line]


def _key(key: str, value: str, why: str, indent: str) -> list[str]:
    line = f"{indent}{key}: {value}"
    if not why:
        return [line]
    if len(line) + len(why) + 4 <= YAML_WIDTH:
        return [f"{line}  # {why}"]
    return [*_comment(why, indent), line]


def render(proposal: Proposal) -> str:
    """The commented YAML of a proposal (a global package when it chooses the split)."""
    lines = _header(proposal)
    indent = ""
    if proposal.global_package:
        lines.insert(0, "# @package _global_")
        if proposal.order is not None:
            lines += ["defaults:", "  - override /split: order", ""]
        if proposal.split:
            lines += _comment(proposal.split_why, "")
            lines.append("split:")
            lines += [f"  {key}: {value}" for key, value in proposal.split.items()]
            lines.append("")
        lines.append("data:")
        indent = "  "
    lines += _data_lines(proposal, indent)
    return "\n".join(lines) + "\n"


def _header(proposal: Proposal) -> list[str]:
    source = proposal.source
    how = ", ".join(source.notes)
    text = [
        f"Data set {proposal.name}, proposed by leadml-init from {source.path.name} ({proposal.rows:,} rows, "
        f"{proposal.columns:,} columns; {how}). Each entry says why it was proposed: read them and edit "
        f"what is wrong; as it is, it trains: leadml-train data={proposal.name}.",
        *proposal.notes,
    ]
    if proposal.global_package:
        what = "choose split=order: there is no time column" if proposal.order else "set the split's windows"
        text.append(f"A global package, so that it can {what}; the data settings are under data:.")
    lines = []
    for paragraph in text:
        lines += _comment(paragraph, "")
    return [*lines, ""]


def _data_lines(proposal: Proposal, indent: str) -> list[str]:
    inner = indent + "  "
    lines = [f"{indent}name: {_scalar(proposal.name)}", f"{indent}kind: flat"]
    lines += _key("timezone", "UTC", "timestamps without an offset are read in this zone", indent)
    lines += _key(
        "max_bad_share",
        f"{proposal.max_bad_share:g}",
        proposal.bad_share_why or "share of rows the contract may quarantine",
        indent,
    )
    if proposal.missing_markers:
        reasons = "; ".join(entry.why for entry in proposal.missing_markers)
        lines += _comment(f"read as missing in every column: {reasons}", indent)
        lines.append(f"{indent}missing_markers: {_flow(entry.column for entry in proposal.missing_markers)}")
    lines.append(f"{indent}table:")
    lines += _table_lines(proposal.source, inner)
    lines.append(f"{indent}contract:")
    lines += _contract_lines(proposal, inner)
    if proposal.outcomes is not None:
        lines += _outcomes_lines(proposal.outcomes, indent)
    if proposal.families:
        lines += _comment(
            "feature families (reports group reasons and sub-scores by them), guessed from the column "
            "names; the rest is other",
            indent,
        )
        lines.append(f"{indent}families:")
        lines += [f"{inner}{_scalar(column)}: {family}" for column, family in proposal.families.items()]
    return lines


def _table_lines(source: Source, indent: str) -> list[str]:
    lines = _comment(
        "the file by its absolute path, so that leadml finds it whatever folder it runs in (a cron job, "
        "a config kept elsewhere); write it relative to that folder to move the project with its data",
        indent,
    )
    spec = source.spec()
    lines.append(f"{indent}format: {spec['format']}")
    lines.append(f"{indent}path: {_scalar(spec['path'])}")
    for key in ("sep", "encoding", "sheet"):
        if key in spec:
            lines.append(f"{indent}{key}: {json.dumps(spec[key], ensure_ascii=False)}")
    return lines


def _contract_lines(proposal: Proposal, indent: str) -> list[str]:
    item = indent + "  "
    lines = _key("id", _scalar(proposal.id.column), proposal.id.why, indent)
    target = proposal.target
    if target is not None:
        lines += _key("target", _scalar(target.column), target.why, indent)
        lines += _key("positive", _flow(target.positive), "converted", indent)
        lines += _key("negative", _flow(target.negative), "did not convert", indent)
        if target.open:
            lines += _key("open", _flow(target.open), "still open: never labels, scored every night", indent)
        for note in target.notes:
            lines += _comment(f"unsure: {note}", indent)
    if proposal.time is not None:
        lines += _key("time", _scalar(proposal.time.column), proposal.time.why, indent)
    elif proposal.order is not None:
        lines += _key("order", _scalar(proposal.order.column), proposal.order.why, indent)
    else:
        lines += _comment(
            "no time or order: no column holds ISO 8601 dates or a sequence number and the rows do not look "
            "sorted, so leadml-train splits the leads at random (the test figures are not out of time); add "
            "order: source_row if the file lists the leads in the order they came",
            indent,
        )
    if proposal.kept_strongest:
        flagged = (
            f"{_count(len(proposal.suspects), 'column')} flagged" if proposal.suspects else "none flagged"
        )
        lines += _comment(
            f"the leakage sentinel's measures on every labelled row: {flagged}; {proposal.kept_strongest}",
            indent,
        )
    if proposal.suspects or proposal.drop:
        lines.append(f"{indent}drop:")
        if proposal.suspects:
            lines += _comment(
                "looks filled in after the outcome (move it back to a group if it is known when the lead "
                "arrives):",
                item,
            )
            for entry in proposal.suspects:
                lines += _item(entry.column, entry.why, item)
        for entry in proposal.drop:
            lines += _item(entry.column, entry.why, item)
    for group in GROUPS:
        entries = proposal.groups.get(group, ())
        if not entries:
            continue
        if group == "personal":
            lines += _comment("personal data: validated, never a feature", indent)
        lines.append(f"{indent}{group}:")
        for entry in entries:
            lines += _item(entry.column, entry.why, item)
    if proposal.missing_notes:
        lines += _comment("missing_values:", indent)
        lines += _comment(
            "unsure: these may stand for 'missing' or be answers of their own; uncomment to read them "
            "as missing",
            item,
        )
        lines += [f"{item}# {note}" for note in proposal.missing_notes]
    return lines


def _outcomes_lines(outcomes: Outcomes, indent: str) -> list[str]:
    inner = indent + "  "
    lines = _comment("the label: an outcome (won deal) in a second table, joined by the id", indent)
    for why in outcomes.why:
        lines += _comment(why, indent)
    lines.append(f"{indent}outcomes:")
    lines.append(f"{inner}table:")
    lines += _table_lines(outcomes.source, inner + "  ")
    lines.append(f"{inner}id: {_scalar(outcomes.id)}")
    lines.append(f"{inner}time: {_scalar(outcomes.time)}")
    lines.append(f"{inner}horizon_days: {outcomes.horizon_days}")
    observed = json.dumps(outcomes.observed_from) if outcomes.observed_from else "null"
    lines += _key("observed_from", observed, "leads before it are not labelled", inner)
    lines += _key("observed_until", "null", "the latest timestamp in either table", inner)
    return lines


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
    found = _first_undecodable_byte(path, "utf-8")
    if found is None:
        return "utf-8", "every byte decodes as UTF-8"
    where = f"byte 0x{found[1]:02x} on line {found[0]:,} is not UTF-8"
    if _first_undecodable_byte(path, "cp1252") is None:
        return "cp1252", f"{where}; every byte decodes as Windows-1252"
    return "latin-1", f"{where}, nor Windows-1252"


def sniff_source(path: Path, sheet: str | None = None) -> Source:
    """How to read ``path``: its format (by suffix, corrected by its first bytes), and for CSV its
    encoding and separator; for a workbook the sheet. Raises LeadmlError with one line naming the file."""
    _checked_file(path)
    kind = _binary_kind(path)
    if kind == "xls" or path.suffix.lower() == ".xls":
        raise LeadmlError(f"{path}: .xls (Excel 97-2003) is not supported; save the workbook as .xlsx or CSV")
    if kind == "zip":
        raise LeadmlError(f"{path} is a zip archive: extract the file inside and give that")
    suffix_format = _format({"path": str(path)})
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
        import openpyxl

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
    chosen = _sheet_name(wanted, names, path)
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
        label = f"target {proposal.target.column} (positive {_flow(proposal.target.positive)})"
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
        count = _count(len(proposal.suspects), "column")
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
