"""deploy/kubernetes, rendered by ``kubectl kustomize`` (base and overlays) and read
as objects: what is there, what Sandman may do, that nothing secret or pulled from a
registry is in it, and that it agrees with the settings and the session manifests.

Rendered with every kubectl found: the one on PATH, and the Kubernetes 1.20 one the
cluster tests build under /var/cache/sandman/kubernetes (its kustomize is v2.0.3,
hence ``bases`` and ``patchesStrategicMerge`` in the kustomizations). The API
server's own verdict (``--dry-run=server``) belongs to the cluster tests.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml
from tests.unit.deploy.dashboards import ROOT

from sandman.config import Settings
from sandman.runtime.kubernetes.manifests import BuildOptions

KUBERNETES = ROOT / "deploy" / "kubernetes"
TARGETS = {
    "base": KUBERNETES,
    "loadbalancer": KUBERNETES / "overlays" / "loadbalancer",
    "servicemonitor": KUBERNETES / "overlays" / "servicemonitor",
}
CACHED = "/var/cache/sandman/kubernetes/*/bin/kubectl"
BASE_KINDS = {
    ("Namespace", "sandman"),
    ("Namespace", "sandman-sessions"),
    ("ServiceAccount", "sandman"),
    ("Role", "sandman-sessions"),
    ("RoleBinding", "sandman-sessions"),
    ("ClusterRole", "sandman-nodes"),
    ("ClusterRoleBinding", "sandman-nodes"),
    ("ConfigMap", "sandman-config"),
    ("ConfigMap", "sandman-dashboard-fleet"),
    ("ConfigMap", "sandman-dashboard-gpus"),
    ("ConfigMap", "sandman-dashboard-usage"),
    ("PersistentVolumeClaim", "sandman-data"),
    ("Deployment", "sandman-api"),
    ("Deployment", "sandman-gateway"),
    ("Service", "sandman-api"),
    ("Service", "sandman-gateway"),
}
# The most Sandman may do with each resource of the session namespace.
ALLOWED_VERBS = {
    "pods": {"get", "list", "watch", "create", "delete"},
    "pods/exec": {"create", "get"},
    "pods/log": {"get"},
    "secrets": {"get", "list", "create", "delete"},
    "persistentvolumeclaims": {"get", "list", "watch", "create", "patch"},  # never delete
    "events": {"get", "list", "watch"},
    "networkpolicies": {"get", "list", "create", "update"},
}


def kubectls() -> list[str]:
    found = shutil.which("kubectl")
    assert found, "kubectl is missing: install Debian's kubernetes-client (or any kubectl)"
    return [found, *sorted(p for p in glob.glob(CACHED) if os.access(p, os.X_OK))]


@cache
def render(target: str, kubectl: str | None = None) -> tuple[dict[str, Any], ...]:
    argv = [kubectl or kubectls()[0], "kustomize", str(TARGETS[target])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_specs(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]


@pytest.mark.parametrize("kubectl", kubectls())
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_renders_with_every_kubectl(target: str, kubectl: str) -> None:
    objects = render(target, kubectl)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    extra = {"servicemonitor": {("ServiceMonitor", "sandman")}}.get(target, set())
    assert kinds == BASE_KINDS | extra


def test_the_role_is_least_privilege_in_the_session_namespace() -> None:
    objects = render("base")
    role = find(objects, "Role", "sandman-sessions")
    assert role["metadata"]["namespace"] == "sandman-sessions"
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert set(rule["apiGroups"]) <= {"", "networking.k8s.io"}, rule
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert set(granted) == set(ALLOWED_VERBS)
    for resource, verbs in granted.items():
        assert verbs <= ALLOWED_VERBS[resource], (resource, verbs - ALLOWED_VERBS[resource])
    assert "delete" not in granted["persistentvolumeclaims"]  # workspaces outlive sessions
    cluster = find(objects, "ClusterRole", "sandman-nodes")
    assert cluster["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    ]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        [binding] = [o for o in objects if o["kind"] == kind]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "sandman", "namespace": "sandman"}
        ]


def test_no_secret_is_rendered_and_the_template_holds_placeholders() -> None:
    for target in TARGETS:
        assert not [o for o in render(target) if o["kind"] == "Secret"]
    template = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    assert template["kind"] == "Secret" and "data" not in template
    assert all("CHANGE-ME" in value for value in template["stringData"].values())
    for spec in pod_specs(render("base")):
        [container] = spec["containers"]
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == [template["metadata"]["name"]]
        assert set(template["stringData"]) >= {"SANDMAN_DATABASE_URL"}


def test_images_are_local_never_from_a_registry_host() -> None:
    for target in TARGETS:
        for spec in pod_specs(render(target)):
            for container in spec["containers"] + spec.get("initContainers", []):
                image = container["image"]
                first = image.split("/")[0]
                assert "/" not in image or not ("." in first or ":" in first), image
                assert container["imagePullPolicy"] == "IfNotPresent", image
    dockerfile = (KUBERNETES / "image" / "Dockerfile").read_text()
    bases = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    # Both stages (the wheels' install, then the image) start from the workspace image.
    assert bases and set(bases) == {"sandman-workspace:latest"}  # built here by debootstrap


def test_sandman_pods_are_hardened() -> None:
    for spec in pod_specs(render("base")):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] == "sandman"
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True


def test_the_settings_name_real_fields_and_the_kubernetes_runtime() -> None:
    config = find(render("base"), "ConfigMap", "sandman-config")["data"]
    assert config["SANDMAN_RUNTIME"] == "kubernetes"
    fields = {f"SANDMAN_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields
    settings = Settings(**{k.removeprefix("SANDMAN_").lower(): v for k, v in config.items()})
    assert settings.runtime == "kubernetes"
    assert settings.kube_namespace == "sandman-sessions"


def test_the_session_policies_admit_exactly_sandmans_own_pods() -> None:
    """The network policies (``make_network_policies``) let in pods labelled like
    Sandman's Deployments, in a namespace labelled like Sandman's; sessions are not."""
    objects = render("base")
    options = BuildOptions()
    namespaces = {
        o["metadata"]["name"]: o["metadata"]["labels"] for o in objects if o["kind"] == "Namespace"
    }
    assert options.sandman_namespace.items() <= namespaces["sandman"].items()
    assert not options.sandman_namespace.items() <= namespaces["sandman-sessions"].items()
    for o in objects:
        if o["kind"] == "Deployment":
            labels = o["spec"]["template"]["metadata"]["labels"]
            assert options.sandman_pods.items() <= labels.items()
            assert o["metadata"]["namespace"] == "sandman"


def test_gateway_service_on_port_22_node_port_or_load_balancer() -> None:
    for target, kind in (("base", "NodePort"), ("loadbalancer", "LoadBalancer")):
        service = find(render(target), "Service", "sandman-gateway")
        assert service["spec"]["type"] == kind
        assert service["spec"]["ports"] == [
            {"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}
        ]


def test_the_service_monitor_scrapes_the_api_with_the_metrics_token() -> None:
    objects = render("servicemonitor")
    monitor = find(objects, "ServiceMonitor", "sandman")
    api = find(objects, "Service", "sandman-api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= api["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in api["spec"]["ports"]}
    assert endpoint["bearerTokenSecret"]["key"] == "SANDMAN_METRICS_TOKEN"


def test_the_dashboards_are_the_grafana_files() -> None:
    objects = render("base")
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        name = f"sandman-dashboard-{path.stem.removeprefix('sandman-')}"
        config = find(objects, "ConfigMap", name)
        assert config["metadata"]["namespace"] == "sandman"
        assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config["data"][path.name]) == json.loads(path.read_text())


def test_the_image_build_script_is_valid_bash() -> None:
    script = KUBERNETES / "image" / "build.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_field_is_one_the_api_knows(target: str) -> None:
    """Through the official client's models and back: a misspelt or misplaced field
    would be dropped on the way. (The ServiceMonitor is a custom resource.)"""
    from kubernetes.client import ApiClient

    client = ApiClient()
    for manifest in render(target):
        if manifest["kind"] == "ServiceMonitor":
            continue
        typed = client._ApiClient__deserialize(manifest, f"V1{manifest['kind']}")  # type: ignore[attr-defined]
        assert client.sanitize_for_serialization(typed) == manifest, manifest["metadata"]
