"""``leadml-export``: a registered version as a self-contained folder under ``models/``.

``models/<registered model>-v<version>/`` holds the registry's MLflow model files unchanged
(MLmodel, ``model_code.py``, the scorer's state as data files under ``artifacts/leadml_state/``,
requirements, signature, input example), and beside them:

* ``MODEL_CARD.md``: what the model is for, what it learned from and how well it does;
* ``request_example.json``: one made-up lead in the documented request shape;
* ``export.json``: where it came from (registry, version, run, aliases, leadml version);
* ``SHA256SUMS``: the SHA-256 of every other file, in ``sha256sum`` format
  (``sha256sum -c SHA256SUMS`` checks it too).

Loading an exported folder (``leadml-score model_uri=models/...``, ``mlflow models serve``)
verifies the checksums first and refuses a folder with a changed, missing or added file.
The checksums catch accidents and careless edits; they are not a signature, since whoever
can rewrite a file can rewrite ``SHA256SUMS`` too. Loading reads data only (no pickle), so a file
planted in the folder is never run.

A version registered before leadml 0.2.0 is a pickled pyfunc: its export is written the new way
(the same scorer saved as code and data), so the exported folder holds no pickle either.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.adapters import tracking
from leadml.adapters.model_folder import EXPORT_RECORD, MODEL_CARD, REQUEST_EXAMPLE, write_checksums
from leadml.errors import LeadmlError, NoModelError, writing_to
from leadml.reporting import model_card
from leadml.scoring.pyfunc import MODEL_CODE, model_artifacts, signature
from leadml.scoring.requests import flat_example, lead_example

logger = logging.getLogger(__name__)


# hidden folders beside an export: .<name>-v<n>.staging-<pid>-<random> while it is written,
# .<name>-v<n>.replaced-<pid> for the earlier export while the new one takes its place
STAGING = ".staging-"
REPLACED = ".replaced-"
LEFTOVER = re.compile(
    rf"\.(?P<final>.+?)(?P<kind>{re.escape(STAGING)}|{re.escape(REPLACED)})(?P<pid>\d+)(-.*)?"
)


@dataclass(frozen=True)
class ExportResult:
    """The folder a registered version was exported to, and where it came from."""

    path: Path
    registered_model: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    files: tuple[str, ...]  # listed in SHA256SUMS
    model_card: Path
    tracking_uri: str
    seconds: float


def export_stage(
    cfg: Mapping[str, Any],
    root: Path,
    recreate: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> ExportResult:
    """Copy a registered version into ``export.output_dir`` with its card and checksums.

    ``recreate`` turns the run's logged config into the ``leadml-train`` overrides that
    re-create it (:func:`leadml.stages.configs.recreate_overrides`); the card quotes them.
    """

    started = time.perf_counter()
    export_cfg, mlflow_cfg = cfg["export"], cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    name = str(mlflow_cfg["registered_model"])
    version = _chosen_version(name, export_cfg)
    details = tracking.version_details(name, version)
    model_uri = f"models:/{name}/{version}"
    target = Path(export_cfg["output_dir"]) / f"{name}-v{version}"
    with writing_to(target.parent, "export.output_dir"):  # a full disk, not a missing model (exit 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        clear_dead_exports(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING}{os.getpid()}-", dir=target.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; an export is read by others
        try:
            model_dir = tracking.download_model(model_uri, staging / "model")
            for item in model_dir.iterdir():
                item.rename(staging / item.name)
            model_dir.rmdir()
            pickled = tracking.is_pickled_model(staging)
            scorer = tracking.load_scorer(str(staging), warn_pickled=False)
            if pickled:
                _rewrite_without_pickle(staging, scorer, model_uri)
            run = tracking.model_run(model_uri)
            artifacts = tracking.run_artifacts(run["run_id"], model_card.RUN_ARTIFACTS)
            exported_at = pd.Timestamp.now(tz="UTC").floor("s")
            record = {
                "registered_model": name,
                "version": version,
                "aliases": details["aliases"],
                "run_id": run["run_id"],
                "source": model_uri,
                "tracking_uri": tracking.masked_uri(uri),
                "registered_at": details["created_at"],
                "exported_at": exported_at.isoformat(),
                "leadml_version": _version("leadml"),
                "mlflow_version": _version("mlflow"),
            }
            example = lead_example(scorer, _example_as_of(artifacts.get("split.json"), exported_at))
            if example is None and scorer.feature_settings is None:  # a flat table: one of its rows
                example = flat_example(scorer)
            if example is not None:
                (staging / REQUEST_EXAMPLE).write_text(
                    json.dumps({"dataframe_records": [example]}, indent=2) + "\n", encoding="utf-8"
                )
            facts = model_card.CardFacts(
                record=record,
                scorer=scorer,
                run=run,
                artifacts=artifacts,
                request_example=example,
                recreate=recreate(run["config"]) if recreate and run.get("config") else (),
            )
            (staging / MODEL_CARD).write_text(model_card.render(facts, cfg), encoding="utf-8")
            (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            listed = write_checksums(staging)
            _replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return ExportResult(
        path=target,
        registered_model=name,
        version=version,
        aliases=tuple(record["aliases"]),
        run_id=run["run_id"],
        files=tuple(sorted(listed)),
        model_card=target / MODEL_CARD,
        tracking_uri=tracking.masked_uri(uri),
        seconds=round(time.perf_counter() - started, 2),
    )


def _rewrite_without_pickle(folder: Path, scorer: Any, model_uri: str) -> None:
    """Save ``scorer`` (loaded from the pickled version in ``folder``) as the models-from-code
    pyfunc training logs today, in place of the pickled files."""
    example = tracking.model_example(folder)
    if example is None:  # every pickled version was logged with one; a features row otherwise
        example = pd.DataFrame([dict.fromkeys(scorer.feature_names)])
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f"{folder.name}-rewrite-") as work:
        rebuilt = tracking.save_model(
            MODEL_CODE,
            Path(work) / "model",
            example,
            signature(scorer, example),
            model_artifacts(scorer, Path(work) / "files"),
        )
        for item in folder.iterdir():
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
        for item in rebuilt.iterdir():
            item.rename(folder / item.name)
    logger.warning(
        "%s was saved by an earlier leadml as a Python pickle; its export is written as code and data "
        "(no pickle)",
        model_uri,
    )


def _chosen_version(name: str, export_cfg: Mapping[str, Any]) -> str:

    version = export_cfg.get("version")
    if version not in (None, ""):
        if not str(version).isdigit():
            raise LeadmlError(f"export.version must be a version number, got {version!r}")
        return str(version)
    alias = str(export_cfg.get("alias") or tracking.CHAMPION)
    found = tracking.version_by_alias(name, alias)
    if found is None:
        raise NoModelError(
            f"nothing holds the alias @{alias} of {name}: run make train, or choose one with "
            "export.version=<n> or export.alias=challenger"
        )
    return found


def _example_as_of(split: Any, fallback: pd.Timestamp) -> pd.Timestamp:
    """The end of the test window: a date at which the example's made-up lead is plausible."""
    end = ((split or {}).get("test") or {}).get("last_as_of") if isinstance(split, Mapping) else None
    if not end:
        return fallback
    stamp = pd.Timestamp(end)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def clear_dead_exports(folder: Path) -> None:
    """Undo what exports killed midway left in ``folder``, as scoring does with its staging.

    Their staging folders go; an earlier export set aside for replacement comes back when the
    new one never took its place. Only folders of processes that are gone: the process id is in
    the name, so an export running beside this one keeps its own.
    """
    for leftover in sorted(folder.glob(".*")):
        found = LEFTOVER.fullmatch(leftover.name)
        if found is None or _alive(int(found["pid"])):
            continue
        final = folder / found["final"]
        if found["kind"] == REPLACED and not final.exists():
            os.replace(leftover, final)
            logger.warning("restored %s, set aside by an export that did not finish", final)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _replace(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an earlier export of the version is replaced whole."""
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}{REPLACED}{os.getpid()}")
        target.rename(previous)
    staging.rename(target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _version(package: str) -> str:

    return version(package)
