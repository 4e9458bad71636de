"""How the CLI fails: one line on stderr and a meaningful exit code."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input (arguments, names, ids): exit 2, nothing written."""

    exit_code = 2


class OperationFailed(Exception):
    """A valid request that could not be carried out (wrong job state): exit 1."""

    exit_code = 1
