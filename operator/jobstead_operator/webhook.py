"""The validating admission webhook: bad CronSchedules and JobHandlers are refused at ``kubectl apply``.

What the CRD schema cannot check (a cron expression or time zone only code
can reject, a Secret that does not exist) is checked here, with the same code
the reconcilers use, so the webhook and ``Ready=False`` can never disagree.

Served by kopf, which also writes the ValidatingWebhookConfiguration (managed
mode). Two ways for the API server to reach it:

* ``url`` mode (``--webhook-host``): the API server calls ``https://host:port``
  directly; for a control plane on the same machine (our tests) or a tunnel.
* ``service`` mode (``--webhook-service NAMESPACE/NAME``): in a cluster, the
  API server calls the operator through its Service.

TLS: a self-signed certificate the operator makes at start (its own CA; the
caBundle goes into the webhook configuration), or files mounted from a Secret
(cert-manager) with ``--webhook-cert-dir`` (``tls.crt``, ``tls.key``, ``ca.crt``).

Failures are ignored (``failurePolicy: Ignore``): while the operator is down,
resources can still be written and the reconcilers report what is wrong.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobstead import ConfigurationError

from .registry import GROUP, VERSION, registry
from .spec import CronScheduleSpec, JobHandlerSpec, SecretRef, SpecError
from .state import OperatorState

CONFIGURATION_NAME = "jobstead.io"


def self_signed(hosts: Sequence[str], directory: Path) -> tuple[Path, Path]:
    """A certificate valid for ``hosts`` (names or IPs) that is its own CA; (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, announced to the API server as a Service rather than a URL."""

    def __init__(self, *, service_namespace: str, service_name: str, service_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = {"namespace": service_namespace, "name": service_name, "port": service_port}

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            # kopf appends "/<handler id>": a root of "/" would make "//id", which the API
            # server refuses (each path segment must be a DNS label, hence the handlers' ids).
            service = {**self.service, "path": (self.path or "").rstrip("/")}
            yield {"service": service, **({"caBundle": config["caBundle"]} if "caBundle" in config else {})}


def configure(
    settings: kopf.OperatorSettings,
    *,
    port: int,
    host: str | None,
    service: str | None,
    cert_dir: Path | None,
    workdir: Path,
) -> None:
    """Turn the webhook on: exactly one of ``host`` (url mode) or ``service`` ("ns/name")."""
    if (host is None) == (service is None):
        raise ConfigurationError("the webhook needs --webhook-host (url mode) or --webhook-service NS/NAME")
    if cert_dir is not None:
        certfile, keyfile, cafile = cert_dir / "tls.crt", cert_dir / "tls.key", cert_dir / "ca.crt"
    else:
        hosts = [host] if host else [f"{service.split('/')[1]}.{service.split('/')[0]}.svc"]  # type: ignore[union-attr]
        certfile, keyfile = self_signed(hosts, workdir)
        cafile = certfile
    common: dict[str, Any] = {
        "addr": host if host else "0.0.0.0",
        "port": port,
        "certfile": str(certfile),
        "pkeyfile": str(keyfile),
        "cafile": str(cafile),
    }
    if service is not None:
        namespace, _, name = service.partition("/")
        if not namespace or not name:
            raise ConfigurationError(f"--webhook-service must be NAMESPACE/NAME, not {service!r}")
        settings.admission.server = ServiceWebhookServer(
            service_namespace=namespace, service_name=name, service_port=443, **common
        )
    else:
        settings.admission.server = kopf.WebhookServer(host=host, **common)
    settings.admission.managed = CONFIGURATION_NAME


def _spec_changed(operation: str | None, old: Any, new: Any) -> bool:
    """kopf's own writes (annotations, finalizers) must pass even for a resource that is wrong."""
    if operation == "CREATE":
        return True
    return bool((old or {}).get("spec") != (new or {}).get("spec"))


@kopf.on.validate(
    GROUP,
    VERSION,
    "cronschedules",
    id="validate-cronschedule",  # the URL path of a Service webhook: no "_" (kopf's default id is the function's name)
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
    registry=registry,
)
async def validate_cronschedule(name: str, spec: Any, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    if not _spec_changed(kwargs.get("operation"), kwargs.get("old"), kwargs.get("new")):
        return
    try:
        parsed = CronScheduleSpec.parse(name or "cron", spec)
    except SpecError as exc:
        raise kopf.AdmissionError(exc.message, code=422) from None
    if parsed.database is not None:
        await _check_secret(memo.state, namespace, parsed.database)


@kopf.on.validate(
    GROUP,
    VERSION,
    "jobhandlers",
    id="validate-jobhandler",  # the URL path of a Service webhook: no "_" (kopf's default id is the function's name)
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
    registry=registry,
)
async def validate_jobhandler(spec: Any, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    if not _spec_changed(kwargs.get("operation"), kwargs.get("old"), kwargs.get("new")):
        return
    try:
        parsed = JobHandlerSpec.parse(spec)
    except SpecError as exc:
        raise kopf.AdmissionError(exc.message, code=422) from None
    await _check_secret(memo.state, namespace, parsed.database)


async def _check_secret(state: OperatorState, namespace: str | None, ref: SecretRef) -> None:
    has_key = await state.kube.secret_has_key(namespace or "default", ref.name, ref.key)
    if not has_key:
        what = "does not exist" if has_key is None else f"has no key {ref.key!r}"
        raise kopf.AdmissionError(
            f"spec.database.secretRef: Secret {ref.name!r} {what} in namespace {namespace!r}", code=422
        )
