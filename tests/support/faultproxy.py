"""toxiproxy between clients and PostgreSQL: cut every connection, or hold their packets.

The binary is built from its Go module by ``hack/toxiproxy/build.sh`` (``make
toxiproxy``, a prerequisite of ``make test``) and driven over its HTTP API. As
with the test server, the kernel kills it when the test process dies.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .postgres_server import _demote, free_port
from .processes import REPO


def toxiproxy_binary() -> str:
    found = subprocess.run(
        [str(REPO / "hack" / "toxiproxy" / "build.sh"), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise RuntimeError(found.stderr.strip() or "toxiproxy is not built: run `make toxiproxy`")
    return found.stdout.strip()


@dataclass
class FaultProxy:
    """One toxiproxy server with one proxy, ``listen_port`` -> ``upstream_port`` on 127.0.0.1."""

    upstream_port: int
    log: Path
    api_port: int = field(default_factory=free_port)
    listen_port: int = field(default_factory=free_port)
    name: str = "postgres"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> FaultProxy:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [toxiproxy_binary(), "-host", "127.0.0.1", "-port", str(self.api_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _demote(None, None),
            )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"toxiproxy exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("toxiproxy did not listen within 30 s")
            time.sleep(0.05)
        self._call(
            "POST",
            "/proxies",
            {
                "name": self.name,
                "listen": f"127.0.0.1:{self.listen_port}",
                "upstream": f"127.0.0.1:{self.upstream_port}",
                "enabled": True,
            },
        )
        return self

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def cut(self, down_for: float = 0.5) -> None:
        """Close every connection through the proxy, refuse new ones for ``down_for`` s, then accept again."""
        self._call("POST", f"/proxies/{self.name}", {"enabled": False})
        time.sleep(down_for)
        self._call("POST", f"/proxies/{self.name}", {"enabled": True})

    def _toxic(self, name: str, kind: str, stream: str, attributes: dict[str, Any]) -> None:
        self._call(
            "POST",
            f"/proxies/{self.name}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes},
        )

    @contextlib.contextmanager
    def stalled(self, seconds: float) -> Iterator[None]:
        """Hold every packet for ``seconds`` a round trip (latency toxics both ways), then deliver them all.

        Connections stay open; nothing is lost, only late: what a congested or
        flapping network does. New connections are held the same way.
        """
        for stream in ("upstream", "downstream"):
            self._toxic(f"stall_{stream}", "latency", stream, {"latency": int(seconds * 500), "jitter": 0})
        try:
            yield
        finally:
            for stream in ("upstream", "downstream"):
                self._call("DELETE", f"/proxies/{self.name}/toxics/stall_{stream}")

    def stall(self, seconds: float) -> None:
        with self.stalled(seconds):
            time.sleep(seconds)

    @contextlib.contextmanager
    def blackholed(self) -> Iterator[None]:
        """Drop every byte, both ways, without closing anything (a timeout toxic of 0): a partition."""
        for stream in ("upstream", "downstream"):
            self._toxic(f"hole_{stream}", "timeout", stream, {"timeout": 0})
        try:
            yield
        finally:
            for stream in ("upstream", "downstream"):
                self._call("DELETE", f"/proxies/{self.name}/toxics/hole_{stream}")

    def url(self, user: str, database: str) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.listen_port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
