"""Finding the user's app and the database the command should use."""

from __future__ import annotations

import importlib
import os
import sys
from argparse import Namespace

from ..app import App
from ..config import DATABASE_URL_ENV
from ..store import Store
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


def store_from_args(args: Namespace) -> Store:
    """The store of ``--app`` when given (its prefix and schema), else one from the URL alone."""
    if getattr(args, "app", None):
        return app_from_args(args).store
    store = Store.connect(database_override(args))
    store.ensure_schema()
    return store
