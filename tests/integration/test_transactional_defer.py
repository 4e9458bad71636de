"""Deferring inside the caller's transaction: rolled back -> no job, committed -> exactly one."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from jobstead import App, InvalidArguments
from tests.conftest import Target


def _count(app: App) -> int:
    return sum(app.store.queries.stats().by_status.values())


@pytest.fixture
def job_app(app: App) -> App:
    @app.handler
    def record(order_id: int) -> None: ...

    app.migrate()
    return app


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_session(job_app: App, target: Target, outcome: str) -> None:
    engine = create_engine(target.url)
    handler = job_app.get_handler("record")
    with Session(engine) as session:
        job = handler.configure(session=session).defer(order_id=1)
        getattr(session, outcome)()
    assert _count(job_app) == (1 if outcome == "commit" else 0)
    if outcome == "commit":
        assert job_app.get_job(job.id).record.args == {"order_id": 1}
    engine.dispose()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_connection(job_app: App, target: Target, outcome: str) -> None:
    engine = create_engine(target.url)
    handler = job_app.get_handler("record")
    with engine.connect() as conn:
        handler.configure(session=conn).defer(order_id=2)
        handler.configure(session=conn).defer(order_id=3)
        getattr(conn, outcome)()
    assert _count(job_app) == (2 if outcome == "commit" else 0)
    engine.dispose()


def _async_url(target: Target) -> str:
    # An app's async form of the one URL (Jobstead's own engine takes the same URL as it is).
    return target.url.replace("sqlite://", "sqlite+aiosqlite://").replace("mariadb://", "mariadb+asyncmy://")


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_async_session(job_app: App, target: Target, outcome: str) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    handler = job_app.get_handler("record")

    async def scenario() -> None:
        engine = create_async_engine(_async_url(target))
        async with AsyncSession(engine) as session:
            await handler.configure(session=session).defer_async(order_id=4)
            await getattr(session, outcome)()
        await engine.dispose()

    asyncio.run(scenario())
    assert _count(job_app) == (1 if outcome == "commit" else 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_async_connection(job_app: App, target: Target, outcome: str) -> None:
    handler = job_app.get_handler("record")

    async def scenario() -> None:
        engine = create_async_engine(_async_url(target))
        async with engine.connect() as conn:
            await handler.configure(session=conn).defer_async(order_id=5)
            await getattr(conn, outcome)()
        await engine.dispose()

    asyncio.run(scenario())
    assert _count(job_app) == (1 if outcome == "commit" else 0)


def test_sync_defer_refuses_an_async_session(job_app: App, target: Target) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(_async_url(target))
    session = AsyncSession(engine)
    with pytest.raises(InvalidArguments, match="defer_async"):
        job_app.get_handler("record").configure(session=session).defer(order_id=1)
    asyncio.run(engine.dispose())


def test_defer_async_without_session(job_app: App) -> None:
    job = asyncio.run(job_app.get_handler("record").defer_async(order_id=9))
    assert job_app.get_job(job.id).record.args == {"order_id": 9}


@pytest.mark.postgres
def test_a_failed_standalone_defer_leaves_the_pool_as_it_was(postgres_target: Target) -> None:
    """A defer of its own runs autocommitted on the pooled driver connection: an error comes out as
    SQLAlchemy's, and no connection goes back to the pool in autocommit (that would silently break
    every later caller's transaction)."""
    from sqlalchemy.exc import ProgrammingError

    app = App(postgres_target.url, schema=postgres_target.schema)

    @app.handler
    def record(order_id: int) -> None: ...

    app.migrate()
    jobs = app.store.tables.qualified(app.store.tables.jobs)
    with app.store.db.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {jobs} RENAME TO gone")
    with pytest.raises(ProgrammingError, match="does not exist"):
        record.defer(order_id=1)
    with app.store.db.engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "{postgres_target.schema}".gone RENAME TO {app.store.tables.jobs.name}')
    assert record.defer(order_id=2).id > 0
    with app.store.db.engine.connect() as conn:  # every pooled connection is transactional again
        assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
        record.configure(session=conn).defer(order_id=3)
        conn.rollback()
    assert [j.args["order_id"] for j in app.store.queries.list_jobs()] == [2]
    app.close()
