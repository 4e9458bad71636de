"""Starting the operator: kopf with Jobstead's registry, settings and shared state."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from sqlalchemy.exc import SQLAlchemyError

from jobstead.cron.scheduler import REPUBLISH_EVERY, Scheduler
from jobstead.errors import ConfigurationError
from jobstead.store import Store

from . import cronschedules, jobhandlers, pods, wakeup  # noqa: F401 - registers the handlers
from .kube import Kube, load_configuration
from .registry import registry
from .state import OperatorState

FINALIZER = "jobstead.io/finalizer"
WORKER_DEFAULTS_ENV = "JOBSTEAD_WORKER_DEFAULTS"
#: Seconds between re-creations of deleted code crons (default 30).
CRON_REPUBLISH_ENV = "JOBSTEAD_CRON_REPUBLISH_SECONDS"


@dataclass(frozen=True)
class WebhookOptions:
    """Where the validating webhook listens and how the API server reaches it (see ``webhook``)."""

    port: int = 9443
    host: str | None = None
    service: str | None = None
    cert_dir: Path | None = None


def settings(
    *, standalone: bool, peering_name: str, priority: int, peering_lifetime: int = 60
) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    # Progress and diff-base in annotations: our CRDs declare every status field,
    # so kopf's default status.kopf storage would be pruned by the API server.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="jobstead.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="jobstead.io", key="last-handled-configuration"
    )
    s.posting.reporting_component = "jobstead-operator"
    # Which replica posted an Event: the pod (the chart sets POD_ID, which kopf
    # also uses as the replica's peering identity), else the host. kopf says "dev".
    s.posting.reporting_instance = (os.environ.get("POD_ID") or socket.gethostname())[:128]
    s.peering.name = peering_name
    s.peering.priority = priority
    s.peering.standalone = standalone
    # How long a replica's keep-alive counts: one killed without a word (OOM, lost
    # node) blocks the others this long. Keep-alives go out a few seconds sooner.
    s.peering.lifetime = peering_lifetime
    s.scanning.disabled = True  # no cluster-wide CRD watch: least privilege; our CRDs are installed first
    s.watching.server_timeout = 60
    s.networking.request_timeout = 30
    return s


def worker_defaults_from_env() -> dict[str, Any]:
    """The chart's ``workerDefaults``, handed over as JSON in ``$JOBSTEAD_WORKER_DEFAULTS``."""
    raw = os.environ.get(WORKER_DEFAULTS_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"${WORKER_DEFAULTS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"${WORKER_DEFAULTS_ENV} must be a JSON object")
    return value


def run_operator(
    store: Store,
    *,
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    standalone: bool = False,
    peering_name: str = "jobstead",
    priority: int = 0,
    peering_lifetime: int = 60,
    scale_down_window: float = 60.0,
    idle_cooldown: float = 120.0,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    webhook: WebhookOptions | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Serve JobHandler and CronSchedule resources until stopped (SIGTERM, or ``stop_flag``).

    ``liveness_endpoint`` (``http://HOST:PORT/PATH``) serves kopf's health check
    for a liveness probe; it answers in every replica, the paused ones too.
    """
    load_configuration()
    operator_settings = settings(
        standalone=standalone, peering_name=peering_name, priority=priority, peering_lifetime=peering_lifetime
    )
    if webhook is not None:
        from . import webhook as admission  # registers the validating handlers

        admission.configure(
            operator_settings,
            port=webhook.port,
            host=webhook.host,
            service=webhook.service,
            cert_dir=webhook.cert_dir,
            workdir=Path(tempfile.mkdtemp(prefix="jobstead-webhook-")),
        )
    state = OperatorState(
        store=store,
        kube=Kube(),
        scale_down_window=scale_down_window,
        idle_cooldown=idle_cooldown,
        worker_defaults=worker_defaults_from_env(),
    )
    try:  # a fresh database gets its tables before the scheduler looks at them
        state.ensure_schema()
    except SQLAlchemyError as exc:
        logging.getLogger("jobstead.operator").warning("database not reachable yet (%s); serving anyway", exc)
    # The cron scheduler runs in every replica: the database makes each fire
    # happen once, so no leader is needed (kopf peering only gates the handlers).
    scheduler = Scheduler(
        store=store,
        install_signal_handlers=False,
        republish_every=float(os.environ.get(CRON_REPUBLISH_ENV) or REPUBLISH_EVERY),
    )
    scheduling = threading.Thread(target=scheduler.run, name="jobstead-scheduler", daemon=True)
    scheduling.start()
    try:
        _run_kopf(state, operator_settings, namespaces, clusterwide, stop_flag, ready_flag, liveness_endpoint)
    finally:
        scheduler.stop()
        scheduling.join(timeout=10)


def _run_kopf(
    state: OperatorState,
    operator_settings: kopf.OperatorSettings,
    namespaces: Sequence[str],
    clusterwide: bool,
    stop_flag: threading.Event | None,
    ready_flag: threading.Event | None,
    liveness_endpoint: str | None = None,
) -> None:
    kopf.run(
        registry=registry,
        settings=operator_settings,
        memo=kopf.Memo(state=state),
        clusterwide=clusterwide,
        namespaces=list(namespaces),
        # Peering comes from the settings only: kopf.run(peering_name=...) would make
        # the peering CRD mandatory, and a dev cluster without it would never start.
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
    )
