"""Peering that is real whenever ``--standalone`` is not given.

kopf coordinates replicas through a ``KopfPeering`` object per watched
namespace (``ClusterKopfPeering`` with ``-A``): each writes a keep-alive into
it, and only the highest priority acts. But when that object does not exist,
kopf's keep-alives find nothing, no replica sees another, and every one acts,
silently. So before kopf starts, the operator makes sure the object exists:
it creates a missing one (the chart already creates them; a developer's
``jobstead operator -n shop`` creates its own), and if it may not, it refuses
to start with one line saying how to create it. kopf is then told peering is
mandatory, so a replica waits for the peering object rather than acting alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from jobstead import ConfigurationError

GROUP, VERSION = "kopf.dev", "v1"


def ensure_peering(
    name: str, *, namespaces: Sequence[str], clusterwide: bool, api: client.ApiClient | None = None
) -> list[str]:
    """Create the peering object(s) kopf needs; return where one was created. ``ConfigurationError`` if we may not."""
    custom = client.CustomObjectsApi(api)
    created: list[str] = []
    if clusterwide:
        if _ensure(custom, name, None):
            created.append(f"ClusterKopfPeering {name}")
        return created
    for namespace in namespaces:
        if any(c in namespace for c in "*?[!"):  # a pattern: kopf resolves it; the objects are the chart's job
            continue
        if _ensure(custom, name, namespace):
            created.append(f"KopfPeering {namespace}/{name}")
    return created


def _ensure(custom: client.CustomObjectsApi, name: str, namespace: str | None) -> bool:
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    plural = kind.lower() + "s"
    selector = f"metadata.name={name}"
    try:
        if namespace is None:
            found = custom.list_cluster_custom_object(GROUP, VERSION, plural, field_selector=selector)
        else:
            found = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, field_selector=selector)
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigurationError(
                "kopf's peering CRDs are not installed: kubectl apply -f crds/kopf.dev_peerings.yaml "
                "(or the Helm chart), or run one operator only with --standalone"
            ) from None
        where = f"in namespace {namespace!r}" if namespace else "in the cluster"
        raise ConfigurationError(
            f"peering: cannot look for {kind} {name!r} {where} ({exc.status} {exc.reason}): the operator needs "
            f"list on {plural}.kopf.dev, or run one operator only with --standalone"
        ) from None
    if cast(dict[str, Any], found).get("items"):
        return False
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}}
    try:
        if namespace is None:
            custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
        else:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    except ApiException as exc:
        if exc.status == 409:  # another replica created it first
            return False
        raise ConfigurationError(
            _refusal(kind, name, namespace, f"may not create it ({exc.status} {exc.reason})")
        ) from None
    return True


def _refusal(kind: str, name: str, namespace: str | None, why: str) -> str:
    where = f"in namespace {namespace!r}" if namespace else "in the cluster"
    create = f"kubectl{f' -n {namespace}' if namespace else ''} create -f - <<< " + (
        f'\'{{"apiVersion": "{GROUP}/{VERSION}", "kind": "{kind}", "metadata": {{"name": "{name}"}}}}\''
    )
    return (
        f"peering: {kind} {name!r} {where} is missing and this operator {why}: create it ({create}; "
        "the Helm chart does), or run one operator only with --standalone"
    )
