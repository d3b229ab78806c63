"""Account scores: the roll-up, the dependence correction and the account-level evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import factories
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling import accounts as a

DAY = pd.Timestamp("2025-06-02", tz="UTC")


def scored_rows() -> pd.DataFrame:
    """Two accounts (A1: two leads; A2: one), a lead without an account, A1 again a week later."""
    return pd.DataFrame(
        {
            s.LEAD_ID: ["L1", "L2", "L3", "L4", "L1"],
            s.ACCOUNT_ID: ["A1", "A1", "A2", None, "A1"],
            s.AS_OF: [DAY, DAY, DAY, DAY, DAY + pd.Timedelta(days=7)],
            "probability": [0.5, 0.2, 0.05, 0.9, 0.3],
            "expected_value": [1000.0, 400.0, 50.0, 900.0, 600.0],
            "group:pricing": [0.4, -0.1, -0.2, 1.0, 0.2],
            "group:source": [-0.3, -0.2, 0.3, 1.0, -0.1],
            "group:email": [0.1, 0.05, 0.0, 1.0, 0.0],
        }
    )


def test_account_rows_roll_up_counts_sums_and_reasons() -> None:
    rows = a.account_rows(scored_rows(), a.AccountSettings(engaged_probability=0.1, top_reasons=3))
    assert len(rows) == 3  # L4 has no account: scored as a lead only
    first = rows[(rows[s.ACCOUNT_ID] == "A1") & (rows[s.AS_OF] == DAY)].iloc[0]
    assert first[a.N_LEADS] == 2 and first[a.N_ENGAGED] == 2
    assert first[a.INDEPENDENT] == pytest.approx(1 - 0.5 * 0.8)
    assert first[a.MAX] == pytest.approx(0.5) and first[a.SUM] == pytest.approx(0.7)
    assert first[a.EXPECTED_REVENUE] == pytest.approx(1400.0)
    # pricing 0.3, email 0.15 for; source -0.5 against
    assert (first["reason_1"], first["reason_2"], first["reason_3"]) == ("pricing", "email", None)
    assert first["reason_1_logodds"] == pytest.approx(0.3)
    assert first["against_1"] == "source" and first["against_1_logodds"] == pytest.approx(-0.5)
    assert first["against_2"] is None and np.isnan(first["against_2_logodds"])
    assert first["group:source"] == pytest.approx(-0.5)
    second = rows[rows[s.ACCOUNT_ID] == "A2"].iloc[0]
    assert second[a.N_LEADS] == 1 and second[a.N_ENGAGED] == 0
    assert second[a.INDEPENDENT] == pytest.approx(0.05) == second[a.MAX]
    assert (second["reason_1"], second["against_1"]) == ("source", "pricing")
    later = rows[rows[s.AS_OF] > DAY].iloc[0]
    assert later[s.ACCOUNT_ID] == "A1" and later[a.N_LEADS] == 1 and later[a.N_ENGAGED] == 1


def test_account_rows_values_threshold_and_errors() -> None:
    frame = scored_rows().drop(columns="expected_value").assign(deal=[100.0, 200.0, 300.0, 0.0, np.nan])
    rows = a.account_rows(frame, a.AccountSettings(engaged_probability=0.3, keep_groups=False), value="deal")
    first = rows.iloc[0]
    assert first[a.EXPECTED_REVENUE] == pytest.approx(0.5 * 100 + 0.2 * 200)
    assert first[a.N_ENGAGED] == 1  # 0.2 is below the threshold now
    assert not any(c.startswith("group:") for c in rows.columns)
    with pytest.raises(LeadmlError, match="probability"):
        a.account_rows(frame.drop(columns="probability"))
    with pytest.raises(LeadmlError, match="engaged_probability"):
        a.AccountSettings(engaged_probability=1.5)


def test_a_lead_at_probability_one_makes_its_account_certain() -> None:
    frame = pd.DataFrame({s.ACCOUNT_ID: ["A", "A"], "probability": [1.0, 0.2]})
    assert a.account_rows(frame)[a.INDEPENDENT].iloc[0] == pytest.approx(1.0)


def test_email_domain_key_leaves_free_mail_out() -> None:
    keys = a.email_domain_key(pd.Series(["Ann@Acme.com ", "bo@gmail.com", None, "no-at-sign"]), ["gmail.com"])
    assert keys.iloc[0] == "acme.com" and keys.iloc[1:].isna().all()


# --------------------------------------------------------------------------- simulated history
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)


def simulated(n_accounts: int, seed: int, spread: float = 0.0, committee: float = 0.0) -> pd.DataFrame:
    """Lead rows of ``n_accounts`` accounts whose probabilities are calibrated lead by lead.

    Each lead's log-odds is its own ``x`` plus the account's shared effect ``u ~ N(0, spread)``,
    which no lead model sees: the calibrated probability is the average over ``u``
    (Gauss-Hermite), and the leads of one account win or lose together (redundancy). With
    ``committee``, each engaged lead beyond the first (probability at least 0.1) adds a
    ``committee`` chance of a deal at the account level (synergy).
    """
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(1.5, n_accounts)
    account = np.repeat(np.arange(n_accounts), sizes)
    x = rng.normal(-2.4, 1.1, account.size)
    u = rng.normal(0.0, spread, n_accounts)[account]
    probability = expit(x[:, None] + spread * _NODES[None, :]) @ (_WEIGHTS / _WEIGHTS.sum())
    label = (rng.random(account.size) < expit(x + u)).astype(np.int8)
    if committee:
        engaged = np.bincount(account, probability >= 0.1, minlength=n_accounts)
        deal = rng.random(n_accounts) < 1 - (1 - committee) ** np.maximum(engaged - 1, 0)
        first = np.r_[0, np.cumsum(sizes)[:-1]]
        label[first[deal]] = 1
    return pd.DataFrame(
        {
            s.LEAD_ID: np.arange(account.size),
            s.ACCOUNT_ID: account,
            s.AS_OF: DAY,
            "probability": probability,
            s.LABEL: label,
        }
    )


def test_correction_fixes_a_planted_shared_account_effect() -> None:
    history = a.history_accounts(simulated(20_000, seed=1, spread=1.5))
    correction = a.fit_dependence(history)
    assert correction.fitted and "win or lose together" in correction.note  # redundancy measured
    test = a.history_accounts(simulated(20_000, seed=2, spread=1.5))
    table = a.account_metrics(test, correction)
    print("\nplanted shared account effect (sd 1.5), 20,000 test accounts\n" + table.round(4).to_string())
    corrected, independent, largest = (table.loc[n] for n in (a.ACCOUNT_PROBABILITY, a.INDEPENDENT, a.MAX))
    assert independent["ece"] > 0.03  # visibly miscalibrated: it over-counts the leads
    assert independent["mean_probability"] > independent["base_rate"] + 0.02
    assert corrected["ece"] < 0.03
    assert corrected["log_loss"] < min(independent["log_loss"], largest["log_loss"])
    # plain data: through JSON and back, the same probabilities
    again = a.DependenceCorrection.from_dict(json.loads(json.dumps(correction.to_dict())))
    np.testing.assert_allclose(again.predict(test), correction.predict(test))


def test_independent_leads_keep_the_independence_roll_up() -> None:
    correction = a.fit_dependence(a.history_accounts(simulated(20_000, seed=3)))
    table = a.account_metrics(a.history_accounts(simulated(20_000, seed=4)), correction)
    assert table.loc[a.INDEPENDENT, "ece"] < 0.03 and table.loc[a.ACCOUNT_PROBABILITY, "ece"] < 0.03
    assert abs(correction.coefficients[2]) < 0.15 and correction.coefficients[0] > 0.8
    assert "about independently" in correction.note


def hot_and_engaged() -> pd.DataFrame:
    """Account "hot": one lead at 0.5; account "several": four engaged leads at 0.15 each (the
    independence roll-up gives it 0.478, below the hot lead's 0.5)."""
    rows = pd.DataFrame({s.ACCOUNT_ID: ["hot", *["several"] * 4], "probability": [0.5, *[0.15] * 4]})
    return a.account_rows(rows)


@pytest.mark.parametrize(("committee", "spread", "several_first"), [(0.3, 0.0, True), (0.0, 2.0, False)])
def test_several_engaged_leads_rank_above_one_hot_lead_where_history_says_so(
    committee: float, spread: float, several_first: bool
) -> None:
    history = a.history_accounts(simulated(20_000, seed=5, spread=spread, committee=committee))
    # what history says: accounts of three or more engaged leads are won more (synergy) or less
    # (redundancy) often than the independence roll-up of their leads expects
    several_engaged = history[history[a.N_ENGAGED] >= 3]
    assert (several_engaged[a.OUTCOME].mean() > several_engaged[a.INDEPENDENT].mean()) == several_first
    rows = hot_and_engaged()
    correction = a.fit_dependence(history)
    assert ("synergy" in correction.note) == several_first
    hot, several = a.apply_dependence(rows, correction)[a.ACCOUNT_PROBABILITY]
    assert rows[a.INDEPENDENT].iloc[0] > rows[a.INDEPENDENT].iloc[1]  # independence: the hot lead first
    assert (several > hot) == several_first


def test_raising_a_lead_never_lowers_its_account() -> None:
    correction = a.fit_dependence(a.history_accounts(simulated(20_000, seed=6, spread=2.0)))
    base = pd.DataFrame({s.ACCOUNT_ID: ["A"] * 3, "probability": [0.3, 0.1, 0.05]})
    before = correction.predict(a.account_rows(base))[0]
    for lead in range(3):
        raised = base.copy()
        raised.loc[lead, "probability"] += 0.2
        assert correction.predict(a.account_rows(raised))[0] >= before


def test_too_little_history_keeps_the_independence_roll_up() -> None:
    correction = a.fit_dependence(a.history_accounts(simulated(50, seed=7)))
    assert not correction.fitted and "too few accounts" in correction.note
    rows = hot_and_engaged()
    np.testing.assert_allclose(correction.predict(rows), rows[a.INDEPENDENT], rtol=1e-6)


def test_account_trend() -> None:
    today = pd.DataFrame({s.ACCOUNT_ID: ["A", "B"], a.ACCOUNT_PROBABILITY: [0.4, 0.2]})
    before = pd.DataFrame({s.ACCOUNT_ID: ["A"], a.ACCOUNT_PROBABILITY: [0.25]})
    change = a.account_trend(today, before)
    assert change.iloc[0] == pytest.approx(0.15) and np.isnan(change.iloc[1])
    assert a.account_trend(today, None).isna().all()


# --------------------------------------------------------------------------- the synthetic CRM
@pytest.mark.slow
def test_account_scores_on_the_synthetic_crm(project_copy) -> None:
    """Fitted as the train stage would: the validation folds' out-of-sample margins through the
    procedure's calibrator; judged on the test window's accounts, which neither saw. On the shared
    project's data (generated, ingested and featured once for the session)."""
    from omegaconf import OmegaConf

    from leadml.adapters.layout import read_features
    from leadml.modelling.selection import MARGIN
    from leadml.modelling.train import split_windows, train_on_windows

    tmp_path = project_copy("accounts", tracking=False)
    config = OmegaConf.to_container(factories.project_config(tmp_path, "train"), resolve=True)
    assert isinstance(config, dict)
    snapshots, metadata, _, _ = read_features(
        Path(config["input_dir"]), config["features"].get("exclude", ())
    )
    result = train_on_windows(split_windows(snapshots, config, deploy=False), metadata, config)
    leads = pd.read_parquet(
        next(tmp_path.glob("data/interim/*/leads.parquet")), columns=[s.LEAD_ID, s.ACCOUNT_ID]
    )

    assert result.selection is not None and result.evaluated is not None and result.development is not None
    fit_rows = a.out_of_sample_rows(
        result.development, result.selection.oos[MARGIN], result.evaluated.calibrator, leads
    )
    correction = a.fit_dependence(a.history_accounts(fit_rows))
    test_rows = result.test[[s.LEAD_ID, s.AS_OF, s.LABEL]].assign(
        probability=result.probabilities[result.model_name]
    )
    test_accounts = a.history_accounts(a.with_account_key(test_rows, leads))
    table = a.account_metrics(test_accounts, correction)
    print(f"\n{correction.note}\n{correction.to_dict()}\n" + table.round(4).to_string())
    assert (test_accounts[a.N_LEADS] > 1).sum() > 100  # accounts of several leads are there to judge
    assert table.loc[a.ACCOUNT_PROBABILITY, "ece"] <= 0.03
    assert table.loc[a.ACCOUNT_PROBABILITY, "roc_auc"] > 0.75
