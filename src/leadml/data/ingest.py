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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.arrays import IdLookup, is_in, positions_in
from leadml.data.contracts import (
    SOURCE_ROW,
    IngestSettings,
    RowCheck,
    RowProblem,
    TableContract,
)
from leadml.data.parsing import respelt_values
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
            f"{count_of(self.conflicting_rows, 'row shares', 'rows share')} their features with a row of the "
            "other label"
        )
        if not self.rows:
            return f"no row is an exact copy of another; {conflicting}"
        copies = "row is an exact copy" if self.rows == 1 else "rows are exact copies"
        return (
            f"{self.rows:,} {copies} of another row (in {count_of(self.groups, 'group', 'groups')}), kept "
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


def count_of(n: int, one: str, many: str) -> str:
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
    return unknown_lead_check(leads.accepted[s.LEAD_ID], leads.quarantine[s.LEAD_ID])


def unknown_lead_check(
    accepted_ids: pd.Series, quarantined_ids: pd.Series, lookup: IdLookup | None = None
) -> RowCheck:
    """Rows whose lead is not an accepted lead; those of a quarantined lead are told apart (collateral).

    ``quarantined_ids``: the lead_id of the leads' quarantined rows as written (trimmed here);
    ``lookup``: of ``accepted_ids``, when the caller has one.
    """
    accepted = lookup if lookup is not None else IdLookup(accepted_ids)  # once, for batch after batch
    quarantined = pd.Index(quarantined_ids.str.strip().dropna().unique()) if len(quarantined_ids) else None

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        ids = frame[s.LEAD_ID]
        unknown = ids.notna().to_numpy() & (accepted.positions(ids) < 0)
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
    return with_report(validated, collateral_rows=validated.report.reason_counts.get(LEAD_QUARANTINED, 0))


def status_check(frame: pd.DataFrame) -> list[RowProblem]:
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


def closed_before_created_check(leads: pd.DataFrame, lookup: IdLookup | None = None) -> RowCheck:
    """Outcome rows closed before their lead was created (``leads``: lead_id and created_at;
    ``lookup``: of its lead ids, when the caller has one)."""
    lead_ids = lookup if lookup is not None else IdLookup(leads[s.LEAD_ID])
    created = leads[s.CREATED_AT].reset_index(drop=True)

    def check(frame: pd.DataFrame) -> list[RowProblem]:
        positions = lead_ids.positions(frame[s.LEAD_ID])
        created_at = pd.Series(created.array.take(positions, allow_fill=True), index=frame.index)
        early = (frame[s.CLOSED_AT] < created_at).to_numpy(dtype=bool, na_value=False)
        if not early.any():
            return []
        messages = (
            "closed_at "
            + iso_text(frame.loc[early, s.CLOSED_AT])
            + " is before the lead's created_at "
            + iso_text(created_at[early])
        )
        return [RowProblem(early, "closed_at before created_at", messages)]

    return check


def iso_text(values: pd.Series) -> pd.Series:
    return values.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("str")


def with_report(validated: ValidatedTable, **changes: Any) -> ValidatedTable:
    return replace(validated, report=replace(validated.report, **changes))


def with_warning(validated: ValidatedTable, warning: str, count: int) -> ValidatedTable:
    if count == 0:
        return validated
    return with_report(validated, warnings={**validated.report.warnings, warning: int(count)})


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


def open_outcomes(template: pd.DataFrame, missing: pd.Series) -> pd.DataFrame:
    """One ``open`` outcome row per lead id in ``missing``, with the columns and dtypes of
    ``template`` (accepted outcome rows)."""
    added = template.iloc[:0].reindex(pd.RangeIndex(len(missing)))
    added[s.LEAD_ID] = missing.to_numpy()
    added[s.STATUS] = pd.Categorical([s.OPEN] * len(missing), dtype=template[s.STATUS].dtype)
    return added


def _outcomes_with_open_defaults(outcomes: ValidatedTable, lead_ids: pd.Series) -> ValidatedTable:
    missing = lead_ids[~is_in(lead_ids, outcomes.accepted[s.LEAD_ID])].reset_index(drop=True)
    if missing.empty:
        return outcomes
    table = pd.concat([outcomes.accepted, open_outcomes(outcomes.accepted, missing)], ignore_index=True)
    validated = replace(outcomes, accepted=table)
    validated = with_report(validated, added_rows=len(missing))
    return with_warning(validated, NO_OUTCOME, len(missing))


def activities_before_created(
    activities: pd.DataFrame, leads: pd.DataFrame, lead_ids: IdLookup | None = None
) -> int:
    """How many activities come before their lead's created_at (``lead_ids``: of ``leads``, built
    once when the activities come batch by batch)."""
    lookup = lead_ids if lead_ids is not None else IdLookup(leads[s.LEAD_ID])
    positions = lookup.positions(activities[s.LEAD_ID])
    created = leads[s.CREATED_AT].array.take(positions, allow_fill=True)
    return int((activities[s.TIMESTAMP].array < created).sum())


def check_has_rows(raw: pd.DataFrame, table: str, source: str) -> None:
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
    check_has_rows(raw[s.LEADS], s.LEADS, sources.get(s.LEADS, "the leads frame"))
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
    leads = with_warning(leads, UNKNOWN_ACCOUNT, int(unknown_accounts.sum()))

    outcomes = validate(
        s.OUTCOMES, [_unknown_lead_check(leads), status_check, closed_before_created_check(leads.accepted)]
    )
    outcomes = _with_collateral(outcomes)
    leads = _quarantine_leads_without_outcome(leads, frames[s.LEADS], outcomes)
    outcomes = _outcomes_with_open_defaults(outcomes, leads.accepted[s.LEAD_ID])

    activities = _with_collateral(validate(s.ACTIVITIES, [_unknown_lead_check(leads)]))
    activities = with_warning(
        activities, BEFORE_CREATED, activities_before_created(activities.accepted, leads.accepted)
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
    written: Mapping[str, tuple[int, Mapping[str, str]]] | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable record of one ingestion: per table where it came from and went to.

    ``output_fingerprints`` (e.g. sha256 of the written files) replaces :func:`frame_fingerprint`,
    which hashes every value in Python and costs close to a minute on 25 million rows.
    ``written``: per table (rows, {column: dtype}) of tables written batch by batch, which
    ``result.tables`` then does not hold (their fingerprints must be given).
    """
    quarantine_paths = quarantine_paths or {}
    output_fingerprints = output_fingerprints or {}
    if written is None:
        written = {
            table: (len(frame), {str(column): str(dtype) for column, dtype in frame.dtypes.items()})
            for table, frame in result.tables.items()
        }
    tables = {}
    for table, (rows, columns) in written.items():
        report = result.reports[table]
        fingerprint = output_fingerprints.get(table) or frame_fingerprint(result.tables[table])
        tables[table] = {
            **report.to_dict(),
            "source": sources.get(table, report.source),
            "source_fingerprint": source_fingerprints.get(table),
            "output_path": _optional_text(output_paths.get(table)),
            "output_rows": rows,
            "output_fingerprint": fingerprint,
            "quarantine_path": _optional_text(quarantine_paths.get(table) or report.quarantine_path),
            "columns": dict(columns),
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
