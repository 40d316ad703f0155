"""The deploy/ stack: Prometheus' configuration and rules (checked and unit-tested by
``promtool``), Alertmanager's (``amtool``), the Grafana dashboards' queries (parsed
by ``promtool`` as recording rules), the compose files (``docker-compose config``,
which pulls nothing) and the systemd unit (``systemd-analyze verify``).

``scripts/setup.sh --for-tests`` installs promtool, amtool and docker-compose, so a
missing one is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.unit.deploy.dashboards import ROOT, dashboards, panel_queries, recording_rules

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
AUDIENCES = {"user", "admins", "both"}
SEVERITIES = {"info", "warning", "critical"}


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: run scripts/setup.sh --for-tests (make test does)"
    return found


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def alert_rules() -> list[dict[str, object]]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [rule for rule in group["rules"] if "alert" in rule]
    return found


def test_prometheus_configuration_checks(tmp_path: Path) -> None:
    """As compose mounts it: the configuration, its rules, and the token file beside it."""
    shutil.copy(PROMETHEUS / "prometheus.yml", tmp_path)
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "metrics_token").write_text("token")
    out = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out and "rules found" in out


def test_rules_check() -> None:
    out = run(tool("promtool"), "check", "rules", *map(str, RULES))
    assert "SUCCESS" in out


def test_rules_unit_tests_pass() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yaml"))
    assert tests
    run(tool("promtool"), "test", "rules", *(t.name for t in tests), cwd=PROMETHEUS / "tests")


def test_every_alert_has_a_unit_test() -> None:
    tested = set()
    for path in (PROMETHEUS / "tests").glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            checks = case.get("alert_rule_test", [])
            tested |= {check["alertname"] for check in checks if check["exp_alerts"]}
    assert {rule["alert"] for rule in alert_rules()} == tested


def test_every_alert_says_who_hears_of_it_and_why() -> None:
    """Sandman's webhook routes by ``audience``; the notice's text is the summary and
    the description."""
    for rule in alert_rules():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels.get("audience") in AUDIENCES, rule["alert"]
        assert labels.get("severity") in SEVERITIES, rule["alert"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_the_seed_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert "> 85" in str(rules["GpuOverheating"]["expr"])
    assert rules["GpuOverheating"]["for"] == "5m"
    assert "> 95" in str(rules["GpuHighUtilisation"]["expr"])
    assert rules["GpuHighUtilisation"]["for"] == "10m"


def test_alertmanager_configuration_checks() -> None:
    out = run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in out
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"].endswith("/api/v1/alerts/webhook")
    assert hook["http_config"]["authorization"]["credentials_file"]


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    rules = tmp_path / "panels.yml"
    rules.write_text(yaml.safe_dump(recording_rules(queries)))
    out = run(tool("promtool"), "check", "rules", str(rules))
    assert f"{len(queries)} rules found" in out


def test_dashboards_are_provisioned_against_the_provisioned_data_source() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "sandman.yml").read_text())
    uid = source["datasources"][0]["uid"]
    provider = yaml.safe_load((provisioning / "dashboards" / "sandman.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{path}:ro" in mounts
    boards = dashboards()
    assert {"sandman-fleet.json", "sandman-gpus.json", "sandman-usage.json"} <= set(boards)
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for name, board in boards.items():
        panels = board["panels"]
        assert isinstance(panels, list)
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), name
        for panel in panels:
            assert panel["datasource"]["uid"] == uid, (name, panel["title"])


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    return [tool("docker-compose")]


@pytest.mark.parametrize("gpu", [False, True], ids=["simulated", "gpu"])
def test_compose_file_is_valid(gpu: bool) -> None:
    compose = DEPLOY / "compose"
    files = ["-f", "compose.yaml"] + (["-f", "compose.gpu.yaml"] if gpu else [])
    env = {
        "PATH": os.environ["PATH"],
        "SANDMAN_ADMIN_TOKEN": "admin",
        "SANDMAN_METRICS_TOKEN": "metrics",
        "SANDMAN_ALERTS_TOKEN": "alerts",
        "GRAFANA_ADMIN_PASSWORD": "grafana",
    }
    out = run(*compose_command(), "-p", "sandman", *files, "config", cwd=compose, env=env)
    config = yaml.safe_load(out)
    assert set(config["services"]) == {"sandman", "prometheus", "alertmanager", "grafana"}
    for name, service in config["services"].items():
        image = service["image"]
        first = image.split("/")[0]
        assert "/" not in image or not ({".", ":"} & set(first)), (
            f"{name}: {image} names a registry host; the site's engine decides where from"
        )
    backend = config["services"]["sandman"]["environment"]["SANDMAN_GPU_BACKEND"]
    assert backend == ("nvml" if gpu else "simulated")


def test_compose_refuses_to_start_without_its_secrets() -> None:
    done = subprocess.run(
        [*compose_command(), "-p", "sandman", "-f", "compose.yaml", "config"],
        cwd=DEPLOY / "compose",
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "SANDMAN_ADMIN_TOKEN" in done.stderr + done.stdout


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit, its ExecStart pointed at a program that
    exists here (the real one is installed on the server)."""
    unit = (DEPLOY / "systemd" / "sandman.service").read_text()
    assert "ExecStart=/opt/sandman/venv/bin/sandman serve" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    copy = tmp_path / "sandman.service"
    copy.write_text(unit.replace("/opt/sandman/venv/bin/sandman", "/bin/true"))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "sandman.service" in line and "docker.service" not in line
    ]
    assert not problems, problems
