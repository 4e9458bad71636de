"""Processes whose clock is off by a fixed offset, through libfaketime.

``LD_PRELOAD`` puts libfaketime's ``clock_gettime``/``time``/``gettimeofday``
in front of libc's, so everything in the child (Python's ``time.time()``,
``datetime.now()``, its log timestamps) sees the skewed clock, while the
database server and the test process keep the real one: two hosts whose
clocks disagree, on one machine. ``FAKETIME_NO_CACHE`` makes libfaketime read
the variable on every call rather than caching a start time, so the clock
keeps ticking at its real rate, just shifted. Only the wall clock is skewed
(``FAKETIME_DONT_FAKE_MONOTONIC``): a host whose clock is wrong still counts
seconds right, and that is what timeouts and sleeps use.

The library is the build that the ``libfaketime`` Python package ships (a dev
dependency), not Debian's 0.9.10: under that one a Python child's
``time.sleep`` fails with EINVAL and ``threading.Event.wait`` overruns by the
offset (its ``sem_clockwait`` and ``clock_nanosleep`` wrappers are broken), so
a worker under it hangs for reasons that have nothing to do with Jobstead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path


def libfaketime() -> str:
    spec = importlib.util.find_spec("libfaketime")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        library = Path(folder) / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
        if library.exists():
            return str(library)
    raise RuntimeError("libfaketime.so.1 not found: install the dev extra (pip install -e '.[dev]')")


def skewed_env(offset_seconds: int) -> dict[str, str]:
    preload = " ".join(p for p in (libfaketime(), os.environ.get("LD_PRELOAD", "")) if p)
    return {
        "LD_PRELOAD": preload,
        "FAKETIME": f"{offset_seconds:+d}s",
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def measured_skew(env: dict[str, str]) -> float:
    """How far ``time.time()`` in a Python child started with ``env`` is from ours, in seconds."""
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    import time

    return float(probe.stdout) - time.time()


def first_log_time(log: Path) -> float:
    """The timestamp of the first line a CLI process logged (its own clock), as epoch seconds."""
    for line in log.read_text().splitlines():
        try:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
    raise AssertionError(f"no timestamped line in {log}")
