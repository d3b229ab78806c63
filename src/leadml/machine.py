"""What this process may use of the machine: CPUs, and how idle OpenMP threads wait.

A shared server, a Kubernetes pod with a CPU limit or a CI runner is a busy machine. Two things
make a multithreaded fit collapse there (a 26x slower train stage for 3.8x the CPU time, issue
21): more threads than the CPUs the process gets (``os.cpu_count()`` counts the host's CPUs, not
a container's quota), and OpenMP threads that spin while they wait for each other (libgomp's
default), each taking the time slice the thread it waits for needs. So thread counts follow
:func:`available_cpus` and the wait policy is passive (sleep at once) unless asked otherwise.

libgomp reads ``OMP_WAIT_POLICY`` once, when it loads (with LightGBM or scikit-learn's compiled
parts), so :data:`PASSIVE` is the environment's default from ``import leadml`` on
(``leadml/__init__.py``) and the entry points apply the ``omp_wait_policy`` setting before they
import a stage. A process that loaded LightGBM before leadml keeps the policy it had.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from leadml.errors import LeadmlError

logger = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")
WAIT_POLICY = "OMP_WAIT_POLICY"
PASSIVE, ACTIVE = "passive", "active"
# auto: the environment's OMP_WAIT_POLICY when it sets one, else passive
WAIT_POLICIES: tuple[str, ...] = ("auto", PASSIVE, ACTIVE)


def available_cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the host's CPUs; a container limited to 2 CPUs of a 64-core host
    that started 64 threads would spend its quota switching between them, so the quota counts.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def cgroup_cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup allows (cgroup v2 ``cpu.max``, else v1 CFS), None: no limit."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1_quota, v1_period = cgroup / "cpu" / "cpu.cfs_quota_us", cgroup / "cpu" / "cpu.cfs_period_us"
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):  # unreadable or unexpected: no limit known
        return None
    return None


def thread_count(setting: int | str | None, key: str = "threads") -> int:
    """A ``threads`` setting as a count: ``auto`` (or unset) is :func:`available_cpus`."""
    if setting is None or setting == "auto":
        return available_cpus()
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise LeadmlError(f"{key} must be auto or a number of threads of at least 1, got {setting!r}")
    return setting


def openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already mapped into this process (its policy is then fixed)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not on Linux: cannot tell, assume not
        return False
    return any(name in maps for name in ("libgomp", "libomp", "libiomp"))


def apply_wait_policy(setting: str | None) -> str:
    """Set ``OMP_WAIT_POLICY`` for the OpenMP runtime this process will load; the policy in force.

    ``auto`` keeps the environment's value (``import leadml`` made it passive unless the user had
    set one). Once a runtime is loaded the policy cannot change: said in the log, not an error.
    """
    policy = "auto" if setting is None else str(setting).lower()
    if policy not in WAIT_POLICIES:
        raise LeadmlError(f"omp_wait_policy must be one of {list(WAIT_POLICIES)}, got {setting!r}")
    if policy != "auto":
        if openmp_loaded() and os.environ.get(WAIT_POLICY, "").lower() != policy:
            logger.warning("omp_wait_policy=%s comes too late: OpenMP is already loaded", policy)
        else:
            os.environ[WAIT_POLICY] = policy.upper()
    return os.environ.get(WAIT_POLICY, ACTIVE).lower()


# thread counts read when a library loads: OpenMP runtimes (LightGBM's, numba's "omp" layer, which
# the TreeSHAP kernel runs on) and numba's pool, which otherwise sizes itself by os.cpu_count()
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")


def apply_thread_count(setting: int | str | None) -> int:
    """Size the thread pools that libraries create when they load; the count.

    A number in the ``threads`` setting wins over the environment; ``auto`` leaves a size the
    environment already sets (LightGBM also gets the count per call, ``model.n_jobs``).
    """
    count = thread_count(setting)
    for variable in THREAD_VARIABLES:
        if setting in (None, "auto"):
            os.environ.setdefault(variable, str(count))
        else:
            os.environ[variable] = str(count)
    return count


def default_wait_policy() -> None:
    """Passive unless the environment says otherwise (called by ``import leadml``)."""
    os.environ.setdefault(WAIT_POLICY, PASSIVE.upper())


def release_arrow_memory() -> None:
    """Hand back to the system what Arrow's allocator keeps of freed buffers (a frame read from
    Parquet lives there until dropped, and mimalloc keeps its memory for reuse)."""
    arrow = sys.modules.get("pyarrow")  # not imported here: a process without Arrow has no pool to free
    if arrow is not None:
        arrow.default_memory_pool().release_unused()


@contextlib.contextmanager
def collecting_only_new_objects() -> Iterator[None]:
    """Garbage collections inside skip the objects alive on entry (``gc.freeze``), which are the
    caller's: modules and their objects, some 200,000 of them once pandas, Arrow and MLflow are
    loaded, were traversed by every collection (3% of ingesting the default data). On exit they
    are collected as usual again (``gc.unfreeze``), so a long-running process leaks nothing."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_memory() -> None:
    """Give freed memory back to the system, so a peak stays one step's (a bucket of the nightly job,
    a table of ingestion).

    Freed pandas and Arrow buffers otherwise stay in the allocators' free lists (glibc's arenas,
    Arrow's pool) and the process's resident size ratchets up step by step.
    """
    gc.collect()
    release_arrow_memory()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
