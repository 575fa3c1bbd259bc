"""The processes behind a running hypercorn: which one serves, and what it costs (Linux).

``hypercorn --worker-class trio`` runs a parent that starts its workers with
multiprocessing's *spawn*; the requests are served, and the memory and CPU spent,
in the workers. With ``--workers 0`` the parent serves by itself.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["worker_pids", "worker_pid", "rss_kib", "cpu_seconds"]


def worker_pids(parent: int) -> list[int]:
    """hypercorn's workers under ``parent``: its children started by multiprocessing's
    spawn (another child, if any, is multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except OSError:
            continue  # exited meanwhile
    return workers


def worker_pid(parent: int) -> int:
    """The one process serving for hypercorn's ``parent``: its first worker, or the
    parent itself when it has none (``--workers 0``)."""
    workers = worker_pids(parent)
    return workers[0] if workers else parent


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
