"""The Kubernetes backend's reading of pods, over a fake API: the node the scheduler
picked, when a container ended, and a pod's last event (its own, not an earlier
pod's of the same name)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandman.runtime.base import Explaining
from sandman.runtime.kubernetes.backend import KubernetesOptions, KubernetesRuntime, state_from_pod


def pod(
    name: str = "sandman-alice",
    uid: str = "uid-2",
    phase: str = "Running",
    node: str | None = "gpu-node-2",
    terminated: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"terminated": terminated} if terminated else {"running": {}}
    status: dict[str, Any] = {
        "phase": phase,
        "podIP": "10.1.2.3",
        "containerStatuses": [{"name": "session", "state": state}],
    }
    if reason:
        status["reason"] = reason
    spec: dict[str, Any] = {"containers": [{"name": "session"}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "uid": uid, "labels": {"sandman.session_id": "s1"}},
        "spec": spec,
        "status": status,
    }


def event(reason: str, message: str, uid: str | None, minute: int) -> SimpleNamespace:
    return SimpleNamespace(
        reason=reason,
        message=message,
        last_timestamp=datetime(2026, 12, 3, 7, minute, tzinfo=UTC),
        event_time=None,
        metadata=SimpleNamespace(creation_timestamp=None),
        involved_object=SimpleNamespace(uid=uid),
    )


class FakeCore:
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[SimpleNamespace] = []

    def read_namespaced_pod(self, name: str, namespace: str) -> dict[str, Any]:
        if name not in self.pods:
            raise ApiException(status=404, reason="Not Found")
        return self.pods[name]

    def list_namespaced_event(self, namespace: str, field_selector: str) -> SimpleNamespace:
        assert field_selector == "involvedObject.name=sandman-alice"
        return SimpleNamespace(items=list(self.events))


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def backend(core: FakeCore) -> KubernetesRuntime:
    runtime = KubernetesRuntime(ApiClient(), KubernetesOptions())
    runtime.core = core
    return runtime


def test_the_state_carries_the_node_the_scheduler_picked() -> None:
    running = state_from_pod(pod())
    assert running.running and running.node == "gpu-node-2" and running.finished_at is None
    pending = state_from_pod(pod(phase="Pending", node=None))
    assert pending.node is None and not pending.running


def test_a_dead_pod_says_when_its_container_ended() -> None:
    dead = state_from_pod(
        pod(
            phase="Failed",
            reason="Evicted",
            terminated={"exitCode": 137, "finishedAt": "2026-12-03T07:10:00Z"},
        )
    )
    assert dead.status == "failed (Evicted)" and dead.exit_code == 137
    assert dead.finished_at == datetime(2026, 12, 3, 7, 10, tzinfo=UTC)
    odd = state_from_pod(pod(phase="Failed", terminated={"exitCode": 1, "finishedAt": "soon"}))
    assert odd.finished_at is None


def test_the_last_event_is_the_pods_own_not_an_earlier_pods_of_that_name(
    backend: KubernetesRuntime, core: FakeCore
) -> None:
    assert isinstance(backend, Explaining)
    core.pods["sandman-alice"] = pod(phase="Failed", reason="Evicted")
    core.events = [
        event("Evicted", "The node was low on resource: memory.", "uid-2", 9),
        event("Scheduled", "Successfully assigned to gpu-node-2", "uid-2", 1),
        event("Failed", "an earlier pod of that name", "uid-1", 30),
    ]
    assert backend.last_event("sandman-alice") == ("Evicted: The node was low on resource: memory.")


def test_a_gone_pod_or_one_without_events_has_no_last_event(
    backend: KubernetesRuntime, core: FakeCore
) -> None:
    core.events = [event("Killing", "Stopping container session", "uid-2", 5)]
    assert backend.last_event("sandman-alice") is None  # deleted: not read
    core.pods["sandman-alice"] = pod(uid="uid-3")
    assert backend.last_event("sandman-alice") is None  # those events are another pod's


def test_a_command_whose_container_has_just_ended_is_a_runtime_failure(
    backend: KubernetesRuntime, core: FakeCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes.stream

    from sandman.errors import RuntimeFailure

    core.pods["sandman-alice"] = pod()

    def refused(*_args: object, **_kwargs: object) -> None:
        # What the client raises when the exec WebSocket's handshake is refused.
        raise ApiException(
            status=0,
            reason='Handshake status 500 Internal Server Error: container not found ("session")',
        )

    monkeypatch.setattr(kubernetes.stream, "stream", refused)
    with pytest.raises(RuntimeFailure, match="container not found"):
        backend.exec("sandman-alice", ["true"], "20001:20001", 5)
