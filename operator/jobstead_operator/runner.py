"""Starting the operator: kopf with Jobstead's registry, settings and shared state."""

from __future__ import annotations

import asyncio
import contextlib
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

from jobstead import ConfigurationError
from jobstead.cron.scheduler import REPUBLISH_EVERY

from . import cronschedules, jobhandlers, metrics, pods  # noqa: F401 - registers the handlers
from .databases import Databases, SchemaMissing
from .kube import Kube, load_configuration
from .peering import ensure_peering
from .registry import registry
from .secretrefs import DatabaseSecrets
from .state import DEFAULT_USER, OperatorState
from .targets import DatabaseTarget
from .wakeup import Waker

logger = logging.getLogger("jobstead.operator")

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
    # Never a silent standalone: without its peering object kopf would act beside every other
    # replica; mandatory, it waits for it (``ensure_peering`` makes sure it exists).
    s.peering.mandatory = not standalone
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


@dataclass(frozen=True)
class PeeringOptions:
    """How replicas coordinate (see ``peering``): kopf peering unless ``standalone``."""

    standalone: bool = False
    name: str = "jobstead"
    priority: int = 0
    lifetime: int = 60


@dataclass(frozen=True)
class OperatorOptions:
    """Everything ``jobstead operator`` was told, as one value."""

    namespaces: Sequence[str] = ()
    clusterwide: bool = False
    #: The operator's own database: a default for CronSchedules that name none. Optional.
    default_database: DatabaseTarget | None = None
    #: Create or upgrade job tables on first use; when False, a stale database is ``SchemaMissing``.
    migrate: bool = True
    peering: PeeringOptions = PeeringOptions()
    scale_down_window: float = 60.0
    idle_cooldown: float = 120.0
    webhook: WebhookOptions | None = None
    liveness_endpoint: str | None = None
    #: Serve ``/metrics`` (the operator's own and its databases' gauges) on this port.
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    #: Worker pods serve ``/metrics`` on this port unless their JobHandler's ``spec.metrics`` says otherwise.
    worker_metrics_port: int | None = None


def run_operator(
    options: OperatorOptions,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Serve JobHandler and CronSchedule resources until stopped (SIGTERM, or ``stop_flag``).

    ``liveness_endpoint`` (``http://HOST:PORT/PATH``) serves kopf's health check
    for a liveness probe; it answers in every replica, the paused ones too.
    """
    load_configuration()
    peering = options.peering
    if not peering.standalone:
        for created in ensure_peering(peering.name, namespaces=options.namespaces, clusterwide=options.clusterwide):
            logger.info("peering: created %s (replicas coordinate through it)", created)
        logger.info(
            "peering %r: this replica (priority %d) acts once it has seen no live replica of higher priority",
            peering.name,
            peering.priority,
        )
    operator_settings = settings(
        standalone=peering.standalone,
        peering_name=peering.name,
        priority=peering.priority,
        peering_lifetime=peering.lifetime,
    )
    if options.webhook is not None:
        from . import webhook as admission  # registers the validating handlers

        admission.configure(
            operator_settings,
            port=options.webhook.port,
            host=options.webhook.host,
            service=options.webhook.service,
            cert_dir=options.webhook.cert_dir,
            workdir=Path(tempfile.mkdtemp(prefix="jobstead-webhook-")),
        )
    waker = Waker()
    kube = Kube()
    state = OperatorState(
        kube=kube,
        databases=Databases(
            migrate=options.migrate,
            republish_every=float(os.environ.get(CRON_REPUBLISH_ENV) or REPUBLISH_EVERY),
            wake=waker,
        ),
        secrets=DatabaseSecrets(kube),
        default_target=options.default_database,
        scale_down_window=options.scale_down_window,
        idle_cooldown=options.idle_cooldown,
        worker_defaults=worker_defaults_from_env(),
        worker_metrics_port=options.worker_metrics_port,
    )
    waker.state = state
    if options.metrics_port is not None:
        try:
            metrics.serve(options.metrics_port, state.databases, host=options.metrics_host)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {options.metrics_host}:{options.metrics_port}: {exc.strerror or exc}"
            ) from None
    kopf.run(
        registry=registry,
        settings=operator_settings,
        memo=kopf.Memo(state=state),
        clusterwide=options.clusterwide,
        namespaces=list(options.namespaces),
        # Peering comes from the settings (mandatory unless standalone): see ``settings``.
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=options.liveness_endpoint,
    )


@kopf.on.startup(registry=registry)
async def open_default_database(memo: Any, **_: Any) -> None:
    """The operator's own database, if it has one, is open for as long as it runs: its crons fire.

    Kept ready by a task in kopf's loop, retrying while the database is down:
    the operator starts, and serves every other database, during an outage too.
    """
    state: OperatorState = memo.state
    if state.default_target is not None:
        memo.default_database = asyncio.create_task(_keep_ready(state, state.default_target))


async def _keep_ready(state: OperatorState, target: DatabaseTarget) -> None:
    database, _ = await state.databases.use(DEFAULT_USER, target)
    backoff = 1.0
    while True:
        try:
            await state.databases.ready(database)
            return
        except (SQLAlchemyError, SchemaMissing) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.warning(
                "default database %s not ready (%s); retrying in %.0f s", target.masked, target.scrub(text), backoff
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 30.0)


@kopf.on.cleanup(registry=registry)
async def close_databases(memo: Any, **_: Any) -> None:
    """Stop every scheduler and listener, and close every pool, before kopf's loop ends."""
    task = getattr(memo, "default_database", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    state: OperatorState = memo.state
    await state.databases.close_all()
