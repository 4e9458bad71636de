"""What the operator decided, read from the cluster: each JobHandler's scaling status, for the operator page.

The operator writes every scale tick's decision into its JobHandler's status
(``status.scaling``: the inputs and the reason in words; ``status.recentDecisions``:
the last changes of replicas). This module lists the JobHandlers, one call for
every namespace it may read (falling back to its own namespace when it may not
list them cluster-wide), at most once per ``MAX_AGE`` seconds whatever the
number of viewers.

Kubernetes stays optional twice over: the client is in the ``operator``
extra, imported only here and only when a cluster is configured, and a
dashboard without a cluster still serves every other page; the operator page
then says how to give it one. This is the runtime's one reader of the
Kubernetes API: it reads, it never writes, and it never reads Secrets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request

from . import web
from .auth import User

GROUP, VERSION, PLURAL = "jobstead.io", "v1alpha1", "jobhandlers"
#: Seconds a list is reused: the page is live, the operator ticks every 2 s.
MAX_AGE = 2.0
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_NAMESPACE = IN_CLUSTER_TOKEN.with_name("namespace")
INSTALL_HINT = "pip install 'jobstead[operator]'"


class ClusterUnavailable(Exception):
    """The cluster cannot be read: one line saying why."""


@dataclass(frozen=True)
class ScalingChange:
    at: datetime | None
    from_replicas: int
    to_replicas: int
    reason: str


@dataclass(frozen=True)
class HandlerScaling:
    """One JobHandler as the operator last saw and sized it."""

    namespace: str
    name: str
    handler: str
    queue: str
    paused: bool
    desired: int | None
    ready: int | None
    due: int | None
    running: int | None
    needed: int | None
    per_pod_concurrency: int | None
    concurrency: int | None
    limit_cap: int | None
    min_replicas: int | None
    max_replicas: int | None
    limited_by: str | None
    cool_down_until: datetime | None
    reason: str | None
    ready_status: str | None
    ready_reason: str | None
    ready_message: str | None
    recent: tuple[ScalingChange, ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> HandlerScaling:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        status = body.get("status") or {}
        scaling = status.get("scaling") or {}
        ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            handler=str(spec.get("handler", "")),
            queue=str(spec.get("queue") or "default"),
            paused=bool(spec.get("paused", False)),
            desired=_int(scaling.get("desiredReplicas", status.get("replicas"))),
            ready=_int(status.get("readyReplicas")),
            due=_int(scaling.get("due", status.get("queued"))),
            running=_int(scaling.get("running", status.get("running"))),
            needed=_int(scaling.get("neededReplicas")),
            per_pod_concurrency=_int(scaling.get("perPodConcurrency", spec.get("perPodConcurrency", 1))),
            concurrency=_int(scaling.get("concurrency", spec.get("concurrency"))),
            limit_cap=_int(scaling.get("limitCap")),
            min_replicas=_int(scaling.get("minReplicas", spec.get("minReplicas", 0))),
            max_replicas=_int(scaling.get("maxReplicas", spec.get("maxReplicas", 10))),
            limited_by=scaling.get("limitedBy"),
            cool_down_until=_time(scaling.get("coolDownUntil")),
            reason=scaling.get("reason"),
            ready_status=ready.get("status"),
            ready_reason=ready.get("reason"),
            ready_message=ready.get("message"),
            recent=tuple(
                ScalingChange(_time(c.get("time")), _int(c.get("from")) or 0, _int(c.get("to")) or 0, str(c["reason"]))
                for c in status.get("recentDecisions") or []
                if isinstance(c, Mapping) and c.get("reason")
            ),
        )


@dataclass(frozen=True)
class ClusterView:
    """What the page shows: the handlers, where they were read from, or why nothing could be read."""

    source: str
    handlers: tuple[HandlerScaling, ...] = ()
    problem: str | None = None
    scope: str = "every namespace"
    read_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Cluster:
    """A read-only view of the cluster's JobHandlers, listed at most once per ``MAX_AGE`` seconds."""

    def __init__(
        self, *, kubeconfig: str | None = None, namespaces: tuple[str, ...] = (), max_age: float = MAX_AGE
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.source = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: tuple[float, ClusterView] | None = None
        self._api: Any = None
        self._namespace: str | None = None

    @classmethod
    def detect(cls, kubeconfig: str | None, namespaces: tuple[str, ...] = ()) -> Cluster | None:
        """The cluster named by ``--kubeconfig``, else the pod's own when running in one, else None."""
        if kubeconfig:
            return cls(kubeconfig=kubeconfig, namespaces=namespaces)
        return cls(namespaces=namespaces) if IN_CLUSTER_TOKEN.exists() else None

    def view(self) -> ClusterView:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.max_age:
                return self._cached[1]
            try:
                view = self._read()
            except ClusterUnavailable as exc:
                view = ClusterView(source=self.source, problem=str(exc))
            self._cached = (time.monotonic(), view)
            return view

    def _client(self) -> Any:
        if self._api is not None:
            return self._api
        try:
            from kubernetes import client
            from kubernetes import config as kube_config
        except ImportError:
            raise ClusterUnavailable(f"the Kubernetes client is not installed: {INSTALL_HINT}") from None
        config: Any = kube_config  # the client's loaders are untyped
        try:
            if self.kubeconfig:
                api = config.new_client_from_config(config_file=self.kubeconfig)
                _, context = config.list_kube_config_contexts(config_file=self.kubeconfig)
                self._namespace = (context or {}).get("context", {}).get("namespace") or "default"
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
                self._namespace = IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            raise ClusterUnavailable(f"cannot use the {self.source}: {str(exc).splitlines()[0][:200]}") from None
        self._api = client.CustomObjectsApi(api)
        return self._api

    def _read(self) -> ClusterView:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api = self._client()
        namespaces = self.namespaces
        scope = _scope(namespaces)
        try:
            if namespaces:
                items = [item for namespace in namespaces for item in self._list(api, namespace)]
            else:
                try:
                    items = self._list(api, None)
                except ApiException as exc:
                    if exc.status != 403:
                        raise
                    namespaces = (self._namespace or "default",)  # perhaps a Role in its own namespace
                    scope = _scope(namespaces)
                    items = self._list(api, namespaces[0])
        except ApiException as exc:
            raise ClusterUnavailable(_api_problem(exc, scope)) from None
        except (HTTPError, OSError) as exc:
            raise ClusterUnavailable(f"cannot reach the Kubernetes API ({type(exc).__name__})") from None
        handlers = sorted((HandlerScaling.of(item) for item in items), key=lambda h: (h.namespace, h.name))
        return ClusterView(source=self.source, handlers=tuple(handlers), scope=scope)

    @staticmethod
    def _list(api: Any, namespace: str | None) -> list[Mapping[str, Any]]:
        """One list call: a namespace's JobHandlers, or every namespace's."""
        if namespace is None:
            listed = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=5)
        else:
            listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=5)
        return list(listed.get("items") or [])


def _scope(namespaces: tuple[str, ...]) -> str:
    if not namespaces:
        return "every namespace"
    return ("namespace " if len(namespaces) == 1 else "namespaces ") + ", ".join(namespaces)


def _api_problem(exc: Any, scope: str) -> str:
    if exc.status == 403:
        return (
            f"the Kubernetes API refuses to list JobHandlers in {scope}: grant get, list and watch on "
            "jobhandlers.jobstead.io (the chart does with dashboard.cluster.enabled)"
        )
    if exc.status == 404:
        return "the cluster has no JobHandler resource: install Jobstead's CRDs (crds/ or the chart)"
    if exc.status == 401:
        return "the Kubernetes API refuses the credentials (401): check the kubeconfig's user"
    return f"the Kubernetes API answered {exc.status} {exc.reason}"


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def operator_page(cluster: Cluster | None) -> Callable[[Request, User], tuple[str, dict[str, Any]]]:
    """The ``/operator`` view: the cluster's JobHandlers, or how to let the dashboard see them."""

    def build(request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        view = cluster.view() if cluster is not None else None
        return "operator.html", {"title": "Operator", "view": view, "live": view is not None}

    return build
