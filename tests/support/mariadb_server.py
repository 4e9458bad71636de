"""A throwaway MariaDB server for tests: Debian's binaries, a temp dir, a free port, a private socket.

Like ``postgres_server``: the data directory is made by ``mariadb-install-db``
in a directory of our own, the server listens on 127.0.0.1 at a free port and
on a socket in that directory, and nothing outside it is read or written
(``--no-defaults``: no ``/etc/mysql`` option files). When we are root the
server runs as the ``mysql`` user (the child switches user itself), and the
kernel kills it if the test process dies (PR_SET_PDEATHSIG), so a crashed run
leaves no server behind.

Tests connect as ``jobstead`` with a password over TCP, as an application
would; ``root`` (unix-socket only) is for creating databases.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postgres_server import _demote, free_port

USER = "jobstead"
PASSWORD = "jobstead-test"


def mariadb_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} not found: install MariaDB (make system-deps does it on Debian: mariadb-server)")
    return found


@dataclass
class MariaDBServer:
    """One running server; ``url(db)`` gives SQLAlchemy URLs for databases in it."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobstead-mariadb-")))
    process: subprocess.Popen[bytes] | None = None
    #: Extra ``--name=value`` server options (the last one wins).
    options: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._uid: int | None = None
        self._gid: int | None = None
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            entry = pwd.getpwnam("mysql")
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            self.user = "mysql"
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._uid, self._gid)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def _run(self, *argv: str | Path) -> subprocess.Popen[bytes]:
        with open(self.root / "server.log", "ab") as log:
            return subprocess.Popen(
                [str(a) for a in argv],
                stdout=log,
                stderr=log,
                preexec_fn=lambda: _demote(self._uid, self._gid),
                cwd=self.root,
            )

    def start(self) -> MariaDBServer:
        install = self._run(
            mariadb_binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={self.user}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--skip-name-resolve",
        )
        if install.wait(180) != 0:
            raise RuntimeError(f"mariadb-install-db failed: {self._log_tail()}")
        self._launch()
        self.sql(
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;"
        )
        return self

    def _log_tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-2000:]

    def _launch(self) -> None:
        args = [
            mariadb_binary("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={self.user}",
            f"--socket={self.socket}",
            f"--pid-file={self.root / 'mysqld.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={self.port}",
            "--skip-name-resolve",
            "--max-connections=400",
            "--innodb-buffer-pool-size=256M",
            # Tests: durability buys nothing and costs an fsync per commit.
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            *self.options,
        ]
        self.process = self._run(*args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self._log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                if self._client("SELECT 1").returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("mariadbd did not start within 60 s")

    def _client(self, sql: str) -> subprocess.CompletedProcess[bytes]:
        # As root over the private socket: root's account authenticates by the socket's peer,
        # which is this process (root, or the user the server runs as when we are not root).
        user = "root" if os.geteuid() == 0 else self.user
        return subprocess.run(
            [mariadb_binary("mariadb"), "--no-defaults", f"--socket={self.socket}", "-u", user, "-e", sql],
            capture_output=True,
        )

    def sql(self, sql: str) -> None:
        done = self._client(sql)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())

    def databases(self) -> list[str]:
        done = self._client("SHOW DATABASES")
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())
        return done.stdout.decode().split()[1:]  # after the column header

    def create_database(self, name: str) -> str:
        self.sql(f"CREATE DATABASE `{name}`")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def url(self, database: str, driver: str = "mariadb") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a normal shutdown
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data: a database outage, for tests."""
        self.stop()
        self._launch()

    def kill(self) -> None:
        """kill -9 of the server: a crash, which the next start recovers from InnoDB's redo log."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def start_again(self) -> None:
        """Start after ``stop()`` or ``kill()``, on the same port and data."""
        self._launch()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_mariadb() -> Iterator[MariaDBServer]:
    server = MariaDBServer().start()
    try:
        yield server
    finally:
        server.cleanup()
