"""The steady-state producer: ``python -m bench.producer --url URL --rate R --seconds S``.

A process of its own, as an application deferring jobs would be: every 10 ms
it defers the jobs due by then (``rate`` per second on a fixed schedule, each
stamped with ``time.time()`` just before the call) with one ``defer_many``;
falling behind, it defers what is due at once rather than dropping any. At
the end it prints one JSON line: jobs deferred and seconds taken.
"""

from __future__ import annotations

import argparse
import json
import time

from .systems.jobstead import build_app

TICK = 0.01


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="jobs per second")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    app = build_app(args.url)
    io = app.get_handler("io")
    io.defer(t=time.time())  # connect, prepare: outside the schedule
    total = int(args.rate * args.seconds)
    sent = 0
    start = time.perf_counter()
    tick = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * args.rate) + 1)
        if due > sent:
            now = time.time()
            io.defer_many([{"t": now}] * (due - sent))
            sent = due
        tick += 1
        pause = start + tick * TICK - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    print(json.dumps({"deferred": sent, "seconds": time.perf_counter() - start}), flush=True)
    app.close()


if __name__ == "__main__":
    main()
