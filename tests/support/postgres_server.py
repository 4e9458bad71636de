"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, a temp dir, a free port.

``initdb`` refuses to run as root, so when we are root the server runs as the
``postgres`` user: the child process switches user itself (no ``runuser``), then
asks the kernel to kill it when the test process dies (PR_SET_PDEATHSIG, set
after the user switch since a credential change clears it), so a crashed or
killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
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

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    env = os.environ.get("JOBSTEAD_PG_BINDIR")
    if env:
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config not found: install PostgreSQL (make system-deps does it on Debian)")
    bindir = Path(subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True).stdout.strip())
    if not (bindir / "postgres").exists():
        raise RuntimeError(f"{bindir}/postgres missing: install the server package (apt-get install postgresql)")
    return bindir


def _demote(uid: int | None, gid: int | None) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


@dataclass
class PostgresServer:
    """One running server; ``url(db)`` gives SQLAlchemy URLs for databases in it."""

    durable: bool = False
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobstead-pg-")))
    process: subprocess.Popen[bytes] | None = None
    user: str = "postgres"
    #: ``name=value`` settings after the defaults (the last one wins), e.g. ``max_connections=50``.
    settings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._uid: int | None = None
        self._gid: int | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._uid, self._gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _run(self, *argv: str | Path) -> subprocess.Popen[bytes]:
        with open(self.root / "server.log", "ab") as log:  # the child gets its own copy of the descriptor
            return subprocess.Popen(
                [str(a) for a in argv],
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=lambda: _demote(self._uid, self._gid),
                cwd=self.root,
            )

    def start(self) -> PostgresServer:
        initdb = self._run(
            pg_bindir() / "initdb",
            "-D",
            self.datadir,
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        if initdb.wait(120) != 0:
            raise RuntimeError(f"initdb failed: {(self.root / 'server.log').read_text()[-2000:]}")
        self._launch()
        return self

    def _launch(self) -> None:
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.root}",
            "max_connections=400",
            "shared_buffers=256MB",
        ]
        if not self.durable:  # tests: durability buys nothing and costs seconds
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings += self.settings
        args: list[str | Path] = [
            pg_bindir() / "postgres",
            "-D",
            self.datadir,
            "-p",
            str(self.port),
        ]
        for setting in settings:
            args += ["-c", setting]
        self.process = self._run(*args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                if self._psql("postgres", "SELECT 1").returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start within 60 s")

    def _psql(self, db: str, sql: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                str(pg_bindir() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            capture_output=True,
        )

    def create_database(self, name: str) -> str:
        done = self._psql("postgres", f'CREATE DATABASE "{name}"')
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart_stopped(self) -> None:
        """Start again after ``stop()``, on the same port and data."""
        self._launch()

    def restart(self) -> None:
        """Stop and start again on the same port and data: a database outage, for tests."""
        self.stop()
        self._launch()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(durable: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(durable=durable).start()
    try:
        yield server
    finally:
        server.cleanup()
