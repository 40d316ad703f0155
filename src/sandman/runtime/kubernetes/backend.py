"""Sessions as pods: the ``SessionRuntime`` contract on a Kubernetes cluster.

The manifests come from the pure builders in ``manifests``; this module only
talks to the API server (through the official client) and turns its answers into
the contract's types and domain errors:

- ``start`` makes the user's claim (once, never deleted), the session's Secret and
  its Pod, then watches the pod until it runs with an address. A pod that fails,
  or stays Pending longer than ``pending_timeout``, is removed with its Secret and
  the start fails with the pod's last event as the reason (``0/1 nodes are
  available: 1 Insufficient nvidia.com/mig-1g.5gb``, an image that cannot be
  pulled, ...).
- ``remove`` deletes the pod with the grace period and waits until it is gone, so
  the devices it held are free before Sandman releases its claims.
- ``exec`` runs as the pod's own user: a container's processes cannot change
  user on Kubernetes without privileges the session pods do not get.
- ``last_event`` (``Explaining``) gives the reconciler the pod's own words when it
  ends a session as lost; the state carries the node the scheduler picked and when
  the pod's container ended.

Every call is synchronous; the services run them in worker threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sandman.errors import Conflict, RuntimeFailure, RuntimeUnavailable
from sandman.runtime.base import (
    SSHD_PORT,
    ContainerState,
    ContainerStats,
    Endpoint,
    ExecResult,
    SessionLaunch,
    WorkspaceUsage,
)
from sandman.runtime.kubernetes import manifests

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class KubernetesOptions:
    """Where and how sessions run on the cluster (from the settings)."""

    namespace: str = "sandman-sessions"
    pending_timeout: float = 300.0
    watch_step: float = 0.5  # the least wait before a read when a watch fails at once
    build: manifests.BuildOptions = field(default_factory=manifests.BuildOptions)


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


class KubernetesRuntime:
    """``SessionRuntime`` on the Kubernetes API (``kubernetes`` client)."""

    publishes_ports = False

    def __init__(
        self,
        api_client: Any,
        options: KubernetesOptions,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from kubernetes import client

        self.options = options
        self.namespace = options.namespace
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.api_client = api_client
        self._clock = clock
        self._sleep = sleep

    # ----------------------------------------------------------------- plumbing
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            if exc.status in (401, 403):
                raise RuntimeFailure(f"{what}: the cluster refused Sandman ({exc.reason})") from exc
            if exc.status is not None and exc.status >= 500:
                raise RuntimeUnavailable(f"{what}: the API server failed ({exc.reason})") from exc
            raise
        except (HTTPError, OSError) as exc:
            raise RuntimeUnavailable(f"{what}: the API server does not answer ({exc})") from exc

    def _ignore_missing(self, what: str, fn: Callable[[], object]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._call(what, fn)
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeFailure(f"{what}: {exc.reason}") from exc

    def _create(self, what: str, fn: Callable[[], object]) -> bool:
        """Create; False when it already exists."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._call(what, fn)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise RuntimeFailure(f"{what}: {_message(exc)}") from exc

    # ---------------------------------------------------------------- contract
    def ping(self) -> None:
        self._call(
            "reading the session namespace", lambda: self.core.read_namespace(self.namespace)
        )

    def prepare(self) -> None:
        """The network policies of the session namespace (replaced when they differ)."""
        for policy in manifests.make_network_policies(self.namespace, self.options.build):
            self._apply_policy(policy)

    def _apply_policy(self, policy: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        name = policy["metadata"]["name"]
        try:
            self._call(
                f"creating network policy {name}",
                lambda: self.networking.create_namespaced_network_policy(self.namespace, policy),
            )
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeFailure(f"creating network policy {name}: {_message(exc)}") from exc
            self._call(
                f"replacing network policy {name}",
                lambda: self.networking.replace_namespaced_network_policy(
                    name, self.namespace, policy
                ),
            )

    def workspace_owner(self, user_id: str) -> int | None:
        return None

    def start(self, launch: SessionLaunch) -> ContainerState:
        build = self.options.build
        claim = manifests.make_pvc(launch.workspace, self.namespace, build)
        secret = manifests.make_secret(launch, self.namespace, build)
        pod = manifests.make_pod(launch, self.namespace, build, gpu_model=launch.gpu.model)
        name = pod["metadata"]["name"]
        self._create(
            f"creating the workspace claim of {launch.workspace.user_id}",
            lambda: self.core.create_namespaced_persistent_volume_claim(self.namespace, claim),
        )
        try:
            self._create(
                f"creating the secret of {launch.session_id}",
                lambda: self.core.create_namespaced_secret(self.namespace, secret),
            )
            if not self._create(
                f"creating pod {name}", lambda: self.core.create_namespaced_pod(self.namespace, pod)
            ):
                raise RuntimeFailure(f"pod {name} already exists")
            return self._wait_running(name)
        except BaseException:
            self._force_remove(name)
            self.discard(launch.session_id)
            raise

    def _wait_running(self, name: str) -> ContainerState:
        started = self._clock()
        raw = self._read_pod(name)
        while True:
            if raw is None:
                raise RuntimeFailure(f"pod {name} vanished while starting")
            state = state_from_pod(raw)
            if state.running and state.endpoint is not None:
                return state
            phase = (raw.get("status") or {}).get("phase")
            if phase in ("Failed", "Succeeded") or _waiting_error(raw):
                raise RuntimeFailure(f"pod {name} failed to start: {self._reason(name, raw)}")
            if self._clock() - started > self.options.pending_timeout:
                raise RuntimeFailure(
                    f"pod {name} still {phase or 'pending'} after "
                    f"{self.options.pending_timeout:.0f} s: {self._reason(name, raw)}"
                )
            remaining = self.options.pending_timeout - (self._clock() - started)
            raw = self._next_change(name, raw, remaining)

    def _next_change(self, name: str, raw: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The pod once it next changes (None once it is gone), by a watch from the
        version ``raw`` was read at; after ``timeout`` seconds without a change, or
        when the watch cannot be had, the pod as a fresh read finds it."""
        from kubernetes import watch

        began = self._clock()
        version = (raw.get("metadata") or {}).get("resourceVersion")
        seconds = max(1, min(int(timeout) + 1, 60))
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=f"metadata.name={name}",
                resource_version=version,
                timeout_seconds=seconds,
                _request_timeout=seconds + 10,
            ):
                kind = event.get("type")
                if kind == "DELETED":
                    return None
                if kind in ("ADDED", "MODIFIED"):
                    found: dict[str, Any] = self.api_client.sanitize_for_serialization(
                        event["object"]
                    )
                    return found
                break  # ERROR (the version is too old, ...): read afresh
        except Exception as exc:  # a watch is a shortcut; a read is always right
            log.debug("watching pod %s: %s", name, exc)
        finally:
            stream.stop()
        if self._clock() - began < self.options.watch_step:
            self._sleep(self.options.watch_step)  # the watch failed at once: do not spin
        return self._read_pod(name)

    def _reason(self, name: str, raw: dict[str, Any]) -> str:
        """The pod's own words: a container's waiting or terminated reason, else its
        last event."""
        why = _waiting_error(raw) or _terminated(raw)
        if why:
            return why
        events = self.events(name)
        return (
            events[-1] if events else (raw.get("status") or {}).get("reason") or "no reason given"
        )

    def last_event(self, name_or_id: str) -> str | None:
        """``Explaining``: the last event of the pod as it exists now (events are
        matched on its uid: a pod of the same name before it left events too); None
        when the pod is gone or has none."""
        raw = self._read_pod(name_or_id)
        if raw is None:
            return None
        uid = (raw.get("metadata") or {}).get("uid")
        events = self.events(name_or_id, uid=str(uid) if uid else None)
        return events[-1] if events else None

    def events(self, name: str, uid: str | None = None) -> list[str]:
        """The pod's events, oldest first, as ``Reason: message`` (only those of the
        pod with ``uid``, when given)."""
        try:
            listed = self._call(
                f"reading the events of {name}",
                lambda: self.core.list_namespaced_event(
                    self.namespace, field_selector=f"involvedObject.name={name}"
                ),
            )
        except Exception:  # the reason is a courtesy; never fail a cleanup over it
            return []
        items = sorted(
            (e for e in listed.items if uid is None or _involved_uid(e) in (None, uid)),
            key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp or 0,
        )
        return [f"{e.reason}: {e.message}" for e in items if e.reason]

    def _read_pod(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self._call(
                f"reading pod {name}", lambda: self.core.read_namespaced_pod(name, self.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeFailure(f"reading pod {name}: {_message(exc)}") from exc
        result: dict[str, Any] = self.api_client.sanitize_for_serialization(pod)
        return result

    def _force_remove(self, name: str) -> None:
        try:
            self.remove(name, 0)
        except Exception as exc:
            log.warning("removing pod %s after a failed start: %s", name, exc)

    def remove(self, name_or_id: str, grace_seconds: float) -> None:
        from kubernetes import client

        grace = max(0, int(grace_seconds))
        self._ignore_missing(
            f"deleting pod {name_or_id}",
            lambda: self.core.delete_namespaced_pod(
                name_or_id,
                self.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=grace),
            ),
        )
        deadline = self._clock() + grace + 60
        raw = self._read_pod(name_or_id)
        while self._clock() < deadline:
            if raw is None:
                return
            raw = self._next_change(name_or_id, raw, deadline - self._clock())
        raise RuntimeFailure(f"pod {name_or_id} was not gone {grace + 60} s after its deletion")

    def discard(self, session_id: str) -> None:
        name = manifests.secret_name(session_id, self.options.build.prefix)
        self._ignore_missing(
            f"deleting secret {name}",
            lambda: self.core.delete_namespaced_secret(name, self.namespace),
        )

    def inspect(self, name_or_id: str) -> ContainerState | None:
        raw = self._read_pod(name_or_id)
        return None if raw is None else state_from_pod(raw)

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        selector = ",".join(f"{k}={manifests.label_value(v)}" for k, v in sorted(labels.items()))
        pods = self._call(
            "listing pods",
            lambda: self.core.list_namespaced_pod(self.namespace, label_selector=selector),
        )
        return [state_from_pod(self.api_client.sanitize_for_serialization(p)) for p in pods.items]

    def logs(self, name_or_id: str, tail: int = 50) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            text = self._call(
                f"reading the log of {name_or_id}",
                lambda: self.core.read_namespaced_pod_log(
                    name_or_id, self.namespace, tail_lines=tail
                ),
            )
        except ApiException as exc:
            return f"(no log: {_message(exc)})"
        return str(text)

    def exec(self, name_or_id: str, argv: Sequence[str], user: str, timeout: float) -> ExecResult:
        from kubernetes.stream import stream

        raw = self._read_pod(name_or_id)
        if raw is None:
            raise RuntimeFailure(f"pod {name_or_id} does not exist")
        runs_as = _pod_user(raw)
        if runs_as is not None and user.split(":")[0] != runs_as:
            raise RuntimeFailure(
                f"pod {name_or_id} runs as uid {runs_as}; a command cannot run there as {user}"
            )

        def run() -> ExecResult:
            from kubernetes import client

            # ``stream`` swaps the request method of the client it is given while it
            # runs; on the shared client that would turn other threads' calls into
            # WebSocket handshakes. A client of its own per command keeps them apart.
            own = client.CoreV1Api(client.ApiClient(self.api_client.configuration))
            resp = stream(
                own.connect_get_namespaced_pod_exec,
                name_or_id,
                self.namespace,
                command=list(argv),
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
            deadline = self._clock() + timeout
            chunks: list[str] = []
            try:
                while resp.is_open():
                    left = deadline - self._clock()
                    if left <= 0:
                        return ExecResult(None, "".join(chunks))
                    resp.update(timeout=min(left, 1.0))
                    if resp.peek_stdout():
                        chunks.append(resp.read_stdout())
                    if resp.peek_stderr():
                        chunks.append(resp.read_stderr())
                code = resp.returncode
            finally:
                resp.close()
            return ExecResult(code if code is not None else 0, "".join(chunks))

        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(f"running a command in {name_or_id}", run)
        except ApiException as exc:
            # The exec channel is a WebSocket: a refused handshake (the container
            # has just ended, say) arrives with no HTTP status of its own.
            raise RuntimeFailure(f"running a command in {name_or_id}: {_message(exc)}") from exc

    def workspace_usage(self, user_id: str) -> WorkspaceUsage | None:
        from kubernetes.client.exceptions import ApiException

        name = manifests.claim_name(user_id, self.options.build.prefix)
        try:
            claim = self._call(
                f"reading claim {name}",
                lambda: self.core.read_namespaced_persistent_volume_claim(name, self.namespace),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeFailure(f"reading claim {name}: {_message(exc)}") from exc
        requests = (claim.spec.resources.requests or {}) if claim.spec.resources else {}
        size = requests.get("storage")
        return WorkspaceUsage("claim", manifests.parse_quantity(size) if size else None, None)

    def resize_workspace(self, user_id: str, quota_bytes: int, live: bool) -> WorkspaceUsage:
        current = self.workspace_usage(user_id)
        if current is None:
            raise Conflict(f"user {user_id} has no workspace claim yet")
        if current.quota_bytes is not None and quota_bytes < current.quota_bytes:
            raise Conflict(
                "a workspace claim can only grow on Kubernetes; "
                f"it holds {current.quota_bytes} bytes"
            )
        name = manifests.claim_name(user_id, self.options.build.prefix)
        body = {"spec": {"resources": {"requests": {"storage": str(quota_bytes)}}}}
        self._call(
            f"growing claim {name}",
            lambda: self.core.patch_namespaced_persistent_volume_claim(name, self.namespace, body),
        )
        return WorkspaceUsage("claim", quota_bytes, None)

    def migrate_workspace(self, user_id: str, quota_bytes: int) -> str | None:
        return None  # every claim has its size from the start

    def restore_workspaces(self) -> tuple[str, ...]:
        return ()

    def release_workspace(self, user_id: str) -> bool:
        return False

    def stats(self, name_or_id: str) -> ContainerStats | None:
        return None  # the cluster's metrics pipeline, not the runtime, measures pods


# ------------------------------------------------------------------- pure parts
def state_from_pod(pod: dict[str, Any]) -> ContainerState:
    """The contract's view of a pod (the API's JSON shape)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    statuses = status.get("containerStatuses") or []
    running = (
        phase == "Running"
        and bool(statuses)
        and all("running" in (s.get("state") or {}) for s in statuses)
    )
    exit_code = None
    finished: datetime | None = None
    for s in statuses:
        terminated = (s.get("state") or {}).get("terminated")
        if terminated:
            exit_code = terminated.get("exitCode")
            at = _timestamp(terminated.get("finishedAt"))
            if at is not None and (finished is None or at > finished):
                finished = at
    ip = status.get("podIP")
    word = phase.lower()
    if meta.get("deletionTimestamp"):
        word = "terminating"
    elif status.get("reason"):  # Evicted, NodeLost, ...
        word = f"{word} ({status['reason']})"
    return ContainerState(
        id=str(meta.get("name", "")),
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        running=running and not meta.get("deletionTimestamp"),
        status=word,
        exit_code=exit_code,
        ip_address=ip,
        endpoint=Endpoint(ip, SSHD_PORT) if ip else None,
        node=(pod.get("spec") or {}).get("nodeName") or None,
        finished_at=finished,
    )


def _timestamp(value: object) -> datetime | None:
    """An API timestamp (``2026-12-03T07:00:00Z``, or a datetime) as an aware datetime."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and value:
        try:
            found = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def _involved_uid(event: Any) -> str | None:
    involved = getattr(event, "involved_object", None)
    uid = getattr(involved, "uid", None)
    return str(uid) if uid else None


_WAITING_ERRORS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


def _waiting_error(pod: dict[str, Any]) -> str | None:
    for s in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_ERRORS:
            return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return None


def _terminated(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("reason"):
        return f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    for s in status.get("containerStatuses") or []:
        term = (s.get("state") or {}).get("terminated")
        if term:
            return f"exited with code {term.get('exitCode')} ({term.get('reason', '')})"
    return None


def _pod_user(pod: dict[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        uid = (container.get("securityContext") or {}).get("runAsUser")
        if uid is not None:
            return str(uid)
    uid = (spec.get("securityContext") or {}).get("runAsUser")
    return None if uid is None else str(uid)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            import json

            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(exc, "reason", exc))
