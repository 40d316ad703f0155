"""A private Prometheus and Alertmanager for the monitoring tests, on 127.0.0.1 ports
of their own, with deploy/'s configuration adapted to the test: the targets, the
token files and the intervals change; the rules and routing stay as shipped."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.integration.support import free_port

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"{names[0]} is missing: run scripts/setup.sh --for-tests")


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not get ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, argv: list[str], url: str, workdir: Path) -> Service:
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    service = Service(name, url, process, log)
    service.wait_ready()
    return service


def alertmanager(workdir: Path, sandman_url: str, alerts_token: str) -> Service:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    hook = config["receivers"][0]["webhook_configs"][0]
    hook["url"] = f"{sandman_url}/api/v1/alerts/webhook"
    token = workdir / "alerts_token"
    token.write_text(alerts_token)
    hook["http_config"]["authorization"]["credentials_file"] = str(token)
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={path}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return start("alertmanager", argv, f"http://127.0.0.1:{port}", workdir)


def prometheus(
    workdir: Path, sandman_url: str, alertmanager_url: str, extra_rules: dict[str, Any]
) -> Service:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    extra = workdir / "extra-rules.yml"
    extra.write_text(yaml.safe_dump(extra_rules))
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml"), str(extra)]
    am = alertmanager_url.removeprefix("http://")
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [am]
    (workdir / "secrets").mkdir(exist_ok=True)
    (workdir / "secrets" / "metrics_token").write_text("metrics-token")
    port = free_port()
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "sandman":
            job["scrape_interval"] = "1s"
            job["static_configs"][0]["targets"] = [sandman_url.removeprefix("http://")]
            jobs.append(job)
    config["scrape_configs"] = jobs
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    argv = [
        binary("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return start("prometheus", argv, f"http://127.0.0.1:{port}", workdir)


def query(service: Service, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{service.url}/api/v1/query", params={"query": expr}, timeout=30)
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
