"""Status conditions the Kubernetes way: keyed by type, transition time kept while unchanged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    existing: Sequence[Mapping[str, Any]] | None,
    *,
    type: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return the condition list with ``type`` set; other types are kept as they are."""
    status = "True" if ok else "False"
    conditions = [dict(c) for c in existing or [] if c.get("type") != type]
    previous = next((c for c in existing or [] if c.get("type") == type), None)
    changed = previous is None or previous.get("status") != status
    condition: dict[str, Any] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339() if changed else previous.get("lastTransitionTime", now_rfc3339()),  # type: ignore[union-attr]
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return [*conditions, condition]
