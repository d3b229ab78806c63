"""Several tables in one flat data config: ``joins:`` adds lookup tables, ``where:`` keeps rows.

A CRM's opportunity export seldom stands alone: the account's sector and size, the product's
price, the rep's team sit in dimension tables keyed by a column of the export, and the export
holds rows of every stage while only some are leads to learn from or to score. These two
settings do what a user would otherwise do in pandas, before the flat contract:

- ``where: {deal_stage: [Won, Lost, Engaging]}`` keeps the rows whose value is in the list
  (``{column: {not_in: [...]}}`` drops them instead); values are compared in the spelling
  ingestion stores categories in (trimmed, case-folded, separators as ``_``), so ``won`` and
  ``Won`` match, as the target's values do. The rows left out are counted per value, never
  quarantined (they are not bad rows, they are not leads), and every row kept keeps its row
  number in the file, so the quarantine still names the file's row.
- ``joins: {accounts: {table: {...}, by: account}}`` reads the lookup table as a source of its
  own, checks it (its key present and unique; the lead contract's types of the columns it brings,
  so a bad value is quarantined once, at its row of the lookup file, not on every lead that
  points to it) and adds its columns to every lead by ``by`` (many leads to one lookup row). A
  lead whose key is not in the lookup keeps missing values there, and the unmatched keys are
  counted (with a few examples) in the ingest summary and manifest.

The lookup's columns then go through the lead contract like the export's own columns (declare
them under ``categorical``/``numeric``/... there, or they pass through as text). Joins run
before ``where``, so a rule may name a lookup column (``where: {region: [EMEA]}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.contracts import (
    OUTCOMES_TABLE,
    ColumnSpec,
    FlatContract,
    IngestSettings,
    TableContract,
    as_tuple,
    normalise_tokens,
)
from leadml.data.ingest import IngestResult
from leadml.data.parsing import as_text, parse_column, trimmed_text
from leadml.data.validation import ValidatedTable, validate_table
from leadml.errors import LeadmlError

JOIN_KEYS: tuple[str, ...] = ("table", "by", "key", "columns", "prefix")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_EXAMPLES = 3


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class RowRule:
    """One ``where`` rule: keep (or, with ``exclude``, drop) rows whose ``column`` is in ``values``."""

    column: str
    values: tuple[str, ...]
    exclude: bool = False

    @property
    def sentence(self) -> str:
        return f"{self.column} {'not in' if self.exclude else 'in'} [{', '.join(self.values)}]"


@dataclass(frozen=True)
class Lookup:
    """One ``joins`` entry: a lookup table joined to the leads where their ``by`` = its ``key``."""

    name: str
    by: str
    key: str
    columns: tuple[str, ...] | None = None  # None: every column but the key
    prefix: str = ""
    table: Mapping[str, Any] = field(default_factory=dict)  # its source spec (format, path, ...)

    @property
    def key_config(self) -> str:
        return f"data.joins.{self.name}"


def row_rules(where: Mapping[str, Any] | None) -> tuple[RowRule, ...]:
    """``data.where`` as rules; a malformed rule names its key."""
    rules = []
    for column, given in dict(where or {}).items():
        key = f"data.where.{column}"
        exclude = False
        if isinstance(given, Mapping):
            unknown = sorted(set(given) - {"in", "not_in"})
            if unknown or len(given) != 1:
                raise LeadmlError(
                    f"{key}: give a list of values to keep, or exactly one of in: [...] or not_in: [...]"
                )
            exclude = "not_in" in given
            given = given["not_in" if exclude else "in"]
        values = tuple(str(value) for value in as_tuple(given) if value is not None)
        if not values:
            raise LeadmlError(f"{key}: no values; list the values of rows to keep, e.g. [Won, Lost]")
        rules.append(RowRule(str(column), values, exclude))
    return tuple(rules)


def lookups(joins: Mapping[str, Any] | None, reserved: tuple[str, ...]) -> tuple[Lookup, ...]:
    """``data.joins`` as lookups; a malformed entry names its key. ``reserved``: table names in use."""
    if joins is not None and not isinstance(joins, Mapping):
        raise LeadmlError("data.joins: give one entry per lookup table, {name: {table: ..., by: ...}}")
    found = []
    for name, entry in dict(joins or {}).items():
        key = f"data.joins.{name}"
        if not _NAME.fullmatch(str(name)) or str(name) in reserved:
            raise LeadmlError(
                f"{key}: a join's name must be a word of letters, digits and _ (it names its quarantine "
                f"and interim file) and not one of {', '.join(reserved)}"
            )
        if not isinstance(entry, Mapping):
            raise LeadmlError(f"{key}: give table: (its source) and by: (the leads' key column)")
        if True in entry:  # YAML 1.1 reads an unquoted on: as the boolean true
            raise LeadmlError(f"{key}: YAML reads on: as true; name the leads' key column with by: instead")
        unknown = sorted(map(str, set(entry) - set(JOIN_KEYS)))
        if unknown:
            raise LeadmlError(f"{key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(JOIN_KEYS)}")
        for required in ("table", "by"):
            if not entry.get(required):
                raise LeadmlError(f"{key} needs {required!r}")
        if not isinstance(entry["table"], Mapping):
            raise LeadmlError(f"{key} needs 'table' (its source: format, path, ...)")
        columns = entry.get("columns")
        found.append(
            Lookup(
                name=str(name),
                by=str(entry["by"]),
                key=str(entry.get("key") or entry["by"]),
                columns=None if columns is None else tuple(str(column) for column in as_tuple(columns)),
                prefix=str(entry.get("prefix") or ""),
                table=entry["table"],
            )
        )
    return tuple(found)


# --------------------------------------------------------------------------- where
@dataclass(frozen=True)
class FilterReport:
    """What ``where`` kept: rows in and kept, and per rule the rows it left out by value."""

    input_rows: int
    kept_rows: int
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> {value: rows}
    unseen: dict[str, list[str]] = field(default_factory=dict)  # rule -> listed values in no row

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_rows": self.input_rows,
            "kept_rows": self.kept_rows,
            "left_out": self.left_out,
            "unseen": self.unseen,
        }

    def sentence(self, table: str) -> str:
        parts = []
        for rule, counts in self.left_out.items():
            shown = ", ".join(f"{value} {rows:,}" for value, rows in list(counts.items())[:_EXAMPLES])
            more = f" and {len(counts) - _EXAMPLES} more" if len(counts) > _EXAMPLES else ""
            part = f"{rule} (left out: {shown}{more})" if counts else rule
            if self.unseen.get(rule):
                part += f" (no row has {', '.join(map(repr, self.unseen[rule]))}: a typo?)"
            parts.append(part)
        return f"where: kept {self.kept_rows:,} of {self.input_rows:,} rows of {table}: " + "; ".join(parts)


def _spelling(values: pd.Series) -> pd.Series:
    return normalise_tokens(as_text(values))


def filter_rows(
    frame: pd.DataFrame, rules: tuple[RowRule, ...], source: str
) -> tuple[np.ndarray, FilterReport]:
    """(the 0-based positions of the rows every rule keeps, the report). Missing values are in no list."""
    keep = np.ones(len(frame), dtype=bool)
    left_out: dict[str, dict[str, int]] = {}
    unseen: dict[str, list[str]] = {}
    for rule in rules:
        if rule.column not in frame.columns:
            raise LeadmlError(
                f"data.where.{rule.column}: no column {rule.column!r} in {source}; present columns: "
                + ", ".join(map(str, frame.columns))
            )
        spelt = _spelling(frame[rule.column])
        wanted = dict(zip(_spelling(pd.Series(rule.values)), rule.values, strict=True))
        listed = spelt.isin(list(wanted)).to_numpy(dtype=bool)
        matched = ~listed if rule.exclude else listed
        dropped = keep & ~matched
        shown = as_text(frame[rule.column]).str.strip().fillna("(missing)")
        left_out[rule.sentence] = {
            str(value): int(rows) for value, rows in shown[dropped].value_counts().items()
        }
        # a listed value no row has is most often a typo; said, not fatal: tonight's file may lack it
        present = set(spelt.dropna())
        missing = [written for spelt_value, written in wanted.items() if spelt_value not in present]
        if missing:
            unseen[rule.sentence] = missing
        keep &= matched
    return np.flatnonzero(keep), FilterReport(len(frame), int(keep.sum()), left_out, unseen)


# --------------------------------------------------------------------------- joins
@dataclass(frozen=True)
class JoinReport:
    """How the leads met one lookup table."""

    name: str
    by: str
    key: str
    columns: tuple[str, ...]
    lookup_rows: int
    matched_leads: int
    unmatched_leads: int
    unmatched_keys: int
    leads_without_key: int
    unmatched_examples: tuple[str, ...] = ()
    lookup_quarantined: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "key": self.key,
            "columns": list(self.columns),
            "lookup_rows": self.lookup_rows,
            "matched_leads": self.matched_leads,
            "unmatched_leads": self.unmatched_leads,
            "unmatched_keys": self.unmatched_keys,
            "leads_without_key": self.leads_without_key,
            "unmatched_examples": list(self.unmatched_examples),
            "lookup_quarantined": self.lookup_quarantined,
        }

    def sentence(self) -> str:
        total = self.matched_leads + self.unmatched_leads + self.leads_without_key
        text = f"join {self.name} by {self.by}: {self.matched_leads:,} of {total:,} rows matched"
        if self.unmatched_leads:
            examples = ", ".join(map(repr, self.unmatched_examples))
            values = _count(self.unmatched_keys, f"{self.by} value", f"{self.by} values")
            where = f"not in {self.name}" + (" (or quarantined there)" if self.lookup_quarantined else "")
            text += (
                f"; {_count(self.unmatched_leads, 'row has', 'rows have')} {values} {where} "
                f"(e.g. {examples}): their {self.name} columns are missing"
            )
        if self.leads_without_key:
            text += f"; {_count(self.leads_without_key, 'row has', 'rows have')} no {self.by}"
        return text


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


@dataclass(frozen=True)
class JoinMatches:
    """Per row of the flat table: the lookup row it met (-1: none), its key as compared and as written."""

    lookup: Lookup
    columns: tuple[str, ...]
    lookup_rows: int
    lookup_quarantined: int
    positions: np.ndarray
    keys: np.ndarray
    written: np.ndarray

    def report(self, rows: np.ndarray | None = None) -> JoinReport:
        """The counts over ``rows`` (positions; None: all), the rows ``where`` kept."""
        chosen = slice(None) if rows is None else rows
        positions, keys = self.positions[chosen], pd.Series(self.keys[chosen])
        has_key = keys.notna().to_numpy()
        unmatched = has_key & (positions < 0)
        written = pd.Series(self.written[chosen])[unmatched]
        return JoinReport(
            name=self.lookup.name,
            by=self.lookup.by,
            key=self.lookup.key,
            columns=self.columns,
            lookup_rows=self.lookup_rows,
            lookup_quarantined=self.lookup_quarantined,
            matched_leads=int((positions >= 0).sum()),
            unmatched_leads=int(unmatched.sum()),
            unmatched_keys=int(keys[unmatched].nunique()),
            leads_without_key=int((~has_key).sum()),
            unmatched_examples=tuple(str(key) for key in written.value_counts().index[:_EXAMPLES]),
        )


def lookup_contract(lookup: Lookup, lead_contract: FlatContract, columns: tuple[str, ...]) -> TableContract:
    """The lookup's own contract: its key required and unique, the lead contract's types of its columns."""
    declared = {spec.name: spec for spec in lead_contract.table.columns}
    specs = [ColumnSpec(lookup.key, "string", nullable=False, unique=True)]
    specs += [
        declared[lookup.prefix + column]
        for column in columns
        if lookup.prefix + column in declared and column != lookup.key
    ]
    return TableContract(lookup.name, tuple(specs))


def _added_columns(lookup: Lookup, lookup_raw: pd.DataFrame, source: str) -> tuple[str, ...]:
    if lookup.key not in lookup_raw.columns:
        raise LeadmlError(
            f"{lookup.key_config}.key: no column {lookup.key!r} in {source}; present columns: "
            + ", ".join(map(str, lookup_raw.columns))
        )
    present = [str(column) for column in lookup_raw.columns if str(column) != lookup.key]
    if lookup.columns is None:
        return tuple(present)
    missing = [column for column in lookup.columns if column not in present]
    if missing:
        raise LeadmlError(
            f"{lookup.key_config}.columns: {', '.join(missing)} not in {source}; present columns: "
            + ", ".join(present)
        )
    return lookup.columns


def _key_spec(lookup: Lookup, lead_contract: FlatContract, contract: TableContract) -> ColumnSpec:
    declared = {spec.name: spec for spec in lead_contract.table.columns}
    if lookup.by in declared and declared[lookup.by].dtype == "category":
        return replace(declared[lookup.by], nullable=True, allowed=None)
    return contract.columns[0]


def join_keys(values: pd.Series, spec: ColumnSpec, settings: IngestSettings) -> pd.Series:
    """Keys as compared: trimmed text; in the stored category spelling (and the column's
    ``synonyms``) when the leads' key column is a declared category, so ``GTXPro`` in the export
    can meet ``GTX Pro`` in the lookup through ``synonyms: {product: {GTXPro: GTX Pro}}``."""
    if spec.dtype != "category":
        return trimmed_text(values, spec, settings).reset_index(drop=True)
    typed, _ = parse_column(values, spec, settings)
    return typed.astype("str").where(typed.notna())


def join_lookup(
    leads: pd.DataFrame,
    lookup: Lookup,
    lookup_raw: pd.DataFrame,
    lead_contract: FlatContract,
    settings: IngestSettings,
    *,
    source: str,
    leads_source: str,
    quarantine_path: str | None = None,
) -> tuple[pd.DataFrame, ValidatedTable, JoinMatches]:
    """``leads`` with the lookup's columns added by key; the validated lookup; which rows matched.

    The lookup rows that fail their contract are quarantined (their leads then count as
    unmatched); the columns added are the lookup file's own values, typed later by the lead
    contract, so a value reads the same whether it came from the export or from a lookup.
    """
    if lookup.by not in leads.columns:
        raise LeadmlError(
            f"{lookup.key_config}.by: no column {lookup.by!r} in {leads_source}; present columns: "
            + ", ".join(map(str, leads.columns))
        )
    columns = _added_columns(lookup, lookup_raw, source)
    added = [lookup.prefix + column for column in columns]
    clash = [name for name in added if name in leads.columns]
    if clash:
        raise LeadmlError(
            f"{lookup.key_config}: column(s) {', '.join(clash)} are in {leads_source} and in {source}; "
            f"list the ones to add under {lookup.key_config}.columns, or set {lookup.key_config}.prefix"
        )
    contract = lookup_contract(lookup, lead_contract, columns)
    validated = validate_table(
        lookup_raw,
        contract,
        settings,
        source=source,
        quarantine_path=quarantine_path,
        enforce_bad_share=False,
    )
    key_spec = _key_spec(lookup, lead_contract, contract)
    accepted_raw = lookup_raw.reset_index(drop=True).iloc[validated.accepted_source_rows - 1]
    keys = pd.Index(join_keys(accepted_raw[lookup.key], key_spec, settings))
    lead_keys = join_keys(leads[lookup.by], key_spec, settings)
    positions = keys.get_indexer(lead_keys)
    joined = leads.copy()
    for column, name in zip(columns, added, strict=True):
        # -1 (no lookup row) takes a missing value, in the lookup column's own dtype
        joined[name] = pd.Series(
            accepted_raw[column].array.take(positions, allow_fill=True), index=leads.index
        )
    matches = JoinMatches(
        lookup=lookup,
        columns=tuple(added),
        lookup_rows=len(lookup_raw),
        lookup_quarantined=validated.report.quarantined_rows,
        positions=positions,
        keys=lead_keys.to_numpy(dtype=object),
        # as the file spells them, for the examples
        written=trimmed_text(leads[lookup.by], contract.columns[0], settings).to_numpy(dtype=object),
    )
    return joined, validated, matches


# --------------------------------------------------------------------------- the whole flat input
@dataclass(frozen=True)
class CombinedTable:
    """The flat table as the contract sees it: lookups joined, ``where`` applied.

    ``source_rows`` are the file's 1-based row numbers of the rows of ``frame`` (None when every
    row of the file is there).
    """

    frame: pd.DataFrame
    source_rows: np.ndarray | None
    lookups: dict[str, ValidatedTable] = field(default_factory=dict)
    joins: dict[str, JoinReport] = field(default_factory=dict)
    where: FilterReport | None = None

    def record(self, table: str) -> dict[str, Any]:
        """The manifest's account of the joins and the filter, each with its sentence."""
        out: dict[str, Any] = {}
        if self.joins:
            out["joins"] = {
                name: {**report.to_dict(), "sentence": report.sentence()}
                for name, report in self.joins.items()
            }
        if self.where is not None:
            out["where"] = {**self.where.to_dict(), "sentence": self.where.sentence(table)}
        return out


def combine_flat(
    raw: pd.DataFrame,
    lookup_frames: Mapping[str, pd.DataFrame],
    data: Mapping[str, Any],
    contract: FlatContract,
    settings: IngestSettings,
    *,
    sources: Mapping[str, str],
    quarantine_paths: Mapping[str, str],
) -> CombinedTable:
    """Join ``data.joins`` onto the flat table ``raw``, then keep the rows ``data.where`` keeps."""
    table = contract.table.name
    frame = raw.reset_index(drop=True)
    validated: dict[str, ValidatedTable] = {}
    matches: dict[str, JoinMatches] = {}
    for lookup in lookups(data.get("joins"), (table, OUTCOMES_TABLE)):
        frame, validated[lookup.name], matches[lookup.name] = join_lookup(
            frame,
            lookup,
            lookup_frames[lookup.name],
            contract,
            settings,
            source=sources.get(lookup.name, lookup.name),
            leads_source=sources.get(table, table),
            quarantine_path=quarantine_paths.get(lookup.name),
        )
    rules = row_rules(data.get("where"))
    if not rules:
        reports = {name: match.report() for name, match in matches.items()}
        return CombinedTable(frame, None, validated, reports)
    kept, report = filter_rows(frame, rules, sources.get(table, table))
    reports = {name: match.report(kept) for name, match in matches.items()}  # of the rows kept
    return CombinedTable(
        frame.iloc[kept].reset_index(drop=True), kept.astype(np.int64) + 1, validated, reports, report
    )


def lookup_specs(data: Mapping[str, Any], reserved: tuple[str, ...]) -> dict[str, Mapping[str, Any]]:
    """The source spec of each ``data.joins`` entry, by its name."""
    return {lookup.name: lookup.table for lookup in lookups(data.get("joins"), reserved)}


def with_lookups(result: IngestResult, validated: Mapping[str, ValidatedTable]) -> IngestResult:
    """The ingestion result with each checked lookup table as a table of its own (interim file,
    quarantine, report, source fingerprint), so a changed lookup file rebuilds like the export."""
    return replace(
        result,
        tables={**result.tables, **{name: table.accepted for name, table in validated.items()}},
        quarantines={**result.quarantines, **{name: table.quarantine for name, table in validated.items()}},
        reports={**result.reports, **{name: table.report for name, table in validated.items()}},
    )
