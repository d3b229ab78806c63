"""Declarative data contracts and the one validation routine that applies them.

A :class:`TableContract` lists typed :class:`ColumnSpec` columns. :func:`validate_table`
turns a raw frame (usually all strings, as read from CSV) into an *accepted* frame with
stable dtypes and a *quarantine* frame that keeps every rejected row with its original
values, its 1-based ``source_row`` and every reason it was rejected. No row is dropped
silently: accepted + quarantined = input, always.

Value rules, in order: missing markers -> null; text trimmed; categories case-folded,
separators turned into ``_`` and mapped through synonyms; numbers and ISO 8601
timestamps parsed (naive timestamps are local time in ``IngestSettings.timezone``);
then nullability, allowed values, ranges and "not in the future" (nor before 1900) are checked.

Duplicate keys (the primary key, and every ``unique`` column) are resolved among rows
that pass every other check, so a broken row never displaces a good one. Rule
``most_complete``: keep the row with the most non-null values, ties -> the first in the
source; the other rows are quarantined with "duplicate lead_id L1, kept source row N".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)

Dtype = Literal["string", "category", "integer", "float", "timestamp", "boolean"]
DTYPES: tuple[str, ...] = ("string", "category", "integer", "float", "timestamp", "boolean")
DuplicateRule = Literal["most_complete", "first", "last"]
DUPLICATE_RULES: tuple[str, ...] = ("most_complete", "first", "last")

# Every accepted timestamp has this resolution, whatever the source gave (ns from
# pandas-written Parquet, us from strings), so equal data gives equal frames.
TIMESTAMP_UNIT = "us"
TIMESTAMP_DTYPE = f"datetime64[{TIMESTAMP_UNIT}, UTC]"
# Earlier timestamps are quarantined: no CRM fact is that old (0001-01-01 and 1899-12-30 are common
# placeholders), and the features' time keys hold 1900 to 2172 only (features._time_key).
EARLIEST_TIMESTAMP = pd.Timestamp("1900-01-01", tz="UTC")

# Columns added to every quarantine frame next to the original values.
SOURCE_ROW = "source_row"
REASON = "reason"
TABLE = "table"
QUARANTINE_COLUMNS: tuple[str, ...] = (SOURCE_ROW, REASON, TABLE)

DEFAULT_MISSING_MARKERS: tuple[str, ...] = ("", "NA", "N/A", "NaN", "null", "None", "#N/A")
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1", "1_0"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0", "0_0"})


def squashed_spellings(canonical_values: Iterable[str]) -> dict[str, str]:
    """``paidsearch`` -> ``paid_search``: the one variant that normalisation cannot undo by itself."""
    return {value.replace("_", ""): value for value in canonical_values if "_" in value}


def _spellings(by_canonical: Mapping[str, str]) -> dict[str, str]:
    """``{canonical: "spelling other_spelling"}`` -> ``{spelling: canonical}`` (and squashed canonicals)."""
    spelled = {spelling: canonical for canonical, words in by_canonical.items() for spelling in words.split()}
    return {**squashed_spellings(by_canonical), **spelled}


# Written already normalised (see normalise_token): canonical value -> other spellings.
DEFAULT_SYNONYMS: Mapping[str, Mapping[str, str]] = {
    s.SOURCE: _spellings(
        {
            "paid_search": "ppc cpc sem adwords google_ads search_ads",
            "web_organic": "organic organic_search seo website web",
            "paid_social": "social_ads facebook_ads linkedin_ads",
            "referral": "referrals word_of_mouth",
            "partner": "partners reseller channel_partner",
            "event": "events trade_show tradeshow conference",
            "outbound": "cold_call cold_email outbound_sales",
            "webinar": "webinars",
            "content_syndication": "syndication",
        }
    ),
    s.COUNTRY: _spellings(
        {
            "us": "usa u_s u_s_a united_states united_states_of_america america",
            "gb": "uk u_k gbr united_kingdom great_britain england",
            "de": "deu germany deutschland",
            "fr": "fra france",
            "nl": "nld netherlands the_netherlands holland",
            "br": "bra brazil brasil",
            "in": "ind india",
            "au": "aus australia",
            "ca": "can canada",
            "es": "esp spain espana españa",
        }
    ),
    s.ACTIVITY_TYPE: _spellings(
        {
            "page_view": "pageview page_visit web_visit visit",
            "email_open": "email_opened e_mail_open open",
            "email_click": "email_clicked e_mail_click click link_click",
            "form_submit": "form_submission form_submitted form_fill",
            "content_download": "download whitepaper_download ebook_download",
            "webinar": "webinar_attended webinar_attendance",
            "demo_request": "demo demo_requested request_demo",
            "call": "phone_call call_logged",
            "meeting": "meeting_held meeting_booked",
            "unsubscribe": "unsubscribed opt_out opted_out",
            "bounce": "bounced email_bounce hard_bounce",
        }
    ),
    s.PAGE_CATEGORY: _spellings(
        {
            "pricing": "price prices pricing_page plans",
            "product": "products features",
            "docs": "doc documentation",
            "blog": "blogs article articles",
            "careers": "career jobs",
        }
    ),
    s.STATUS: _spellings(
        {
            "won": "closed_won won_deal win converted",
            "lost": "closed_lost lost_deal lose disqualified",
            "open": "new working in_progress nurture pending",
        }
    ),
    s.INDUSTRY: _spellings(
        {
            "software": "saas",
            "financial_services": "finance banking fintech",
            "healthcare": "health health_care",
            "education": "higher_education",
            "government": "public_sector",
            "professional_services": "consulting",
            "logistics": "transport transportation shipping",
        }
    ),
}

_SEPARATORS = re.compile(r"[\s\-.]+")
_SEPARATORS_PATTERN = r"[\s\-.]+"
# An explicit UTC offset at the end: Z, +hh:mm, +hhmm, or +hh right after a time (a bare "-01" ends a date).
# Written without a leading time-of-day part because that made the scan ten times slower.
OFFSET_PATTERN = r"(?:[zZ]|[+-]\d{2}:?\d{2}|:\d{2}(?:[.,]\d+)?[+-]\d{2})$"
SHOWN_VALUE_CHARS = 80
SHOWN_ALLOWED = 12


# --------------------------------------------------------------------------- settings
def normalise_token(value: str) -> str:
    """``"  Paid-Search "`` -> ``"paid_search"``: trimmed, case-folded, separators as ``_``."""
    return _SEPARATORS.sub("_", value.strip().casefold()).strip("_")


def normalise_tokens(values: pd.Series) -> pd.Series:
    """Vectorised :func:`normalise_token` (nulls stay null)."""
    folded = values.str.strip().str.casefold()
    return folded.str.replace(_SEPARATORS_PATTERN, "_", regex=True).str.strip("_")


def as_tuple(value: Any) -> tuple[Any, ...]:
    """A config value as a tuple: None -> (), a scalar -> (scalar,), an iterable (ListConfig too) -> tuple."""
    if value is None:
        return ()
    if isinstance(value, str | bytes | int | float | bool) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def _normalised_synonyms(synonyms: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        str(column): {
            normalise_token(str(key)): normalise_token(str(value)) for key, value in mapping.items()
        }
        for column, mapping in synonyms.items()
    }


SETTINGS_KEYS: tuple[str, ...] = (
    "timezone",
    "reference_time",
    "max_bad_share",
    "synonyms",
    "missing_markers",
)


@dataclass(frozen=True)
class IngestSettings:
    """How raw values are read. ``synonyms`` and ``missing_markers`` add to the built-in ones.

    ``reference_time``: timestamps later than this are "in the future" (None: now, UTC).
    ``max_bad_share``: a table with a larger share of quarantined rows fails the run.
    """

    timezone: str = "UTC"
    reference_time: pd.Timestamp | None = None
    max_bad_share: float = 0.05
    synonyms: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    missing_markers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise LeadmlError(
                f"unknown time zone {self.timezone!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        if not 0.0 <= float(self.max_bad_share) <= 1.0:
            raise LeadmlError(f"max_bad_share must be between 0 and 1, got {self.max_bad_share}")
        if self.reference_time is not None:
            object.__setattr__(self, "reference_time", to_utc(self.reference_time))
        object.__setattr__(self, "synonyms", _normalised_synonyms(self.synonyms))
        markers = tuple(str(marker) for marker in as_tuple(self.missing_markers))
        object.__setattr__(self, "missing_markers", markers)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> IngestSettings:
        """Settings from config; unknown keys are an error (a typo must not be ignored)."""
        values = dict(mapping or {})
        unknown = sorted(set(values) - set(SETTINGS_KEYS))
        if unknown:
            raise LeadmlError(
                f"unknown ingest setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS_KEYS)}"
            )
        # null in config means "the default" (for reference_time the default is null: now)
        given = {key: value for key, value in values.items() if value is not None}
        if "synonyms" in given:
            given["synonyms"] = {column: dict(mapping) for column, mapping in dict(given["synonyms"]).items()}
        if "max_bad_share" in given:
            given["max_bad_share"] = float(given["max_bad_share"])
        return cls(**given)

    def with_fixed_reference_time(self) -> IngestSettings:
        """The same settings with "now" pinned, so every table of one run uses the same instant."""
        if self.reference_time is not None:
            return self
        return replace(self, reference_time=pd.Timestamp.now(tz="UTC"))

    def synonyms_for(self, column: str) -> dict[str, str]:
        return {**DEFAULT_SYNONYMS.get(column, {}), **self.synonyms.get(column, {})}

    def all_missing_markers(self) -> frozenset[str]:
        return frozenset(
            marker.strip().casefold() for marker in (*DEFAULT_MISSING_MARKERS, *self.missing_markers)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "reference_time": None if self.reference_time is None else self.reference_time.isoformat(),
            "max_bad_share": self.max_bad_share,
            "synonyms": {column: dict(mapping) for column, mapping in self.synonyms.items()},
            "missing_markers": list(self.missing_markers),
        }


# --------------------------------------------------------------------------- contracts
@dataclass(frozen=True)
class ColumnSpec:
    """One declared column. ``required``: the column must exist; ``nullable``: a value may be missing.

    ``allowed`` (category only) and ``min``/``max`` (integer/float only) quarantine other values;
    ``unique`` quarantines duplicates of non-null values; ``personal`` marks data that is never a
    feature; ``format`` is a strptime format for timestamp text (None: ISO 8601); ``missing_values``
    are this column's own missing markers, added to the table's (``-1`` for "never contacted" in a
    day count; compared as numbers in a number column, so ``-1.0`` matches too).
    """

    name: str
    dtype: Dtype = "string"
    required: bool = True
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    unique: bool = False
    personal: bool = False
    format: str | None = None
    missing_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "missing_values", tuple(str(value) for value in as_tuple(self.missing_values))
        )
        if self.dtype not in DTYPES:
            raise LeadmlError(f"column {self.name}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.allowed is not None:
            if self.dtype != "category":
                raise LeadmlError(f"column {self.name}: allowed values need dtype category, not {self.dtype}")
            object.__setattr__(
                self, "allowed", tuple(dict.fromkeys(normalise_token(str(v)) for v in self.allowed))
            )
        if (self.min is not None or self.max is not None) and self.dtype not in ("integer", "float"):
            raise LeadmlError(f"column {self.name}: min/max need dtype integer or float, not {self.dtype}")
        if not self.required and not self.nullable:
            raise LeadmlError(f"column {self.name}: an optional column must be nullable")
        if self.dtype in ("integer", "float"):
            wrong = [value for value in self.missing_values if not _is_number(value)]
            if wrong:
                raise LeadmlError(
                    f"column {self.name}: missing value(s) {', '.join(wrong)} of a {self.dtype} column "
                    "must be numbers"
                )

    def missing_markers(self, settings: IngestSettings) -> frozenset[str]:
        """The table's missing markers plus this column's own, trimmed and case-folded."""
        markers = settings.all_missing_markers()
        if not self.missing_values:
            return markers
        return markers | {value.strip().casefold() for value in self.missing_values}

    def numeric_missing_values(self) -> np.ndarray:
        """This column's missing values as numbers (number columns)."""
        return np.array([float(value) for value in self.missing_values if _is_number(value)], dtype="float64")


@dataclass(frozen=True)
class TableContract:
    """A table: its declared columns, primary key and how duplicate keys are resolved.

    Undeclared columns are passed through unchanged.
    """

    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...] = ()
    duplicates: DuplicateRule = "most_complete"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "primary_key", tuple(self.primary_key))
        names = [spec.name for spec in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise LeadmlError(f"contract {self.name}: column(s) declared twice: {', '.join(repeated)}")
        for key in self.primary_key:
            if key not in names or self.column(key).nullable:
                raise LeadmlError(
                    f"contract {self.name}: primary key {key} must be a declared non-nullable column"
                )
        if self.duplicates not in DUPLICATE_RULES:
            raise LeadmlError(
                f"contract {self.name}: duplicates rule {self.duplicates!r} is not one of "
                f"{', '.join(DUPLICATE_RULES)}"
            )
        clash = sorted(set(names) & set(QUARANTINE_COLUMNS))
        if clash:
            raise LeadmlError(
                f"contract {self.name}: column name(s) {', '.join(clash)} are reserved for quarantine"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.columns)

    @property
    def personal_columns(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.columns if spec.personal)

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def with_columns(self, extra: Iterable[ColumnSpec]) -> TableContract:
        return replace(self, columns=(*self.columns, *extra))


def _id(name: str) -> ColumnSpec:
    return ColumnSpec(name, "string", required=True, nullable=False)


def _optional(name: str, dtype: Dtype = "string", **rules: Any) -> ColumnSpec:
    return ColumnSpec(name, dtype, required=False, **rules)


# The largest plausible value of each count and amount: beyond it a value is a typo or a placeholder
# (9999999999, 1e308) that would turn a total into infinity or a 300-digit amount in a report. The
# largest employers have about 2 million people and the largest companies under 1e12 in revenue;
# ``data.limits`` sets other bounds (a currency with small units, see :func:`with_limits`).
PLAUSIBLE_MAXIMA: Mapping[str, float] = {
    s.EMPLOYEES: 10_000_000,
    s.ANNUAL_REVENUE: 1e13,
    s.FOUNDED_YEAR: 2100,
    s.ESTIMATED_DEAL_VALUE: 1e12,
    s.DEAL_VALUE: 1e12,
}
LIMIT_KEYS: tuple[str, ...] = ("min", "max")


def with_limits(
    contracts: Mapping[str, TableContract], limits: Mapping[str, Any] | None
) -> dict[str, TableContract]:
    """``contracts`` with ``data.limits`` applied: ``{column: {min: x, max: y}}`` replaces the bounds of
    that number column in every table that declares it (null: no bound). A column no table declares
    as a number, an unknown key or a minimum above the maximum is an error naming the key."""
    changed = dict(contracts)
    for column, given in dict(limits or {}).items():
        key, column = f"data.limits.{column}", str(column)
        bounds = dict(given) if isinstance(given, Mapping) else None
        if bounds is None or set(bounds) - set(LIMIT_KEYS):
            raise LeadmlError(f"{key} must be a mapping of min and/or max, got {given!r}")
        if any(value is not None and not _is_number(value) for value in bounds.values()):
            raise LeadmlError(f"{key}: min and max must be numbers or null, got {bounds}")
        tables = [name for name, contract in changed.items() if _number_column(contract, column)]
        if not tables:
            raise LeadmlError(f"{key}: no table declares {column!r} as a number column")
        for name in tables:
            spec = changed[name].column(column)
            low, high = _bound(bounds, "min", spec.min), _bound(bounds, "max", spec.max)
            if low is not None and high is not None and low > high:
                raise LeadmlError(f"{key}: min {low:g} is above max {high:g}")
            bounded = replace(spec, min=low, max=high)
            columns = tuple(bounded if c.name == column else c for c in changed[name].columns)
            changed[name] = replace(changed[name], columns=columns)
    return changed


def _number_column(contract: TableContract, column: str) -> bool:
    return column in contract.names and contract.column(column).dtype in ("integer", "float")


def configured_crm_contracts(
    extra_features: Mapping[str, Sequence[str]] | None, limits: Mapping[str, Any] | None
) -> dict[str, TableContract]:
    """The CRM tables' contracts as a data config sets them: its ``extra_features`` (declared on the
    leads table) and ``limits``. What the nightly job validates with, and what a trained model
    records (``LeadScorer.data_contract``) so the endpoint checks requests by the same rules."""
    return with_limits(crm_contracts({s.LEADS: column_specs_from_config(extra_features)}), limits)


def keeps_number(spec: ColumnSpec, value: float) -> bool:
    """Whether validation keeps the number ``value`` of a number column as it is (NaN: missing, kept).

    The checks of ``leadml.data.parsing``'s number parser for one value that is already a float, for
    a caller that cannot afford a pandas parse per value (the endpoint's compiled path). False
    means "not plainly kept": refused, or a missing-value marker; the parser itself says which.
    """
    if value != value:
        return True
    if value in (float("inf"), float("-inf")):
        return False
    if spec.missing_values and value in spec.numeric_missing_values():
        return False
    if spec.dtype == "integer" and (value != int(value) or abs(value) >= 2.0**63):
        return False
    return not ((spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max))


# what :func:`plain_text` answers for a value it leaves to the parser
NOT_PLAIN = object()


def plain_text(spec: ColumnSpec, value: str, markers: frozenset[str], synonyms: Mapping[str, str]) -> Any:
    """What validation keeps of the text ``value`` of a text or category column (None: a missing
    marker), or :data:`NOT_PLAIN`: the parser has to read it.

    ``markers``: ``spec.missing_markers(settings)``; ``synonyms``: the column's, squashed spellings
    of its allowed values included (see ``parsing._token_lookup``). Decided here only for printable
    ASCII, where Python's trimming, case folding and ``\\s`` are Arrow's (the parser's) and a
    space is the only whitespace; a value the contract refuses is left to the parser, which words
    the reason. For the endpoint's compiled path, which cannot afford a pandas parse per value.
    """
    if not (value.isascii() and value.isprintable()):
        return NOT_PLAIN
    trimmed = value.strip()
    if trimmed.lower() in markers:
        return None
    if spec.dtype == "string":
        return trimmed
    if spec.dtype != "category":
        return NOT_PLAIN
    token = normalise_token(trimmed)
    token = synonyms.get(token, token)
    if spec.allowed is not None and token not in spec.allowed:
        return NOT_PLAIN
    return token


def category_synonyms(spec: ColumnSpec, settings: IngestSettings) -> dict[str, str]:
    """The spellings validation maps to a stored value of the category column ``spec``."""
    return {**squashed_spellings(spec.allowed or ()), **settings.synonyms_for(spec.name)}


def _bound(bounds: Mapping[str, Any], key: str, current: float | None) -> float | None:
    """A bound from ``data.limits``: left out keeps ``current``, null removes it."""
    if key not in bounds:
        return current
    return None if bounds[key] is None else float(bounds[key])


def crm_contracts(
    extra_columns: Mapping[str, Iterable[ColumnSpec]] | None = None,
) -> dict[str, TableContract]:
    """Contracts of the four canonical CRM tables, plus any extra declared columns per table.

    Status, activity type and page category must be one of the schema values (the features
    depend on their meaning); source, industry and country are open categories (normalised and
    mapped through synonyms, any value kept), so a new channel does not cost its leads.
    """
    contracts = {
        s.ACCOUNTS: TableContract(
            s.ACCOUNTS,
            (
                _id(s.ACCOUNT_ID),
                _optional(s.COMPANY_NAME),
                _optional(s.INDUSTRY, "category"),
                _optional(s.EMPLOYEES, "integer", min=0, max=PLAUSIBLE_MAXIMA[s.EMPLOYEES]),
                _optional(s.ANNUAL_REVENUE, "float", min=0, max=PLAUSIBLE_MAXIMA[s.ANNUAL_REVENUE]),
                _optional(s.COUNTRY, "category"),
                _optional(s.FOUNDED_YEAR, "integer", min=1800, max=PLAUSIBLE_MAXIMA[s.FOUNDED_YEAR]),
            ),
            primary_key=(s.ACCOUNT_ID,),
        ),
        s.LEADS: TableContract(
            s.LEADS,
            (
                _id(s.LEAD_ID),
                ColumnSpec(s.CREATED_AT, "timestamp", nullable=False),
                _optional(s.ACCOUNT_ID),
                _optional(s.SOURCE, "category"),
                _optional(s.OWNER, "category"),
                _optional(s.JOB_TITLE),
                _optional(s.COUNTRY, "category"),
                *(_optional(name, personal=True) for name in s.PERSONAL_DATA_COLUMNS),
                _optional(
                    s.ESTIMATED_DEAL_VALUE, "float", min=0, max=PLAUSIBLE_MAXIMA[s.ESTIMATED_DEAL_VALUE]
                ),
            ),
            primary_key=(s.LEAD_ID,),
        ),
        s.OUTCOMES: TableContract(
            s.OUTCOMES,
            (
                _id(s.LEAD_ID),
                ColumnSpec(s.STATUS, "category", nullable=False, allowed=s.STATUSES),
                ColumnSpec(s.CLOSED_AT, "timestamp"),
                _optional(s.DEAL_VALUE, "float", min=0, max=PLAUSIBLE_MAXIMA[s.DEAL_VALUE]),
            ),
            primary_key=(s.LEAD_ID,),
        ),
        s.ACTIVITIES: TableContract(
            s.ACTIVITIES,
            (
                _optional(s.EVENT_ID, unique=True),
                _id(s.LEAD_ID),
                ColumnSpec(s.TIMESTAMP, "timestamp", nullable=False),
                ColumnSpec(s.ACTIVITY_TYPE, "category", nullable=False, allowed=s.ACTIVITY_TYPES),
                _optional(s.PAGE_CATEGORY, "category", allowed=s.PAGE_CATEGORIES),
            ),
        ),
    }
    for table, specs in (extra_columns or {}).items():
        if table not in contracts:
            raise LeadmlError(f"extra columns for unknown table {table!r}; tables: {', '.join(contracts)}")
        contracts[table] = contracts[table].with_columns(specs)
    return contracts


_GROUP_DTYPES: Mapping[str, Dtype] = {
    "categorical": "category",
    "numeric": "float",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "timestamp": "timestamp",
}


def column_specs_from_config(groups: Mapping[str, Sequence[str]] | None) -> tuple[ColumnSpec, ...]:
    """Optional columns from config such as ``{categorical: [browser], numeric: [campaign_code]}``.

    Groups: categorical, numeric (float), integer, boolean, string, timestamp, personal (string,
    flagged as personal data).
    """
    groups = dict(groups or {})
    unknown = sorted(set(groups) - {*_GROUP_DTYPES, "personal"})
    if unknown:
        raise LeadmlError(
            f"unknown column group(s) {', '.join(unknown)}; known: {', '.join([*_GROUP_DTYPES, 'personal'])}"
        )
    specs = [
        _optional(str(name), _GROUP_DTYPES[group])
        for group in _GROUP_DTYPES
        for name in as_tuple(groups.get(group))
    ]
    specs += [_optional(str(name), personal=True) for name in as_tuple(groups.get("personal"))]
    return tuple(specs)


OUTCOMES_TABLE = "outcomes"


@dataclass(frozen=True)
class FlatOutcomes:
    """Dated events (won deals) in a second table, joined to the flat table by its id: the label.

    A lead is positive when one of its events falls within ``horizon_days`` after its time
    column. A lead is labelled only when that whole window was observed: its time is not
    before ``observed_from`` (null: no bound) and time + horizon is not after ``observed_until``
    (null: the latest timestamp of either table). Naive bounds are in the ingest time zone.
    """

    table: TableContract
    id_column: str
    time_column: str
    horizon_days: float
    observed_from: pd.Timestamp | None = None
    observed_until: pd.Timestamp | None = None

    @property
    def horizon(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.horizon_days)


@dataclass(frozen=True)
class FlatContract:
    """A one-row-per-lead table labelled by a target column or by outcomes (see :func:`flat_contract`)."""

    table: TableContract
    id_column: str
    target: str | None
    positive: tuple[Any, ...] = ()
    negative: tuple[Any, ...] = ()
    time_column: str | None = None
    order_column: str | None = None
    drop: tuple[str, ...] = ()
    outcomes: FlatOutcomes | None = None
    open: tuple[Any, ...] = ()  # target values of leads still open: scored, never labels

    @property
    def numeric_target(self) -> bool:
        return self.target is not None and self.table.column(self.target).dtype == "float"


FLAT_KEYS: tuple[str, ...] = (
    "name",
    "id",
    "target",
    "positive",
    "negative",
    "open",
    "time",
    "order",
    "drop",
    *_GROUP_DTYPES,
    "personal",
    "missing_values",
)
OUTCOME_KEYS: tuple[str, ...] = ("table", "id", "time", "horizon_days", "observed_from", "observed_until")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _optional_timestamp(value: Any, key: str) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        return pd.Timestamp(str(value))
    except ValueError:
        raise LeadmlError(f"outcomes: {key} {value!r} is not a date or timestamp") from None


def flat_outcomes(mapping: Mapping[str, Any], lead_time_column: str | None) -> FlatOutcomes:
    """The outcomes of a flat table from config (see :func:`flat_contract`)."""
    values = dict(mapping)
    unknown = sorted(set(values) - set(OUTCOME_KEYS))
    if unknown:
        raise LeadmlError(f"unknown outcomes key(s) {', '.join(unknown)}; known: {', '.join(OUTCOME_KEYS)}")
    for key in ("id", "time", "horizon_days"):
        if values.get(key) is None or values.get(key) == "":
            raise LeadmlError(f"outcomes config needs {key!r}")
    if not lead_time_column:
        raise LeadmlError(
            "a flat table labelled by outcomes needs its own 'time' column: the horizon starts there"
        )
    if not _is_number(values["horizon_days"]) or float(values["horizon_days"]) <= 0:
        raise LeadmlError(f"outcomes: horizon_days must be a positive number, got {values['horizon_days']!r}")
    id_column, time_column = str(values["id"]), str(values["time"])
    observed_from = _optional_timestamp(values.get("observed_from"), "observed_from")
    observed_until = _optional_timestamp(values.get("observed_until"), "observed_until")
    if (
        observed_from is not None
        and observed_until is not None
        and to_utc(observed_from) >= to_utc(observed_until)
    ):
        raise LeadmlError("outcomes: observed_from must be before observed_until")
    table = TableContract(
        OUTCOMES_TABLE,
        (_id(id_column), ColumnSpec(time_column, "timestamp", nullable=False)),
        primary_key=(id_column,),
    )
    return FlatOutcomes(
        table=table,
        id_column=id_column,
        time_column=time_column,
        horizon_days=float(values["horizon_days"]),
        observed_from=observed_from,
        observed_until=observed_until,
    )


def _with_missing_values(specs: list[ColumnSpec], mapping: Mapping[str, Any] | None) -> list[ColumnSpec]:
    given = {str(column): as_tuple(values) for column, values in dict(mapping or {}).items()}
    undeclared = sorted(set(given) - {spec.name for spec in specs})
    if undeclared:
        raise LeadmlError(
            f"missing_values for undeclared column(s) {', '.join(undeclared)}; declare them in a column group"
        )
    return [replace(spec, missing_values=given[spec.name]) if spec.name in given else spec for spec in specs]


def flat_contract(mapping: Mapping[str, Any], outcomes: Mapping[str, Any] | None = None) -> FlatContract:
    """Contract of a flat lead table from config.

    Keys: ``id`` (lead id column, or ``source_row`` for the row number), ``target``,
    ``positive`` (values meaning converted), ``negative`` (values meaning lost; may be left out
    when the target has one other value only, which is then the negative), ``open`` (values of
    leads still open: never labels, they are what the nightly job scores; a target value in none
    of the three stops ingestion, see ``leadml.data.ingest``), ``time`` (a timestamp
    column -> ``as_of``) or ``order`` (a numeric column, or ``source_row``, kept for an
    out-of-time order), ``drop`` (removed before anything else, e.g. filled in after the
    outcome), column groups as in :func:`column_specs_from_config`, ``missing_values``
    (``{column: [values]}``: a declared column's own missing markers, e.g. ``{pdays: [-1]}``),
    ``name`` (default leads).

    ``outcomes`` (the data config's ``outcomes``: ``table`` (its source, not read here), ``id``,
    ``time``, ``horizon_days``, optional ``observed_from`` / ``observed_until``) labels the leads
    by dated events in a second table instead of a target column (see :class:`FlatOutcomes`):
    then ``target``, ``positive`` and ``negative`` are not given, and ``time`` and a real ``id``
    column are required. The outcome table's other columns never reach the lead table.
    """
    values = dict(mapping)
    unknown = sorted(set(values) - set(FLAT_KEYS))
    if unknown:
        raise LeadmlError(f"unknown flat-table key(s) {', '.join(unknown)}; known: {', '.join(FLAT_KEYS)}")
    if outcomes is not None:
        given = [
            key for key in ("target", "positive", "negative", "open") if values.get(key) not in (None, "", [])
        ]
        if given:
            raise LeadmlError(
                f"flat table config: {', '.join(given)} given although the label comes from outcomes; "
                "give either a target column or outcomes"
            )
    required = ("id",) if outcomes is not None else ("id", "target", "positive")
    for key in required:
        if not as_tuple(values.get(key)) or values.get(key) == "":
            raise LeadmlError(f"flat table config needs {key!r}" + ("" if key == "id" else " (or outcomes)"))
    positive, negative = as_tuple(values.get("positive")), as_tuple(values.get("negative"))
    open_values = as_tuple(values.get("open"))
    _check_target_values_apart({"positive": positive, "negative": negative, "open": open_values})
    if values.get("time") and values.get("order"):
        raise LeadmlError("flat table config: give either 'time' or 'order', not both")
    id_column = str(values["id"])
    target = str(values["target"]) if outcomes is None else None
    time_column = str(values["time"]) if values.get("time") else None
    order_column = str(values["order"]) if values.get("order") else None
    flat_outcomes_ = None
    if outcomes is not None:
        if id_column == SOURCE_ROW:
            raise LeadmlError(
                "a flat table labelled by outcomes needs an id column to join them on, not source_row"
            )
        flat_outcomes_ = flat_outcomes(outcomes, time_column)

    numeric_target = all(_is_number(value) for value in (*positive, *negative, *open_values))
    specs: list[ColumnSpec] = []
    if id_column != SOURCE_ROW:
        specs.append(_id(id_column))
    if target is not None:
        specs.append(ColumnSpec(target, "float" if numeric_target else "category", nullable=False))
    if time_column:
        specs.append(ColumnSpec(time_column, "timestamp", nullable=False))
    if order_column and order_column != SOURCE_ROW:
        specs.append(ColumnSpec(order_column, "float", nullable=False))
    group_values = {key: values[key] for key in (*_GROUP_DTYPES, "personal") if values.get(key)}
    specs.extend(column_specs_from_config(group_values))
    specs = _with_missing_values(specs, values.get("missing_values"))
    table = TableContract(
        str(values.get("name") or s.LEADS),
        tuple(specs),
        primary_key=(id_column,) if id_column != SOURCE_ROW else (),
    )
    if flat_outcomes_ is not None and table.name == OUTCOMES_TABLE:
        raise LeadmlError(f"flat table config: name {OUTCOMES_TABLE!r} is the outcomes table's")
    return FlatContract(
        table=table,
        id_column=id_column,
        target=target,
        positive=positive,
        negative=negative,
        time_column=time_column,
        order_column=order_column,
        drop=tuple(str(column) for column in as_tuple(values.get("drop"))),
        outcomes=flat_outcomes_,
        open=open_values,
    )


def _check_target_values_apart(groups: Mapping[str, tuple[Any, ...]]) -> None:
    """A target value listed under two of contract.positive / negative / open is a config error."""
    seen: dict[str, str] = {}
    for key, values in groups.items():
        for value in values:
            token = normalise_token(str(value))
            if token in seen and seen[token] != key:
                raise LeadmlError(
                    f"flat table config: {value!r} is under both contract.{seen[token]} and contract.{key}"
                )
            seen[token] = key


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RowProblem:
    """Rows (a boolean mask over row positions) that break one rule.

    ``category`` groups the reasons for counting ("employees: not a number"); ``messages``
    is the reason text: one string for all rows, or a Series indexed by row position.
    """

    mask: np.ndarray
    category: str
    messages: pd.Series | str


RowCheck = Callable[[pd.DataFrame], Iterable[RowProblem]]
# typed values, missing mask, problems
Parsed = tuple[pd.Series, np.ndarray, list[RowProblem]]
