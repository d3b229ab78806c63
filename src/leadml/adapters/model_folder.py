"""An exported model folder (leadml-export): its files, their SHA-256 checksums, and where a
registered model lies on disk."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from leadml.errors import ModelIntegrityError, NoModelError

logger = logging.getLogger(__name__)


CHECKSUMS = "SHA256SUMS"

EXPORT_RECORD = "export.json"

MODEL_CARD = "MODEL_CARD.md"

REQUEST_EXAMPLE = "request_example.json"

MLMODEL = "MLmodel"

CHUNK = 1 << 20


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


def pickled_message(described: str) -> str:
    """The warning of a version pickled by leadml before 0.2.0, naming it and the way out."""
    return (
        f"{described} was saved by an earlier leadml as a Python pickle, which can run any code "
        "as it loads; export it again with leadml-export (the export is written without pickle) "
        "or train again"
    )
