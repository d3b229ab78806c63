"""Tonight's account rows from a scored lead partition (leadml.scoring.account_scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadml.data import schema as s
from leadml.modelling import accounts as a
from leadml.scoring.account_scores import PREVIOUS, RANK, TREND, score_accounts

NIGHT = pd.Timestamp("2025-06-02", tz="UTC")
INDEPENDENCE = a.DependenceCorrection().to_dict()
STATE = {"key": s.ACCOUNT_ID, "engaged_probability": 0.1, "correction": INDEPENDENCE}


def partition() -> pd.DataFrame:
    """Five scored leads: A1 has two, A2 one, L4 no account and L5 is a holdout lead (no score shown)."""
    return pd.DataFrame(
        {
            s.LEAD_ID: ["L1", "L2", "L3", "L4", "L5"],
            s.AS_OF: [NIGHT] * 5,
            "probability": [0.5, 0.2, 0.05, 0.9, np.nan],
            "expected_value": [1000.0, 400.0, 50.0, 900.0, np.nan],
            "group:n_page_pricing": [0.4, -0.1, -0.2, 1.0, np.nan],
            "group:source": [-0.3, -0.2, 0.3, 1.0, np.nan],
        }
    )


KEYS = pd.DataFrame({s.LEAD_ID: ["L1", "L2", "L3", "L4", "L5"], s.ACCOUNT_ID: ["A1", "A1", "A2", None, "A2"]})
WORDS = {"n_page_pricing": "pricing-page visits", "source": "lead source"}


def test_accounts_of_a_night_are_ranked_worded_and_counted() -> None:
    night = score_accounts(partition(), KEYS, STATE, words=WORDS)
    rows = night.rows
    assert list(rows[s.ACCOUNT_ID]) == ["A1", "A2"]  # the most likely first
    assert list(rows[RANK]) == [1, 2]
    first = rows.iloc[0]
    assert first[a.ACCOUNT_PROBABILITY] == pytest.approx(1 - 0.5 * 0.8)  # not fitted: independence
    assert first[a.N_LEADS] == 2 and first[a.N_ENGAGED] == 2
    assert first[a.EXPECTED_REVENUE] == pytest.approx(1400.0)
    assert first["reason_1"] == "pricing-page visits" and first["against_1"] == "lead source"
    assert first[TREND] == "new" and np.isnan(first[PREVIOUS]) and np.isnan(first[a.CHANGE])
    # the holdout lead L5 of A2 is left out: an account row never shows a hidden score
    assert rows.iloc[1][a.N_LEADS] == 1
    assert (night.leads, night.leads_without_account, night.hidden_leads) == (3, 1, 1)
    summary = night.summary()
    assert summary["accounts"] == 2 and summary["accounts_with_several_leads"] == 1
    assert summary["expected_accounts_won"] == pytest.approx(0.6 + 0.05)
    assert summary["trend"] == {"new": 2}


def test_trend_against_the_previous_night_and_the_correction_applied() -> None:
    before = score_accounts(partition(), KEYS, STATE).rows
    later = partition().assign(probability=[0.7, 0.3, 0.05, 0.9, np.nan])
    corrected = a.DependenceCorrection(
        intercept=-0.2, coefficients=(0.8, 0.3, 0.1), fitted=True, note="fitted"
    ).to_dict()
    rows = score_accounts(later, KEYS, {**STATE, "correction": corrected}, before=before).rows
    one = rows.set_index(s.ACCOUNT_ID)
    summaries = a.summaries(one)
    expected = 1 / (1 + np.exp(-(-0.2 + summaries @ np.array([0.8, 0.3, 0.1]))))
    assert one[a.ACCOUNT_PROBABILITY].to_numpy() == pytest.approx(expected)
    assert one.loc["A1", PREVIOUS] == pytest.approx(0.6)
    assert one.loc["A1", a.CHANGE] == pytest.approx(one.loc["A1", a.ACCOUNT_PROBABILITY] - 0.6)
    assert one.loc["A1", TREND] == "improving"


def test_no_lead_with_an_account_gives_no_rows() -> None:
    keys = KEYS.assign(**{s.ACCOUNT_ID: None})
    night = score_accounts(partition(), keys, STATE)
    assert night.rows.empty and night.summary()["accounts"] == 0 and night.leads_without_account == 4
