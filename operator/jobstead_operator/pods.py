"""Worker pods: busy ones survive a scale-down, and a gone one hands its jobs back at once.

KEDA's users lose work when the autoscaler removes a busy pod. Before every
scale-down the operator ranks the Deployment's pods by how many jobs each is
running (``controller.kubernetes.io/pod-deletion-cost``), so the ReplicaSet
removes idle pods first.

A pod deleted for good (or failed) cannot renew its leases; rather than let its
jobs wait for expiry, the operator rescues them when the pod object is gone.
Only then: while a pod is terminating, its worker is still finishing or
releasing its jobs gracefully, and taking them away would run them twice.
"""

from __future__ import annotations

from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from .databases import AppDatabase
from .deployment import LABEL_OWNER, MANAGED_BY
from .registry import registry
from .state import OperatorState

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
WORKER_PODS = {"app.kubernetes.io/managed-by": MANAGED_BY}


async def rank_for_scale_down(
    state: OperatorState, database: AppDatabase, namespace: str, jobhandler: str
) -> dict[str, int]:
    """Annotate each worker pod with its running jobs (as its app's database knows them); return what was written."""
    pods = await state.kube.list_pods(namespace, f"{LABEL_OWNER}={jobhandler}")
    running = await database.call(database.store.registry.running_by_host)
    costs: dict[str, int] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        cost = running.get(name, 0)
        costs[name] = cost
        if (pod["metadata"].get("annotations") or {}).get(DELETION_COST) != str(cost):
            await state.kube.patch_pod(namespace, name, {"metadata": {"annotations": {DELETION_COST: str(cost)}}})
    return costs


@kopf.on.event("", "v1", "pods", labels=WORKER_PODS, registry=registry)
async def pod_event(
    type: str, name: str, namespace: str | None, labels: Any, status: Any, memo: Any, logger: Any, **_: Any
) -> None:
    gone = type == "DELETED" or (status or {}).get("phase") == "Failed"
    if not gone:
        return
    state: OperatorState = memo.state
    owner = (labels or {}).get(LABEL_OWNER)
    database = state.databases.of(("JobHandler", namespace or "", owner)) if owner else None
    if database is None:
        return  # its JobHandler is not attached (yet): the jobs' leases expire as they would
    try:
        rescued = await database.call(database.store.leases.release_host, name)
    except SQLAlchemyError:
        logger.warning(
            "pod %s is gone; its jobs wait for their leases: %s is unavailable", name, database.target.masked
        )
        return
    if rescued:
        logger.warning("pod %s is gone: released %d job(s) at once: %s", name, len(rescued), rescued)
