"""``WorkerOptions``: every bad value refused once, with one line naming it; ``app.worker`` takes exactly its fields."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from jobstead import App, ConfigurationError
from jobstead.worker import WorkerOptions


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1, not 0"),
        ({"lease_seconds": 0}, "lease_seconds must be positive, not 0"),
        ({"poll_interval": -1.0}, "poll_interval must be positive, not -1.0"),
        ({"heartbeat_seconds": 0.0}, "heartbeat_seconds must be positive, not 0.0"),
        ({"pool_size": 0}, "pool_size must be at least 1, not 0"),
        ({"shutdown_grace": -1}, "shutdown_grace must be 0 or more, not -1"),
        ({"lease_seconds": 5, "heartbeat_seconds": 5}, "heartbeat_seconds (5) must be shorter than lease_seconds (5)"),
        ({"metrics_port": 70000}, "metrics_port must be a TCP port (1-65535), not 70000"),
        ({"queues": "urgent"}, "queues must be a list of names, not the string 'urgent'"),
        ({"handlers": "resize"}, "handlers must be a list of names, not the string 'resize'"),
    ],
)
def test_a_bad_option_is_refused_with_one_line_naming_it(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        WorkerOptions(**given)
    assert str(refused.value) == message


def test_the_heartbeat_follows_the_lease_unless_given() -> None:
    assert WorkerOptions().heartbeat == 5.0
    assert WorkerOptions(lease_seconds=3).heartbeat == 0.5
    assert WorkerOptions(lease_seconds=0.1).heartbeat == 0.05
    assert WorkerOptions(heartbeat_seconds=2).heartbeat == 2


def test_options_are_frozen_copies_of_what_was_given() -> None:
    queues = ["urgent"]
    options = WorkerOptions(queues=queues, handlers=[])
    queues.append("bulk")
    assert options.queues == ("urgent",) and options.handlers == ()
    assert WorkerOptions(queues=[]).queues is None  # no queue named: every queue
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize("method", [App.worker, App.run_worker])
def test_app_worker_takes_exactly_the_options_with_their_defaults(method: Any) -> None:
    """``app.worker(...)`` and ``app.run_worker(...)`` are typed by hand: they must not drift from the options."""
    fields = {f.name: f.default for f in dataclasses.fields(WorkerOptions)}
    parameters = dict(inspect.signature(method).parameters)
    parameters.pop("self")
    assert {name: p.default for name, p in parameters.items()} == fields


def test_app_worker_refuses_bad_options_before_anything_starts() -> None:
    app = App("sqlite://", auto_migrate=False)  # never touched
    app.handler(name="h")(lambda: None)
    with pytest.raises(ConfigurationError, match="concurrency must be at least 1"):
        app.worker(concurrency=0)
    with pytest.raises(ConfigurationError, match="no handlers to run"):
        app.worker(handlers=[])
    worker = app.worker(queues=["urgent"], concurrency=3, install_signal_handlers=False)
    assert worker.options == WorkerOptions(queues=("urgent",), concurrency=3, install_signal_handlers=False)
    assert not hasattr(worker, "app")
