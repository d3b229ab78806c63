"""``leadml-init`` checks its proposal: ingested in memory, the leakage sentinel on its label, the
split and the bad-row share fitted to the file."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from leadml.data import schema as s
from leadml.data.config_yaml import render
from leadml.data.contracts import (
    SETTINGS_KEYS,
    IngestSettings,
    flat_contract,
)
from leadml.data.features import LABEL, flat_feature_metadata, flat_snapshots
from leadml.data.flat import ingest_flat
from leadml.data.profiles import (
    DEFAULT_WINDOW_MONTHS,
    MAX_BAD_SHARE,
    MIN_POSITIVES,
    MIN_SNAPSHOTS,
    TRAIN_SHARE,
    Entry,
    Proposal,
    as_number,
    count_text,
    shown_text,
)
from leadml.modelling.guards import OutcomeLevelSettings, leakage_report, outcome_coded_levels, value_bins

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checked:
    """What ingestion made of the proposal: rows, labels, bad shares and the training rows."""

    input_rows: int
    accepted_rows: int
    labelled: int
    positives: int
    open_rows: int
    excluded_rows: int
    bad_shares: Mapping[str, float]
    reasons: Mapping[str, Mapping[str, int]]
    snapshots: pd.DataFrame


def data_section(text: str) -> dict[str, Any]:
    """The ``data`` mapping a written config gives (as Hydra reads the YAML: through OmegaConf)."""

    values = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    assert isinstance(values, dict)
    return dict(values["data"]) if "data" in values and isinstance(values["data"], dict) else dict(values)


def check(text: str, frame: pd.DataFrame, events: pd.DataFrame | None = None) -> Checked:
    """Run the written config's contract over the frames in memory, as ``leadml-ingest`` would, and
    build the training rows as ``leadml-features`` would (nothing is written)."""

    data = data_section(text)
    contract = flat_contract(data["contract"], data.get("outcomes"))
    settings = IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})
    result = ingest_flat(
        frame,
        contract,
        settings,
        source=str(data["table"]["path"]),
        enforce_bad_share=False,
        outcomes=events if contract.outcomes is not None else None,
    )
    table = result.tables[contract.table.name]
    snapshots = flat_snapshots(table, personal=data["contract"].get("personal") or ())
    report = result.reports[contract.table.name]
    open_rows = sum(len(rows) for rows in result.open_rows.values())
    return Checked(
        input_rows=report.input_rows,
        accepted_rows=report.accepted_rows,
        labelled=len(table),
        positives=int(table[LABEL].sum()),
        open_rows=open_rows,
        excluded_rows=report.excluded_rows,
        bad_shares={name: float(item.bad_share) for name, item in result.reports.items()},
        reasons={name: dict(item.reason_counts) for name, item in result.reports.items()},
        snapshots=snapshots,
    )


def suspects(snapshots: pd.DataFrame) -> tuple[list[Entry], str]:
    """The features that look filled in after the outcome, with the leakage sentinel's evidence;
    and a line naming the strongest features kept.

    The sentinel's own report (:func:`leadml.modelling.guards.leakage_report`, its default thresholds) on
    every labelled row: single-feature AUC above 0.95, filled for most positives and few
    negatives, or a category with 10% of its rows in levels whose outcome is all but certain. The
    last test is applied to numbers too, on the sentinel's quantile bins (:func:`value_bins`): a
    range of values that nearly fixes the outcome (bank's call ``duration``: no call under a
    minute ends in a subscription) is what a value recorded at the outcome looks like. Training
    leaves numbers to the AUC test; here it is a proposal the user reviews.
    """
    meta = flat_feature_metadata(snapshots, {})
    if not meta or snapshots[LABEL].nunique() < 2:
        return [], ""
    report = leakage_report(snapshots, meta, label=LABEL, group_column=s.LEAD_ID)
    labels = snapshots[LABEL].to_numpy(dtype="float64")
    found: list[Entry] = []
    kept: list[str] = []
    for row in report.itertuples():
        name = str(row.feature)
        shares = f"{row.present_positive:.0%} of positive rows and {row.present_negative:.0%} of the others"
        presence = f"filled for {shares}"
        evidence = [f"single-feature AUC {row.auc:.2f}"] if row.too_predictive else []
        if row.post_outcome:
            evidence.append(presence)
        if row.outcome_coded:
            levels = str(row.outcome_levels).split("; ")
            rates = _level_rates(snapshots[name], labels, levels)
            evidence.append(
                f"{row.outcome_levels_share:.0%} of rows in levels that name the outcome ({rates})"
            )
        elif row.kind == "numeric":
            bins = pd.Series(value_bins(snapshots[name], "numeric"), index=snapshots.index)
            share, levels = outcome_coded_levels(bins, labels, OutcomeLevelSettings())
            if share >= OutcomeLevelSettings().max_share:
                rates = _range_rates(snapshots[name], bins, labels, levels)
                evidence.append(f"{share:.0%} of rows in value ranges that name the outcome ({rates})")
        if not evidence:
            if len(kept) < 3:
                kept.append(f"{name} {row.strength:.2f}")
            continue
        if not row.too_predictive:
            evidence.insert(0, f"single-feature AUC {row.auc:.2f}")
        if not row.post_outcome and abs(row.present_positive - row.present_negative) >= 0.1:
            evidence.append(presence)
        found.append(Entry(name, "; ".join(evidence)))
    strongest = f"the strongest kept, by single-feature max(AUC, 1 - AUC): {', '.join(kept)}" if kept else ""
    return found, strongest


def _level_rates(values: pd.Series, labels: np.ndarray, levels: Sequence[str], shown: int = 4) -> str:
    """The first outcome-coded levels of a category with their positive rate."""
    text = values.astype("string").fillna("(missing)").to_numpy()
    rates = pd.Series(labels).groupby(text).mean()
    parts = [f"{shown_text(level)} {rates.get(level, float('nan')):.0%} positive" for level in levels[:shown]]
    return ", ".join(parts) + (f" and {len(levels) - shown} more" if len(levels) > shown else "")


def _range_rates(
    values: pd.Series, bins: pd.Series, labels: np.ndarray, levels: Sequence[str], shown: int = 3
) -> str:
    """Value ranges of the outcome-coded bins with their positive rate; neighbouring bins that name
    the same outcome (both nearly all positive, or both nearly none) are merged into one range."""
    missing_bin = int(bins[values.isna()].iloc[0]) if values.isna().any() else None
    base = float(labels.mean())
    high = {int(level): bool(labels[(bins == int(level)).to_numpy()].mean() > base) for level in levels}
    runs: list[list[int]] = []
    for code in sorted(high):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and code == last + 1
            and missing_bin not in (code, last)
            and high[code] == high[last]
        ):
            runs[-1].append(code)
        else:
            runs.append([code])
    parts = []
    for run in runs:
        rows = bins.isin(run).to_numpy()
        rate = float(labels[rows].mean())
        if run == [missing_bin]:
            parts.append(f"missing: {rate:.1%} positive")
        else:
            inside = values[rows]
            parts.append(f"{as_number(inside.min())} to {as_number(inside.max())}: {rate:.1%} positive")
    return ", ".join(parts[:shown]) + (f" and {len(parts) - shown} more" if len(parts) > shown else "")


def finish(
    proposal: Proposal, frame: pd.DataFrame, events: pd.DataFrame | None = None
) -> tuple[Proposal, str]:
    """Check the proposal through ingestion, measure the suspicious columns on the label it gives,
    size the split and the bad-row threshold to the data; the final proposal and its YAML."""
    first = check(render(proposal), frame, events)
    found, strongest = suspects(first.snapshots)
    proposal = _without(proposal, found)
    proposal = replace(proposal, suspects=tuple(found), kept_strongest=strongest)
    proposal = _with_bad_share(proposal, first)
    proposal = _with_split(proposal, first)
    text = render(proposal)
    final = check(text, frame, events)
    proposal = replace(proposal, notes=_notes(proposal, final))
    return proposal, render(proposal)


def _without(proposal: Proposal, dropped: Sequence[Entry]) -> Proposal:
    """The proposal with ``dropped`` columns out of the groups, families and missing-value notes."""
    names = {entry.column for entry in dropped}
    groups = {
        group: kept
        for group, entries in proposal.groups.items()
        if (kept := tuple(entry for entry in entries if entry.column not in names))
    }
    return replace(
        proposal,
        groups=groups,
        families={column: family for column, family in proposal.families.items() if column not in names},
        missing_notes=tuple(note for note in proposal.missing_notes if note.split(":")[0] not in names),
    )


def _with_bad_share(proposal: Proposal, checked: Checked) -> Proposal:
    """Raise ``max_bad_share`` above the share the file has, saying which reasons quarantine rows."""
    worst = max(checked.bad_shares.values(), default=0.0)
    if worst <= MAX_BAD_SHARE:
        return proposal
    reasons = {reason: count for table in checked.reasons.values() for reason, count in table.items()}
    top = ", ".join(
        f"{reason} ({count:,})" for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:3]
    )
    share = math.ceil(worst * 100 + 1) / 100
    why = (
        f"{worst:.1%} of the rows break the contract ({top}): above the default {MAX_BAD_SHARE:.0%}, so "
        f"set to {share:.2f}; look at quarantine/ after ingest"
    )
    return replace(proposal, max_bad_share=share, bad_share_why=why)


def _with_split(proposal: Proposal, checked: Checked) -> Proposal:
    """Shorter time windows when the labelled rows span less than a year (the default test and
    calibration windows are 3 months each, which would leave little or nothing to train on)."""
    if proposal.time is None or s.AS_OF not in checked.snapshots.columns or checked.snapshots.empty:
        return proposal
    times = checked.snapshots[s.AS_OF]
    months = (times.max() - times.min()).days / 30.44
    if months >= 4 * DEFAULT_WINDOW_MONTHS:
        return proposal
    window = max(1, min(DEFAULT_WINDOW_MONTHS, int(months // 4)))
    why = (
        f"the labelled rows span {months:.1f} months ({times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}): "
        f"test and calibration windows of {count_text(window, 'month')} each leave the rest to train on "
        f"(the default is {DEFAULT_WINDOW_MONTHS} months each)"
    )
    return replace(proposal, split={"test_months": window, "calibration_months": window}, split_why=why)


def _notes(proposal: Proposal, checked: Checked) -> tuple[str, ...]:
    rate = checked.positives / checked.labelled if checked.labelled else 0.0
    quarantined = checked.input_rows - checked.accepted_rows - checked.excluded_rows
    line = (
        f"Checked through the contract: {checked.accepted_rows:,} of {checked.input_rows:,} rows accepted"
        + (f", {quarantined:,} quarantined" if quarantined else "")
        + (f", {checked.excluded_rows:,} not labelled" if checked.excluded_rows else "")
        + f"; {checked.labelled:,} labelled, {checked.positives:,} positive ({rate:.1%})"
        + (f", {checked.open_rows:,} open" if checked.open_rows else "")
        + "."
    )
    notes = [line]
    train_rows, train_positives = checked.labelled * TRAIN_SHARE, checked.positives * TRAIN_SHARE
    if train_rows < MIN_SNAPSHOTS or train_positives < MIN_POSITIVES:
        notes.append(
            f"Small for training: about {train_rows:,.0f} rows and {train_positives:,.0f} positives fall in "
            f"the training window, and leadml-train asks for {MIN_SNAPSHOTS:,} and {MIN_POSITIVES:,} "
            "(guards.min_snapshots, guards.min_positives); lower them knowing the model will be less reliable"
        )
    return tuple(notes)
