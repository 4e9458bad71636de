"""The database a chaos run stands on: PostgreSQL or MariaDB, started, restarted and stopped alike.

Each is a throwaway server of the test suite's (``tests/support``). A restart
comes in two kinds, as an operator or a crash would cause it: ``fast``, a clean
shutdown and start (PostgreSQL's ``pg_ctl restart -m fast``, MariaDB's SIGTERM,
what ``mariadb-admin shutdown`` does), and ``immediate``, no shutdown at all
(``pg_ctl -m immediate``, kill -9 of ``mariadbd``), so the next start recovers
from the log. The run reads its verdict through SQLAlchemy, the same on both.
"""

from __future__ import annotations

import subprocess
from typing import Protocol

from sqlalchemy.engine import make_url

from tests.support.mariadb_server import MariaDBServer
from tests.support.postgres_server import PostgresServer, _demote, pg_bindir
from tests.support.scratch import server_root

#: The databases ``--database`` (``make chaos CHAOS_DATABASE=...``) takes.
DATABASES = ("postgresql", "mariadb")
RESTARTS = ("fast", "immediate")


class ChaosDatabase(Protocol):
    #: What the report calls it.
    label: str
    #: The server's TCP port, for the fault proxy to stand before.
    port: int

    def url(self) -> str:
        """The run's database, directly (the driver of the run reads and defers through it)."""
        ...

    def restart(self, kind: str) -> None:
        """One of ``RESTARTS``, waiting until the server takes connections again."""
        ...

    def stop(self) -> None: ...

    def start_again(self) -> None:
        """After ``stop()``: the same data on the same port."""
        ...

    def cleanup(self) -> None:
        """Stop whatever runs and delete the data."""
        ...


def start(name: str, database: str) -> ChaosDatabase:
    """A fresh server of ``name`` (one of ``DATABASES``) holding an empty ``database``."""
    if name == "mariadb":
        return MariaDB(database)
    return PostgreSQL(database)


def through(url: str, port: int) -> str:
    """``url`` with its server at ``port`` on this host (the fault proxy's), password kept."""
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


class PostgreSQL:
    label = "PostgreSQL"

    def __init__(self, database: str) -> None:
        self.server = PostgresServer(root=server_root("jobstead-pg-")).start()
        self.port = self.server.port
        self._url = self.server.create_database(database)

    def url(self) -> str:
        return self._url

    def restart(self, kind: str) -> None:
        self._pg_ctl("restart", "-m", kind, "-w", "-t", "120", "-l", str(self.server.root / "pg_ctl.log"))

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        self.server.restart_stopped()

    def cleanup(self) -> None:
        # pg_ctl restarts leave a postmaster that is not the server object's child
        if (self.server.datadir / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate", "-w", check=False)
        self.server.cleanup()

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        server = self.server
        done = subprocess.run(
            [str(pg_bindir() / "pg_ctl"), args[0], "-D", str(server.datadir), *args[1:]],
            preexec_fn=lambda: _demote(server._uid, server._gid),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stderr or done.stdout}")


class MariaDB:
    label = "MariaDB"

    def __init__(self, database: str) -> None:
        self.server = MariaDBServer(root=server_root("jobstead-mariadb-")).start()
        self.port = self.server.port
        self._url = self.server.create_database(database)

    def url(self) -> str:
        return self._url

    def restart(self, kind: str) -> None:
        if kind == "immediate":
            self.server.kill()
            self.server.start_again()
        else:
            self.server.restart()

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        self.server.start_again()

    def cleanup(self) -> None:
        self.server.cleanup()
