"""Values as text into typed columns: the parsers of the contracts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.contracts import (
    EARLIEST_TIMESTAMP,
    FALSE_TOKENS,
    OFFSET_PATTERN,
    SHOWN_ALLOWED,
    SHOWN_VALUE_CHARS,
    TIMESTAMP_DTYPE,
    TIMESTAMP_UNIT,
    TRUE_TOKENS,
    ColumnSpec,
    IngestSettings,
    Parsed,
    RowProblem,
    category_synonyms,
    normalise_tokens,
)
from leadml.data.iso8601 import parse_fixed_iso

logger = logging.getLogger(__name__)

NAT_MICROS = np.iinfo(np.int64).min  # NaT as datetime64 integers


def as_text(values: pd.Series) -> pd.Series:
    """Values as ``str``, nulls kept; a whole float loses ``.0`` so an id reads the same from any format."""
    if pd.api.types.is_float_dtype(values.dtype):
        # value by value, not column by column: a row reads the same whatever rows come with it
        # (a batch of a table, the quarantined rows of a table)
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(numbers) & (numbers == np.floor(numbers)) & (np.abs(numbers) < 2**53)
        if whole.any():
            text = values.astype("str").to_numpy(dtype=object)
            text[whole] = numbers[whole].astype(np.int64).astype(str)
            return pd.Series(text, index=values.index, dtype="str", name=values.name)
    if pd.api.types.is_datetime64_any_dtype(values.dtype) and len(values):
        return _datetime_text(values)
    return values.astype("str")


def _datetime_text(values: pd.Series) -> pd.Series:
    """Timestamps as pandas writes each one alone: pandas writes a column with the precision its most
    precise value needs ('00:00:01.000000' next to a value with microseconds), so values are
    written in groups that need the same precision (whole seconds, milli-, micro-, nanoseconds)."""
    unit = values.dtype.unit if hasattr(values.dtype, "unit") else np.datetime_data(values.dtype)[0]
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    nanoseconds = (values.array.asi8 % per_second) * (10**9 // per_second)
    # a naive value at midnight alone is written as a date
    midnight = (values.array.asi8 % (86_400 * per_second) == 0) & (getattr(values.dtype, "tz", None) is None)
    precision = np.select(
        [midnight, nanoseconds == 0, nanoseconds % 10**6 == 0, nanoseconds % 10**3 == 0],
        [-1, 0, 3, 6],
        default=9,
    )
    if (precision == precision[0]).all():
        return values.astype("str")
    text = pd.Series(index=values.index, dtype="str", name=values.name)
    for digits in np.unique(precision):
        rows = precision == digits
        text[rows] = values[rows].astype("str")
    return text


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
    return text.str.slice(0, SHOWN_VALUE_CHARS)


def _value_problem(raw: pd.Series, mask: np.ndarray, column: str, what: str, category: str) -> RowProblem:
    positions = np.flatnonzero(mask)
    messages = f"{column}: '" + _shown(raw, positions) + f"' {what}"
    return RowProblem(mask, f"{column}: {category}", messages)


def empty_column(spec: ColumnSpec, rows: int) -> pd.Series:
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


@dataclass(frozen=True)
class _Tokens:
    """A text column factorised: row codes (-1 null), its distinct values as written, their
    normalised tokens and whether each is missing (a missing-value marker)."""

    codes: np.ndarray
    written: pd.Series
    tokens: pd.Series
    missing: np.ndarray


def _token_lookup(raw: pd.Series, settings: IngestSettings, spec: ColumnSpec) -> _Tokens:
    """Work done once per distinct value, which is what makes 20 million categorical rows cheap."""
    if isinstance(raw.dtype, pd.CategoricalDtype):
        # read as a dictionary (source_batches): its codes, in first-appearance order as for text
        codes, categories = pd.factorize(raw)
        written = as_text(pd.Series(np.asarray(categories), dtype=raw.cat.categories.dtype))
    else:
        codes, uniques = pd.factorize(as_text(raw))
        written = pd.Series(uniques, dtype="str")
    cleaned, missing = _clean_text(written, spec.missing_markers(settings))
    tokens = normalise_tokens(cleaned)
    synonyms = category_synonyms(spec, settings)
    if synonyms:
        tokens = tokens.map(synonyms).fillna(tokens).astype("str")
    return _Tokens(codes, written, tokens, missing)


def respelt_values(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> dict[str, str]:
    """{value as written: value as stored} of a category column's distinct values whose spelling
    ingestion changes (trimmed, case-folded, separators as ``_``, synonyms), missing ones left out.

    Points rules, filters and reasons see the stored spelling, so a user needs to know it.
    """
    found = _token_lookup(raw, settings, spec)
    changed = ~found.missing & (found.written.str.strip() != found.tokens).to_numpy()
    return dict(zip(found.written[changed].str.strip(), found.tokens[changed], strict=True))


def _rows(per_value: np.ndarray, codes: np.ndarray, null_value: Any) -> np.ndarray:
    """Per-distinct-value array spread to rows; code -1 (null) gets ``null_value``."""
    return np.append(per_value, np.array([null_value], dtype=per_value.dtype))[codes]


def _parse_category(raw: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> Parsed:
    found = _token_lookup(raw, settings, spec)
    codes, tokens, missing_values = found.codes, found.tokens, found.missing
    missing = _rows(missing_values, codes, True)
    problems = []
    valid_tokens = tokens.mask(missing_values)
    if spec.allowed is not None:
        not_allowed = (valid_tokens.notna() & ~valid_tokens.isin(spec.allowed)).to_numpy()
        shown = ", ".join(spec.allowed[:SHOWN_ALLOWED]) + (
            ", ..." if len(spec.allowed) > SHOWN_ALLOWED else ""
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
    found = _token_lookup(raw, settings, spec)
    codes, tokens, missing_values = found.codes, found.tokens, found.missing
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
    if spec.format is None:
        as_utc, has_offset = _iso_timestamps(cleaned)
    else:
        as_utc = pd.to_datetime(cleaned, format=spec.format, utc=True, errors="coerce")
        has_offset = np.full(len(cleaned), "%z" in spec.format)
    unparseable = ~missing & as_utc.isna().to_numpy()
    if settings.timezone == "UTC":
        return as_utc, missing, unparseable, np.zeros(len(cleaned), dtype=bool)
    local = _localised(as_utc.dt.tz_localize(None), settings.timezone)
    invalid_local = ~has_offset & as_utc.notna().to_numpy() & local.isna().to_numpy()
    return as_utc.where(has_offset, local), missing, unparseable, invalid_local


def _iso_timestamps(cleaned: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(UTC timestamps, value has a zone) of ISO 8601 text: the common fixed-width shapes read from
    the bytes (:mod:`leadml.data.iso8601`), every other value by pandas, with the same result."""
    fixed = parse_fixed_iso(cleaned)
    micros = np.where(fixed.read, fixed.micros, NAT_MICROS)
    has_offset = fixed.zoned.copy()
    rest = np.flatnonzero(~fixed.read & cleaned.notna().to_numpy())
    if len(rest):
        others = cleaned.iloc[rest]
        parsed = pd.to_datetime(others, format="ISO8601", utc=True, errors="coerce")
        micros[rest] = parsed.dt.as_unit(TIMESTAMP_UNIT).array.asi8
        zoned = others.str.contains(OFFSET_PATTERN, regex=True)
        has_offset[rest] = zoned.to_numpy(dtype=bool, na_value=False)
    naive = pd.DatetimeIndex(micros.view(f"datetime64[{TIMESTAMP_UNIT}]"))
    return pd.Series(naive.tz_localize("UTC")), has_offset


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
