"""FastAPI: an order and the job that sends its receipt, committed together or not at all.

    pip install jobstead fastapi uvicorn
    uvicorn examples.fastapi_shop:api            # the API
    jobstead worker --app examples.fastapi_shop:jobs   # its worker, in another shell

The request's SQLAlchemy session is handed to ``configure(session=...)``: the
job row is written in the request's transaction, so a request that fails after
deferring leaves neither the order nor the job behind. Tested by
tests/examples/test_examples.py on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from jobstead import App, JobNotFound

DATABASE_URL = os.environ.get("JOBSTEAD_DATABASE_URL", "sqlite:///shop.db")
if DATABASE_URL.startswith("postgresql://"):
    DATABASE_URL = DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)

engine = create_engine(DATABASE_URL)
jobs = App(DATABASE_URL)  # the same database: jobs live next to the orders


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


@jobs.handler(max_attempts=5)
def send_receipt(order_id: int) -> str:
    with Session(engine) as session:
        order = session.get(Order, order_id)
        if order is None:
            raise LookupError(f"order {order_id} is gone")
        return f"receipt for order {order.id} sent to {order.email}"


def get_session() -> Iterator[Session]:
    with Session(engine) as session, session.begin():  # commit on success, roll back on any exception
        yield session


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)  # your migrations would do this
    jobs.migrate()
    yield
    jobs.close()


api = FastAPI(lifespan=lifespan)


@api.post("/orders")
def create_order(email: str, session: Annotated[Session, Depends(get_session)]) -> dict[str, int]:
    order = Order(email=email)
    session.add(order)
    session.flush()  # the order's id, still inside the transaction
    job = send_receipt.configure(session=session).defer(order_id=order.id)
    if email.endswith("@invalid"):
        raise HTTPException(422, "no such mail domain")  # rolls back the order AND the job
    return {"order": order.id, "job": job.id}


@api.get("/jobs/{job_id}")
def job_status(job_id: int) -> dict[str, object]:
    try:
        job = jobs.get_job(job_id)
    except JobNotFound:  # e.g. the job of a rolled-back order: it never existed
        raise HTTPException(404, f"no job {job_id}") from None
    return {"id": job.id, "status": job.status.value, "result": job.result}
