"""The Kubernetes manifests, compared as dicts (no cluster)."""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandman.domain import USER_ID_PATTERN
from sandman.errors import InvalidRequest
from sandman.runtime.base import GpuGrant, SessionFile, SessionLaunch, Workspace
from sandman.runtime.egress import parse_egress
from sandman.runtime.kubernetes.manifests import (
    BuildOptions,
    Placement,
    build_options,
    claim_name,
    cpu_quantity,
    dns_label,
    label_value,
    make_local_pv,
    make_local_storage_class,
    make_network_policies,
    make_pod,
    make_pvc,
    make_secret,
    parse_quantity,
    pod_name,
    quantity,
    secret_name,
)
from sandman.services.container_spec import SessionContainer, session_launch

SID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


PLACED = BuildOptions(
    storage_class="local",
    placements={"A100": Placement({"pool": "a100"}, (TOLERATION,))},
    egress=parse_egress("10.20.0.0/16,0.0.0.0/0"),
)


def _launch(**overrides: object) -> SessionLaunch:
    values: dict[str, object] = {
        "session_id": SID, "user_id": "alice", "uid": 20001, "gid": 20002,
        "image": "sandman-workspace:latest", "name": "sandman-alice",
        "deployment_id": "dep1", "host_port": None,
        "cpus": 2.0, "memory": "8g", "pids_limit": 1024, "shm_size": "2g",
        "gpu_uuids": ("MIG-1234",), "mig_profile": "1g.5gb", "real_gpus": False,
        "authorized_keys": ("ssh-ed25519 AAAA alice",), "host_key": ("PRIVATE", "PUBLIC"),
    }  # fmt: skip
    values.update(overrides)
    return session_launch(SessionContainer(**values))  # type: ignore[arg-type]


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def test_the_pod_is_hardened_and_runs_as_the_user() -> None:
    pod = make_pod(_launch(), "sessions")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["name"] == "sandman-alice"
    assert pod["metadata"]["namespace"] == "sessions"
    spec = pod["spec"]
    assert spec["securityContext"] == {
        "runAsUser": 20001,
        "runAsGroup": 20002,
        "runAsNonRoot": True,
        "fsGroup": 20002,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = _container(pod)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": False,
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["shareProcessNamespace"] is True  # pause reaps orphans, as --init does
    assert spec["restartPolicy"] == "Never"
    assert spec["hostname"] == "alice"
    assert container["command"] == ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/sandman/sshd_config"]
    assert container["ports"] == [{"name": "ssh", "containerPort": 2222, "protocol": "TCP"}]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_limits_requests_shm_and_the_mig_resource() -> None:
    pod = make_pod(_launch(cpus=1.5), "sessions")
    resources = _container(pod)["resources"]
    expected = {"cpu": "1500m", "memory": "8Gi", "nvidia.com/mig-1g.5gb": "1"}
    assert resources == {"limits": expected, "requests": expected}
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["spec"][
        "volumes"
    ]
    assert {"name": "shm", "mountPath": "/dev/shm"} in _container(pod)["volumeMounts"]


def test_whole_gpus_and_no_gpu() -> None:
    launch = replace(_launch(), gpu=GpuGrant(("GPU-a", "GPU-b")))
    limits = _container(make_pod(launch, "s"))["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}
    bare = make_pod(_launch(gpu_uuids=(), mig_profile=None), "s")
    assert _container(bare)["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    env = {e["name"]: e["value"] for e in _container(bare)["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # no GPU, even from a CUDA image's ENV


def test_the_device_plugin_not_sandman_names_the_devices() -> None:
    env = {e["name"]: e["value"] for e in _container(make_pod(_launch(), "s"))["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert env["SANDMAN_SESSION_ID"] == SID and env["HOME"] == "/workspace"


def test_a_mig_profile_that_cannot_name_a_resource_is_refused() -> None:
    launch = replace(_launch(), gpu=GpuGrant(("MIG-1",), mig_profile="1g/5gb"))
    with pytest.raises(InvalidRequest, match="cannot name a Kubernetes resource"):
        make_pod(launch, "s")


def test_placement_follows_the_gpu_model() -> None:
    options = BuildOptions(
        placements={"A100": Placement({"nvidia.com/gpu.product": "A100"}, (TOLERATION,))}
    )
    spec = make_pod(_launch(), "s", options, gpu_model="A100")["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert spec["tolerations"] == [TOLERATION]
    other = make_pod(_launch(), "s", options, gpu_model="H100")["spec"]
    assert "nodeSelector" not in other and "tolerations" not in other
    every = {"*": Placement({"pool": "gpu", "zone": "a"}), **options.placements}
    spec = make_pod(_launch(), "s", BuildOptions(placements=every), gpu_model="A100")["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu", "zone": "a", "nvidia.com/gpu.product": "A100"}
    spec = make_pod(_launch(), "s", BuildOptions(placements=every), gpu_model="H100")["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    no_gpu = make_pod(_launch(gpu_uuids=(), mig_profile=None), "s", options, "A100")["spec"]
    assert "nodeSelector" not in no_gpu


def test_labels_are_escaped_and_annotations_keep_the_originals() -> None:
    pod = make_pod(_launch(user_id="_bob", name="sandman-_bob"), "s")
    labels = pod["metadata"]["labels"]
    assert labels["sandman.session_id"] == SID
    assert labels["sandman.managed"] == "true"
    assert labels["sandman.deployment"] == "dep1"
    assert labels["sandman.user_id"] != "_bob" and LABEL_VALUE.match(labels["sandman.user_id"])
    assert pod["metadata"]["annotations"]["sandman.user_id"] == "_bob"
    assert pod["metadata"]["annotations"]["sandman.name"] == "sandman-_bob"
    assert DNS_LABEL.match(pod["metadata"]["name"])


def test_the_secret_holds_the_files_mounted_with_their_modes() -> None:
    launch = _launch(apps_secret="s3cret")
    secret = make_secret(launch, "sessions")
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert secret["metadata"]["name"] == f"sandman-files-{SID}"
    assert secret["immutable"] is True
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["f0-ssh_host_ed25519_key"] == "PRIVATE"
    assert decoded["f2-authorized_keys"] == "ssh-ed25519 AAAA alice\n"
    pod = make_pod(launch, "sessions")
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "files"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    modes = {i["key"]: i["mode"] for i in volume["secret"]["items"]}
    assert set(modes) == set(secret["data"])
    assert modes["f0-ssh_host_ed25519_key"] == 0o640  # root:gid, read by the user's group
    assert modes["f4-apps_token"] == 0o640
    assert modes["f5-passwd"] == 0o644
    mounts = {m["mountPath"]: m for m in _container(pod)["volumeMounts"] if m["name"] == "files"}
    assert mounts["/etc/passwd"] == {
        "name": "files",
        "mountPath": "/etc/passwd",
        "subPath": "f5-passwd",
        "readOnly": True,
    }
    assert set(mounts) == {f.path for f in launch.files}


def test_a_root_only_file_is_refused_not_exposed_to_the_group() -> None:
    launch = replace(_launch(), files=(SessionFile("/etc/shadow", "x", 0o600),))
    with pytest.raises(ValueError, match="readable by the user's group"):
        make_pod(launch, "s")


def test_a_file_path_that_climbs_out_is_refused() -> None:
    launch = replace(_launch(), files=(SessionFile("/etc/../x", "x"),))
    with pytest.raises(ValueError, match="absolute and plain"):
        make_secret(launch, "s")


def test_the_workspace_claim() -> None:
    workspace = Workspace("alice", 20001, 20001, quota_bytes=50 * 2**30)
    claim = make_pvc(workspace, "sessions", BuildOptions(storage_class="sandman-local"))
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "sandman-workspace-alice",
            "namespace": "sessions",
            "labels": {"sandman.managed": "true", "sandman.user_id": "alice"},
            "annotations": {"sandman.user_id": "alice", "sandman.workspace": "keep"},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "50Gi"}},
            "storageClassName": "sandman-local",
        },
    }
    default = make_pvc(Workspace("alice", 20001, 20001), "sessions")
    assert default["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in default["spec"]  # the cluster's default class
    assert "sandman.session_id" not in default["metadata"]["labels"]  # no session cleanup
    pod = make_pod(_launch(), "sessions")
    assert {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": "sandman-workspace-alice"},
    } in pod["spec"]["volumes"]


def test_invalid_ids_are_domain_errors() -> None:
    with pytest.raises(InvalidRequest, match="session id"):
        secret_name("../etc")
    with pytest.raises(InvalidRequest, match="session id"):
        make_pod(_launch(session_id="S1_"), "s")
    with pytest.raises(InvalidRequest, match="user_id"):
        claim_name("Alice!")
    with pytest.raises(InvalidRequest, match="never runs as root"):
        make_pod(replace(_launch(), workspace=Workspace("alice", 0, 0)), "s")


def test_names_kept_when_valid_and_rewritten_apart_otherwise() -> None:
    assert dns_label("sandman-alice") == "sandman-alice"
    assert pod_name("sandman-_alice") == dns_label("sandman-_alice")
    rewritten = {dns_label(t) for t in ("a_b", "a-b_", "A-b", "a--b", "a.b")}
    assert len(rewritten) == 5 and "a-b" not in rewritten
    assert all("--" in name for name in rewritten)
    assert label_value("Alice_1") == "Alice_1"
    assert label_value("_x") != label_value("x_") and "--" in label_value("_x")


def test_quantities() -> None:
    assert quantity("2g") == "2Gi" and quantity("64m") == "64Mi" and quantity(1000) == "1000"
    assert cpu_quantity(4.0) == "4" and cpu_quantity(0.25) == "250m"
    assert parse_quantity("10Gi") == 10 * 2**30
    assert parse_quantity("1500M") == 1_500_000_000
    assert parse_quantity("123") == 123 and parse_quantity("0.5Ki") == 512
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("ten")


def _policies(egress: str, **options: Any) -> dict[str, dict[str, Any]]:
    built = make_network_policies("sessions", BuildOptions(egress=parse_egress(egress), **options))
    assert all(p["apiVersion"] == "networking.k8s.io/v1" for p in built)
    return {p["metadata"]["name"]: p["spec"] for p in built}


def test_network_policies_default_deny_and_ingress_from_sandman_only() -> None:
    policies = _policies("allow")
    assert policies["sandman-default-deny"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert policies["sandman-session-ingress"] == {
        "podSelector": {"matchLabels": {"sandman.managed": "true"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"sandman.role": "control"}},
                        "podSelector": {"matchLabels": {"sandman.role": "control"}},
                    }
                ],
                "ports": [
                    {"protocol": "TCP", "port": 2222},
                    {"protocol": "TCP", "port": 8888},
                    {"protocol": "TCP", "port": 8889},
                ],
            }
        ],
    }


DNS_RULE = {
    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def test_egress_allow_is_the_internet_less_private_ranges_and_metadata() -> None:
    egress = _policies("allow")["sandman-session-egress"]["egress"]
    assert egress[0] == DNS_RULE
    v4, v6 = egress[1]["to"]
    assert v4["ipBlock"] == {
        "cidr": "0.0.0.0/0",
        "except": [
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ],
    }
    assert v6["ipBlock"] == {"cidr": "::/0", "except": ["::1/128", "fc00::/7", "fe80::/10"]}


def test_egress_deny_is_dns_only_and_networks_are_cut_around_metadata() -> None:
    assert _policies("deny")["sandman-session-egress"]["egress"] == [DNS_RULE]
    egress = _policies("10.20.0.0/16,169.254.169.0/24,0.0.0.0/0")["sandman-session-egress"]
    assert egress["egress"][1]["to"] == [
        {"ipBlock": {"cidr": "10.20.0.0/16"}},  # a site's mirror: the operator's choice
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["100.100.100.200/32", "169.254.0.0/16"]}},
    ]  # the link-local network is dropped: sealed whatever the setting says
    public_pods = (ipaddress.ip_network("198.51.100.0/24"),)
    allow = _policies("allow", sealed=public_pods, dns_pods={})["sandman-session-egress"]
    assert len(allow["egress"]) == 1  # no DNS rule
    assert "198.51.100.0/24" in allow["egress"][0]["to"][0]["ipBlock"]["except"]


def test_local_volumes_for_the_test_cluster() -> None:
    pv = make_local_pv("ws-1", "/var/lib/sandman/pv/1", "node-a", "20g")
    assert pv["kind"] == "PersistentVolume"
    assert pv["spec"]["local"] == {"path": "/var/lib/sandman/pv/1"}
    assert pv["spec"]["capacity"] == {"storage": "20Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["storageClassName"] == "sandman-local"
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}
            ]
        }
    ]
    cls = make_local_storage_class()
    assert cls["provisioner"] == "kubernetes.io/no-provisioner"
    assert cls["volumeBindingMode"] == "WaitForFirstConsumer"
    with pytest.raises(ValueError, match="absolute"):
        make_local_pv("ws-2", "relative", "node-a", "1g")


user_ids = st.from_regex(USER_ID_PATTERN, fullmatch=True).filter(
    lambda u: u not in {"root", "nobody", "daemon"}
)


@given(st.text(min_size=1, max_size=120))
def test_any_text_becomes_a_valid_name_and_label_value(text: str) -> None:
    name = dns_label(text)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value


@given(user_ids, user_ids)
def test_two_users_never_share_a_claim_or_a_label(a: str, b: str) -> None:
    try:
        first, second = claim_name(a), claim_name(b)
    except InvalidRequest:  # reserved names
        return
    assert DNS_LABEL.match(first) and len(first) <= 63
    assert (first == second) == (a == b)
    assert (label_value(a) == label_value(b)) == (a == b)


@given(user_ids, st.uuids())
def test_generated_pods_have_valid_names_and_labels(user_id: str, session_id: object) -> None:
    try:
        launch = _launch(user_id=user_id, name=f"sandman-{user_id}", session_id=str(session_id))
        pod = make_pod(launch, "sessions")
    except (InvalidRequest, ValueError):  # reserved names; names passwd refuses
        return
    meta = pod["metadata"]
    assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63
    assert DNS_LABEL.match(pod["spec"]["hostname"])
    assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values())
    for volume in pod["spec"]["volumes"]:
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        secret = volume.get("secret", {}).get("secretName")
        for name in filter(None, (claim, secret)):
            assert DNS_LABEL.match(name) and len(name) <= 63


def test_options_from_the_settings() -> None:
    from sandman.config import Settings

    settings = Settings(
        container_prefix="lab",
        kube_storage_class="fast",
        kube_workspace_size="20Gi",
        kube_node_selectors={"*": {"pool": "gpu"}, "A100": {"gpu": "a100"}},
        kube_tolerations=[TOLERATION],
        egress="deny",
        stop_grace_period=7.0,
    )
    options = build_options(settings, "dep1")
    assert options.prefix == "lab" and options.storage_class == "fast"
    assert options.workspace_size == 20 * 2**30 and options.grace_seconds == 7
    assert options.egress.mode == "deny"
    spec = make_pod(_launch(), "s", options, gpu_model="A100")["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu", "gpu": "a100"}
    assert spec["tolerations"] == [TOLERATION]
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "lab-workspace-alice"
    [policy, *_] = make_network_policies("s", options)
    assert policy["metadata"]["labels"]["sandman.deployment"] == "dep1"
    assert build_options(Settings(kube_workspace_size="5g")).workspace_size == 5 * 2**30
    assert build_options(Settings()).storage_class is None


@pytest.mark.parametrize(
    ("build", "model"),
    [
        (lambda: make_pod(_launch(apps_secret="x"), "s", PLACED, "A100"), "V1Pod"),
        (lambda: make_secret(_launch(), "s"), "V1Secret"),
        (
            lambda: make_pvc(Workspace("alice", 20001, 20001), "s", PLACED),
            "V1PersistentVolumeClaim",
        ),
        (lambda: make_local_pv("ws-1", "/srv/pv/1", "node-a", "1g"), "V1PersistentVolume"),
        (make_local_storage_class, "V1StorageClass"),
        *((lambda i=i: make_network_policies("s", PLACED)[i], "V1NetworkPolicy") for i in range(3)),
    ],
)
def test_every_field_is_one_the_api_knows(build: Any, model: str) -> None:
    """Through the official client's models and back: a misspelt or misplaced field
    would be dropped on the way (the models know every field of the API)."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    manifest = build()
    typed = client._ApiClient__deserialize(manifest, model)  # type: ignore[attr-defined]
    assert client.sanitize_for_serialization(typed) == manifest
