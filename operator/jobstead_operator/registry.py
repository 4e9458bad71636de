"""The kopf registry all of Jobstead's handlers register into (not kopf's global one)."""

from __future__ import annotations

import kopf

GROUP = "jobstead.io"
VERSION = "v1alpha1"

registry = kopf.OperatorRegistry()
