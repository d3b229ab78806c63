"""leadml-experiment and leadml-promote on a copy of the shared trained project.

Version 2 of the model (the champion's files registered again) holds @challenger; four nights
are scored under experiment=champion_challenger, the last more than a horizon after the first two,
so their leads have outcomes. Between two copies of one model the readout finds no winner and
leadml-promote refuses; with a planted effect (the challenger arm's tier A leads made to convert)
the readout declares the challenger the winner and leadml-promote moves @champion to version 2
through the promotion gate. The commands are those of the README's "Reading an experiment".
"""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from factories import README, local_tracking, project_config, run_entry_point
from leadml import cli
from leadml.adapters import tracking
from leadml.adapters.layout import read_interim
from leadml.cli import run_experiment, run_promote, run_report, run_score
from leadml.data import schema as s
from leadml.reporting import readout as r
from leadml.scoring.experiment import ARM, side_column

NIGHTS = ("2025-07-07", "2025-08-04", "2025-10-06", "2025-11-03")
EXPERIMENT = "experiment=champion_challenger"
HORIZON = 90  # the synthetic features config's horizon_days
MODEL = "leadml-synthetic"
# a small project has too few tier A leads to judge alone, and a test sized for a 10% lift is
# wide on 600 leads an arm: the planted test compares all leads, sized for a 50% lift
ALL_LEADS = ("readout.test.compare=all", "readout.test.min_lift=0.5")


def readme_commands() -> list[list[str]]:
    """The ``$ leadml-...`` lines of the README's "Reading an experiment" section."""
    section = README.read_text().split("\n## Reading an experiment\n", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line.removeprefix("$ ")) for line in re.findall(r"^\$ leadml-.*$", section, re.M)]


def _config(root: Path, name: str, *overrides: str):
    return project_config(root, name, list(overrides))


def _tracking(root: Path) -> None:
    tracking.configure(tracking.resolve_tracking_uri(None, root), "leadml-synthetic", root / "mlruns")


def _interim(root: Path) -> Path:
    return root / "data" / "scoring" / "synthetic" / "interim"


@pytest.fixture(scope="module")
def project(project_copy) -> Path:
    """The experiment scored on four nights, version 2 holding @challenger."""
    root = project_copy("readout")
    with local_tracking():
        _tracking(root)
        from mlflow import MlflowClient

        source = MlflowClient().get_model_version(MODEL, "1").source
        version = tracking.register(source, MODEL)
        tracking.set_alias(MODEL, tracking.CHALLENGER, version)
        for night in NIGHTS:
            run_score(_config(root, "score", f"score.as_of={night}", EXPERIMENT, "tiers=capacity"))
    return root


@pytest.fixture(scope="module")
def equal_arms(project) -> r.Readout:
    with local_tracking():
        return run_experiment(_config(project, "experiment")).readout


def _direct_counts(root: Path) -> pd.DataFrame:
    """Each arm's outcomes as of the last night, computed from the partitions and the outcomes
    table without the readout's code: first night per lead, won within 90 days of it, counted
    once the 90 days have passed."""
    rows = []
    for night in NIGHTS:
        part = pd.read_parquet(root / "data" / "scored" / "synthetic" / f"as_of={night}")
        rows.append(part.assign(night=pd.Timestamp(night, tz="UTC")))
    scored = pd.concat(rows).sort_values("night", kind="stable").drop_duplicates(s.LEAD_ID)
    outcomes = read_interim(_interim(root), (s.OUTCOMES,))[s.OUTCOMES].set_index(s.LEAD_ID)
    closed = pd.to_datetime(scored[s.LEAD_ID].map(outcomes[s.CLOSED_AT]), utc=True)
    status = scored[s.LEAD_ID].map(outcomes[s.STATUS])
    deadline = scored["night"] + pd.Timedelta(days=HORIZON)
    scored["won"] = (status == s.WON) & (closed <= deadline)
    scored["top"] = [row[side_column(row[ARM], "tier")] == "A" for _, row in scored.iterrows()]
    done = scored[deadline <= pd.Timestamp(NIGHTS[-1], tz="UTC")]
    return done.groupby(ARM).agg(resolved=("won", "size"), converted=("won", "sum"), leads=("top", "size"))


def test_the_readout_counts_what_the_partitions_and_outcomes_say(project, equal_arms) -> None:
    direct = _direct_counts(project)
    arms = equal_arms.arms.set_index("arm")
    assert set(arms.index) == {"champion", "challenger"}
    for arm in arms.index:
        assert arms.loc[arm, "resolved"] == direct.loc[arm, "resolved"] > 200
        assert arms.loc[arm, "converted"] == direct.loc[arm, "converted"]
    assert arms["leads"].sum() > arms["resolved"].sum()  # the later nights' leads are not judged yet
    assert equal_arms.looks["night"].nunique() == len(NIGHTS)


def test_two_copies_of_one_model_have_no_winner(equal_arms) -> None:
    assert equal_arms.decision in (r.KEEP_RUNNING, r.NO_DIFFERENCE, r.TOO_EARLY)
    assert equal_arms.winner is None and equal_arms.sample_ratio_p > 0.001
    assert equal_arms.plan["compared_leads"] > 0 and equal_arms.plan["weeks"] > 0


def test_the_readout_is_written_as_a_page_json_and_looks(project, equal_arms) -> None:
    reports = project / "reports" / "synthetic"
    stem = f"experiment-champion_challenger-{NIGHTS[-1]}"
    record = json.loads((reports / f"{stem}.json").read_text())
    assert record["decision"] == equal_arms.decision and record["plan"]["alpha"] == 0.05
    assert [a["arm"] for a in record["arms"]] == ["champion", "challenger"]
    page = (reports / f"{stem}.html").read_text()
    assert "Always Valid Inference" in page and equal_arms.sentence.split(":")[0] in page
    assert len(pd.read_csv(reports / f"{stem}-looks.csv")) == len(NIGHTS)


def test_track_false_reads_the_registry_but_logs_nothing(project, equal_arms) -> None:
    with local_tracking():
        result = run_experiment(_config(project, "experiment", "readout.track=false"))
    assert result.run_id is None and result.readout.decision == equal_arms.decision


def test_the_leadership_report_shows_the_readout_of_its_night(project, equal_arms) -> None:
    with local_tracking():
        files = run_report(_config(project, "report", f"report.as_of={NIGHTS[-1]}"))
    page = files.html.read_text()
    section = page.split('<section id="experiment">', 1)[1].split("</section>", 1)[0]
    assert "Experiment champion_challenger" in section and 'id="readout-arms"' in section
    assert html.escape(equal_arms.sentence, quote=False) in section


def test_promote_refuses_without_a_winner(project, equal_arms) -> None:
    with local_tracking():
        result = run_promote(_config(project, "experiment"))
        assert result.promoted_version is None and not result.promotion.promote
        assert "gives no winner to promote" in result.promotion.reasons[0]
        assert tracking.version_by_alias(MODEL, tracking.CHAMPION) == "1"


def test_no_experiment_is_one_line_and_exit_code_1(tmp_path) -> None:
    code, _, err = run_entry_point(cli.experiment, [f"paths.root={tmp_path}"])
    assert code == 1
    assert err.strip().count("\n") == 0 and err.startswith("leadml-experiment: error: no scoring run in")


def test_a_bad_test_setting_names_its_key(project) -> None:
    code, _, err = run_entry_point(cli.promote, [f"paths.root={project}", "readout.test.alpha=2"])
    assert code == 1 and "leadml-promote: error: readout.test.alpha must lie between 0 and 1" in err


def _plant_a_lift(root: Path) -> None:
    """The challenger arm's tier A and B leads of the judged nights all convert within ten days (a
    small project has too few tier A leads to judge them alone: the arms are compared on all leads)."""
    scored = pd.concat(
        pd.read_parquet(root / "data" / "scored" / "synthetic" / f"as_of={night}").assign(night=night)
        for night in NIGHTS[:2]
    ).drop_duplicates(s.LEAD_ID)
    engaged = scored[side_column("challenger", "tier")].isin(["A", "B"])
    planted = scored[(scored[ARM] == "challenger") & engaged]
    path = _interim(root) / f"{s.OUTCOMES}.parquet"
    outcomes = pd.read_parquet(path)
    outcomes = outcomes[~outcomes[s.LEAD_ID].isin(planted[s.LEAD_ID])]
    won = pd.DataFrame(
        {
            s.LEAD_ID: planted[s.LEAD_ID].to_numpy(),
            s.STATUS: s.WON,
            s.CLOSED_AT: (pd.to_datetime(planted["night"], utc=True) + pd.Timedelta(days=10)).to_numpy(),
            s.DEAL_VALUE: 50_000.0,
        }
    ).astype({s.CLOSED_AT: outcomes[s.CLOSED_AT].dtype})
    pd.concat([outcomes, won], ignore_index=True).to_parquet(path)


def test_a_planted_lift_wins_and_promote_moves_the_champion_through_the_gate(project, equal_arms) -> None:
    commands = readme_commands()
    assert [c[0] for c in commands] == ["leadml-experiment", "leadml-promote"]
    _plant_a_lift(project)
    with local_tracking():
        shown = run_experiment(_config(project, "experiment", *commands[0][1:], *ALL_LEADS))
        assert shown.readout.decision == r.WINS and shown.readout.winner == "challenger"
        assert "leadml-promote experiment=champion_challenger" in shown.readout.sentence
        assert shown.run_id is not None
        result = run_promote(_config(project, "experiment", *commands[1][1:], *ALL_LEADS))
        assert result.promoted_version == "2" and result.promotion.promote
        assert result.promotion.reasons[0].startswith("passed: ROC AUC")
        assert any("challenger wins" in reason for reason in result.promotion.reasons)
        assert tracking.version_by_alias(MODEL, tracking.CHAMPION) == "2"
        # the winner is the champion now: promoting again has nothing to do
        again = run_promote(_config(project, "experiment", *commands[1][1:], *ALL_LEADS))
        assert again.promoted_version is None and "is the champion already" in again.promotion.reasons[0]


def test_an_arm_whose_model_changed_is_named_and_never_promoted(project) -> None:
    """@challenger moved back to version 1 and one more night scored: the challenger arm mixes two
    versions, which the readout says, and leadml-promote refuses to promote either on it."""
    with local_tracking():
        _tracking(project)
        tracking.set_alias(MODEL, tracking.CHALLENGER, "1")
        run_score(_config(project, "score", "score.as_of=2025-11-17", EXPERIMENT, "tiers=capacity"))
        result = run_promote(_config(project, "experiment", *ALL_LEADS))
    assert any("arm challenger was scored by versions 2, 1" in note for note in result.readout.notes)
    assert result.promoted_version is None
    if result.readout.winner == "challenger":
        assert result.promotion.reasons[0].startswith("not one version's result: arm challenger")
    page = result.html.read_text()
    assert "arm challenger was scored by versions 2, 1" in page
