"""Ingestion: raw frames -> contract-checked, typed tables (pure functions, no file I/O).

:func:`ingest_crm` validates the four CRM tables in dependency order (accounts, leads,
outcomes, activities) and adds the cross-table rules:

* outcomes and activities of a lead that is not an accepted lead are quarantined:
  "lead_id L999 not in leads", or "lead_id L5 was quarantined in leads"; the latter are
  *collateral* rows, which do not count against ``max_bad_share`` (the lead already did);
* a lead whose account is unknown is kept (its firmographics are missing) and counted;
* won/lost needs ``closed_at``, open must not have one; ``closed_at`` before the lead's
  ``created_at`` is quarantined;
* a lead whose only outcome rows were quarantined is quarantined too ("outcome row
  quarantined", collateral), rather than guessed open; a lead with no outcome row at all is open
  (one ``open`` row is added to outcomes and counted as ``added_rows``);
* activities before their lead's ``created_at`` are kept and counted (anonymous web
  visits are often attributed to a lead later).

:func:`ingest_flat` does the same for a single one-row-per-lead table, labelled by a target
column or by dated events in a second table (outcomes joined by id, positive within a horizon;
leads whose horizon was not fully observed are set aside, see :func:`ingest_flat`). It also finds
rows that are exact copies of another row (:func:`find_duplicates`): they are counted and, when there
are any, tied together by a ``dup_group`` column so the split keeps each group in one window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.arrays import is_in, positions_in
from leadml.data.contracts import (
    FALSE_TOKENS,
    SOURCE_ROW,
    TRUE_TOKENS,
    FlatContract,
    IngestSettings,
    RowCheck,
    RowProblem,
    TableContract,
    normalise_token,
    normalise_tokens,
)
from leadml.data.parsing import present_text, respelt_values
from leadml.data.validation import (
    TableReport,
    ValidatedTable,
    check_bad_share,
    move_to_quarantine,
    validate_table,
)
from leadml.errors import ContractError

__all__ = [
    "DUP_GROUP",
    "LABEL",
    "ORDER_KEY",
    "Duplicates",
    "IngestResult",
    "IngestSettings",
    "check_bad_shares",
    "find_duplicates",
    "frame_fingerprint",
    "ingest_crm",
    "ingest_flat",
    "manifest",
]

logger = logging.getLogger(__name__)

LABEL = s.LABEL
# Flat tables without a time column: the column that orders leads for an out-of-time split.
ORDER_KEY = s.ORDER_KEY
# Flat tables with exact duplicate rows: the lead id of the first row of each row's group of copies.
DUP_GROUP = s.DUP_GROUP

UNKNOWN_ACCOUNT = "account_id not in accounts (lead kept, firmographics missing)"
NOT_IN_LEADS = "lead_id not in leads"
LEAD_QUARANTINED = "lead quarantined in leads"
NO_OUTCOME = "leads without an outcome row, set to open"
BEFORE_CREATED = "activities before the lead's created_at (kept)"


@dataclass(frozen=True)
class IngestResult:
    """Accepted tables, quarantined rows and reports, each keyed by table name.

    ``labels``: how a flat table labelled by outcomes was labelled (horizon, observation window,
    counts), or which value was taken as the negative; empty otherwise. ``open_rows``: per flat
    table with ``contract.open``, its open leads (the table's columns without ``label``).
    ``duplicates``: per flat table, its exact and conflicting duplicate rows
    (:meth:`Duplicates.to_dict`); empty for the CRM tables.
    """

    tables: dict[str, pd.DataFrame]
    quarantines: dict[str, pd.DataFrame]
    reports: dict[str, TableReport]
    labels: dict[str, Any] = field(default_factory=dict)
    duplicates: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_rows: dict[str, pd.DataFrame] = field(default_factory=dict)  # flat leads still open, by table


# --------------------------------------------------------------------------- duplicate rows
@dataclass(frozen=True)
class Duplicates:
    """Rows of a flat table that are exact copies of another row, and rows whose label conflicts.

    ``rows``: rows with at least one exact copy (every member of a group of two or more), in
    ``groups`` groups; ``conflicting_rows``: rows whose every compared column but the label equals
    that of a row with the other label; ``group``: per row, the lead id of the first row of its
    group (its own id when it has no copy), or None when no row has a copy.
    """

    rows: int
    groups: int
    conflicting_rows: int
    columns: tuple[str, ...]
    group: pd.Series | None = field(default=None, repr=False, compare=False)

    def sentence(self) -> str:
        """One line for the ingest and features summaries."""
        conflicting = (
            f"{_count(self.conflicting_rows, 'row shares', 'rows share')} their features with a row of the "
            "other label"
        )
        if not self.rows:
            return f"no row is an exact copy of another; {conflicting}"
        copies = "row is an exact copy" if self.rows == 1 else "rows are exact copies"
        return (
            f"{self.rows:,} {copies} of another row (in {_count(self.groups, 'group', 'groups')}), kept "
            f"together in one split window; {conflicting}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "groups": self.groups,
            "conflicting_rows": self.conflicting_rows,
            "columns": list(self.columns),
            "sentence": self.sentence(),
        }


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _row_codes(columns: Iterable[pd.Series | np.ndarray], rows: int) -> np.ndarray:
    """One integer per row, equal exactly when the rows are equal in every one of ``columns``.

    Missing values are equal to each other. The codes are numbered in order of first appearance.
    """
    key = np.zeros(rows, dtype=np.int64)
    for values in columns:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        # key < rows and codes < rows, so the product stays far inside int64 for any table in memory
        key, _ = pd.factorize(key * len(uniques) + codes.astype(np.int64))
        key = key.astype(np.int64, copy=False)
    return key


def find_duplicates(table: pd.DataFrame, ignore: Sequence[str] = ()) -> Duplicates:
    """Exact copies among the rows of a flat table, compared on every column but ``ignore``.

    ``ignore`` names columns that differ between copies by construction (the lead id and the
    order key when they are the row number). The label is compared for exact copies and left out
    for conflicting ones (the same values with the other label).
    """
    columns = [column for column in table.columns if column not in set(ignore)]
    if LABEL not in columns:
        raise ContractError(f"find_duplicates needs the {LABEL!r} column")
    features = [column for column in columns if column != LABEL]
    feature_key = _row_codes((table[column] for column in features), len(table))
    exact_key = _row_codes((feature_key, table[LABEL].to_numpy()), len(table))
    group_sizes = np.bincount(exact_key, minlength=1)
    copied = group_sizes[exact_key] >= 2
    # each exact group lies inside one feature group: a feature group holding two exact groups
    # holds both labels
    feature_of_group = np.zeros(len(group_sizes), dtype=np.int64)
    feature_of_group[exact_key] = feature_key
    conflicting = np.bincount(feature_of_group, minlength=1)[feature_key] >= 2
    group = None
    if copied.any():
        _, first = np.unique(exact_key, return_index=True)
        group = pd.Series(table[s.LEAD_ID].to_numpy()[first[exact_key]], index=table.index, name=DUP_GROUP)
        group = group.astype(table[s.LEAD_ID].dtype)
    return Duplicates(
        rows=int(copied.sum()),
        groups=int((group_sizes >= 2).sum()),
        conflicting_rows=int(conflicting.sum()),
        columns=tuple(str(column) for column in columns),
        group=group,
    )


# --------------------------------------------------------------------------- helpers
def _unknown_lead_check(leads: ValidatedTable) -> RowCheck:
    """Rows whose lead is not an accepted lead; those of a quarantined lead are told apart (collateral)."""
    accepted = pd.Index(leads.accepted[s.LEAD_ID])
    quarantined = (
        pd.Index(leads.quarantine[s.LEAD_ID].str.strip().dropna().unique()) if len(leads.quarantine) else None
    )

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        ids = frame[s.LEAD_ID]
        unknown = ids.notna().to_numpy() & (positions_in(ids, accepted) < 0)
        if not unknown.any():
            return []
        collateral = np.zeros(len(frame), dtype=bool)
        if quarantined is not None:
            collateral[unknown] = positions_in(ids[unknown], quarantined) >= 0
        missing = unknown & ~collateral
        problems = [
            RowProblem(missing, NOT_IN_LEADS, "lead_id " + ids[missing] + " not in leads"),
            RowProblem(
                collateral, LEAD_QUARANTINED, "lead_id " + ids[collateral] + " was quarantined in leads"
            ),
        ]
        return [problem for problem in problems if problem.mask.any()]

    return check


def _with_collateral(validated: ValidatedTable) -> ValidatedTable:
    return _with_report(validated, collateral_rows=validated.report.reason_counts.get(LEAD_QUARANTINED, 0))


def _status_check(frame: pd.DataFrame) -> list[RowProblem]:
    status = frame[s.STATUS].astype("str")
    closed = frame[s.CLOSED_AT].notna().to_numpy()
    decided = status.isin([s.WON, s.LOST]).to_numpy()
    problems = []
    unclosed = decided & ~closed
    if unclosed.any():
        messages = "status " + status[unclosed] + " without closed_at"
        problems.append(RowProblem(unclosed, "won/lost without closed_at", messages))
    open_closed = (status == s.OPEN).to_numpy() & closed
    if open_closed.any():
        problems.append(RowProblem(open_closed, "open with closed_at", "status open with closed_at"))
    return problems


def _closed_before_created_check(leads: pd.DataFrame) -> RowCheck:
    lead_ids = pd.Index(leads[s.LEAD_ID])
    created = leads[s.CREATED_AT].reset_index(drop=True)

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        positions = positions_in(frame[s.LEAD_ID], lead_ids)
        created_at = pd.Series(created.array.take(positions, allow_fill=True), index=frame.index)
        early = (frame[s.CLOSED_AT] < created_at).to_numpy(dtype=bool, na_value=False)
        if not early.any():
            return []
        messages = (
            "closed_at "
            + _iso(frame.loc[early, s.CLOSED_AT])
            + " is before the lead's created_at "
            + _iso(created_at[early])
        )
        return [RowProblem(early, "closed_at before created_at", messages)]

    return check


def _iso(values: pd.Series) -> pd.Series:
    return values.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("str")


def _with_report(validated: ValidatedTable, **changes: Any) -> ValidatedTable:
    return replace(validated, report=replace(validated.report, **changes))


def _warn(validated: ValidatedTable, warning: str, count: int) -> ValidatedTable:
    if count == 0:
        return validated
    return _with_report(validated, warnings={**validated.report.warnings, warning: int(count)})


def _empty_raw(contract: TableContract) -> pd.DataFrame:
    return pd.DataFrame({spec.name: pd.Series(dtype="str") for spec in contract.columns})


def _quarantine_leads_without_outcome(
    leads: ValidatedTable, raw_leads: pd.DataFrame, outcomes: ValidatedTable
) -> ValidatedTable:
    """Leads whose outcome rows were all quarantined: their status is unknown, so they go too."""
    rejected = outcomes.quarantine
    if rejected.empty:
        return leads
    rejected_ids = rejected[s.LEAD_ID].str.strip()
    lead_ids = leads.accepted[s.LEAD_ID]
    lost = pd.Series(
        ~is_in(lead_ids, outcomes.accepted[s.LEAD_ID]) & is_in(lead_ids, rejected_ids), index=lead_ids.index
    )
    if not lost.any():
        return leads
    first_row = rejected.assign(**{s.LEAD_ID: rejected_ids}).groupby(s.LEAD_ID)[SOURCE_ROW].min()
    rows = leads.accepted.loc[lost, s.LEAD_ID].map(first_row).astype("int64").astype("str")
    messages = "outcome row quarantined (outcomes source row " + rows + ")"
    return move_to_quarantine(
        leads, raw_leads, lost.to_numpy(), messages, "outcome row quarantined", collateral=True
    )


def _outcomes_with_open_defaults(outcomes: ValidatedTable, lead_ids: pd.Series) -> ValidatedTable:
    missing = lead_ids[~is_in(lead_ids, outcomes.accepted[s.LEAD_ID])].reset_index(drop=True)
    if missing.empty:
        return outcomes
    added = outcomes.accepted.iloc[:0].reindex(pd.RangeIndex(len(missing)))
    added[s.LEAD_ID] = missing.to_numpy()
    added[s.STATUS] = pd.Categorical([s.OPEN] * len(missing), dtype=outcomes.accepted[s.STATUS].dtype)
    table = pd.concat([outcomes.accepted, added], ignore_index=True)
    validated = replace(outcomes, accepted=table)
    validated = _with_report(validated, added_rows=len(missing))
    return _warn(validated, NO_OUTCOME, len(missing))


def _activities_before_created(activities: pd.DataFrame, leads: pd.DataFrame) -> int:
    positions = positions_in(activities[s.LEAD_ID], pd.Index(leads[s.LEAD_ID]))
    created = leads[s.CREATED_AT].array.take(positions, allow_fill=True)
    return int((activities[s.TIMESTAMP].array < created).sum())


def _check_has_rows(raw: pd.DataFrame, table: str, source: str) -> None:
    """A lead table without rows is an export that went wrong, not a day without leads."""
    if len(raw) == 0:
        raise ContractError(f"{table} from {source}: no rows (a header only?), so there is nothing to ingest")


def check_bad_shares(result: IngestResult, settings: IngestSettings) -> None:
    """Raise ContractError for the first table with more bad rows than ``settings.max_bad_share``."""
    for report in result.reports.values():
        check_bad_share(report, settings.max_bad_share)


# --------------------------------------------------------------------------- CRM
def ingest_crm(
    raw: Mapping[str, pd.DataFrame],
    contracts: Mapping[str, TableContract],
    settings: IngestSettings,
    *,
    sources: Mapping[str, str] | None = None,
    quarantine_paths: Mapping[str, str] | None = None,
    enforce_bad_share: bool = True,
) -> IngestResult:
    """Validate the CRM tables and their cross-table rules (see the module docstring).

    ``raw`` needs leads and outcomes; missing accounts or activities count as empty tables.
    ``sources`` and ``quarantine_paths`` (per table) only make messages and reports precise.
    Pass ``enforce_bad_share=False`` to write the quarantine files first and then call
    :func:`check_bad_shares`, so the file a failure message points to exists.
    """
    missing = [table for table in (s.LEADS, s.OUTCOMES) if table not in raw]
    if missing:
        raise ContractError(f"missing CRM table(s) {', '.join(missing)}; given: {', '.join(raw) or '(none)'}")
    settings = settings.with_fixed_reference_time()
    sources, quarantine_paths = dict(sources or {}), dict(quarantine_paths or {})
    _check_has_rows(raw[s.LEADS], s.LEADS, sources.get(s.LEADS, "the leads frame"))
    frames = {table: raw[table] if table in raw else _empty_raw(contracts[table]) for table in s.CRM_TABLES}

    def validate(table: str, row_checks: Sequence[RowCheck] = ()) -> ValidatedTable:
        return validate_table(
            frames[table],
            contracts[table],
            settings,
            source=sources.get(table, f"the {table} frame"),
            quarantine_path=quarantine_paths.get(table),
            row_checks=row_checks,
            enforce_bad_share=False,
        )

    accounts = validate(s.ACCOUNTS)
    leads = validate(s.LEADS)
    account_ids = leads.accepted[s.ACCOUNT_ID]
    unknown_accounts = account_ids.notna().to_numpy() & ~is_in(account_ids, accounts.accepted[s.ACCOUNT_ID])
    leads = _warn(leads, UNKNOWN_ACCOUNT, int(unknown_accounts.sum()))

    outcomes = validate(
        s.OUTCOMES, [_unknown_lead_check(leads), _status_check, _closed_before_created_check(leads.accepted)]
    )
    outcomes = _with_collateral(outcomes)
    leads = _quarantine_leads_without_outcome(leads, frames[s.LEADS], outcomes)
    outcomes = _outcomes_with_open_defaults(outcomes, leads.accepted[s.LEAD_ID])

    activities = _with_collateral(validate(s.ACTIVITIES, [_unknown_lead_check(leads)]))
    activities = _warn(
        activities, BEFORE_CREATED, _activities_before_created(activities.accepted, leads.accepted)
    )

    validated = {s.ACCOUNTS: accounts, s.LEADS: leads, s.OUTCOMES: outcomes, s.ACTIVITIES: activities}
    result = IngestResult(
        tables={table: table_result.accepted for table, table_result in validated.items()},
        quarantines={table: table_result.quarantine for table, table_result in validated.items()},
        reports={table: table_result.report for table, table_result in validated.items()},
    )
    if enforce_bad_share:
        check_bad_shares(result, settings)
    return result


# --------------------------------------------------------------------------- flat
def _target_tokens(values: Sequence[Any]) -> frozenset[str]:
    """Configured target values as normalised tokens; YAML turns yes/no into booleans, so those widen."""
    tokens: set[str] = set()
    for value in values:
        if isinstance(value, bool):
            tokens |= TRUE_TOKENS if value else FALSE_TOKENS
        else:
            tokens.add(normalise_token(str(value)))
    return frozenset(tokens)


@dataclass(frozen=True)
class TargetClasses:
    """Per accepted row of a flat table: converted, lost, or still open (scored, never a label)."""

    positive: np.ndarray
    negative: np.ndarray
    open: np.ndarray


def _target_keys(values: pd.Series, contract: FlatContract) -> pd.Series:
    """Target values as compared with the configured ones: numbers, else normalised tokens."""
    if contract.numeric_target:
        return pd.to_numeric(values, errors="coerce")
    return normalise_tokens(values.astype("str"))


def _configured_keys(values: Sequence[Any], contract: FlatContract) -> frozenset[Any]:
    if contract.numeric_target:
        return frozenset(float(value) for value in values)
    return _target_tokens(values)


def _target_classes(target: pd.Series, contract: FlatContract) -> TargetClasses:
    """The class of each row; without ``negative`` every value but the positive and open ones is
    negative (:func:`_check_target_values` made sure there is only one such value)."""
    keys = _target_keys(target, contract)
    positive = keys.isin(_configured_keys(contract.positive, contract)).to_numpy()
    is_open = keys.isin(_configured_keys(contract.open, contract)).to_numpy()
    if contract.negative:
        negative = keys.isin(_configured_keys(contract.negative, contract)).to_numpy()
    else:
        negative = ~positive & ~is_open
    return TargetClasses(positive, negative, is_open)


def _rows(count: int) -> str:
    return _count(int(count), "row", "rows")


TARGET_KEYS_HINT = (
    "add each to contract.positive (converted), contract.negative (did not convert) or contract.open "
    "(still open: scored every night, never a label)"
)


def _check_target_values(
    raw: pd.DataFrame, contract: FlatContract, settings: IngestSettings, source: str
) -> str | None:
    """Stop when a value of the target column is none of the configured ones.

    Converted, lost and open leads must never be guessed from each other: an open lead trained
    on as a loss biases the model towards "lost" without a word. Without ``negative`` a target
    with one other value (``no`` next to ``yes``, ``0`` next to ``1``) takes it as the negative,
    and the returned sentence says so; two or more other values stop here with each value and
    its count. Missing values are left to the contract (the target column is required).
    """
    assert contract.target is not None
    if contract.target not in raw.columns:
        return None  # the contract names the missing column
    present = present_text(raw[contract.target], contract.table.column(contract.target), settings)
    keys = _target_keys(present, contract)
    declared = _configured_keys((*contract.positive, *contract.negative, *contract.open), contract)
    other = ~keys.isin(declared).to_numpy()
    if not other.any():
        return None
    # one entry per value as compared, spelt as first seen; a non-number in a numeric target by itself
    labels = keys.astype("object").where(keys.notna(), present)[other]
    spelling = present[other].groupby(labels.to_numpy(), sort=False).first()
    counts = labels.value_counts(sort=True)
    if not contract.negative and len(counts) == 1:
        return (
            f"{contract.target}: {spelling[counts.index[0]]!r} ({_rows(counts.iloc[0])}) taken as the "
            "negative value, the only one besides contract.positive"
            + (" and contract.open" if contract.open else "")
        )
    shown = ", ".join(f"{spelling[key]!r} ({_rows(count)})" for key, count in counts.head(12).items())
    more = f" and {len(counts) - 12} more" if len(counts) > 12 else ""
    lead = (
        f"has {len(counts)} values besides contract.positive and no contract.negative"
        if not contract.negative
        else "has values under none of contract.positive, contract.negative and contract.open"
    )
    raise ContractError(
        f"{contract.table.name} from {source}: target column {contract.target} {lead}: {shown}{more}; "
        f"{TARGET_KEYS_HINT}"
    )


NOT_LABELLED_EARLY = "not labelled: before observed_from"
NOT_LABELLED_IMMATURE = "not labelled: horizon not elapsed"
OUTCOMES_SOURCE_ROW = "outcomes source row"


def _unknown_id_check(leads: ValidatedTable, lead_id: str, outcome_id: str, leads_name: str) -> RowCheck:
    """Outcome rows whose id is not an accepted lead; those of a quarantined lead are collateral."""
    accepted = pd.Index(leads.accepted[lead_id].astype("str"))
    rejected = leads.quarantine[lead_id].str.strip().dropna() if len(leads.quarantine) else None

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        ids = frame[outcome_id]
        unknown = ids.notna().to_numpy() & (positions_in(ids, accepted) < 0)
        if not unknown.any():
            return []
        collateral = np.zeros(len(frame), dtype=bool)
        if rejected is not None and len(rejected):
            collateral[unknown] = is_in(ids[unknown], pd.Index(rejected.unique()))
        missing = unknown & ~collateral
        problems = [
            RowProblem(
                missing,
                f"{outcome_id} not in {leads_name}",
                f"{outcome_id} " + ids[missing] + f" not in {leads_name}",
            ),
            RowProblem(
                collateral,
                LEAD_QUARANTINED,
                f"{outcome_id} " + ids[collateral] + f" was quarantined in {leads_name}",
            ),
        ]
        return [problem for problem in problems if problem.mask.any()]

    return check


def _lead_times(leads: pd.DataFrame, lead_id: str, time_column: str, ids: pd.Series) -> pd.Series:
    """The lead's time for each of ``ids`` (NaT when unknown), indexed like ``ids``."""
    positions = positions_in(ids, pd.Index(leads[lead_id].astype("str")))
    return pd.Series(leads[time_column].array.take(positions, allow_fill=True), index=ids.index)


def _event_before_time_check(leads: pd.DataFrame, contract: FlatContract) -> RowCheck:
    outcomes = contract.outcomes
    assert outcomes is not None and contract.time_column is not None
    time_column = contract.time_column

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        lead_time = _lead_times(leads, contract.id_column, time_column, frame[outcomes.id_column])
        early = (frame[outcomes.time_column] < lead_time).to_numpy(dtype=bool, na_value=False)
        if not early.any():
            return []
        messages = (
            f"{outcomes.time_column} "
            + _iso(frame.loc[early, outcomes.time_column])
            + f" is before the lead's {time_column} "
            + _iso(lead_time[early])
        )
        return [RowProblem(early, f"{outcomes.time_column} before {time_column}", messages)]

    return check


def _localised_bound(value: pd.Timestamp | None, timezone: str) -> pd.Timestamp | None:
    if value is None:
        return None
    return value.tz_localize(timezone).tz_convert("UTC") if value.tzinfo is None else value.tz_convert("UTC")


def _quarantine_leads_with_rejected_outcomes(
    leads: ValidatedTable, raw_leads: pd.DataFrame, outcomes: ValidatedTable, contract: FlatContract
) -> ValidatedTable:
    """Leads whose every outcome row was quarantined: their label is unknown, so they go too."""
    assert contract.outcomes is not None
    rejected = outcomes.quarantine
    if rejected.empty:
        return leads
    rejected_ids = rejected[contract.outcomes.id_column].str.strip()
    lead_ids = leads.accepted[contract.id_column].astype("str")
    lost = ~is_in(lead_ids, outcomes.accepted[contract.outcomes.id_column]) & is_in(lead_ids, rejected_ids)
    if not lost.any():
        return leads
    first_row = rejected.assign(_id=rejected_ids).groupby("_id")[SOURCE_ROW].min()
    rows = lead_ids[lost].map(first_row).astype("int64").astype("str")
    messages = f"outcome row quarantined ({OUTCOMES_SOURCE_ROW} " + rows + ")"
    return move_to_quarantine(leads, raw_leads, lost, messages, "outcome row quarantined", collateral=True)


def _set_aside_unobserved(
    leads: ValidatedTable,
    raw_leads: pd.DataFrame,
    contract: FlatContract,
    outcomes: pd.DataFrame,
    observed_from: pd.Timestamp | None,
    observed_until: pd.Timestamp,
) -> tuple[ValidatedTable, np.ndarray]:
    """Leads whose horizon window was not fully observed, and the leads still open.

    Before ``observed_from``: quarantined as excluded (not bad) rows, outcomes unknown. Horizon
    not elapsed by ``observed_until``: a lead already won is excluded too (training on the wins of
    a window whose losses are not known yet would inflate the rate); one not won yet is **open**
    (the returned mask over the accepted rows): kept apart for the nightly job, never a label.
    """
    assert contract.outcomes is not None and contract.time_column is not None
    time_column, horizon = contract.time_column, contract.outcomes.horizon
    days = f"{contract.outcomes.horizon_days:g}"
    excluded = 0
    won_ids = pd.Index(outcomes[contract.outcomes.id_column].astype("str"))

    def already_won(times: pd.Series) -> pd.Series:
        return leads.accepted.loc[times.index, contract.id_column].astype("str").isin(won_ids)

    checks: list[tuple[Callable[[pd.Series], pd.Series], str, str]] = []
    if observed_from is not None:
        checks.append(
            (
                lambda times: times < observed_from,
                f" is before observed_from {observed_from.isoformat()} (its outcomes are not observed)",
                NOT_LABELLED_EARLY,
            )
        )
    checks.append(
        (
            lambda times: (times + horizon > observed_until) & already_won(times),
            f" + {days} days is after the end of observation {observed_until.isoformat()} and it is "
            "won already (its window's losses are not known yet)",
            NOT_LABELLED_IMMATURE,
        )
    )
    for unobserved, why, category in checks:
        times = leads.accepted[time_column]
        mask = unobserved(times).to_numpy(dtype=bool, na_value=False)
        if mask.any():
            messages = f"not labelled: {time_column} " + _iso(times[mask]) + why
            leads = move_to_quarantine(leads, raw_leads, mask, messages, category)
            excluded += int(mask.sum())
    still_open = (leads.accepted[time_column] + horizon > observed_until).to_numpy(dtype=bool, na_value=False)
    return _with_report(leads, excluded_rows=leads.report.excluded_rows + excluded), still_open


def _outcome_labels(
    leads: pd.DataFrame, outcomes: pd.DataFrame, contract: FlatContract
) -> tuple[np.ndarray, int]:
    """(label per lead, leads whose event came after the horizon)."""
    assert contract.outcomes is not None and contract.time_column is not None
    spec = contract.outcomes
    positions = positions_in(leads[contract.id_column].astype("str"), pd.Index(outcomes[spec.id_column]))
    event = pd.Series(outcomes[spec.time_column].array.take(positions, allow_fill=True), index=leads.index)
    delay = event - leads[contract.time_column]
    within = (delay <= spec.horizon).to_numpy(dtype=bool, na_value=False)
    later = (delay > spec.horizon).to_numpy(dtype=bool, na_value=False)
    return within, int(later.sum())


def _labelled_by_outcomes(
    leads: ValidatedTable,
    raw: pd.DataFrame,
    raw_outcomes: pd.DataFrame,
    contract: FlatContract,
    settings: IngestSettings,
    *,
    outcomes_source: str,
    outcomes_quarantine_path: str | None,
) -> tuple[ValidatedTable, ValidatedTable, np.ndarray, np.ndarray, dict[str, Any]]:
    """Outcomes validated against the validated ``leads`` (read from ``raw``), unobserved leads set
    aside, labels of the rest, which of them are still open, the labelling record."""
    spec = contract.outcomes
    assert spec is not None and contract.time_column is not None
    outcomes = validate_table(
        raw_outcomes,
        spec.table,
        settings,
        source=outcomes_source,
        quarantine_path=outcomes_quarantine_path,
        row_checks=[
            _unknown_id_check(leads, contract.id_column, spec.id_column, contract.table.name),
            _event_before_time_check(leads.accepted, contract),
        ],
        enforce_bad_share=False,
    )
    outcomes = _with_report(outcomes, collateral_rows=outcomes.report.reason_counts.get(LEAD_QUARANTINED, 0))
    leads = _quarantine_leads_with_rejected_outcomes(leads, raw, outcomes, contract)

    observed_from = _localised_bound(spec.observed_from, settings.timezone)
    observed_until = _localised_bound(spec.observed_until, settings.timezone)
    until_from = "config"
    if observed_until is None:
        latest = [leads.accepted[contract.time_column].max(), outcomes.accepted[spec.time_column].max()]
        observed_until = (
            max(value for value in latest if pd.notna(value)) if any(map(pd.notna, latest)) else None
        )
        until_from = "latest timestamp in the data"
    still_open = np.zeros(len(leads.accepted), dtype=bool)
    if observed_until is not None:
        leads, still_open = _set_aside_unobserved(
            leads, raw, contract, outcomes.accepted, observed_from, observed_until
        )
    positive, after_horizon = _outcome_labels(leads.accepted, outcomes.accepted, contract)
    labels = {
        "label": f"{spec.time_column} within {spec.horizon_days:g} days after {contract.time_column}",
        "horizon_days": spec.horizon_days,
        "observed_from": None if observed_from is None else observed_from.isoformat(),
        "observed_until": None if observed_until is None else observed_until.isoformat(),
        "observed_until_from": until_from,
        "labelled_leads": int((~still_open).sum()),
        "open_leads": int(still_open.sum()),
        "positives": int(positive[~still_open].sum()),
        "outcomes_after_horizon": after_horizon,
        "not_labelled": {
            reason: leads.report.reason_counts.get(reason, 0)
            for reason in (NOT_LABELLED_EARLY, NOT_LABELLED_IMMATURE)
        },
    }
    if after_horizon:
        leads = _warn(leads, "outcome after the horizon (label 0)", after_horizon)
    return leads, outcomes, positive, still_open, labels


def ingest_flat(
    raw: pd.DataFrame,
    contract: FlatContract,
    settings: IngestSettings,
    *,
    source: str = "the flat table",
    quarantine_path: str | None = None,
    enforce_bad_share: bool = True,
    outcomes: pd.DataFrame | None = None,
    outcomes_source: str = "the outcomes table",
    outcomes_quarantine_path: str | None = None,
    source_rows: np.ndarray | None = None,
) -> IngestResult:
    """Validate a one-row-per-lead table labelled by a target column or by outcomes.

    Output columns: ``lead_id`` (str), ``label`` (int64, 1 = positive), ``as_of`` (UTC timestamp,
    when a time column is configured) or ``order_key`` (float64, when an order is configured),
    ``dup_group`` (str, only when some rows are exact copies of another: see
    :func:`find_duplicates`; compared on every column but the row number), then the declared
    columns typed and undeclared columns unchanged. Drop columns are removed first and listed in
    the report; the original target column is removed (it is the label). ``duplicates`` of the
    result counts the exact copies and the rows whose features recur with the other label.

    With ``contract.outcomes`` the label comes from the ``outcomes`` frame (one dated event per
    lead id, e.g. won deals): 1 when the event is at most ``horizon_days`` after the lead's time
    column. Outcome rows are checked like any table (missing or unparseable date, duplicate id,
    an id not in the leads, an event before the lead's time: quarantined with file, column and
    row); a lead whose only outcome row was rejected is quarantined too (collateral). Leads whose
    horizon window was not fully observed (see :class:`~leadml.data.contracts.FlatOutcomes`) are set
    aside in the quarantine with the reason, as excluded rows that do not count against
    ``max_bad_share``, except those still within their horizon and not won yet: they are the
    open rows (:func:`_set_aside_unobserved`). The result holds the validated outcomes table as
    well, whose columns never join the lead table, and ``labels`` (horizon, observation window,
    counts).

    ``source_rows`` (1-based, increasing) are the file's row numbers of the rows of ``raw`` when
    ``raw`` is what remains of the file after ``data.where`` (see :mod:`leadml.data.joins`): the
    quarantine, messages and a ``source_row`` id or order use them.
    """
    table_name = contract.table.name
    if (contract.outcomes is None) != (outcomes is None):
        raise ContractError(
            f"{table_name} from {source}: "
            + (
                "outcomes are configured but no outcomes table was given"
                if outcomes is None
                else "an outcomes table was given but the contract has a target column"
            )
        )
    _check_has_rows(raw, table_name, source)
    dropped = tuple(column for column in contract.drop if column in raw.columns)
    not_found = [column for column in contract.drop if column not in raw.columns]
    settings = settings.with_fixed_reference_time()
    raw = raw.drop(columns=list(dropped))
    validated_outcomes: ValidatedTable | None = None
    labels: dict[str, Any] = {}
    is_open: np.ndarray | None = None
    taken = _check_target_values(raw, contract, settings, source) if contract.outcomes is None else None
    validated = validate_table(
        raw,
        contract.table,
        settings,
        source=source,
        quarantine_path=quarantine_path,
        enforce_bad_share=False,
        source_rows=source_rows,
    )
    if contract.outcomes is not None:
        assert outcomes is not None
        validated, validated_outcomes, positive, is_open, labels = _labelled_by_outcomes(
            validated,
            raw,
            outcomes,
            contract,
            settings,
            outcomes_source=outcomes_source,
            outcomes_quarantine_path=outcomes_quarantine_path,
        )
    else:
        if taken:
            logger.info("%s: %s", table_name, taken)
        classes = _target_classes(validated.accepted[contract.target], contract)
        positive, is_open = classes.positive, classes.open
        if taken:
            labels = {"negative_taken": taken}
    accepted = validated.accepted
    leading: dict[str, Any] = {
        s.LEAD_ID: (
            pd.Series(validated.accepted_source_rows, dtype="int64").astype("str")
            if contract.id_column == SOURCE_ROW
            else accepted[contract.id_column]
        ),
        LABEL: positive.astype("int64"),
    }
    if contract.time_column:
        leading[s.AS_OF] = accepted[contract.time_column]
    if contract.order_column:
        leading[ORDER_KEY] = (
            validated.accepted_source_rows.astype("float64")
            if contract.order_column == SOURCE_ROW
            else accepted[contract.order_column]
        )
    renamed = {contract.id_column, contract.target, contract.time_column, contract.order_column}
    rest = accepted.drop(columns=[column for column in accepted.columns if column in renamed])
    clash = sorted((set(leading) | {DUP_GROUP}) & set(rest.columns))
    if clash:
        raise ContractError(
            f"{table_name} from {source}: column(s) {', '.join(clash)} would clash with the "
            "columns ingestion adds; drop or rename them"
        )
    table = pd.concat([pd.DataFrame(leading, index=accepted.index), rest], axis=1)
    open_rows = table.iloc[:0].drop(columns=[LABEL])
    if is_open is not None and is_open.any():
        # still open: validated like every row, kept apart for the nightly job, never a label
        open_rows = table[is_open].drop(columns=[LABEL])
        table = table[~is_open]
    row_numbers = [
        column
        for column, from_row in ((s.LEAD_ID, contract.id_column), (ORDER_KEY, contract.order_column))
        if from_row == SOURCE_ROW
    ]
    duplicates = find_duplicates(table, ignore=row_numbers)
    if duplicates.group is not None:
        table.insert(len(leading), DUP_GROUP, duplicates.group)

    report = replace(validated.report, dropped_columns=dropped)
    if not_found:
        report = replace(report, warnings={**report.warnings, "drop columns not in source": len(not_found)})
    result = IngestResult(
        {table_name: table},
        {table_name: validated.quarantine},
        {table_name: report},
        labels,
        duplicates={table_name: duplicates.to_dict()},
        open_rows={table_name: open_rows} if contract.open or contract.outcomes is not None else {},
    )
    if validated_outcomes is not None:
        name = validated_outcomes.report.table
        result.tables[name] = validated_outcomes.accepted
        result.quarantines[name] = validated_outcomes.quarantine
        result.reports[name] = validated_outcomes.report
    logger.info("%s: %d positives of %d labelled leads", table_name, int(table[LABEL].sum()), len(table))
    if contract.open or contract.outcomes is not None:
        logger.info("%s: %d open leads kept apart for scoring", table_name, len(open_rows))
    logger.info("%s: %s", table_name, duplicates.sentence())
    if enforce_bad_share:
        check_bad_shares(result, settings)
    return result


# --------------------------------------------------------------------------- spellings
def respelt_categories(
    raw: pd.DataFrame, contract: TableContract, settings: IngestSettings, examples: int = 3
) -> dict[str, dict[str, Any]]:
    """Per declared category column of ``raw``: how many distinct values ingestion respells, and
    the first ``examples`` of them ({written: stored})."""
    respelt = {}
    for spec in contract.columns:
        if spec.dtype != "category" or spec.name not in raw.columns:
            continue
        changes = respelt_values(raw[spec.name], spec, settings)
        if changes:
            respelt[spec.name] = {"values": len(changes), "examples": dict(list(changes.items())[:examples])}
    return respelt


def respelt_sentence(table: str, respelt: Mapping[str, Mapping[str, Any]]) -> str:
    """One line for the ingest summary: where category spellings changed, with an example each."""
    shown = "; ".join(
        f"{column} {next(iter(change['examples']))!r} -> {next(iter(change['examples'].values()))!r}"
        + (f" (+{change['values'] - 1:,} more)" if change["values"] > 1 else "")
        for column, change in list(respelt.items())[:4]
    )
    more = f"; and {len(respelt) - 4} more column(s)" if len(respelt) > 4 else ""
    return (
        f"{table}: category values are stored trimmed, in lower case, separators as _ "
        f"(points rules and filters use that spelling): {shown}{more}; all in the ingest manifest"
    )


# --------------------------------------------------------------------------- manifest
def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over column names, dtypes, row count and the sum of pandas row hashes (row order ignored)."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    total = int(row_hashes.sum(dtype=np.uint64))
    header = json.dumps([[str(column), str(dtype)] for column, dtype in frame.dtypes.items()])
    digest = hashlib.sha256(header.encode())
    digest.update(f"{len(frame)}:{total:016x}".encode())
    return digest.hexdigest()


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def manifest(
    result: IngestResult,
    *,
    sources: Mapping[str, str],
    source_fingerprints: Mapping[str, str],
    output_paths: Mapping[str, str],
    quarantine_paths: Mapping[str, str] | None = None,
    settings: IngestSettings | None = None,
    created_at: pd.Timestamp | None = None,
    output_fingerprints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable record of one ingestion: per table where it came from and went to.

    ``output_fingerprints`` (e.g. sha256 of the written files) replaces :func:`frame_fingerprint`,
    which hashes every value in Python and costs close to a minute on 25 million rows.
    """
    quarantine_paths = quarantine_paths or {}
    output_fingerprints = output_fingerprints or {}
    tables = {}
    for table, frame in result.tables.items():
        report = result.reports[table]
        tables[table] = {
            **report.to_dict(),
            "source": sources.get(table, report.source),
            "source_fingerprint": source_fingerprints.get(table),
            "output_path": _optional_text(output_paths.get(table)),
            "output_rows": len(frame),
            "output_fingerprint": output_fingerprints.get(table) or frame_fingerprint(frame),
            "quarantine_path": _optional_text(quarantine_paths.get(table) or report.quarantine_path),
            "columns": {str(column): str(dtype) for column, dtype in frame.dtypes.items()},
        }
        if table in result.duplicates:
            tables[table]["duplicates"] = result.duplicates[table]
    created = created_at if created_at is not None else pd.Timestamp.now(tz="UTC")
    return {
        "stage": "ingest",
        "created_at": created.isoformat(),
        "settings": None if settings is None else settings.to_dict(),
        "tables": tables,
    }
