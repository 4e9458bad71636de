"""Statements sent on psycopg connections directly, in the server's own ``$n`` placeholders.

The hot statements that bypass SQLAlchemy's execution layers (the claim, the
standalone defer, a hand-off's completion) went to psycopg as ``%(name)s``
text, which psycopg converts to ``$n`` by parsing the whole query. It caches
that parse only for texts of up to 4,096 characters: the claim statements are
longer, so every claim was parsed again, a sixth of an empty claim's client
CPU. Rendered here once in ``$n`` form (SQLAlchemy's ``numeric_dollar``
paramstyle) and sent through psycopg's raw cursors, nothing is parsed per
execution, whatever the length; the server still plans the text once per
connection (psycopg prepares it by its bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class RawStatement:
    """A statement's ``$n`` SQL, the parameter name of each position, and the values its literals bind."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional values, from ``params`` or else the statement's literals."""
        fixed = self.fixed
        return [params[name] if name in params else fixed[name] for name in self.names]


def raw_dialect(engine: Engine) -> Dialect:
    """The engine's dialect, with ``$n`` placeholders (and no ``%`` doubled in the text)."""
    dialect: Dialect = type(engine.dialect)(paramstyle="numeric_dollar")  # type: ignore[call-arg]
    dialect.server_version_info = engine.dialect.server_version_info
    return dialect


def render_raw(statement: ClauseElement, dialect: Dialect) -> RawStatement:
    """``statement`` compiled for a raw cursor: literal lists (``status IN (...)``) expanded
    into the text once; the parameters bound per execution stay placeholders."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)  # a statement, not DDL
    unset = {name: None for name, bind in compiled.binds.items() if bind.required}
    expanded = compiled.construct_expanded_state(unset)
    names = tuple(expanded.positiontup or ())
    return RawStatement(expanded.statement, names, dict(expanded.parameters))
