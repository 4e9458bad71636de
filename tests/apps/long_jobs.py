"""Handlers that keep their worker busy in the two ways a lease renewal on the event loop would not survive.

``hold_gil`` spends its time inside the regex engine, C code that keeps the GIL
for each whole match (no other Python thread runs meanwhile), in bursts of a
chosen length; ``block_loop`` is an async handler that blocks the event loop
with a plain ``time.sleep``. Each returns the longest stretch it kept the GIL
or the loop, so the test can check the worker was really starved that long.

The database comes from the environment (``JOBSTEAD_DATABASE_URL``, ``JOBSTEAD_SCHEMA``).
"""

from __future__ import annotations

import re
import time

from jobstead import App

app = App()

#: Catastrophic backtracking: every extra ``a`` doubles the time of one failed match.
_BACKTRACKS = re.compile(r"(a+)+$")


def _one_match(n: int) -> float:
    started = time.perf_counter()
    _BACKTRACKS.match("a" * n + "b")
    return time.perf_counter() - started


def _length_for(burst: float) -> int:
    """The subject length whose one match keeps the GIL for about ``burst`` seconds on this machine."""
    n = 12
    while _one_match(n) < burst * 0.6 and n < 40:
        n += 1
    return n


@app.handler(max_attempts=1)
def hold_gil(seconds: float, burst: float) -> float:
    n = _length_for(burst)
    longest = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        longest = max(longest, _one_match(n))
    return longest


@app.handler(max_attempts=1)
async def block_loop(seconds: float) -> float:
    started = time.monotonic()
    time.sleep(seconds)  # the point: nothing else on the loop runs meanwhile
    return time.monotonic() - started
