"""The README's quick start as one script: define handlers, defer, run a worker, wait.

    python examples/quickstart.py            # a SQLite file in a temporary directory
    JOBSTEAD_DATABASE_URL=postgresql://... python examples/quickstart.py

Tested by tests/examples/test_examples.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from jobstead import App, Context, FailureEvent, JobFailed, PermanentError, RetryPolicy

database = os.environ.get("JOBSTEAD_DATABASE_URL") or f"sqlite:///{Path(tempfile.mkdtemp()) / 'quickstart.db'}"
app = App(database)


@app.handler(queue="mail", max_attempts=3, retry=RetryPolicy.fixed(0.1))
def send_email(to: str, subject: str, ctx: Context) -> dict[str, object]:
    ctx.log.info("sending %r to %s (attempt %d)", subject, to, ctx.attempt)
    if ctx.attempt == 1:
        raise ConnectionError("the mail server hung up")  # retried, 0.1 s later
    return {"sent": True, "to": to}


@app.handler
def refuse(reason: str) -> None:
    raise PermanentError(reason)  # failed at once: no retries


@app.on_dead
def report(event: FailureEvent) -> None:
    print(f"gave up on job {event.job_id} ({event.handler}): {event.status.value}, {event.error.message}")


def main() -> None:
    sent = send_email.defer(to="a@example.com", subject="hi")
    refused = refuse.defer(reason="no such customer")
    worker = app.worker(queues=["mail", "default"], poll_interval=0.1, install_signal_handlers=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        print("result:", json.dumps(sent.wait(timeout=30), sort_keys=True))
        try:
            refused.wait(timeout=30)
        except JobFailed as exc:
            print("failed:", exc.type, exc.message)
        print("attempts:", [a.outcome.value for a in sent.attempts_log()])
        print("stats:", {k: v for k, v in app.stats().by_status.items() if v})
    finally:
        worker.stop()
        thread.join()
        app.close()


if __name__ == "__main__":
    main()
