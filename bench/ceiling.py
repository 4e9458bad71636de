"""The database's own limit: pgbench committing one-row INSERTs, as fast as it can.

A job system cannot finish jobs faster than PostgreSQL commits transactions
that write them, so this is the ceiling every figure is read against. The row
is shaped like a small job (a bigserial key, a jsonb payload, a timestamp).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import psycopg

from .harness import BenchError, libpq

TABLE = """
CREATE TABLE IF NOT EXISTS ceiling (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
SCRIPT = "INSERT INTO ceiling (payload) VALUES ('{\"t\": 0}');\n"
TPS = re.compile(r"tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)")


async def prepare(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) as conn:
        await conn.execute(TABLE)
        await conn.execute("TRUNCATE ceiling")
        await conn.execute("CHECKPOINT")


async def pgbench(bindir: Path, *, host: str, port: int, user: str, database: str, clients: int, seconds: int) -> float:
    """Transactions per second for ``clients`` connections over ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(SCRIPT)
    process = await asyncio.create_subprocess_exec(
        str(bindir / "pgbench"),
        "-n",  # no vacuum of pgbench's own tables (we do not use them)
        "-f",
        script.name,
        "-c",
        str(clients),
        "-j",
        str(clients),
        "-T",
        str(seconds),
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        user,
        database,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    Path(script.name).unlink(missing_ok=True)
    text = out.decode()
    match = TPS.search(text)
    if process.returncode != 0 or match is None:
        raise BenchError(f"pgbench failed ({process.returncode}): {text[-1000:]}")
    return float(match.group(1))
