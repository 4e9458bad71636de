"""``jobstead operator``: the Kubernetes operator, from the optional ``jobstead[operator]`` extra."""

from __future__ import annotations

import random
import time
from argparse import Namespace
from pathlib import Path

from ..store import Store
from .errors import UsageError
from .loading import database_override


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
        from jobstead_operator.runner import WebhookOptions, run_operator
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
    store = Store.connect(database_override(args))
    run_operator(
        store,
        namespaces=args.namespace or (),
        clusterwide=args.all_namespaces,
        standalone=args.standalone,
        peering_name=args.peering,
        priority=startup_priority() if args.priority is None else args.priority,
        peering_lifetime=args.peering_lifetime,
        liveness_endpoint=args.liveness_endpoint,
        scale_down_window=args.scale_down_window,
        idle_cooldown=args.idle_cooldown,
        webhook=webhook,
    )
    return 0
