"""The leadership report's "Accounts" section and the ranked accounts CSV, from a night's account rows.

Pure functions: the account partition (``leadml.scoring.account_scores``) and the CRM's accounts
table in; the rows the page shows, its summary sentences and the CSV out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.modelling.accounts import (
    ACCOUNT_PROBABILITY,
    CHANGE,
    EXPECTED_REVENUE,
    MAX,
    N_ENGAGED,
    N_LEADS,
)
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.reporting.leadership import inert_in_spreadsheets

REASONS_SHOWN = 2  # groups named per account on the page, for and against (the CSV has every one)


@dataclass(frozen=True)
class AccountSection:
    """What the page shows of tonight's accounts."""

    rows: list[dict[str, Any]]  # the top accounts, most likely first
    accounts: int
    several: int  # accounts with more than one open lead
    expected_won: float  # the sum of the account probabilities
    lift_from_several: float | None  # several leads: mean account minus mean best-lead probability
    history: str  # what history said about the leads of one account, in a sentence
    engaged_probability: float | None  # a lead at or above it counts as engaged


def account_section(
    rows: pd.DataFrame,
    names: pd.DataFrame | None,
    summary: Mapping[str, Any],
    top: int,
    engaged_probability: float | None = None,
) -> AccountSection:
    """The ``top`` accounts of ``rows`` (one night's account partition) with their company names
    (``names``: the CRM accounts table; None: ids only) and the figures the section's text states."""
    key = s.ACCOUNT_ID
    shown = with_names(rows.head(top), names, key)
    several = rows[rows[N_LEADS] > 1]
    lift = float(several[ACCOUNT_PROBABILITY].mean() - several[MAX].mean()) if len(several) else None
    return AccountSection(
        rows=[_page_row(row, key) for row in shown.to_dict("records")],
        accounts=len(rows),
        several=len(several),
        expected_won=float(rows[ACCOUNT_PROBABILITY].sum()),
        lift_from_several=lift,
        history=history_sentence(summary),
        engaged_probability=engaged_probability,
    )


def history_sentence(summary: Mapping[str, Any]) -> str:
    """What training measured about the leads of one account (``summary``: the run record's
    ``accounts``, whose ``correction`` is :func:`leadml.modelling.accounts.describe_fit`'s note)."""
    note = str(summary.get("correction") or "")
    if not summary.get("correction_fitted"):
        return (
            "History held too few accounts to measure how the leads of one company move together, "
            "so they are rolled up as if independent."
        )
    found = note.rpartition("): ")[2] or note
    return f"History: {found}."


def with_names(rows: pd.DataFrame, names: pd.DataFrame | None, key: str) -> pd.DataFrame:
    """``rows`` with the company's name next to its key (the CRM accounts table), when known."""
    if names is None or key not in names.columns or s.COMPANY_NAME not in names.columns:
        return rows
    lookup = names.drop_duplicates(key).set_index(key)[s.COMPANY_NAME]
    named = rows.copy()
    named.insert(rows.columns.get_loc(key) + 1, s.COMPANY_NAME, lookup.reindex(rows[key]).to_numpy())
    return named


def _page_row(row: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {
        "rank": int(row["rank"]),
        "account": str(row[key]),
        "company": _text(row.get(s.COMPANY_NAME)),
        "probability": float(row[ACCOUNT_PROBABILITY]),
        "change": _finite(row.get(CHANGE)),
        "trend": _text(row.get("trend")),
        "leads": int(row[N_LEADS]),
        "engaged": int(row[N_ENGAGED]),
        "best_lead": float(row[MAX]),
        "expected_revenue": _finite(row.get(EXPECTED_REVENUE)),
        "reasons": _named(row, "reason"),
        "against": _named(row, "against"),
    }


def _named(row: Mapping[str, Any], prefix: str) -> list[str]:
    found = (_text(row.get(f"{prefix}_{i}")) for i in range(1, REASONS_SHOWN + 1))
    return [name for name in found if name]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def accounts_csv(rows: pd.DataFrame, names: pd.DataFrame | None) -> pd.DataFrame:
    """The ranked accounts for a CRM import: every account, its company name when known, no
    per-group sums (the reasons name them), probabilities rounded to four places, money to whole
    units, text that a spreadsheet would run as a formula made inert."""
    named = with_names(rows, names, s.ACCOUNT_ID)
    out = named[[c for c in named.columns if not c.startswith(GROUP_PREFIX)]].copy()
    for column in out.columns:
        if column == s.AS_OF:
            out[column] = pd.to_datetime(out[column], utc=True).dt.strftime("%Y-%m-%d")
        elif column == EXPECTED_REVENUE:
            out[column] = out[column].round(0).astype("Int64")
        elif pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].round(4)
        elif not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = inert_in_spreadsheets(out[column])
    return out
