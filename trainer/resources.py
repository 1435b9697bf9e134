"""What this machine can hold: the memory still available, and the check made
before allocating something large (no TensorFlow here)."""

from __future__ import annotations

import contextlib
import os

from trainer.errors import DataError


# -- header ------------------------------------------------------------------------
def human_bytes(count: float) -> str:
    """``3.1e12`` -> ``"3.1 TB"`` (decimal units)."""
    if count < 1000:
        return f"{int(count)} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        count /= 1000
        if count < 1000 or unit == "PB":
            return f"{count:.1f} {unit}"
    raise AssertionError("unreachable")


# -- memory ----------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):  # missing, or "max" (no limit)
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or ``None`` if unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (else the physical memory), capped
    by a cgroup (container) memory limit and by ``ulimit -v``.
    """
    candidates = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit_path in (
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ):
        limit = _read_int(limit_path)
        if limit is not None and limit > 0:
            candidates.append(limit)
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)  # ulimit -v
        if soft != resource.RLIM_INFINITY:
            used = 0  # the address space this process already holds
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
            candidates.append(max(0, soft - used))
    return min(candidates) if candidates else None


def check_memory(nbytes: int, what: str, label: str) -> None:
    """Raises ``DataError`` naming ``label`` if ``nbytes`` cannot be allocated."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise DataError(
            f"{label}: needs {human_bytes(nbytes)} of memory for {what}; "
            f"at most {human_bytes(available)} is available"
        )
