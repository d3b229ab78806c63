"""What a request to the served model may hold, and how its single values are read.

Shared by the two request paths of ``leadml.scoring.requests`` (the pandas reference) and
``leadml.scoring.request_plan`` (the compiled path): the field names, the fields each model asks
for, the readers of one value (number, date-time, text as training spelt it), the words of the
warnings and the previous answer a row may carry. A value that cannot be read raises
:class:`RequestError`, whose message names the row and field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.contracts import (
    NOT_PLAIN,
    ColumnSpec,
    IngestSettings,
    RowProblem,
    TableContract,
    category_synonyms,
    configured_crm_contracts,
    normalise_token,
    plain_text,
)
from leadml.data.features import FeatureSettings
from leadml.data.parsing import parse_column
from leadml.data.wording import counted
from leadml.errors import LeadmlError
from leadml.modelling.evaluate import FLOOR_TIER
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer
from leadml.scoring.scores import TierSettings

ACTIVITIES = "activities"
REQUEST_AS_OF = "as_of"
# the e-mail's domain only (a corporate-address flag): the endpoint never needs the address
EMAIL_DOMAIN = "email_domain"
WARNINGS = "warnings"
# a request row may carry its lead's previous answer (the object the endpoint returned then, or the
# scored partition's row): the answer then also says why the lead moved (margin_change, movement)
PREVIOUS = "previous_answer"
# request fields that describe the lead's account (the CRM's accounts table)
ACCOUNT_FIELDS: dict[str, str] = {
    s.INDUSTRY: s.INDUSTRY,
    s.EMPLOYEES: s.EMPLOYEES,
    s.ANNUAL_REVENUE: s.ANNUAL_REVENUE,
    "company_country": s.COUNTRY,
    s.FOUNDED_YEAR: s.FOUNDED_YEAR,
}
ACCOUNT_NUMERIC = (s.EMPLOYEES, s.ANNUAL_REVENUE, s.FOUNDED_YEAR)
# request field -> the features it feeds (beyond a feature of its own name)
DERIVED_FEATURES: dict[str, tuple[str, ...]] = {
    s.CREATED_AT: ("lead_age_days",),
    s.JOB_TITLE: ("seniority",),
    EMAIL_DOMAIN: ("corporate_email",),
    s.FOUNDED_YEAR: ("company_age_years",),
    s.EMPLOYEES: (s.EMPLOYEES, "revenue_per_employee"),
    s.ANNUAL_REVENUE: (s.ANNUAL_REVENUE, "revenue_per_employee"),
}
ACTIVITY_FIELDS = (s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY)
MAX_LISTED = 5
MAX_LISTED_ACTIVITIES = 3  # each reason may list the contract's values


class RequestError(LeadmlError):
    """A request the model cannot score; the message names the row and field."""


@dataclass(frozen=True)
class Tiers:
    """Probability minimum of each tier as stored in the model (``LeadScorer.tiers``)."""

    thresholds: Mapping[str, float]
    floor_tier: str

    @classmethod
    def of(cls, scorer: LeadScorer) -> Tiers:
        stored = getattr(scorer, "tiers", None) or {}
        thresholds = stored.get("thresholds") or TierSettings().thresholds
        floor_tier = str(stored.get("floor_tier") or FLOOR_TIER)
        return cls({str(k): float(v) for k, v in thresholds.items()}, floor_tier)

    def settings(self) -> TierSettings:
        return TierSettings(
            method="probability", thresholds=dict(self.thresholds), floor_tier=self.floor_tier
        )


# --------------------------------------------------------------------------- fields of a model
def lead_fields(scorer: LeadScorer) -> list[str]:
    """The request fields of the lead shape for this model (empty: it takes features only).

    ``created_at`` and every field that feeds one of the model's features: a column left out
    of the model (``features.exclude``, the leakage sentinel) is not asked for.
    """
    settings = feature_settings_of(scorer)
    if settings is None:
        return []
    own = [*settings.lead_categorical, *settings.extra_categorical, *settings.lead_numeric]
    own += list(settings.extra_numeric)
    used = set(scorer.feature_names)
    fields = [
        field
        for field in dict.fromkeys([s.JOB_TITLE, EMAIL_DOMAIN, *own, *ACCOUNT_FIELDS])
        if used.intersection((field, *DERIVED_FEATURES.get(field, ())))
    ]
    return [s.CREATED_AT, *fields]


def lead_numeric_fields(scorer: LeadScorer) -> list[str]:
    settings = feature_settings_of(scorer)
    if settings is None:
        return []
    return [*settings.lead_numeric, *settings.extra_numeric, *ACCOUNT_NUMERIC]


def known_fields(scorer: LeadScorer) -> list[str]:
    """Every field a request row may hold for this model, each once: ``lead_id`` (or the flat table's
    own id column), ``as_of``, the features, the lead fields with ``activities``, ``previous_answer``.

    Any other field of a request is ignored (the pyfunc names it in the server's log once).
    """
    own_id = [scorer.request_id] if getattr(scorer, "request_id", None) else []
    names = [s.LEAD_ID, *own_id, REQUEST_AS_OF, *scorer.feature_names, *lead_fields(scorer)]
    if lead_fields(scorer):
        names.append(ACTIVITIES)
    names.append(PREVIOUS)
    return list(dict.fromkeys(names))


def feature_settings_of(scorer: LeadScorer) -> FeatureSettings | None:
    """The settings the model's features were built with (None: a flat table's model)."""
    stored = getattr(scorer, "feature_settings", None)
    return FeatureSettings.from_mapping(stored) if stored else None


def is_lead_request(frame: pd.DataFrame) -> bool:
    """Lead fields (``created_at`` or ``activities`` present) rather than precomputed features."""
    return any(name in frame.columns and frame[name].notna().any() for name in (s.CREATED_AT, ACTIVITIES))


def numeric_features(scorer: LeadScorer) -> list[str]:
    categories = getattr(scorer.model, "categories", None) or {}
    kinds = {name: meta.get("kind") for name, meta in (scorer.metadata or {}).items()}
    return [n for n in scorer.feature_names if n not in categories and kinds.get(n) != "categorical"]


def training_levels(scorer: LeadScorer) -> dict[str, set[Any]]:
    """The levels of each categorical feature as training saw them (the model's, else the
    training profile's)."""
    levels = {name: set(values) for name, values in (getattr(scorer.model, "categories", None) or {}).items()}
    for name, profile in ((scorer.reference or {}).get("features") or {}).items():
        if profile.get("kind") == "categorical" and name not in levels:
            levels[name] = set(profile.get("shares") or {}) - {"__missing__", "__unseen__"}
    return levels


# --------------------------------------------------------------------------- one value
NOT_A_NUMBER = object()


def number(value: Any) -> Any:
    """``value`` as a float (NaN when missing), or :data:`NOT_A_NUMBER`: text that reads as a
    number is taken, anything else is refused."""
    if is_missing(value):
        return np.nan
    if isinstance(value, bool) or not isinstance(value, str | int | float | np.integer | np.floating):
        return NOT_A_NUMBER
    try:
        parsed = float(value)
    except (ValueError, OverflowError):
        return NOT_A_NUMBER
    return parsed if np.isfinite(parsed) or np.isnan(parsed) else NOT_A_NUMBER


def timestamp(value: Any, where: str) -> pd.Timestamp:
    """An ISO 8601 date-time in UTC (NaT when missing); ``where`` names the row and field."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return pd.NaT
    if not isinstance(value, str | pd.Timestamp):
        raise RequestError(f"{where}: expected an ISO 8601 date-time, got {shown(value)}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise RequestError(f"{where}: {shown(value)} is not an ISO 8601 date-time") from None
    if pd.isna(stamp):
        return pd.NaT
    if not 1900 <= stamp.year <= 2200:
        raise RequestError(f"{where}: {shown(value)} is not a plausible date")
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def is_missing(value: Any) -> bool:
    if isinstance(value, list | dict | np.ndarray):
        return False
    return value is None or (isinstance(value, float) and np.isnan(value))


def shown(value: Any) -> str:
    """A value quoted in a message, cut short (a client may send anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def training_spelling(value: Any, levels: set[Any], synonyms: Mapping[str, str]) -> Any:
    """``value`` as training spelt it: ingestion stores a declared category trimmed, in lower
    case, separators as ``_`` ("Paid Search" -> "paid_search"), then through the data config's
    ``synonyms``, so a request spelt as in the export is mapped to that level; a value known as
    it is, or unknown either way, stays."""
    if value is None or value in levels:
        return value
    token = normalise_token(str(value))
    token = synonyms.get(token, token)
    return token if token in levels else value


# --------------------------------------------------------------------------- the contracts' rules
# The nightly job's "not in the future" bound of an activity's time is the moment it runs; a
# request's is its ``as_of``, by which a read activity is counted or ignored ("at or after as_of"):
# the parser reading a request's activities has no bound of its own but the latest time it reads.
LATEST_ACTIVITY = pd.Timestamp("9999-12-31T23:59:59.999999", tz="UTC")


@dataclass(frozen=True)
class FieldRule:
    """A field of the lead shape and the contract column the nightly job reads and checks it by.

    What the nightly job does with a value its contract refuses decides what the endpoint does:
    a refused lead value quarantines the lead (the endpoint answers 400); a refused account value
    quarantines the account, and the lead is scored with its firmographics missing (the endpoint
    scores the lead with every account field missing and says so in ``warnings``); a refused
    activity quarantines that activity only (the endpoint ignores it, with a warning).
    """

    field: str
    spec: ColumnSpec
    on_account: bool
    # text and category columns: the missing markers and the synonyms validation applies, worked
    # out once for the compiled path's quick reading (``leadml.data.contracts.plain_text``)
    markers: frozenset[str] = frozenset()
    synonyms: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, name: str, spec: ColumnSpec, settings: IngestSettings, *, on_account: bool) -> FieldRule:
        synonyms = category_synonyms(spec, settings) if spec.dtype == "category" else {}
        return cls(name, spec, on_account, spec.missing_markers(settings), synonyms)

    @property
    def is_number(self) -> bool:
        return self.spec.dtype in ("integer", "float")

    def quick_text(self, value: str) -> Any:
        """The value as validation keeps it (None: a missing marker), or ``NOT_PLAIN`` where the
        parser has to read it (:func:`checked_texts`)."""
        return plain_text(self.spec, value, self.markers, self.synonyms)


@dataclass(frozen=True)
class ContractRules:
    """The request fields the data contracts check, and how the nightly job reads missing values."""

    fields: Mapping[str, FieldRule]  # number fields
    texts: Mapping[str, FieldRule]  # text and category fields (job_title, source, industry, ...)
    activities: Mapping[str, FieldRule]  # an activity's timestamp, activity_type and page_category
    settings: IngestSettings
    activity_settings: IngestSettings  # ``settings`` with no "future" (LATEST_ACTIVITY): as_of decides

    @classmethod
    def of(cls, scorer: LeadScorer) -> ContractRules:
        """The rules the model's training data was validated by (``LeadScorer.data_contract``; the
        default contracts for a model trained before it was recorded)."""
        recorded = getattr(scorer, "data_contract", None) or {}
        contracts = configured_crm_contracts(recorded.get("extra_features"), recorded.get("limits"))
        settings = IngestSettings(
            missing_markers=tuple(recorded.get("missing_markers") or ()),
            synonyms=recorded.get("synonyms") or {},
        )
        numbers: dict[str, FieldRule] = {}
        texts: dict[str, FieldRule] = {}
        for name, column in ACCOUNT_FIELDS.items():
            rule = FieldRule.of(name, contracts[s.ACCOUNTS].column(column), settings, on_account=True)
            (numbers if name in ACCOUNT_NUMERIC and rule.is_number else texts)[name] = rule
        leads = contracts[s.LEADS]
        for name in lead_numeric_fields(scorer):
            spec = leads.column(name) if name in leads.names else None
            if name not in numbers and spec is not None and spec.dtype in ("integer", "float"):
                numbers[name] = FieldRule.of(name, spec, settings, on_account=False)
        for name, spec in _lead_text_specs(scorer, leads).items():
            texts.setdefault(name, FieldRule.of(name, spec, settings, on_account=False))
        activity_settings = replace(settings, reference_time=LATEST_ACTIVITY)
        table = contracts[s.ACTIVITIES]
        activities = {
            name: FieldRule.of(name, table.column(name), activity_settings, on_account=False)
            for name in ACTIVITY_FIELDS
        }
        return cls(numbers, texts, activities, settings, activity_settings)


def _lead_text_specs(scorer: LeadScorer, leads: TableContract) -> dict[str, ColumnSpec]:
    """The contract column of each text field of the lead: its own, the e-mail address's for the
    e-mail domain, and a category for a categorical feature the recorded contract does not declare
    (a model trained before the contract was recorded: ``extra_features.categorical`` declares it)."""
    settings = feature_settings_of(scorer)
    if settings is None:
        return {}
    categorical = (*settings.lead_categorical, *settings.extra_categorical)
    specs = {}
    for name in (s.JOB_TITLE, EMAIL_DOMAIN, *categorical):
        column = s.EMAIL if name == EMAIL_DOMAIN else name
        if column in leads.names:
            spec = leads.column(column)
            if spec.dtype in ("string", "category"):  # a code column declared as a number: as before
                specs[name] = spec
        elif name in categorical:
            specs[name] = ColumnSpec(name, "category", required=False)
    return specs


@dataclass(frozen=True)
class CheckedNumbers:
    """A number field's values as the nightly job reads them (NaN: missing or refused), with why the
    contract refuses the value of a row (by row) and which rows hold a missing-value marker."""

    values: np.ndarray
    refused: Mapping[int, str]
    marked_missing: frozenset[int]


def checked_numbers(values: Sequence[Any], rule: FieldRule, settings: IngestSettings) -> CheckedNumbers:
    """``values`` read by the contract's own parser (``leadml.data.parsing.parse_column``), as the
    nightly job reads a column of a CRM table: missing markers ("NA", "null", the data config's
    own), numbers written as text, whole numbers, ranges. A list or an object is no value a CRM
    table can hold: :class:`RequestError`."""
    for row, value in enumerate(values):
        if isinstance(value, list | dict | np.ndarray):
            kind = type(value).__name__
            raise RequestError(f"row {row}, field {rule.field!r}: expected a number, got {kind}")
    raw = pd.Series([None if is_missing(value) else value for value in values], dtype=object)
    typed, problems = parse_column(_as_parsed(raw), rule.spec, settings)
    refused = refusals(problems, rule.spec.name)
    numbers = typed.to_numpy(dtype="float64", na_value=np.nan)
    marked = frozenset(
        row
        for row, value in enumerate(raw)
        if value is not None and np.isnan(numbers[row]) and row not in refused
    )
    return CheckedNumbers(numbers, refused, marked)


def refusals(problems: Sequence[RowProblem], column: str) -> dict[int, str]:
    """The first reason the parser gives for each row it refuses, without the column's name."""
    refused: dict[int, str] = {}
    for problem in problems:
        for row in np.flatnonzero(problem.mask):
            message = problem.messages if isinstance(problem.messages, str) else problem.messages.loc[row]
            reason = str(message).removeprefix(f"{column}: ")
            refused.setdefault(int(row), "is missing" if reason == "missing value" else reason)
    return refused


def _as_parsed(raw: pd.Series) -> pd.Series:
    """Numbers as a number column (as a Parquet file holds them), anything else as text (as CSV)."""
    numbers = (int, float, np.integer, np.floating)
    if all(isinstance(v, numbers) and not isinstance(v, bool) for v in raw.dropna()):
        try:
            return raw.astype("float64")
        except OverflowError:  # an integer beyond a float: the parser reads its text
            return raw.astype(str)
    return raw


def text_of(value: Any) -> str | None:
    """A text field's value as text, as the nightly job's parser writes a value of a typed column
    (``leadml.data.parsing.as_text``): a whole float without ``.0`` (4350.0 -> "4350"), any other
    number or a boolean as Python writes it; None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == math.floor(value):
        return str(int(value)) if abs(value) < 2**53 else str(float(value))
    return str(value)


@dataclass(frozen=True)
class CheckedTexts:
    """A text field's values as the nightly job keeps them (None: missing or refused), with why the
    contract refuses the value of a row and which rows hold a missing-value marker."""

    values: list[str | None]
    refused: Mapping[int, str]
    marked_missing: frozenset[int]


def checked_texts(values: Sequence[str | None], rule: FieldRule, settings: IngestSettings) -> CheckedTexts:
    """``values`` (text, or None) read by the contract's own parser: trimmed, missing markers as
    None, a category case-folded, its separators as ``_`` and mapped through its synonyms
    ("Paid Search", "PAID-SEARCH" -> "paid_search"), a value outside its allowed values refused."""
    raw = pd.Series(list(values), dtype=object)
    typed, problems = parse_column(raw, rule.spec, settings)
    refused = refusals(problems, rule.spec.name)
    kept = [None if is_missing(value) else str(value) for value in typed.tolist()]
    marked = frozenset(
        row
        for row, value in enumerate(values)
        if value is not None and kept[row] is None and row not in refused
    )
    return CheckedTexts(kept, refused, marked)


@dataclass(frozen=True)
class CheckedActivities:
    """A request's activities as the nightly job reads them (activity by activity): the time in
    microseconds since 1970 UTC, the position of the type in ``ACTIVITY_TYPES`` and of the page in
    ``PAGE_CATEGORIES`` (-1: none), and why the contract refuses (quarantines) an activity."""

    microseconds: np.ndarray
    types: np.ndarray
    pages: np.ndarray
    refused: Mapping[int, str]


def checked_activities(events: Sequence[Mapping[str, Any]], rules: ContractRules) -> CheckedActivities:
    """``events`` (objects of ``ACTIVITY_FIELDS``, read structurally already) by the activities
    contract's parser: a time that is missing, not ISO 8601 or before 1900, an activity type or
    page category outside the contract's values (after trimming, case folding and synonyms: "Page
    View" is page_view) refuse the activity, as the nightly job quarantines it."""
    refused: dict[int, str] = {}
    read = {}
    for name in ACTIVITY_FIELDS:
        read[name], reasons = checked_activity_values([event.get(name) for event in events], name, rules)
        for position, reason in reasons.items():
            refused.setdefault(position, reason)
    return CheckedActivities(read[s.TIMESTAMP], read[s.ACTIVITY_TYPE], read[s.PAGE_CATEGORY], refused)


def checked_activity_values(
    values: Sequence[Any], name: str, rules: ContractRules
) -> tuple[np.ndarray, dict[int, str]]:
    """One field of activities read by the contract's parser: times in microseconds since 1970 UTC,
    types and pages as their positions in ``ACTIVITY_TYPES`` and ``PAGE_CATEGORIES`` (-1: none);
    and why the parser refuses a value (by position: "timestamp is missing"). The parser reads a
    value alone, whatever values come with it: a caller may read some activities only."""
    raw = pd.Series([text_of(value) for value in values], dtype=object)
    typed, problems = parse_column(raw, rules.activities[name].spec, rules.activity_settings)
    reasons = {position: f"{name} {reason}" for position, reason in refusals(problems, name).items()}
    if name == s.TIMESTAMP:
        return typed.dt.as_unit("us").array.asi8, reasons
    return _positions(typed, s.ACTIVITY_TYPES if name == s.ACTIVITY_TYPE else s.PAGE_CATEGORIES), reasons


def check_activity_shape(event: Any, where: str) -> None:
    """Refuse an activity that is not an object of ``ACTIVITY_FIELDS`` with plain values: no CRM
    export holds such a row (a value the contract refuses is another matter: the activity is
    ignored, see :func:`checked_activities`). ``where`` names the row and the activity."""
    if not isinstance(event, Mapping):
        raise RequestError(f"{where}: expected an object with {', '.join(ACTIVITY_FIELDS[:2])}")
    unknown = sorted(set(event) - set(ACTIVITY_FIELDS), key=str)
    if unknown:
        raise RequestError(f"{where}: unknown field(s) {unknown}; known: {list(ACTIVITY_FIELDS)}")
    for name, value in event.items():
        if isinstance(value, list | dict | np.ndarray):
            raise RequestError(f"{where}.{name}: expected a value, got {type(value).__name__}")


def _positions(categories: pd.Series, values: Sequence[str]) -> np.ndarray:
    """Each row's position in ``values`` (-1: missing)."""
    where = np.array([values.index(value) for value in categories.cat.categories], dtype=np.int64)
    codes = categories.cat.codes.to_numpy(dtype=np.int64)
    return np.where(codes >= 0, where[codes] if len(where) else -1, -1)


class ContractChecks:
    """A request's fields read as the nightly job reads them (:class:`ContractRules`), field by field:
    a value refused on the lead raises :class:`RequestError`; one refused on the account leaves a
    warning for its row (:attr:`account_warnings`), whose account is then unknown; a missing marker
    ("NA") is missing (:attr:`marked_missing`, by row and field)."""

    def __init__(self, rules: ContractRules) -> None:
        self.rules = rules
        self.account_warnings: dict[int, list[str]] = {}
        self.marked_missing: set[tuple[int, str]] = set()

    def numbers(self, values: Sequence[Any], field: str) -> np.ndarray:
        rule = self.rules.fields[field]
        checked = checked_numbers(values, rule, self.rules.settings)
        self._refused(rule, checked.refused)
        self.marked_missing.update((row, field) for row in checked.marked_missing)
        return checked.values

    def texts(self, values: Sequence[str | None], field: str, *, quick: bool = False) -> list[str | None]:
        """The text field's values as validation keeps them; ``quick``: read plain values in
        Python (the compiled path), the parser reading the field when one is not plain."""
        rule = self.rules.texts[field]
        if quick:
            read = [None if value is None else rule.quick_text(value) for value in values]
            if not any(value is NOT_PLAIN for value in read):
                self.marked_missing.update(
                    (row, field)
                    for row, value in enumerate(values)
                    if value is not None and read[row] is None
                )
                return read
        checked = checked_texts(values, rule, self.rules.settings)
        self._refused(rule, checked.refused)
        self.marked_missing.update((row, field) for row in checked.marked_missing)
        return checked.values

    def _refused(self, rule: FieldRule, refused: Mapping[int, str]) -> None:
        for row, reason in sorted(refused.items()):
            if not rule.on_account:
                raise refused_lead_value(row, rule, reason)
            self.account_warnings.setdefault(row, []).append(refused_account_warning(rule, reason))


def refused_lead_value(row: int, rule: FieldRule, reason: str) -> RequestError:
    bounds = "; data.limits sets the bounds" if rule.is_number else ""
    return RequestError(
        f"row {row}, field {rule.field!r}: {reason} (the nightly job quarantines such a lead{bounds})"
    )


def refused_account_warning(rule: FieldRule, reason: str) -> str:
    return (
        f"{rule.field} {reason}: the account's fields scored as unknown "
        f"(the nightly job quarantines such an account and keeps the lead)"
    )


# --------------------------------------------------------------------------- warnings
def absent_features_warning(absent: Sequence[str], total: int) -> str:
    listed = ", ".join(absent[:MAX_LISTED]) + (", ..." if len(absent) > MAX_LISTED else "")
    return f"{len(absent)} of {total} features not in the request, scored as missing: {listed}"


def lead_warnings(absent: Sequence[str], ignored: int, refused_activities: Sequence[str] = ()) -> list[str]:
    """A lead-shape row's warnings: the fields it did not give, the activities it sent too late and
    those the nightly job would quarantine (``refused_activities``: why, one reason each)."""
    warnings = []
    if absent:
        warnings.append(f"not given, scored as unknown: {', '.join(absent)}")
    if ignored:
        activities = counted(ignored, "activity", "activities")
        warnings.append(f"{activities} at or after as_of ignored (only earlier events count)")
    if refused_activities:
        warnings.append(refused_activities_warning(refused_activities))
    return warnings


def refused_activities_warning(reasons: Sequence[str]) -> str:
    """``reasons``: "activities[2].activity_type 'x' is not one of ...", one per ignored activity."""
    more = "; ..." if len(reasons) > MAX_LISTED_ACTIVITIES else ""
    listed = "; ".join(reasons[:MAX_LISTED_ACTIVITIES]) + more
    activities = counted(len(reasons), "activity", "activities")
    return f"{activities} ignored, as the nightly job quarantines such activities ({listed})"


def refused_activity(position: int, reason: str) -> str:
    return f"{ACTIVITIES}[{position}].{reason}"


def unseen_level_warning(name: str, value: Any) -> str:
    return f"{name} {value!r} not seen in training, scored as unknown"


# --------------------------------------------------------------------------- previous answers
def previous_answers(frame: pd.DataFrame, lead_ids: pd.Series) -> pd.DataFrame | None:
    """The rows' ``previous`` answers as a frame indexed by lead id (None when no row has one).

    ``lead_ids`` is the answer's lead id column. Only the numbers the movement needs are
    read: probability, margin, base value and the ``group:*`` contributions; anything else in the
    object is ignored.
    """
    if PREVIOUS not in frame.columns:
        return None
    records = []
    for row, value in enumerate(frame[PREVIOUS].tolist()):
        if is_missing(value):
            continue
        if not isinstance(value, Mapping):
            raise RequestError(
                f"row {row}, field {PREVIOUS!r}: expected the lead's previous answer (an object)"
            )
        wanted = {k: v for k, v in value.items() if k in (PROBABILITY, MARGIN, BASE_VALUE) or
                  str(k).startswith(GROUP_PREFIX)}  # fmt: skip
        for key in (PROBABILITY, MARGIN, BASE_VALUE):
            if key not in wanted:
                raise RequestError(f"row {row}, field {PREVIOUS!r}: {key!r} missing from the previous answer")
        numbers = {}
        for key, given in wanted.items():
            parsed = number(given)
            if not isinstance(parsed, float) or not np.isfinite(parsed):
                raise RequestError(f"row {row}, field {PREVIOUS!r}: {key!r} is not a number")
            numbers[key] = parsed
        records.append({s.LEAD_ID: lead_ids.iloc[row], **numbers})
    if not records:
        return None
    return pd.DataFrame(records).drop_duplicates(s.LEAD_ID, keep="last").set_index(s.LEAD_ID)
