"""A flat table (one row per lead) ingested: labelled by a target column or by dated outcomes,
open rows kept apart, duplicate rows found."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
    normalise_token,
    normalise_tokens,
)
from leadml.data.ingest import (
    DUP_GROUP,
    LABEL,
    LEAD_QUARANTINED,
    ORDER_KEY,
    IngestResult,
    check_bad_shares,
    check_has_rows,
    count_of,
    find_duplicates,
    iso_text,
    with_report,
    with_warning,
)
from leadml.data.parsing import present_text
from leadml.data.validation import (
    ValidatedTable,
    move_to_quarantine,
    validate_table,
)
from leadml.errors import ContractError

logger = logging.getLogger(__name__)


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
    return count_of(int(count), "row", "rows")


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
            + iso_text(frame.loc[early, outcomes.time_column])
            + f" is before the lead's {time_column} "
            + iso_text(lead_time[early])
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
            messages = f"not labelled: {time_column} " + iso_text(times[mask]) + why
            leads = move_to_quarantine(leads, raw_leads, mask, messages, category)
            excluded += int(mask.sum())
    still_open = (leads.accepted[time_column] + horizon > observed_until).to_numpy(dtype=bool, na_value=False)
    return with_report(leads, excluded_rows=leads.report.excluded_rows + excluded), still_open


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
    outcomes = with_report(outcomes, collateral_rows=outcomes.report.reason_counts.get(LEAD_QUARANTINED, 0))
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
        leads = with_warning(leads, "outcome after the horizon (label 0)", after_horizon)
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
    check_has_rows(raw, table_name, source)
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
