"""leadml-export, offline scoring from the export, and the served endpoint (`mlflow models serve`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import Model

from factories import README, copy_project, free_port, local_tracking, project_config, run_entry_point
from leadml import cli
from leadml.adapters import sinks
from leadml.adapters.layout import SCORING_RUN_RECORD, read_interim
from leadml.adapters.model_folder import CHECKSUMS, MODEL_CARD, REQUEST_EXAMPLE, verify_folder
from leadml.cli import run_export, run_report, run_score
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, open_lead_features
from leadml.errors import LeadmlError, ModelIntegrityError, NoModelError
from leadml.scoring.requests import ACTIVITIES, predict_request, requests_from_tables
from leadml.stages.configs import composed_config, recreate_overrides
from leadml.stages.export import ExportResult, clear_dead_exports

MODEL = "leadml-synthetic"
AS_OF = "2025-10-01"
MLFLOW = Path(sys.executable).with_name("mlflow")
START_TIMEOUT = 180.0  # seconds: the scoring server imports MLflow and leadml, slow on a busy machine


@pytest.fixture(scope="module")
def exported(project_copy) -> tuple[Path, ExportResult]:
    """A copy of the shared trained project (conftest) and the export of its champion."""
    root = project_copy("export")
    with local_tracking():
        summary = run_export(project_config(root, "export"))
    return root, summary


@pytest.fixture
def project(exported: tuple[Path, ExportResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project (store, data and export) that a test may break or score into."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, _ = exported
    copy_project(root, tmp_path)
    shutil.copytree(root / "models", tmp_path / "models")
    return tmp_path


def _folder(root: Path) -> Path:
    return root / "models" / f"{MODEL}-v1"


def _closed_port_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there once the probe is closed


# --------------------------------------------------------------------------- export
def test_export_writes_a_verified_mlflow_model_folder_with_its_card(exported, capsys) -> None:
    root, summary = exported
    folder = _folder(root)
    assert summary.path == folder and summary.version == "1"
    assert {"challenger", "champion"} <= set(summary.aliases)
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"MLmodel", "model_code.py", "requirements.txt", "input_example.json", MODEL_CARD} <= names
    assert {"artifacts/leadml_state/scorer.json", "artifacts/leadml_state/booster.txt"} <= names
    assert {REQUEST_EXAMPLE, "export.json", CHECKSUMS, "artifacts/leadml_model.json"} <= names
    record = json.loads((folder / "export.json").read_text())
    assert record["registered_model"] == MODEL and record["run_id"] == summary.run_id

    # the checksum file is sha256sum's format and covers every other file
    listed = {line.split("  ", 1)[1] for line in (folder / CHECKSUMS).read_text().splitlines()}
    assert listed == names - {CHECKSUMS}
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", CHECKSUMS], cwd=folder, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    verify_folder(folder)

    # the registry's model files, byte for byte
    with local_tracking():
        from leadml.adapters import tracking

        tracking.configure(f"sqlite:///{root / 'mlflow.db'}", "leadml-synthetic", root / "mlruns")
        registry = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1", dst_path=str(root / "dl")))
    state = "artifacts/leadml_state/booster.txt"
    assert (registry / state).read_bytes() == (folder / state).read_bytes()
    assert (registry / "MLmodel").read_bytes() == (folder / "MLmodel").read_bytes()
    requirements = (folder / "requirements.txt").read_text()
    assert all(p in requirements for p in ("lightgbm==", "numba==", "pandas==", "mlflow=="))

    # no personal data travels in the examples
    for name in ("input_example.json", "serving_input_example.json", REQUEST_EXAMPLE):
        text = (folder / name).read_text()
        assert "@" not in text and "first_name" not in text and "phone" not in text


def test_model_card_reports_the_run(exported) -> None:
    root, summary = exported
    card = (_folder(root) / MODEL_CARD).read_text()
    for heading in (
        "## Intended use and users",
        "## Label",
        "## Training data",
        "## Features",
        "## Performance on the test window",
        "## Calibration",
        "## Tiers",
        "## Promotion gate",
        "## Known limitations",
        "## How to re-create it",
    ):
        assert heading in card, heading
    run = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(summary.run_id)
    metrics = run.data.metrics
    roc, low, high = (metrics[f"test.lightgbm.roc_auc{k}"] for k in ("", "_low", "_high"))
    assert f"| lightgbm | {roc:.3f} [{low:.3f}, {high:.3f}]" in card
    assert f"{metrics['test.logreg_baseline.roc_auc']:.3f}" in card
    assert "won within 90 days" in card and "promoted" in card
    assert "Account scores: the nightly job rolls the open leads of each account up" in card
    assert "Segment models" not in card  # none configured
    assert "**fit (who the lead and the company are)**" in card
    split = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/split.json"))
    assert f"| test | {split['test']['rows']:,} |" in card


def test_recreate_command_composes_the_runs_config_again(exported) -> None:
    import yaml

    from leadml.reporting.model_card import config_differences as differences

    root, summary = exported
    run = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(summary.run_id)
    logged = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml"))
    overrides = recreate_overrides(logged)
    assert "synthetic.n_leads=5000" in overrides and "model.n_estimators=80" in overrides
    assert not any(o.startswith("model=") for o in overrides)  # lightgbm is the default
    trained_in = logged["paths"]["root"]  # the shared project this one is a copy of
    again = composed_config("train", [f"paths.root={trained_in}", *overrides])
    assert differences(logged, again) == []
    card = (_folder(root) / MODEL_CARD).read_text()
    assert "leadml-train " + " ".join(overrides) in card
    # a non-default group choice is found, not spelled out key by key
    logreg = composed_config("train", [f"paths.root={root}", "model=logreg", "calibration=isotonic"])
    chosen = recreate_overrides(logreg)
    assert "model=logreg" in chosen and "calibration=isotonic" in chosen
    assert differences(logreg, composed_config("train", [f"paths.root={root}", *chosen])) == []


def test_export_of_a_missing_alias_or_version_says_so(project: Path) -> None:
    with local_tracking(), pytest.raises(NoModelError, match="@nobody"):
        run_export(project_config(project, "export", ["export.alias=nobody"]))
    with local_tracking(), pytest.raises(NoModelError, match="version 9"):
        run_export(project_config(project, "export", ["export.version=9"]))


def test_export_round_trip_scores_like_the_registry_model(exported) -> None:
    root, _ = exported
    with local_tracking():
        from leadml.adapters import tracking

        tracking.configure(f"sqlite:///{root / 'mlflow.db'}", "leadml-synthetic", root / "mlruns")
        registry = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    local = mlflow.pyfunc.load_model(str(_folder(root)))
    scorer = local.unwrap_python_model().scorer
    snapshots = pd.read_parquet(root / "data/features/synthetic/snapshots.parquet").tail(300)
    rows = snapshots[[s.LEAD_ID, *scorer.feature_names]].copy()
    for column in rows.columns:
        if isinstance(rows[column].dtype, pd.CategoricalDtype):
            rows[column] = rows[column].astype(object)
    ours, theirs = local.predict(rows), registry.predict(rows)
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["probability"].between(0, 1).all() and set(ours["tier"]) <= {"A", "B", "C", "D"}
    assert ours["positive_reason_1"].notna().any() and ours["warnings"].isna().all()
    # the pyfunc's probability is the scorer's, the one the nightly job writes
    direct = scorer.predict(rows[scorer.feature_names])
    np.testing.assert_allclose(ours["probability"], direct["probability"], rtol=1e-12)


# --------------------------------------------------------------------------- integrity
@pytest.mark.parametrize("damage", ["changed", "missing", "added"])
def test_a_modified_export_is_refused(project: Path, damage: str) -> None:
    from leadml.adapters import tracking

    folder = _folder(project)
    if damage == "changed":
        path = folder / "artifacts" / "leadml_state" / "booster.txt"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        named = "artifacts/leadml_state/booster.txt"
    elif damage == "missing":
        (folder / "requirements.txt").unlink()
        named = "requirements.txt"
    else:
        (folder / "artifacts" / "extra.py").write_text("print('hello')\n")
        named = "artifacts/extra.py"
    with pytest.raises(ModelIntegrityError, match=rf"modified after export \({damage}: {named}") as error:
        tracking.load_scorer(str(folder))
    assert error.value.exit_code == 8
    # MLflow's own loader (what `mlflow models serve` runs) refuses it too
    with pytest.raises(Exception, match="modified after export"):
        mlflow.pyfunc.load_model(str(folder))
    with local_tracking(), pytest.raises(ModelIntegrityError):
        run_score(project_config(project, "score", [f"score.as_of={AS_OF}", f"score.model_uri={folder}"]))
    assert not (project / "data" / "scored" / "synthetic" / f"as_of={AS_OF}").exists()


def test_an_export_without_its_checksums_is_refused(project: Path) -> None:
    from leadml.adapters import tracking

    (_folder(project) / CHECKSUMS).unlink()
    with pytest.raises(ModelIntegrityError, match="has no SHA256SUMS"):
        tracking.load_scorer(str(_folder(project)))
    with pytest.raises(NoModelError, match="no such folder"):
        tracking.load_scorer(str(project / "models" / "nothing-v1"))


# --------------------------------------------------------------------------- offline scoring
def test_offline_scoring_from_the_export_equals_the_registry(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_tracking():
        run_score(
            project_config(project, "score", [f"score.as_of={AS_OF}", f"score.output_dir={project}/registry"])
        )
    runs_before = _scoring_runs(project)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", _closed_port_uri())  # no tracking server anywhere
    folder = _folder(project)
    summary = run_score(
        project_config(project, "score", [f"score.as_of={AS_OF}", f"score.model_uri={folder}"])
    )
    assert summary.run_id is None and summary.model_version == "1"
    registry = pd.read_parquet(project / "registry" / f"as_of={AS_OF}" / sinks.PART_FILE)
    offline = pd.read_parquet(Path(summary.output) / sinks.PART_FILE)
    pd.testing.assert_frame_equal(registry, offline)
    assert len(offline) > 100 and offline["positive_reason_1"].notna().any()
    record = json.loads((Path(summary.output) / SCORING_RUN_RECORD).read_text())
    assert record["model_uri"] == str(folder) and record["tracking_uri"] is None

    # the leadership report of that run needs no tracking server either
    files = run_report(project_config(project, "report"))
    assert files.leads == len(offline) and files.html.exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert _scoring_runs(project) == runs_before  # nothing was logged anywhere


def _readme_offline_commands() -> list[list[str]]:
    """The ``leadml-score`` lines of the README's "Offline batch scoring" block, as overrides."""
    section = README.read_text().split("**Offline batch scoring.**", 1)[1].split("```bash", 1)[1]
    lines = section.split("```", 1)[0].splitlines()
    return [
        shlex.split(line.split("#")[0])[1:] for line in lines if line.startswith(".venv/bin/leadml-score")
    ]


def test_the_readme_offline_scoring_commands_score_from_the_export(project: Path) -> None:
    commands = _readme_offline_commands()
    assert len(commands) == 2 and all(any(a.startswith("score.model_uri=") for a in c) for c in commands)
    for overrides in commands:
        overrides = [a.replace("models/leadml-synthetic-v1", str(_folder(project))) for a in overrides]
        with local_tracking():
            summary = run_score(project_config(project, "score", [f"score.as_of={AS_OF}", *overrides]))
        assert summary.model_version == "1" and summary.leads > 100
        assert (summary.run_id is not None) == ("score.track=true" in overrides)


def _scoring_runs(root: Path) -> int:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("leadml-synthetic-scoring")
    return 0 if experiment is None else len(client.search_runs([experiment.experiment_id]))


# --------------------------------------------------------------------------- requests
@pytest.fixture(scope="module")
def served_scorer(exported):
    from leadml.adapters import tracking

    root, _ = exported
    return tracking.load_scorer(str(_folder(root)))


def test_one_lead_request_scores_exactly_like_the_nightly_job(exported, served_scorer) -> None:
    root, _ = exported
    tables = read_interim(root / "data/interim/synthetic", s.CRM_TABLES)
    settings = FeatureSettings.from_mapping(served_scorer.feature_settings)
    nightly = open_lead_features(tables, pd.Timestamp(AS_OF, tz="UTC"), settings)
    expected = served_scorer.predict(nightly[served_scorer.feature_names])["probability"]
    picked = np.random.default_rng(0).choice(len(nightly), size=12, replace=False)
    requests_ = requests_from_tables(
        served_scorer, tables, list(nightly[s.LEAD_ID].iloc[picked]), f"{AS_OF}T00:00:00Z"
    )
    answer = predict_request(served_scorer, pd.DataFrame(requests_))
    np.testing.assert_allclose(answer["probability"], expected.iloc[picked].to_numpy(), rtol=1e-10)
    assert list(answer[s.LEAD_ID]) == list(nightly[s.LEAD_ID].iloc[picked])
    assert answer["tier"].notna().all() and answer["positive_reason_1"].notna().all()


def test_request_warnings_name_what_was_missing_or_ignored(served_scorer) -> None:
    request = {
        s.CREATED_AT: "2025-06-01T10:00:00Z",
        "as_of": "2025-07-01",
        s.INDUSTRY: "an industry nobody has",
        ACTIVITIES: [
            {s.TIMESTAMP: "2025-06-20T09:00:00Z", s.ACTIVITY_TYPE: "page_view", s.PAGE_CATEGORY: "pricing"},
            {s.TIMESTAMP: "2025-07-02T09:00:00Z", s.ACTIVITY_TYPE: "demo_request"},
        ],
    }
    answer = predict_request(served_scorer, pd.DataFrame([request])).iloc[0]
    assert "not given, scored as unknown: job_title, email_domain" in answer["warnings"]
    assert "1 activity at or after as_of ignored" in answer["warnings"]
    # spelt as the nightly job stores a category (trimmed, case-folded, separators as "_")
    assert "industry 'an_industry_nobody_has' not seen in training" in answer["warnings"]
    later = predict_request(served_scorer, pd.DataFrame([{**request, "as_of": "2025-07-03"}])).iloc[0]
    assert later["probability"] != answer["probability"]  # the demo request counts once it is past


def test_a_request_with_its_previous_answer_says_why_the_lead_moved(served_scorer) -> None:
    """The endpoint's answer carries the groups' contributions; given back as ``previous_answer`` with a
    later request, the answer says why the lead moved, exactly as the nightly job does."""
    request = {
        s.CREATED_AT: "2025-06-01T10:00:00Z", "as_of": "2025-07-01", s.JOB_TITLE: "Head of IT",
        ACTIVITIES: [
            {s.TIMESTAMP: "2025-06-20T09:00:00Z", s.ACTIVITY_TYPE: "page_view", s.PAGE_CATEGORY: "pricing"},
            {s.TIMESTAMP: "2025-07-02T09:00:00Z", s.ACTIVITY_TYPE: "demo_request"},
        ],
    }  # fmt: skip
    first = predict_request(served_scorer, pd.DataFrame([request])).iloc[0]
    assert first["movement"] is None and np.isnan(first["margin_change"])
    previous = {
        k: v
        for k, v in first.items()
        if k in ("probability", "margin", "base_value") or k.startswith("group:")
    }
    later = predict_request(
        served_scorer, pd.DataFrame([{**request, "as_of": "2025-07-09", "previous_answer": previous}])
    )
    row = later.iloc[0]
    assert row["margin_change"] == pytest.approx(row["margin"] - first["margin"], abs=1e-12)
    assert row["movement"].startswith(("rose ", "fell ")) and "demo requests" in row["movement"]
    with pytest.raises(LeadmlError, match="field 'previous_answer': 'margin' missing"):
        predict_request(served_scorer, pd.DataFrame([{**request, "previous_answer": {"probability": 0.1}}]))


BAD_REQUESTS = [
    ({s.CREATED_AT: "yesterday"}, "row 0, field 'created_at': 'yesterday' is not an ISO 8601 date-time"),
    ({ACTIVITIES: []}, "'created_at' is required"),
    ({s.CREATED_AT: "2025-05-01", "as_of": "2025-04-01"}, "is after as_of"),
    (
        {s.CREATED_AT: "2025-05-01", s.ESTIMATED_DEAL_VALUE: "many"},
        "field 'estimated_deal_value': 'many' is not a number",
    ),
    ({s.CREATED_AT: "2025-05-01", ACTIVITIES: "lots"}, "expected a list of"),
    (
        {s.CREATED_AT: "2025-05-01", ACTIVITIES: [{s.TIMESTAMP: ["2025-05-02"], s.ACTIVITY_TYPE: "call"}]},
        "activities[0].timestamp: expected a value, got list",
    ),
    ({s.CREATED_AT: "2025-05-01", ACTIVITIES: ["call"]}, "activities[0]: expected an object with"),
    ({s.CREATED_AT: "2025-05-01", ACTIVITIES: [{"when": "x"}]}, "unknown field(s) ['when']"),
    ({"n_events_7d": "x"}, "field 'n_events_7d': 'x' is not a number"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
def test_bad_requests_raise_a_message_naming_row_and_field(served_scorer, request_, message) -> None:
    with pytest.raises(LeadmlError) as error:
        predict_request(served_scorer, pd.DataFrame([request_]))
    assert message in str(error.value)


# --------------------------------------------------------------------------- the endpoint
class ScoringServer:
    """``mlflow models serve --env-manager local`` on an exported folder, at a free loopback port."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            # uvicorn is found on PATH, as in an activated virtual environment
            "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": _closed_port_uri(),
        }
        command = [str(MLFLOW), "models", "serve", "-m", str(folder), "--env-manager", "local"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.log = log
        self.process = subprocess.Popen(
            command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the scoring server stopped:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the scoring server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def post(self, body: object, content_type: str = "application/json") -> requests.Response:
        data = body if isinstance(body, str) else json.dumps(body)
        return requests.post(
            f"{self.url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=60
        )


@pytest.mark.skipif(not MLFLOW.exists(), reason=f"no mlflow executable at {MLFLOW}")
def test_served_endpoint_answers_valid_and_invalid_requests(exported, served_scorer, tmp_path: Path) -> None:
    root, _ = exported
    folder = _folder(root)
    server = ScoringServer(folder, tmp_path / "serve.log")
    try:
        server.wait()
        example = json.loads((folder / REQUEST_EXAMPLE).read_text())
        answer = server.post(example)
        assert answer.status_code == 200, answer.text
        [row] = answer.json()["predictions"]
        local = predict_request(served_scorer, pd.DataFrame(example["dataframe_records"])).iloc[0]
        assert row["probability"] == pytest.approx(local["probability"], rel=1e-12)
        assert row["tier"] == local["tier"] and row["lead_id"] == "example-1"
        assert row["positive_reason_1"] and row["negative_reason_1"]

        # a real lead as a CRM would post it, and the same lead's precomputed features
        tables = read_interim(root / "data/interim/synthetic", s.CRM_TABLES)
        settings = FeatureSettings.from_mapping(served_scorer.feature_settings)
        nightly = open_lead_features(tables, pd.Timestamp(AS_OF, tz="UTC"), settings).head(3)
        expected = served_scorer.predict(nightly[served_scorer.feature_names])["probability"].to_numpy()
        posted = requests_from_tables(served_scorer, tables, list(nightly[s.LEAD_ID]), AS_OF)
        by_lead = server.post({"dataframe_records": posted})
        assert by_lead.status_code == 200, by_lead.text
        got = [p["probability"] for p in by_lead.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        features = json.loads(
            nightly[[s.LEAD_ID, *served_scorer.feature_names]].astype(object).to_json(orient="records")
        )
        by_features = server.post({"dataframe_records": features})
        assert by_features.status_code == 200, by_features.text
        np.testing.assert_allclose([p["probability"] for p in by_features.json()["predictions"]], expected)

        # no input schema (MLflow's check of it cost more than the answer): the other JSON formats still
        # carry both shapes, and fields the model does not know are ignored, named once in the log
        assert Model.load(str(folder)).get_input_schema() is None
        columns = list(posted[0])
        split = {"columns": columns, "data": [[lead[name] for name in columns] for lead in posted]}
        personal = [{**lead, "email": "jane@example.com", "first_name": "Jane"} for lead in posted]
        for body in ({"inputs": posted}, {"dataframe_split": split}, {"dataframe_records": personal}):
            answer = server.post(body)
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose([p["probability"] for p in answer.json()["predictions"]], expected)
        assert server.post({"dataframe_records": personal}).status_code == 200
        log = server.log.read_text()
        assert log.count("request field(s) ['email', 'first_name'] are not fields of this model") == 1

        # malformed requests: 4xx with a message naming the problem, never a 500 or a traceback
        for body, content_type, status, message in [
            ({"dataframe_records": [{"created_at": "yesterday"}]}, None, 400, "'created_at': 'yesterday'"),
            (
                {"dataframe_records": [{"created_at": "2025-05-01", "estimated_deal_value": "many"}]},
                None,
                400,
                "many",
            ),
            (
                {"dataframe_records": [{"created_at": "2025-05-01", ACTIVITIES: ["a page view"]}]},
                None,
                400,
                "activities[0]: expected an object",
            ),
            # an activity the nightly job would quarantine is left out, as the nightly job leaves it out
            (
                {"dataframe_records": [{"created_at": "2025-05-01", ACTIVITIES: [{"timestamp": 5}]}]},
                None,
                200,
                "the nightly job quarantines such activities (activities[0].timestamp",
            ),
            ({"dataframe_records": [{"no_such_field": 1}]}, None, 400, "no field of the request is known"),
            ('{"dataframe_records": [{"created_at"', None, 400, "valid JSON"),
            # MLflow's JSON parser fails on it with a RecursionError (500): leadml bounds the nesting first
            ('{"dataframe_records": ' + "[" * 100_000 + "]" * 100_000 + "}", None, 400, "levels deep"),
            ({"records": []}, None, 400, "dataframe_records"),
            ("hello", "text/plain", 415, "content types"),
        ]:
            response = server.post(body, content_type or "application/json")
            assert response.status_code == status, (body, response.status_code, response.text)
            assert message in response.text, (body, response.text)
            assert "Traceback" not in response.text and "stack_trace" not in response.text
    finally:
        server.stop()


@pytest.mark.skipif(not MLFLOW.exists(), reason=f"no mlflow executable at {MLFLOW}")
def test_served_endpoint_refuses_a_modified_export(project: Path, tmp_path: Path) -> None:
    folder = _folder(project)
    (folder / REQUEST_EXAMPLE).write_text("{}")
    server = ScoringServer(folder, tmp_path / "serve.log")
    try:
        with pytest.raises(RuntimeError, match="modified after export"):
            server.wait()
    finally:
        server.stop()


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["2025-05-01", "2025-05-01T10:00:00+02:00", "1899-12-31", "not a date", "", "pricing"]),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=3)
)
EVENT = st.dictionaries(
    st.sampled_from([s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY, "other"]),
    st.one_of(SCALARS, st.sampled_from([*s.ACTIVITY_TYPES, "2025-04-30T08:00:00Z"])),
    max_size=4,
)
FIELDS = [s.LEAD_ID, "as_of", s.CREATED_AT, s.SOURCE, s.EMPLOYEES, "email_domain", "n_events_7d", "seniority"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                **{field: VALUES for field in FIELDS},
                ACTIVITIES: st.one_of(VALUES, st.lists(st.one_of(EVENT, SCALARS), max_size=4)),
            },
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_request_is_answered_or_refused_with_a_message(served_scorer, rows) -> None:
    """Whatever a client sends: probabilities for every row, or one RequestError; never a crash."""
    from leadml.scoring.requests import RequestError

    frame = pd.DataFrame(rows) if any(rows) else pd.DataFrame(index=range(len(rows)))
    try:
        answer = predict_request(served_scorer, frame)
    except RequestError as error:
        assert str(error) and "Traceback" not in str(error)
        return
    assert len(answer) == len(rows)
    assert answer["probability"].between(0, 1).all() and answer["tier"].notna().all()


# --------------------------------------------------------------------------- faults of the export folder
LEADML_EXPORT = Path(sys.executable).parent / "leadml-export"


def leadml_export(root: Path, *overrides: str) -> tuple[int, str, str]:
    return run_entry_point(cli.export, ["leadml-export", f"paths.root={root}", *overrides])


def test_a_full_disk_as_the_export_folder_is_named_with_exit_1(project: Path, full_disk: Path) -> None:
    """Not exit 2 ("no production model"): the champion is there, the disk is not."""
    out = full_disk / "models"
    code, _, stderr = leadml_export(project, f"export.output_dir={out}")
    lines = [line for line in stderr.splitlines() if line.startswith("leadml-export: error: ")]
    assert code == LeadmlError.exit_code and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert str(out) in lines[0] and "no space left" in lines[0], lines[0]
    assert list(out.iterdir()) == []  # the staging folder went with the run


def test_an_export_killed_midway_is_cleaned_up_by_the_next_one(project: Path) -> None:
    """A real leadml-export killed with SIGKILL while its staging folder is being filled."""
    models = project / "models"
    shutil.rmtree(models)
    process = subprocess.Popen(
        [str(LEADML_EXPORT), f"paths.root={project}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not list(models.glob(".*.staging-*")):
            assert process.poll() is None, "the export ended before it was killed"
            assert time.monotonic() < deadline, "the export never started staging"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert list(models.glob(".*.staging-*")) and not _folder(project).exists()
    live = models / f".{MODEL}-v1.staging-{os.getpid()}-running"  # an export still running beside
    live.mkdir()
    code, _, stderr = leadml_export(project)
    assert code == 0, stderr
    assert sorted(p.name for p in models.iterdir()) == sorted([_folder(project).name, live.name])
    verify_folder(_folder(project))


def test_an_earlier_export_set_aside_by_a_killed_export_comes_back(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(finished.stdout)  # a process that has ended
    aside = tmp_path / f".{MODEL}-v3.replaced-{dead}"
    aside.mkdir()
    (aside / CHECKSUMS).write_text("")
    (tmp_path / f".{MODEL}-v3.staging-{dead}-abc").mkdir()
    clear_dead_exports(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{MODEL}-v3"]
    assert (tmp_path / f"{MODEL}-v3" / CHECKSUMS).exists()
