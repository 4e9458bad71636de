"""Where the tests' throwaway database servers keep their data: in RAM when the machine has room.

A test server's data lives as long as its test session and its durability is
off already (``fsync=off``, no per-commit flush), yet disk still costs: MariaDB
makes about 1,000 ``fdatasync`` calls to migrate one fresh schema whatever its
flush settings (DDL writes its .frm and .ibd files and its DDL log synchronously):
most of the 0.7 s a MariaDB test spent in its setup. On tmpfs a sync costs
nothing. A full run keeps about 2 GB there (every test's schema stays until the
session's servers go), so RAM is used only when its tmpfs has ``RAM_MIN_FREE``
to spare; else the default temp dir, as before.

Benchmarks keep their servers on disk (the default root of ``PostgresServer``
and ``MariaDBServer``): they measure what a user's database costs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Linux's tmpfs for shared memory, present on every Debian machine (and often small in a container).
RAM_DIR = Path("/dev/shm")
RAM_MIN_FREE = 6 * 2**30


def _ram_has_room() -> bool:
    try:
        stats = os.statvfs(RAM_DIR)
    except OSError:
        return False
    return os.access(RAM_DIR, os.W_OK | os.X_OK) and stats.f_bavail * stats.f_frsize >= RAM_MIN_FREE


def server_root(prefix: str) -> Path:
    """A new, empty directory for one test server's data (``root=`` of a server), in RAM when it fits."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=RAM_DIR if _ram_has_room() else None))
