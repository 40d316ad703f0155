"""deploy/kubernetes against the real API server: what ``kubectl kustomize`` renders
(the base and the load-balancer overlay) passes the server's own validation and
admission (``--dry-run=server``), and the Role it grants, once applied, lets Sandman
do exactly what a session needs in the session namespace and nothing more."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.kubernetes.cluster import LocalCluster

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
ACCOUNT = "system:serviceaccount:sandman:sandman"
SESSIONS = "sandman-sessions"


def render(cluster: LocalCluster, target: Path) -> list[dict[str, Any]]:
    """The objects the cluster's own kubectl (1.20's kustomize) renders."""
    rendered = cluster.kubectl("kustomize", str(target)).stdout
    return [o for o in yaml.safe_load_all(rendered) if o]


def stream(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


@pytest.fixture(scope="module")
def namespaces(cluster: LocalCluster) -> Iterator[list[dict[str, Any]]]:
    """The base's namespaces, created for real: namespaced objects can only be
    dry-run into a namespace that exists. Deleted afterwards with all they hold."""
    objects = [o for o in render(cluster, DEPLOY) if o["kind"] == "Namespace"]
    assert {o["metadata"]["name"] for o in objects} == {"sandman", SESSIONS}
    cluster.kubectl("apply", "-f", "-", input=stream(objects))
    try:
        yield objects
    finally:
        names = [o["metadata"]["name"] for o in objects]
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", "sandman-nodes",
                        check=False)  # fmt: skip
        cluster.kubectl("delete", "namespace", *names, "--wait=true", check=False, timeout=180)


@pytest.mark.parametrize("target", ["", "overlays/loadbalancer"])
def test_the_rendered_objects_pass_the_api_servers_dry_run(
    cluster: LocalCluster, namespaces: list[dict[str, Any]], target: str
) -> None:
    objects = [o for o in render(cluster, DEPLOY / target) if o["kind"] != "Namespace"]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "Role", "ClusterRole"} <= kinds, kinds
    done = cluster.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=stream(objects), check=False
    )
    assert done.returncode == 0, done.stderr
    accepted = json.loads(done.stdout)
    items = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects
    )
    # the server filled in its defaults: it really validated them, it did not echo them
    for deployment in (o for o in items if o["kind"] == "Deployment"):
        assert deployment["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    # and nothing was created
    listed = cluster.kubectl("get", "deployments", "-n", "sandman", "-o", "json").stdout
    assert json.loads(listed)["items"] == []


def test_a_broken_object_is_refused_by_the_same_dry_run(
    cluster: LocalCluster, namespaces: list[dict[str, Any]]
) -> None:
    objects = render(cluster, DEPLOY)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = -1
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=stream([deployment]), check=False
    )
    assert refused.returncode != 0 and "replicas" in refused.stderr, refused.stderr


def test_the_role_grants_sessions_and_nothing_more(
    cluster: LocalCluster, namespaces: list[dict[str, Any]]
) -> None:
    rbac = [
        o
        for o in render(cluster, DEPLOY)
        if o["kind"]
        in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    ]
    cluster.kubectl("apply", "-f", "-", input=stream(rbac))

    def can(verb: str, resource: str, namespace: str | None = SESSIONS) -> bool:
        where = ["-n", namespace] if namespace else []
        answer = cluster.kubectl("auth", "can-i", verb, resource, *where, f"--as={ACCOUNT}",
                                 check=False)  # fmt: skip
        assert answer.stdout.strip() in ("yes", "no"), answer.stderr
        return answer.stdout.strip() == "yes"

    for verb, resource in [
        ("create", "pods"),
        ("delete", "pods"),
        ("watch", "pods"),
        ("create", "pods/exec"),
        ("get", "pods/log"),
        ("create", "secrets"),
        ("delete", "secrets"),
        ("create", "persistentvolumeclaims"),
        ("patch", "persistentvolumeclaims"),
        ("list", "events"),
        ("create", "networkpolicies.networking.k8s.io"),
    ]:
        assert can(verb, resource), f"Sandman may not {verb} {resource}"
    assert can("list", "nodes", None)
    refused = [
        ("delete", "persistentvolumeclaims", SESSIONS),  # workspaces are never deleted
        ("create", "pods", "default"),
        ("create", "pods", "sandman"),
        ("get", "secrets", "sandman"),  # not even its own database secret
        ("create", "deployments.apps", SESSIONS),
        ("update", "roles.rbac.authorization.k8s.io", SESSIONS),
        ("create", "rolebindings.rbac.authorization.k8s.io", SESSIONS),
        ("patch", "nodes", None),
        ("delete", "nodes", None),
        ("create", "persistentvolumes", None),
        ("impersonate", "users", None),
    ]
    for verb, resource, namespace in refused:
        assert not can(verb, resource, namespace), f"Sandman may {verb} {resource} in {namespace}"
