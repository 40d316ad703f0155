"""The fake runtime as a Kubernetes cluster looks to the services: the scheduler,
not Sandman, picks the node; a pod that dies says when and leaves events behind.

Only what the services read differs from ``FakeRuntime``: the node in the state,
``finished_at`` of a dead pod, and ``last_event`` (``runtime.base.Explaining``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from tests.fakes.runtime import FakeRuntime

from sandman.errors import RuntimeUnavailable
from sandman.runtime.base import ContainerState, SessionLaunch


class FakePodRuntime(FakeRuntime):
    def __init__(self, node: str = "gpu-node-1") -> None:
        super().__init__(publishes_ports=False)
        self.node = node
        self.pod_events: dict[str, list[str]] = {}  # pod id -> "Reason: message", oldest first
        self.events_read: list[str] = []  # the pods last_event was asked about
        self.events_unreachable = False

    def start(self, launch: SessionLaunch) -> ContainerState:
        state = replace(super().start(launch), node=self.node)
        with self.lock:
            self.containers[state.id].state = state
        return state

    def fail(
        self, name_or_id: str, status: str, event: str | None, finished_at: datetime | None
    ) -> None:
        """The pod stops (failed, evicted, ...) at ``finished_at``, leaving ``event``."""
        with self.lock:
            found = self._find(name_or_id)
            assert found is not None, name_or_id
            found.state = replace(
                found.state, running=False, status=status, finished_at=finished_at
            )
            if event is not None:
                self.pod_events.setdefault(found.state.id, []).append(event)

    def last_event(self, name_or_id: str) -> str | None:
        self.events_read.append(name_or_id)
        if self.events_unreachable:
            raise RuntimeUnavailable("the fake API server does not answer (events)")
        with self.lock:
            found = self._find(name_or_id)
            events = self.pod_events.get(found.state.id, []) if found else []
            return events[-1] if events else None


def gpu_node(name: str, allocatable: dict[str, str]) -> dict[str, Any]:
    """A Ready node as the API lists it, advertising ``allocatable`` on A100-40GB GPUs."""
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "16", "memory": "64Gi", **allocatable},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
