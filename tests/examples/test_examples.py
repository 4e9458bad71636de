"""The Python examples under examples/ run, and do what their guides say, on both backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from jobstead import JobStatus
from tests.conftest import Target
from tests.support.processes import REPO

EXAMPLES = REPO / "examples"


def run_example(name: str, target: Target, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        env={**os.environ, **target.env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_quickstart(target: Target, tmp_path: Path) -> None:
    done = run_example("quickstart.py", target, tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'result: {"sent": true, "to": "a@example.com"}' in done.stdout
    assert "failed: jobstead.PermanentError no such customer" in done.stdout
    assert "attempts: ['failed', 'succeeded']" in done.stdout
    assert "gave up on job" in done.stdout


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # SQLAlchemy resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of the example's own (on PostgreSQL too): it keeps its tables in the default schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    server = request.getfixturevalue("pg_server")
    return str(server.create_database(f"shop_{uuid.uuid4().hex[:10]}"))


@pytest.fixture
def shop(own_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("JOBSTEAD_DATABASE_URL", own_database)
    module = _load(EXAMPLES / "fastapi_shop.py", "fastapi_shop_example")
    yield module
    module.jobs.close()
    module.engine.dispose()
    sys.modules.pop("fastapi_shop_example", None)


def test_fastapi_order_and_its_job_commit_together(shop: ModuleType) -> None:
    with TestClient(shop.api) as client:
        ok = client.post("/orders", params={"email": "a@example.com"})
        assert ok.status_code == 200, ok.text
        job = shop.jobs.get_job(ok.json()["job"])
        assert job.status is JobStatus.QUEUED and job.record.args == {"order_id": ok.json()["order"]}

        refused = client.post("/orders", params={"email": "b@invalid"})
        assert refused.status_code == 422
        # rolled back together: one order, one job
        assert [j.id for j in shop.jobs.jobs()] == [job.id]
        # the rolled-back order's job id was never committed: a 404, not a 500
        gone = client.get(f"/jobs/{job.id + 1}")
        assert gone.status_code == 404, gone.text
        assert client.get(f"/jobs/{job.id}").json()["status"] == "queued"
        with shop.Session(shop.engine) as session:
            assert session.query(shop.Order).count() == 1

        worker_result = shop.send_receipt(order_id=ok.json()["order"])
        assert worker_result == f"receipt for order {ok.json()['order']} sent to a@example.com"


def test_django_order_and_its_job_commit_together(own_database: str, tmp_path: Path) -> None:
    target = Target("sqlite" if own_database.startswith("sqlite") else "postgres", own_database, None)
    done = run_example("django_shop.py", target, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("placed order 1 with job ")
    assert lines[1] == "refused: no such mail domain"
    assert lines[2] == "orders: 1, jobs: 1, job args: [{'order_id': 1}]"
