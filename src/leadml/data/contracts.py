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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.errors import ContractError, LeadmlError

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
_OFFSET_PATTERN = r"(?:[zZ]|[+-]\d{2}:?\d{2}|:\d{2}(?:[.,]\d+)?[+-]\d{2})$"
_SHOWN_VALUE_CHARS = 80
_SHOWN_ALLOWED = 12


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
                _optional(s.EMPLOYEES, "integer", min=0),
                _optional(s.ANNUAL_REVENUE, "float", min=0),
                _optional(s.COUNTRY, "category"),
                _optional(s.FOUNDED_YEAR, "integer", min=1800),
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
                _optional(s.ESTIMATED_DEAL_VALUE, "float", min=0),
            ),
            primary_key=(s.LEAD_ID,),
        ),
        s.OUTCOMES: TableContract(
            s.OUTCOMES,
            (
                _id(s.LEAD_ID),
                ColumnSpec(s.STATUS, "category", nullable=False, allowed=s.STATUSES),
                ColumnSpec(s.CLOSED_AT, "timestamp"),
                _optional(s.DEAL_VALUE, "float", min=0),
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


@dataclass(frozen=True)
class TableReport:
    """Counts of one validated table. ``reason_counts`` counts rows per reason category (a row with two
    reasons counts twice); ``collateral_rows`` were quarantined only because a row they depend on was
    (an event of a quarantined lead), so they do not count against ``max_bad_share``; ``excluded_rows``
    are sound rows set aside by a rule that is not about their quality (a lead whose label is not yet
    known), quarantined with their reason but not counted against ``max_bad_share`` either;
    ``added_rows`` were created by ingestion (open outcomes), so the output has accepted_rows +
    added_rows rows.
    """

    table: str
    source: str
    input_rows: int
    accepted_rows: int
    quarantined_rows: int
    reason_counts: dict[str, int]
    warnings: dict[str, int] = field(default_factory=dict)
    added_rows: int = 0
    missing_optional_columns: tuple[str, ...] = ()
    passthrough_columns: tuple[str, ...] = ()
    personal_columns: tuple[str, ...] = ()
    dropped_columns: tuple[str, ...] = ()
    quarantine_path: str | None = None
    collateral_rows: int = 0
    excluded_rows: int = 0

    @property
    def bad_rows(self) -> int:
        """Quarantined rows that are wrong themselves (not because a row they belong to was, nor excluded)."""
        return self.quarantined_rows - self.collateral_rows - self.excluded_rows

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.input_rows if self.input_rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source": self.source,
            "input_rows": self.input_rows,
            "accepted_rows": self.accepted_rows,
            "quarantined_rows": self.quarantined_rows,
            "collateral_rows": self.collateral_rows,
            "excluded_rows": self.excluded_rows,
            "added_rows": self.added_rows,
            "bad_share": round(self.bad_share, 6),
            "reasons": dict(self.reason_counts),
            "warnings": dict(self.warnings),
            "missing_optional_columns": list(self.missing_optional_columns),
            "passthrough_columns": list(self.passthrough_columns),
            "personal_columns": list(self.personal_columns),
            "dropped_columns": list(self.dropped_columns),
            "quarantine_path": self.quarantine_path,
        }


@dataclass(frozen=True)
class ValidatedTable:
    """Accepted rows (typed, index 0..n-1), quarantined rows (original text) and the report.

    ``accepted_source_rows`` is the 1-based source row of each accepted row. ``raw_source_rows``
    is the source row of each row of the validated frame when that frame is a filtered part of its
    source (``data.where``), increasing; None when the frame is the whole source (row i is row i+1).
    """

    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    report: TableReport
    accepted_source_rows: np.ndarray
    raw_source_rows: np.ndarray | None = None

    def raw_positions(self, source_rows: np.ndarray) -> np.ndarray:
        """0-based positions in the validated frame of rows given by their source row."""
        if self.raw_source_rows is None:
            return np.asarray(source_rows) - 1
        return np.searchsorted(self.raw_source_rows, source_rows)


# --------------------------------------------------------------------------- value parsing
def as_text(values: pd.Series) -> pd.Series:
    """Values as ``str`` with nulls kept; whole floats lose ``.0`` so an id reads the same from any format."""
    if pd.api.types.is_float_dtype(values.dtype):
        present = values.dropna().to_numpy(dtype="float64")
        if (
            np.isfinite(present).all()
            and (present == np.floor(present)).all()
            and (np.abs(present) < 2**53).all()
        ):
            return values.astype("Int64").astype("str")
    return values.astype("str")


def _clean_text(text: pd.Series, markers: frozenset[str]) -> tuple[pd.Series, np.ndarray]:
    stripped = text.str.strip()
    missing = stripped.isna().to_numpy().copy()
    longest = max((len(marker) for marker in markers), default=0)
    # Only short strings can be markers: case-fold just those.
    short = ~missing & (stripped.str.len() <= longest).to_numpy(dtype=bool, na_value=False)
    if short.any():
        short_values = stripped[short].str.casefold()
        missing[np.flatnonzero(short)[short_values.isin(markers).to_numpy()]] = True
    return stripped.mask(missing), missing


def trimmed_text(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> pd.Series:
    """A raw column as trimmed text, its missing values (markers included) as nulls."""
    cleaned, _ = _clean_text(as_text(raw), spec.missing_markers(settings))
    return cleaned


def present_text(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> pd.Series:
    """A raw column as trimmed text, its missing values (markers included) left out."""
    return trimmed_text(raw, spec, settings).dropna()


def _shown(raw: pd.Series, positions: np.ndarray) -> pd.Series:
    """Original values at ``positions`` for a reason text, indexed by position."""
    text = as_text(raw.iloc[positions]).fillna("")
    return text.str.slice(0, _SHOWN_VALUE_CHARS)


def _value_problem(raw: pd.Series, mask: np.ndarray, column: str, what: str, category: str) -> RowProblem:
    positions = np.flatnonzero(mask)
    messages = f"{column}: '" + _shown(raw, positions) + f"' {what}"
    return RowProblem(mask, f"{column}: {category}", messages)


def _empty_column(spec: ColumnSpec, rows: int) -> pd.Series:
    return pd.Series(index=pd.RangeIndex(rows), dtype=_empty_dtype(spec))


def _empty_dtype(spec: ColumnSpec) -> Any:
    if spec.dtype == "category":
        return pd.CategoricalDtype(pd.Index(spec.allowed or (), dtype="str"))
    return {
        "string": "str",
        "integer": "Int64",
        "float": "float64",
        "timestamp": TIMESTAMP_DTYPE,
        "boolean": "boolean",
    }[spec.dtype]


def _parse_string(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    cleaned, missing = _clean_text(as_text(raw), spec.missing_markers(settings))
    return cleaned, missing, []


def _token_lookup(
    raw: pd.Series, settings: IngestSettings, spec: ColumnSpec
) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """Factorised values: (row codes, normalised token per distinct value, missing per distinct value).

    Work is done once per distinct value, which is what makes 20 million categorical rows cheap.
    """
    codes, uniques = pd.factorize(as_text(raw))
    cleaned, missing = _clean_text(pd.Series(uniques, dtype="str"), spec.missing_markers(settings))
    tokens = normalise_tokens(cleaned)
    synonyms = {**squashed_spellings(spec.allowed or ()), **settings.synonyms_for(spec.name)}
    if synonyms:
        tokens = tokens.map(synonyms).fillna(tokens).astype("str")
    return codes, tokens, missing


def respelt_values(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> dict[str, str]:
    """{value as written: value as stored} of a category column's distinct values whose spelling
    ingestion changes (trimmed, case-folded, separators as ``_``, synonyms), missing ones left out.

    Points rules, filters and reasons see the stored spelling, so a user needs to know it.
    """
    _, tokens, missing = _token_lookup(raw, settings, spec)
    written = pd.Series(pd.factorize(as_text(raw))[1], dtype="str")
    changed = ~missing & (written.str.strip() != tokens).to_numpy()
    return dict(zip(written[changed].str.strip(), tokens[changed], strict=True))


def _rows(per_value: np.ndarray, codes: np.ndarray, null_value: Any) -> np.ndarray:
    """Per-distinct-value array spread to rows; code -1 (null) gets ``null_value``."""
    return np.append(per_value, np.array([null_value], dtype=per_value.dtype))[codes]


def _parse_category(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    codes, tokens, missing_values = _token_lookup(raw, settings, spec)
    missing = _rows(missing_values, codes, True)
    problems = []
    valid_tokens = tokens.mask(missing_values)
    if spec.allowed is not None:
        not_allowed = (valid_tokens.notna() & ~valid_tokens.isin(spec.allowed)).to_numpy()
        shown = ", ".join(spec.allowed[:_SHOWN_ALLOWED]) + (
            ", ..." if len(spec.allowed) > _SHOWN_ALLOWED else ""
        )
        row_mask = _rows(not_allowed, codes, False)
        if row_mask.any():
            problems.append(
                _value_problem(raw, row_mask, spec.name, f"is not one of {shown}", "not an allowed value")
            )
        valid_tokens = valid_tokens.mask(not_allowed)
        categories = pd.Index(spec.allowed, dtype="str")
    else:
        categories = pd.Index(sorted(valid_tokens.dropna().unique()), dtype="str")
    category_codes = categories.get_indexer(valid_tokens.astype("str")).astype(np.int64)
    row_codes = _rows(category_codes, codes, -1)
    typed = pd.Series(pd.Categorical.from_codes(row_codes, dtype=pd.CategoricalDtype(categories)))
    return typed, missing, problems


def _parse_boolean(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    if pd.api.types.is_bool_dtype(raw.dtype):
        typed = raw.astype("boolean").reset_index(drop=True)
        return typed, typed.isna().to_numpy(), []
    codes, tokens, missing_values = _token_lookup(raw, settings, spec)
    truth = tokens.isin(TRUE_TOKENS).to_numpy()
    falsehood = tokens.isin(FALSE_TOKENS).to_numpy()
    invalid_values = ~missing_values & ~truth & ~falsehood
    per_value = np.where(truth, True, np.where(falsehood, False, None)).astype(object)
    typed = pd.Series(pd.array(_rows(per_value, codes, None), dtype="boolean"))
    invalid = _rows(invalid_values, codes, False)
    problems = (
        [
            _value_problem(
                raw, invalid, spec.name, "is not a boolean (true/false, yes/no, 1/0)", "not a boolean"
            )
        ]
        if invalid.any()
        else []
    )
    return typed, _rows(missing_values, codes, True), problems


def _range_problems(
    raw: pd.Series, numbers: np.ndarray, valid: np.ndarray, spec: ColumnSpec
) -> list[RowProblem]:
    problems = []
    if spec.min is not None and (below := valid & (numbers < spec.min)).any():
        problems.append(
            _value_problem(raw, below, spec.name, f"is below the minimum {spec.min:g}", "below minimum")
        )
    if spec.max is not None and (above := valid & (numbers > spec.max)).any():
        problems.append(
            _value_problem(raw, above, spec.name, f"is above the maximum {spec.max:g}", "above maximum")
        )
    return problems


def _parse_number(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(numbers)
    else:
        cleaned, missing = _clean_text(as_text(raw), spec.missing_markers(settings))
        numbers = pd.to_numeric(cleaned, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if spec.missing_values:
        marked = np.isin(numbers, spec.numeric_missing_values())
        missing = missing | marked
        numbers = np.where(marked, np.nan, numbers)
    problems = []
    finite = np.isfinite(numbers)
    invalid = ~missing & ~finite
    if invalid.any():
        problems.append(_value_problem(raw, invalid, spec.name, "is not a number", "not a number"))
    if spec.dtype == "integer":
        fractional = finite & (numbers != np.floor(numbers))
        if fractional.any():
            problems.append(
                _value_problem(raw, fractional, spec.name, "is not a whole number", "not a whole number")
            )
        invalid = invalid | fractional
        huge = finite & ~fractional & (np.abs(numbers) >= 2.0**63)  # beyond a 64-bit integer
        if huge.any():
            what = "is too large for a whole number"
            problems.append(_value_problem(raw, huge, spec.name, what, "too large"))
        invalid = invalid | huge
    range_problems = _range_problems(raw, numbers, finite & ~invalid, spec)
    for problem in range_problems:
        invalid = invalid | problem.mask
    values = pd.Series(np.where(invalid, np.nan, numbers), dtype="float64")
    return (values.astype("Int64") if spec.dtype == "integer" else values), missing, problems + range_problems


def _localised(naive: pd.Series, timezone: str) -> pd.Series:
    # A local time that does not exist or is ambiguous (daylight saving change) becomes NaT: quarantined.
    return naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")


def _timestamps_from_text(
    raw: pd.Series, spec: ColumnSpec, settings: IngestSettings
) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """(UTC timestamps, missing, unparseable, invalid local time) from text."""
    cleaned, missing = _clean_text(as_text(raw), spec.missing_markers(settings))
    cleaned = cleaned.reset_index(drop=True)
    # utc=True for every value: offsets are honoured and a naive value reads as UTC wall-clock time,
    # which is then re-read in the configured zone; to_datetime never sees a naive/aware mix.
    as_utc = pd.to_datetime(cleaned, format=spec.format or "ISO8601", utc=True, errors="coerce")
    unparseable = ~missing & as_utc.isna().to_numpy()
    if settings.timezone == "UTC":
        return as_utc, missing, unparseable, np.zeros(len(cleaned), dtype=bool)
    if spec.format is not None:
        has_offset = np.full(len(cleaned), "%z" in spec.format)
    else:
        has_offset = cleaned.str.contains(_OFFSET_PATTERN, regex=True).to_numpy(dtype=bool, na_value=False)
    local = _localised(as_utc.dt.tz_localize(None), settings.timezone)
    invalid_local = ~has_offset & as_utc.notna().to_numpy() & local.isna().to_numpy()
    return as_utc.where(has_offset, local), missing, unparseable, invalid_local


def _parse_timestamp(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        missing = raw.isna().to_numpy()
        unparseable = np.zeros(len(raw), dtype=bool)
        if raw.dt.tz is not None:
            parsed, invalid_local = raw.dt.tz_convert("UTC"), unparseable
        else:
            parsed = _localised(raw, settings.timezone)
            invalid_local = ~missing & parsed.isna().to_numpy()
    else:
        parsed, missing, unparseable, invalid_local = _timestamps_from_text(raw, spec, settings)
    problems = []
    if unparseable.any():
        what = f"does not match {spec.format!r}" if spec.format else "is not an ISO 8601 timestamp"
        problems.append(_value_problem(raw, unparseable, spec.name, what, "not a timestamp"))
    if invalid_local.any():
        problems.append(
            _value_problem(
                raw,
                invalid_local,
                spec.name,
                f"is not a valid local time in {settings.timezone}",
                "invalid local time",
            )
        )
    parsed = parsed.reset_index(drop=True).dt.as_unit(TIMESTAMP_UNIT)
    reference = settings.reference_time if settings.reference_time is not None else pd.Timestamp.now(tz="UTC")
    future = (parsed > reference).to_numpy(dtype=bool, na_value=False)
    if future.any():
        problems.append(
            _value_problem(
                raw, future, spec.name, f"is in the future (after {reference.isoformat()})", "in the future"
            )
        )
    ancient = (parsed < EARLIEST_TIMESTAMP).to_numpy(dtype=bool, na_value=False)
    if ancient.any():
        what = f"is before {EARLIEST_TIMESTAMP:%Y-%m-%d} (not a plausible date)"
        problems.append(_value_problem(raw, ancient, spec.name, what, "before 1900"))
    return parsed.mask(future | ancient), missing, problems


_PARSERS: Mapping[str, Callable[[pd.Series, ColumnSpec, IngestSettings], Parsed]] = {
    "string": _parse_string,
    "category": _parse_category,
    "boolean": _parse_boolean,
    "integer": _parse_number,
    "float": _parse_number,
    "timestamp": _parse_timestamp,
}


def parse_column(
    raw: pd.Series, spec: ColumnSpec, settings: IngestSettings
) -> tuple[pd.Series, list[RowProblem]]:
    """One raw column -> (typed values, problems). Broken values are null in the typed column."""
    raw = raw.reset_index(drop=True)
    typed, missing, problems = _PARSERS[spec.dtype](raw, spec, settings)
    if not spec.nullable and missing.any():
        problems.insert(0, RowProblem(missing, f"{spec.name}: missing", f"{spec.name}: missing value"))
    return typed.reset_index(drop=True).rename(spec.name), problems


# --------------------------------------------------------------------------- duplicates
def _key_text(frame: pd.DataFrame, key: Sequence[str]) -> pd.Series:
    if len(key) == 1:
        return as_text(frame[key[0]])
    parts = [as_text(frame[column]) for column in key]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ", " + part
    return "(" + joined + ")"


def duplicate_problems(
    typed: pd.DataFrame,
    eligible: np.ndarray,
    key: Sequence[str],
    rule: DuplicateRule,
    source_rows: np.ndarray | None = None,
) -> list[RowProblem]:
    """Rows that lose to another eligible row with the same non-null key under ``rule``.

    ``source_rows`` (1-based, per row of ``typed``) names the kept row in the message; default
    the row's position + 1.
    """
    key = list(key)
    candidates = eligible & typed[key].notna().all(axis=1).to_numpy()
    keys = typed.loc[candidates, key]
    repeated = keys.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return []
    group = keys[repeated].copy()
    group["_position"] = group.index.to_numpy()
    if rule == "most_complete":
        group["_filled"] = -typed.loc[group.index].notna().sum(axis=1)
        order = [*key, "_filled", "_position"]
    else:
        group["_filled"] = 0
        order = [*key, "_position"]
    group = group.sort_values(order, ascending=[True] * (len(order) - 1) + [rule != "last"], kind="stable")
    kept = group.groupby(key, sort=False, observed=True, dropna=False)["_position"].transform("first")
    losers = group.index[group["_position"].to_numpy() != kept.to_numpy()]
    mask = np.zeros(len(typed), dtype=bool)
    mask[losers] = True
    label = key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"
    kept_positions = kept.loc[losers].to_numpy(dtype="int64")
    kept_rows = pd.Series(
        kept_positions + 1 if source_rows is None else np.asarray(source_rows)[kept_positions],
        index=losers,
    ).astype("str")
    messages = f"duplicate {label} " + _key_text(typed.loc[losers], key) + ", kept source row " + kept_rows
    return [RowProblem(mask, f"duplicate {label}", messages)]


# --------------------------------------------------------------------------- validation
def check_required_columns(raw: pd.DataFrame, contract: TableContract, source: str) -> None:
    missing = [spec.name for spec in contract.columns if spec.required and spec.name not in raw.columns]
    if missing:
        raise ContractError(
            f"{contract.name} from {source}: missing required column(s) {', '.join(missing)}; "
            f"present columns: {', '.join(map(str, raw.columns)) or '(none)'}"
        )
    reserved = sorted(set(map(str, raw.columns)) & set(QUARANTINE_COLUMNS))
    if reserved:
        raise ContractError(
            f"{contract.name} from {source}: column(s) {', '.join(reserved)} are reserved for "
            "the quarantine file; rename them in the source's columns mapping"
        )


def _reasons(problems: Sequence[RowProblem], positions: np.ndarray) -> pd.Series:
    """All reasons of each bad row, in rule order, joined by "; " (vectorised per rule, not per row)."""
    reasons = pd.Series("", index=positions, dtype="str")
    for problem in problems:
        rows = np.flatnonzero(problem.mask)
        if isinstance(problem.messages, str):
            messages = pd.Series(problem.messages, index=rows, dtype="str")
        else:
            messages = problem.messages.reindex(rows).astype("str")
        current = reasons.loc[rows]
        reasons.loc[rows] = current.where(current == "", current + "; ").to_numpy() + messages.to_numpy()
    return reasons


def quarantine_frame(
    raw: pd.DataFrame,
    positions: np.ndarray,
    reasons: pd.Series,
    table: str,
    source_rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Original values of the rows at ``positions`` as text, with source row, reason and table.

    ``source_rows`` (1-based, per row of ``raw``): the rows' numbers in their source when ``raw``
    is a filtered part of it; default the position + 1.
    """
    rows = raw.iloc[positions]
    frame = pd.DataFrame(
        {column: as_text(rows[column]).to_numpy() for column in raw.columns},
        index=pd.RangeIndex(len(positions)),
        columns=raw.columns,
        dtype="str",
    )
    positions = np.asarray(positions, dtype=np.int64)
    frame[SOURCE_ROW] = positions + 1 if source_rows is None else np.asarray(source_rows)[positions]
    frame[REASON] = pd.array(reasons.reindex(positions).to_numpy(), dtype="str")
    frame[TABLE] = pd.array([table] * len(positions), dtype="str")
    return frame


def _finished_categories(frame: pd.DataFrame, contract: TableContract) -> pd.DataFrame:
    """Open categories keep only the values that survived, in sorted order (stable across runs)."""
    updates = {
        spec.name: frame[spec.name].cat.remove_unused_categories()
        for spec in contract.columns
        if spec.dtype == "category" and spec.allowed is None and spec.name in frame
    }
    return frame.assign(**updates) if updates else frame


def _flagged(problems: Iterable[RowProblem], rows: int) -> np.ndarray:
    bad = np.zeros(rows, dtype=bool)
    for problem in problems:
        bad |= problem.mask
    return bad


def _check_row_balance(table: str, input_rows: int, accepted: int, quarantined: int) -> None:
    if accepted + quarantined != input_rows:
        raise AssertionError(
            f"{table}: {accepted} accepted + {quarantined} quarantined != {input_rows} input rows"
        )


def check_bad_share(report: TableReport, max_bad_share: float) -> None:
    """Raise ContractError when more than ``max_bad_share`` of the table's rows were quarantined."""
    if report.bad_share <= max_bad_share:
        return
    common = sorted(report.reason_counts.items(), key=lambda item: -item[1])[:3]
    reasons = ", ".join(f"{reason} ({count:,})" for reason, count in common)
    where = report.quarantine_path or "(quarantine file not written)"
    collateral = (
        f" (not counting {report.collateral_rows:,} rows quarantined only because a row they belong to was)"
        if report.collateral_rows
        else ""
    )
    if report.excluded_rows:
        collateral += f" (nor {report.excluded_rows:,} sound rows set aside, e.g. not yet labelled)"
    raise ContractError(
        f"{report.table} from {report.source}: {report.bad_rows:,} of {report.input_rows:,} rows "
        f"({report.bad_share:.1%}){collateral} broke the contract, more than max_bad_share "
        f"{max_bad_share:.1%}; quarantined rows are in {where}; most common reasons: {reasons}"
    )


def validate_table(
    raw: pd.DataFrame,
    contract: TableContract,
    settings: IngestSettings,
    *,
    source: str = "an in-memory frame",
    quarantine_path: str | None = None,
    row_checks: Sequence[RowCheck] = (),
    enforce_bad_share: bool = True,
    source_rows: np.ndarray | None = None,
) -> ValidatedTable:
    """Apply ``contract`` to ``raw``: typed accepted rows, quarantined rows and a report.

    ``row_checks`` get the typed frame (index = row position) and add problems of their own
    (cross-column or cross-table rules); they run before duplicates are resolved. With
    ``enforce_bad_share`` a share of bad rows above ``settings.max_bad_share`` raises.
    ``source_rows`` (1-based, increasing, one per row of ``raw``) are the rows' numbers in the
    source when ``raw`` is a filtered part of it (``data.where``): quarantine and messages name them.
    """
    check_required_columns(raw, contract, source)
    raw = raw.reset_index(drop=True)
    rows = len(raw)
    typed_columns: dict[str, pd.Series] = {}
    problems: list[RowProblem] = []
    for spec in contract.columns:
        if spec.name in raw.columns:
            typed_columns[spec.name], column_problems = parse_column(raw[spec.name], spec, settings)
            problems.extend(column_problems)
        else:
            typed_columns[spec.name] = _empty_column(spec, rows)
    passthrough = [column for column in raw.columns if column not in typed_columns]
    typed = pd.DataFrame(
        {**typed_columns, **{column: raw[column] for column in passthrough}}, index=pd.RangeIndex(rows)
    )
    bad = _flagged(problems, rows)
    # Row checks only judge rows whose values are valid: a null left by an unparseable closed_at
    # must not also read as "won without closed_at".
    checked = [replace(problem, mask=problem.mask & ~bad) for check in row_checks for problem in check(typed)]
    problems.extend(problem for problem in checked if problem.mask.any())
    bad = _flagged(problems, rows)
    keys = [list(contract.primary_key)] if contract.primary_key else []
    keys += [
        [spec.name] for spec in contract.columns if spec.unique and spec.name not in contract.primary_key
    ]
    for key in keys:
        for problem in duplicate_problems(typed, ~bad, key, contract.duplicates, source_rows):
            problems.append(problem)
            bad |= problem.mask

    positions = np.flatnonzero(bad)
    quarantine = quarantine_frame(raw, positions, _reasons(problems, positions), contract.name, source_rows)
    accepted = _finished_categories(typed.loc[~bad].reset_index(drop=True), contract)
    _check_row_balance(contract.name, rows, len(accepted), len(quarantine))

    reason_counts: Counter[str] = Counter()
    for problem in problems:
        reason_counts[problem.category] += int(problem.mask.sum())
    report = TableReport(
        table=contract.name,
        source=source,
        input_rows=rows,
        accepted_rows=len(accepted),
        quarantined_rows=len(quarantine),
        reason_counts=dict(reason_counts.most_common()),
        missing_optional_columns=tuple(
            spec.name for spec in contract.columns if spec.name not in raw.columns
        ),
        passthrough_columns=tuple(map(str, passthrough)),
        personal_columns=contract.personal_columns,
        quarantine_path=quarantine_path,
    )
    logger.info(
        "%s: %d rows in, %d accepted, %d quarantined", contract.name, rows, len(accepted), len(quarantine)
    )
    if enforce_bad_share:
        check_bad_share(report, settings.max_bad_share)
    kept = np.flatnonzero(~bad)
    if source_rows is None:
        return ValidatedTable(accepted, quarantine, report, kept + 1)
    source_rows = np.asarray(source_rows, dtype=np.int64)
    return ValidatedTable(accepted, quarantine, report, source_rows[kept], source_rows)


def move_to_quarantine(
    validated: ValidatedTable,
    raw: pd.DataFrame,
    mask: np.ndarray,
    messages: pd.Series | str,
    category: str,
    *,
    collateral: bool = False,
) -> ValidatedTable:
    """Move accepted rows (``mask`` over accepted rows) to quarantine after the fact.

    Used for rules that can only be checked once another table is known. ``messages`` is one
    string or a Series indexed by accepted-row position. ``collateral`` rows are not counted
    against ``max_bad_share`` (the row they depend on already was).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return validated
    positions = validated.raw_positions(validated.accepted_source_rows[mask])
    if isinstance(messages, str):
        reasons = pd.Series(messages, index=positions, dtype="str")
    else:
        reasons = pd.Series(messages.reindex(np.flatnonzero(mask)).to_numpy(), index=positions, dtype="str")
    moved = quarantine_frame(
        raw.reset_index(drop=True), positions, reasons, validated.report.table, validated.raw_source_rows
    )
    parts = [part for part in (validated.quarantine, moved) if len(part)]
    quarantine = pd.concat(parts, ignore_index=True) if len(parts) > 1 else moved
    quarantine = quarantine.sort_values(SOURCE_ROW, kind="stable").reset_index(drop=True)
    accepted = validated.accepted.loc[~mask].reset_index(drop=True)
    report = validated.report
    counts = Counter(report.reason_counts)
    counts[category] += int(mask.sum())
    report = replace(
        report,
        accepted_rows=len(accepted),
        quarantined_rows=len(quarantine),
        reason_counts=dict(counts.most_common()),
        collateral_rows=report.collateral_rows + (int(mask.sum()) if collateral else 0),
    )
    _check_row_balance(report.table, report.input_rows, len(accepted), len(quarantine))
    return replace(
        validated,
        accepted=accepted,
        quarantine=quarantine,
        report=report,
        accepted_source_rows=validated.accepted_source_rows[~mask],
    )
