"""The kopf registry all of Jobstead's handlers register into (not kopf's global one)."""

from __future__ import annotations

from typing import Any

import kopf

GROUP = "jobstead.io"
VERSION = "v1alpha1"

registry = kopf.OperatorRegistry()


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials as the official client finds them: the pod's service account, else $KUBECONFIG."""
    return kopf.login_via_client(**kwargs)
