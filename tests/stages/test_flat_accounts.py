"""Account scores of a flat export: the account is the lead's e-mail domain (``data.accounts.email``).

The README's flat example on an export whose leads come from a few hundred companies (and some
free-mail addresses), with a planted company effect: leads of one company convert together. Training
fits the dependence correction on the out-of-sample rows and the nightly job writes account rows
keyed by domain, never by a free-mail domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from factories import LENIENT_GATE, QUICK, exported_leads, local_tracking, readme_project, run_entry_point
from leadml import cli
from leadml.adapters import sinks, tracking
from leadml.cli import CONFIG_DIR, run_report, run_score, run_train
from leadml.data import schema as s

COMPANIES = 250


def company_leads(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    """The README's export with e-mail addresses at ``COMPANIES`` company domains (a fifth at
    gmail.com), and a company effect on winning that no column shows."""
    rng = np.random.default_rng(seed)
    leads = exported_leads(n, seed)
    company = rng.integers(0, COMPANIES, n)
    effect = rng.normal(0.0, 1.5, COMPANIES)[company]
    visits = leads["Web Visits"].to_numpy()
    won = rng.random(n) < 1 / (1 + np.exp(-(visits - 4 + effect)))
    status = np.where(won, "Won", "Lost")
    status = np.where(leads["Status"].isin(["Open", "In progress"]), leads["Status"], status)
    free = rng.random(n) < 0.2
    domain = np.where(free, "gmail.com", [f"company{c}.com" for c in company])
    return leads.assign(Status=status, Email=[f"p{i}@{d}" for i, d in enumerate(domain)])


def test_a_flat_export_scores_accounts_by_email_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = company_leads()
    overrides = [*readme_project(tmp_path, leads), *QUICK, *LENIENT_GATE, "data.accounts={email: Email}"]
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        trained = run_train(compose("train", overrides))
        assert trained.promoted
        state = tracking.load_scorer("models:/leadml-my_leads@champion").accounts
        scored = run_score(compose("score", [*overrides, "score.as_of=latest"]))
        report = run_report(compose("report", overrides))
    correction = state["correction"]
    assert correction["fitted"] and correction["accounts"] >= 200, state["correction"]
    # leads of one company convert together: the correction beats the independence roll-up on the
    # test window's accounts (about 200 of them)
    test = state["test"]
    assert test["account_probability"]["log_loss"] < test["p_independent"]["log_loss"]
    assert test["account_probability"]["ece"] < test["p_independent"]["ece"]
    assert scored.accounts is not None
    rows = pd.read_parquet(Path(scored.accounts["output"]) / sinks.PART_FILE)
    still_open = leads[leads["Status"].isin(["Open", "In progress"])]
    domains = still_open["Email"].str.split("@").str[1]
    assert set(rows[s.ACCOUNT_ID]) == set(domains[domains != "gmail.com"])
    assert rows["n_leads"].sum() == (domains != "gmail.com").sum() == scored.accounts["leads"]
    assert scored.accounts["leads_without_account"] == (domains == "gmail.com").sum()
    assert report.accounts_csv is not None and report.accounts_csv.exists()
    assert '<section id="accounts">' in report.html.read_text()


def test_an_accounts_column_the_table_lacks_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [*readme_project(tmp_path, exported_leads(300)), *QUICK, *LENIENT_GATE]
    code, _, err = run_entry_point(cli.train, ["leadml-train", *overrides, "data.accounts={email: E-mail}"])
    assert code == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("leadml-train: error: data.accounts.email=E-mail: ")
    assert "my_leads/leads.parquet has no column 'E-mail' (its columns: " in last
    code, _, err = run_entry_point(
        cli.train, ["leadml-train", *overrides, "data.accounts={email: Email, column: Company}"]
    )
    assert code == 1 and "data.accounts needs exactly one of column or email" in err
