"""A throwaway PgBouncer in front of the test PostgreSQL: Debian's binary, transaction pooling.

Production PostgreSQL on Kubernetes mostly sits behind a pooler, and a pooler
in transaction mode refuses what a direct connection allows: session startup
parameters (``options``) and server-side prepared statements that outlive one
transaction. So the configuration is Debian's ``/etc/pgbouncer/pgbouncer.ini``
with only what a throwaway instance needs changed (address, port, files,
``pool_mode = transaction``, trust authentication like the test server), and
in particular no ``ignore_startup_parameters``: a client must work with the
pooler a new user installs.

PgBouncer refuses to run as root, so as root it runs as ``postgres``, the same
way (and with the same kill-on-parent-death) as the test server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .postgres_server import PostgresServer, _demote, free_port

PGBOUNCER_BIN_ENV = "JOBSTEAD_PGBOUNCER"


def pgbouncer_binary() -> str:
    found = os.environ.get(PGBOUNCER_BIN_ENV) or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(found).exists():
        raise RuntimeError("pgbouncer not found: install it (make reliability-deps does it on Debian)")
    return found


@dataclass
class PgBouncer:
    """One PgBouncer serving every database of ``server``; ``url(db)`` goes through it."""

    server: PostgresServer
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobstead-pgbouncer-")))
    process: subprocess.Popen[bytes] | None = None
    #: PgBouncer's own defaults for the pool sizes would make the tests wait on the
    #: pooler rather than on Jobstead; these are still far below the server's limit.
    max_client_conn: int = 400
    default_pool_size: int = 40

    def __post_init__(self) -> None:
        self._uid, self._gid = self.server._uid, self.server._gid
        if self._uid is not None and self._gid is not None:
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._uid, self._gid)

    @property
    def log_path(self) -> Path:
        return self.root / "pgbouncer.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> Path:
        users = self.root / "userlist.txt"
        users.write_text(f'"{self.server.user}" ""\n')
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host=127.0.0.1 port={self.server.port}",
                    "[pgbouncer]",
                    f"logfile = {self.log_path}",
                    f"pidfile = {self.root / 'pgbouncer.pid'}",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {users}",
                    "pool_mode = transaction",
                    f"max_client_conn = {self.max_client_conn}",
                    f"default_pool_size = {self.default_pool_size}",
                    "",
                ]
            )
        )
        if self._uid is not None and self._gid is not None:
            for path in (users, config):
                os.chown(path, self._uid, self._gid)
        return config

    def start(self) -> PgBouncer:
        config = self._write_config()
        with open(self.root / "stderr.log", "ab") as err:
            self.process = subprocess.Popen(
                [pgbouncer_binary(), str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=lambda: _demote(self._uid, self._gid),
                cwd=self.root,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()[-2000:]}{(self.root / 'stderr.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not listen within 30 s")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.server.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "safe shutdown" would wait for clients
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_pgbouncer(server: PostgresServer) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(server).start()
    try:
        yield bouncer
    finally:
        bouncer.cleanup()
