"""leadml against a real MLflow tracking server, and that server going away in the middle of a run.

One ``mlflow server`` (this venv's executable) per module, on 127.0.0.1 at a free port, with a
SQLite backend store and proxied artifacts in a temporary folder. The small project is
generated while the server starts. The module trains once, and that training is the first
failure case: the server stops just before the model is logged, the run fails in one line
(exit code 6) leaving no version, alias or report; the server restarts on the same store and
port and the same command trains the champion. Scoring is then stopped the same way (before the
model is loaded; the restart takes a new port), and frozen after its rows are written (the
date's previous partition must come back).
MLflow's HTTP client gives up in seconds here (``QUICK_HTTP``), not after its default minutes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from factories import free_port, project_config
from leadml.adapters import sinks, tracking
from leadml.cli import run_score, run_train
from leadml.errors import TrackingUnavailableError
from leadml.stages.score import ScoreResult

BIN = Path(sys.executable).parent
MLFLOW = BIN / "mlflow"
NAME = "leadml-synthetic"
FIRST, SECOND = "2025-12-01", "2025-12-15"
QUICK_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
TRAIN = ["prepare=never", "model.n_jobs=1"]  # one thread: two cores shared with other test runs
START_TIMEOUT = 180.0  # seconds: the server imports all of MLflow, slow on a busy machine

pytestmark = pytest.mark.skipif(not MLFLOW.exists(), reason=f"no mlflow executable at {MLFLOW}")


class TrackingServer:
    """``mlflow server`` on a SQLite store and an artifact folder that outlive its restarts."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.store, self.artifacts = folder, folder / "store.db", folder / "artifacts"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"server-{self.starts}.log"

    def start(self, port: int | None = None) -> None:
        """Launch it (same store and artifacts every time); :meth:`wait` for it to answer."""
        self.port, self.starts = port or free_port(), self.starts + 1
        command = [
            str(MLFLOW), "server",
            "--backend-store-uri", f"sqlite:///{self.store}",
            "--artifacts-destination", str(self.artifacts),
            "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        # no job runner process: nothing here uses MLflow jobs, and it costs a core while starting
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log, "wb") as log:  # its own session: stop() ends the server and its workers
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )

    def wait(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        pytest.fail(
            f"mlflow server did not answer {self.uri}/health within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """End the server (its whole process group) and wait until its port refuses connections."""
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # start_new_session: the group id is the pid of the process started here
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=20)
        for _ in range(100):  # the worker may outlive the parent for a moment
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", self.port)) != 0, f"{self.uri} still answers after stop"

    def freeze(self) -> None:
        """Stop the server without ending it: connections are accepted, nothing is answered."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"


def _cfg(root: Path, stage: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, stage, overrides)


def _over_http(monkeypatch: pytest.MonkeyPatch, server: TrackingServer) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name, value in QUICK_HTTP.items():
        monkeypatch.setenv(name, value)


def _client(server: TrackingServer):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri)


def _files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``folder`` (hidden ones too) with inode, size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".lock-")
    }


def _aliases(server: TrackingServer) -> dict[str, str]:
    return dict(_client(server).get_registered_model(NAME).aliases)


def _one_line(error: TrackingUnavailableError, port: int) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 400, message
    assert f"http://127.0.0.1:{port} " in message, message
    assert error.__suppress_context__ and error.__cause__ is None  # MLflow's chain is not carried along
    assert error.exit_code == 6
    return message


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    server = TrackingServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.thaw()  # a test that failed while it was frozen
        server.stop()


@pytest.fixture(scope="module")
def prepared(server: TrackingServer, project_copy) -> Path:
    """The shared project's data, generated, ingested and featured (no tracking), copied while the
    server starts; then wait for it."""
    root = project_copy("remote-project", tracking=False)
    server.wait()
    return root


@pytest.fixture(scope="module")
def trained(server: TrackingServer, prepared: Path) -> SimpleNamespace:
    """The module's training: the server stops just before the model is logged, the run fails;
    the server restarts (same store, artifacts and port) and the same command trains the champion.
    What was there in between is recorded for the test about it."""
    root, reports = prepared, prepared / "reports" / "synthetic"
    log_model = tracking.log_model

    def stop_then_log(*args, **kwargs):
        server.stop()
        return log_model(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        _over_http(patch, server)
        patch.setattr(tracking, "log_model", stop_then_log)
        started = time.perf_counter()
        with pytest.raises(TrackingUnavailableError) as failure:
            run_train(_cfg(root, "train", TRAIN))
        failed_after = time.perf_counter() - started
        reports_after_failure = sorted(path.name for path in reports.iterdir()) if reports.exists() else []
        patch.setattr(tracking, "log_model", log_model)
        server.start(server.port)  # the same port: the scheduler's MLFLOW_TRACKING_URI works again
        server.wait()
        models_after_restart = [model.name for model in _client(server).search_registered_models()]
        summary = run_train(_cfg(root, "train", TRAIN))
    print(f"train failed {failed_after:.1f} s into the run, as the model was logged")
    return SimpleNamespace(
        root=root,
        failure=failure.value,
        reports_after_failure=reports_after_failure,
        models_after_restart=models_after_restart,
        summary=summary,
    )


@pytest.fixture(scope="module")
def scored(server: TrackingServer, trained: SimpleNamespace) -> ScoreResult:
    with pytest.MonkeyPatch.context() as patch:
        _over_http(patch, server)
        return run_score(_cfg(trained.root, "score", [f"score.as_of={FIRST}"]))


def test_train_with_the_server_stopped_mid_run_fails_in_one_line_and_leaves_nothing(
    server: TrackingServer, trained: SimpleNamespace
) -> None:
    message = _one_line(trained.failure, server.port)
    assert "log the model" in message and "connection refused" in message, message
    assert trained.reports_after_failure == []  # no model report, no version, no alias
    assert trained.models_after_restart == []
    failed = _client(server).search_runs(
        [_client(server).get_experiment_by_name(NAME).experiment_id], "attributes.status != 'FINISHED'"
    )
    assert len(failed) == 1  # the interrupted run (left RUNNING: the server was gone when it ended)
    # after the restart the same command trains, registers and promotes
    assert trained.summary.version == "1" and trained.summary.promoted
    assert _aliases(server) == {"challenger": "1", "champion": "1"}
    assert sorted(path.name for path in (trained.root / "reports" / "synthetic").iterdir()) == [
        "model-v1.html"
    ]


def test_train_and_score_go_through_the_server_and_its_artifact_store(
    server: TrackingServer, trained: SimpleNamespace, scored: ScoreResult
) -> None:
    client, root = _client(server), trained.root
    run = client.get_run(trained.summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert trained.summary.tracking_uri == server.uri
    assert client.get_model_version_by_alias(NAME, "champion").run_id == run.info.run_id

    scoring = client.get_run(scored.run_id)
    assert scoring.info.status == "FINISHED"
    assert client.get_experiment(scoring.info.experiment_id).name == f"{NAME}-scoring"
    assert scoring.data.params["model_version"] == "1" and scoring.data.params["as_of"] == FIRST
    partition = root / "data" / "scored" / "synthetic" / f"as_of={FIRST}"
    assert Path(scored.output) == partition
    assert len(pd.read_parquet(partition / sinks.PART_FILE)) == scored.leads > 100

    # every artifact went to the server's artifact root, nothing to a local store in the project
    stored = {path.relative_to(server.artifacts).as_posix() for path in server.artifacts.rglob("*")}
    assert any(path.endswith("/MLmodel") for path in stored), sorted(stored)[:20]
    assert any(path.endswith("report/model-v1.html") for path in stored)
    assert any(path.endswith("warnings.json") for path in stored)  # the scoring run's
    assert not (root / "mlruns").exists() and not (root / "mlflow.db").exists()


def test_score_with_the_server_stopped_mid_run_fails_in_one_line_and_writes_nothing(
    server: TrackingServer, trained: SimpleNamespace, scored: ScoreResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, output = trained.root, trained.root / "data" / "scored" / "synthetic"
    _over_http(monkeypatch, server)
    before = _files(output)
    load_scorer = tracking.load_scorer
    down = server.port

    def stop_then_load(model_uri: str):
        server.stop()
        server.start()  # the restart: same store and artifacts, a new port; it comes up meanwhile
        return load_scorer(model_uri)

    monkeypatch.setattr(tracking, "load_scorer", stop_then_load)
    with pytest.raises(TrackingUnavailableError) as caught:
        run_score(_cfg(root, "score", [f"score.as_of={SECOND}"]))
    message = _one_line(caught.value, down)
    assert "load model" in message and "connection refused" in message, message
    assert _files(output) == before  # no new partition, the previous one untouched
    monkeypatch.setattr(tracking, "load_scorer", load_scorer)

    # the scheduler's view: the entry point against the server that is down, credentials in the URI
    command = subprocess.run(
        [str(BIN / "leadml-score"), f"paths.root={root}", f"score.as_of={SECOND}"],
        capture_output=True,
        text=True,
        env={**os.environ, **QUICK_HTTP, "MLFLOW_TRACKING_URI": f"http://leadml:s3cret@127.0.0.1:{down}"},
        check=False,
        timeout=180,
    )
    assert command.returncode == 6, command.stderr
    errors = [line for line in command.stderr.splitlines() if line.startswith("leadml-score: error:")]
    assert len(errors) == 1 and f"http://leadml:***@127.0.0.1:{down}" in errors[0], command.stderr
    assert "Traceback" not in command.stderr and "s3cret" not in command.stderr + command.stdout
    assert _files(output) == before

    server.wait()
    _over_http(monkeypatch, server)
    summary = run_score(_cfg(root, "score", [f"score.as_of={SECOND}"]))
    assert Path(summary.output) == output / f"as_of={SECOND}"
    assert _client(server).get_run(summary.run_id).info.status == "FINISHED"
    assert all(_files(output)[name] == stamp for name, stamp in before.items())


def test_score_puts_the_partition_back_when_its_run_cannot_be_tracked(
    server: TrackingServer, trained: SimpleNamespace, scored: ScoreResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows are written, then the server hangs: the date's previous partition comes back."""
    root, output = trained.root, trained.root / "data" / "scored" / "synthetic"
    _over_http(monkeypatch, server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    before = _files(output)
    log_scoring_run = tracking.log_scoring_run

    def freeze_then_log(*args, **kwargs):
        server.freeze()
        return log_scoring_run(*args, **kwargs)

    monkeypatch.setattr(tracking, "log_scoring_run", freeze_then_log)
    try:
        with pytest.raises(TrackingUnavailableError) as caught:
            run_score(_cfg(root, "score", [f"score.as_of={FIRST}"]))
    finally:
        server.thaw()
    message = _one_line(caught.value, server.port)
    assert "no answer in time" in message, message
    assert _files(output) == before  # the very same files (inodes) as before the run
    assert (
        not sinks.leftovers(output) and not list(output.glob(".keep-*")) and not list(output.glob(".undo-*"))
    )


def test_the_password_of_a_tracking_uri_is_masked_and_nothing_else() -> None:
    assert tracking.masked_uri("https://ops:s3cret@mlflow.example.com:5000/x") == (
        "https://ops:***@mlflow.example.com:5000/x"
    )
    for uri in ("http://127.0.0.1:5000", "https://token@mlflow.example.com", "sqlite:////srv/mlflow.db"):
        assert tracking.masked_uri(uri) == uri


def test_a_proxy_answering_health_with_503_counts_as_unreachable() -> None:
    """A reverse proxy in front of a server that is down answers; the job must not go on."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Down) as proxy:
        Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            with pytest.raises(TrackingUnavailableError, match="answered HTTP 503") as caught:
                tracking.check_reachable(f"http://ops:s3cret@127.0.0.1:{proxy.server_port}")
        finally:
            proxy.shutdown()
    assert "s3cret" not in str(caught.value) and caught.value.exit_code == 6


def test_a_server_refusing_the_api_is_exit_6_not_authorised_not_no_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An authenticating proxy in front of the server: /health answers, every API call is refused
    (403, MLflow's JSON error). Not "no champion, run make train" (exit 2): not authorised (exit 6)."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
                return
            body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "Permission denied"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Refusing) as proxy:
        Thread(target=proxy.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{proxy.server_port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        earlier = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)  # an earlier test's set_tracking_uri would win over the variable
        monkeypatch.setitem(tracking._current, "uri", None)  # nor may an earlier configure's URI be named
        try:
            with pytest.raises(TrackingUnavailableError) as looked_up:
                tracking.production_model(NAME)
            with pytest.raises(TrackingUnavailableError) as opened:
                tracking.configure(uri, "leadml-synthetic-scoring", tmp_path)
        finally:
            mlflow.set_tracking_uri(earlier)
            proxy.shutdown()
    for caught in (looked_up, opened):
        assert caught.value.exit_code == 6
        assert f"MLflow tracking server {uri} refused leadml's request" in str(caught.value)
        assert "not authorised (PERMISSION_DENIED)" in str(caught.value)


def test_a_run_failing_after_its_rows_are_written_leaves_the_partitions_as_they_were(tmp_path: Path) -> None:
    """score_stage's undo, alone: the re-run date gets its previous files back, a new date goes."""
    from leadml.stages.score import undone_on_error

    old, new = pd.Timestamp("2025-12-01", tz="UTC"), pd.Timestamp("2025-12-15", tz="UTC")
    sinks.write_partition(pd.DataFrame({"lead_id": ["L1"], "probability": [0.1]}), tmp_path, old)
    before = _files(tmp_path)
    for as_of in (old, new):
        with pytest.raises(TrackingUnavailableError), undone_on_error(tmp_path, as_of):
            sinks.write_partition(pd.DataFrame({"lead_id": ["L2"], "probability": [0.9]}), tmp_path, as_of)
            raise TrackingUnavailableError("the server went away")
        assert _files(tmp_path) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["as_of=2025-12-01"]
