"""``leadml-forecast`` on flat tables: a target column without dates, and dated outcomes.

The figures are checked against rates counted here from the generated files; the README's
flat forecast commands are read from its text and run as written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from factories import REPO, exported_leads, readme_flat_config, readme_project, run_entry_point, user_configs
from leadml import cli
from leadml.cli import CONFIG_DIR
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.reporting.forecast import ALL, AMONG_CLOSED, POOLED_GROUP, TOTAL, WITHIN_HORIZON, ForecastSettings
from leadml.stages.forecast import NO_DEAL_VALUES, ForecastResult, forecast_stage

README = REPO / "README.md"
PUBLIC = Path(CONFIG_DIR).parent.parent / "shared" / "data" / "public"
DAY = pd.Timedelta(days=1)
QUICK = ["forecast.draws=2000"]
OPEN = ["Open", "In progress"]


def readme_forecast_lines() -> list[list[str]]:
    """The overrides of each ``leadml-forecast`` line of the README's flat forecast example."""
    text = README.read_text()
    start = text.index("`tests/stages/test_forecast_flat.py` runs these lines):")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match is not None
    lines = [shlex.split(line, comments=True) for line in match.group(1).splitlines() if line.strip()]
    assert all(line[0] == ".venv/bin/leadml-forecast" for line in lines)
    return [line[1:] for line in lines]


def _stage(overrides: list[str]) -> ForecastResult:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("forecast", [*QUICK, *overrides])
    return forecast_stage(OmegaConf.to_container(cfg, resolve=True), Path(cfg.paths.root))


def _forecast(overrides: list[str]) -> tuple[int, str, str]:
    return run_entry_point(cli.forecast, ["leadml-forecast", *QUICK, *overrides])


def _scored_run(root: Path, name: str, lead_ids: pd.Series, day: str = "2024-12-01") -> Path:
    """A scored partition as ``leadml-score`` writes it (the columns the capacity plan reads)."""
    rng = np.random.default_rng(0)
    probability = rng.beta(1.0, 4.0, len(lead_ids))
    partition = root / "data" / "scored" / name / f"as_of={day}"
    partition.mkdir(parents=True)
    pd.DataFrame(
        {
            s.LEAD_ID: lead_ids.to_numpy(),
            "probability": probability,
            "tier": np.select([probability >= 0.4, probability >= 0.2], ["A", "B"], "C"),
        }
    ).to_parquet(partition / "part-0.parquet")
    return partition


# --------------------------------------------------------------------------- a target column
def _by_source(leads: pd.DataFrame) -> pd.DataFrame:
    """Closed, won, lost and open leads per source, counted from the export as the user has it."""
    status = leads["Status"]
    frame = pd.DataFrame(
        {
            "source": leads["Source"].str.lower(),
            "won": status == "Won",
            "lost": status == "Lost",
            "open": status.isin(OPEN),
        }
    )
    counts = frame.groupby("source")[["won", "lost", "open"]].sum()
    counts["closed"] = counts["won"] + counts["lost"]
    return counts


def test_a_target_column_gives_won_among_closed_per_source_without_a_horizon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(1200, seed=5)
    overrides = readme_project(tmp_path, leads)
    summary = _stage([*overrides, "forecast.planned={Web: 300, referral: 100}"])
    counts = _by_source(leads)

    history = summary.history
    assert summary.group_by == "Source" and summary.grouping.startswith("Source, the source-family")
    assert history.index.name == "Source" and list(history.index)[-1] == ALL
    for source, row in counts.iterrows():
        got = history.loc[source]
        assert (got["leads"], got["won"], got["not_converted"]) == (row["closed"], row["won"], row["lost"])
        assert got["conversion_rate"] == pytest.approx(row["won"] / row["closed"])
        assert got["immature_leads"] == row["open"]  # the open leads: never in a rate
    pooled = history.loc[ALL]
    assert pooled["conversion_rate"] == pytest.approx(counts["won"].sum() / counts["closed"].sum())
    assert pooled["immature_leads"] == leads["Status"].isin(OPEN).sum()
    # a label without a date: days to convert unknown (not 0), no deal values
    assert history["days_to_convert_mean"].isna().all() and history["deal_value_mean"].isna().all()

    # the forward forecast: the posterior mean of each source's rate, revenue missing
    forward = summary.forward
    assert summary.planned == {"web": 300, "referral": 100}
    for source, n in summary.planned.items():
        row = counts.loc[source]
        rate = (row["won"] + 0.5) / (row["closed"] + 1.0)
        assert forward.loc[source, "expected_conversions"] == pytest.approx(n * rate)
        assert forward.loc[source, "conversions_low"] < n * rate < forward.loc[source, "conversions_high"]
    assert forward[["expected_revenue", "revenue_low", "revenue_high", "deal_value_mean"]].isna().all().all()
    assert forward["days_to_convert"].isna().all()
    assert summary.reverse is None and summary.revenue_target is None

    # what the rate is, said in the summary and the JSON; no reverse.csv
    assert summary.rate_kind == AMONG_CLOSED and summary.horizon_days is None
    record = json.loads(Path(summary.files["json"]).read_text())
    assert "won / (won + lost) among the closed leads" in record["rate_definition"]
    assert "not a rate within a horizon" in record["rate_definition"]
    assert record["horizon_days"] is None and record["reverse"] is None
    assert record["forward"][-1]["expected_revenue"] is None  # missing, not 0
    assert NO_DEAL_VALUES in record["notes"]
    assert not (Path(summary.files["json"]).parent / "reverse.csv").exists()
    assert set(summary.files) == {"history", "forward", "json"}


def test_the_default_plan_of_a_dated_flat_table_is_the_pace_of_all_its_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(1200, seed=6)
    summary = _stage(readme_project(tmp_path, leads))
    created = pd.to_datetime(leads["Created Date"], utc=True)
    end = created.max()
    recent = leads[created > end - 90 * DAY]  # open leads arrived too: they count in the pace
    expected = {k: round(v * 30 / 90) for k, v in recent["Source"].str.lower().value_counts().items()}
    assert summary.planned == expected
    assert summary.planned_from == "the pace of the last 90 days, per 30 days"
    assert summary.as_of == end


def test_capacity_of_a_flat_table_needs_reps_and_plans_from_the_scored_open_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(600, seed=7)
    overrides = readme_project(tmp_path, leads)
    still_open = leads.loc[leads["Status"].isin(OPEN), "Lead ID"]
    _scored_run(tmp_path, "my_leads", still_open)
    code, out, err = _forecast(overrides)
    assert code == LeadmlError.exit_code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "leadml-forecast: error: forecast.reps is not set and a flat table names no owners to count the "
        "sales team from: set forecast.reps (how many reps work the open leads)"
    )
    code, out, err = _forecast([*overrides, "forecast.reps=2", "forecast.leads_per_rep_per_day=3"])
    assert code == 0, err
    capacity = pd.read_csv(tmp_path / "reports/forecast/my_leads/capacity.csv", index_col=0)
    assert capacity.loc[TOTAL, "worked_leads"] == 2 * 3 * 5 and capacity.loc[TOTAL, "open_leads"] == len(
        still_open
    )
    assert f"2 reps work 30 of {len(still_open)} open leads" in out
    assert "revenue not available (no deal values)" in out
    assert "not a rate within a horizon" in out


def _config_without(root: Path, name: str, *prefixes: str) -> list[str]:
    """The README's flat config under another name, without the lines that start with ``prefixes``."""
    text = readme_flat_config().replace("name: my_leads", f"name: {name}")
    kept = [line for line in text.splitlines() if not line.strip().startswith(prefixes)]
    (root / "my_configs" / "data" / f"{name}.yaml").write_text("\n".join(kept) + "\n")
    return [f"data={name}"]


def test_one_line_messages_for_what_a_flat_table_cannot_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(400, seed=8)
    overrides = readme_project(tmp_path, leads)
    undated = [*overrides, *_config_without(tmp_path, "undated", "time:")]
    closed = _by_source(leads)["closed"]
    sources = sorted(closed.index, key=lambda k: (-closed[k], k))  # the history's order
    cases = {
        "undated": (
            undated,
            "data=undated has no time column (contract.time), so there is no recent pace to plan from: "
            f"set forecast.planned='{{{sources[0]}: 500}}' or forecast.planned_csv=plan.csv "
            f"(leads per value of Source: {', '.join(sources)})",
        ),
        "revenue": (
            [*overrides, "forecast.revenue_target=1e6"],
            "forecast.revenue_target needs won deal values and data=my_leads is a flat table without any: "
            "leave it null (revenue is shown as missing, with no reverse forecast)",
        ),
        "as_of": (
            [*overrides, "forecast.as_of=2024-06-01"],
            "forecast.as_of needs dated outcomes and data=my_leads's target (Status) has no date: "
            "leave it null",
        ),
        "by": (
            [*overrides, "forecast.by=Channel"],
            "forecast.by='Channel' is not a column of data=my_leads's lead table (columns: ['Source', "
            "'Industry', 'Country', 'Employees', 'Web Visits', 'Email', 'Phone'])",
        ),
    }
    for case, (arguments, message) in cases.items():
        code, _, err = _forecast(arguments)
        assert code == LeadmlError.exit_code == 1, case
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1] == f"leadml-forecast: error: {message}", case
    # given a plan, the undated table is forecast, and says it has no time column
    code, out, err = _forecast([*undated, "forecast.planned={web: 100}"])
    assert code == 0, err
    assert "forecast: history (no time column): " in out
    assert "note: no time column (contract.time)" in out


def test_without_a_source_family_the_leads_are_one_pooled_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(500, seed=9)
    overrides = [*readme_project(tmp_path, leads), *_config_without(tmp_path, "pooled", "families:")]
    summary = _stage([*overrides, "forecast.planned={all_leads: 200}"])
    history = summary.history
    assert list(history.index) == [POOLED_GROUP, ALL]
    assert summary.grouping == (
        "one pooled group, 'all_leads' (data.families maps no column to the family source)"
    )
    closed = leads["Status"].isin(["Won", "Lost"])
    assert history.loc[POOLED_GROUP, "leads"] == closed.sum()
    assert history.loc[POOLED_GROUP, "won"] == (leads["Status"] == "Won").sum()
    assert summary.forward.loc[TOTAL, "planned_leads"] == 200


# --------------------------------------------------------------------------- dated outcomes
HORIZON = 30
OBSERVED_FROM = pd.Timestamp("2024-02-01", tz="UTC")
RATES = {"web": 0.10, "event": 0.25, "partner": 0.40}
OUTCOMES_CONFIG = f"""\
name: mqls
kind: flat
table: {{format: csv, path: exports/mqls.csv}}
contract:
  id: mql_id
  time: first_contact
  categorical: [channel]
outcomes:
  table: {{format: csv, path: exports/won.csv}}
  id: mql_id
  time: won_date
  horizon_days: {HORIZON}
  observed_from: "{OBSERVED_FROM:%Y-%m-%d}"
families: {{channel: source}}
"""


def outcomes_export(root: Path, n: int = 3000, seed: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leads first contacted over half a year, and the deals won up to the day of the export.

    A converting lead is won 1-29 days after first contact, a fifth of the others 31-80 days
    after (past the horizon); wins after the export day are not in the file yet.
    """
    rng = np.random.default_rng(seed)
    start, export_day = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC")
    channel = rng.choice(list(RATES), n, p=[0.5, 0.3, 0.2])
    created = start + pd.to_timedelta(np.sort(rng.uniform(0, 181, n)), unit="D").round("h")
    converted = rng.random(n) < np.array([RATES[c] for c in channel])
    late = ~converted & (rng.random(n) < 0.2)
    delay = np.where(converted, rng.uniform(1, HORIZON - 1, n), rng.uniform(HORIZON + 1, 80, n))
    won_at = pd.Series(created + pd.to_timedelta(delay, unit="D")).dt.round("min")
    won = (converted | late) & (won_at <= export_day).to_numpy()
    leads = pd.DataFrame(
        {"mql_id": [f"M{i:05d}" for i in range(n)], "first_contact": created, "channel": channel}
    )
    deals = pd.DataFrame({"mql_id": leads["mql_id"][won], "won_date": won_at[won]})
    (root / "exports").mkdir()
    leads.assign(first_contact=created.strftime("%Y-%m-%d %H:%M")).to_csv(
        root / "exports/mqls.csv", index=False
    )
    deals.assign(won_date=deals["won_date"].dt.strftime("%Y-%m-%d %H:%M")).to_csv(
        root / "exports/won.csv", index=False
    )
    return leads, deals


def _within_horizon(leads: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """Per channel, counted here: mature leads, won within the horizon, younger leads, days to win."""
    end = max(leads["first_contact"].max(), deals["won_date"].max())
    frame = leads.merge(deals, on="mql_id", how="left")
    frame = frame[frame["first_contact"] >= OBSERVED_FROM]  # earlier: wins not recorded, no cohort
    mature = frame["first_contact"] + HORIZON * DAY <= end
    days = (frame["won_date"] - frame["first_contact"]) / DAY
    frame = frame.assign(mature=mature, won=mature & (days <= HORIZON), young=~mature, days=days)
    table = frame.groupby("channel").agg(leads=("mature", "sum"), won=("won", "sum"), young=("young", "sum"))
    table["days"] = frame[frame["won"]].groupby("channel")["days"].mean()
    return table


def test_dated_outcomes_give_the_crm_definition_on_the_mature_cohort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads, deals = outcomes_export(tmp_path)
    folder = user_configs(tmp_path, OUTCOMES_CONFIG, name="mqls")
    overrides = [f"hydra.searchpath=[file://{folder}]", "data=mqls", f"paths.root={tmp_path}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("forecast", overrides)
    # the label's horizon, not features.horizon_days (90)
    assert (
        ForecastSettings.from_mapping(OmegaConf.to_container(cfg.forecast, resolve=True)).horizon_days == 30
    )

    summary = _stage(overrides)
    history, expected = summary.history, _within_horizon(leads, deals)
    assert summary.rate_kind == WITHIN_HORIZON and summary.horizon_days == HORIZON
    for channel, row in expected.iterrows():
        got = history.loc[channel]
        assert (got["leads"], got["won"]) == (row["leads"], row["won"])
        # the leads ingest set aside as not yet observed: counted apart, never in a rate
        assert got["immature_leads"] == row["young"] > 0
        assert got["days_to_convert_mean"] == pytest.approx(row["days"])
        assert abs(got["conversion_rate"] - RATES[channel]) < 4 * np.sqrt(RATES[channel] / row["leads"])
    manifest = json.loads((tmp_path / "data/interim/mqls/manifest.json").read_text())
    assert history.loc[ALL, "won"] == manifest["labels"]["positives"]  # the model's label, lead for lead
    assert history.loc[ALL, "leads"] == manifest["labels"]["labelled_leads"]
    assert history["deal_value_mean"].isna().all()

    # the default plan: the pace of the last 90 days up to the last lead, the young leads included
    created = leads["first_contact"]
    recent = leads[created > created.max() - 90 * DAY]
    assert summary.planned == {k: round(v / 3) for k, v in recent["channel"].value_counts().items()}
    assert (
        summary.planned_from
        == f"the pace of the last 90 days to {created.max():%Y-%m-%d} (the last lead), per 30 days"
    )
    assert summary.forward["expected_revenue"].isna().all()
    record = json.loads(Path(summary.files["json"]).read_text())
    assert record["rate_definition"].startswith("won_date within 30 days of first_contact, among the leads")
    assert record["grouping"].startswith("channel, the source-family column")
    assert record["no_capacity"] == (
        "no capacity plan: data=mqls has no open leads to score (contract.open), so leadml-score has no "
        "run to plan from"
    )


# --------------------------------------------------------------------------- the README's lines
def test_the_readme_flat_forecast_lines_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    leads = exported_leads(600, seed=10)
    project = readme_project(tmp_path, leads)
    _scored_run(tmp_path, "my_leads", leads.loc[leads["Status"].isin(OPEN), "Lead ID"])
    lines = readme_forecast_lines()
    assert any("data=my_leads" in line for line in lines)
    for line in lines:
        name = next(arg for arg in line if arg.startswith("data=")).removeprefix("data=")
        if name != "my_leads" and not PUBLIC.exists():
            continue  # the public sets are not here (as in tests/system/test_public_data.py)
        extra = (
            project if name == "my_leads" else [f"paths.root={tmp_path}", f"paths.public_data_dir={PUBLIC}"]
        )
        code, out, err = _forecast([*extra, *line])
        assert code == 0, (line, err)
        assert "forecast: wrote history.csv, forward.csv" in out
        history = pd.read_csv(tmp_path / "reports" / "forecast" / name / "history.csv", index_col=0)
        assert history.index[-1] == ALL


@pytest.mark.public_data
@pytest.mark.skipif(not PUBLIC.exists(), reason=f"public data not found at {PUBLIC}")
def test_olist_by_channel_matches_its_labels_and_the_raw_files(tmp_path: Path) -> None:
    summary = _stage(
        [f"paths.root={tmp_path}", f"paths.public_data_dir={PUBLIC}", "data=olist", "forecast.by=origin"]
    )
    folder = PUBLIC / "olist_marketing_funnel"
    mqls = pd.read_csv(folder / "olist_marketing_qualified_leads_dataset.csv", dtype=str)
    deals = pd.read_csv(folder / "olist_closed_deals_dataset.csv", dtype=str)
    joined = mqls.merge(deals[["mql_id", "won_date"]], on="mql_id", how="left")
    first = pd.to_datetime(joined["first_contact_date"], utc=True)
    delay = pd.to_datetime(joined["won_date"], utc=True) - first
    labelled = (first >= pd.Timestamp("2017-12-05", tz="UTC")) & ~(delay < pd.Timedelta(0))
    won = labelled & (delay <= 90 * DAY)
    history = summary.history
    assert (history.loc[ALL, "leads"], history.loc[ALL, "won"]) == (labelled.sum(), won.sum())
    paid = joined["origin"] == "paid_search"
    assert history.loc["paid_search", "won"] == (won & paid).sum()
    assert history.loc["paid_search", "leads"] == (labelled & paid).sum()
    assert history.loc[ALL, "immature_leads"] == 0  # every MQL's 90 days ended before the last won deal
    assert summary.as_of == pd.Timestamp("2018-11-14 18:04:19", tz="UTC")
    assert summary.planned_from.startswith("the pace of the last 90 days to 2018-05-31 (the last lead)")
