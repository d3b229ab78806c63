"""The notebooks run top to bottom on a small generated project; ``leadml.reporting.explore`` on tiny frames.

The notebooks run in a real Jupyter kernel (nbclient) on this interpreter, with the project
root passed as ``LEADML_ROOT`` and MLflow on the project's own SQLite store, as a data
scientist would open them after ``make train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from factories import REPO, activities_table, at, leads_table, outcomes_table
from leadml.data import schema as s
from leadml.modelling.scorer import PROBABILITY
from leadml.reporting import explore

NOTEBOOKS = REPO / "notebooks"
EXPLORE, DIAGNOSTICS = "01-explore-leads.ipynb", "02-model-diagnostics.ipynb"
CELL_TIMEOUT = 300  # seconds per cell


@pytest.fixture(scope="module")
def project(project_copy) -> Path:
    """A project folder with generated, ingested, featured data and a champion in its own store
    (a copy of the shared trained project, conftest.trained_project)."""
    return project_copy("notebooks")


@pytest.fixture
def kernel(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment of the notebook kernel: this interpreter as ``python3``, the project as LEADML_ROOT.

    The kernel spec is written to a folder of its own and put first on JUPYTER_PATH, so a
    ``python3`` kernel installed elsewhere (the user's) cannot stand in for this venv.
    """
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("LEADML_ROOT", str(project))
    for name in ("MLFLOW_TRACKING_URI", "LEADML_OVERRIDES", "LEADML_MODEL_URI", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _execute(name: str, out_dir: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from notebooks/; a cell's error fails the test with its traceback."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(notebook, out_dir / name)  # the executed copy, to open when a test fails
    return notebook


def _outputs(notebook: nbformat.NotebookNode, cell_id: str) -> list[dict]:
    cells = [cell for cell in notebook.cells if cell.get("id") == cell_id]
    assert len(cells) == 1, f"no cell {cell_id!r}"
    return cells[0].get("outputs", [])


def _text(outputs: list[dict]) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.append(str(data.get("text/html", "")) + str(data.get("text/plain", "")))
    return "\n".join(parts)


def _has_image(outputs: list[dict]) -> bool:
    return any("image/png" in output.get("data", {}) for output in outputs)


# --------------------------------------------------------------------------- the notebooks
def test_committed_notebooks_have_no_outputs() -> None:
    for name in (EXPLORE, DIAGNOSTICS):
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3"
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.get("id"))


@pytest.mark.slow
def test_explore_notebook_runs_on_a_small_project(project: Path, kernel: Path) -> None:
    notebook = _execute(EXPLORE, kernel)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert str(project.resolve()) in _text(
        _outputs(notebook, "setup")
    )  # the data of LEADML_ROOT, not the repository's
    funnel = _text(_outputs(notebook, "funnel-table"))
    assert "conversion_rate" in funnel and "won_unengaged" in funnel and ">all<" in funnel
    assert "quarantined_rows" in _text(_outputs(notebook, "quality"))
    for cell_id in ("volume", "cohorts", "funnel", "close", "activity", "snapshots"):
        assert _has_image(_outputs(notebook, cell_id)), cell_id
    assert "pricing" in _text(_outputs(notebook, "activity-table"))
    assert "conversion_rate" in _text(_outputs(notebook, "horizon"))


@pytest.mark.slow
def test_diagnostics_notebook_runs_on_the_champion(kernel: Path) -> None:
    notebook = _execute(DIAGNOSTICS, kernel)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert "@champion (version 1)" in _text(_outputs(notebook, "setup"))
    assert "same rows as the training run: True" in _text(_outputs(notebook, "rows"))
    assert "roc_auc" in _text(_outputs(notebook, "metrics"))
    for cell_id in ("reliability", "roc", "gains", "shap", "shap-beeswarm"):
        assert _has_image(_outputs(notebook, cell_id)), cell_id
    errors_table = _text(_outputs(notebook, "errors"))
    assert explore.MISS in errors_table and explore.FALSE_ALARM in errors_table
    assert "conversion_rate" in _text(_outputs(notebook, "tiers"))


@pytest.mark.slow
def test_largest_errors_are_the_extremes_with_reasons_in_words(project: Path, monkeypatch) -> None:
    from leadml.adapters import layout as stages
    from leadml.adapters import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(f"sqlite:///{project / 'mlflow.db'}", "leadml-synthetic", project / "mlruns")
    model_uri, _ = tracking.production_model("leadml-synthetic")
    scorer = tracking.load_scorer(model_uri)
    run = tracking.model_run(model_uri)
    assert run["config"]["split"]["kind"] == "time" and set(run["datasets"]) >= {"train", "test"}

    snapshots = pd.read_parquet(project / "data" / "features" / "synthetic" / stages.SNAPSHOTS)
    test = explore.evaluation_rows(snapshots, run["config"])
    assert explore.matches_logged_window(test, run["datasets"]) is True
    assert explore.matches_logged_window(test.iloc[1:], run["datasets"]) is False
    predicted = explore.predict_rows(scorer, test)
    assert predicted.index.equals(test.index) and predicted[PROBABILITY].between(0, 1).all()

    errors = explore.largest_errors(scorer, test, predicted, n=5)
    misses, alarms = errors[errors["kind"] == explore.MISS], errors[errors["kind"] == explore.FALSE_ALARM]
    assert len(misses) == len(alarms) == 5
    assert (misses[s.LABEL] == 1).all() and (alarms[s.LABEL] == 0).all()
    assert misses[s.LEAD_ID].is_unique and alarms[s.LEAD_ID].is_unique
    won = predicted[predicted[s.LABEL] == 1][PROBABILITY]
    assert misses[PROBABILITY].max() <= won.nsmallest(len(won) // 2).max()
    assert misses[PROBABILITY].is_monotonic_increasing and alarms[PROBABILITY].is_monotonic_decreasing
    reasons = pd.concat([errors["reasons_for"], errors["reasons_against"]])
    assert reasons.str.len().gt(0).mean() > 0.5
    assert not reasons.str.contains(r"\bn_\w+_\d+d\b").any()  # sentences, never feature names
    assert errors["reasons_for"].str.contains(r"\(\+\d").any()

    values, sample = explore.explain_sample(scorer, test, n=50)
    assert values.shape == (50, len(scorer.feature_names)) and list(sample.columns) == scorer.feature_names


# --------------------------------------------------------------------------- explore on tiny frames
def _crm() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    leads = leads_table(
        [
            {s.LEAD_ID: "L1", s.CREATED_AT: at(0), s.SOURCE: "web_organic"},
            {s.LEAD_ID: "L2", s.CREATED_AT: at(1), s.SOURCE: "web_organic"},
            {s.LEAD_ID: "L3", s.CREATED_AT: at(40), s.SOURCE: "referral"},
            {s.LEAD_ID: "L4", s.CREATED_AT: at(70), s.SOURCE: "referral"},
            {s.LEAD_ID: "L5", s.CREATED_AT: at(2), s.SOURCE: "paid_search"},
        ]
    )
    outcomes = outcomes_table(
        [
            ("L1", s.WON, at(30), 5000.0),
            ("L2", s.LOST, at(20), None),
            ("L3", s.LOST, at(60), None),
            ("L4", s.WON, at(80), 8000.0),  # won without any recorded activity
            ("L5", s.OPEN, None, None),
        ]
    )
    activities = activities_table(
        [
            ("L1", at(5), s.PAGE_VIEW, "pricing"),
            ("L1", at(10), "email_open", None),
            ("L1", at(35), "meeting", None),  # after L1 closed: not counted in the mix
            ("L2", at(3), "email_open", None),
            ("L3", at(45), s.PAGE_VIEW, "blog"),
            ("L5", at(4), s.PAGE_VIEW, "pricing"),
            ("L9", at(4), "call", None),  # a lead the tables do not know
        ]
    )
    activities[s.LEAD_ID] = activities[s.LEAD_ID].astype("category")  # as ingestion stores it
    return leads, outcomes, activities


def test_funnel_counts_nested_stages_and_rates() -> None:
    leads, outcomes, activities = _crm()
    table = explore.funnel(leads, outcomes, activities)
    assert list(table.index) == ["web_organic", "referral", "paid_search", explore.ALL]
    counts = table[[*explore.FUNNEL_STAGES, "won_unengaged"]]
    assert counts.loc["web_organic"].tolist() == [2, 2, 2, 1, 0]
    assert counts.loc["referral"].tolist() == [2, 1, 1, 0, 1]
    assert counts.loc["paid_search"].tolist() == [1, 1, 0, 0, 0]
    assert counts.loc[explore.ALL].tolist() == [5, 4, 3, 1, 1]
    everyone = table.loc[explore.ALL]
    assert everyone["engaged_rate"] == pytest.approx(0.8)
    assert everyone["close_rate"] == pytest.approx(0.75)
    assert everyone["win_rate"] == pytest.approx(1 / 3)
    assert everyone["conversion_rate"] == pytest.approx(0.2)
    assert np.isnan(table.loc["paid_search", "win_rate"])  # nothing closed: no win rate, not 0
    explore.funnel_figure(table)


def test_activity_mix_counts_events_before_the_close_per_closed_lead() -> None:
    _, outcomes, activities = _crm()
    mix = explore.activity_mix(activities, outcomes)
    assert mix.attrs == {"won_leads": 2, "lost_leads": 2}
    assert set(mix.index) == {"page_view: pricing", "email_open", "page_view: blog"}  # no meeting, no call
    assert mix.loc["page_view: pricing", [s.WON, s.LOST]].tolist() == [0.5, 0.0]
    assert mix.loc["email_open", [s.WON, s.LOST, "ratio"]].tolist() == [0.5, 0.5, 1.0]
    assert mix.loc["page_view: blog", "lost_reach"] == 0.5
    assert mix.index[0] == "page_view: pricing" and mix.index[-1] == "page_view: blog"  # by ratio
    explore.activity_mix_figure(mix)


def test_days_to_close_and_its_summary() -> None:
    leads, outcomes, _ = _crm()
    days = explore.days_to_close(leads, outcomes)
    assert dict(zip(days[s.LEAD_ID], days["days"], strict=True)) == {
        "L1": 30.0,
        "L2": 19.0,
        "L3": 20.0,
        "L4": 10.0,
    }
    summary = explore.time_to_close(days)
    assert summary.index[-1] == explore.ALL
    assert summary.loc[explore.ALL, [s.WON, s.LOST]].tolist() == [2, 2]
    assert summary.loc[explore.ALL, "won_median_days"] == 20.0
    assert summary.loc[explore.ALL, "lost_median_days"] == 19.5
    assert summary.loc["referral", [s.WON, s.LOST, "won_p90_days", "lost_p90_days"]].tolist() == [
        1,
        1,
        10,
        20,
    ]
    assert "paid_search" not in summary.index  # nothing closed there
    explore.time_to_close_figure(days)


def test_monthly_volume_and_outcomes_keep_empty_months() -> None:
    leads, outcomes, _ = _crm()
    later = leads_table(
        [{s.LEAD_ID: "L6", s.CREATED_AT: at(130), s.SOURCE: "event"}]
    )  # May, after an empty April
    volume = explore.monthly_volume(pd.concat([leads, later], ignore_index=True))
    assert [f"{month:%Y-%m}" for month in volume.index] == [
        "2025-01",
        "2025-02",
        "2025-03",
        "2025-04",
        "2025-05",
    ]
    assert volume.loc["2025-04-01"].sum() == 0 and volume.to_numpy().sum() == 6
    assert set(volume.columns) == {"web_organic", "referral", "paid_search", "event"}
    assert set(volume.columns[:2]) == {"web_organic", "referral"}  # largest sources first
    cohorts = explore.monthly_outcomes(leads, outcomes)
    january = cohorts.loc["2025-01-01"]
    assert january[["leads", s.WON, s.LOST, s.OPEN]].tolist() == [3, 1, 1, 1]
    assert cohorts[["won_share", "lost_share", "open_share"]].sum(axis=1).round(12).eq(1).all()


def test_ingest_manifest_summaries_and_missing_shares() -> None:
    manifest = {
        "tables": {
            "leads": {"input_rows": 10, "accepted_rows": 8, "quarantined_rows": 2, "collateral_rows": 1,
                      "bad_share": 0.1, "reasons": {"duplicate lead_id": 1, "outcome row quarantined": 1}},
            "activities": {"input_rows": 5, "accepted_rows": 2, "quarantined_rows": 3, "collateral_rows": 0,
                           "bad_share": 0.6, "reasons": {"lead_id not in leads": 3}},
        }
    }  # fmt: skip
    summary = explore.ingest_summary(manifest)
    assert summary.loc["leads", "quarantined_rows"] == 2 and summary.loc["activities", "bad_share"] == 0.6
    reasons = explore.quarantine_reasons(manifest)
    assert reasons.iloc[0].tolist() == ["activities", "lead_id not in leads", 3]
    assert reasons["rows"].sum() == 5
    assert explore.quarantine_reasons({"tables": {}}).empty
    assert explore.activity_mix(activities_table([]), outcomes_table([])).empty
    frame = pd.DataFrame({"a": [1.0, None, None, 4.0], "b": [1, 2, 3, 4], "c": [None, "x", "y", "z"]})
    assert explore.missing_shares(frame).to_dict() == {"a": 0.5, "c": 0.25}


def test_segment_calibration_and_label_rates() -> None:
    predicted = pd.DataFrame(
        {
            s.SOURCE: ["a", "a", "a", "b"],
            s.LABEL: [1, 0, 0, 1],
            PROBABILITY: [0.5, 0.5, 0.2, 0.4],
        }
    )
    table = explore.segment_calibration(predicted)
    assert list(table.index) == ["a", "b", explore.ALL]
    assert table.loc["a", "observed"] == pytest.approx(1 / 3)
    assert table.loc["a", "gap"] == pytest.approx(0.4 - 1 / 3)
    assert table.loc["b", "gap"] == pytest.approx(-0.6)
    assert table.loc[explore.ALL, "rows"] == 4
    snapshots = pd.DataFrame({s.AS_OF: [at(0), at(0), at(7)], s.LABEL: [1, 0, 0]})
    rates = explore.label_rates(snapshots)
    assert rates["snapshots"].tolist() == [2, 1] and rates["rate"].tolist() == [0.5, 0.0]


def test_notebook_readme_names_both_notebooks() -> None:
    readme = (NOTEBOOKS / "README.md").read_text()
    assert EXPLORE in readme and DIAGNOSTICS in readme and "LEADML_ROOT" in readme
    json.loads((NOTEBOOKS / EXPLORE).read_text())  # plain JSON, opens anywhere
