"""Messages that fit: they name the data config file actually read, and the leakage sentinel
says what it checked when it flags nothing (issue 18, "Messages that fit")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from factories import local_tracking, project_config, run_entry_point, user_configs
from leadml import cli
from leadml.errors import CONFIG_FILE, data_config_file
from leadml.modelling.guards import sentinel_sentence
from leadml.modelling.points import no_rules_message

GUARDS = {
    "leakage_threshold": 0.95,
    "post_outcome_presence": [0.95, 0.05],
    "outcome_level_share": 0.10,
}
MY_LEADS = """\
name: my_leads
kind: flat
table: {format: csv, path: exports/leads.csv}
contract: {id: Lead ID, target: Status, positive: [Won], time: Created Date, categorical: [Source]}
"""


def _my_configs(tmp_path: Path) -> Path:
    return user_configs(tmp_path, MY_LEADS)


# --------------------------------------------------------------------------- the data config file
def test_a_message_names_the_recorded_config_file_or_conf_data() -> None:
    assert data_config_file({"name": "bank"}) == "conf/data/bank.yaml"
    assert data_config_file(None) == "conf/data/<name>.yaml"
    assert data_config_file({"name": "my_leads", CONFIG_FILE: "/srv/configs/data/my_leads.yaml"}) == (
        "/srv/configs/data/my_leads.yaml"
    )
    inside = Path.cwd() / "conf" / "data" / "bank.yaml"
    assert data_config_file({"name": "bank", CONFIG_FILE: str(inside)}) == "conf/data/bank.yaml"


def test_no_rules_message_names_the_file_it_is_given() -> None:
    assert "to the data mapping in conf/data/crm.yaml " in no_rules_message("crm")
    message = no_rules_message("my_leads", "/srv/configs/data/my_leads.yaml")
    assert "to the data mapping in /srv/configs/data/my_leads.yaml " in message


def test_every_entry_point_records_the_file_found_through_the_search_path(tmp_path: Path) -> None:
    folder = _my_configs(tmp_path)
    seen: list[DictConfig] = []
    main = cli._entry_point("ingest", seen.append)
    code, _, err = run_entry_point(
        main, ["leadml-ingest", f"hydra.searchpath=[file://{folder}]", "data=my_leads"]
    )
    assert code == 0, err
    assert seen[0].data[CONFIG_FILE] == str(folder.resolve() / "data" / "my_leads.yaml")
    code, _, err = run_entry_point(main, ["leadml-ingest", "data=x_education"])  # a global package
    assert code == 0, err
    assert seen[1].data[CONFIG_FILE] == str(Path(cli.CONFIG_DIR) / "data" / "x_education.yaml")


def test_model_points_without_rules_names_the_file_to_add_them_to(tmp_path: Path) -> None:
    folder = _my_configs(tmp_path)
    argv = ["leadml-train", f"hydra.searchpath=[file://{folder}]", "data=my_leads", "model=points"]
    code, out, err = run_entry_point(cli.train, [*argv, f"paths.root={tmp_path / 'project'}"])
    where = folder.resolve() / "data" / "my_leads.yaml"
    assert (code, out) == (1, "")  # stopped before ingest and features
    assert err == (
        "leadml-train: error: model=points: the data config (my_leads) has no points rules; add a "
        f"`points:` block with `rules:` (and optionally `tiers:`) to the data mapping in {where} "
        "(under `data:` when the file is a global package), e.g. "
        "points: {rules: [{feature: <column>, ge: 1, points: 10}], tiers: {A: 40, B: 20, C: 5}}\n"
    )
    assert not (tmp_path / "project").exists()


# --------------------------------------------------------------------------- leakage sentinel
def test_the_sentinel_line_names_what_it_checked_and_the_thresholds() -> None:
    assert sentinel_sentence(23, GUARDS) == (
        "leakage sentinel: checked 23 columns (single-feature AUC above 0.95 or below 0.05; filled for "
        "at least 95% of positives and at most 5% of negatives; at least 10% of rows in outcome-coded "
        "levels): none flagged"
    )
    stricter = {"leakage_threshold": 0.85, "post_outcome_presence": [0.9, 0.1], "outcome_level_share": 0.2}
    assert sentinel_sentence(1, stricter) == (
        "leakage sentinel: checked 1 column (single-feature AUC above 0.85 or below 0.15; filled for "
        "at least 90% of positives and at most 10% of negatives; at least 20% of rows in outcome-coded "
        "levels): none flagged"
    )
    without_share = {key: value for key, value in GUARDS.items() if key != "outcome_level_share"}
    assert sentinel_sentence(None, without_share).startswith("leakage sentinel: checked the features (")


@pytest.mark.slow
def test_the_shared_projects_run_flagged_nothing_and_says_what_it_checked(project_copy) -> None:
    """The shared trained project (synthetic CRM, leakage_action stop: it trained, so nothing was
    flagged): the count comes from the run's leakage report, one row per feature checked."""
    from leadml.adapters import tracking

    root = project_copy("messages")
    metadata = json.loads((root / "data" / "features" / "synthetic" / "feature_metadata.json").read_text())
    guards: Any = project_config(root, "train").guards
    with local_tracking():
        tracking.configure(f"sqlite:///{root / 'mlflow.db'}", "leadml-synthetic", root / "mlruns")
        run_id = tracking.version_details("leadml-synthetic", "1")["run_id"]
        report = tracking.run_artifacts(run_id, ["leakage_report.csv"])["leakage_report.csv"]
    checked = len(report)  # what the train stage's summary counts as leakage_checked
    assert not report["flagged"].any()
    assert checked == len(metadata) > 10
    assert sentinel_sentence(checked, guards) == (
        f"leakage sentinel: checked {len(metadata)} columns (single-feature AUC above 0.95 or below 0.05; "
        "filled for at least 95% of positives and at most 5% of negatives; at least 10% of rows in "
        "outcome-coded levels): none flagged"
    )
