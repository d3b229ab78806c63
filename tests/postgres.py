"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, a free port, removed after.

The server binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, installed by
``make system-deps`` when run as root) or whatever ``initdb`` and ``pg_ctl`` are on PATH;
``LEADML_PG_BIN`` names another folder. Without them :func:`server_binaries` is None and the
fixture skips. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (``runuser -u postgres --``) in a folder that user owns. The server
listens on 127.0.0.1 only, at a port the kernel chose free, with its unix socket in the
temporary folder (no system-wide socket, no clash with a running cluster), trusts local
connections and skips fsync: it holds test data only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from factories import free_port

SERVER_USER = "postgres"
DATABASE = "leadml"
ROLE = "leadml"
_SERVER_SETTINGS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=20 -c shared_buffers=32MB"
)


class ClusterUnavailable(Exception):
    """The machine cannot run a PostgreSQL server for the tests (the reason says why)."""


def server_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: LEADML_PG_BIN, the newest Debian version, or PATH."""
    candidates = []
    if os.environ.get("LEADML_PG_BIN"):
        candidates.append(Path(os.environ["LEADML_PG_BIN"]))
    debian = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates += sorted(
        (Path(p).parent for p in debian), key=lambda p: _version(p.parent.name), reverse=True
    )
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _as_server_user() -> list[str]:
    """The command prefix that runs the server binaries as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterUnavailable(
            f"running as root and there is no {SERVER_USER!r} user to run the server as "
            "(Debian's postgresql package creates it)"
        ) from None
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--"]
    raise ClusterUnavailable("running as root and runuser is missing: cannot drop to the postgres user")


def _parent_folder(server_user: bool) -> str:
    """Where the cluster's folder goes: the temp folder, unless its socket path would be too long
    (unix sockets: 107 bytes) or the postgres user could not reach it (a private $TMPDIR of root)."""
    parent = Path(tempfile.gettempdir()).resolve()
    reachable = all(folder.stat().st_mode & 0o001 for folder in (parent, *parent.parents))
    if len(str(parent)) > 60 or (server_user and not reachable):
        return "/tmp"
    return str(parent)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {output[-2000:]}")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a cluster with an empty database; yield its SQLAlchemy URL; stop and remove it after.

    Raises ClusterUnavailable when the binaries, the driver or (as root) the postgres user are
    missing; a server that is there but fails to start raises RuntimeError with its log.
    """
    binaries = server_binaries()
    if binaries is None:
        raise ClusterUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin, "
            "$LEADML_PG_BIN or PATH; `make system-deps` as root installs Debian's postgresql"
        )
    try:
        import psycopg
    except ImportError:
        raise ClusterUnavailable(
            "the psycopg driver is not installed (pip install 'psycopg[binary]')"
        ) from None
    prefix = _as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="leadml-pg-", dir=_parent_folder(server_user=bool(prefix))))
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        if prefix:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(folder, account.pw_uid, account.pw_gid)
        _run(
            [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
        for _attempt in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            options = f"-p {port} -k {folder} {_SERVER_SETTINGS}"
            try:
                _run(
                    [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                     "-w", "-t", "60", "start"],
                    "pg_ctl start",
                )  # fmt: skip
            except RuntimeError as error:
                if "could not bind" not in _tail(log) and "already in use" not in _tail(log):
                    raise RuntimeError(f"{error}\nserver log:\n{_tail(log)}") from None
                continue
            started = True
            break
        if not started:
            raise RuntimeError(f"the PostgreSQL server found no free port:\n{_tail(log)}")
        with psycopg.connect(
            host="127.0.0.1", port=port, user=ROLE, dbname="postgres", autocommit=True
        ) as db:
            db.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql+psycopg://{ROLE}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:  # immediate: the data is thrown away, no checkpoint needed
            with contextlib.suppress(Exception):
                _run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                     "pg_ctl stop")  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"
