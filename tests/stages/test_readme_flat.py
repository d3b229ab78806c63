"""The README's flat-table example, copied as written, on a generated export with open leads.

The config is read from the README's text, so the README and this test cannot drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from factories import LENIENT_GATE, QUICK, exported_leads, local_tracking, readme_project, run_entry_point
from leadml import cli
from leadml.adapters.layout import MANIFEST, open_rows_file
from leadml.cli import CONFIG_DIR, run_features, run_ingest
from leadml.errors import ContractError, LeadmlError


def test_the_readme_flat_example_keeps_open_leads_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's path is relative: exports/leads.csv
    leads = exported_leads()
    overrides = readme_project(tmp_path, leads)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        ingest = compose("ingest", overrides)
        features = compose("features", overrides)
    summary = run_ingest(ingest)
    still_open = leads["Status"].isin(["Open", "In progress"])
    table = summary.tables["leads"]
    assert table["output_rows"] == (~still_open).sum() and table["quarantined_rows"] == 0
    assert summary.open_rows["leads"]["rows"] == still_open.sum()
    open_rows = pd.read_parquet(Path(ingest.output_dir) / open_rows_file("leads"))
    assert sorted(open_rows["lead_id"]) == sorted(leads.loc[still_open, "Lead ID"])
    assert "label" not in open_rows and "Email" in open_rows.columns  # personal: validated, kept
    built = run_features(features)
    assert built.snapshots == (~still_open).sum()
    assert built.positives == (leads["Status"] == "Won").sum()
    assert (Path(features.output_dir) / MANIFEST).exists()
    assert f"{still_open.sum():,} open" in capsys.readouterr().out


def test_a_status_declared_nowhere_stops_ingestion_with_one_line_and_the_contract_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(200)
    leads.loc[[3, 9, 50], "Status"] = "Pending"
    code, _, err = run_entry_point(cli.ingest, ["leadml-ingest", *readme_project(tmp_path, leads)])
    assert code == ContractError.exit_code == 4
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "leadml-ingest: error: leads from csv file exports/leads.csv: target column Status has values under "
        "none of contract.positive, contract.negative and contract.open: 'Pending' (3 rows); add each to "
        "contract.positive (converted), contract.negative (did not convert) or contract.open (still open: "
        "scored every night, never a label)"
    )
    assert not (tmp_path / "data" / "interim" / "my_leads" / "leads.parquet").exists()


def test_the_readme_flat_example_trains_and_scores_its_open_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from leadml.cli import run_export, run_report, run_score, run_train

    monkeypatch.chdir(tmp_path)
    leads = exported_leads()
    synonyms = "data.synonyms={Source: {partner_referral: referral}}"  # a plain override, as documented
    overrides = [*readme_project(tmp_path, leads), *QUICK, *LENIENT_GATE, synonyms]
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        trained = run_train(compose("train", overrides))
        assert trained.promoted
        scored = run_score(compose("score", [*overrides, "score.as_of=latest"]))
    still_open = leads.loc[leads["Status"].isin(["Open", "In progress"]), "Lead ID"]
    assert scored.leads == len(still_open)
    rows = pd.read_parquet(scored.output)
    assert sorted(rows["lead_id"]) == sorted(still_open)
    latest = pd.Timestamp(leads["Created Date"].max(), tz="UTC").normalize() + pd.Timedelta(days=1)
    assert (rows["as_of"] == latest).all() and rows["probability"].between(0, 1).all()
    assert set(rows["tier"]) <= {"A", "B", "C", "D"} and rows["positive_reason_1"].notna().any()
    assert (rows["trend"] == "new").all()
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        report = run_report(compose("report", overrides))
    assert report.leads == len(still_open) and report.html.exists()
    ranked = pd.read_csv(report.csv)
    assert list(ranked["lead_id"][:3]) == list(
        rows.sort_values("probability", ascending=False)["lead_id"][:3]
    )
    # the export, and requests in the export's own shape: a row as in the file, its id echoed
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        exported = run_export(compose("export", overrides))
    folder = Path(exported.path)
    example = json.loads((folder / "request_example.json").read_text())["dataframe_records"][0]
    assert example["Lead ID"] == "example-1" and "Email" not in example and "Web Visits" in example
    served = mlflow.pyfunc.load_model(str(folder))
    as_in_the_file = leads[leads["Lead ID"].isin(still_open)].head(5).drop(columns=["Status"])
    answer = served.predict(as_in_the_file)
    assert list(answer["lead_id"]) == list(as_in_the_file["Lead ID"])
    assert answer["warnings"].isna().all()  # "Software" is the "software" training saw
    nightly = rows.set_index("lead_id").loc[as_in_the_file["Lead ID"], "probability"]
    np.testing.assert_allclose(answer["probability"], nightly.to_numpy(), rtol=1e-9)
    assert served.predict(pd.DataFrame([example]))["lead_id"].tolist() == ["example-1"]
    # the data config's synonyms apply to requests as they did to the file
    referral = as_in_the_file.head(1).assign(Source="Referral")
    respelt = served.predict(referral.assign(Source="Partner Referral"))
    assert respelt["warnings"].isna().all()
    assert respelt["probability"].iloc[0] == served.predict(referral)["probability"].iloc[0]

    # a week later the export labels 40 of the open leads: the next run scores the others against
    # the first run, and the report checks the first run's predictions of the 40
    closed = still_open.iloc[:40]
    leads.loc[leads["Lead ID"].isin(closed), "Status"] = np.where(np.arange(40) % 4 == 0, "Won", "Lost")
    leads.to_csv(tmp_path / "exports" / "leads.csv", index=False)
    week_later = f"{latest + pd.Timedelta(days=7):%Y-%m-%d}"
    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        # no lead came in that week (the file is replayed): the default 7-day staleness check would stop it
        again = run_score(
            compose("score", [*overrides, f"score.as_of={week_later}", "score.max_staleness_days=10"])
        )
        second = run_report(compose("report", overrides))
    rows = pd.read_parquet(again.output)
    assert sorted(rows["lead_id"]) == sorted(still_open.iloc[40:])
    assert (rows["trend"] == "steady").all()  # same rows, same model: nothing moved
    page = second.html.read_text()
    assert "40 leads scored by earlier runs whose outcome is now known (won or lost in today" in page
    # the programme over time: the first night's leads, 40 of them with an outcome, 10 converted; a
    # flat table has no closing dates or deal values, and the page says so
    kpi_table = re.search(r'<table id="kpi-table".*?</table>', page, re.S)[0]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", kpi_table, re.S)]
    assert cells[:2] == [f"{latest:%Y-%m}", f"{len(still_open):,}"]
    assert cells[3].startswith("40 ") and cells[4:6] == ["10", "25.0%"]
    assert "close rate" not in kpi_table and "not when it closed or for how much" in page


def test_a_flat_table_is_scored_from_its_open_leads() -> None:
    """With either engine (tests/system/test_spark_engine.py scores a flat table with both)."""
    from leadml.stages.score import check_flat_scoring

    data = {"name": "my_leads", "kind": "flat", "contract": {"id": "Lead ID", "target": "Status"}}
    with pytest.raises(LeadmlError) as error:
        check_flat_scoring(data)
    assert str(error.value) == (
        "data=my_leads is a flat table without open leads to score: add contract.open (the target values "
        "of leads still open, e.g. open: [Open]) to conf/data/my_leads.yaml"
    )
    data["contract"]["open"] = ["Open"]
    check_flat_scoring(data)
