"""From a resource's ``secretRef`` to the database it names, re-read when the Secret changes.

Secrets are read one by one with ``get`` (no ``list`` or cluster-wide watch:
the operator never holds Secrets it has no resource for). A read is reused
for ``recheck_seconds``; after that the next look re-reads it, and a new
``resourceVersion`` (a rotated URL) gives a new target, which the
reconcilers notice and follow. ``fresh=True`` (on create, edit and resume)
always re-reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException

from .kube import Kube
from .reasons import Reason
from .spec import SecretRef
from .targets import DatabaseTarget, TargetError, target_from_secret

#: How long a Secret read is trusted: a rotation is followed within this, plus one scale tick.
RECHECK_SECONDS = 5.0


@dataclass
class _Read:
    at: float
    version: str | None
    outcome: DatabaseTarget | TargetError


@dataclass
class DatabaseSecrets:
    kube: Kube
    recheck_seconds: float = RECHECK_SECONDS
    _reads: dict[tuple[str, str, str], _Read] = field(default_factory=dict)

    async def target(self, namespace: str, ref: SecretRef, *, fresh: bool = False) -> DatabaseTarget:
        """The database ``ref`` names in ``namespace``; ``TargetError`` says why there is none."""
        key = (namespace, ref.name, ref.key)
        read = self._reads.get(key)
        if fresh or read is None or time.monotonic() - read.at >= self.recheck_seconds:
            read = await self._read(namespace, ref, read)
            self._reads[key] = read
        if isinstance(read.outcome, TargetError):
            raise read.outcome
        return read.outcome

    async def _read(self, namespace: str, ref: SecretRef, previous: _Read | None) -> _Read:
        now = time.monotonic()
        try:
            secret = await self.kube.read_secret(namespace, ref.name)
        except ApiException as exc:
            what = "may not read" if exc.status == 403 else f"cannot read ({exc.status} {exc.reason})"
            error = TargetError(
                Reason.SECRET_UNREADABLE,
                f"spec.database.secretRef: the operator {what} Secret {ref.name!r} in {namespace!r}",
            )
            return _Read(now, None, error)
        if secret is None:
            error = TargetError(
                Reason.SECRET_NOT_FOUND, f"spec.database.secretRef: Secret {ref.name!r} does not exist in {namespace!r}"
            )
            return _Read(now, None, error)
        if previous is not None and previous.version == secret.resource_version:
            return _Read(now, previous.version, previous.outcome)  # unchanged: no re-parse
        try:
            outcome: DatabaseTarget | TargetError = target_from_secret(secret.data, ref.key, secret=ref.name)
        except TargetError as exc:
            outcome = exc
        return _Read(now, secret.resource_version, outcome)

    def version(self, namespace: str, ref: SecretRef) -> str | None:
        """The ``resourceVersion`` of the Secret as last read: worker pods restart when it changes."""
        read = self._reads.get((namespace, ref.name, ref.key))
        return read.version if read is not None else None

    def forget(self, namespace: str) -> None:
        """Drop what was read in ``namespace`` (tests; a namespace going away)."""
        self._reads = {k: v for k, v in self._reads.items() if k[0] != namespace}
