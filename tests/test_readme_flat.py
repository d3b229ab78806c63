"""The README's flat-table example, copied as written, on a generated export with open leads.

The config is read from the README's text, so the README and this test cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from factories import run_entry_point
from leadml import cli
from leadml.cli import CONFIG_DIR, run_features, run_ingest
from leadml.errors import ContractError
from leadml.stages import MANIFEST, open_rows_file

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_flat_config() -> str:
    """The YAML block that follows "For example `conf/data/my_leads.yaml`:" in the README."""
    text = README.read_text()
    start = text.index("For example `conf/data/my_leads.yaml`:")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


def exported_leads(n: int = 2000, seed: int = 3) -> pd.DataFrame:
    """A CRM export as a user brings it: Won, Lost and still open leads, one row each."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n)
    won = rng.random(n) < 1 / (1 + np.exp(-(visits - 4)))
    status = np.where(won, "Won", "Lost")
    still_open = rng.random(n) < 0.11
    status = np.where(still_open, rng.choice(["Open", "In progress"], n), status)
    return pd.DataFrame(
        {
            "Lead ID": [f"L-{i:05d}" for i in range(n)],
            "Created Date": pd.date_range("2024-01-01", periods=n, freq="4h").strftime("%Y-%m-%d %H:%M"),
            "Status": status,
            "Sales Notes": np.where(won, "signed", "no answer"),
            "Deal Size": np.where(won, rng.integers(1000, 9000, n), 0),
            "Source": rng.choice(["Web", "Referral", "Event"], n),
            "Industry": rng.choice(["Retail", "Software", "Banking"], n),
            "Country": rng.choice(["US", "DE", "FR"], n),
            "Employees": rng.integers(1, 5000, n),
            "Web Visits": visits,
            "Email": [f"person{i}@example.com" for i in range(n)],
            "Phone": [f"+1 555 {i:07d}" for i in range(n)],
        }
    )


def test_the_readme_flat_example_keeps_open_leads_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's path is relative: exports/leads.csv
    (tmp_path / "exports").mkdir()
    leads = exported_leads()
    leads.to_csv(tmp_path / "exports" / "leads.csv", index=False)
    (tmp_path / "my_configs" / "data").mkdir(parents=True)
    (tmp_path / "my_configs" / "data" / "my_leads.yaml").write_text(readme_flat_config())
    search = f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]"
    overrides = [search, "data=my_leads", f"paths.root={tmp_path}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        ingest = compose("ingest", overrides)
        features = compose("features", overrides)
    summary = run_ingest(ingest)
    still_open = leads["Status"].isin(["Open", "In progress"])
    table = summary["tables"]["leads"]
    assert table["output_rows"] == (~still_open).sum() and table["quarantined_rows"] == 0
    assert summary["open_rows"]["leads"]["rows"] == still_open.sum()
    open_rows = pd.read_parquet(Path(ingest.output_dir) / open_rows_file("leads"))
    assert sorted(open_rows["lead_id"]) == sorted(leads.loc[still_open, "Lead ID"])
    assert "label" not in open_rows and "Email" in open_rows.columns  # personal: validated, kept
    built = run_features(features)
    assert built["snapshots"] == (~still_open).sum()
    assert built["positives"] == (leads["Status"] == "Won").sum()
    assert (Path(features.output_dir) / MANIFEST).exists()
    assert f"{still_open.sum():,} open" in capsys.readouterr().out


def test_a_status_declared_nowhere_stops_ingestion_with_one_line_and_the_contract_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports").mkdir()
    leads = exported_leads(200)
    leads.loc[[3, 9, 50], "Status"] = "Pending"
    leads.to_csv(tmp_path / "exports" / "leads.csv", index=False)
    (tmp_path / "my_configs" / "data").mkdir(parents=True)
    (tmp_path / "my_configs" / "data" / "my_leads.yaml").write_text(readme_flat_config())
    argv = [
        "leadml-ingest",
        f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]",
        "data=my_leads",
        f"paths.root={tmp_path}",
    ]
    code, _, err = run_entry_point(cli.ingest, argv)
    assert code == ContractError.exit_code == 4
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "leadml-ingest: error: leads from csv file exports/leads.csv: target column Status has values under "
        "none of contract.positive, contract.negative and contract.open: 'Pending' (3 rows); add each to "
        "contract.positive (converted), contract.negative (did not convert) or contract.open (still open: "
        "scored every night, never a label)"
    )
    assert not (tmp_path / "data" / "interim" / "my_leads" / "leads.parquet").exists()
