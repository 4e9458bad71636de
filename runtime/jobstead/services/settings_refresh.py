"""Re-reading handler settings (limits, retries, timeouts) that the operator or the CLI may change."""

from __future__ import annotations

from collections.abc import Callable

from .base import Service


class SettingsRefresh(Service):
    """Per worker: its own copy of its handlers' rows, refreshed every few seconds."""

    name = "settings refresh"

    def __init__(self, refresh: Callable[[], None], *, every: float) -> None:
        super().__init__(every)
        self._refresh = refresh

    def run_once(self) -> None:
        self._refresh()
