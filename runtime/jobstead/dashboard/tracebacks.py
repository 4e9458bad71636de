"""A stored traceback split into the handler's frames and the framework's, for the job page.

A handler's traceback starts with Jobstead's worker and asyncio (or the
thread pool) calling it: half a dozen frames that say nothing about the
failure. The page shows the frames of the user's code and the exception,
and folds the rest, complete and in order, under a ``<details>``.

Frames are recognised from their file path: Jobstead's own package (where
it is installed here, or any ``.../jobstead/`` directory, for a traceback
written by a worker on another machine) and the standard library's
machinery for running code (asyncio, concurrent.futures, threading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jobstead

_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line \d+')
_PACKAGE = str(Path(jobstead.__file__).parent)
_FRAMEWORK = re.compile(
    r"([/\\]site-packages[/\\]jobstead[/\\]|[/\\]runtime[/\\]jobstead[/\\]"
    r"|[/\\]asyncio[/\\]|[/\\]concurrent[/\\]futures[/\\]|[/\\](threading|contextlib|runpy)\.py$)"
)


@dataclass
class Trimmed:
    """``shown``: the traceback without framework frames; ``folded``: how many were left out."""

    shown: str
    folded: int
    full: str
    kinds: list[str] = field(default_factory=list)


def is_framework(path: str) -> bool:
    return path.startswith(_PACKAGE) or _FRAMEWORK.search(path) is not None


def _kind(path: str) -> str:
    if "asyncio" in path:
        return "asyncio"
    if "concurrent" in path or "threading" in path:
        return "thread pool"
    if "contextlib" in path or "runpy" in path:
        return "standard library"
    return "Jobstead"


def trim(traceback: str | None) -> Trimmed | None:
    """Drop the framework's frames from ``traceback``; the whole text stays in ``full``."""
    if not traceback:
        return None
    kept: list[str] = []
    folded = 0
    kinds: list[str] = []
    lines = traceback.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FRAME.match(line)
        if match is None:
            kept.append(line)
            i += 1
            continue
        # A frame is its "File" line plus the indented source lines under it.
        frame = [line]
        i += 1
        while i < len(lines) and lines[i].startswith("    "):
            frame.append(lines[i])
            i += 1
        path = match.group("path")
        if is_framework(path):
            folded += 1
            kind = _kind(path)
            if kind not in kinds:
                kinds.append(kind)
        else:
            kept.extend(frame)
    return Trimmed(shown="\n".join(kept), folded=folded, full=traceback, kinds=kinds)
