"""Experiments of scoring (conf/experiment/): every lead in one arm, scored by every arm's model.

On a copy of the shared trained project, with the points sheet registered under a name of its own
as the README says (the commands are read from the README's "Experiments" section and run here).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict
from scipy.stats import chi2_contingency

from factories import README, SMALL_PROJECT, local_tracking, project_config
from leadml.adapters import tracking
from leadml.adapters.layout import SCORING_RUN_RECORD, read_interim
from leadml.cli import run_report, run_score, run_train
from leadml.data import schema as s
from leadml.errors import NoModelError
from leadml.modelling.estimation import expected_roc_auc
from leadml.reporting.leadership import ReportSettings, crm_lead_features, lead_cards
from leadml.scoring.experiment import ARM, EXPERIMENT, HIDDEN_TIER, ExperimentError, side_column

DAYS = ("2025-11-17", "2025-12-01")  # two nights: a lead keeps its arm
SCORING = ["tiers=capacity"]  # thresholds from all of today's leads: each model's own, per arm
REASONS = [f"{d}_reason_{i}" for d in ("positive", "negative") for i in (1, 2, 3)]
TREND = ("previous_probability", "trend", "margin_change", "movement")
POINTS_URI = "models:/leadml-synthetic-points@champion"


def readme_commands() -> list[list[str]]:
    """The ``$ leadml-...`` command lines of the README's "Experiments" section, as argument lists."""
    text = README.read_text()
    section = text.split("\n## Experiments\n", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line.removeprefix("$ ")) for line in re.findall(r"^\$ leadml-.*$", section, re.M)]


def _points_config(root: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from leadml.cli import CONFIG_DIR

    quick = [f"{k}={v}" for k, v in SMALL_PROJECT.items() if not k.startswith("model.")]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", [f"paths.root={root}", *quick, *overrides])


def _score(root: Path, day: str, *overrides: str):
    return run_score(project_config(root, "score", [f"score.as_of={day}", *SCORING, *overrides]))


def _rows(result) -> pd.DataFrame:
    return pd.read_parquet(result.output).sort_values(s.LEAD_ID, ignore_index=True)


@pytest.fixture(scope="module")
def runs(project_copy) -> dict[str, object]:
    """The README's commands (the points sheet registered, then both shipped experiments), the
    points_holdout experiment on two nights, and each arm's model alone on the second night."""
    root = project_copy("experiment")
    out: dict[str, object] = {"root": root}
    with local_tracking():
        commands = readme_commands()
        assert [command[0] for command in commands] == ["leadml-train", "leadml-score", "leadml-score"]
        for command in commands:
            name, overrides = command[0], command[1:]
            if name == "leadml-train":  # model=points: SMALL_PROJECT's LightGBM settings are not its
                run_train(_points_config(root, overrides))
            else:
                choice = overrides[0].split("=")[1]
                out[choice] = _score(root, DAYS[0], *overrides, f"score.output_dir={root}/scored-{choice}")
        out["first"] = out["points_holdout"]
        out["experiment"] = _score(
            root, DAYS[1], "experiment=points_holdout", f"score.output_dir={root}/scored-points_holdout"
        )
        out["champion"] = _score(root, DAYS[1], f"score.output_dir={root}/alone-champion")
        out["points"] = _score(
            root, DAYS[1], f"score.model_uri='{POINTS_URI}'", f"score.output_dir={root}/alone-points"
        )
    return out


def test_the_readme_experiments_store_each_leads_arm(runs) -> None:
    pair = runs["champion_challenger"]
    frame = _rows(pair)
    assert set(frame[ARM]) == {"champion", "challenger"} and set(frame[EXPERIMENT]) == {"champion_challenger"}
    arms = {arm["name"]: arm for arm in pair.experiment["arms"]}
    assert sum(arm["leads"] for arm in arms.values()) == pair.leads == len(frame)
    assert arms["challenger"]["leads"] == int((frame[ARM] == "challenger").sum())


def test_a_lead_keeps_its_arm_night_after_night(runs) -> None:
    first, second = _rows(runs["first"]), _rows(runs["experiment"])
    both = first.merge(second, on=s.LEAD_ID, suffixes=("_1", "_2"))
    assert len(both) > 100
    assert (both[f"{ARM}_1"] == both[f"{ARM}_2"]).all()


def test_each_lead_shows_its_arms_model(runs) -> None:
    frame, champion, points = _rows(runs["experiment"]), _rows(runs["champion"]), _rows(runs["points"])
    assert frame[s.LEAD_ID].tolist() == champion[s.LEAD_ID].tolist() == points[s.LEAD_ID].tolist()
    arm = frame[ARM]
    assert set(arm) == {"champion", "points", "holdout"}
    # the champion's arm: every column the champion alone writes, as it writes it (but the trend:
    # the champion alone scored no earlier night into its folder)
    mine = (arm == "champion").to_numpy()
    shown = [c for c in champion.columns if c not in TREND]
    pd.testing.assert_frame_equal(
        frame.loc[mine, shown].reset_index(drop=True), champion.loc[mine, shown].reset_index(drop=True),
        check_dtype=False,
    )  # fmt: skip
    # the points arm: the sheet's probability, percentile and tier; a sheet gives no reasons
    mine = (arm == "points").to_numpy()
    for column in ("probability", "percentile", "tier"):
        assert frame.loc[mine, column].tolist() == points.loc[mine, column].tolist()
    assert frame.loc[mine, REASONS].isna().all().all()
    # the holdout: no score shown, tier "hidden"; its real score in its side column
    mine = (arm == "holdout").to_numpy()
    assert mine.sum() > 10 and (frame.loc[mine, "tier"] == HIDDEN_TIER).all()
    hidden = ["probability", "percentile", "expected_value", "trend", *REASONS]
    assert frame.loc[mine, hidden].isna().all().all()
    np.testing.assert_allclose(
        frame.loc[mine, side_column("holdout", "probability")], champion.loc[mine, "probability"]
    )


def test_every_arms_side_columns_are_its_models_own_scoring(runs) -> None:
    frame, champion, points = _rows(runs["experiment"]), _rows(runs["champion"]), _rows(runs["points"])
    for arm, alone in (("champion", champion), ("points", points), ("holdout", champion)):
        np.testing.assert_array_equal(frame[side_column(arm, "probability")], alone["probability"])
        assert frame[side_column(arm, "tier")].tolist() == alone["tier"].tolist()


def test_the_arm_is_independent_of_the_tier(runs) -> None:
    """Chi-square of arm against the champion's tier (of every lead, whichever arm it is in)."""
    frame = _rows(runs["experiment"])
    table = pd.crosstab(frame[ARM], frame[side_column("champion", "tier")])
    assert table.shape == (3, 4) and table.to_numpy().sum() == len(frame)
    assert chi2_contingency(table.to_numpy()).pvalue > 0.001


def test_the_run_record_keeps_the_experiment(runs) -> None:
    result = runs["experiment"]
    record = json.loads((Path(result.output) / SCORING_RUN_RECORD).read_text())
    experiment = record["experiment"]
    assert experiment["name"] == experiment["salt"] == "points_holdout"
    arms = {arm["name"]: arm for arm in experiment["arms"]}
    assert arms["points"]["model_uri"] == POINTS_URI and arms["points"]["model_version"] == "1"
    assert arms["holdout"]["show_score"] is False and set(arms["holdout"]["tiers"]) == {HIDDEN_TIER}
    counts = _rows(result)[ARM].value_counts()
    assert {name: arm["leads"] for name, arm in arms.items()} == counts.to_dict()
    assert record["thresholds"] == arms["champion"]["thresholds"]


def test_no_experiment_writes_no_arm(runs) -> None:
    result = runs["champion"]
    assert result.experiment is None
    assert not any(c in (ARM, EXPERIMENT) or c.startswith("arm_") for c in _rows(result).columns)
    assert "experiment" not in json.loads((Path(result.output) / SCORING_RUN_RECORD).read_text())


def _with_arms(root: Path, arms: list[dict], *overrides: str):
    cfg = project_config(
        root, "score", [f"score.as_of={DAYS[1]}", "experiment=champion_challenger", *overrides]
    )
    with open_dict(cfg):
        cfg.experiment.arms = arms
    return cfg


def test_an_arm_whose_model_is_missing_names_its_key(runs) -> None:
    arms = [
        {"name": "a", "model": "champion", "share": 0.5},
        {"name": "b", "model": "models:/nope@champion", "share": 0.5},
    ]
    with (
        local_tracking(),
        pytest.raises(NoModelError, match=r"experiment\.arms\[1\]\.model \(models:/nope@champion\)"),
    ):
        run_score(_with_arms(runs["root"], arms))


def test_an_experiment_and_a_pinned_model_do_not_mix(runs) -> None:
    arms = [
        {"name": "a", "model": "champion", "share": 0.5},
        {"name": "b", "model": "challenger", "share": 0.5},
    ]
    with local_tracking(), pytest.raises(ExperimentError, match=r"leave score\.model_uri unset"):
        run_score(_with_arms(runs["root"], arms, "score.model_uri=models:/leadml-synthetic/1"))


# --------------------------------------------------------------------------- per-arm estimates, the report
MIXED = [  # the points sheet first: its model builds the features, yet it explains no lead
    {"name": "points", "model": POINTS_URI, "share": 0.4, "show_score": True},
    {"name": "champion", "model": "champion", "share": 0.4, "show_score": True},
    {"name": "holdout", "model": "champion", "share": 0.2, "show_score": False},
]


def mlflow_metrics(result) -> dict[str, float]:
    from mlflow import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.run_id).data.metrics


@pytest.fixture(scope="module")
def mixed(runs) -> dict[str, object]:
    """A run of MIXED on the second night (its own folder) and its leadership report."""
    root = runs["root"]
    out_dir = f"{root}/scored-mixed"
    with local_tracking():
        result = run_score(_with_arms(root, MIXED, *SCORING, f"score.output_dir={out_dir}"))
        files = run_report(
            project_config(
                root, "report", [f"report.scored_dir={out_dir}", f"report.output_dir={root}/report-mixed"]
            )
        )
    return {"root": root, "result": result, "report": files}


def test_each_arm_is_estimated_on_its_own_leads_by_its_own_model(mixed) -> None:
    result = mixed["result"]
    record = json.loads((Path(result.output) / SCORING_RUN_RECORD).read_text())
    frame = _rows(result)
    for arm in record["experiment"]["arms"]:
        mine = frame[ARM] == arm["name"]
        own = frame.loc[mine, side_column(arm["name"], "probability")].to_numpy()
        estimated = arm["estimated"]
        assert estimated["leads"] == mine.sum() > 10
        assert estimated["roc_auc"] == pytest.approx(expected_roc_auc(own))  # a holdout's hidden scores too
        assert estimated["expected_conversions"] == pytest.approx(own.sum())
        top = estimated["top_tier"]
        in_top = frame.loc[mine, side_column(arm["name"], "tier")] == top
        assert estimated["top_tier_precision"] == pytest.approx(own[in_top.to_numpy()].mean())
    # the run's overall figure: the first arm's model on every lead, never the mixed visible column
    first = frame[side_column("points", "probability")].to_numpy()
    assert record["estimated"]["roc_auc"] == pytest.approx(expected_roc_auc(first))
    assert record["estimated"]["leads"] == len(frame)
    metrics = mlflow_metrics(result)
    arms = {arm["name"]: arm for arm in record["experiment"]["arms"]}
    assert metrics["arm.champion.estimated_roc_auc"] == pytest.approx(
        arms["champion"]["estimated"]["roc_auc"]
    )
    assert metrics["arm.holdout.estimated_top_tier_precision"] == pytest.approx(
        arms["holdout"]["estimated"]["top_tier_precision"]
    )


def test_no_experiment_records_no_arm_estimate(runs) -> None:
    result = runs["champion"]
    record = json.loads((Path(result.output) / SCORING_RUN_RECORD).read_text())
    frame = _rows(result)
    assert record["estimated"]["roc_auc"] == pytest.approx(expected_roc_auc(frame["probability"].to_numpy()))
    assert not any(name.startswith("arm.") for name in mlflow_metrics(result))


def test_lead_cards_explain_each_lead_with_its_arms_model_and_hide_the_holdout(mixed) -> None:
    frame = _rows(mixed["result"])
    arm_of = dict(zip(frame[s.LEAD_ID], frame[ARM], strict=True))
    page = Path(mixed["report"].html).read_text()
    carded = re.findall(r'<article class="card lead-card" id="lead-\d+" data-lead="([^"]+)"', page)
    # the first arm's model (the points sheet) explains nothing: every card is a champion lead's
    assert carded and {arm_of[lead] for lead in carded} == {"champion"}
    ranked = frame[frame["probability"].notna()].sort_values("probability", ascending=False, kind="stable")
    top = ranked.head(20)
    assert set(top[ARM]) == {"champion", "points"}  # a points lead among the top gets no card
    assert carded == [lead for lead, arm in zip(top[s.LEAD_ID], top[ARM], strict=True) if arm == "champion"]
    assert not set(carded) & set(frame.loc[frame["tier"] == HIDDEN_TIER, s.LEAD_ID])


def test_a_lead_card_uses_the_model_of_the_leads_arm(mixed) -> None:
    """lead_cards with two arms whose models differ: each lead's waterfall is its own arm's model's."""
    with local_tracking():
        tracking.configure(
            f"sqlite:///{mixed['root'] / 'mlflow.db'}", "leadml-synthetic", mixed["root"] / "mlruns"
        )
        champion = tracking.load_scorer("models:/leadml-synthetic@champion")
        points = tracking.load_scorer(POINTS_URI)
    frame = _rows(mixed["result"])
    shown = frame[frame["probability"].notna()].head(30)
    interim = mixed["root"] / "data" / "scoring" / "synthetic" / "interim"
    tables = read_interim(interim, s.CRM_TABLES)
    as_of = pd.Timestamp(DAYS[1], tz="UTC")
    features = crm_lead_features(shown, tables, champion, as_of)
    settings = ReportSettings.from_mapping({})
    cards = lead_cards(shown, features, points, settings, lambda lead: [], {"champion": champion})
    champions = shown[shown[ARM] == "champion"]
    assert [card.row[s.LEAD_ID] for card in cards] == champions[s.LEAD_ID].tolist()
    alone = lead_cards(champions, features, champion, settings, lambda lead: [])
    for card, own in zip(cards, alone, strict=True):
        assert card.steps == own.steps and card.steps[-1]["end"] == pytest.approx(card.row["probability"])
    assert lead_cards(shown, features, points, settings, lambda lead: []) == []  # the sheet alone: none


def test_the_sql_table_of_a_run_before_the_experiment_takes_the_experiments_rows(runs, tmp_path) -> None:
    """The score table made by a run without experiment gains the arm columns of the next run's rows."""
    import sqlite3

    from leadml.adapters import sinks

    url = f"sqlite:///{tmp_path / 'scores.db'}"
    before, during = Path(runs["champion"].output), Path(runs["experiment"].output)
    assert sinks.upsert_partition(url, "lead_scores", before) == runs["champion"].leads
    assert sinks.upsert_partition(url, "lead_scores", during) == runs["experiment"].leads
    with sqlite3.connect(tmp_path / "scores.db") as connection:
        stored = pd.read_sql("select * from lead_scores", connection)
    assert len(stored) == runs["champion"].leads  # the same night: every row updated in place
    assert stored[ARM].value_counts().to_dict() == _rows(runs["experiment"])[ARM].value_counts().to_dict()
    assert (stored.loc[stored[ARM] == "holdout", "tier"] == HIDDEN_TIER).all()
    assert stored[side_column("points", "probability")].notna().all()
