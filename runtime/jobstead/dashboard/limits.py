"""What a handler row says of its flow control: each limit and its use, its sequence and fair keys, in words.

Read from the store's one read of limits in use (``Registry.limit_use``, what
``jobstead stats`` and the metrics show) and the handler rows' settings (which
keys sequence or share), once per overview: the figures agree everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..flow import RateLimit
from ..store import Store
from ..store.records import LimitUse


@dataclass(frozen=True)
class LimitShown:
    """One line of a handler row's flow control: ``full`` when it holds jobs back right now."""

    kind: str
    text: str
    full: bool = False


def handler_limits(store: Store) -> dict[str, list[LimitShown]]:
    """Each handler's flow control lines, in a fixed order: limits first, then sequence and fair keys."""
    definitions = store.registry.handlers()
    shared: dict[str, LimitUse] = {}
    shown: dict[str, list[LimitShown]] = {}
    for use in store.registry.limit_use():
        if use.handler is None:
            shared[use.limit.removeprefix("rate_limits:")] = use
        else:
            shown.setdefault(use.handler, []).append(_line(use))
    for name, definition in sorted(definitions.items()):
        flow = definition.flow
        lines = shown.setdefault(name, [])
        for rate in flow.rate_limits:
            if rate in shared:
                use = shared[rate]
                lines.append(
                    LimitShown(
                        "rate",
                        f"rate {rate} (shared): {use.in_use} of {_rate(use)} started",
                        use.in_use >= use.of,
                    )
                )
        if flow.sequence_by is not None:
            then = "" if flow.sequence_on_failure == "hold" else ", going on after failures"
            lines.append(LimitShown("sequence", f"in sequence by {flow.sequence_by}{then}"))
        if flow.fair_by is not None:
            lines.append(LimitShown("fair", f"shared fairly by {flow.fair_by}"))
    return {name: lines for name, lines in shown.items() if lines}


def _line(use: LimitUse) -> LimitShown:
    full = use.in_use >= use.of
    if use.limit == "concurrency":
        return LimitShown("concurrency", f"running {use.in_use} of {use.of}", full)
    if use.limit == "concurrency_per_key":
        return LimitShown(
            "concurrency",
            f"per {use.by}: {use.of} at once, busiest {use.in_use}{_at_limit(use.at_limit)}",
            bool(use.at_limit),
        )
    if use.limit == "rate_limit_per_key":
        return LimitShown(
            "rate",
            f"rate per {use.by}: {_rate(use)}, busiest {use.in_use}{_at_limit(use.at_limit)}",
            bool(use.at_limit),
        )
    return LimitShown("rate", f"rate: {use.in_use} of {_rate(use)} started", full)


def _rate(use: LimitUse) -> str:
    return str(RateLimit(use.of, per=use.per or 1.0))


def _at_limit(keys: int | None) -> str:
    if not keys:
        return ""
    return f", {keys} key{'s' if keys != 1 else ''} at the limit"
