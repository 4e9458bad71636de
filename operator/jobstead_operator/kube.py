"""The few Kubernetes API calls the operator makes beyond kopf's own, off the event loop.

kopf watches and patches the custom resources; Deployments and Secrets are
read and written through the official client, on threads (it is synchronous).
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from jobstead import ConfigurationError


def load_configuration() -> None:
    """In a pod: the service account. Elsewhere: $KUBECONFIG or ~/.kube/config.

    Neither is a one-line ``ConfigurationError`` naming where it looked, not
    the client library's traceback.
    """
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigurationError(
                f"no Kubernetes configuration: not in a pod, and {where} gives none ({detail}); "
                "set KUBECONFIG to a kubeconfig file"
            ) from None


@dataclass(frozen=True)
class SecretData:
    """A Secret's decoded values, and the version they were read at (a changed Secret has a new one)."""

    resource_version: str
    data: dict[str, str]


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._serializer = api_client or client.ApiClient()

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                found = self._apps.read_namespaced_deployment(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return cast(dict[str, Any], self._serializer.sanitize_for_serialization(found))  # type: ignore[no-untyped-call]

        return await asyncio.to_thread(get)

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False if it already exists (another handler got there first)."""
        try:
            await asyncio.to_thread(self._apps.create_namespaced_deployment, namespace, cast(Any, body))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await asyncio.to_thread(self._apps.patch_namespaced_deployment, name, namespace, patch)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        def list_() -> list[dict[str, Any]]:
            found = self._core.list_namespaced_pod(namespace, label_selector=selector)
            return cast(list[dict[str, Any]], self._serializer.sanitize_for_serialization(found.items))  # type: ignore[no-untyped-call]

        return await asyncio.to_thread(list_)

    async def patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await asyncio.to_thread(self._core.patch_namespaced_pod, name, namespace, patch)

    async def secret_has_key(self, namespace: str, name: str, key: str) -> bool | None:
        """True if the Secret holds ``key``, False if it lacks it, None if there is no such Secret."""

        def read() -> bool | None:
            try:
                secret = self._core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return key in (secret.data or {}) or key in (secret.string_data or {})

        return await asyncio.to_thread(read)

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        """The Secret's values, decoded; None if there is no such Secret. Needs only ``get``."""

        def read() -> SecretData | None:
            try:
                secret = self._core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}
            data.update(secret.string_data or {})
            version = secret.metadata.resource_version if secret.metadata else None
            return SecretData(str(version or ""), data)

        return await asyncio.to_thread(read)
