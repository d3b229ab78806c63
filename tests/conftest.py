"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from postgres import ClusterUnavailable, postgres_cluster


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of an empty database in a throwaway PostgreSQL cluster (tests/postgres.py).

    Started on first use, stopped and removed at the end of the session; the tests using it
    skip, with the reason, on a machine without the server binaries.
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_cluster())
        except ClusterUnavailable as reason:
            pytest.skip(f"no PostgreSQL server for the tests: {reason}")
        yield url
