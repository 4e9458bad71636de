"""The handler's return type reaches ``Deferred.wait()``, through ``configure()`` and for async handlers.

Checked by running mypy (strict) on a small program, as a user's type checker would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
from typing import assert_type
from jobstead import App, Deferred

app = App("sqlite://")

@app.handler
def add(a: int, b: int) -> int:
    return a + b

@app.handler(queue="q")
async def fetch(url: str) -> dict[str, str]:
    return {"url": url}

async def main() -> None:
    assert_type(add.defer(a=1, b=2), Deferred[int])
    assert_type(add.defer(a=1, b=2).wait(), int)
    assert_type(add.configure(priority=3).defer(a=1, b=2).wait(1.0), int)
    assert_type(add.defer(a=1, b=2).result, int | None)
    assert_type(fetch.defer(url="u").wait(), dict[str, str])
    assert_type((await fetch.configure(queue="x").defer_async(url="u")).wait(), dict[str, str])
    assert_type(add.defer_many([{"a": 1, "b": 2}]), list[Deferred[int]])
    assert_type(await add.defer_many_async([{"a": 1, "b": 2}]), list[Deferred[int]])
    assert_type(add(1, 2), int)
"""


def test_return_types_survive_defer_and_configure(tmp_path: Path) -> None:
    program = tmp_path / "typed_user_code.py"
    program.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
