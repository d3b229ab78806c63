"""The synthetic CRM written as a CRM exports it: ids, text columns, time zones and the
messiness of real exports."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadml.data.schema import (
    ACCOUNT_ID,
    ACCOUNTS,
    ACTIVITIES,
    ACTIVITY_TYPE,
    ACTIVITY_TYPES,
    ANNUAL_REVENUE,
    CLOSED_AT,
    COMPANY_NAME,
    COUNTRIES,
    COUNTRY,
    CREATED_AT,
    DEAL_VALUE,
    EMAIL,
    EMPLOYEES,
    ESTIMATED_DEAL_VALUE,
    EVENT_ID,
    FIRST_NAME,
    FOUNDED_YEAR,
    INDUSTRIES,
    INDUSTRY,
    JOB_TITLE,
    LAST_NAME,
    LEAD_ID,
    LEADS,
    OUTCOMES,
    OWNER,
    PAGE_CATEGORIES,
    PAGE_CATEGORY,
    PHONE,
    SOURCE,
    SOURCES,
    STATUS,
    STATUSES,
    TIMESTAMP,
)
from leadml.data.synthetic_world import (
    BROWSER,
    BROWSERS,
    CAMPAIGN_CODE,
    COMPANY_CORES,
    COMPANY_PREFIXES,
    COMPANY_SUFFIXES,
    COUNTRY_CALLING_CODES,
    COUNTRY_SPELLINGS,
    COUNTRY_TLDS,
    EVENT_KINDS,
    FIRST_NAMES,
    FREE_EMAIL_DOMAINS,
    GARBAGE_TIMESTAMPS,
    ISO_OFFSET_SECONDS,
    ISO_OFFSET_SHARES,
    ISO_OFFSETS,
    LAST_NAMES,
    SECONDS_PER_DAY,
    STATE_LOST,
    STATE_WON,
    STATUS_SPELLINGS,
    Accounts,
    History,
    LeadRows,
    SimulationPeriod,
    title_table,
)

logger = logging.getLogger(__name__)


# long columns are built in chunks to bound the memory of intermediate arrays
CHUNK_ROWS = 5_000_000


def _chunks(size: int) -> list[slice]:
    return [slice(begin, begin + CHUNK_ROWS) for begin in range(0, max(size, 1), CHUNK_ROWS)]


def _to_series(chunks: list[pa.Array]) -> pd.Series:
    # one large_string array: pandas converts anything else (other types, several chunks) slowly
    large = [chunk.cast(pa.large_string()) for chunk in chunks]
    return (large[0] if len(large) == 1 else pa.concat_arrays(large)).to_pandas()


def _ascii_rows(strings: np.ndarray) -> np.ndarray:
    """(n, width) byte matrix of equally long ASCII strings."""
    width = int(np.char.str_len(strings).max()) if strings.size else 0
    return np.asarray(strings).astype(f"S{width}").view(np.uint8).reshape(-1, width)


def _joined_rows(pieces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Row i joins ``table[index[i]]`` of every (table, index) piece, tables being byte matrices."""
    layout = np.dtype([(f"piece{k}", f"V{table.shape[1]}") for k, (table, _) in enumerate(pieces)])
    size = max(np.size(index) for _, index in pieces)
    joined = np.empty(size, dtype=layout)
    for k, (table, index) in enumerate(pieces):
        # each table row as one opaque item, so a gather moves whole rows rather than single bytes
        joined[f"piece{k}"] = np.take(np.ascontiguousarray(table).view(f"V{table.shape[1]}").ravel(), index)
    return joined.view(np.uint8).reshape(size, layout.itemsize)


def _strings_from_rows(rows: np.ndarray) -> pa.Array:
    """Arrow strings from an (n, width) byte matrix, without touching each row in Python."""
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows))
    )


@cache
def _clock_rows() -> np.ndarray:
    """'THH:MM:SS' for every second of the day: (86400, 9) bytes."""
    clock = np.datetime64("2000-01-01T00:00:00") + np.arange(SECONDS_PER_DAY)
    return _ascii_rows(np.datetime_as_string(clock))[:, 10:].copy()


def _iso_rows(seconds: np.ndarray, first_day: np.datetime64, suffix: str) -> np.ndarray:
    """'YYYY-MM-DDTHH:MM:SS' + suffix for seconds since ``first_day``, from per-day and per-second tables."""
    days, second_of_day = np.divmod(seconds, SECONDS_PER_DAY)
    lowest = int(days.min()) if days.size else 0
    highest = int(days.max()) if days.size else 0
    day_rows = _ascii_rows(np.datetime_as_string(first_day + np.arange(lowest, highest + 1)))
    pieces = [(day_rows, days - lowest), (_clock_rows(), second_of_day)]
    if suffix:
        pieces.append((_ascii_rows(np.array([suffix])), np.zeros(seconds.size, dtype=np.int8)))
    return _joined_rows(pieces)


def _timestamp_column(
    seconds: np.ndarray, first_day: np.datetime64, replacement: np.ndarray, offsets: np.ndarray | None = None
) -> pd.Series:
    """UTC timestamps ending in "Z", or local ones with ISO_OFFSETS[offsets] when given.

    ``replacement`` is KEEP, MISSING or an index into GARBAGE_TIMESTAMPS per row.
    """
    garbage_labels = pa.array(GARBAGE_TIMESTAMPS, pa.large_string())
    offset_labels = pa.array(ISO_OFFSETS, pa.large_string())
    chunks = []
    for part in _chunks(seconds.size):
        codes = replacement[part]
        substitutes = garbage_labels.take(pa.array(np.maximum(codes, 0), mask=codes < 0))
        if offsets is None:
            strings = _strings_from_rows(_iso_rows(seconds[part], first_day, "Z"))
        else:
            strings = pc.binary_join_element_wise(
                _strings_from_rows(_iso_rows(seconds[part], first_day, "")),
                offset_labels.take(offsets[part]),
                pa.scalar("", pa.large_string()),
            )
        chunks.append(pc.if_else(pa.array(codes == KEEP), strings, substitutes))
    return _to_series(chunks)


def _labels(codes: np.ndarray, labels: tuple[str, ...] | list[str]) -> pd.Series:
    """Strings from integer codes into ``labels``; negative codes are missing."""
    table = pa.array(list(labels), pa.large_string())
    return _to_series(
        [
            table.take(pa.array(np.maximum(codes[part], 0), mask=codes[part] < 0))
            for part in _chunks(codes.size)
        ]
    )


@cache
def _last_digit_rows() -> np.ndarray:
    """'0000' .. '9999': (10000, 4) bytes."""
    return _ascii_rows(np.char.zfill(np.arange(10_000).astype(str), 4))


def prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """prefix + number zero-padded to ``width`` digits, assembled from digit tables."""
    chunks = []
    for part in _chunks(numbers.size):
        leading, last_four = np.divmod(numbers[part], 10_000)
        lowest = int(leading.min()) if leading.size else 0
        highest = int(leading.max()) if leading.size else 0
        heads = _ascii_rows(
            np.char.add(prefix, np.char.zfill(np.arange(lowest, highest + 1).astype(str), width - 4))
        )
        chunks.append(
            _strings_from_rows(_joined_rows([(heads, leading - lowest), (_last_digit_rows(), last_four)]))
        )
    return _to_series(chunks)


def lead_id_width(n_leads: int) -> int:
    # room for the unknown ids the messy export adds above n_leads
    return max(7, len(str(2 * n_leads)))


def export_tables(
    rng: np.random.Generator,
    accounts: Accounts,
    leads: LeadRows,
    history: History,
    period: SimulationPeriod,
    messiness: float,
) -> dict[str, pd.DataFrame]:
    return {
        ACCOUNTS: _accounts_table(rng, accounts, messiness),
        LEADS: _leads_table(rng, accounts, leads, period, messiness),
        OUTCOMES: _outcomes_table(rng, leads, history, period, messiness),
        ACTIVITIES: _activities_table(rng, history, period, messiness),
    }


def _hit_rows(rng: np.random.Generator, size: int, rate: float) -> np.ndarray:
    """Sorted positions of about a share ``rate`` of ``size`` rows."""
    if rate <= 0 or size == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(size, size=rng.binomial(size, rate), replace=False))


def _spelling_table(
    canonical: tuple[str, ...], spellings: Mapping[str, tuple[str, ...]] | None = None
) -> tuple[list[str], np.ndarray]:
    """Labels (canonical first, then other spellings) and a (canonical, variant) table of their codes."""
    variants = [
        [
            v
            for v in dict.fromkeys(spellings[label] if spellings else _snake_case_variants(label))
            if v != label
        ]
        for label in canonical
    ]
    labels = list(canonical)
    width = max(len(options) for options in variants)
    table = np.zeros((len(canonical), width), dtype=np.int16)
    for row, options in enumerate(variants):
        table[row] = np.resize(np.arange(len(labels), len(labels) + len(options)), width)
        labels += options
    return labels, table


def _snake_case_variants(label: str) -> tuple[str, ...]:
    words = label.replace("_", " ")
    return (
        words.title(),
        label.replace("_", "-"),
        f" {label.upper()} ",
        label.replace("_", ""),
        words.upper(),
    )


def _misspell(rng: np.random.Generator, codes: np.ndarray, table: np.ndarray, rate: float) -> np.ndarray:
    """Codes with a share ``rate`` moved to another spelling of the same value."""
    result = codes.astype(np.int16)
    rows = _hit_rows(rng, codes.size, rate)
    rows = rows[result[rows] >= 0]
    result[rows] = table[result[rows], rng.integers(0, table.shape[1], rows.size)]
    return result


def _blank(rng: np.random.Generator, codes: np.ndarray, rate: float) -> np.ndarray:
    result = codes.copy()
    result[_hit_rows(rng, codes.size, rate)] = -1
    return result


def _spoil_seconds(
    rng: np.random.Generator,
    seconds: np.ndarray,
    first_day: np.datetime64,
    rate: float,
    eligible: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Move a share ``rate`` of instants to 2030 or later and pick another share for garbage strings.

    Rows not ``eligible`` (None: all are) stay missing. Returns the seconds and the replacement
    codes (KEEP, MISSING or an index into GARBAGE_TIMESTAMPS) for :func:`_timestamp_column`.
    """
    replacement = np.full(seconds.size, KEEP, dtype=np.int8)
    if eligible is not None:
        replacement[~eligible] = MISSING
    garbage = _hit_rows(rng, seconds.size, rate)
    future = np.setdiff1d(_hit_rows(rng, seconds.size, rate), garbage, assume_unique=True)
    if eligible is not None:
        garbage, future = garbage[eligible[garbage]], future[eligible[future]]
    to_2030 = int((np.datetime64("2030-01-01") - first_day) / np.timedelta64(1, "s"))
    spoiled = seconds.copy()
    spoiled[future] = to_2030 + rng.integers(0, 5 * 365 * SECONDS_PER_DAY, future.size)
    replacement[garbage] = rng.integers(0, len(GARBAGE_TIMESTAMPS), garbage.size)
    return spoiled, replacement


def _accounts_table(rng: np.random.Generator, accounts: Accounts, messiness: float) -> pd.DataFrame:
    n = accounts.industry.size
    industry_labels, industry_variants = _spelling_table(INDUSTRIES)
    country_labels, country_variants = _spelling_table(COUNTRIES, COUNTRY_SPELLINGS)
    industry = _blank(rng, _misspell(rng, accounts.industry, industry_variants, messiness), messiness)
    country = _blank(rng, _misspell(rng, accounts.country, country_variants, messiness), messiness)
    employees = pd.array(accounts.employees, dtype="Int64")
    employees[_hit_rows(rng, n, messiness)] = pd.NA
    name_parts = [
        pa.array(vocabulary).take(pa.array(accounts.name_parts[:, i]))
        for i, vocabulary in enumerate((COMPANY_PREFIXES, COMPANY_CORES, COMPANY_SUFFIXES))
    ]
    return pd.DataFrame(
        {
            ACCOUNT_ID: prefixed_ids("A", np.arange(1, n + 1), _account_id_width(n)),
            COMPANY_NAME: _to_series(
                [pc.binary_join_element_wise(name_parts[0], name_parts[1], " ", name_parts[2], "")]
            ),
            INDUSTRY: _labels(industry, industry_labels),
            EMPLOYEES: employees,
            ANNUAL_REVENUE: accounts.revenue,
            COUNTRY: _labels(country, country_labels),
            FOUNDED_YEAR: accounts.founded_year,
        }
    )


def _account_id_width(n_accounts: int) -> int:
    return max(6, len(str(n_accounts)))


def _company_domains(accounts: Accounts) -> pa.Array:
    prefix = pa.array([word.lower() for word in COMPANY_PREFIXES]).take(pa.array(accounts.name_parts[:, 0]))
    core = pa.array(COMPANY_CORES).take(pa.array(accounts.name_parts[:, 1]))
    return pc.binary_join_element_wise(
        prefix, core, pa.array(COUNTRY_TLDS).take(pa.array(accounts.country)), ""
    )


def _emails(rng: np.random.Generator, accounts: Accounts, leads: LeadRows) -> pa.Array:
    first = pa.array([name.lower() for name in FIRST_NAMES]).take(pa.array(leads.first_name))
    last = pa.array([name.lower() for name in LAST_NAMES]).take(pa.array(leads.last_name))
    free = leads.free_email >= 0
    # at a free mail provider first.last is usually taken, so half add digits
    with_digits = free & (rng.random(free.size) < 0.5)
    digits = pc.cast(pa.array(rng.integers(1, 100, free.size)), pa.string())
    domain = pc.if_else(
        pa.array(free),
        pa.array(FREE_EMAIL_DOMAINS).take(pa.array(np.maximum(leads.free_email, 0))),
        _company_domains(accounts).take(pa.array(leads.account)),
    )
    local = pc.binary_join_element_wise(first, ".", last, pc.if_else(pa.array(with_digits), digits, ""), "")
    return pc.binary_join_element_wise(local, "@", domain, "")


def _phones(rng: np.random.Generator, leads: LeadRows) -> pa.Array:
    number = pc.cast(pa.array(rng.integers(200_000_000, 999_999_999, leads.country.size)), pa.string())
    return pc.binary_join_element_wise(
        pa.array(COUNTRY_CALLING_CODES).take(pa.array(leads.country)), number, " "
    )


def _job_titles(rng: np.random.Generator, leads: LeadRows, messiness: float) -> pd.Series:
    _, titles = title_table()
    # as people type them: mostly as printed on the card, some all lower or upper case
    labels = [variant for title in titles for variant in (title, title.lower(), title.upper())]
    case = rng.choice(3, size=leads.title.size, p=[0.88, 0.09, 0.03])
    return _labels(_blank(rng, leads.title * 3 + case, messiness), labels)


def _leads_table(
    rng: np.random.Generator, accounts: Accounts, leads: LeadRows, period: SimulationPeriod, messiness: float
) -> pd.DataFrame:
    n = leads.account.size
    source_labels, source_variants = _spelling_table(SOURCES)
    country_labels, country_variants = _spelling_table(COUNTRIES, COUNTRY_SPELLINGS)
    offset = rng.choice(len(ISO_OFFSETS), size=n, p=ISO_OFFSET_SHARES)
    seconds = leads.created_day.astype(np.int64) * SECONDS_PER_DAY + leads.created_second
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, None)
    owner_names = [f"rep_{number:02d}" for number in range(1, leads.owner.max() + 2)]
    frame = pd.DataFrame(
        {
            LEAD_ID: prefixed_ids("L", np.arange(1, n + 1), lead_id_width(n)),
            # an offset shows the local wall clock of the same instant
            CREATED_AT: _timestamp_column(
                seconds + ISO_OFFSET_SECONDS[offset], period.first_day, replacement, offsets=offset
            ),
            ACCOUNT_ID: prefixed_ids("A", leads.account + 1, _account_id_width(accounts.industry.size)),
            SOURCE: _labels(_misspell(rng, leads.source, source_variants, messiness), source_labels),
            OWNER: _labels(leads.owner, owner_names),
            JOB_TITLE: _job_titles(rng, leads, messiness),
            COUNTRY: _labels(
                _blank(rng, _misspell(rng, leads.country, country_variants, messiness), messiness),
                country_labels,
            ),
            FIRST_NAME: _labels(leads.first_name, FIRST_NAMES),
            LAST_NAME: _labels(leads.last_name, LAST_NAMES),
            EMAIL: _to_series([_emails(rng, accounts, leads)]),
            PHONE: _to_series([_phones(rng, leads)]),
            ESTIMATED_DEAL_VALUE: leads.estimated_deal_value,
            BROWSER: _labels(leads.browser, BROWSERS),
            CAMPAIGN_CODE: leads.campaign_code,
        }
    )
    return _with_duplicates(rng, frame, messiness)


def _with_duplicates(rng: np.random.Generator, frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Repeat a share ``rate`` of rows next to the original, the copy missing its phone and title."""
    copied = _hit_rows(rng, len(frame), rate)
    if copied.size == 0:
        return frame
    n = len(frame)
    copy_first = rng.random(copied.size) < 0.5
    original_second = np.zeros(n, dtype=np.int64)
    original_second[copied] = copy_first
    order = np.argsort(np.concatenate([2 * np.arange(n) + original_second, 2 * copied + ~copy_first]))
    rows = np.concatenate([np.arange(n), copied])[order]
    is_copy = np.concatenate([np.zeros(n, dtype=bool), np.ones(copied.size, dtype=bool)])[order]
    result = frame.take(rows).reset_index(drop=True)
    result.loc[is_copy, [PHONE, JOB_TITLE]] = np.nan
    return result


def _outcomes_table(
    rng: np.random.Generator, leads: LeadRows, history: History, period: SimulationPeriod, messiness: float
) -> pd.DataFrame:
    n = history.state.size
    status = np.select([history.state == STATE_WON, history.state == STATE_LOST], [0, 1], 2)
    status_labels, status_variants = _spelling_table(STATUSES, STATUS_SPELLINGS)
    closed = history.closed_day >= 0
    seconds = history.closed_day.astype(np.int64) * SECONDS_PER_DAY + history.closed_second
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, closed)
    won = history.state == STATE_WON
    # known only once the deal is signed; close to the estimate but not equal to it
    deal_value = np.where(
        won, np.round(leads.estimated_deal_value * np.exp(rng.normal(0.0, 0.3, n)), -2), np.nan
    )
    return pd.DataFrame(
        {
            LEAD_ID: prefixed_ids("L", np.arange(1, n + 1), lead_id_width(n)),
            STATUS: _labels(_misspell(rng, status, status_variants, messiness), status_labels),
            CLOSED_AT: _timestamp_column(seconds, period.first_day, replacement),
            DEAL_VALUE: deal_value,
        }
    )


def _activities_table(
    rng: np.random.Generator, history: History, period: SimulationPeriod, messiness: float
) -> pd.DataFrame:
    n_leads = history.state.size
    lead, seconds, kind = history.event_lead, history.event_second, history.event_kind
    n_unknown = rng.binomial(lead.size, messiness)
    if n_unknown:
        # events of leads the export does not contain (deleted, merged away, another system's ids)
        extra_seconds = np.sort(rng.integers(0, period.n_days * SECONDS_PER_DAY, n_unknown))
        at = np.searchsorted(seconds, extra_seconds, side="right")
        lead = np.insert(lead, at, n_leads + rng.integers(1, n_leads + 1, n_unknown))
        kind = np.insert(kind, at, rng.integers(0, len(EVENT_KINDS), n_unknown))
        seconds = np.insert(seconds, at, extra_seconds)
    size = lead.size
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, None)
    type_labels, type_variants = _spelling_table(ACTIVITY_TYPES)
    type_of_kind = np.array([ACTIVITY_TYPES.index(activity) for activity, _ in EVENT_KINDS], dtype=np.int8)
    category_of_kind = np.array(
        [PAGE_CATEGORIES.index(category) if category else -1 for _, category in EVENT_KINDS], dtype=np.int8
    )
    return pd.DataFrame(
        {
            EVENT_ID: prefixed_ids("E", np.arange(1, size + 1), max(9, len(str(size)))),
            LEAD_ID: prefixed_ids("L", lead + 1, lead_id_width(n_leads)),
            TIMESTAMP: _timestamp_column(seconds, period.first_day, replacement),
            ACTIVITY_TYPE: _labels(_misspell(rng, type_of_kind[kind], type_variants, messiness), type_labels),
            PAGE_CATEGORY: _labels(category_of_kind[kind], PAGE_CATEGORIES),
        }
    )


# replacement codes for timestamp columns; k >= 0 writes GARBAGE_TIMESTAMPS[k]
KEEP = -1

MISSING = -2
