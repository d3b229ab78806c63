"""The registered model and its export hold no pickle (issue 22): the scorer is saved as code and
data, loads with MLflow's pickle deserialization turned off, refuses a tampered booster, never runs a
planted pickle; a version pickled by an earlier leadml still loads with a warning and exports
without pickle."""

from __future__ import annotations

import json
import logging
import pickle
import pickletools
import shutil
import tempfile
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import Model

from factories import local_tracking, project_config
from leadml.adapters import tracking
from leadml.adapters.model_folder import write_checksums
from leadml.cli import run_export, run_score
from leadml.errors import ModelIntegrityError, NoModelError
from leadml.modelling.scorer_state import BOOSTER_FILE
from leadml.scoring.pyfunc import STATE_ARTIFACT, LeadScorerModel
from leadml.scoring.requests import MODEL_INFO_ARTIFACT, predict_request, write_model_info

MODEL = "leadml-synthetic"
AS_OF = "2025-10-01"
PICKLE_OFF = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


@pytest.fixture(scope="module")
def root(project_copy) -> Path:
    """A copy of the shared trained project with its champion exported."""
    root = project_copy("no-pickle")
    with local_tracking():
        run_export(project_config(root, "export"))
    return root


@pytest.fixture
def project(root: Path, tmp_path: Path) -> Path:
    """A copy of the project (store, data, export) a test may change."""
    shutil.copytree(root, tmp_path / "project")
    return tmp_path / "project"


def _export(root: Path, version: str = "1") -> Path:
    return root / "models" / f"{MODEL}-v{version}"


def _configure(root: Path) -> None:
    tracking.configure(f"sqlite:///{root / 'mlflow.db'}", MODEL, root / "mlruns")


def _registry_copy(root: Path, version: str, target: Path) -> Path:
    with local_tracking():
        _configure(root)
        return Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=str(target)))


def _is_pickle(data: bytes) -> bool:
    """A pickle stream: protocol 2+ opens with PROTO; any protocol parses to a STOP at its last byte."""
    if len(data) > 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    try:
        last = None
        for opcode, _, position in pickletools.genops(data):
            last = (opcode.name, position)
    except Exception:
        return False
    return last == ("STOP", len(data) - 1)


def _pickles(folder: Path) -> list[str]:
    """Every file in ``folder`` (and member of a zip file, such as skops') that is or holds a pickle."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.suffix in (".pkl", ".pickle") or _is_pickle(path.read_bytes()):
            found.append(name)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                found += [f"{name}:{m}" for m in archive.namelist() if _is_pickle(archive.read(m))]
    return found


def _request_frame(root: Path) -> pd.DataFrame:
    example = json.loads((_export(root) / "request_example.json").read_text())
    return pd.DataFrame(example["dataframe_records"])


def test_the_pickle_detector_finds_pickles_of_every_protocol(tmp_path: Path) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert _is_pickle(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=protocol))
    assert not _is_pickle(b"tree\nversion=v4\nnum_class=1\n.")
    assert not _is_pickle(b'{"format": "leadml-scorer"}')


def test_the_registered_model_and_its_export_hold_no_pickle(root: Path, tmp_path: Path) -> None:
    registry = _registry_copy(root, "1", tmp_path / "registry")
    for folder in (registry, _export(root)):
        assert _pickles(folder) == []
        flavor = Model.load(str(folder)).flavors["python_function"]
        assert "model_code_path" in flavor and "python_model" not in flavor
        assert (folder / "model_code.py").read_text().count("\n") < 12  # two lines of code
        state = folder / "artifacts" / STATE_ARTIFACT
        assert {p.name for p in state.iterdir()} == {"scorer.json", BOOSTER_FILE}


def test_an_export_loads_and_scores_with_pickle_deserialization_off(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PICKLE_OFF, "false")
    folder = _export(project)
    answer = mlflow.pyfunc.load_model(str(folder)).predict(_request_frame(project))
    assert answer["probability"].between(0, 1).all() and answer["positive_reason_1"].notna().all()
    with local_tracking():
        summary = run_score(
            project_config(project, "score", [f"score.as_of={AS_OF}", f"score.model_uri={folder}"])
        )
    scored = pd.read_parquet(Path(summary.output))
    assert len(scored) > 100 and scored["probability"].between(0, 1).all()


def _tamper_booster(folder: Path) -> None:
    """Change one leaf value of the first tree: still a valid LightGBM model, scoring differently."""
    path = folder / "artifacts" / STATE_ARTIFACT / BOOSTER_FILE
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
    values = lines[at].removeprefix("leaf_value=").split()
    values[0] = repr(float(values[0]) + 3.0)
    lines[at] = "leaf_value=" + " ".join(values) + "\n"
    path.write_text("".join(lines))


def test_a_tampered_booster_text_is_refused(project: Path, tmp_path: Path) -> None:
    folder = _export(project)
    _tamper_booster(folder)
    with pytest.raises(ModelIntegrityError, match=r"changed: artifacts/leadml_state/booster\.txt") as error:
        tracking.load_scorer(str(folder))
    assert error.value.exit_code == 8
    with pytest.raises(Exception, match="modified after export"):
        mlflow.pyfunc.load_model(str(folder))  # what `mlflow models serve` runs

    # a registry copy has no SHA256SUMS: the digest the state recorded refuses it
    copy = _registry_copy(project, "1", tmp_path / "registry")
    _tamper_booster(copy)
    with pytest.raises(NoModelError, match=r"booster\.txt changed after the model was saved"):
        tracking.load_scorer(str(copy))


class _Planted:
    """Unpickling it creates ``marker``: the proof a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_a_planted_pickle_is_never_executed(project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "the-pickle-ran"
    folder = _export(project)
    payload = pickle.dumps(_Planted(marker))
    for planted in (
        "python_model.pkl",
        "artifacts/python_model.pkl",
        f"artifacts/{STATE_ARTIFACT}/scorer.pkl",
    ):
        (folder / planted).write_bytes(payload)
    write_checksums(folder)  # whoever can plant a file can rewrite SHA256SUMS too
    scorer = tracking.load_scorer(str(folder))
    model = mlflow.pyfunc.load_model(str(folder))
    assert model.predict(_request_frame(project))["probability"].notna().all()
    assert predict_request(scorer, _request_frame(project))["probability"].notna().all()
    assert not marker.exists()
    pickle.loads(payload)  # the payload does run when unpickled: the test above could fail
    assert marker.exists()


def _log_pickled_version(root: Path, scorer) -> str:  # type: ignore[no-untyped-def]
    """Register ``scorer`` as leadml before 0.2.0 did: a cloudpickled pyfunc; the new version."""
    run_id = tracking.model_run(f"models:/{MODEL}/1")["run_id"]  # its config, for the export's card
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run(run_id=run_id):
        info = write_model_info(scorer, Path(folder))
        logged = mlflow.pyfunc.log_model(
            name="model", python_model=LeadScorerModel(scorer), artifacts={MODEL_INFO_ARTIFACT: str(info)}
        )
    return str(mlflow.register_model(logged.model_uri, MODEL).version)


def test_a_version_pickled_by_an_earlier_leadml_warns_and_exports_without_pickle(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _request_frame(project)
    with local_tracking():
        _configure(project)
        champion = tracking.load_scorer(f"models:/{MODEL}@champion")
        version = _log_pickled_version(project, champion)
        mlflow.MlflowClient().set_registered_model_alias(MODEL, "legacy", version)
        with caplog.at_level(logging.WARNING, logger="leadml"):
            pickled = tracking.load_scorer(f"models:/{MODEL}@legacy")
        assert (
            f"models:/{MODEL}@legacy (version {version}) was saved by an earlier leadml as a Python pickle"
            in (caplog.text)
        )
        assert "export it again with leadml-export" in caplog.text

        monkeypatch.setenv(PICKLE_OFF, "false")
        with pytest.raises(NoModelError, match=f"{PICKLE_OFF}=false forbids loading it") as error:
            tracking.load_scorer(f"models:/{MODEL}/{version}")
        assert error.value.exit_code == 2
        monkeypatch.delenv(PICKLE_OFF)

        summary = run_export(project_config(project, "export", [f"export.version={version}"]))
    assert _pickles(summary.path) == []
    monkeypatch.setenv(PICKLE_OFF, "false")
    exported = tracking.load_scorer(str(summary.path))
    expected = predict_request(pickled, frame)
    pd.testing.assert_frame_equal(predict_request(exported, frame), expected)
    served = mlflow.pyfunc.load_model(str(summary.path)).predict(frame)
    pd.testing.assert_frame_equal(pd.DataFrame(served), expected)
