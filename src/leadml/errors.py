"""Exceptions that end a run with a one-line message instead of a traceback."""

from __future__ import annotations


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


class SettingsError(LeadmlError, ValueError):
    """A config section names a setting that does not exist (a typo must not be ignored)."""


def known_settings(cls: type, mapping: object, section: str) -> dict:
    """``mapping`` as keyword arguments of the dataclass ``cls``; unknown keys raise SettingsError."""
    from dataclasses import fields

    values = dict(mapping or {})  # type: ignore[call-overload]
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown {section} setting(s) {unknown}; known: {sorted(known)}")
    return values
