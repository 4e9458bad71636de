"""Compiled bytecode for the Python processes the tests start, when the environment forbids writing it.

With ``PYTHONDONTWRITEBYTECODE`` set, no ``.pyc`` is ever written for Jobstead
(an editable install: its sources are the repository's), so every process the
tests start (each CLI command, worker, scheduler, operator and app) compiled
the ~80 modules it imports again: 0.15 s of CPU each, on thousands of
processes. A plugin of the root ``tests/conftest.py``: for the test session
only, the children write their bytecode to a temporary ``PYTHONPYCACHEPREFIX``
(never beside the sources, which the variable is usually there to keep clean),
removed at the end. Nothing changes when the variable is unset, or when a
prefix is set already.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    forbidden = os.environ.get("PYTHONDONTWRITEBYTECODE")
    if not forbidden or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="jobstead-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]

    def restore() -> None:
        os.environ["PYTHONDONTWRITEBYTECODE"] = forbidden
        del os.environ["PYTHONPYCACHEPREFIX"]
        shutil.rmtree(prefix, ignore_errors=True)

    config.add_cleanup(restore)
