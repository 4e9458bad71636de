"""A short ``make chaos`` inside ``make test``: 500 jobs, 3 kills, a freeze, a restart, a cut, a stall.

It also starts every process while the database is down for a few seconds (as
after a node failure), so the verdict on ``died`` does not hang on where the
random faults happen to land. The run is shared by the two tests: what holds
today, and the whole verdict. On PostgreSQL and on MariaDB (whose restarts are
a clean one and a kill -9 of ``mariadbd``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO

pytestmark = [pytest.mark.slow]

SHORT = [
    "--jobs=500",
    "--kills=3",
    "--stops=1",
    "--cuts=1",
    "--stalls=1",
    "--lease=2",
    "--outage-at-start=3",
    "--drain-timeout=180",
    "--seed=13",
]
LABELS = ("lost:", "ran twice at once:", "limit peak:", "cron duplicates:", "died:", "drain after last fault:")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("postgresql", "fast"), marks=pytest.mark.postgres, id="postgresql"),
        pytest.param(("mariadb", "fast,immediate"), marks=pytest.mark.mariadb, id="mariadb"),
    ],
)
def chaos(request: pytest.FixtureRequest) -> subprocess.CompletedProcess[str]:
    database, restarts = request.param
    return subprocess.run(
        [sys.executable, "-m", "tests.chaos", *SHORT, f"--database={database}", f"--restarts={restarts}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _line(run: subprocess.CompletedProcess[str], label: str) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith(label)]
    assert len(lines) == 1, run.stdout + run.stderr[-3000:]
    return lines[0].removeprefix(label).strip()


def test_no_job_is_lost_run_twice_at_once_or_over_its_limit_and_no_cron_fires_twice(
    chaos: subprocess.CompletedProcess[str],
) -> None:
    assert [line.split(":")[0] + ":" for line in chaos.stdout.splitlines()] == [*LABELS, "chaos:"], chaos.stdout
    assert _line(chaos, "lost:").startswith("0 of 500")
    assert _line(chaos, "ran twice at once:").startswith("0 ")
    assert "wrote the completion: 0" in _line(chaos, "ran twice at once:")
    assert int(_line(chaos, "limit peak:").split()[0]) <= 3
    assert _line(chaos, "cron duplicates:").startswith("0 ")


def test_no_process_dies_and_the_verdict_is_pass(chaos: subprocess.CompletedProcess[str]) -> None:
    assert _line(chaos, "died:") == "0", chaos.stdout
    assert chaos.stdout.splitlines()[-1] == "chaos: PASS" and chaos.returncode == 0
