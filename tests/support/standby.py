"""A primary and a streaming standby from Debian's PostgreSQL, for failover tests.

The standby is a ``pg_basebackup -R`` copy of the primary (``-R`` writes
``standby.signal`` and the ``primary_conninfo`` that makes it stream). With
``synchronous=True`` the primary waits for the standby to have the WAL of each
commit on disk (``synchronous_standby_names``, ``synchronous_commit=on``), so a
commit that returned survives the loss of the primary: what Patroni's
``synchronous_mode`` and CloudNativePG's synchronous replicas give.

A failover here is what a node dying does: ``crash`` kills the primary's whole
process group with SIGKILL (postmaster and backends at once, no shutdown
checkpoint), ``promote`` turns the standby into the primary (``pg_ctl
promote``), and ``rebuild_as_standby`` makes the old primary's host a standby
of the new one from a fresh base backup, so the pair can fail over again (a
planned switchover back).

Both servers listen on 127.0.0.1 with their own ports; ``url`` gives the
multi-host URL a client would use (``target_session_attrs=read-write``: libpq
tries the hosts in order and keeps the one that accepts writes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .pgbouncer import PgBouncer
from .postgres_server import PostgresServer, pg_bindir
from .scratch import server_root

#: What replication needs on top of the test server's defaults.
REPLICATION_SETTINGS = [
    "synchronous_commit=on",
    "wal_level=replica",
    "max_wal_senders=10",
    "hot_standby=on",
    "wal_log_hints=on",
    "wal_keep_size=256MB",
]
#: The standby's name in ``synchronous_standby_names`` (its ``application_name``).
STANDBY_NAME = "standby"


@dataclass
class ReplicatedPair:
    """Two servers, ``primary`` and ``standby``; after a failover they swap roles."""

    synchronous: bool = True
    #: ``name=value`` settings of both servers, after the replication ones.
    settings: list[str] = field(default_factory=list)
    primary: PostgresServer = field(init=False)
    standby: PostgresServer = field(init=False)

    def start(self) -> ReplicatedPair:
        # Not durable (fsync off: the test machine's page cache outlives a kill -9), but every
        # commit waits for the standby: synchronous_commit=on overrides the test default.
        self.primary = PostgresServer(
            settings=[*REPLICATION_SETTINGS, *self.settings], root=server_root("jobstead-pg-")
        )
        self.primary.start()
        if self.synchronous:
            # ALTER SYSTEM, not a command-line setting: the roles swap and it must be changeable.
            self.set(self.primary, "synchronous_standby_names", STANDBY_NAME)
        self.standby = self._standby_of(self.primary)
        self.wait_streaming()
        return self

    # -- looking ---------------------------------------------------------------

    def ports(self) -> list[int]:
        """Both ports, in the order a client URL lists them (the first primary first)."""
        return sorted([self.primary.port, self.standby.port], key=lambda port: port != self._first_port)

    def url(self, database: str, *, user: str | None = None, plain: bool = True) -> str:
        """A multi-host URL for both servers: ``host:port,host:port`` (plain) or ``?host=..&port=..``."""
        who = user or self.primary.user
        ports = self.ports()
        if plain:
            hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
            return f"postgresql+psycopg://{who}@{hosts}/{database}?target_session_attrs=read-write"
        return (
            f"postgresql+psycopg://{who}@/{database}?host={','.join('127.0.0.1' for _ in ports)}"
            f"&port={','.join(str(p) for p in ports)}&target_session_attrs=read-write"
        )

    def in_recovery(self, server: PostgresServer) -> bool:
        done = server._psql("postgres", "SELECT pg_is_in_recovery()")
        return done.returncode == 0 and done.stdout.strip() == b"t"

    def wait_streaming(self, timeout: float = 60) -> None:
        """Until the primary sees the standby streaming (and, synchronous, as its sync standby)."""
        state = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.primary._psql(
                "postgres", f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
            )
            if done.returncode == 0 and done.stdout.strip().decode() == state:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the standby did not start streaming ({state}) within {timeout} s")

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        lsn = self.primary._psql("postgres", "SELECT pg_current_wal_lsn()").stdout.strip().decode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.standby._psql("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")
            if done.stdout.strip() == b"t":
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby did not replay up to {lsn} within {timeout} s")

    # -- failing over ----------------------------------------------------------

    def crash_primary(self) -> None:
        """SIGKILL to every process of the primary at once: the node is gone, nothing shut down."""
        process = self.primary.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the postmaster leads its own session
            process.wait(30)
        self.primary.process = None

    def promote(self) -> float:
        """``pg_ctl promote`` the standby and wait until it accepts writes; swap roles; the time it took."""
        began = time.monotonic()
        done = self.standby._run(pg_bindir() / "pg_ctl", "promote", "-w", "-t", "60", "-D", self.standby.datadir)
        if done.wait(90) != 0:
            raise RuntimeError(f"pg_ctl promote failed: {self.log_tail(self.standby)}")
        deadline = time.monotonic() + 60
        while self.in_recovery(self.standby):
            if time.monotonic() > deadline:
                raise RuntimeError("the promoted standby is still in recovery after 60 s")
            time.sleep(0.05)
        self.primary, self.standby = self.standby, self.primary
        if self.synchronous:
            # The new primary has no standby yet (its base backup copied the old primary's
            # setting): waiting for one would block every commit until the rebuild.
            self.set(self.primary, "synchronous_standby_names", "")
        return time.monotonic() - began

    def rebuild_as_standby(self) -> None:
        """The old primary's host (stopped or crashed) as a standby of the new one, from a fresh base backup."""
        old = self.standby
        old.stop()
        self.standby = self._standby_of(self.primary, port=old.port)
        shutil.rmtree(old.root, ignore_errors=True)
        if self.synchronous:
            self.set(self.primary, "synchronous_standby_names", STANDBY_NAME)
        self.wait_streaming()

    def cut_replication(self) -> None:
        """Stop the standby receiving WAL (its ``primary_conninfo`` emptied): a standby lagging behind.

        What it has stays; whatever the primary commits from now on is unknown to it, as the last
        unshipped transactions of an asynchronous standby are when the primary dies.
        """
        self.set(self.standby, "primary_conninfo", "")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.primary._psql("postgres", "SELECT count(*) FROM pg_stat_replication")
            if done.returncode == 0 and done.stdout.strip() == b"0":
                return
            time.sleep(0.05)
        raise RuntimeError("the standby still streams 30 s after its primary_conninfo was emptied")

    def switchover(self) -> float:
        """A planned switchover: the primary shut down cleanly, the standby promoted, the old primary rebuilt."""
        self.wait_replayed()
        self.primary.stop()
        took = self.promote()
        self.rebuild_as_standby()
        return took

    def set(self, server: PostgresServer, name: str, value: str) -> None:
        """``ALTER SYSTEM SET name = value`` and a reload: a setting changed under open connections."""
        for sql in (f"ALTER SYSTEM SET {name} = '{value}'", "SELECT pg_reload_conf()"):
            done = server._psql("postgres", sql)
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode())

    def log_tail(self, server: PostgresServer) -> str:
        path = server.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def cleanup(self) -> None:
        for server in (getattr(self, "primary", None), getattr(self, "standby", None)):
            if server is not None:
                server.cleanup()

    # -- making a standby --------------------------------------------------------

    def _standby_of(self, primary: PostgresServer, port: int | None = None) -> PostgresServer:
        standby = PostgresServer(settings=[*REPLICATION_SETTINGS, *self.settings], root=server_root("jobstead-pg-"))
        if port is not None:
            standby.port = port
        backup = standby._run(
            pg_bindir() / "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            primary.user,
            "-D",
            standby.datadir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-d",
            f"application_name={STANDBY_NAME}",
        )
        if backup.wait(120) != 0:
            raise RuntimeError(f"pg_basebackup failed: {self.log_tail(standby)}")
        if not hasattr(self, "_first_port"):
            self._first_port = primary.port
        standby._launch()
        return standby


@contextlib.contextmanager
def replicated_pair(synchronous: bool = True, settings: list[str] | None = None) -> Iterator[ReplicatedPair]:
    pair = ReplicatedPair(synchronous=synchronous, settings=settings or [])
    try:
        yield pair.start()
    finally:
        pair.cleanup()


def replication_available() -> bool:
    """Whether the server binaries this module runs are installed."""
    try:
        bindir = pg_bindir()
    except RuntimeError:
        return False
    return all((bindir / name).exists() for name in ("pg_basebackup", "pg_ctl", "postgres"))


#: PgBouncer's pause after a failed server login (15 s by default) shortened, as the README advises:
#: a connection to the dead primary fails at the kill, and for that long PgBouncer refuses every
#: client of that database at once ("server login has been failing"), even after it was repointed.
FAILOVER_BOUNCER_SETTINGS = {"server_login_retry": "1"}


@dataclass
class FailoverBouncer(PgBouncer):
    """Debian's PgBouncer configuration, transaction mode, plus ``settings``."""

    settings: dict[str, str] = field(default_factory=dict)

    def _write_config(self) -> Path:
        config = super()._write_config()
        lines = [f"{name} = {value}" for name, value in self.settings.items()]
        with open(config, "a") as out:
            out.write("\n".join([*lines, ""]))
        return config


@contextlib.contextmanager
def bouncer_in_front(pair: ReplicatedPair, settings: dict[str, str] | None = None) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction mode) in front of the pair's primary; ``follow_primary`` repoints it."""
    chosen = FAILOVER_BOUNCER_SETTINGS if settings is None else settings
    bouncer = FailoverBouncer(pair.primary, settings=chosen).start()
    try:
        yield bouncer
    finally:
        bouncer.cleanup()


def follow_primary(bouncer: PgBouncer, pair: ReplicatedPair) -> None:
    """Point ``bouncer`` at the pair's primary now, as a ``-rw`` Service's endpoints follow it.

    The configuration rewritten and reloaded (SIGHUP): PgBouncer closes its
    server connections to a database whose address changed and opens new ones
    to the new address, under the clients' open connections.
    """
    bouncer.server = pair.primary
    bouncer._write_config()
    assert bouncer.process is not None
    os.kill(bouncer.process.pid, signal.SIGHUP)
