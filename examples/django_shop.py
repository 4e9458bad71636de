"""Django: an order saved in ``transaction.atomic()`` and its job, committed together or not at all.

    JOBSTEAD_DATABASE_URL=postgresql://user@localhost/shop python examples/django_shop.py

Django owns its database connection and its transactions; Jobstead writes
through SQLAlchemy. ``sqlalchemy_connection()`` below lends Django's connection
(and so its open transaction) to SQLAlchemy for the one ``defer``: the job row
commits when the ``atomic()`` block commits and vanishes when it rolls back.
Standalone settings keep the example in one file; in a project, the helper
goes in a module of yours and the handlers in an ``App`` like this one.
Tested by tests/examples/test_examples.py on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import django
from django.conf import settings
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from jobstead import App

URL = make_url(os.environ.get("JOBSTEAD_DATABASE_URL", "sqlite:///shop.db"))
if URL.get_backend_name() == "postgresql":
    URL = URL.set(drivername="postgresql+psycopg")  # Django 5 uses psycopg 3 too
    DATABASE = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": URL.database,
        "USER": URL.username or "",
        "PASSWORD": URL.password or "",
        "HOST": URL.host or "",
        "PORT": str(URL.port or ""),
    }
else:
    # On SQLite, the sqlite3 module's own type detection would hand SQLAlchemy
    # datetimes where it reads text; Django's ORM converts text itself.
    DATABASE = {"ENGINE": "django.db.backends.sqlite3", "NAME": URL.database, "OPTIONS": {"detect_types": 0}}

settings.configure(DATABASES={"default": DATABASE}, USE_TZ=True)
django.setup()

from django.db import connection, transaction  # noqa: E402  (after settings)

jobs = App(URL)


@jobs.handler
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id} sent"


@contextmanager
def sqlalchemy_connection() -> Iterator[Connection]:
    """Django's current connection, seen through SQLAlchemy, inside Django's transaction.

    The engine borrows the connection and leaves transaction control to
    Django: it never commits or rolls back, and returning the connection to
    its one-connection pool resets nothing.
    """
    connection.ensure_connection()
    borrowed = connection.connection
    engine = create_engine(URL, creator=lambda: borrowed, poolclass=StaticPool, pool_reset_on_return=None)
    engine.dialect.do_commit = lambda dbapi_connection: None  # type: ignore[method-assign]
    engine.dialect.do_rollback = lambda dbapi_connection: None  # type: ignore[method-assign]
    with engine.connect() as conn:
        yield conn


def place_order(email: str) -> tuple[int, int]:
    """The view's work: save the order, defer its receipt; any exception undoes both."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders (email) VALUES (%s) RETURNING id", [email])
            order_id = int(cursor.fetchone()[0])
        with sqlalchemy_connection() as conn:
            job = send_receipt.configure(session=conn).defer(order_id=order_id)
        if email.endswith("@invalid"):
            raise ValueError("no such mail domain")
        return order_id, job.id


def main() -> None:
    jobs.migrate()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, email VARCHAR(200))")
        if connection.vendor == "postgresql":
            cursor.execute("CREATE SEQUENCE IF NOT EXISTS orders_id")
            cursor.execute("ALTER TABLE orders ALTER COLUMN id SET DEFAULT nextval('orders_id')")
    order_id, job_id = place_order("a@example.com")
    print(f"placed order {order_id} with job {job_id}")
    try:
        place_order("b@invalid")
    except ValueError as exc:
        print(f"refused: {exc}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders")
        orders = cursor.fetchone()[0]
    listed = jobs.jobs()
    print(f"orders: {orders}, jobs: {len(listed)}, job args: {[j.record.args for j in listed]}")
    jobs.close()


if __name__ == "__main__":
    main()
