"""What a caller gives to look a job, a batch or a workflow up by, checked before it reaches a statement.

The databases disagree on what an id column is compared with: PostgreSQL
refuses a string or a bool next to a BIGINT with an error that quotes SQL,
SQLite and MariaDB compare loosely (``True`` finds row 1), and a number past
64 bits overflows the driver. Here an id that is no whole number is
``InvalidArguments`` on every database, and a whole number no row can have
(below 1, past BIGINT) is simply found nowhere, without a statement.
"""

from __future__ import annotations

import operator
from typing import SupportsIndex

from ..errors import InvalidArguments

#: The largest id a BIGINT column holds.
MAX_ID = 2**63 - 1


def lookup_id(value: object, noun: str) -> int | None:
    """``value`` as an id to look up, or None when no row can have it."""
    # int, and the integers of other libraries (numpy's); never a bool, a float or a string
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise InvalidArguments(f"{noun} id must be a whole number, not {value!r}")
    found = operator.index(value)
    return found if 1 <= found <= MAX_ID else None


def check_filter(option: str, value: object) -> None:
    """A list's filter (``name=``, ``tenant=``): a string, or None for any."""
    if value is not None and not isinstance(value, str):
        raise InvalidArguments(f"{option} must be a string, not {value!r}")
