"""Tonight's account rows: the scored leads of each account rolled up, corrected and trended.

The roll-up itself (:mod:`leadml.modelling.accounts`) is pure arithmetic on lead rows; this
module turns one night's scored partition into what a B2B sales team reads per account: the
probability that at least one of its open leads converts within the horizon (corrected for the
dependence training measured), expected revenue, open and engaged leads, the groups that lift and
hold back the account in words, and the change since the previous night.

Both engines write the same lead partition, so the account rows are built from it (its
``lead_id``, ``probability``, ``expected_value`` and ``group:*`` columns) by this one code path.
Under an experiment the visible ``probability`` is rolled up: a lead of an arm that hides its
score (a holdout) has none and is left out, so an account row never reveals a hidden score, and
each shown lead counts with the probability its arm's model gave it (every arm's model is
calibrated, so the roll-up stays a probability).
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
    AGAINST,
    CHANGE,
    EXPECTED_REVENUE,
    EXPECTED_VALUE,
    INDEPENDENT,
    MAX,
    N_ENGAGED,
    N_LEADS,
    REASON,
    SUM,
    AccountSettings,
    DependenceCorrection,
    account_rows,
    account_trend,
    apply_dependence,
    with_account_key,
)
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.modelling.scorer import PROBABILITY
from leadml.scoring.scores import TREND_DOWN, TREND_NEW, TREND_STEADY, TREND_UP

TREND = "trend"
PREVIOUS = "previous_probability"
RANK = "rank"
# the lead partition's columns an account row is built from (plus group:*, read when present)
LEAD_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.AS_OF, PROBABILITY, EXPECTED_VALUE)


@dataclass(frozen=True)
class AccountNight:
    """One night's account rows and what the run record keeps of them."""

    key: str  # the account key column (account_id, or a flat table's e-mail domain)
    rows: pd.DataFrame  # one row per account with a scored open lead, highest probability first
    leads: int  # open leads rolled up (with an account and a shown probability)
    leads_without_account: int  # shown leads without an account key: scored as leads only
    hidden_leads: int  # leads of an arm that hides its score: not in any account row
    correction: str  # the dependence correction's note (from training)
    fitted: bool  # whether history had enough accounts to fit it (False: the independence roll-up)

    def summary(self) -> dict[str, Any]:
        """The run record's ``accounts`` entry and the MLflow figures' source: plain values."""
        rows = self.rows
        several = int((rows[N_LEADS] > 1).sum()) if len(rows) else 0
        return {
            "accounts": len(rows),
            "accounts_with_several_leads": several,
            "leads": self.leads,
            "leads_without_account": self.leads_without_account,
            "hidden_leads": self.hidden_leads,
            "expected_accounts_won": float(rows[ACCOUNT_PROBABILITY].sum()) if len(rows) else 0.0,
            "engaged_leads": int(rows[N_ENGAGED].sum()) if len(rows) else 0,
            "trend": {str(k): int(v) for k, v in rows[TREND].value_counts().sort_index().items()},
            "correction": self.correction,
            "correction_fitted": self.fitted,
        }


def account_state(scorer: Any) -> Mapping[str, Any]:
    """The scorer's account state (``LeadScorer.accounts``), empty for a model without one."""
    return getattr(scorer, "accounts", None) or {}


def score_accounts(
    leads: pd.DataFrame,
    keys: pd.DataFrame,
    state: Mapping[str, Any],
    *,
    before: pd.DataFrame | None = None,
    words: Mapping[str, str] | None = None,
    steady_band: float = 0.02,
    top_reasons: int = 3,
) -> AccountNight:
    """Tonight's account rows of the scored lead rows ``leads`` (a partition's :data:`LEAD_COLUMNS`
    and ``group:*`` columns).

    ``keys``: ``lead_id`` -> the account key (``state["key"]``), one row per lead; ``state``: the
    model's account state (:meth:`~leadml.modelling.accounts.AccountEvaluation.state`): the key, the
    engaged threshold and the correction fitted on history; ``before``: the previous night's
    account rows (the trend; None: every account is new); ``words``: each group's name in words
    (``leadml.scoring.scores.movement_words``), for the reasons a sales manager reads.
    """
    key = str(state["key"])
    settings = AccountSettings(
        key=key, engaged_probability=float(state["engaged_probability"]), top_reasons=top_reasons
    )
    correction = DependenceCorrection.from_dict(state["correction"])
    shown = leads[leads[PROBABILITY].notna()]
    keyed = with_account_key(shown, keys, key)
    has_key = keyed[key].notna().to_numpy()
    rows = apply_dependence(account_rows(keyed[has_key], settings), correction)
    rows[CHANGE] = account_trend(rows, before, key)
    rows[PREVIOUS] = rows[ACCOUNT_PROBABILITY] - rows[CHANGE]
    rows[TREND] = np.select(
        [rows[CHANGE].isna(), rows[CHANGE] > steady_band, rows[CHANGE] < -steady_band],
        [TREND_NEW, TREND_UP, TREND_DOWN],
        default=TREND_STEADY,
    )
    rows = _worded(rows, words or {})
    rows = rows.sort_values([ACCOUNT_PROBABILITY, key], ascending=[False, True], kind="stable")
    rows.insert(0, RANK, np.arange(1, len(rows) + 1, dtype=np.int64))
    return AccountNight(
        key=key,
        rows=_ordered(rows.reset_index(drop=True), key),
        leads=int(has_key.sum()),
        leads_without_account=int((~has_key).sum()),
        hidden_leads=len(leads) - len(shown),
        correction=str(correction.note),
        fitted=correction.fitted,
    )


def _worded(rows: pd.DataFrame, words: Mapping[str, str]) -> pd.DataFrame:
    """The reason and against columns (group names) in words a sales manager reads."""
    named = [c for c in rows.columns if c.startswith((f"{REASON}_", f"{AGAINST}_")) and c[-1].isdigit()]
    # a dict map is one hash look-up per row (a lambda per row costs a second at 100,000 accounts)
    lookup, known = dict(words), list(words)
    return rows.assign(**{c: rows[c].map(lookup).where(rows[c].isin(known), rows[c]) for c in named})


def _ordered(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """The columns a reader looks for first, then the reasons, then the groups' sums."""
    first = [
        RANK,
        key,
        s.AS_OF,
        ACCOUNT_PROBABILITY,
        PREVIOUS,
        CHANGE,
        TREND,
        N_LEADS,
        N_ENGAGED,
        EXPECTED_REVENUE,
        INDEPENDENT,
        MAX,
        SUM,
    ]
    present = [c for c in first if c in rows.columns]
    groups = [c for c in rows.columns if c.startswith(GROUP_PREFIX)]
    rest = [c for c in rows.columns if c not in present and c not in groups]
    return rows[[*present, *rest, *groups]]
