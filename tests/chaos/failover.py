"""``make chaos CHAOS_FAILOVER=1``: a PostgreSQL failover and a switchover back, under load.

A primary with a streaming standby (synchronous unless ``--asynchronous``);
4 workers and 2 cron schedulers of ``tests.apps.faults`` on a multi-host URL
and a producer deferring jobs; the primary killed (SIGKILL of its whole
process group) right after its workers claimed a burst of jobs, the standby
promoted; later the old primary rebuilt as a standby from a fresh base backup
and a planned switchover back to it. Prints what the guarantees promise and
``chaos: PASS`` or ``chaos: FAIL``: acknowledged defers lost (0), jobs run
twice at once (0 with a synchronous standby), jobs run again (printed), cron
duplicates (0), time from the promotion to the first job completed on the
new primary (under 10 s).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.support.failover import run_failover
from tests.support.standby import replicated_pair


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos --failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--failover", action="store_true", help="(selects this scenario)")
    p.add_argument("--asynchronous", action="store_true", help="an asynchronous standby (loss is then allowed)")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--schedulers", type=int, default=2)
    p.add_argument("--ms", type=int, default=300, help="each job's length")
    p.add_argument("--keep", action="store_true", help="keep the logs and records (printed) after the run")
    options = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jobstead-failover-"))
    with replicated_pair(synchronous=not options.asynchronous) as pair:
        report = run_failover(
            pair,
            root,
            workers=options.workers,
            jobs=options.jobs,
            ms=options.ms,
            run_before_kill=10.0,
            produce_every=0.05,
            schedulers=options.schedulers,
            switchover_back=True,
            drain_timeout=600.0,
        )
    kind = "asynchronous" if options.asynchronous else "synchronous"
    print(f"failover ({kind} standby), records in {root}" if options.keep else f"failover ({kind} standby)")
    for line in report.lines():
        print(line)
    strict = not options.asynchronous
    ok = (
        report.unfinished == 0
        and not report.died
        and report.cron_duplicates == 0
        and report.first_completion_after is not None
        and report.first_completion_after < 10
        and (not strict or (not report.lost_defers and report.overlaps == 0))
    )
    print(f"chaos: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1
