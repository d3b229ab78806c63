"""``leadml-export``: a registered version as a self-contained folder under ``models/``.

``models/<registered model>-v<version>/`` holds the registry's MLflow model files unchanged
(MLmodel, the pickled pyfunc, requirements, signature, input example), and beside them:

* ``MODEL_CARD.md``: what the model is for, what it learned from and how well it does;
* ``request_example.json``: one made-up lead in the documented request shape;
* ``export.json``: where it came from (registry, version, run, aliases, leadml version);
* ``SHA256SUMS``: the SHA-256 of every other file, in ``sha256sum`` format
  (``sha256sum -c SHA256SUMS`` checks it too).

Loading an exported folder (``leadml-score model_uri=models/...``, ``mlflow models serve``)
verifies the checksums first and refuses a folder with a changed, missing or added file.
The checksums catch accidents and careless edits; they are not a signature, since whoever
can rewrite a file can rewrite ``SHA256SUMS`` too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.errors import LeadmlError, ModelIntegrityError, NoModelError

CHECKSUMS = "SHA256SUMS"
EXPORT_RECORD = "export.json"
MODEL_CARD = "MODEL_CARD.md"
REQUEST_EXAMPLE = "request_example.json"
MLMODEL = "MLmodel"
CHUNK = 1 << 20


# --------------------------------------------------------------------------- checksums
def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the checksum file, by POSIX relative path."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != CHECKSUMS
    }


def write_checksums(folder: Path) -> dict[str, str]:
    """Write ``SHA256SUMS`` of every other file in ``folder``; returns what it lists."""
    digests = folder_digests(folder)
    (folder / CHECKSUMS).write_text(
        "".join(f"{d}  {name}\n" for name, d in digests.items()), encoding="utf-8"
    )
    return digests


def read_checksums(path: Path) -> dict[str, str]:
    """``sha256sum`` lines as {relative path: digest}; a malformed line is an integrity error."""
    recorded: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise ModelIntegrityError(f"{path}, line {number}: not a '<sha256>  <file>' line: {line[:80]!r}")
        recorded[name.removeprefix("*")] = digest
    return recorded


def is_export(folder: Path) -> bool:
    return (folder / EXPORT_RECORD).exists() or (folder / CHECKSUMS).exists()


def verify_folder(folder: Path) -> None:
    """Refuse an exported folder whose files differ from its ``SHA256SUMS``.

    A folder that is not an export (no ``export.json`` and no ``SHA256SUMS``: the registry's
    own copy of a model, downloaded by MLflow) is left alone.
    """
    folder = Path(folder)
    if not is_export(folder):
        return
    checksums = folder / CHECKSUMS
    if not checksums.exists():
        raise ModelIntegrityError(
            f"exported model {folder} has no {CHECKSUMS}: it cannot be verified, so it is not loaded "
            "(export it again with leadml-export)"
        )
    recorded = read_checksums(checksums)
    present = folder_digests(folder)
    changed = sorted(name for name in recorded.keys() & present.keys() if recorded[name] != present[name])
    missing = sorted(recorded.keys() - present.keys())
    added = sorted(present.keys() - recorded.keys())
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (("changed", changed), ("missing", missing), ("added", added))
        if names
    ]
    if problems:
        raise ModelIntegrityError(
            f"exported model {folder} was modified after export ({'; '.join(problems)}): refusing to "
            f"load it; export it again with leadml-export (checked against {CHECKSUMS})"
        )


def local_model_folder(model_uri: str) -> Path | None:
    """The folder ``model_uri`` names when it is a local path (or ``file://``), else None."""
    if model_uri.startswith("file://"):
        model_uri = model_uri.removeprefix("file://")
    elif "://" in model_uri or model_uri.startswith(("models:", "runs:")):
        return None
    folder = Path(model_uri).expanduser()
    if not folder.is_dir():
        raise NoModelError(f"cannot load model {model_uri}: no such folder")
    if not (folder / MLMODEL).exists():
        raise NoModelError(f"cannot load model {model_uri}: not an MLflow model folder (no {MLMODEL})")
    return folder.resolve()


def exported_version(folder: Path) -> str | None:
    """The registry version an export was made from (its ``export.json``), None for other folders."""
    record = folder / EXPORT_RECORD
    if not record.exists():
        return None
    try:
        return str(json.loads(record.read_text(encoding="utf-8"))["version"])
    except (ValueError, KeyError) as error:
        raise ModelIntegrityError(f"{record}: not an export record ({error})") from None


# --------------------------------------------------------------------------- export
def export_stage(
    cfg: Mapping[str, Any],
    root: Path,
    recreate: Callable[[Mapping[str, Any]], list[str]] | None = None,
) -> dict[str, Any]:
    """Copy a registered version into ``export.output_dir`` with its card and checksums.

    ``recreate`` turns the run's logged config into the ``leadml-train`` overrides that
    re-create it (``cli.recreate_overrides``); the card quotes them.
    """
    from leadml.adapters import tracking
    from leadml.reporting import model_card
    from leadml.scoring.requests import flat_example, lead_example

    started = time.perf_counter()
    export_cfg, mlflow_cfg = cfg["export"], cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    name = str(mlflow_cfg["registered_model"])
    version = _chosen_version(name, export_cfg)
    details = tracking.version_details(name, version)
    model_uri = f"models:/{name}/{version}"
    target = Path(export_cfg["output_dir"]) / f"{name}-v{version}"
    target.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; an export is read by others
    try:
        model_dir = tracking.download_model(model_uri, staging / "model")
        for item in model_dir.iterdir():
            item.rename(staging / item.name)
        model_dir.rmdir()
        scorer = tracking.load_scorer(str(staging))
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
    return {
        "path": str(target),
        "registered_model": name,
        "version": version,
        "aliases": record["aliases"],
        "run_id": run["run_id"],
        "files": sorted(listed),
        "model_card": str(target / MODEL_CARD),
        "tracking_uri": tracking.masked_uri(uri),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _chosen_version(name: str, export_cfg: Mapping[str, Any]) -> str:
    from leadml.adapters import tracking

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


def _replace(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an earlier export of the version is replaced whole."""
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}-replaced-{os.getpid()}")
        target.rename(previous)
    staging.rename(target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
