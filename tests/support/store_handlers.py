"""A handler published straight through a store, for tests that work below the App."""

from __future__ import annotations

from jobstead.retry import RetryPolicy
from jobstead.store import HandlerDefinition, Store


def publish_handler(store: Store, name: str, concurrency: int | None = None) -> None:
    """``name`` in the default queue: 3 attempts, a fixed 1 s retry, no timeout."""
    store.registry.publish_handlers(
        [
            HandlerDefinition(
                name=name,
                queue="default",
                priority=0,
                concurrency=concurrency,
                max_attempts=3,
                retry=RetryPolicy.fixed(1),
                timeout=None,
            )
        ]
    )
