"""Real OpenSSH clients through the gateway to a real OpenSSH sshd."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import Env, free_port, wait_port

from sandman.gateway.relay import DownstreamSession
from sandman.gateway.tuning import datapath


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def assert_download_exact(env: Env, path: Path, digest: str) -> None:
    """``cat`` the file through the gateway into a local file; same bytes back."""
    out = env.root / "downloaded.bin"
    with out.open("wb") as f:
        down = subprocess.run(
            env.ssh("alice", f"cat {path}"), stdout=f, stderr=subprocess.PIPE, timeout=120
        )
    assert down.returncode == 0, down.stderr
    assert sha256(out) == digest
    out.unlink()


@pytest.fixture(scope="module")
def big_file(env: Env) -> Path:
    path = env.root / "big.bin"
    with path.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    return path


def test_exec_exit_code_and_stderr(env: Env) -> None:
    r = run(env.ssh("alice", "echo out; echo err >&2; exit 7"))
    assert r.returncode == 7
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_exit_signal_matches_direct(env: Env) -> None:
    cmd = "kill -TERM $$"
    through = run(env.ssh("alice", cmd))
    direct = run(env.direct_ssh(cmd))
    assert through.returncode == direct.returncode != 0


def test_stdin_upload_and_download_byte_exact(env: Env, big_file: Path) -> None:
    digest = sha256(big_file)
    with big_file.open("rb") as f:
        up = run(env.ssh("alice", "sha256sum"), stdin=f)
    assert up.returncode == 0, up.stderr
    assert up.stdout.split()[0].decode() == digest
    assert_download_exact(env, big_file, digest)


def test_default_client_gets_aes_gcm_and_bulk_data_is_spliced(
    env: Env, big_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced: dict[str, int] = {"up": 0, "down": 0}
    real = datapath._splice

    def counting(chan: Any, plain: Any, pktlen: int, padlen: int, datalen: int) -> bool:
        ok = real(chan, plain, pktlen, padlen, datalen)
        if ok:
            way = "up" if isinstance(chan._session, DownstreamSession) else "down"
            spliced[way] += datalen
        return ok

    monkeypatch.setattr(datapath, "_splice", counting)
    digest = sha256(big_file)
    # the session's sshd runs on this host: the upload lands in a local file
    landed = env.root / "landed.bin"
    with big_file.open("rb") as f:
        up = run(env.ssh("alice", "-v", f"cat > {landed}"), stdin=f)
    assert up.returncode == 0, up.stderr
    assert sha256(landed) == digest
    landed.unlink()
    # OpenSSH prefers chacha20-poly1305, then AES-CTR; the gateway offers AES-GCM
    assert b"cipher: aes128-gcm@openssh.com" in up.stderr
    assert_download_exact(env, big_file, digest)
    # Packets are spliced while the receiving side keeps up; the rest of the
    # time the window is full and data waits in the channel (stock path).
    size = big_file.stat().st_size
    assert 0 < spliced["up"] <= size
    assert 0 < spliced["down"] <= size


def test_stdin_eof_reaches_remote(env: Env) -> None:
    r = run(env.ssh("alice", "cat; echo done"), input=b"abc")
    assert r.stdout == b"abcdone\n"


@pytest.mark.parametrize("legacy", [True, False], ids=["scp-O", "scp-sftp"])
def test_scp_round_trip(env: Env, big_file: Path, legacy: bool) -> None:
    flags = ["-O"] if legacy else []
    remote = env.root / f"scp_remote_{legacy}.bin"
    back = env.root / f"scp_back_{legacy}.bin"
    key = env.keys["alice"]
    r = run(env.client.scp(key, *flags, str(big_file), f"alice@127.0.0.1:{remote}"))
    assert r.returncode == 0, r.stderr
    r = run(env.client.scp(key, *flags, f"alice@127.0.0.1:{remote}", str(back)))
    assert r.returncode == 0, r.stderr
    assert sha256(back) == sha256(big_file)
    remote.unlink()
    back.unlink()


def test_sftp_batch_round_trip(env: Env, big_file: Path) -> None:
    remote = env.root / "sftp_remote.bin"
    back = env.root / "sftp_back.bin"
    batch = env.root / "batch.txt"
    batch.write_text(f"put {big_file} {remote}\nget {remote} {back}\nls -l {remote}\n")
    r = run(env.client.sftp(env.keys["alice"], "-b", str(batch), "alice@127.0.0.1"))
    assert r.returncode == 0, r.stderr
    assert sha256(back) == sha256(big_file)
    remote.unlink()
    back.unlink()


def test_rsync_over_ssh(env: Env) -> None:
    src = env.root / "rsync_src"
    dst = env.root / "rsync_dst"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.bin").write_bytes(os.urandom(10_000 * (i + 1)))
    shell = env.client.rsync_shell(env.keys["alice"])
    r = run(["rsync", "-a", "-e", shell, f"{src}/", f"alice@127.0.0.1:{dst}/"])
    assert r.returncode == 0, r.stderr
    for i in range(20):
        assert (dst / f"f{i}.bin").read_bytes() == (src / f"f{i}.bin").read_bytes()
    # a second run only checks; nothing changes
    r = run(["rsync", "-a", "--stats", "-e", shell, f"{src}/", f"alice@127.0.0.1:{dst}/"])
    assert r.returncode == 0 and b"Number of regular files transferred: 0" in r.stdout


def test_pty_size_term_env_and_window_change(env: Env) -> None:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 101, 0, 0))
    cmd = env.ssh(
        "alice",
        "-tt",
        "-o",
        "SendEnv=LANG LC_MESSAGES",
        "stty size; echo TERM=$TERM LANG=$LANG LC=$LC_MESSAGES; sleep 1.5; stty size",
    )
    proc = subprocess.Popen(
        cmd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_MESSAGES": "C"},
        start_new_session=True,
    )
    os.close(slave)
    time.sleep(1.0)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
    proc.send_signal(__import__("signal").SIGWINCH)
    output = b""
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            output += os.read(master, 4096)
        except OSError:
            break
    proc.wait(10)
    os.close(master)
    text = output.decode(errors="replace")
    assert "37 101" in text, text
    assert "TERM=xterm-256color LANG=C.UTF-8 LC=C" in text, text
    assert "50 132" in text, text
    assert "Sandman" not in text  # the banner is for shells, not commands


def test_shell_shows_banner(env: Env) -> None:
    r = run(env.ssh("alice", "-tt"), input=b"echo $((6*7))\nexit 0\n")
    text = r.stdout.decode(errors="replace")
    assert "Sandman session sess-alice" in text
    assert "H100" in text and "Expires" in text
    assert "42" in text


def test_local_port_forward(env: Env) -> None:
    http_port = free_port()
    (env.root / "www").mkdir(exist_ok=True)
    (env.root / "www" / "hello.txt").write_text("hello through the tunnel\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"],
        cwd=env.root / "www",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    local = free_port()
    tunnel = subprocess.Popen(
        env.ssh("alice", "-N", "-L", f"{local}:localhost:{http_port}"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(http_port)
        wait_port(local)
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/hello.txt", timeout=10) as resp:
                assert resp.read() == b"hello through the tunnel\n"
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        server.terminate()
        server.wait(10)


def test_forward_refused_without_session(env: Env) -> None:
    local = free_port()
    tunnel = subprocess.Popen(
        env.ssh("dave", "-N", "-L", f"{local}:localhost:9"), stderr=subprocess.PIPE
    )
    try:
        wait_port(local)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=5)
    finally:
        tunnel.terminate()
        try:
            _, err = tunnel.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # ssh -N now and then ignores SIGTERM here
            tunnel.kill()
            _, err = tunnel.communicate(timeout=10)
    assert b"no running session for dave" in err


def test_wrong_key_is_refused(env: Env) -> None:
    r = run(env.ssh("alice", "true", key="bob"))
    assert r.returncode == 255
    assert b"Permission denied" in r.stderr


def test_unknown_user_is_refused(env: Env) -> None:
    r = run(env.ssh("eve", "true"))
    assert r.returncode == 255
    assert b"Permission denied" in r.stderr


def test_valid_key_without_session_sees_why(env: Env) -> None:
    r = run(env.ssh("dave", "true"))
    assert r.returncode == 1
    assert b"no running session for dave" in r.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ended = [r for r in env.source.records_for("dave") if r.ended_at is not None]
        if ended:
            break
        time.sleep(0.05)
    assert ended and ended[0].result == "refused"
    assert ended[0].reason == "no running session for dave"


def test_upstream_host_key_mismatch_is_refused(env: Env) -> None:
    r = run(env.ssh("mallory", "echo should-not-run"))
    assert r.returncode == 1
    assert b"should-not-run" not in r.stdout
    assert b"host key does not match" in r.stderr


def test_close_user_cuts_open_connection(env: Env) -> None:
    proc = subprocess.Popen(
        env.ssh("bob", "echo ready; sleep 60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        count = env.gateway.call(env.gateway.server.close_user("bob", "session expired"))
        assert count == 1
        proc.wait(5)
        assert time.monotonic() - t0 < 5
        assert proc.returncode != 0
        assert proc.stderr is not None
        assert b"session expired" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sweep_cuts_connections_of_sessions_ended_elsewhere(env: Env) -> None:
    # The session's sshd keeps running: only the sweep can end this connection.
    proc = subprocess.Popen(
        env.ssh("carol", "echo ready; sleep 60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    route = env.source.routes["carol"]
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        assert env.gateway.call(env.gateway.server.close_ended()) == 0  # still running
        del env.source.routes["carol"]  # ended by another process
        assert env.gateway.call(env.gateway.server.close_ended()) == 1
        proc.wait(10)
        assert proc.returncode != 0
        assert proc.stderr is not None
        assert f"session {route.session_id} has ended".encode() in proc.stderr.read()
    finally:
        env.source.routes["carol"] = route
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unauthenticated_connections_are_capped_per_address(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    limiter = env.gateway.server.startups
    saved = limiter.per_address
    limiter.per_address = 2
    idle = [socket.create_connection(("127.0.0.1", env.gateway.port)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while limiter.pending("127.0.0.1") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limiter.pending("127.0.0.1") == 2
        with caplog.at_level("WARNING", logger="sandman.gateway"):
            refused = run(env.ssh("alice", "true"))
        assert refused.returncode == 255
        assert b"kex_exchange_identification" in refused.stderr  # no SSH banner came
        assert "too many unauthenticated connections from 127.0.0.1" in caplog.text
    finally:
        for s in idle:
            s.close()
        limiter.per_address = saved
    deadline = time.monotonic() + 10
    while limiter.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert limiter.pending() == 0
    ok = run(env.ssh("alice", "true"))
    assert ok.returncode == 0, ok.stderr
    assert limiter.pending() == 0  # authenticated connections do not count


def test_connection_records_and_touch(env: Env) -> None:
    before = len(env.source.touches)
    payload = os.urandom(300_000)
    r = run(env.ssh("carol", "cat >/dev/null; sleep 2.5; head -c 12345 /dev/zero"), input=payload)
    assert r.returncode == 0 and len(r.stdout) == 12345
    deadline = time.monotonic() + 5
    ends: list[object] = []
    while time.monotonic() < deadline:
        recs = env.source.records_for("carol")
        ends = [x for x in recs if x.ended_at is not None and x.bytes_from_client >= len(payload)]
        if ends:
            break
        time.sleep(0.05)
    assert ends, env.source.records_for("carol")
    end = env.source.records_for("carol")[-1]
    start = [x for x in env.source.records_for("carol") if x.connection_id == end.connection_id]
    assert start[0].ended_at is None and start[0].result == "accepted"
    assert end.bytes_from_client == len(payload)
    assert end.bytes_to_client == 12345
    assert end.session_id == "sess-carol" and end.client_address.startswith("127.0.0.1:")
    assert env.source.touches[before:].count("sess-carol") >= 2


def test_fifty_concurrent_connections(env: Env) -> None:
    users = ["alice", "bob", "carol"]

    def one(i: int) -> tuple[int, bytes, bytes]:
        r = run(env.ssh(users[i % 3], f"echo hello-{i}"))
        return r.returncode, r.stdout, r.stderr

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    failures = [
        (i, r) for i, r in enumerate(results) if r[0] != 0 or r[1] != f"hello-{i}\n".encode()
    ]
    assert not failures, failures[:3]


def test_forward_closed_by_client_releases_the_session_side(env: Env) -> None:
    """A client that hangs up early must close the connection inside the session too."""
    import socket
    import threading

    port = free_port()
    # far more than the SSH windows and socket buffers on the way can hold, so
    # the first (probe) connection can only end "cut"
    size = 64 << 20
    served: list[str] = []

    def serve() -> None:
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", port))
            srv.listen()
            srv.settimeout(20)
            for _ in range(2):
                conn, _ = srv.accept()
                with conn:
                    try:
                        conn.sendall(bytes(size))
                        served.append("full")
                    except OSError:
                        served.append("cut")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    local = free_port()
    tunnel = subprocess.Popen(
        env.ssh("alice", "-N", "-L", f"{local}:127.0.0.1:{port}"), stderr=subprocess.DEVNULL
    )
    try:
        wait_port(local)  # connects and hangs up at once
        got = 0
        with socket.create_connection(("127.0.0.1", local), timeout=20) as s:
            while data := s.recv(1 << 20):
                got += len(data)
        assert got == size
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    server.join(20)
    assert served == ["cut", "full"]


def test_agent_forwarding(env: Env) -> None:
    sock = env.root / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < wait:
            time.sleep(0.05)
        agent_env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        run(["ssh-add", str(env.keys["bob"])], env=agent_env)
        with_agent = run(env.ssh("alice", "-A", "ssh-add -l"), env=agent_env)
        assert with_agent.returncode == 0, with_agent.stderr
        assert b"bob" in with_agent.stdout
        without = run(env.ssh("alice", "ssh-add -l"), env=agent_env)
        assert without.returncode != 0
    finally:
        agent.terminate()
        agent.wait(5)
