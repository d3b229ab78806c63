"""Exceptions that end a run with a one-line message instead of a traceback."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

# data.config_file: the YAML file the data config was read from, recorded by the entry points
# (leadml.cli) so that a message can name the file to edit; not a setting
CONFIG_FILE = "config_file"


class LeadmlError(Exception):
    """A failure the user can fix (config, data, environment); the CLI prints the message and exits.

    ``exit_code`` tells a scheduler what went wrong without parsing the message (see the
    README's table of exit codes).
    """

    exit_code = 1


class ContractError(LeadmlError):
    """Input data does not meet its contract: missing columns, or too many bad rows."""

    exit_code = 4


class SourceMissingError(LeadmlError):
    """A configured source (file, table or database) does not exist or cannot be opened."""

    exit_code = 3


class NoModelError(LeadmlError):
    """No production model: nothing holds the alias, or the version or run cannot be found."""

    exit_code = 2


class SchemaMismatchError(LeadmlError):
    """The features built today do not match the model's signature (missing or mistyped columns)."""

    exit_code = 5


class TrackingUnavailableError(LeadmlError):
    """The MLflow tracking server or store cannot be reached."""

    exit_code = 6


class ModelIntegrityError(NoModelError):
    """An exported model folder differs from its checksums: a file was changed, removed or added."""

    exit_code = 8


class PickledModelWarning(UserWarning):
    """A model version saved by an earlier leadml as a pickle was loaded (it still scores)."""


class StaleDataError(LeadmlError):
    """The data's latest lead or activity is older than ``score.max_staleness_days`` before the run's date."""

    exit_code = 9


class ScoreTableError(LeadmlError):
    """The SQL score table (``score.sql.table``) cannot take the scores: one of its columns has a type
    that cannot hold theirs, or it lacks a key column. Nothing was written to it."""

    exit_code = 10


class OutputError(LeadmlError):
    """An output, interim or work folder that cannot be written: read-only, not a folder, disk full."""


# what the file system says when a folder cannot take a run's output; never a bug of the code
FULL_DISK = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
OUTPUT_FAULTS = FULL_DISK | {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def is_output_fault(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in OUTPUT_FAULTS


def os_reason(error: OSError) -> str:
    """The system's words for ``error`` as a message continues them: "no space left on device"."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


@contextlib.contextmanager
def writing_to(folder: Path, setting: str) -> Iterator[None]:
    """An output fault inside (:data:`OUTPUT_FAULTS`) becomes one :class:`OutputError` line naming
    ``folder`` and its ``setting``; other errors pass. The block cleans its own partial files."""
    try:
        yield
    except OSError as error:
        if not is_output_fault(error):
            raise
        raise OutputError(f"cannot write to {folder} ({setting}): {os_reason(error)}") from None


class SettingsError(LeadmlError, ValueError):
    """A config section names a setting that does not exist (a typo must not be ignored)."""


def known_settings(cls: type, mapping: object, section: str) -> dict:
    """``mapping`` as keyword arguments of the dataclass ``cls``; unknown keys raise SettingsError."""
    values = dict(mapping or {})  # type: ignore[call-overload]
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown {section} setting(s) {unknown}; known: {sorted(known)}")
    return values


def unknown_keys(values: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str) -> list[str]:
    """The keys of ``values`` (a composed config section) that ``defaults`` (the same section of
    the shipped config file, its schema) does not have, as dotted paths under ``prefix``.

    Hydra accepts any new key given as ``+score.foo=1``, which nothing would then read: a typo
    silently ignored. Below a default that is null or an empty mapping (``score.spark.conf``,
    ``forecast.planned``) any key is the user's own.
    """
    found = []
    for key, value in values.items():
        path = f"{prefix}.{key}"
        if key not in defaults:
            found.append(path)
        elif isinstance(defaults[key], Mapping) and defaults[key] and isinstance(value, Mapping):
            found.extend(unknown_keys(value, defaults[key], path))
    return found


def data_config_file(data: Mapping[str, Any] | None) -> str:
    """The data config file a message tells the user to edit.

    ``data.config_file`` when an entry point recorded where Hydra found the file (a folder of
    the user's own on ``hydra.searchpath`` as well as ``conf/data/``), shown relative to the
    working directory when it lies inside it; otherwise ``conf/data/<name>.yaml``.
    """
    data = data or {}
    recorded = data.get(CONFIG_FILE)
    if not recorded:
        return f"conf/data/{data.get('name') or '<name>'}.yaml"
    path = Path(str(recorded))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
