"""Sessions end to end: real Docker, real sshd in the container, real ssh client."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import docker
from sqlalchemy import select
from tests.integration.conftest import Harness
from tests.integration.support import ssh, write_key

from sandman.domain import SessionStatus
from sandman.store.models import GpuClaim, PortClaim


def _claims(h: Harness) -> tuple[list[GpuClaim], list[PortClaim]]:
    with h.core.db.transaction() as db:
        return list(db.scalars(select(GpuClaim))), list(db.scalars(select(PortClaim)))


def test_session_is_hardened_and_runs_as_the_user(harness: Harness, tmp_path: Path) -> None:
    response = harness.create("alice", ttl_minutes=30)
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["status"] == "running"
    assert session["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert session["mig_profile"] == "1g.5gb" and session["gpu_uuid"].startswith("MIG-")
    key = write_key(tmp_path, session["ssh_private_key"])

    result = ssh(
        session,
        key,
        "id -un; id -u; grep CapEff /proc/self/status; "
        "grep CapEff /proc/1/status; echo $HOME; echo $SANDMAN_GPU_UUID",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "alice"
    uid = int(lines[1])
    assert uid >= 20000
    assert lines[2].split()[1] == "0000000000000000"
    assert lines[3].split()[1] == "0000000000000000"
    assert lines[4] == "/workspace"
    assert lines[5] == session["gpu_uuid"]  # reaches `ssh host cmd`, not only login shells

    container = docker.from_env(version="auto").containers.get(session["container_id"])
    host_config = container.attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["Init"] is True
    assert host_config["PidsLimit"] > 0 and host_config["ShmSize"] > 0
    # back after an engine restart: live restore keeps it running, else the policy restarts it
    live_restore = docker.from_env(version="auto").info()["LiveRestoreEnabled"]
    expected_policy = "no" if live_restore else "unless-stopped"
    assert host_config["RestartPolicy"]["Name"] == expected_policy
    assert container.attrs["Config"]["User"] == f"{uid}:{uid}"
    assert container.labels["sandman.session_id"] == session["session_id"]
    assert container.labels["sandman.user_id"] == "alice"
    assert container.labels["sandman.managed"] == "true"
    assert container.name.endswith("-alice")
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    ssh_files = {"ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "authorized_keys"}
    assert set(mounts) == {
        "/workspace",
        "/etc/passwd",
        "/etc/group",
        *(
            f"/etc/sandman/ssh/{name}"
            for name in (*ssh_files, "sshd_session.conf", "trusted_user_ca_keys", "apps_token")
        ),
    }
    assert [path for path, m in mounts.items() if m["RW"]] == ["/workspace"]
    assert all("docker.sock" not in m["Source"] for m in mounts.values())
    (binding,) = host_config["PortBindings"]["2222/tcp"]
    assert binding["HostIp"] == "127.0.0.1" and 10000 <= int(binding["HostPort"]) <= 20000
    # in gateway mode only the gateway's key opens the container: the user's key is
    # refused straight at the published port
    direct = dict(
        session,
        ssh_port=int(binding["HostPort"]),
        ssh_host_public_key=session["container_host_public_key"],
    )
    refused = ssh(direct, key, "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == session["gpu_uuid"]
    assert env["SANDMAN_GPU_UUID"] == session["gpu_uuid"]


def test_workspace_persists_and_users_are_isolated(harness: Harness, tmp_path: Path) -> None:
    alice = harness.create("alice").json()
    bob = harness.create("bob").json()
    alice_key = write_key(tmp_path, alice["ssh_private_key"], "alice")
    bob_key = write_key(tmp_path, bob["ssh_private_key"], "bob")

    assert ssh(alice, alice_key, "echo secret > /workspace/notes.txt").returncode == 0
    seen = ssh(bob, bob_key, "ls -a /workspace; ls /srv 2>&1; cat /workspace/notes.txt")
    assert "notes.txt" not in seen.stdout
    # alice's key does not open bob's container
    assert ssh(bob, alice_key, "true", user="bob").returncode == 255
    # the session network has inter-container traffic disabled
    probe = (
        'python3 -c "import socket,sys; s=socket.socket(); s.settimeout(3); '
        f"sys.exit(s.connect_ex(('{bob['container_ip']}', 2222)))\""
    )
    assert ssh(alice, alice_key, probe).returncode != 0

    harness.client.delete(f"/api/v1/sessions/{alice['session_id']}", headers=harness.headers)
    again = harness.create("alice").json()
    key2 = write_key(tmp_path, again["ssh_private_key"], "alice2")
    result = ssh(again, key2, "cat /workspace/notes.txt; id -u")
    assert result.stdout.split() == ["secret", result.stdout.split()[1]]
    assert again["ssh_host_public_key"] == alice["ssh_host_public_key"]  # known_hosts stays valid
    workspace = harness.core.runtime.files.workspace("alice")
    assert (workspace / "notes.txt").read_text() == "secret\n"


def test_delete_reclaims_everything_and_keeps_the_workspace(harness: Harness) -> None:
    session = harness.create("carol").json()
    assert _claims(harness)[0] and _claims(harness)[1]
    url = f"/api/v1/sessions/{session['session_id']}"
    assert harness.client.delete(url, headers=harness.headers).status_code == 200
    assert harness.client.delete(url, headers=harness.headers).status_code == 200  # idempotent
    ended = harness.client.get(url, headers=harness.headers).json()
    assert ended["status"] == "deleted" and ended["ended_at"] and ended["end_reason"]
    assert harness.containers() == []
    assert _claims(harness) == ([], [])
    assert harness.core.runtime.files.workspace("carol").is_dir()
    listed = harness.client.get("/sessions", headers=harness.headers).json()
    assert listed == []
    everything = harness.client.get("/sessions?status=all", headers=harness.headers).json()
    assert [s["session_id"] for s in everything] == [session["session_id"]]
    assert all("ssh_private_key" not in s for s in everything)


def test_ttl_expiry_reclaims_everything(harness: Harness) -> None:
    session = harness.create("dave", ttl_minutes=1).json()
    patched = harness.client.patch(
        f"/api/v1/sessions/{session['session_id']}",
        json={"ttl_minutes": 5},
        headers=harness.headers,
    ).json()
    assert patched["ttl_minutes"] == 5 and patched["expires_at"] > session["expires_at"]
    service = harness.core.sessions
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(minutes=4)
    assert harness.core.reaper.sweep() == []
    service.clock = lambda: real_clock() + timedelta(minutes=6)
    assert harness.core.reaper.sweep() == [session["session_id"]]
    ended = harness.client.get(
        f"/api/v1/sessions/{session['session_id']}", headers=harness.headers
    ).json()
    assert ended["status"] == SessionStatus.EXPIRED and "TTL" in ended["end_reason"]
    assert harness.containers() == [] and _claims(harness) == ([], [])


def test_refusals_explain_themselves_and_change_nothing(harness: Harness) -> None:
    first = harness.create("erin")
    assert first.status_code == 201
    conflict = harness.create("erin")
    assert conflict.status_code == 409
    assert first.json()["session_id"] in conflict.json()["error"]

    bad = [
        ({"user_id": "Erin"}, "user_id"),
        ({"user_id": "../etc"}, "user_id"),
        ({"user_id": "x" * 40}, "user_id"),
        ({"user_id": "frank", "ttl_minutes": 0}, "ttl_minutes"),
        ({"user_id": "frank", "mig_profile": "1g.5gb", "gpu_count": 1}, "at most one"),
        ({"user_id": "frank", "mig_profile": "9g.99gb"}, "9g.99gb"),
        ({"user_id": "frank", "image": "ubuntu:latest"}, "not allowed"),
        ({"user_id": "frank", "ssh_public_keys": ["not a key"]}, "ssh_public_keys"),
        ({"user_id": "frank", "cpus": 999}, "cpus"),
        ({"user_id": "frank", "unknown_field": 1}, "unknown_field"),
        ({}, "user_id"),
    ]
    for body, word in bad:
        response = harness.client.post("/api/v1/sessions", json=body, headers=harness.headers)
        assert response.status_code == 400, (body, response.text)
        assert word in response.json()["error"], (body, response.json())

    assert harness.client.post("/api/v1/sessions", json={"user_id": "frank"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert harness.client.get("/api/v1/sessions", headers=wrong).json() == {
        "error": "wrong token: use a personal token (sm_...) or the admin token",
        "code": "unauthenticated",
    }
    missing = harness.client.get("/api/v1/sessions/nope", headers=harness.headers)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    # a whole GPU on a machine whose GPUs all have MIG can never be served: 400
    impossible = harness.create("frank", gpu_count=1)
    assert impossible.status_code == 400 and "MIG" in impossible.json()["error"]
    # no free instance of that profile now: 503, saying what is free
    none_free = harness.create("frank", mig_profile="3g.20gb")
    assert none_free.status_code == 503, none_free.text
    assert "3g.20gb" in none_free.json()["error"] and "1g.5gb" in none_free.json()["error"]

    active = harness.client.get("/api/v1/sessions", headers=harness.headers).json()
    assert [s["user_id"] for s in active] == ["erin"]
    assert len(harness.containers()) == 1


def test_no_gpu_session_and_seed_routes(harness: Harness) -> None:
    response = harness.client.post(
        "/sessions", json={"user_id": "gina", "gpu_count": 0}, headers=harness.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["gpu_uuid"] is None
    stats = harness.client.get("/sessions/stats", headers=harness.headers).json()
    assert stats["by_status"] == {"running": 1} and stats["by_profile"] == {"no-gpu": 1}
    gpus = harness.client.get("/gpus", headers=harness.headers).json()
    assert gpus["count"] == 1 and len(gpus["gpus"][0]["mig_instances"]) == 7
    health = harness.client.get("/healthz").json()
    assert health["status"] == "healthy" and health["service"] == "sandman"


def test_engine_unreachable_is_503_and_writes_nothing(make_harness) -> None:  # type: ignore[no-untyped-def]
    from sandman.runtime.docker import DockerRuntime

    harness = make_harness()
    harness.core.sessions.runtime = DockerRuntime(
        harness.core.runtime.files,  # type: ignore[attr-defined]
        harness.core.settings.network_name,
        base_url="unix:///nonexistent/docker.sock",
    )
    harness.core.runtime = harness.core.sessions.runtime
    response = harness.create("henry")
    assert response.status_code == 503, response.text
    assert "Docker" in response.json()["error"]
    assert harness.client.get("/sessions?status=all", headers=harness.headers).json() == []
    assert _claims(harness) == ([], [])
    assert harness.client.get("/healthz").json()["status"] == "degraded"


def test_static_mig_management(make_harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topology = tmp_path / "topology.yaml"
    topology.write_text("gpus:\n  - model: A100-SXM4-40GB\n    mig: static\n  - model: A100-40GB\n")
    harness = make_harness(gpu_topology=str(topology))
    gpus = harness.client.get("/api/v1/gpus", headers=harness.headers).json()["gpus"]
    assert [g["mig_mode"] for g in gpus] == ["static", "dynamic"]
    dynamic = harness.client.post(
        f"/api/v1/gpus/{gpus[1]['uuid']}/mig",
        json={"profiles": ["1g.5gb"]},
        headers=harness.headers,
    )
    assert dynamic.status_code == 409 and "dynamic" in dynamic.json()["error"]
    gpu = gpus[0]
    url = f"/api/v1/gpus/{gpu['uuid']}/mig"
    created = harness.client.post(
        url, json={"profiles": ["4g.20gb", "1g.5gb"]}, headers=harness.headers
    )
    assert created.status_code == 201, created.text
    placed = {i["profile"]: i["start"] for i in created.json()["created"]}
    assert placed["4g.20gb"] == 0 and placed["1g.5gb"] >= 4
    refused = harness.client.post(url, json={"profiles": ["4g.20gb"]}, headers=harness.headers)
    assert refused.status_code == 400 and "4g.20gb" in refused.json()["error"]

    one_g = next(i for i in created.json()["created"] if i["profile"] == "1g.5gb")
    session = harness.create("ivy", mig_instance_uuid=one_g["uuid"]).json()
    assert session["gpu_uuid"] == one_g["uuid"]
    busy = harness.client.delete(f"{url}/{one_g['uuid']}", headers=harness.headers)
    assert busy.status_code == 409 and session["session_id"] in busy.json()["error"]
    four_g = next(i for i in created.json()["created"] if i["profile"] == "4g.20gb")
    gone = harness.client.delete(f"{url}/{four_g['uuid']}", headers=harness.headers)
    assert gone.status_code == 200
    left = harness.client.get("/api/v1/gpus", headers=harness.headers).json()["gpus"][0]
    assert [(i["profile"], i["session_id"]) for i in left["mig_instances"]] == [
        ("1g.5gb", session["session_id"])
    ]


def test_sshpiper_config_follows_the_sessions(make_harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import stat

    import yaml

    pipe_yaml = tmp_path / "sshpiper" / "pipe.yaml"
    harness = make_harness(sshpiper_config=pipe_yaml)
    session = harness.create("uma").json()
    document = yaml.safe_load(pipe_yaml.read_text())
    (pipe,) = document["pipes"]
    assert pipe["from"][0]["username"] == "uma"
    key_file = Path(pipe["to"]["private_key"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o400
    assert stat.S_IMODE(pipe_yaml.stat().st_mode) == 0o600
    # SSHPiper's upstream login works: the key file opens the container, host key pinned
    host, port = pipe["to"]["host"].rsplit(":", 1)
    known = tmp_path / "known"
    known.write_text(f"[{host}]:{port} {session['container_host_public_key']}\n")
    result = subprocess.run(
        ["ssh", "-p", port, "-i", str(key_file), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         f"uma@{host}", "id -un"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.stdout.strip() == "uma", result.stderr
    # the key is this session's alone: it does not open another user's session
    other = harness.create("vera").json()
    pipes = {p["from"][0]["username"]: p for p in yaml.safe_load(pipe_yaml.read_text())["pipes"]}
    assert Path(pipes["vera"]["to"]["private_key"]) != key_file
    host, port = pipes["vera"]["to"]["host"].rsplit(":", 1)
    known.write_text(f"[{host}]:{port} {other['container_host_public_key']}\n")
    refused = subprocess.run(
        ["ssh", "-p", port, "-i", str(key_file), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known}",
         "-o", "StrictHostKeyChecking=yes", f"vera@{host}", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    harness.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=harness.headers)
    assert not key_file.exists()  # gone with its session
    assert [p["from"][0]["username"] for p in yaml.safe_load(pipe_yaml.read_text())["pipes"]] == [
        "vera"
    ]


def test_user_keys_open_the_gateway_and_connections_are_logged(
    harness: Harness, tmp_path: Path
) -> None:
    from sandman.services.keys import generate_key_pair

    pair = generate_key_pair("vic@laptop")
    put = harness.client.put(
        "/api/v1/users/vic/keys",
        json={"ssh_public_keys": [pair.public_openssh]},
        headers=harness.headers,
    )
    assert put.status_code == 200 and put.json()["ssh_public_keys"] == [pair.public_openssh]
    bad = harness.client.put(
        "/api/v1/users/vic/keys", json={"ssh_public_keys": ["junk"]}, headers=harness.headers
    )
    assert bad.status_code == 400
    key = write_key(tmp_path, pair.private_openssh, "vic")

    session = harness.create("vic").json()
    assert session["ssh_private_key"] is None  # the stored keys are used, nothing generated
    result = ssh(session, key, "echo hello from $(id -un)")
    assert result.stdout.strip() == "hello from vic", result.stderr

    harness.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=harness.headers)
    refused = ssh(session, key, "true")
    assert refused.returncode != 0 and "no running session for vic" in refused.stderr
    log = harness.client.get("/api/v1/connections?user_id=vic", headers=harness.headers).json()
    results = [(c["result"], c["session_id"]) for c in log]
    assert ("accepted", session["session_id"]) in results
    assert any(r == "refused" for r, _ in results)
    accepted = next(c for c in log if c["result"] == "accepted")
    assert accepted["bytes_to_client"] > 0 and accepted["ended_at"] is not None


def test_an_exhausted_port_range_is_503_and_leaks_nothing(make_harness) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.support import free_port

    port = free_port()
    harness = make_harness(ssh_mode="direct", ssh_port_start=port, ssh_port_end=port)
    first = harness.create("pam")
    assert first.status_code == 201 and first.json()["ssh_port"] == port
    second = harness.create("quin")
    assert second.status_code == 503 and f"{port}-{port}" in second.json()["error"]
    assert len(harness.containers()) == 1
    gpus = harness.client.get("/api/v1/gpus", headers=harness.headers).json()["gpus"][0]
    assert sum(i["allocated"] for i in gpus["mig_instances"]) == 1
