"""The three systems under test, each behind the same small interface.

A ``System`` is the harness's side of one system: it installs the schema in
the system's own fresh database, defers jobs through the system's own public
API (single and bulk), names the SQL that counts unfinished and finished jobs,
and says how to start one of its worker processes (``bench.worker``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class System(ABC):
    #: Short name, also the ``bench.worker`` argument.
    name: str
    #: SQL: how many deferred jobs are not finished yet (durably recorded as done).
    remaining_sql: str
    #: SQL: whether any deferred job is unfinished; cheap (stops at the first row), for polling near the end.
    unfinished_sql: str
    #: SQL: how many jobs finished successfully.
    succeeded_sql: str
    #: SQL run between measurements: an empty queue, the same starting point every time.
    reset_sql: str

    #: The one worker setting that decides throughput (``bench.worker`` flag), and its
    #: chosen value; ``python -m bench.tune`` measures the alternatives.
    knob: str
    knob_value: int

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    async def open(self) -> None:
        """Connect and install the schema (the system's own installer)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def defer_one(self, t: float = 0.0) -> None:
        """Defer one job in its own transaction (``t``: the latency probe's defer time)."""

    @abstractmethod
    async def defer_bulk(self, n: int) -> None:
        """Defer ``n`` jobs with the system's bulk API, in one call."""

    def worker_options(self) -> list[str]:
        """Arguments for ``python -m bench.worker NAME --url URL ...``: the throughput configuration."""
        return [self.knob, str(self.knob_value)]

    @property
    @abstractmethod
    def configuration(self) -> str:
        """One line for the report: how its workers and clients are set up."""

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return version(self.name)
