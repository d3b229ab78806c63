"""Exceptions that end a run with a one-line message instead of a traceback."""

from __future__ import annotations


class LeadmlError(Exception):
    """A failure the user can fix (config, data, environment); the CLI prints the message and exits 1."""


class ContractError(LeadmlError):
    """Input data does not meet its contract: missing columns, or too many bad rows."""
