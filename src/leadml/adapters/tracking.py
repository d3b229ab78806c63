"""Every MLflow call of leadml lives here.

Tracking defaults to an embedded SQLite store in the project folder (``mlflow.db``,
artifacts under ``mlruns/``); ``MLFLOW_TRACKING_URI`` or ``mlflow.tracking_uri`` in
config points at a server instead. Models are registered and promoted with aliases
(``challenger``, ``champion``), never with the deprecated stages.

A server that stops answering, at the start or in the middle of a run, ends the run with
:class:`~leadml.errors.TrackingUnavailableError` (exit code 6) naming the tracking URI with
any password masked, never with MLflow's traceback. How long MLflow's HTTP client keeps
trying first is its own setting: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7, exponential
backoff of ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (2) seconds, about 4 minutes in all) and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s per request).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import yaml

from leadml.adapters.model_folder import exported_version, local_model_folder, pickled_message, verify_folder
from leadml.errors import FULL_DISK, LeadmlError, NoModelError, PickledModelWarning, TrackingUnavailableError

# imported inside functions, only when used: mlflow (1-2 s to import), requests/urllib3 (a remote
# tracking server only) and matplotlib.pyplot

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"
MAX_PARAM_LENGTH = 6000  # MLflow's limit for one parameter value
SCHEMA_SAMPLE_ROWS = 1000
# the store configure() pointed MLflow at, named by the error when it stops answering
_current = {"uri": ""}


def resolve_tracking_uri(configured: str | None, root: Path) -> str:
    """Config wins, then ``MLFLOW_TRACKING_URI``, then SQLite in the project folder."""
    if configured:
        return str(configured)
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def _quiet_mlflow() -> None:
    # MLflow draws a progress bar for every artifact it downloads (a model, a run's JSON file)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    warnings.filterwarnings("ignore", module="mlflow")


def use_store(tracking_uri: str) -> None:
    """Point MLflow (its runs and its model registry) at the store, without opening an experiment:
    what loading a registered model needs when nothing is logged (``score.track=false``)."""
    import mlflow

    _quiet_mlflow()
    check_reachable(tracking_uri)
    _current["uri"] = tracking_uri
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    # set_tracking_uri also exports the URI; left there, it would become the "environment's"
    # store of every later stage of this process (a notebook, a test) whatever its own root
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported


def configure(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at the store and return the experiment id (created on first use)."""
    import mlflow

    use_store(tracking_uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            mlflow.set_experiment(experiment_id=found.experiment_id)
            return found.experiment_id
        location = None
        if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
            location = (artifact_root / experiment).resolve().as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    except Exception as error:  # MLflow raises many types for an unreachable or broken store
        if _unreachable(error):
            raise _unavailable(error, "open the experiment") from None
        if _not_authorised(error):
            raise _refused(error, f"open the experiment {experiment}") from None
        raise TrackingUnavailableError(
            f"MLflow tracking at {masked_uri(tracking_uri)} is not usable: {_first_line(error)}"
        ) from None


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast on a tracking server that does not answer (MLflow's own client retries for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        answer = requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        raise TrackingUnavailableError(
            f"MLflow tracking server {masked_uri(tracking_uri)} is unreachable: {_reason(error)}"
        ) from None
    if answer.status_code >= 500:  # a proxy in front of a server that is down
        raise TrackingUnavailableError(
            f"MLflow tracking server {masked_uri(tracking_uri)} is unreachable: "
            f"/health answered HTTP {answer.status_code}"
        )


def masked_uri(uri: str) -> str:
    """``uri`` with the password of its user part, if any, replaced by ``***``."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if not password:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# how MLflow words a request that never got an answer (it re-raises requests' errors as text)
_UNREACHABLE_TEXT = (
    "Max retries exceeded",
    "Connection refused",
    "Failed to establish a new connection",
    "Connection aborted",
    "Connection reset",
    "RemoteDisconnected",
    "timeout exception",
    "Read timed out",
    "Name or service not known",
    "Temporary failure in name resolution",
)


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the tracking server did not answer (down, unreachable, retries spent)."""
    import requests
    import urllib3

    network = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        urllib3.exceptions.MaxRetryError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.NewConnectionError,
        ConnectionError,
        TimeoutError,
    )
    for link in _chain(error):
        if isinstance(link, network):
            return True
        if type(link).__module__.startswith("mlflow") and any(
            text in str(link) for text in _UNREACHABLE_TEXT
        ):
            return True
    return False


# how MLflow names a request the server refused for want of credentials or rights (error_code), and
# the HTTP statuses behind them when the answer was not MLflow's JSON
_REFUSED_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")
_REFUSED_STATUSES = (401, 403)


def _not_authorised(error: BaseException) -> bool:
    """Whether the tracking server answered but refused the request (401 or 403): not "no champion"."""
    for link in _chain(error):
        code = getattr(link, "error_code", None)
        status = getattr(getattr(link, "response", None), "status_code", None)
        if code in _REFUSED_CODES or status in _REFUSED_STATUSES:
            return True
    return False


def _server_fault(error: BaseException, action: str) -> TrackingUnavailableError | None:
    """Exit 6 for a server that did not answer or refused leadml (never "no model"); else None."""
    if _unreachable(error):
        return _unavailable(error, action)
    if _not_authorised(error):
        return _refused(error, action)
    return None


def _server_uri() -> str:
    """The tracking URI in use, as the messages name it."""
    import mlflow

    return masked_uri(_current["uri"] or mlflow.get_tracking_uri())


def _refused(error: BaseException, action: str) -> TrackingUnavailableError:
    codes = (getattr(link, "error_code", None) for link in _chain(error))
    code = next((c for c in codes if c in _REFUSED_CODES), "HTTP 401/403")
    return TrackingUnavailableError(
        f"MLflow tracking server {_server_uri()} refused leadml's request to {action}: not authorised "
        f"({code}); check the credentials (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD) and the user's permissions on the experiment and the registered model"
    )


def _reason(error: BaseException) -> str:
    """A few words on why the server did not answer (MLflow's own message is one long URL)."""
    text = " ".join(str(link) for link in _chain(error))
    names = {type(link).__name__ for link in _chain(error)}
    if "Connection refused" in text or "ConnectionRefusedError" in names:
        return "connection refused"
    if "timed out" in text or "timeout" in text or names & {"Timeout", "ReadTimeout", "ConnectTimeout"}:
        return "no answer in time (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    if "too many" in text and "error responses" in text:
        return "it kept answering with server errors (retries exhausted)"
    if "Name or service not known" in text or "name resolution" in text:
        return "unknown host"
    if "Max retries exceeded" in text:
        return "retries exhausted"
    return type(error).__name__


def _unavailable(error: BaseException, action: str) -> TrackingUnavailableError:
    return TrackingUnavailableError(
        f"MLflow tracking server {_server_uri()} did not answer when leadml tried to {action}: "
        f"{_reason(error)} (run it again once the server is back)"
    )


def _tracked(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn an unreachable tracking server inside the wrapped call into TrackingUnavailableError."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except LeadmlError:
                raise
            except Exception as error:
                fault = _server_fault(error, action)
                if fault is not None:
                    raise fault from None
                raise

        return call

    return decorate


@contextlib.contextmanager
def _single_attempt() -> Iterator[None]:
    """MLflow's HTTP calls inside try once, briefly (for the bookkeeping after a failure)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    timeout = min(10, MLFLOW_HTTP_REQUEST_TIMEOUT.get())
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _end_failed_run() -> None:
    """Mark the active run FAILED with one quick attempt: after the server went away, MLflow's own
    end of run would retry for minutes and then replace the real error with its own traceback."""
    import mlflow

    with _single_attempt():
        try:
            mlflow.end_run("FAILED")  # leaves the run in this process even when the server is down
        except Exception as error:
            logger.warning("could not mark the MLflow run FAILED: %s", _first_line(error))


@contextlib.contextmanager
def run(run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """An MLflow run; yields its id. A failure inside marks the run FAILED (when the server answers)."""
    import mlflow

    active = _tracked("start a run")(mlflow.start_run)(run_name=run_name, tags=dict(tags or {}))
    try:
        yield active.info.run_id
    except BaseException:
        _end_failed_run()
        raise
    _tracked("finish the run")(mlflow.end_run)()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted keys with string values MLflow accepts."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


@_tracked("log parameters")
def log_params(config: Mapping[str, Any]) -> None:
    import mlflow

    params = flatten(config)
    items = list(params.items())
    for start in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[start : start + 100]))


@_tracked("log metrics")
def log_metrics(metrics: Mapping[str, float], prefix: str = "", step: int | None = None) -> None:
    """Finite numbers of ``metrics`` (others are skipped); ``step`` for a series such as backtest periods."""
    import mlflow

    clean = {
        f"{prefix}{key}": float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not math.isnan(float(value)) and not math.isinf(float(value))
    }
    mlflow.log_metrics(clean, step=step)


@_tracked("log an artifact")
def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


@_tracked("log an artifact")
def log_dict(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_dict(obj, artifact_file)


@_tracked("log a plot")
def log_figure(figure: Any, artifact_file: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


@_tracked("log an artifact")
def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(frame.to_csv(index=False), artifact_file)


@_tracked("log an artifact")
def log_file(path: Path, artifact_dir: str | None = None) -> str:
    """Copy a local file into the run's artifacts; returns its artifact path."""
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_dir)
    return f"{artifact_dir}/{Path(path).name}" if artifact_dir else Path(path).name


@_tracked("log the datasets")
def log_dataset(frame: pd.DataFrame, name: str, digest: str, source: str, context: str) -> None:
    """Record a dataset (its schema, size and fingerprint) as an input of the run."""
    import mlflow

    dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36], targets="label")
    # MLflow infers the schema value by value (minutes for millions of rows); the dtypes of a
    # sample give the same schema, while the profile still counts the whole frame
    dataset.schema = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
    mlflow.log_input(dataset, context=context)


@_tracked("log the model")
def log_model(code: Path, name: str, example: pd.DataFrame, signature: Any, artifacts: dict[str, str]) -> str:
    """Log the model whose ``code`` file builds the pyfunc (MLflow's models-from-code, no pickle)
    with its ``signature``, ``example`` (features shape) as the input example and ``artifacts``
    (the files and folders it reads when it loads); return its model URI. The stage writes the
    files: this layer knows MLflow, not leadml's model.
    """
    import mlflow

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code),
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(),
    )
    return info.model_uri


def save_model(
    code: Path, folder: Path, example: pd.DataFrame | None, signature: Any, artifacts: dict[str, str]
) -> Path:
    """:func:`log_model` into a local ``folder`` (new) rather than the tracking server; returns it."""
    import mlflow

    mlflow.pyfunc.save_model(
        str(folder),
        python_model=str(code),
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(),
    )
    return folder


def is_pickled_model(folder: Path) -> bool:
    """Whether the MLflow model in ``folder`` is a pickled pyfunc (saved before leadml 0.2.0)."""
    from mlflow.models import Model

    flavor = Model.load(str(folder)).flavors.get("python_function", {})
    return "python_model" in flavor and "model_code_path" not in flavor


def model_example(folder: Path) -> pd.DataFrame | None:
    """The input example saved with the MLflow model in ``folder`` (None without one)."""
    from mlflow.models import Model

    example = Model.load(str(folder)).load_input_example(str(folder))
    return example if isinstance(example, pd.DataFrame) else None


def _requirements() -> list[str]:
    """The packages the model needs besides leadml itself (installed from its repository)."""
    return [
        f"{package}=={importlib.metadata.version(package)}"
        for package in ("pandas", "numpy", "scikit-learn", "lightgbm", "numba", "pyarrow", "mlflow")
    ]


def infer_signature(model_input: pd.DataFrame, model_output: pd.DataFrame | None = None) -> Any:
    from mlflow.models import infer_signature as infer

    return infer(model_input, model_output)


@_tracked("register the model")
def register(model_uri: str, name: str) -> str:
    """Register a logged model; returns the new version."""
    import mlflow

    return str(mlflow.register_model(model_uri, name).version)


def withdraw_version(name: str, version: str) -> None:
    """Delete a version registered by a run that then failed, with one quick attempt.

    A version no run finished (no report, no gate decision logged, no alias) is not one to
    score or export by number. When the server is gone the version stays, without alias, and
    the run's own error is the one reported.
    """
    from mlflow import MlflowClient

    with _single_attempt():
        try:
            MlflowClient().delete_model_version(name, str(version))
        except Exception as error:
            logger.warning("could not delete version %s of %s: %s", version, name, _first_line(error))


@_tracked("move a model alias")
def set_alias(name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def move_aliases(name: str, version: str, decision: Any, *, challenger: bool = True) -> None:
    """The aliases after a gate's ``decision`` (a :class:`~leadml.modelling.gate.GateDecision`):
    ``challenger`` on the version (a newly trained one), ``champion`` too when it passed. Training
    and ``leadml-promote`` both move them here, last, after everything else was logged."""
    if challenger:
        set_alias(name, CHALLENGER, version)
    if decision.promote:
        set_alias(name, CHAMPION, version)
        logger.info("%s version %s is the champion: %s", name, version, "; ".join(decision.reasons))


@_tracked("look up a model alias")
def version_by_alias(name: str, alias: str) -> str | None:
    """The version holding ``alias``, or None when there is none (or no such model yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        fault = _server_fault(error, f"look up @{alias} of {name}")
        if fault is not None:  # not "no champion": the server did not say, or would not
            raise fault from None
        return None


@_tracked("set run tags")
def set_tags(tags: Mapping[str, str]) -> None:
    import mlflow

    mlflow.set_tags(dict(tags))


def production_model(registered_model: str, model_uri: str | None = None) -> tuple[str, str]:
    """(model URI, version label) of the model to score with: ``model_uri`` or the champion.

    ``model_uri`` may be ``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model`` or an
    exported folder (``models/<name>-v3``, labelled with the version it was exported from).
    """
    if model_uri:
        folder = local_model_folder(str(model_uri))
        return str(model_uri), (exported_version(folder) if folder else None) or str(model_uri)
    version = version_by_alias(registered_model, CHAMPION)
    if version is None:
        raise NoModelError(
            f"no champion for {registered_model}: nothing holds the alias @{CHAMPION} "
            "(run make train, or pin one with score.model_uri=models:/<name>/<version>)"
        )
    return f"models:/{registered_model}@{CHAMPION}", version


@contextlib.contextmanager
def _model_lookup(action: str, missing: str) -> Iterator[None]:
    """An unreachable server inside becomes TrackingUnavailableError (exit 6), a model, version,
    run or file that is not there NoModelError (exit 2) starting with ``missing``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except Exception as error:
        fault = _server_fault(error, action)
        if fault is not None:
            raise fault from None
        full_disk = _full_disk(error)
        if full_disk is not None:  # the disk it is copied to, not the model: the caller names it
            raise full_disk from None
        if isinstance(error, MlflowException | OSError):
            raise NoModelError(f"{missing}: {_first_line(error)}") from None
        raise


def _full_disk(error: BaseException) -> OSError | None:
    """The full disk behind ``error``: an OSError itself, or one MLflow's parallel download
    reported only in its message (``[Errno 28] No space left on device: ...``)."""
    if isinstance(error, OSError) and error.errno in FULL_DISK:
        return error
    for code in FULL_DISK:
        if f"[Errno {code}]" in str(error):
            return OSError(code, os.strerror(code))
    return None


def load_scorer(model_uri: str, warn_pickled: bool = True) -> Any:
    """The :class:`leadml.modelling.scorer.LeadScorer` inside a logged pyfunc or an exported folder.

    An exported folder is checked against its ``SHA256SUMS`` first and never needs the
    tracking server; a modified one raises :class:`~leadml.errors.ModelIntegrityError`. A version
    pickled by an earlier leadml loads with a warning naming it (``warn_pickled``; or, under
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, is refused with the way out).
    """
    import mlflow

    folder = local_model_folder(model_uri)
    if folder is not None:
        verify_folder(folder)
    with (
        _model_lookup(f"load model {model_uri}", f"cannot load model {model_uri}"),
        tempfile.TemporaryDirectory(prefix="leadml-model-") as copy,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", PickledModelWarning)
        # MLflow's own requirement check maps every installed distribution to its modules (1.4 s
        # of a 6 s nightly run); the model's pinned packages are compared here instead. A registry
        # model is downloaded into a folder removed after loading (MLflow's default one stays)
        try:
            model = mlflow.pyfunc.load_model(
                model_uri, suppress_warnings=True, dst_path=None if folder is not None else copy
            )
        except Exception as error:
            if PICKLE_REFUSED in str(error):
                raise NoModelError(_pickle_refused(model_uri)) from None
            raise
        warn_requirement_mismatches(Path(folder or copy) / "requirements.txt", model_uri)
    for warning in caught:
        if issubclass(warning.category, PickledModelWarning):
            if warn_pickled:
                logger.warning("%s", pickled_message(_described_model(model_uri)))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    scorer = getattr(model.unwrap_python_model(), "scorer", None)
    if scorer is None:
        raise NoModelError(f"{model_uri} is not a leadml scorer")
    return scorer


# what MLflow says when MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false meets a pickled pyfunc
PICKLE_REFUSED = "Deserializing model using pickle is disallowed"


def _described_model(model_uri: str) -> str:
    """``model_uri`` with the version it names: an export's, or the one holding an alias."""
    folder = local_model_folder(model_uri)
    if folder is not None:
        version = exported_version(folder)
        return f"{model_uri} (version {version})" if version else model_uri
    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    if model_uri.startswith("models:/") and alias:
        with contextlib.suppress(LeadmlError):
            version = version_by_alias(name, alias)
            if version:
                return f"{model_uri} (version {version})"
    return model_uri


def _pickle_refused(model_uri: str) -> str:
    return (
        f"cannot load model {_described_model(model_uri)}: it was saved by an earlier leadml as a "
        "Python pickle and MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false forbids loading it; train "
        "again, or export it with leadml-export where pickle is allowed (the export is written "
        "without pickle)"
    )


def warn_requirement_mismatches(requirements: Path, model_uri: str) -> list[str]:
    """Warn, once per package, where a version the model pinned (``package==version`` lines of its
    requirements.txt) is not the installed one; the mismatches."""
    try:
        lines = requirements.read_text().splitlines()
    except OSError:
        return []
    mismatches = []
    for line in lines:
        package, _, pinned = line.strip().partition("==")
        if not pinned or package.startswith(("#", "-")):
            continue
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            mismatches.append(f"{package} {pinned} (installed: {installed})")
    if mismatches:
        logger.warning("%s was saved with %s; its scores may differ", model_uri, ", ".join(mismatches))
    return mismatches


@_tracked("download the model")
def download_model(model_uri: str, target: Path) -> Path:
    """The registry's files of ``model_uri`` copied into ``target`` (a new folder); returns it."""
    import mlflow

    target.mkdir(parents=True)
    with _model_lookup(f"download model {model_uri}", f"cannot download model {model_uri}"):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target)))


@_tracked("read a model version")
def version_details(name: str, version: str) -> dict[str, Any]:
    """Aliases, run and registration time of one registered version."""
    from mlflow import MlflowClient

    with _model_lookup(f"read version {version} of {name}", f"no version {version} of {name}"):
        found = MlflowClient().get_model_version(name, str(version))
    created = pd.Timestamp(int(found.creation_timestamp), unit="ms", tz="UTC").isoformat()
    return {"aliases": sorted(found.aliases or []), "run_id": found.run_id, "created_at": created}


@_tracked("read the training run's artifacts")
def run_artifacts(run_id: str, names: Sequence[str]) -> dict[str, Any]:
    """The run's JSON artifacts parsed, CSV ones as frames, others as text; absent ones left out."""
    import mlflow

    found: dict[str, Any] = {}
    for name in names:
        try:
            text = mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")
        except Exception as error:
            if _unreachable(error):
                raise _unavailable(error, f"read {name} of run {run_id}") from None
            continue  # an older run without this artifact
        if name.endswith(".json"):
            found[name] = json.loads(text)
        elif name.endswith(".csv"):
            found[name] = pd.read_csv(io.StringIO(text))
        else:
            found[name] = text
    return found


def model_run(model_uri: str) -> dict[str, Any]:
    """The training run that logged ``model_uri``: ``run_id``, its ``config`` (config.yaml),
    ``metrics`` and ``datasets`` (window -> logged digest, to check that re-created rows are
    the ones the model was evaluated on)."""
    import mlflow

    with _model_lookup(
        f"read the training run of {model_uri}", f"cannot find the training run of {model_uri}"
    ):
        run_id = mlflow.models.get_model_info(model_uri).run_id
        found = mlflow.get_run(run_id)
        config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))
    datasets = {}
    for dataset_input in found.inputs.dataset_inputs if found.inputs else ():
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        if "mlflow.data.context" in tags:
            datasets[tags["mlflow.data.context"]] = dataset_input.dataset.digest
    metrics = dict(found.data.metrics)
    return {"run_id": run_id, "config": config or {}, "metrics": metrics, "datasets": datasets}


@_tracked("log the scoring run")
def log_scoring_run(
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tables: Mapping[str, pd.DataFrame],
    records: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    """One run in the scoring experiment: what was scored, how, and how it drifted; returns its id."""
    with run(run_name, tags) as run_id:
        log_params(params)
        log_metrics(metrics)
        for name, table in tables.items():
            log_table(table, name)
        for name, record in records.items():
            log_dict(record, name)
    return run_id


@_tracked("log to the scoring run")
def log_to_run(
    run_id: str, metrics: Mapping[str, float], tables: Mapping[str, pd.DataFrame], step: int = 0
) -> None:
    """Add the finite ``metrics`` (at ``step``) and CSV tables to an existing run (the leadership
    report's KPIs to the scoring run of the date it reports), through the client: the run is not
    re-opened, so its status and end time stay as the scoring run left them."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    now = int(time.time() * 1000)
    clean = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, int | float) and math.isfinite(float(value))
    ]
    if clean:
        client.log_batch(run_id, metrics=clean)
    for name, table in tables.items():
        client.log_text(run_id, table.to_csv(index=False), name)
