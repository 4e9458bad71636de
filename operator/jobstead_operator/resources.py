"""The resource a kopf handler was called for, as one value: what the reconcilers take instead of eight arguments.

It also writes the ``Ready`` condition and the Events that go with it, so
every path reports the same way: a reason, a message, and for a failure a
Warning Event (the API server counts repeats of the same one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf

from .conditions import set_condition
from .reasons import Notice, Reason


@dataclass
class Resource:
    kind: str
    namespace: str
    name: str
    spec: Any
    status: Any
    meta: Any
    body: Any
    patch: kopf.Patch

    @classmethod
    def of(cls, kind: str, kwargs: dict[str, Any]) -> Resource:
        """From the keyword arguments kopf passes to a handler."""
        namespace = kwargs.get("namespace")
        assert namespace is not None  # both CRDs are namespaced
        return cls(
            kind=kind,
            namespace=namespace,
            name=kwargs["name"],
            spec=kwargs["spec"],
            status=kwargs.get("status") or {},
            meta=kwargs["meta"],
            body=kwargs["body"],
            patch=kwargs["patch"],
        )

    @property
    def user(self) -> tuple[str, str, str]:
        """The key this resource holds a database under (see ``databases``)."""
        return (self.kind, self.namespace, self.name)

    @property
    def generation(self) -> int | None:
        value = self.meta.get("generation")
        return int(value) if value is not None else None

    def ready_condition(self) -> dict[str, Any] | None:
        """The current Ready condition, with this handler's own patch applied over the stored status."""
        conditions = self.patch.status.get("conditions") or self.status.get("conditions") or []
        return next((dict(c) for c in conditions if c.get("type") == "Ready"), None)

    def ready(self, *, ok: bool, reason: Reason, message: str) -> None:
        """Set Ready; a failure also posts a Warning Event."""
        existing = self.patch.status.get("conditions") or self.status.get("conditions")
        self.patch.status["conditions"] = set_condition(
            existing, type="Ready", ok=ok, reason=reason, message=message, generation=self.generation
        )
        if ok:
            self.patch.status["observedGeneration"] = self.generation
        else:
            kopf.warn(self.body, reason=reason, message=message)

    def info(self, reason: Notice, message: str) -> None:
        kopf.info(self.body, reason=reason, message=message)
