"""``jobstead operator``: the Kubernetes operator, from the optional ``jobstead[operator]`` extra."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from ..store import Store
from .errors import UsageError
from .loading import database_override


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
        priority=args.priority,
        scale_down_window=args.scale_down_window,
        idle_cooldown=args.idle_cooldown,
        webhook=webhook,
    )
    return 0
