"""What a session is on Kubernetes, as the API's JSON (pure: no I/O, plain dicts).

Every builder returns a complete object (``apiVersion`` and ``kind`` included)
valid for Kubernetes 1.20, so the backend only sends it. A session gets what it
gets on Docker (``runtime/docker/spec.py``), in Kubernetes' words:

==========================  ==========================  ===============================
Docker                      Kubernetes                  note
==========================  ==========================  ===============================
``user=uid:gid``            ``runAsUser``/``runAsGroup``  and ``runAsNonRoot``
``cap_drop=ALL``            ``capabilities.drop: ALL``  sshd listens on 2222: no
                                                        capability needed
``no-new-privileges``       ``allowPrivilegeEscalation: false``
default seccomp             ``seccompProfile: RuntimeDefault`` (GA since 1.19)
``init=True`` (tini)        ``shareProcessNamespace``   the pause process is PID 1
                                                        and reaps orphans
``nano_cpus``/``mem_limit``  limits (= requests)         Guaranteed QoS: what Sandman
                                                        admits is what the node holds
``pids_limit``              none per pod in 1.20        kubelet ``--pod-max-pids``
``shm_size``                ``emptyDir`` in memory      counts against the memory limit
files, bind-mounted r/o     a Secret per session        one ``subPath`` mount per file
workspace directory         a claim per user            never deleted by Sandman
GPU UUIDs                   an extended resource        the device plugin picks devices
firewall rules              NetworkPolicies             enforced by the network plugin
==========================  ==========================  ===============================

Names and label values (``names``): a text the API refuses, such as a user id with
``_``, is rewritten to a valid one that no other text gets; the originals ride in
annotations.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandman.domain import validate_user_id
from sandman.environments.apps import APPS
from sandman.errors import InvalidRequest
from sandman.runtime.base import (
    DEPLOYMENT_LABEL,
    MANAGED_LABEL,
    SESSION_LABEL,
    SSHD_PORT,
    USER_LABEL,
    SessionFile,
    SessionLaunch,
    Workspace,
)
from sandman.runtime.docker.firewall import SEALED
from sandman.runtime.egress import Egress, Network
from sandman.runtime.kubernetes.names import (
    claim_name,
    cpu_quantity,
    dns_label,
    label_value,
    labels,
    parse_quantity,
    pod_name,
    quantity,
    secret_name,
    validate_session_id,
)
from sandman.sizes import GIB, parse_size

if TYPE_CHECKING:
    from sandman.config import Settings

Manifest = dict[str, Any]

CONTAINER = "session"  # the one container of a session pod
PART_OF = {"app.kubernetes.io/part-of": "sandman"}
CONTROL = {"sandman.role": "control"}  # Sandman's own pods and namespace (deploy/kubernetes)
SESSION_POD = {MANAGED_LABEL: "true"}  # what every session pod carries
APP_PORTS: tuple[int, ...] = tuple(sorted(app.port for app in APPS.values()))
MIG_PREFIX = "nvidia.com/mig-"
GPU_RESOURCE = "nvidia.com/gpu"

_SECRET_KEY = re.compile(r"[^-._a-zA-Z0-9]")

# Never reachable from a session, whatever the egress setting: private ranges (pods,
# services and nodes live there), carrier-grade NAT, loopback, and what Docker seals.
PRIVATE: tuple[Network, ...] = (
    *(
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8")
    ),
    *SEALED[4],
    *(ipaddress.ip_network(n) for n in ("fc00::/7", "::1/128")),
    *SEALED[6],
)


@dataclass(frozen=True)
class Placement:
    """Where sessions on one GPU model may run: the node labels to match and the
    taints to tolerate (a GPU pool is often tainted ``nvidia.com/gpu:NoSchedule``)."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class BuildOptions:
    """What the manifests depend on beyond the session itself (from the settings)."""

    prefix: str = "sandman"
    storage_class: str | None = None  # None: the cluster's default class
    workspace_size: int = 10 * GIB  # a claim's size where the workspace has no quota
    image_pull_policy: str = "IfNotPresent"  # images are built on the nodes, not pulled
    grace_seconds: int = 5  # SIGTERM to SIGKILL
    placements: Mapping[str, Placement] = field(default_factory=dict)  # by GPU model
    # The labels of Sandman's own pods and namespace: the only peers sessions accept.
    sandman_pods: Mapping[str, str] = field(default_factory=lambda: dict(CONTROL))
    sandman_namespace: Mapping[str, str] = field(default_factory=lambda: dict(CONTROL))
    egress: Egress = field(default_factory=lambda: Egress("allow"))  # SANDMAN_EGRESS
    # Where sessions may ask DNS: pods with these labels in any namespace (CoreDNS and
    # kube-dns both carry k8s-app=kube-dns); empty: no DNS.
    dns_pods: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    sealed: tuple[Network, ...] = ()  # more networks sessions never reach (public pod CIDRs)
    deployment: str = ""  # labels the policies of this deployment (sandman.deployment)


def build_options(settings: Settings, deployment_id: str = "") -> BuildOptions:
    """The options from Sandman's settings: ``SANDMAN_KUBE_NODE_SELECTORS`` per GPU
    model (``*``: every model), ``SANDMAN_KUBE_TOLERATIONS`` for every GPU pod."""
    selectors = settings.kube_node_selectors
    placements = {model: Placement(dict(labels)) for model, labels in selectors.items()}
    every = placements.get("*", Placement())
    placements["*"] = Placement(every.node_selector, tuple(settings.kube_tolerations))
    size = settings.kube_workspace_size
    try:
        workspace_size = parse_quantity(size)
    except ValueError:
        workspace_size = parse_size(size)  # 10g, as the other sizes are written
    return BuildOptions(
        prefix=settings.container_prefix,
        storage_class=settings.kube_storage_class or None,
        workspace_size=workspace_size,
        grace_seconds=max(0, round(settings.stop_grace_period)),
        placements=placements,
        egress=settings.egress_policy,
        deployment=deployment_id,
    )


def placement(
    placements: Mapping[str, Placement], gpu_model: str | None
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """A GPU session's node selector and tolerations: those for every model (``*``),
    then its own model's on top."""
    every = placements.get("*", Placement())
    own = placements.get(gpu_model, Placement()) if gpu_model else Placement()
    selector = {**every.node_selector, **own.node_selector}
    return selector, [dict(t) for t in (*every.tolerations, *own.tolerations)]


def _annotations(launch: SessionLaunch) -> dict[str, str]:
    """The originals of the labels (a label may be rewritten) and the container name."""
    return {**launch.labels, "sandman.name": launch.name}


def gpu_resources(launch: SessionLaunch) -> dict[str, int]:
    """The grant as an extended resource: ``nvidia.com/mig-<profile>`` (the device
    plugin's mixed strategy) or ``nvidia.com/gpu``, as many as the grant holds."""
    if not launch.gpu.count:
        return {}
    if launch.gpu.mig_profile:
        profile = launch.gpu.mig_profile
        if not re.fullmatch(r"[0-9]+g\.[0-9]+gb(\+me)?", profile):
            raise InvalidRequest(f"MIG profile {profile!r} cannot name a Kubernetes resource")
        return {f"{MIG_PREFIX}{profile}": launch.gpu.count}
    return {GPU_RESOURCE: launch.gpu.count}


def _environment(launch: SessionLaunch, gpus: Mapping[str, int]) -> list[dict[str, str]]:
    environment = dict(launch.environment)
    if gpus:  # the device plugin says which devices; Sandman's UUIDs are not theirs
        environment.pop("NVIDIA_VISIBLE_DEVICES", None)
    return [{"name": name, "value": value} for name, value in sorted(environment.items())]


def _secret_key(index: int, path: str) -> str:
    return f"f{index}-{_SECRET_KEY.sub('_', path.rsplit('/', 1)[-1])}"[:253]


def file_mode(file: SessionFile) -> int:
    """The mode the file gets in the pod. Secret files belong to root and to the pod's
    ``fsGroup`` (the user's gid), and the kubelet makes them group-readable: a file
    owned by the user gets its owner's read and execute bits for the group too (sshd
    checks a host key's mode only when it owns the file, so 0640 root:gid is read);
    a file the user must not read cannot be expressed, and is refused, not exposed."""
    if file.owned_by_user:
        return file.mode | ((file.mode & 0o500) >> 3)
    if file.mode & 0o044 != 0o044:
        raise ValueError(
            f"{file.path}: a root-owned file of mode {file.mode:o} would be readable by "
            "the user's group in a pod; make it readable or owned by the user"
        )
    return file.mode


def _check_path(path: str) -> str:
    if not path.startswith("/") or ".." in path.split("/") or path.rstrip("/") in ("", "/"):
        raise ValueError(f"session file path {path!r} must be absolute and plain")
    return path


def make_secret(
    launch: SessionLaunch, namespace: str, settings: BuildOptions | None = None
) -> Manifest:
    """The session's files (sshd's host key and settings, authorized keys, the account
    files, the apps secret), one key each; immutable, deleted with the session."""
    settings = settings or BuildOptions()
    data = {
        _secret_key(i, _check_path(f.path)): base64.b64encode(f.content.encode()).decode()
        for i, f in enumerate(launch.files)
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(launch.session_id, settings.prefix),
            "namespace": namespace,
            "labels": labels(launch.labels),
            "annotations": _annotations(launch),
        },
        "type": "Opaque",
        "immutable": True,
        "data": data,
    }


def make_pvc(
    workspace: Workspace, namespace: str, settings: BuildOptions | None = None
) -> Manifest:
    """The user's workspace claim: created once, sized from the quota, never deleted by
    Sandman (it carries no session label, so no cleanup of a session selects it)."""
    settings = settings or BuildOptions()
    size = workspace.quota_bytes if workspace.quota_bytes is not None else settings.workspace_size
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": quantity(size)}},
    }
    if settings.storage_class is not None:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(workspace.user_id, settings.prefix),
            "namespace": namespace,
            "labels": labels({MANAGED_LABEL: "true", USER_LABEL: workspace.user_id}),
            "annotations": {USER_LABEL: workspace.user_id, "sandman.workspace": "keep"},
        },
        "spec": spec,
    }


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},  # sshd as the user on 2222 needs none
        "readOnlyRootFilesystem": False,  # /tmp as on Docker; lost with the pod
    }


def make_pod(
    launch: SessionLaunch,
    namespace: str,
    settings: BuildOptions | None = None,
    gpu_model: str | None = None,
) -> Manifest:
    """The session's pod: the workspace image running sshd as the user, hardened and
    limited, with its files, workspace, ``/dev/shm`` and GPU resource."""
    settings = settings or BuildOptions()
    validate_session_id(launch.session_id)
    workspace = launch.workspace
    validate_user_id(workspace.user_id)
    if workspace.uid <= 0 or workspace.gid <= 0:
        raise InvalidRequest("a session never runs as root: uid and gid must be positive")
    gpus = gpu_resources(launch)
    limits = {
        "cpu": cpu_quantity(launch.cpus),
        "memory": quantity(launch.memory),
        **{name: str(count) for name, count in gpus.items()},  # quantities are strings
    }
    files_volume = "files"
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": _check_path(workspace.mount_path)},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    items = []
    for i, f in enumerate(launch.files):
        key = _secret_key(i, _check_path(f.path))
        items.append({"key": key, "path": key, "mode": file_mode(f)})
        mounts.append({"name": files_volume, "mountPath": f.path, "subPath": key, "readOnly": True})
    volumes: list[dict[str, Any]] = [
        {
            "name": "workspace",
            "persistentVolumeClaim": {"claimName": claim_name(workspace.user_id, settings.prefix)},
        },
        # tmpfs pages count against the memory limit, as Docker's --shm-size does not;
        # in 1.20 the kubelet evicts past sizeLimit (the tmpfs is sized by it from 1.22).
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity(launch.shm_size)}},
    ]
    if items:
        volumes.append(
            {
                "name": files_volume,
                "secret": {
                    "secretName": secret_name(launch.session_id, settings.prefix),
                    "defaultMode": 0o644,
                    "items": items,
                },
            }
        )
    spec: dict[str, Any] = {
        "hostname": dns_label(launch.hostname),
        "restartPolicy": "Never",  # a session whose sshd exits stays down, for the reconciler
        "shareProcessNamespace": True,  # the pause process reaps orphans, as Docker's --init
        "automountServiceAccountToken": False,  # a session has no business with the API
        "enableServiceLinks": False,  # no environment listing the cluster's services
        "terminationGracePeriodSeconds": settings.grace_seconds,
        "securityContext": {
            "runAsUser": workspace.uid,
            "runAsGroup": workspace.gid,
            "runAsNonRoot": True,
            "fsGroup": workspace.gid,  # the claim's root and the files become the user's group
            "fsGroupChangePolicy": "OnRootMismatch",  # never walk a big workspace each start
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": launch.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": list(launch.command),
                "env": _environment(launch, gpus),
                "ports": [{"name": "ssh", "containerPort": SSHD_PORT, "protocol": "TCP"}],
                # Requests equal limits. A pids limit per pod cannot be set in 1.20: it is
                # the kubelet's --pod-max-pids (SANDMAN_PIDS_LIMIT is not applied here).
                "resources": {"limits": limits, "requests": dict(limits)},
                "securityContext": _security_context(),
                "volumeMounts": mounts,
                "readinessProbe": {
                    "tcpSocket": {"port": SSHD_PORT},
                    "periodSeconds": 2,
                    "failureThreshold": 1,
                },
            }
        ],
        "volumes": volumes,
    }
    if gpus:
        selector, tolerations = placement(settings.placements, gpu_model)
        if selector:
            spec["nodeSelector"] = selector
        if tolerations:
            spec["tolerations"] = tolerations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(launch.name),
            "namespace": namespace,
            "labels": {**labels(launch.labels), **SESSION_POD},
            "annotations": _annotations(launch),
        },
        "spec": spec,
    }


def _collapsed(networks: Sequence[Network]) -> tuple[Network, ...]:
    """The same addresses in the fewest networks (an ``except`` lists none twice)."""
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _egress_blocks(egress: Egress, extra_sealed: Sequence[Network]) -> list[dict[str, Any]]:
    """``ipBlock`` peers for the egress setting, with the sealed ranges cut out."""
    sealed = _collapsed((*PRIVATE, *extra_sealed))
    if egress.mode == "deny":
        return []
    if egress.mode == "allow":
        wanted: tuple[Network, ...] = (
            ipaddress.ip_network("0.0.0.0/0"),
            ipaddress.ip_network("::/0"),
        )
        inside = sealed
    else:  # named networks: the operator's choice, less what is sealed whatever it says
        wanted = egress.networks
        inside = _collapsed((*SEALED[4], *SEALED[6], *extra_sealed))
    blocks = []
    for network in wanted:
        if any(
            network.version == s.version and network.subnet_of(s)  # type: ignore[arg-type]
            for s in inside
        ):
            continue
        cut = sorted(
            {
                str(s)
                for s in inside
                if s.version == network.version and s != network and s.subnet_of(network)  # type: ignore[arg-type]
            }
        )
        block: dict[str, Any] = {"cidr": str(network)}
        if cut:
            block["except"] = cut
        blocks.append({"ipBlock": block})
    return blocks


def make_network_policies(namespace: str, settings: BuildOptions | None = None) -> list[Manifest]:
    """The session namespace's policies, enforced by the cluster's network plugin:

    - nothing in or out of any pod there, unless a policy below lets it;
    - in: only Sandman's own pods (the gateway to sshd, the API's proxy to the web
      apps), never another session;
    - out: DNS to the cluster's resolver pods (``k8s-app: kube-dns`` in any namespace;
      empty ``dns_pods``: no DNS), then the egress setting as on Docker, with private ranges
      (pods, services, nodes), link-local and metadata addresses and ``sealed`` (say,
      public pod or service ranges) cut out.
    """
    settings = settings or BuildOptions()
    policy_labels = {**PART_OF}
    if settings.deployment:
        policy_labels[DEPLOYMENT_LABEL] = label_value(settings.deployment)
    meta = {"namespace": namespace, "labels": policy_labels}

    def policy(name: str, spec: dict[str, Any]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": dns_label(f"{settings.prefix}-{name}"), **meta},
            "spec": spec,
        }

    sandman_peer = {
        "namespaceSelector": {"matchLabels": dict(settings.sandman_namespace)},
        "podSelector": {"matchLabels": dict(settings.sandman_pods)},
    }
    ports = [{"protocol": "TCP", "port": port} for port in (SSHD_PORT, *APP_PORTS)]
    rules: list[dict[str, Any]] = []
    if settings.dns_pods:
        dns = dict(settings.dns_pods)
        rules.append(
            {
                "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dns}}],
                "ports": [{"protocol": p, "port": 53} for p in ("UDP", "TCP")],
            }
        )
    blocks = _egress_blocks(settings.egress, settings.sealed)
    if blocks:
        rules.append({"to": blocks})
    return [
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "session-ingress",
            {
                "podSelector": {"matchLabels": dict(SESSION_POD)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [sandman_peer], "ports": ports}],
            },
        ),
        policy(
            "session-egress",
            {
                "podSelector": {"matchLabels": dict(SESSION_POD)},
                "policyTypes": ["Egress"],
                "egress": rules,
            },
        ),
    ]


def make_local_storage_class(name: str = "sandman-local") -> Manifest:
    """A class for static local volumes: bound when the pod is placed, kept after."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": dns_label(name), "labels": {**PART_OF}},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }


def make_local_pv(
    name: str, path: str, node: str, capacity: int | str, storage_class: str = "sandman-local"
) -> Manifest:
    """A static local PersistentVolume: a directory on one node (the test cluster's
    workspaces), pinned to that node, kept when its claim goes."""
    if not path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"a local volume's path must be absolute and plain, not {path!r}")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": dns_label(name), "labels": {**PART_OF}},
        "spec": {
            "capacity": {"storage": quantity(capacity)},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": dns_label(storage_class),
            "local": {"path": path},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


__all__ = [
    "APP_PORTS",
    "DEPLOYMENT_LABEL",
    "SESSION_LABEL",
    "BuildOptions",
    "Placement",
    "build_options",
    "claim_name",
    "cpu_quantity",
    "dns_label",
    "label_value",
    "make_local_pv",
    "make_local_storage_class",
    "make_network_policies",
    "make_pod",
    "make_pvc",
    "make_secret",
    "parse_quantity",
    "pod_name",
    "quantity",
    "secret_name",
    "validate_session_id",
]
