"""Exceptions that end a run with a one-line message instead of a traceback."""

from __future__ import annotations


class LeadmlError(Exception):
    """A failure the user can fix (config, data, environment); the CLI prints the message and exits 1."""


class ContractError(LeadmlError):
    """Input data does not meet its contract: missing columns, or too many bad rows."""


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
