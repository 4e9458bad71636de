"""Serving ``/metrics`` on a port, from a thread of its own."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

logger = logging.getLogger("jobstead.metrics")


def serve_metrics(
    port: int, *, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY, announce: bool = True
) -> None:
    """Start the exporter; a port already taken is a one-line error (``OSError``) at start, not later.

    ``announce=False`` is for a caller that prints the address itself, so it is said once.
    """
    start_http_server(port, addr=host, registry=registry)
    if announce:
        logger.info("metrics on http://%s:%d/metrics", host, port)


_served: set[int] = set()


def serve_metrics_once(port: int) -> None:
    """Serve the default registry on ``port`` unless this process already does (several workers, one port)."""
    if port in _served:
        return
    serve_metrics(port)
    _served.add(port)
