"""uvicorn, told to end the dashboard's event streams first when it stops.

An open tab holds a server-sent-event stream that never ends by itself;
without this, stopping the server waits out its grace period, then cancels
the streams and logs each as a failed request.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from .app import close_streams


class StreamClosingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, dashboard: Any) -> None:
        super().__init__(config)
        self._dashboard = dashboard

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self._dashboard)
        await super().shutdown(sockets)
