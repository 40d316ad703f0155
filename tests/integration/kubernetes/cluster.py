"""A real Kubernetes control plane and node on this machine, for the tests.

Everything listens on 127.0.0.1 and lives under one directory:

- etcd (Debian's ``etcd-server``);
- kube-apiserver, kube-scheduler, kube-controller-manager and kubelet, built from
  Debian's ``kubernetes`` source package by ``scripts/kube-build.sh`` (cached by
  version outside the repository);
- a private ``dockerd`` (its own data root, exec root, socket and bridge, no
  iptables rules of its own) that the kubelet's dockershim runs pods on, so the
  cluster never touches the Docker engine the other tests share;
- the ``pause`` image, built from the source tree's ``pause.c`` (no registry).

Certificates come from a CA made for the run. The test client authenticates with a
static token in ``system:masters``; the kubelet as ``system:node:<name>``; the
API server to the kubelet with a client certificate. The node advertises
simulated MIG devices as extended resources through its status, as Kubernetes
documents for extended resources.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = ROOT / "scripts" / "kube-build.sh"
PAUSE_IMAGE = "sandman-pause:3.2"
NODE_NAME = "sandman-node-0"
BRIDGE = "sk8s0"
BRIDGE_CIDR = "10.213.0.1/24"
# The kubelet refuses a loopback node address; the node is the host on its pods' bridge.
NODE_IP = BRIDGE_CIDR.split("/")[0]


RUNC_WRAPPER = """#!{python}
import json, os, sys

args = sys.argv[1:]
if "--bundle" in args:
    config = os.path.join(args[args.index("--bundle") + 1], "config.json")
    with open(config) as f:
        spec = json.load(f)
    process = spec.get("process") or {{}}
    if process.get("oomScoreAdj", 0) < 0:
        process["oomScoreAdj"] = 0
        with open(config, "w") as f:
            json.dump(spec, f)
os.execv("{runc}", ["runc", *args])
"""


class ClusterUnavailable(RuntimeError):
    """The cluster could not be built or started here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_binaries() -> Path:
    """Run the build script (a no-op when the cache is complete); the bin directory."""
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise ClusterUnavailable(f"scripts/kube-build.sh failed: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- certificates
@dataclass
class _Pki:
    directory: Path
    ca_key: rsa.RSAPrivateKey = field(init=False)
    ca_cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandman-test-ca")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self._write("ca", self.ca_key, self.ca_cert)

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def _write(self, name: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        (self.directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        os.chmod(self.directory / f"{name}.key", 0o600)
        (self.directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, common_name: str, orgs: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> tuple[Path, Path]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        if ips:
            sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(common_name)]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        self._write(name, key, cert)
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def service_account_keys(self) -> tuple[Path, Path]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = self.directory / "sa.key"
        public = self.directory / "sa.pub"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        os.chmod(private, 0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return private, public


def kubeconfig(
    server: str,
    ca: Path,
    *,
    token: str | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> str:
    user: dict[str, str] = {}
    if token:
        user["token"] = token
    if cert and key:
        user["client-certificate"] = str(cert)
        user["client-key"] = str(key)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
        "current-context": "local",
    }
    return json.dumps(doc, indent=1)


# ---------------------------------------------------------------------- cluster
@dataclass
class LocalCluster:
    """A running control plane and node; ``stop()`` removes everything it made."""

    directory: Path
    bin_dir: Path
    server: str = ""
    admin_token: str = ""
    docker_host: str = ""
    kubeconfig_path: Path = Path()
    node_name: str = NODE_NAME
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # ------------------------------------------------------------- life cycle
    def start(self, mig_resources: Mapping[str, int] | None = None) -> None:
        try:
            self._start(mig_resources or {})
        except BaseException:
            self.stop()
            raise

    def _start(self, mig_resources: Mapping[str, int]) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        pki = _Pki(d / "pki")
        self._start_dockerd()
        self._load_images()

        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "etcd",
                "--name",
                "sandman-test",
                "--data-dir",
                str(d / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"sandman-test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ],
        )
        self._wait_http(f"http://127.0.0.1:{etcd_port}/health", "etcd")

        api_port = free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        serving = pki.issue("apiserver", "kube-apiserver", ips=("127.0.0.1", "10.96.0.1"))
        kubelet_client = pki.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
        )
        sa_key, sa_pub = pki.service_account_keys()
        self.admin_token = secrets.token_hex(24)
        controller_token, scheduler_token = secrets.token_hex(24), secrets.token_hex(24)
        (d / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f"{controller_token},system:kube-controller-manager,controller-manager\n"
            f"{scheduler_token},system:kube-scheduler,scheduler\n"
        )
        os.chmod(d / "tokens.csv", 0o600)
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--insecure-port=0",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={pki.ca_path}",
                f"--token-auth-file={d / 'tokens.csv'}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=false",
                f"--kubelet-client-certificate={kubelet_client[0]}",
                f"--kubelet-client-key={kubelet_client[1]}",
                f"--kubelet-certificate-authority={pki.ca_path}",
                "--kubelet-preferred-address-types=InternalIP",
                "--endpoint-reconciler-type=none",
            ],
        )
        self.kubeconfig_path = d / "admin.kubeconfig"
        self.kubeconfig_path.write_text(
            kubeconfig(self.server, pki.ca_path, token=self.admin_token)
        )
        os.chmod(self.kubeconfig_path, 0o600)
        self._wait_api(pki.ca_path)

        cm_config = d / "controller-manager.kubeconfig"
        cm_config.write_text(kubeconfig(self.server, pki.ca_path, token=controller_token))
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                "--bind-address=127.0.0.1",
                "--port=0",
                "--secure-port=0",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={pki.ca_path}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--controllers=*,-csrsigning,-csrapproving,-nodeipam,-cloud-node-lifecycle",
            ],
        )
        sched_config = d / "scheduler.kubeconfig"
        sched_config.write_text(kubeconfig(self.server, pki.ca_path, token=scheduler_token))
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                "--bind-address=127.0.0.1",
                "--port=0",
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )
        self._start_kubelet(pki)
        self._wait_node_ready()
        if mig_resources:
            self.advertise(mig_resources)

    def _start_kubelet(self, pki: _Pki) -> None:
        d = self.directory / "kubelet"
        d.mkdir(parents=True, exist_ok=True)
        cert, key = pki.issue("kubelet-client", f"system:node:{self.node_name}", ("system:nodes",))
        serving = pki.issue("kubelet-serving", self.node_name, ips=(NODE_IP,))
        config = d / "kubelet.kubeconfig"
        config.write_text(kubeconfig(self.server, pki.ca_path, cert=cert, key=key))
        port = free_port()
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(serving[0]),
            "tlsPrivateKeyFile": str(serving[1]),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki.ca_path)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "podPidsLimit": 4096,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            "maxPods": 64,
            # The API request rate of Kubernetes 1.27 and later (1.20's 5/10 makes a
            # burst of pods wait seconds for their status to reach the API server).
            "kubeAPIQPS": 50,
            "kubeAPIBurst": 100,
        }
        (d / "config.json").write_text(json.dumps(kubelet_config))
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={d / 'config.json'}",
                f"--kubeconfig={config}",
                "--container-runtime=docker",
                f"--docker-endpoint={self.docker_host}",
                f"--pod-infra-container-image={PAUSE_IMAGE}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={d / 'root'}",
                f"--cert-dir={d / 'pki'}",
                "--register-node=true",
                "--v=1",
            ],
        )

    def stop(self) -> None:
        """Stop the node first (its pods go with the private engine), then the rest."""
        for name in (
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ):
            proc = self.processes.pop(name, None)
            if proc is not None:
                _terminate(proc)
        self._stop_dockerd()
        kubelet_root = self.directory / "kubelet" / "root"
        if kubelet_root.exists():
            _unmount_below(kubelet_root)

    # ---------------------------------------------------------------- pieces
    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - kept open by the child
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.directory / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise ClusterUnavailable(
                    f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}"
                )

    def _wait_http(self, url: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
                return
            time.sleep(0.3)
        raise ClusterUnavailable(f"{what} did not answer at {url}")

    def _wait_api(self, ca: Path, timeout: float = 90) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            request = urllib.request.Request(
                f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(request, context=context, timeout=3) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.5)
        raise ClusterUnavailable(f"kube-apiserver not ready:\n{self.log_tail('kube-apiserver')}")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig_path}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterUnavailable(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _wait_node_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            proc = self.kubectl("get", "node", self.node_name, "-o", "json", check=False)
            if proc.returncode == 0:
                node = json.loads(proc.stdout)
                conditions = {c["type"]: c for c in node["status"].get("conditions", [])}
                ready = conditions.get("Ready", {})
                last = ready.get("message", "")
                if ready.get("status") == "True":
                    return
            time.sleep(1)
        raise ClusterUnavailable(
            f"node {self.node_name} not Ready ({last}):\n{self.log_tail('kubelet')}"
        )

    def advertise(self, resources: Mapping[str, int]) -> None:
        """Add extended resources to the node's capacity (JSON patch on its status)."""
        ops = [
            {
                "op": "add",
                "path": "/status/capacity/" + name.replace("~", "~0").replace("/", "~1"),
                "value": str(count),
            }
            for name, count in resources.items()
        ]
        self.kubectl(
            "patch",
            "node",
            self.node_name,
            "--subresource=status",
            "--type=json",
            "-p",
            json.dumps(ops),
            check=False,
        )
        # kubectl 1.20 has no --subresource: talk to the API directly.
        self._patch_status(ops)
        # The kubelet copies capacity to allocatable at its next status update.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node = json.loads(self.kubectl("get", "node", self.node_name, "-o", "json").stdout)
            allocatable = node["status"].get("allocatable", {})
            if all(allocatable.get(k) == str(v) for k, v in resources.items()):
                return
            time.sleep(0.5)
        raise ClusterUnavailable(f"the node never showed {dict(resources)} as allocatable")

    def _patch_status(self, ops: list[dict[str, Any]]) -> None:
        ca = self.directory / "pki" / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca))
        request = urllib.request.Request(
            f"{self.server}/api/v1/nodes/{self.node_name}/status",
            data=json.dumps(ops).encode(),
            method="PATCH",
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json-patch+json",
            },
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            if resp.status != 200:
                raise ClusterUnavailable(f"patching the node's status: {resp.status}")

    # ------------------------------------------------------- private engine
    def _start_dockerd(self) -> None:
        d = self.directory / "docker"
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        sock = d / "docker.sock"
        self.docker_host = f"unix://{sock}"
        self._spawn(
            "dockerd",
            [
                "dockerd",
                f"--host={self.docker_host}",
                f"--data-root={d / 'data'}",
                f"--exec-root={d / 'exec'}",
                f"--pidfile={d / 'dockerd.pid'}",
                f"--bridge={BRIDGE}",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--userland-proxy=false",
                "--storage-driver=overlay2",
                "--exec-opt=native.cgroupdriver=cgroupfs",
                f"--add-runtime=sandman-runc={self._runc_wrapper()}",
                "--default-runtime=sandman-runc",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive()
            if self.docker("info", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise ClusterUnavailable(f"the private dockerd did not start:\n{self.log_tail('dockerd')}")

    def _runc_wrapper(self) -> Path:
        """runc, with negative OOM score adjustments raised to 0.

        The kubelet gives pod sandboxes -998 and Guaranteed containers -997; writing a
        negative ``oom_score_adj`` needs CAP_SYS_RESOURCE, which this machine withholds
        even from root, so runc would fail every pod ("can't get final child's PID from
        pipe"). dockerd's documented custom runtimes (``--add-runtime``) let the node's
        engine run this wrapper instead; only the OOM preference changes.
        """
        wrapper = self.directory / "docker" / "runc-oom-clamp"
        wrapper.write_text(RUNC_WRAPPER.format(python=sys.executable, runc=shutil.which("runc")))
        wrapper.chmod(0o755)
        return wrapper

    def docker(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["docker", f"--host={self.docker_host}", *args],
            capture_output=True,
            input=input,
            timeout=600,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterUnavailable(f"docker {args[0]}: {proc.stderr.decode(errors='replace')}")
        return proc

    def load_image(self, image: str) -> None:
        """Copy an image from the shared engine into the node's engine (no registry)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        load = subprocess.run(
            ["docker", f"--host={self.docker_host}", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=600,
            check=False,
        )
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise ClusterUnavailable(f"loading {image}: {load.stderr.decode(errors='replace')}")

    def _load_images(self) -> None:
        context = self.directory / "pause-image"
        context.mkdir(exist_ok=True)
        shutil.copy2(self.bin_dir / "pause", context / "pause")
        (context / "Dockerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        self.docker("build", "-q", "-t", PAUSE_IMAGE, str(context))

    def _stop_dockerd(self) -> None:
        if self.docker_host:
            proc = self.docker("ps", "-aq", check=False)
            ids = proc.stdout.decode().split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        dockerd = self.processes.pop("dockerd", None)
        if dockerd is not None:
            _terminate(dockerd, grace=30)
        exec_root = self.directory / "docker" / "exec"
        if exec_root.exists():
            _unmount_below(exec_root)
        data_root = self.directory / "docker" / "data"
        if data_root.exists():
            _unmount_below(data_root)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _unmount_below(path: Path) -> None:
    """Unmount everything mounted at or below ``path`` (deepest first)."""
    prefix = str(path.resolve())
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@contextlib.contextmanager
def running_cluster(
    directory: Path, mig_resources: Mapping[str, int] | None = None, images: tuple[str, ...] = ()
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(directory=directory, bin_dir=build_binaries())
    cluster.start(mig_resources)
    try:
        for image in images:
            cluster.load_image(image)
        yield cluster
    finally:
        cluster.stop()
