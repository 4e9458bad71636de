"""``jobstead operator``: the Kubernetes operator, from the optional ``jobstead[operator]`` extra."""

from __future__ import annotations

import os
import random
import time
from argparse import Namespace
from pathlib import Path

from ..config import SCHEMA_ENV, TABLE_PREFIX_ENV
from .errors import UsageError
from .loading import database_override

MIGRATE_ENV = "JOBSTEAD_OPERATOR_MIGRATE"
METRICS_PORT_ENV = "JOBSTEAD_OPERATOR_METRICS_PORT"


def startup_priority() -> int:
    """A kopf peering priority that no other replica has, and that favours the oldest one.

    kopf lets the operator with the highest priority act and pauses the rest; two
    live operators with the SAME priority pause each other for good. Replicas of
    one Deployment share their arguments, so a fixed default would freeze them
    all: each process picks its own from its start time in milliseconds, negated
    so the replica that started first outranks later ones (a rollout or a new
    replica never takes over from a healthy leader; a leader that stops hands
    over to the next oldest). Three random low digits keep two replicas started
    in the same millisecond apart (the value stays below 2**53, exact in any
    JSON reader). Being negative, any explicit ``--priority`` of 0 or more (a
    developer's debugging operator, ``kopf freeze``) outranks every replica, as
    kopf intends.
    """
    return -(time.time_ns() // 1_000_000 * 1000 + random.randrange(1000))


def operator(args: Namespace) -> int:
    try:
        from jobstead_operator.runner import OperatorOptions, PeeringOptions, WebhookOptions, run_operator
        from jobstead_operator.targets import TargetError, parse_target
    except ImportError as exc:
        raise UsageError(f"the operator needs its extra: pip install 'jobstead[operator]' ({exc})") from None
    if args.all_namespaces and args.namespace:
        raise UsageError("give -n/--namespace or -A/--all-namespaces, not both")
    if not args.all_namespaces and not args.namespace:
        raise UsageError("say what to watch: -n NAMESPACE (repeatable) or -A for every namespace")
    if args.webhook_host and args.webhook_service:
        raise UsageError("give --webhook-host or --webhook-service, not both")
    webhook = None
    if args.webhook_host or args.webhook_service:
        webhook = WebhookOptions(
            port=args.webhook_port,
            host=args.webhook_host,
            service=args.webhook_service,
            cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        )
    # The operator's schema and prefix variables describe its own default database only:
    # read here, then removed, so no app's database (named by its Secret) inherits them.
    schema = os.environ.pop(SCHEMA_ENV, None) or None
    prefix = os.environ.pop(TABLE_PREFIX_ENV, None) or None
    raw_url = database_override(args)
    default = None
    if raw_url:
        try:
            default = parse_target(raw_url, schema=schema, table_prefix=prefix, where="the operator's database URL")
        except TargetError as exc:
            raise UsageError(exc.message) from None
    run_operator(
        OperatorOptions(
            namespaces=args.namespace or (),
            clusterwide=args.all_namespaces,
            default_database=default,
            migrate=_migrate_from_env(),
            peering=PeeringOptions(
                standalone=args.standalone,
                name=args.peering,
                priority=startup_priority() if args.priority is None else args.priority,
                lifetime=args.peering_lifetime,
            ),
            liveness_endpoint=args.liveness_endpoint,
            scale_down_window=args.scale_down_window,
            idle_cooldown=args.idle_cooldown,
            webhook=webhook,
            metrics_port=args.metrics_port if args.metrics_port is not None else _metrics_port_from_env(),
            metrics_host=args.metrics_host,
            worker_metrics_port=args.worker_metrics_port,
        )
    )
    return 0


def _metrics_port_from_env() -> int | None:
    """``$JOBSTEAD_OPERATOR_METRICS_PORT``: where ``--metrics-port`` was not given; empty means none."""
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UsageError(f"${METRICS_PORT_ENV} must be a port between 1 and 65535, not {raw!r}")
    return int(raw)


def _migrate_from_env() -> bool:
    """``$JOBSTEAD_OPERATOR_MIGRATE``: ``false`` leaves schema changes to the apps (``SchemaMissing`` until done)."""
    raw = os.environ.get(MIGRATE_ENV, "true").strip().lower()
    if raw in ("1", "true", "yes", "on", ""):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"${MIGRATE_ENV} must be true or false, not {raw!r}")
