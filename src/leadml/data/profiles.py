"""What ``leadml-init`` reads in an export: its text (separator, header), each column profiled
(kind, values, personal data, missing markers), and the proposal's dataclasses (pure)."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.contracts import DEFAULT_MISSING_MARKERS, FALSE_TOKENS, TRUE_TOKENS, normalise_token
from leadml.data.features import FLAT_KEY_COLUMNS
from leadml.data.parsing import as_text

# the separators a CSV may use, "," last (leadml.adapters.sources checks a file read with the wrong one)
SEPARATORS: tuple[str, ...] = (";", "\t", "|", ",")

logger = logging.getLogger(__name__)


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

TARGET_NAME = re.compile(
    r"status|convert|\bwon\b|\bwin\b|outcome|result|stage|target|label|closed|success|subscri|purchas"
    r"|churn|signed|^y$|^is_?customer",
    re.I,
)

ID_NAME = re.compile(r"(^|[\s_-])(id|uuid|guid|key)$|^id[\s_-]|_id$|\bid\b", re.I)

ORDER_NAME = re.compile(r"number|\bno\b|\bnr\b|\bseq|sequence|counter|serial|index", re.I)

CREATED_NAME = re.compile(
    r"creat|first|start|signup|sign_up|register|submit|received|arriv|date_added|added|opened|contact_date"
    r"|^date$|lead_date|inquiry",
    re.I,
)

LATER_NAME = re.compile(r"clos|won|lost|last|modif|updat|end|convert|change|due|expir", re.I)

EVENT_NAME = re.compile(r"won|clos|convert|sign|purchas|date|time", re.I)

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


def detect_separator(text: str) -> tuple[str, str]:
    """The separator of CSV text (the first lines of a file) and the evidence.

    Each of ``,`` ``;`` tab ``|`` splits the complete records of the sample; the one whose header
    has the most fields (at least two) while at least 90% of the records have as many wins. A
    count on real records, rather than csv.Sniffer's guess on characters, so a quoted value
    holding a comma does not mislead it.
    """
    best: tuple[int, str] | None = None
    for sep in (",", *[other for other in SEPARATORS if other != ","]):
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


def count_text(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def shown_text(value: str, limit: int = 40) -> str:
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
    missing = f", {count_text(rows - filled, 'row')} missing" if filled < rows else ""
    if filled == 0:
        return Profile(**base, kind=EMPTY, detail="empty in every row")
    personal = _personal(name, filled_text)
    if personal:
        return Profile(**base, kind=TEXT, detail=f"{personal}{missing}", personal=personal)
    tokens = {normalise_token(str(value)) for value in counts.index} if len(counts) <= 4 else set()
    if len(counts) == 1 and filled == rows:
        return Profile(**base, kind=CONSTANT, detail=f"{shown_text(str(counts.index[0]))!r} in every row")
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
    return Profile(**base, kind=CATEGORICAL, detail=f"{count_text(len(counts), 'value')}{missing}")


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
    detail = f"{words} {as_number(low)} to {as_number(high)}{missing}"
    if markers:
        detail += "; " + ", ".join(
            f"{value!r} ({count_text(int((others == value).sum()), 'row')})" for value in markers
        )
        detail += " read as missing"
    return Profile(
        **base,
        kind=kind,
        detail=detail,
        number_markers=markers,
        sentinel=_sentinel(present),
    )


def as_number(value: float) -> str:
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
            return f"{as_number(value)} in {share:.0%} of its rows, every other value {others}"
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
                value,
                f"{value!r} stands for 'nothing chosen' in {count_text(len(columns), 'column')} ({shown})",
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
