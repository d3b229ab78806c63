"""The commented YAML of a proposed flat data config (leadml-init), as text (pure)."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import Iterable
from typing import Any

from omegaconf import OmegaConf

from leadml.data.profiles import (
    GROUPS,
    Outcomes,
    Proposal,
    Source,
    count_text,
)

logger = logging.getLogger(__name__)


YAML_WIDTH = 100

_PLAIN_SCALAR = re.compile(r"[A-Za-z_/][A-Za-z0-9 _./()+-]*[A-Za-z0-9_.)]|[A-Za-z_]")


def yaml_scalar(value: Any) -> str:
    """A YAML scalar that reads back (through OmegaConf, as Hydra reads it) as exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN_SCALAR.fullmatch(text) and ": " not in text and " #" not in text and _reads_back(text):
        return text
    return json.dumps(text.replace("${", "\\${"), ensure_ascii=False)


def _reads_back(text: str) -> bool:

    try:
        return OmegaConf.create(f"k: {text}\n")["k"] == text
    except Exception:  # anything OmegaConf cannot read as a plain scalar is quoted instead
        return False


def flow_list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(yaml_scalar(value) for value in values) + "]"


def _comment(text: str, indent: str, width: int = YAML_WIDTH) -> list[str]:
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}# ",
        break_on_hyphens=False,
    ) or [f"{indent}#"]


def _item(value: Any, why: str, indent: str) -> list[str]:
    """A block list item with its reason: on the same line when short, else on the lines above."""
    line = f"{indent}- {yaml_scalar(value)}"
    if len(line) + len(why) + 4 <= YAML_WIDTH:
        return [f"{line}  # {why}"]
    return [*_comment(why, indent), line]


def _key(key: str, value: str, why: str, indent: str) -> list[str]:
    line = f"{indent}{key}: {value}"
    if not why:
        return [line]
    if len(line) + len(why) + 4 <= YAML_WIDTH:
        return [f"{line}  # {why}"]
    return [*_comment(why, indent), line]


def render(proposal: Proposal) -> str:
    """The commented YAML of a proposal (a global package when it chooses the split)."""
    lines = _header(proposal)
    indent = ""
    if proposal.global_package:
        lines.insert(0, "# @package _global_")
        if proposal.order is not None:
            lines += ["defaults:", "  - override /split: order", ""]
        if proposal.split:
            lines += _comment(proposal.split_why, "")
            lines.append("split:")
            lines += [f"  {key}: {value}" for key, value in proposal.split.items()]
            lines.append("")
        lines.append("data:")
        indent = "  "
    lines += _data_lines(proposal, indent)
    return "\n".join(lines) + "\n"


def _header(proposal: Proposal) -> list[str]:
    source = proposal.source
    how = ", ".join(source.notes)
    text = [
        f"Data set {proposal.name}, proposed by leadml-init from {source.path.name} ({proposal.rows:,} rows, "
        f"{proposal.columns:,} columns; {how}). Each entry says why it was proposed: read them and edit "
        f"what is wrong; as it is, it trains: leadml-train data={proposal.name}.",
        *proposal.notes,
    ]
    if proposal.global_package:
        what = "choose split=order: there is no time column" if proposal.order else "set the split's windows"
        text.append(f"A global package, so that it can {what}; the data settings are under data:.")
    lines = []
    for paragraph in text:
        lines += _comment(paragraph, "")
    return [*lines, ""]


def _data_lines(proposal: Proposal, indent: str) -> list[str]:
    inner = indent + "  "
    lines = [f"{indent}name: {yaml_scalar(proposal.name)}", f"{indent}kind: flat"]
    lines += _key("timezone", "UTC", "timestamps without an offset are read in this zone", indent)
    lines += _key(
        "max_bad_share",
        f"{proposal.max_bad_share:g}",
        proposal.bad_share_why or "share of rows the contract may quarantine",
        indent,
    )
    if proposal.missing_markers:
        reasons = "; ".join(entry.why for entry in proposal.missing_markers)
        lines += _comment(f"read as missing in every column: {reasons}", indent)
        lines.append(
            f"{indent}missing_markers: {flow_list(entry.column for entry in proposal.missing_markers)}"
        )
    lines.append(f"{indent}table:")
    lines += _table_lines(proposal.source, inner)
    lines.append(f"{indent}contract:")
    lines += _contract_lines(proposal, inner)
    if proposal.outcomes is not None:
        lines += _outcomes_lines(proposal.outcomes, indent)
    if proposal.families:
        lines += _comment(
            "feature families (reports group reasons and sub-scores by them), guessed from the column "
            "names; the rest is other",
            indent,
        )
        lines.append(f"{indent}families:")
        lines += [f"{inner}{yaml_scalar(column)}: {family}" for column, family in proposal.families.items()]
    return lines


def _table_lines(source: Source, indent: str) -> list[str]:
    lines = _comment(
        "the file by its absolute path, so that leadml finds it whatever folder it runs in (a cron job, "
        "a config kept elsewhere); write it relative to that folder to move the project with its data",
        indent,
    )
    spec = source.spec()
    lines.append(f"{indent}format: {spec['format']}")
    lines.append(f"{indent}path: {yaml_scalar(spec['path'])}")
    for key in ("sep", "encoding", "sheet"):
        if key in spec:
            lines.append(f"{indent}{key}: {json.dumps(spec[key], ensure_ascii=False)}")
    return lines


def _contract_lines(proposal: Proposal, indent: str) -> list[str]:
    item = indent + "  "
    lines = _key("id", yaml_scalar(proposal.id.column), proposal.id.why, indent)
    target = proposal.target
    if target is not None:
        lines += _key("target", yaml_scalar(target.column), target.why, indent)
        lines += _key("positive", flow_list(target.positive), "converted", indent)
        lines += _key("negative", flow_list(target.negative), "did not convert", indent)
        if target.open:
            lines += _key(
                "open", flow_list(target.open), "still open: never labels, scored every night", indent
            )
        for note in target.notes:
            lines += _comment(f"unsure: {note}", indent)
    if proposal.time is not None:
        lines += _key("time", yaml_scalar(proposal.time.column), proposal.time.why, indent)
    elif proposal.order is not None:
        lines += _key("order", yaml_scalar(proposal.order.column), proposal.order.why, indent)
    else:
        lines += _comment(
            "no time or order: no column holds ISO 8601 dates or a sequence number and the rows do not look "
            "sorted, so leadml-train splits the leads at random (the test figures are not out of time); add "
            "order: source_row if the file lists the leads in the order they came",
            indent,
        )
    if proposal.kept_strongest:
        flagged = (
            f"{count_text(len(proposal.suspects), 'column')} flagged" if proposal.suspects else "none flagged"
        )
        lines += _comment(
            f"the leakage sentinel's measures on every labelled row: {flagged}; {proposal.kept_strongest}",
            indent,
        )
    if proposal.suspects or proposal.drop:
        lines.append(f"{indent}drop:")
        if proposal.suspects:
            lines += _comment(
                "looks filled in after the outcome (move it back to a group if it is known when the lead "
                "arrives):",
                item,
            )
            for entry in proposal.suspects:
                lines += _item(entry.column, entry.why, item)
        for entry in proposal.drop:
            lines += _item(entry.column, entry.why, item)
    for group in GROUPS:
        entries = proposal.groups.get(group, ())
        if not entries:
            continue
        if group == "personal":
            lines += _comment("personal data: validated, never a feature", indent)
        lines.append(f"{indent}{group}:")
        for entry in entries:
            lines += _item(entry.column, entry.why, item)
    if proposal.missing_notes:
        lines += _comment("missing_values:", indent)
        lines += _comment(
            "unsure: these may stand for 'missing' or be answers of their own; uncomment to read them "
            "as missing",
            item,
        )
        lines += [f"{item}# {note}" for note in proposal.missing_notes]
    return lines


def _outcomes_lines(outcomes: Outcomes, indent: str) -> list[str]:
    inner = indent + "  "
    lines = _comment("the label: an outcome (won deal) in a second table, joined by the id", indent)
    for why in outcomes.why:
        lines += _comment(why, indent)
    lines.append(f"{indent}outcomes:")
    lines.append(f"{inner}table:")
    lines += _table_lines(outcomes.source, inner + "  ")
    lines.append(f"{inner}id: {yaml_scalar(outcomes.id)}")
    lines.append(f"{inner}time: {yaml_scalar(outcomes.time)}")
    lines.append(f"{inner}horizon_days: {outcomes.horizon_days}")
    observed = json.dumps(outcomes.observed_from) if outcomes.observed_from else "null"
    lines += _key("observed_from", observed, "leads before it are not labelled", inner)
    lines += _key("observed_until", "null", "the latest timestamp in either table", inner)
    return lines
