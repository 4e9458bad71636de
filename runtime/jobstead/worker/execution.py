"""Running one handler call: async on the loop, sync on a thread of its own.

Sync handlers get a fresh daemon thread each rather than a pooled one: a sync
handler that overruns its timeout cannot be killed, only abandoned, and an
abandoned thread must neither hold a pool slot nor keep the process alive at
exit (a worker that shuts down must be able to leave).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Finished:
    """How the call ended: a value, an exception, or neither (timed out or cancelled)."""

    value: Any = None
    exception: BaseException | None = None
    timed_out: bool = False
    cancelled: bool = False


async def call_handler(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    is_async: bool,
    timeout: float | None,
    on_abandon: Callable[[], None],
) -> Finished:
    """Run the handler; cancellation of the calling task propagates into async handlers.

    ``on_abandon`` is called when a sync handler is left running (timeout or
    cancellation), so its ``Context`` can tell it to stop.
    """
    deadline = asyncio.timeout(timeout) if timeout is not None else None
    if is_async:
        try:
            if deadline is None:  # most jobs: no timeout context to enter and leave
                return Finished(value=await func(**kwargs))
            async with deadline:
                return Finished(value=await func(**kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A TimeoutError the handler raised itself is its failure, not our timeout.
            if deadline is not None and deadline.expired():
                return Finished(timed_out=True)
            return Finished(exception=exc)
    future = _in_thread(func, kwargs)
    try:
        if deadline is None:
            return Finished(value=await asyncio.shield(future))
        async with deadline:
            return Finished(value=await asyncio.shield(future))
    except asyncio.CancelledError:
        on_abandon()
        raise
    except Exception as exc:
        if deadline is not None and deadline.expired():
            on_abandon()
            return Finished(timed_out=True)
        return Finished(exception=exc)


def _in_thread(func: Callable[..., Any], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value = context.run(func, **kwargs)
        except BaseException as exc:
            _call_soon(loop, settle, None, exc)
        else:
            _call_soon(loop, settle, value, None)

    threading.Thread(target=run, name=f"jobstead-{getattr(func, '__name__', 'job')}", daemon=True).start()
    return future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    # RuntimeError: the loop is closed, an abandoned handler finished after shutdown
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)
