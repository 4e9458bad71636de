"""What JSON can carry faithfully: arguments, metadata and cron arguments are stored as JSON.

A pure value check with no dependencies, so the store (cron definitions) and the
API (signatures, options) share it without the store importing the API layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArguments


def check_json(values: Mapping[str, Any], where: str) -> None:
    """Refuse what JSON cannot carry faithfully, naming the argument."""
    if all(type(key) is str for key in values):
        try:
            json.dumps(values, allow_nan=False)
            return
        except (TypeError, ValueError):
            pass  # find the argument to blame
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidArguments(f"{where}: argument names must be strings, not {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(f"{where}: argument {key!r} is not JSON-serialisable: {exc}") from None
