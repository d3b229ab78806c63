"""Several tables in one flat config: ``joins:`` (lookup tables by key) and ``where:`` (rows kept).

The end-to-end test reads its config from the README's text (the opportunity-export example), so
the README and the test cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from factories import LENIENT_GATE, QUICK, REPO, local_tracking, run_entry_point, user_configs
from leadml import cli
from leadml.adapters.layout import MANIFEST, open_rows_file
from leadml.cli import CONFIG_DIR, run_ingest
from leadml.data.contracts import IngestSettings, flat_contract
from leadml.data.joins import Lookup, filter_rows, join_lookup, lookups, row_rules
from leadml.errors import LeadmlError
from leadml.stages.ingest import ingest_stage, ingest_unless_unchanged

README = REPO / "README.md"
PRODUCTS = {  # product -> (series, sales price)
    "GTX Basic": ("GTX", 550),
    "GTX Pro": ("GTX", 4821),
    "MG Special": ("MG", 55),
    "MG Advanced": ("MG", 3393),
    "GTX Plus Pro": ("GTX", 5482),
    "GTX Plus Basic": ("GTX", 1096),
    "GTK 500": ("GTK", 26768),
}
SECTORS = ["technology", "retail", "medical", "finance", "software"]
BAD_ACCOUNT_ROW = 17  # its revenue is not a number: quarantined in the lookup, once
BAD_LEAD_ROW = 40  # a won row whose engage_date is not a date


def readme_opportunities_config() -> str:
    """The YAML block after "and two of its dimension tables (`conf/data/opportunities.yaml`):"."""
    text = README.read_text()
    start = text.index("two of its dimension tables (`conf/data/opportunities.yaml`):")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start)
    assert match is not None
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def crm_exports(n: int = 2400, seed: int = 5) -> dict[str, pd.DataFrame]:
    """A CRM's sales pipeline and its account and product tables, as the CRM exports them.

    Like the public "CRM sales opportunities" data: Prospecting rows have no engage date and no
    account yet, Engaging rows are open, and the pipeline spells one product ``GTXPro``.
    """
    rng = np.random.default_rng(seed)
    names = [f"Account {i:02d}" for i in range(60)]
    sector = rng.choice(SECTORS, len(names))
    accounts = pd.DataFrame(
        {
            "account": names,
            "sector": sector,
            "year_established": rng.integers(1980, 2017, len(names)).astype(str),
            "revenue": np.round(rng.lognormal(7, 1, len(names)), 2).astype(str),
            "employees": rng.integers(10, 20000, len(names)).astype(str),
            "office_location": rng.choice(["United States", "Germany", "Kenya"], len(names)),
        }
    )
    accounts.loc[BAD_ACCOUNT_ROW - 1, "revenue"] = "12,3.4x"
    products = pd.DataFrame(
        {
            "product": list(PRODUCTS),
            "series": [series for series, _ in PRODUCTS.values()],
            "sales_price": [str(price) for _, price in PRODUCTS.values()],
        }
    )
    account = rng.choice(names, n)
    product = rng.choice(list(PRODUCTS), n)
    warm = {"technology": 1.2, "software": 0.8, "retail": -0.6, "medical": 0.0, "finance": -0.3}
    margin = np.array([warm[sector[names.index(a)]] for a in account]) - 0.4 * (product == "GTK 500")
    won = rng.random(n) < 1 / (1 + np.exp(-margin))
    stage = np.where(won, "Won", "Lost")
    roll = rng.random(n)
    stage = np.where(roll < 0.06, "Prospecting", np.where(roll < 0.24, "Engaging", stage))
    engaged = pd.Timestamp("2016-10-20") + pd.to_timedelta(np.sort(rng.integers(0, 430, n)), unit="D")
    closed = engaged + pd.to_timedelta(rng.integers(1, 120, n), unit="D")
    resolved = np.isin(stage, ["Won", "Lost"])
    pipeline = pd.DataFrame(
        {
            "opportunity_id": [f"{i:08X}" for i in rng.permutation(16**6)[:n]],
            "sales_agent": rng.choice([f"Agent {c}" for c in "ABCDEFGHIJ"], n),
            "product": np.where(product == "GTX Pro", "GTXPro", product),
            "account": np.where(stage == "Prospecting", None, account),
            "deal_stage": stage,
            "engage_date": np.where(stage == "Prospecting", None, engaged.strftime("%Y-%m-%d")),
            "close_date": np.where(resolved, closed.strftime("%Y-%m-%d"), None),
            "close_value": np.where(won & resolved, rng.integers(500, 30000, n).astype(str), None),
        }
    )
    bad = BAD_LEAD_ROW - 1
    pipeline.loc[bad, ["deal_stage", "engage_date"]] = ["Won", "last spring"]
    return {"sales_pipeline": pipeline, "accounts": accounts, "products": products}


def exports_project(root: Path, tables: dict[str, pd.DataFrame], config: str) -> list[str]:
    (root / "exports").mkdir()
    for name, frame in tables.items():
        frame.to_csv(root / "exports" / f"{name}.csv", index=False)
    folder = user_configs(root, config, name="opportunities")
    return [f"hydra.searchpath=[file://{folder}]", "data=opportunities", f"paths.root={root}"]


def test_the_readme_opportunity_export_trains_and_scores_with_its_lookup_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import run_score, run_train

    monkeypatch.chdir(tmp_path)  # the example's paths are relative: exports/...
    tables = crm_exports()
    pipeline = tables["sales_pipeline"]
    overrides = exports_project(tmp_path, tables, readme_opportunities_config())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        ingest = compose("ingest", overrides)
    summary = run_ingest(ingest)
    out = capsys.readouterr().out

    prospecting = int((pipeline["deal_stage"] == "Prospecting").sum())
    kept = len(pipeline) - prospecting
    assert summary.where["kept_rows"] == kept
    assert summary.where["left_out"] == {"deal_stage in [Won, Lost, Engaging]": {"Prospecting": prospecting}}
    assert f"ingest: where: kept {kept:,} of {len(pipeline):,} rows of leads" in out
    # the bad account row is quarantined once, in the lookup's own file, at its row there
    accounts = pd.read_parquet(
        tmp_path / "data" / "interim" / "opportunities" / "quarantine" / "accounts.parquet"
    )
    assert accounts["source_row"].tolist() == [BAD_ACCOUNT_ROW]
    assert "revenue" in accounts["reason"].iloc[0]
    bad_account = tables["accounts"]["account"].iloc[BAD_ACCOUNT_ROW - 1]
    pointing = int(((pipeline["account"] == bad_account) & (pipeline["deal_stage"] != "Prospecting")).sum())
    joined = summary.joins["accounts"]
    assert joined["unmatched_leads"] == pointing and joined["unmatched_examples"] == [bad_account]
    assert joined["matched_leads"] == kept - pointing
    # GTXPro meets GTX Pro through the config's synonyms: every product matched
    assert summary.joins["products"]["matched_leads"] == kept
    # the bad lead's quarantine names its row in the file, not its position after where
    leads_quarantine = pd.read_parquet(
        tmp_path / "data" / "interim" / "opportunities" / "quarantine" / "leads.parquet"
    )
    assert leads_quarantine["source_row"].tolist() == [BAD_LEAD_ROW]
    assert "engage_date" in leads_quarantine["reason"].iloc[0]
    leads = pd.read_parquet(Path(ingest.output_dir) / "leads.parquet")
    assert {"sector", "sales_price", "series", "employees"} <= set(leads.columns)
    assert str(leads["sales_price"].dtype) == "float64" and leads["sector"].dtype == "category"
    row = leads.set_index("lead_id").loc[pipeline.loc[BAD_LEAD_ROW, "opportunity_id"]]  # the next row
    assert (
        row["sales_price"]
        == PRODUCTS[str(pipeline.loc[BAD_LEAD_ROW, "product"]).replace("GTXPro", "GTX Pro")][1]
    )
    assert "close_value" not in leads.columns
    open_rows = pd.read_parquet(Path(ingest.output_dir) / open_rows_file("leads"))
    engaging = pipeline["deal_stage"] == "Engaging"
    assert sorted(open_rows["lead_id"]) == sorted(pipeline.loc[engaging, "opportunity_id"])
    manifest = (Path(ingest.output_dir) / MANIFEST).read_text()
    assert '"accounts"' in manifest and '"source_fingerprint"' in manifest

    with local_tracking(), initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        trained = run_train(compose("train", [*overrides, *QUICK, *LENIENT_GATE]))
        assert trained.promoted
        scored = run_score(compose("score", [*overrides, "score.as_of=latest"]))
    rows = pd.read_parquet(scored.output)
    assert sorted(rows["lead_id"]) == sorted(pipeline.loc[engaging, "opportunity_id"])
    reasons = " ".join(str(reason) for reason in rows.filter(like="reason").stack().dropna())
    assert "sector" in reasons or "sales price" in reasons or "product" in reasons


def test_a_lookup_file_that_changes_rebuilds_the_training_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.stages.ingest import stale_upstream

    monkeypatch.chdir(tmp_path)
    tables = crm_exports(300)
    overrides = exports_project(tmp_path, tables, readme_opportunities_config())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train = compose("train", [*overrides, "data.max_bad_share=0.5"])
        ingest = compose("ingest", [*overrides, "data.max_bad_share=0.5"])
        features = compose("features", [*overrides, "data.max_bad_share=0.5"])
    run_ingest(ingest)
    cli.run_features(features)
    values = OmegaConf.to_container(train, resolve=True)
    data, interim, built = values["data"], Path(ingest.output_dir), Path(features.output_dir)
    assert stale_upstream(data, values["features"], interim, built) is None
    tables["products"].loc[0, "sales_price"] = "600"
    tables["products"].to_csv(tmp_path / "exports" / "products.csv", index=False)
    assert "products" in str(stale_upstream(data, values["features"], interim, built))


def test_a_nightly_ingestion_is_reused_only_while_nothing_it_depends_on_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leadml-score and leadml-forecast skip ingestion when the sources' bytes, the data config and
    the written tables are those of the last ingestion (issue 21: a small nightly run)."""
    monkeypatch.chdir(tmp_path)
    tables = crm_exports(300)
    overrides = exports_project(tmp_path, tables, readme_opportunities_config())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        ingest = compose("ingest", [*overrides, "data.max_bad_share=0.5"])
    data = OmegaConf.to_container(ingest.data, resolve=True)
    interim = tmp_path / "nightly"
    first = ingest_stage(data, interim)
    again = ingest_unless_unchanged(data, interim)
    assert again.reused and again.tables == first.tables
    assert not ingest_unless_unchanged({**data, "max_bad_share": 0.4}, interim).reused  # config changed
    assert not ingest_unless_unchanged(data, interim).reused  # and back
    assert ingest_unless_unchanged(data, interim).reused
    tables["products"].loc[0, "sales_price"] = "600"  # a lookup file changed
    tables["products"].to_csv(tmp_path / "exports" / "products.csv", index=False)
    redone = ingest_unless_unchanged(data, interim)
    assert not redone.reused and ingest_unless_unchanged(data, interim).reused
    (interim / "leads.parquet").write_bytes(b"not the table it was")  # an output altered
    assert not ingest_unless_unchanged(data, interim).reused
    assert len(pd.read_parquet(interim / "leads.parquet")) == first.tables["leads"]["output_rows"]


def test_a_key_the_lookup_lacks_is_counted_as_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text()
    start = text.index("leaves that row's lookup columns missing and is counted")
    shown = re.compile(r"```text\n\s*(.*?)\n", re.S).search(text, start)
    assert shown is not None
    monkeypatch.chdir(tmp_path)
    overrides = exports_project(tmp_path, crm_exports(), readme_opportunities_config())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run_ingest(compose("ingest", [*overrides, "data.synonyms=null"]))
    assert shown.group(1) in capsys.readouterr().out.splitlines()


# --------------------------------------------------------------------------- the pieces
def test_where_keeps_listed_values_in_the_stored_spelling_and_counts_the_rest() -> None:
    frame = pd.DataFrame({"stage": ["Won", "lost", " WON ", "Prospecting", None, "Engaging"]})
    kept, report = filter_rows(frame, row_rules({"stage": ["won", "Lost", "Engaging"]}), "x.csv")
    assert kept.tolist() == [0, 1, 2, 5]
    assert report.left_out == {"stage in [won, Lost, Engaging]": {"Prospecting": 1, "(missing)": 1}}
    kept, report = filter_rows(
        frame, row_rules({"stage": {"not_in": ["Prospecting", "Negotiating"]}}), "x.csv"
    )
    assert kept.tolist() == [0, 1, 2, 4, 5]
    assert report.unseen == {"stage not in [Prospecting, Negotiating]": ["Negotiating"]}
    assert report.sentence("leads") == (
        "where: kept 5 of 6 rows of leads: stage not in [Prospecting, Negotiating] (left out: Prospecting 1) "
        "(no row has 'Negotiating': a typo?)"
    )


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"stage": []}, "data.where.stage: no values; list the values of rows to keep, e.g. [Won, Lost]"),
        (
            {"stage": {"in": ["a"], "not_in": ["b"]}},
            "data.where.stage: give a list of values to keep, or exactly one of in: [...] or not_in: [...]",
        ),
    ],
)
def test_a_malformed_where_rule_names_its_key(where: dict, message: str) -> None:
    with pytest.raises(LeadmlError) as error:
        row_rules(where)
    assert str(error.value) == message


def test_where_on_a_column_the_file_lacks_names_the_key_and_the_columns() -> None:
    with pytest.raises(LeadmlError) as error:
        filter_rows(pd.DataFrame({"Stage": ["Won"]}), row_rules({"stage": ["Won"]}), "csv file p.csv")
    assert str(error.value) == "data.where.stage: no column 'stage' in csv file p.csv; present columns: Stage"


def _contract(**extra: object) -> object:
    return flat_contract({"id": "id", "target": "status", "positive": ["Won"], "negative": ["Lost"], **extra})


def test_a_lookup_adds_its_columns_by_key_and_counts_what_did_not_match() -> None:
    leads = pd.DataFrame(
        {"id": ["1", "2", "3", "4"], "account": ["a", " b", "zz", None], "status": ["Won"] * 4}
    )
    lookup = pd.DataFrame(
        {"account": ["a", "b", "c"], "sector": ["Retail", "Tech", "Retail"], "size": ["5", "x", "9"]}
    )
    joined, validated, matches = join_lookup(
        leads,
        Lookup("accounts", by="account", key="account"),
        lookup,
        _contract(categorical=["sector"], numeric=["size"]),
        IngestSettings(),
        source="csv file accounts.csv",
        leads_source="csv file leads.csv",
    )
    assert joined["sector"].iloc[0] == "Retail" and joined["sector"].isna().tolist() == [
        False,
        True,
        True,
        True,
    ]
    assert joined["size"].tolist()[0] == "5" and joined["size"].isna().tolist() == [False, True, True, True]
    assert validated.quarantine["source_row"].tolist() == [2]  # "x" is not a number: b is quarantined
    report = matches.report()
    assert (report.matched_leads, report.unmatched_leads, report.leads_without_key) == (1, 2, 1)
    assert report.sentence() == (
        "join accounts by account: 1 of 4 rows matched; 2 rows have 2 account values not in accounts (or "
        "quarantined there) (e.g. 'b', 'zz'): their accounts columns are missing; 1 row has no account"
    )


def test_a_lookup_key_is_compared_in_the_stored_spelling_with_the_columns_synonyms() -> None:
    leads = pd.DataFrame({"id": ["1", "2"], "product": ["GTXPro", "MG Special"], "status": ["Won", "Lost"]})
    lookup = pd.DataFrame({"product": ["GTX Pro", "MG Special"], "price": ["4821", "55"]})
    settings = IngestSettings.from_mapping({"synonyms": {"product": {"GTXPro": "GTX Pro"}}})
    joined, _, matches = join_lookup(
        leads,
        Lookup("products", by="product", key="product"),
        lookup,
        _contract(categorical=["product"]),
        settings,
        source="products.csv",
        leads_source="leads.csv",
    )
    assert joined["price"].tolist() == ["4821", "55"] and matches.report().unmatched_leads == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"by": "account"}, "data.joins.accounts needs 'table'"),
        (
            {"table": {"path": "a.csv"}, "by": "account", "how": "left"},
            "data.joins.accounts: unknown key(s) how; known: table, by, key, columns, prefix",
        ),
    ],
)
def test_a_malformed_join_names_its_key(entry: dict, message: str) -> None:
    with pytest.raises(LeadmlError) as error:
        lookups({"accounts": entry}, ("leads", "outcomes"))
    assert str(error.value) == message


def test_a_lookup_column_whose_name_is_taken_asks_for_columns_or_a_prefix() -> None:
    leads = pd.DataFrame({"id": ["1"], "account": ["a"], "sector": ["x"], "status": ["Won"]})
    with pytest.raises(LeadmlError) as error:
        join_lookup(
            leads,
            Lookup("accounts", by="account", key="account"),
            pd.DataFrame({"account": ["a"], "sector": ["Retail"]}),
            _contract(),
            IngestSettings(),
            source="csv file accounts.csv",
            leads_source="csv file leads.csv",
        )
    assert str(error.value) == (
        "data.joins.accounts: column(s) sector are in csv file leads.csv and in csv file accounts.csv; list "
        "the ones to add under data.joins.accounts.columns, or set data.joins.accounts.prefix"
    )


def test_joins_on_crm_data_stop_with_one_line(tmp_path: Path) -> None:
    code, _, err = run_entry_point(
        cli.ingest, ["leadml-ingest", f"paths.root={tmp_path}", "data.where={stage: [Won]}"]
    )
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "leadml-ingest: error: data.joins and data.where apply to a flat table (data.kind: flat); "
        "data=synthetic is crm: filter and join in the source's SQL query instead"
    )
