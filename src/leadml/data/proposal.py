"""``leadml-init`` decides: the target, id, time or order, outcomes and column groups of a flat
config (pure)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.data.config_yaml import yaml_scalar
from leadml.data.contracts import SOURCE_ROW, normalise_token
from leadml.data.parsing import as_text
from leadml.data.profiles import (
    BOOLEAN,
    CATEGORICAL,
    CONSTANT,
    CREATED_NAME,
    DATE_TEXT,
    DECIMAL_COMMA,
    EMPTY,
    EVENT_NAME,
    FAMILY_NAMES,
    GROUPS,
    HORIZON_DAYS,
    ID_NAME,
    INTEGER,
    LATER_NAME,
    NEGATIVE_TOKENS,
    NOT_A_FEATURE,
    NUMERIC,
    OPEN_TOKENS,
    ORDER_CORRELATION,
    ORDER_NAME,
    POSITIVE_TOKENS,
    RESERVED,
    RUN_SHARE,
    TARGET_NAME,
    TARGET_VALUES,
    TEXT,
    TIMESTAMP,
    Entry,
    Outcomes,
    Profile,
    Proposal,
    Source,
    Target,
    cleaned_text,
    count_text,
    number_markers,
    placeholder_markers,
    profile_column,
)
from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)


def choose_target(profiles: Mapping[str, Profile], forced: str | None = None) -> Target | None:
    """The outcome column (2-5 values, named like an outcome, or the only yes/no column) and its values.

    Values are sorted into positive (won, converted, yes, 1, true ...), negative (lost, no, 0 ...)
    and open (open, new, in progress ...). A value none of the word lists knows goes under open,
    never a label, with a note: an unknown value counted as a loss would teach the model wrong.
    """
    if forced is not None:
        if forced not in profiles:
            raise LeadmlError(f"--target {forced!r} is not a column; columns: {', '.join(profiles)}")
        return target_values(profiles[forced], "named with --target")
    candidates = [
        profile
        for profile in profiles.values()
        if TARGET_VALUES[0] <= profile.distinct <= TARGET_VALUES[1]
        and profile.filled >= 0.95 * profile.rows
        and profile.kind in (BOOLEAN, CATEGORICAL, INTEGER)
        and not profile.personal
    ]
    named = [profile for profile in candidates if TARGET_NAME.search(profile.name)]
    proposals = [target_values(profile, "named like an outcome") for profile in named]
    known = [target for target in proposals if target.positive and not target.notes]
    if known:
        return known[0]
    if proposals and proposals[0].positive:
        return proposals[0]
    binary = [profile for profile in candidates if profile.distinct == 2]
    if len(binary) == 1:
        return target_values(binary[0], "the only column with two values")
    return None


def target_values(profile: Profile, reason: str) -> Target:
    """Positive, negative and open values of a target column, with the counts as evidence."""
    positive, negative, open_, unsure = [], [], [], []
    for value, _ in profile.values if profile.distinct <= 8 else ():
        token = normalise_token(value)
        if token in POSITIVE_TOKENS:
            positive.append(value)
        elif token in NEGATIVE_TOKENS:
            negative.append(value)
        elif token in OPEN_TOKENS:
            open_.append(value)
        else:
            unsure.append(value)
    notes = []
    if not positive and unsure and len(unsure) + len(negative) == 2 and not open_:
        # two values and no known positive word: the rarer unknown one is the conversion (usually)
        rarer = min(unsure, key=lambda value: dict(profile.values)[value])
        positive.append(rarer)
        unsure.remove(rarer)
        notes.append(
            f"{rarer!r} taken as positive because it is the rarer value; swap if it is the other way round"
        )
    if unsure:
        shown = ", ".join(repr(value) for value in unsure)
        notes.append(
            f"{shown} under open (scored, never a label) because it names no outcome; move it to positive "
            "or negative if it is one"
        )
        if not negative and len(unsure) == 1 and positive:
            negative, unsure = unsure, []
            notes[-1] = f"{negative[0]!r} taken as negative: the only other value"
        open_ += unsure
    counts = dict(profile.values)
    shown_counts = ", ".join(f"{value} ({counts[value]:,} rows)" for value, _ in profile.values)
    why = f"{count_text(profile.distinct, 'value')}: {shown_counts}; {reason}"
    return Target(
        profile.name,
        tuple(_yaml_value(value) for value in positive),
        tuple(_yaml_value(value) for value in negative),
        tuple(_yaml_value(value) for value in open_),
        why,
        tuple(notes),
    )


def _yaml_value(value: str) -> Any:
    """A target value as the config writes it: whole numbers as numbers (``1``), text as written."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def choose_id(profiles: Mapping[str, Profile], frame: pd.DataFrame) -> Entry:
    """The lead id: a column filled in every row with no value twice, preferably named like an id
    and text; ``source_row`` (the row number) when there is none."""
    candidates = [
        profile
        for profile in profiles.values()
        if profile.unique and profile.kind in (TEXT, CATEGORICAL, INTEGER) and not profile.personal
    ]
    if not candidates:
        return Entry(
            SOURCE_ROW, "no column is filled in every row with no value twice: the row number is the id"
        )
    candidates.sort(
        key=lambda p: (
            not ID_NAME.search(p.name),
            p.kind == INTEGER and _follows_rows(frame[p.name]) is not None,
        )
    )
    chosen = candidates[0]
    return Entry(chosen.name, f"{chosen.rows:,} unique values, none missing: the id")


def _follows_rows(values: pd.Series) -> float | None:
    """Rank correlation of a column of numbers with the row number, when it is strong (None: it is not)."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or len(numbers) < 3:
        return None
    correlation = numbers.rank().corr(
        pd.Series(np.arange(len(numbers)), index=numbers.index, dtype="float64")
    )
    return float(correlation) if abs(correlation) >= ORDER_CORRELATION else None


def choose_time(profiles: Mapping[str, Profile]) -> tuple[Entry | None, tuple[Entry, ...]]:
    """The time column (as_of: when the lead arrived) and the other date columns (dropped).

    Of the date columns filled in at least 95% of rows, the one named like a creation date, else
    the one with the earliest values: a lead is scored when it arrives, so later dates (closed,
    last activity) are not known then. Every other date column is dropped: a flat table's
    features are its columns as they are, and a date is not a feature.
    """
    dates = [profile for profile in profiles.values() if profile.kind == TIMESTAMP]
    usable = [profile for profile in dates if profile.filled >= 0.95 * profile.rows]
    if not usable:
        return None, tuple(
            Entry(p.name, f"{p.detail}: too often missing to be the time column; {NOT_A_FEATURE}")
            for p in dates
        )
    usable.sort(
        key=lambda p: (not CREATED_NAME.search(p.name), bool(LATER_NAME.search(p.name)), p.median_date)
    )
    chosen = usable[0]
    reasons = []
    if CREATED_NAME.search(chosen.name):
        reasons.append("named like a creation date")
    if len(dates) > 1:
        reasons.append(
            f"the earliest of {len(dates)} date columns"
            if chosen.median_date == min(p.median_date for p in usable)
            else f"one of {len(dates)} date columns"
        )
    why = (
        f"{chosen.detail}"
        + (f"; {', '.join(reasons)}" if reasons else "")
        + ": when the lead arrived (as_of, split=time)"
    )
    dropped = tuple(
        Entry(p.name, f"{p.detail}: a date other than the time column; {NOT_A_FEATURE}")
        for p in dates
        if p.name != chosen.name
    )
    return Entry(chosen.name, why), dropped


def choose_order(profiles: Mapping[str, Profile], frame: pd.DataFrame, id_column: str) -> Entry | None:
    """Without a time column: what orders the rows in time, for split=order.

    An increasing unique number that follows the rows (``Lead Number``; rank correlation with the
    row number of at least 0.9 either way) or is named like one; else ``source_row`` when the file
    looks sorted by time (the id follows the rows, or a column's values recur in long runs as
    months do in a file in date order); else None (leadml-train then splits at random).
    """
    numbered = []
    for profile in profiles.values():
        if profile.kind != INTEGER or not profile.unique or profile.name == id_column:
            continue
        correlation = _follows_rows(frame[profile.name])
        if correlation is not None or ORDER_NAME.search(profile.name):
            numbered.append((profile, correlation))
    if numbered:
        numbered.sort(key=lambda item: -abs(item[1] or 0.0))
        profile, correlation = numbered[0]
        if correlation is None:
            why = "unique whole numbers named like a sequence number: the order the leads came in"
        else:
            way = "the rows" if correlation > 0 else "the rows backwards: the file lists the newest first"
            why = (
                f"unique whole numbers that follow {way} (rank correlation {correlation:+.2f} with the row "
                "number); the order the leads came in"
            )
        return Entry(profile.name, why + " (split=order)")
    if id_column != SOURCE_ROW:
        correlation = _follows_rows(frame[id_column])
        if correlation is not None and correlation > 0:
            why = f"the id {id_column} increases with the row number: the file is in arrival order"
            return Entry(SOURCE_ROW, why + " (split=order)")
    runs = _recurring_runs(profiles, frame)
    if runs is not None:
        return Entry(
            SOURCE_ROW, runs + ": the file looks sorted by time, so the row number orders it (split=order)"
        )
    return None


def _recurring_runs(profiles: Mapping[str, Profile], frame: pd.DataFrame) -> str | None:
    """Evidence that the rows are sorted by time: the column whose values come in the fewest runs
    against what shuffled rows would give (at most 5% of them), yet recur (more runs than values, as
    months do over several years). A column sorted alphabetically has one run per value and is no
    evidence; a nearly constant one has few runs shuffled too."""
    rows = len(frame)
    best: tuple[float, str] | None = None
    for profile in profiles.values():
        if profile.kind not in (CATEGORICAL, INTEGER) or profile.distinct < 2 or profile.filled < rows:
            continue
        values = frame[profile.name]
        runs = int((values != values.shift()).sum())
        shares = values.value_counts(normalize=True).to_numpy()
        shuffled = 1 + (rows - 1) * (1 - float((shares**2).sum()))
        ratio = runs / shuffled
        if (
            shuffled >= 50
            and profile.distinct < runs
            and ratio <= RUN_SHARE
            and (best is None or ratio < best[0])
        ):
            best = (
                ratio,
                f"{profile.name} comes in {runs:,} runs of its {profile.distinct:,} values over {rows:,} "
                f"rows (shuffled rows would give about {shuffled:,.0f})",
            )
    return best[1] if best else None


def family_of(column: str) -> str | None:
    """The feature family (source, engagement, fit) a column's name suggests; None: other."""
    for family, pattern in FAMILY_NAMES:
        if pattern.search(column):
            return family
    return None


def choose_outcomes(
    leads: pd.DataFrame,
    profiles: Mapping[str, Profile],
    time: Entry | None,
    events: pd.DataFrame,
    source: Source,
    first_path: Path,
) -> Outcomes:
    """An ``outcomes:`` block: the second file's column holding the leads' id values, and its date.

    The id is the leads' unique column that holds most of the second file's values (at least 90%:
    an outcome of an unknown lead is quarantined). The date is the second file's ISO date column,
    preferably named like the event (won, closed). ``horizon_days`` is the project's default 90,
    with the measured days from the leads' time to the event as evidence. ``observed_from``:
    when no outcome is dated before some day although leads start much earlier, and the leads
    before it converted within the horizon at under a fifth of the rate of those after, outcomes
    were not recorded yet: those leads are not labelled rather than taught as losses.
    """
    if time is None:
        raise LeadmlError(
            f"{first_path}: outcomes from a second file need this file's own time column (the horizon "
            "starts there), and none of its columns holds ISO 8601 dates"
        )
    link = _linked_columns(leads, profiles, events)
    if link is None:
        raise LeadmlError(
            f"{source.path}: no column holds the values of a unique column of the first file (its lead id), "
            "so it cannot label the leads"
        )
    lead_id, event_id, share = link
    event_profiles = {column: profile_column(column, events[column]) for column in events.columns}
    dates = [
        profile
        for profile in event_profiles.values()
        if profile.kind == TIMESTAMP and profile.filled >= 0.95 * profile.rows and profile.name != event_id
    ]
    if not dates:
        raise LeadmlError(
            f"{source.path}: no column holds ISO 8601 dates filled in every row: the outcome's date is "
            "needed to label leads within a horizon"
        )
    dates.sort(key=lambda p: (not EVENT_NAME.search(p.name), p.filled < p.rows, p.median_date))
    event_time = dates[0].name
    lead_times = pd.to_datetime(cleaned_text(leads[time.column]), format="ISO8601", utc=True, errors="coerce")
    lead_times.index = as_text(leads[lead_id])
    event_times = pd.to_datetime(
        cleaned_text(events[event_time]), format="ISO8601", utc=True, errors="coerce"
    )
    event_times.index = as_text(events[event_id])
    event_times = event_times[~event_times.index.duplicated()]
    why = [
        f"{event_id}: {share:.0%} of its {int(events[event_id].notna().sum()):,} values are {lead_id} values "
        f"of the first file (the lead id); {event_time}: {dates[0].detail}, the date of the outcome",
        *_horizon_evidence(lead_times, event_times),
    ]
    observed_from, evidence = _observed_from(lead_times, event_times)
    if evidence:
        why.append(evidence)
    return Outcomes(source, lead_id, event_id, event_time, HORIZON_DAYS, observed_from, tuple(why))


def _linked_columns(
    leads: pd.DataFrame, profiles: Mapping[str, Profile], events: pd.DataFrame
) -> tuple[str, str, float] | None:
    """(leads' id column, the events' column holding its values, the share held), the best pair."""
    best: tuple[str, str, float] | None = None
    for profile in profiles.values():
        if not profile.unique or profile.personal:
            continue
        ids = set(as_text(leads[profile.name]))
        for column in events.columns:
            present = as_text(events[column]).dropna()
            if present.empty:
                continue
            share = float(present.isin(ids).mean())
            if share >= 0.9 and (best is None or share > best[2]):
                best = (profile.name, str(column), share)
    return best


def _horizon_evidence(lead_times: pd.Series, event_times: pd.Series) -> list[str]:
    """Days from the lead's time to its outcome, as quantiles: the evidence for the horizon."""
    days = ((event_times - lead_times.reindex(event_times.index)).dt.total_seconds() / 86400).dropna()
    if days.empty:
        return []
    quantiles = days.quantile([0.5, 0.8, 0.9])
    within = float((days <= HORIZON_DAYS).mean())
    return [
        f"days from the lead's time to its outcome: median {quantiles[0.5]:.1f}, 80% {quantiles[0.8]:.1f}, "
        f"90% {quantiles[0.9]:.1f}; {HORIZON_DAYS} days (the project's default horizon) holds {within:.0%} "
        "of them: a lead is positive when its outcome comes within horizon_days of its time"
    ]


def _observed_from(lead_times: pd.Series, event_times: pd.Series) -> tuple[str | None, str | None]:
    """The day outcomes begin to be recorded, when the leads before it look unobserved (see
    :func:`choose_outcomes`); (None, None) otherwise."""
    first_event = event_times.min()
    if pd.isna(first_event):
        return None, None
    day = first_event.normalize()
    before = lead_times < day
    if before.mean() < 0.05 or lead_times.min() > day - pd.Timedelta(days=30):
        return None, None
    delay = event_times.reindex(lead_times.index) - lead_times
    won = (delay >= pd.Timedelta(0)) & (delay <= pd.Timedelta(days=HORIZON_DAYS))
    rate_before, rate_after = float(won[before].mean()), float(won[~before].mean())
    if rate_after == 0 or rate_before >= rate_after / 5:
        return None, None
    return f"{day:%Y-%m-%d}", (
        f"observed_from: no outcome is dated before {day:%Y-%m-%d} although leads start "
        f"{lead_times.min():%Y-%m-%d}, and the {int(before.sum()):,} leads before it have an outcome within "
        f"{HORIZON_DAYS} days at {rate_before:.1%} against {rate_after:.1%} after it: outcomes were not "
        "recorded yet, so those leads are not labelled (null labels them, as losses)"
    )


def propose(
    frame: pd.DataFrame,
    source: Source,
    name: str,
    *,
    target: str | None = None,
    events: pd.DataFrame | None = None,
    events_source: Source | None = None,
) -> Proposal:
    """The data config for ``frame`` (read from ``source``), before it is checked (see :func:`check`).

    ``events`` (read from ``events_source``): a second table of dated outcomes (won deals) that
    labels the leads instead of a target column.
    """
    raw_profiles = {str(column): profile_column(str(column), frame[column]) for column in frame.columns}
    markers = placeholder_markers(raw_profiles) + number_markers(raw_profiles)
    marker_values = [entry.column for entry in markers]
    profiles = {
        column: profile_column(column, frame[column], marker_values) if marker_values else profile
        for column, profile in raw_profiles.items()
    }
    drop: list[Entry] = []
    reserved = [column for column in profiles if column in RESERVED or not column.strip()]
    for column in reserved:
        drop.append(
            Entry(column, "a column leadml adds under this name (or one without a name) cannot be kept")
        )
        profiles.pop(column)
    time, other_dates = choose_time(profiles)
    outcomes = None
    if events is not None and events_source is not None:
        outcomes = choose_outcomes(frame, profiles, time, events, events_source, source.path)
        proposed_target = None
        id_entry = Entry(
            outcomes.lead_id,
            f"{len(frame):,} unique values, none missing, and the outcomes' ids are its values: the id",
        )
    else:
        proposed_target = choose_target(profiles, target)
        if proposed_target is None:
            raise LeadmlError(
                f"{source.path}: no column looks like the outcome (2 to 5 values, named like status, "
                "converted, won, outcome, stage or y, or the only yes/no column): name it with --target "
                "COLUMN, or give the outcomes (won deals: the lead id and a date) as a second file"
            )
        id_entry = choose_id(profiles, frame)
    order = None if time is not None else choose_order(profiles, frame, id_entry.column)
    taken = {id_entry.column, time.column if time else None, order.column if order else None}
    if proposed_target is not None:
        taken.add(proposed_target.column)
    drop += list(other_dates)
    rest = [profile for column, profile in profiles.items() if column not in taken | {e.column for e in drop}]
    groups, dropped, notes = grouped(rest)
    families = {
        entry.column: family
        for group in ("boolean", "integer", "numeric", "categorical")
        for entry in groups.get(group, ())
        if (family := family_of(entry.column))
    }
    return Proposal(
        name=name,
        source=source,
        rows=len(frame),
        columns=frame.shape[1],
        id=id_entry,
        target=proposed_target,
        outcomes=outcomes,
        time=time,
        order=order,
        drop=(*drop, *dropped),
        groups=groups,
        missing_markers=markers,
        missing_notes=notes,
        families=families,
    )


def grouped(
    profiles: Iterable[Profile],
) -> tuple[dict[str, tuple[Entry, ...]], tuple[Entry, ...], tuple[str, ...]]:
    """The contract groups of the columns that are not id, target or time (each with its evidence),
    the columns to drop with the reason, and the commented missing-value proposals."""
    groups: dict[str, list[Entry]] = {group: [] for group in GROUPS}
    dropped: list[Entry] = []
    notes: list[str] = []
    for profile in profiles:
        placed = _place(profile)
        if isinstance(placed, Entry):
            dropped.append(placed)
            continue
        groups[placed].append(Entry(profile.name, profile.detail))
        if note := _maybe_missing_note(profile):
            notes.append(note)
    return (
        {group: tuple(entries) for group, entries in groups.items() if entries},
        tuple(dropped),
        tuple(notes),
    )


def _place(profile: Profile) -> str | Entry:
    """The contract group of a column that is not id, target or time, or an Entry to drop it."""
    if profile.personal:
        return "personal"
    if profile.kind == EMPTY:
        return Entry(profile.name, "empty in every row")
    if profile.kind == CONSTANT:
        return Entry(profile.name, f"{profile.detail}: carries nothing")
    if profile.kind == TEXT:
        return Entry(profile.name, f"{profile.detail}: free text or a key, no use as a category")
    if profile.kind == DATE_TEXT:
        return Entry(
            profile.name,
            f"{profile.detail}: the contract reads ISO 8601 dates (2024-02-13) only; {NOT_A_FEATURE}",
        )
    if profile.kind == DECIMAL_COMMA:
        return Entry(
            profile.name,
            f"{profile.detail}: the contract reads a decimal point only; write it with one to keep it",
        )
    if profile.kind == INTEGER and profile.unique:
        return Entry(profile.name, "unique whole numbers in every row: a key, not a feature")
    return {BOOLEAN: "boolean", INTEGER: "integer", NUMERIC: "numeric"}.get(profile.kind, "categorical")


def _maybe_missing_note(profile: Profile) -> str | None:
    """A commented proposal for a value that may mean "missing" (conservative: never applied)."""
    if profile.maybe_missing and profile.kind in (CATEGORICAL, BOOLEAN):
        return f"{profile.name}: [{', '.join(yaml_scalar(value) for value in profile.maybe_missing)}]"
    if profile.sentinel and profile.kind in (INTEGER, NUMERIC):
        value = profile.sentinel.split(" ")[0].replace(",", "")
        return f"{profile.name}: [{value}]  # {profile.sentinel}"
    return None
