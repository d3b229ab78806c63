"""Fixtures shared by several test modules."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import factories
from postgres import ClusterUnavailable, postgres_cluster


@pytest.fixture(autouse=True)
def _frozen_heap() -> None:
    """Collect, then move every object alive before the test out of the collector's reach.

    The code under test calls ``gc.collect()`` (after each scoring bucket), and a full collection
    walks every object of the process: in a test session that has imported MLflow, Spark, Jupyter,
    Playwright and the rest, and holds the fixtures of many modules, that took 0.3 to 1 s a call,
    minutes over the suite. Frozen objects are skipped by the collector (objects freed by reference
    counting are freed as ever; the collections still run, on everything the test creates).
    """
    gc.collect()
    gc.freeze()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One project with ``factories.SMALL_PROJECT`` (no changes): generated, ingested, featured and
    trained in its own SQLite store, a champion (version 1) and its model report.

    Trained once for every module that needs such a project. It is never changed: a module scores,
    re-trains or breaks a copy (``project_copy``), and the session checks at its end that no file of
    the original changed.
    """
    root = tmp_path_factory.mktemp("trained")
    with factories.local_tracking():
        factories.train_project(lambda stage: factories.project_config(root, stage))
    files = _files(root)
    yield root
    assert _files(root) == files, f"a test changed the shared trained project {root}: use project_copy"


@pytest.fixture(scope="session")
def project_copy(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``project_copy(name)``: a new folder holding a copy of the shared trained project.

    With ``tracking=True`` (the default) the data, the SQLite store, the artifacts
    (``factories.copy_project``, which points the copied store at the copied artifacts) and the
    reports: the champion is there to score. With ``tracking=False`` the data only (generated,
    ingested and featured): no store and no model, for a module that trains its own.
    """

    def copy(name: str, *, tracking: bool = True) -> Path:
        root = tmp_path_factory.mktemp(name)
        if tracking:
            factories.copy_project(trained_project, root)
            shutil.copytree(trained_project / "reports", root / "reports")
        else:
            shutil.copytree(trained_project / "data", root / "data")
        return root

    return copy


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


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a real, full file system: a 1 MB tmpfs whose every page a filler file holds.

    Folders and empty files can still be made there (tmpfs counts pages, not inodes); the first
    byte written fails with ENOSPC, as on a full disk. Mounting needs root: skipped otherwise.
    """
    if os.geteuid() != 0:
        pytest.skip("a real full disk is a 1 MB tmpfs, and mounting one needs root")
    mount = tmp_path / "full-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        _fill(mount / "filler")
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _fill(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                os.write(descriptor, b"\0" * 65536)
    finally:
        os.close(descriptor)
