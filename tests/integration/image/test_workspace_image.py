"""The workspace image, run exactly as the Sandman runtime runs it.

Each workspace container runs as an unprivileged uid:gid with every capability
dropped, ``no-new-privileges`` and ``--init``; the host key, authorized_keys,
/etc/passwd and /etc/group are mounted read-only and the workspace read-write.
Everything is checked with the real OpenSSH client.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandman.image import (
    CONTAINER_COMMAND,
    SSH_PORT,
    WORKSPACE_IMAGE,
    build_workspace_image,
    image_exists,
    passwd_and_group,
)
from sandman.image.accounts import BASE_GROUP, BASE_PASSWD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LABEL = "sandman.test"
RUN_ID = secrets.token_hex(4)


def _name(suffix: str) -> str:
    return f"sandman-test-image-{RUN_ID}-{suffix}"


# --------------------------------------------------------------------------- keys


def _keypair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public


def _write(path: Path, data: bytes | str, mode: int, owner: tuple[int, int] | None = None) -> None:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)


# --------------------------------------------------------------------------- engine


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    if os.geteuid() != 0:
        pytest.skip("needs root (workspace directories are chowned to the container uid)")
    for tool in ("ssh", "scp", "sftp", "rsync"):
        if shutil.which(tool) is None:
            pytest.skip(f"the OpenSSH/rsync client tool {tool!r} is not installed")
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={RUN_ID}"}):
        container.remove(force=True)
    client.close()


@pytest.fixture(scope="session")
def workspace_image(docker_client: Any) -> str:
    if not image_exists(WORKSPACE_IMAGE):
        build_workspace_image(WORKSPACE_IMAGE)
    return WORKSPACE_IMAGE


# --------------------------------------------------------------------------- workspaces


@dataclass
class Workspace:
    user: str
    uid: int
    gid: int
    container: Any
    port: int
    host_dir: Path
    key: Path
    known_hosts: Path

    def ssh_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.key),
        ]

    def ssh_argv(self, *args: str, user: str | None = None) -> list[str]:
        return [
            "ssh",
            *self.ssh_options(),
            "-p",
            str(self.port),
            f"{user or self.user}@127.0.0.1",
            *args,
        ]

    def ssh(
        self, command: str, *options: str, check: bool = True, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.ssh_argv(*options, command, user=user),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ssh {command!r} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}\ncontainer log:\n{self.logs()}"
            )
        return proc

    def logs(self) -> str:
        try:
            return str(self.container.logs().decode(errors="replace"))
        except Exception as exc:
            return f"(no logs: {exc})"


def _published_port(container: Any) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"][f"{SSH_PORT}/tcp"]
    return int(bindings[0]["HostPort"])


def _wait_for_banner(port: int, timeout: float = 20.0) -> None:
    """Wait until sshd itself (not just docker-proxy) answers with its banner."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(8) == b"SSH-2.0-":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no sshd banner on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.02)


def _run_container(
    client: Any, image: str, name: str, uid: int, gid: int, root: Path
) -> tuple[Any, int]:
    from docker.types import Mount

    container = client.containers.run(
        image,
        name=name,
        detach=True,
        user=f"{uid}:{gid}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        labels={LABEL: RUN_ID},
        ports={f"{SSH_PORT}/tcp": ("127.0.0.1", None)},
        mounts=[
            Mount("/etc/sandman/ssh", str(root / "ssh"), type="bind", read_only=True),
            Mount("/etc/passwd", str(root / "passwd"), type="bind", read_only=True),
            Mount("/etc/group", str(root / "group"), type="bind", read_only=True),
            Mount("/workspace", str(root / "workspace"), type="bind", read_only=False),
        ],
    )
    return container, _published_port(container)


def _prepare_host_dirs(root: Path, user: str, uid: int, gid: int) -> tuple[Path, Path]:
    """Create the host side of a workspace; return (user key, known_hosts)."""
    (root / "ssh").mkdir(parents=True)
    (root / "workspace").mkdir()
    os.chown(root / "workspace", uid, gid)
    os.chmod(root / "workspace", 0o700)
    host_private, host_public = _keypair()
    user_private, user_public = _keypair()
    _write(root / "ssh" / "ssh_host_ed25519_key", host_private, 0o600, (uid, gid))
    _write(root / "ssh" / "ssh_host_ed25519_key.pub", host_public + b"\n", 0o644)
    _write(root / "ssh" / "authorized_keys", user_public + b"\n", 0o644)
    passwd, group = passwd_and_group(user, uid, gid)
    _write(root / "passwd", passwd, 0o644)
    _write(root / "group", group, 0o644)
    client_dir = root / "client"
    client_dir.mkdir()
    _write(client_dir / "id_ed25519", user_private, 0o600)
    return client_dir / "id_ed25519", client_dir / "known_hosts"


StartWorkspace = Callable[[str, int], Workspace]


@pytest.fixture(scope="module")
def start_workspace(
    docker_client: Any, workspace_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartWorkspace]:
    started: list[Any] = []

    def start(user: str, uid: int) -> Workspace:
        root = tmp_path_factory.mktemp(f"ws-{user}")
        key, known_hosts = _prepare_host_dirs(root, user, uid, uid)
        container, port = _run_container(
            docker_client, workspace_image, _name(user), uid, uid, root
        )
        started.append(container)
        host_public = (root / "ssh" / "ssh_host_ed25519_key.pub").read_text().strip()
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
        workspace = Workspace(user, uid, uid, container, port, root / "workspace", key, known_hosts)
        try:
            _wait_for_banner(port)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ncontainer log:\n{workspace.logs()}") from None
        return workspace

    yield start
    for container in started:
        container.remove(force=True)


@pytest.fixture(scope="module")
def alice(start_workspace: StartWorkspace) -> Workspace:
    return start_workspace("alice", 10001)


@pytest.fixture(scope="module")
def bob(start_workspace: StartWorkspace) -> Workspace:
    return start_workspace("bob", 10002)


@pytest.fixture(autouse=True)
def _container_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the workspace containers' logs; pytest shows them for failed tests only."""
    yield
    for name in ("alice", "bob"):
        if name in request.fixturenames:
            workspace = request.getfixturevalue(name)
            print(f"--- docker logs {workspace.container.name}\n{workspace.logs()}")


# --------------------------------------------------------------------------- tests


def test_image_command_and_base_accounts(docker_client: Any, workspace_image: str) -> None:
    image = docker_client.images.get(workspace_image)
    assert tuple(image.attrs["Config"]["Cmd"]) == CONTAINER_COMMAND
    out = docker_client.containers.run(
        workspace_image,
        ["cat", "/etc/passwd", "/etc/group"],
        remove=True,
        user="65534:65534",
        cap_drop=["ALL"],
        labels={LABEL: RUN_ID},
    ).decode()
    assert out == BASE_PASSWD + BASE_GROUP, "accounts.BASE_PASSWD/BASE_GROUP are out of date"
    listing = docker_client.containers.run(
        workspace_image,
        ["sh", "-c", "ls /etc/ssh/ /etc/sandman/ssh/; ls -d /workspace"],
        remove=True,
        user="65534:65534",
        cap_drop=["ALL"],
        labels={LABEL: RUN_ID},
    ).decode()
    assert "ssh_host_" not in listing, "the distro host keys must not be in the image"
    assert "/workspace" in listing


def test_login_identity_home_and_capabilities(alice: Workspace) -> None:
    out = alice.ssh(
        "id -u; id -un; id -g; echo $HOME; echo $SHELL; pwd; "
        "grep CapEff /proc/self/status; grep CapEff /proc/1/status; "
        "grep NoNewPrivs /proc/self/status"
    ).stdout.splitlines()
    assert out[0] == str(alice.uid)
    assert out[1] == "alice"
    assert out[2] == str(alice.gid)
    assert out[3:6] == ["/workspace", "/bin/bash", "/workspace"]
    assert out[6].split() == ["CapEff:", "0000000000000000"]
    assert out[7].split() == ["CapEff:", "0000000000000000"]
    assert out[8].split() == ["NoNewPrivs:", "1"]


def test_workspace_write_appears_on_host(alice: Workspace) -> None:
    alice.ssh("echo hello > /workspace/from-container.txt")
    written = alice.host_dir / "from-container.txt"
    assert written.read_text() == "hello\n"
    stat = written.stat()
    assert (stat.st_uid, stat.st_gid) == (alice.uid, alice.gid)


def test_no_root_escape(alice: Workspace) -> None:
    out = alice.ssh("touch /etc/x 2>&1; ls /root 2>&1; echo done", check=False).stdout
    assert "Permission denied" in out
    assert alice.ssh("ps -o user= -p 1; ps -eo uid= | sort -u").stdout.split() == [
        "alice",
        str(alice.uid),
    ]


def test_scp_round_trip(alice: Workspace, tmp_path: Path) -> None:
    payload = secrets.token_bytes(1 << 20) + b"\x00\xff\n"
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    base = ["scp", *alice.ssh_options(), "-P", str(alice.port)]
    target = "alice@127.0.0.1:/workspace/scp.bin"
    subprocess.run([*base, str(source), target], check=True, timeout=60)
    assert (alice.host_dir / "scp.bin").read_bytes() == payload
    back = tmp_path / "back.bin"
    subprocess.run([*base, target, str(back)], check=True, timeout=60)
    assert back.read_bytes() == payload
    # The legacy scp protocol runs "scp -t" on the remote side.
    legacy = tmp_path / "legacy.bin"
    subprocess.run([*base, "-O", target, str(legacy)], check=True, timeout=60)
    assert legacy.read_bytes() == payload


def test_sftp_round_trip(alice: Workspace, tmp_path: Path) -> None:
    payload = secrets.token_bytes(300_000)
    source = tmp_path / "up.bin"
    source.write_bytes(payload)
    batch = tmp_path / "batch"
    batch.write_text(f"put {source} sftp.bin\nget sftp.bin {tmp_path / 'down.bin'}\nls -l\n")
    subprocess.run(
        ["sftp", *alice.ssh_options(), "-P", str(alice.port), "-b", str(batch), "alice@127.0.0.1"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert (alice.host_dir / "sftp.bin").read_bytes() == payload
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_rsync_over_ssh(alice: Workspace, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.bin").write_bytes(secrets.token_bytes(50_000))
    transport = " ".join(["ssh", *alice.ssh_options(), "-p", str(alice.port)])
    subprocess.run(
        ["rsync", "-a", "-e", transport, f"{tree}/", "alice@127.0.0.1:/workspace/tree/"],
        check=True,
        timeout=60,
    )
    assert (alice.host_dir / "tree" / "a.txt").read_text() == "a\n"
    assert (alice.host_dir / "tree" / "sub" / "b.bin").read_bytes() == (
        tree / "sub" / "b.bin"
    ).read_bytes()


def test_tty_and_tmux(alice: Workspace) -> None:
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = subprocess.run(
        alice.ssh_argv("-tt", "tty; tmux new-session 'echo inside-tmux; sleep 0.5'; echo after"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, f"{out}\n{proc.stderr!r}\n{alice.logs()}"
    assert "/dev/pts/" in out
    assert "inside-tmux" in out
    assert "after" in out
    detached = alice.ssh(
        "tmux new-session -d -s keep 'sleep 60' && tmux has-session -t keep && echo kept; "
        "tmux kill-server"
    )
    assert "kept" in detached.stdout


def _free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_local_port_forward_to_server_in_container(alice: Workspace) -> None:
    marker = secrets.token_hex(8)
    alice.ssh(f"echo {marker} > /workspace/forward-marker.txt")
    alice.ssh(
        "cd /workspace || exit 1; nohup python3 -m http.server 8765 --bind 127.0.0.1 "
        ">/tmp/http.log 2>&1 </dev/null & echo started"
    )
    local = _free_local_port()
    forward = subprocess.Popen(
        alice.ssh_argv("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:8765"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:
            if forward.poll() is not None:
                raise AssertionError(f"ssh -L exited: {forward.communicate()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{local}/forward-marker.txt", timeout=2
                ) as response:
                    body = response.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        assert body.strip() == marker
    finally:
        forward.terminate()
        forward.wait(timeout=10)
        alice.ssh("pkill -u $(id -u) -f 'http.server 8765' || true", check=False)


def test_second_user_is_isolated(alice: Workspace, bob: Workspace) -> None:
    marker = f"bob-secret-{secrets.token_hex(6)}"
    bob.ssh(f"echo secret > /workspace/{marker}")
    assert (bob.host_dir / marker).exists()
    found = alice.ssh(
        f"find / -path /proc -prune -o -path /sys -prune -o -name {marker} -print 2>/dev/null; "
        "ls -A /workspace",
        check=False,
    ).stdout
    assert marker not in found
    # Alice's key does not open Bob's container, and Bob is unknown in Alice's.
    wrong_key = subprocess.run(
        [
            "ssh",
            *alice.ssh_options()[:-2],
            "-i",
            str(alice.key),
            "-o",
            f"UserKnownHostsFile={bob.known_hosts}",
            "-p",
            str(bob.port),
            "bob@127.0.0.1",
            "true",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert wrong_key.returncode == 255
    assert alice.ssh("true", user="bob", check=False).returncode == 255


def _start_to_banner(client: Any, image: str, root: Path, index: int) -> float:
    start = time.monotonic()
    container, port = _run_container(client, image, _name(f"timing-{index}"), 10009, 10009, root)
    try:
        _wait_for_banner(port)
        return time.monotonic() - start
    finally:
        container.remove(force=True)


def test_start_to_banner_time(
    docker_client: Any, workspace_image: str, tmp_path: Path, record_property: Any
) -> None:
    root = tmp_path / "timing"
    _prepare_host_dirs(root, "timer", 10009, 10009)
    samples: Sequence[float] = [
        _start_to_banner(docker_client, workspace_image, root, i) for i in range(10)
    ]
    median = statistics.median(samples)
    record_property("start_to_banner_median_s", round(median, 3))
    print(f"container start -> sshd banner: median {median:.3f}s, samples {samples}")
    assert median < 10
