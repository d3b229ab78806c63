"""A table checked against its contract: typed rows, quarantined rows with their reasons, the report."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.arrays import repeated_text
from leadml.data.contracts import (
    QUARANTINE_COLUMNS,
    REASON,
    SOURCE_ROW,
    TABLE,
    DuplicateRule,
    IngestSettings,
    RowCheck,
    RowProblem,
    TableContract,
)
from leadml.data.parsing import as_text, empty_column, parse_column
from leadml.errors import ContractError

logger = logging.getLogger(__name__)


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
    filled: np.ndarray | None = None,
) -> list[RowProblem]:
    """Rows that lose to another eligible row with the same non-null key under ``rule``.

    ``source_rows`` (1-based, per row of ``typed``) names the kept row in the message; default
    the row's position + 1. ``filled``: each row's count of non-null values, for ``most_complete``
    when ``typed`` holds only the key columns (default: counted over ``typed``'s columns).
    """
    key = list(key)
    candidates = eligible & typed[key].notna().all(axis=1).to_numpy()
    keys = typed.loc[candidates, key]
    if len(key) == 1 and isinstance(keys[key[0]].dtype, pd.StringDtype):
        repeated = repeated_text(keys[key[0]])
    else:
        repeated = keys.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return []
    group = keys[repeated].copy()
    group["_position"] = group.index.to_numpy()
    if rule == "most_complete":
        counts = typed.loc[group.index].notna().sum(axis=1) if filled is None else filled[group.index]
        group["_filled"] = -np.asarray(counts, dtype=np.int64)
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


def duplicate_keys(contract: TableContract) -> list[list[str]]:
    """The keys whose duplicates are resolved, in order: the primary key, then every unique column."""
    keys = [list(contract.primary_key)] if contract.primary_key else []
    keys += [
        [spec.name] for spec in contract.columns if spec.unique and spec.name not in contract.primary_key
    ]
    return keys


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
    defer_duplicates: bool = False,
) -> ValidatedTable:
    """Apply ``contract`` to ``raw``: typed accepted rows, quarantined rows and a report.

    ``row_checks`` get the typed frame (index = row position) and add problems of their own
    (cross-column or cross-table rules); they run before duplicates are resolved. With
    ``enforce_bad_share`` a share of bad rows above ``settings.max_bad_share`` raises.
    ``source_rows`` (1-based, increasing, one per row of ``raw``) are the rows' numbers in the
    source when ``raw`` is a filtered part of it (``data.where``): quarantine and messages name them.
    ``defer_duplicates`` leaves duplicate keys to the caller, who sees the whole table batch by batch
    (:mod:`leadml.adapters.streamed_ingest`).
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
            typed_columns[spec.name] = empty_column(spec, rows)
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
    for key in () if defer_duplicates else duplicate_keys(contract):
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
