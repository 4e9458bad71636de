"""Finding the user's app and the database the command should use."""

from __future__ import annotations

import importlib
import os
import sys
from argparse import Namespace

from sqlalchemy.engine import URL

from ..app import App
from ..config import DATABASE_URL_ENV, resolve_database_url
from ..store import Store
from .database import existing_store
from .errors import UsageError


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (``module`` alone means ``module:app``), like uvicorn does."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise UsageError(f"--app must look like 'package.module:app', not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} (from --app {spec}): {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        found = "nothing" if app is None else type(app).__name__
        raise UsageError(f"--app {spec}: expected a jobstead.App at {module_name}.{attribute}, found {found}")
    return app


def database_override(args: Namespace) -> str | None:
    """``--database-url`` first, then ``$JOBSTEAD_DATABASE_URL``: both beat the URL in the app's code."""
    return getattr(args, "database_url", None) or os.environ.get(DATABASE_URL_ENV) or None


def app_from_args(args: Namespace) -> App:
    app = load_app(args.app)
    url = database_override(args)
    if url:
        app.use_database(url)
    return app


def target_url(args: Namespace) -> URL:
    """The database this command uses, for messages (the app's, if ``--app`` was given and imports)."""
    override = database_override(args)
    if override is None and getattr(args, "app", None):
        try:
            return load_app(args.app).database_url
        except Exception:
            pass
    return resolve_database_url(override)


def store_from_args(args: Namespace) -> Store:
    """The store of an existing database: ``--app``'s (its prefix and schema), else one from the URL alone.

    Nothing is created or migrated here, even with ``--app``: commands that read
    or steer existing jobs must not leave a fresh empty database behind them.
    """
    if getattr(args, "app", None):
        return existing_store(app_from_args(args).open_store())
    return existing_store(Store.connect(database_override(args)))
