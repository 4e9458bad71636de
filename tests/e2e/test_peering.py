"""Several operator replicas, as the chart runs them: exactly one acts, and another takes over.

kopf peering, not leader election: every replica writes a keep-alive into the
namespace's KopfPeering object and the highest priority acts. The replicas are
started the way a Deployment starts them (same arguments, no ``--priority``),
so this also proves each picks a priority of its own; equal ones would freeze
both for good.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from jobstead import App
from tests.e2e.test_operator import custom, database_secret, deployment, job_handler, ready_condition, wait_until
from tests.support.controlplane import Cluster, free_port
from tests.support.processes import spawn_cli, stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

GROUP, VERSION = "jobstead.io", "v1alpha1"
PEERING = "jobstead"
LIFETIME = 6  # seconds; the chart keeps kopf's 60, a test cannot wait that long for a dead peer


@dataclass
class Replica:
    """One ``jobstead operator`` process, started with the arguments every chart replica gets."""

    identity: str
    log: Path
    process: subprocess.Popen[bytes]
    health: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def waits_its_turn(self) -> bool:
        """Peering is mandatory, so a replica starts paused: it has seen the others' keep-alives and not resumed."""
        text = self.text()
        return text.count("Keep-alive in") >= 3 and "Resuming operations" not in text

    def handled_objects(self) -> bool:
        """Whether kopf ran anything for a resource here (it logs that as ``kopf.objects``)."""
        return "kopf.objects:" in self.text()


@dataclass
class Replicas:
    cluster: Cluster
    namespace: str
    env: dict[str, str]
    tmp: Path
    started: list[Replica] = field(default_factory=list)

    def start(self, identity: str) -> Replica:
        port = free_port()
        args = [
            "operator",
            "-n",
            self.namespace,
            f"--peering={PEERING}",
            f"--peering-lifetime={LIFETIME}",
            f"--liveness-endpoint=http://127.0.0.1:{port}/healthz",
            "--log-level=debug",
        ]
        log = self.tmp / f"{identity}.log"
        # kopf's identity in the peering object: the pod name, as the chart sets it
        process = spawn_cli(args, {**self.env, "POD_ID": identity}, log)
        replica = Replica(identity, log, process, f"http://127.0.0.1:{port}/healthz")
        self.started.append(replica)
        return replica


def peers(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The keep-alives in the KopfPeering object: identity -> priority, lifetime, lastseen."""
    body = cast(
        dict[str, Any], custom(api).get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", PEERING)
    )
    return dict(body.get("status") or {})


def reporters(api: client.ApiClient, namespace: str, name: str) -> list[str | None]:
    """Who posted each Event about a resource, oldest first: the operator reports its POD_ID."""
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e.reporting_instance for e in sorted(events.items, key=lambda e: str(e.event_time or e.last_timestamp))]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def replicas(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
) -> Iterator[Replicas]:
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    app = App(pg_url, schema=schema)
    app.migrate()
    app.close()
    database_secret(kube_api, namespace, pg_url, schema)
    # what the chart's peering.yaml creates in every watched namespace
    custom(kube_api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    env = {**kube_cluster.env(), "JOBSTEAD_DATABASE_URL": ""}
    group = Replicas(kube_cluster, namespace, env, tmp_path)
    yield group
    for replica in group.started:
        stop(replica.process)
    print(f"operator logs: {tmp_path}")


def test_one_replica_acts_and_another_takes_over_when_it_dies(
    replicas: Replicas, kube_api: client.ApiClient, namespace: str
) -> None:
    first = replicas.start("replica-a")
    wait_until(lambda: "replica-a" in peers(kube_api, namespace), 30, "the first replica's keep-alive")
    second = replicas.start("replica-b")
    wait_until(lambda: "replica-b" in peers(kube_api, namespace), 30, "the second replica's keep-alive")

    # distinct priorities (never the same: that would pause both); the older replica leads
    keepalives = peers(kube_api, namespace)
    assert keepalives["replica-a"]["priority"] > keepalives["replica-b"]["priority"]
    assert keepalives["replica-a"]["lifetime"] == LIFETIME
    wait_until(second.waits_its_turn, 30, "the second replica to see the first and stay paused")
    assert "Pausing operations" not in first.text() and "Possibly conflicting" not in first.text() + second.text()
    # both answer their liveness probe, the paused one too (a paused replica is not a dead one)
    wait_until(lambda: healthy(first.health) and healthy(second.health), 20, "both health endpoints")

    # a JobHandler applied while both run is reconciled by the leader alone
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", job_handler("first"))
    wait_until(
        lambda: (ready_condition(kube_api, namespace, "jobhandlers", "first") or {}).get("status") == "True",
        30,
        "Ready=True from the leader",
    )
    assert deployment(kube_api, namespace, "first") is not None
    # a resource the operator complains about at every scale tick (Warning Events): only the leader does
    orphan = job_handler("orphan", database={"secretRef": {"name": "no-such-secret"}})
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", orphan)
    wait_until(lambda: len(reporters(kube_api, namespace, "orphan")) >= 2, 30, "the leader's repeated Events")
    assert set(reporters(kube_api, namespace, "orphan")) == {"replica-a"}
    assert first.handled_objects() and not second.handled_objects(), "the paused replica handled a resource too"

    # the leader dies without a word (no farewell keep-alive): the other takes over once its keep-alive expires
    first.process.kill()
    first.process.wait()
    died = time.monotonic()
    wait_until(lambda: "Resuming operations after the pause" in second.text(), LIFETIME + 10, "the takeover")
    took = time.monotonic() - died
    print(f"takeover {took:.1f} s after the leader died (peering lifetime {LIFETIME} s)")
    assert took <= LIFETIME + 5
    wait_until(lambda: "replica-a" not in peers(kube_api, namespace), 15, "the dead peer to be cleaned up")

    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", job_handler("second"))
    wait_until(lambda: deployment(kube_api, namespace, "second"), 30, "the new leader to create the Deployment")
    wait_until(
        lambda: (ready_condition(kube_api, namespace, "jobhandlers", "second") or {}).get("status") == "True",
        30,
        "Ready=True from the new leader",
    )
    # and the complaints about the broken resource now come from the new leader
    wait_until(lambda: reporters(kube_api, namespace, "orphan")[-1] == "replica-b", 30, "Events from the new leader")


def test_a_replica_stopping_gracefully_hands_over_at_once(
    replicas: Replicas, kube_api: client.ApiClient, namespace: str
) -> None:
    """A rollout or scale-down sends SIGTERM: the leader leaves the peering object and the next acts."""
    leader = replicas.start("replica-a")
    wait_until(lambda: "replica-a" in peers(kube_api, namespace), 30, "the leader's keep-alive")
    follower = replicas.start("replica-b")
    wait_until(follower.waits_its_turn, 30, "the follower to stay paused")

    assert stop(leader.process) == 0
    stopped = time.monotonic()
    wait_until(lambda: "Resuming operations after the pause" in follower.text(), LIFETIME, "the handover")
    assert time.monotonic() - stopped < LIFETIME, "the follower waited out the lifetime of a peer that said goodbye"
    assert list(peers(kube_api, namespace)) == ["replica-b"]
    custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", job_handler("after"))
    wait_until(lambda: deployment(kube_api, namespace, "after"), 30, "the new leader to act")


def test_two_operators_started_as_the_readme_shows_let_only_one_act(
    kube_cluster: Cluster,
    kube_api: client.ApiClient,
    jobstead_crds: list[str],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    """``jobstead operator -n NS`` twice, nothing else: no chart, no peering object, no flags.

    Before, kopf found no KopfPeering object, ran standalone without a word,
    and both operators acted. Now the first creates the object and the second
    pauses in its favour.
    """
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    App(pg_url, schema=schema).migrate()
    database_secret(kube_api, namespace, pg_url, schema)
    env = {**kube_cluster.env(), "JOBSTEAD_DATABASE_URL": ""}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = spawn_cli(["operator", "-n", namespace], env, logs[0])
    second = None
    try:
        wait_until(lambda: len(readme_peers(kube_api, namespace)) == 1, 30, "the peering object and its first peer")
        second = spawn_cli(["operator", "-n", namespace], env, logs[1])
        wait_until(lambda: len(readme_peers(kube_api, namespace)) == 2, 30, "the second peer")
        time.sleep(2)  # the second has seen the first's keep-alive by now

        custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", job_handler("one"))
        orphan = job_handler("orphan", database={"secretRef": {"name": "no-such-secret"}})
        custom(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, "jobhandlers", orphan)
        wait_until(lambda: deployment(kube_api, namespace, "one"), 30, "the Deployment")
        wait_until(lambda: len(reporters(kube_api, namespace, "orphan")) >= 3, 30, "repeated Events")
        texts = [log.read_text(errors="replace") for log in logs]
        assert "kopf.objects:" in texts[0], "the first operator should act"
        assert "kopf.objects:" not in texts[1], "the second operator acted beside the first"
        assert "Pausing" not in texts[0]
    finally:
        stop(first)
        if second is not None:
            stop(second)
        print(f"operator logs: {tmp_path}")


def readme_peers(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    try:
        return peers(api, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def test_the_cluster_wide_peering_object_is_created_once(kube_api: client.ApiClient, jobstead_crds: list[str]) -> None:
    """``-A`` coordinates through a ClusterKopfPeering: made when missing, left alone when there."""
    from jobstead_operator.peering import ensure_peering

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    api = custom(kube_api)
    try:
        assert ensure_peering(name, namespaces=(), clusterwide=True, api=kube_api) == [f"ClusterKopfPeering {name}"]
        assert api.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)["metadata"]["name"] == name
        assert ensure_peering(name, namespaces=(), clusterwide=True, api=kube_api) == []
    finally:
        api.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
