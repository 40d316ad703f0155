from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import yaml
from tests.fakes.runtime import FakeRuntime

from sandman.config import Settings
from sandman.gpu.inventory import make_inventory
from sandman.services import sshpiper
from sandman.services.host_keys import HostKeys
from sandman.services.sessions import SessionService
from sandman.services.sshpiper import Pipe, SshPiperConfig, render_pipes
from sandman.store.database import Database
from sandman.store.models import Session as SessionRow


def test_pipe_yaml_pins_host_keys_and_uses_key_files() -> None:
    text = render_pipes(
        [
            Pipe(
                "bob", ["ssh-ed25519 BBBB bob"], "127.0.0.1", 10001, "ssh-ed25519 HOSTB",
                Path("/data/sshpiper/keys/s-bob"),
            ),
            Pipe(
                "alice", ["ssh-ed25519 AAAA a"], "127.0.0.1", 10000, "ssh-ed25519 HOSTA",
                Path("/data/sshpiper/keys/s-alice"),
            ),
        ],
    )  # fmt: skip
    document = yaml.safe_load(text)
    assert document["version"] == "1.0"
    first = document["pipes"][0]
    assert first["from"][0]["username"] == "alice"
    assert base64.b64decode(first["from"][0]["authorized_keys_data"]) == b"ssh-ed25519 AAAA a\n"
    assert first["to"]["host"] == "127.0.0.1:10000" and first["to"]["username"] == "alice"
    assert first["to"]["private_key"] == "/data/sshpiper/keys/s-alice"  # a key per session
    assert document["pipes"][1]["to"]["private_key"] == "/data/sshpiper/keys/s-bob"
    assert first["to"]["ignore_hostkey"] is False
    (known,) = first["to"]["known_hosts_data"]
    assert base64.b64decode(known) == b"[127.0.0.1]:10000 ssh-ed25519 HOSTA\n"
    assert "BEGIN" not in text  # no private key material inline


def test_no_sessions_no_pipes() -> None:
    assert yaml.safe_load(render_pipes([]))["pipes"] == []


def _running_session(db: Database, service: SessionService, user: str, port: int) -> None:
    """A running session's row, as a create leaves it (written straight: no container)."""
    with db.transaction() as tx:
        service.ensure_user(tx, user)
        now = datetime.now(UTC)
        tx.add(
            SessionRow(
                id=f"s-{user}", user_id=user, status="running", image="img",
                container_name=f"sandman-{user}", cpus=1.0, memory="1g", ttl_minutes=60,
                created_at=now, expires_at=now, authorized_keys=[f"ssh-ed25519 K {user}"],
                endpoint_host="127.0.0.1", endpoint_port=port, host_public_key="ssh-ed25519 H",
            )
        )  # fmt: skip


def test_concurrent_changes_leave_the_newest_snapshot_on_disk(tmp_path: Path) -> None:
    """Each change is followed by a sync; whatever order the writers run in, the file
    ends up listing every session, and a burst costs fewer writes than changes."""
    db = Database(f"sqlite:///{tmp_path}/sandman.db")
    db.migrate()
    settings = Settings(data_dir=tmp_path, admin_token="t", ssh_mode="direct")
    service = SessionService(
        settings, db, FakeRuntime(), make_inventory("simulated", topology="a100-40gb-7x1g",
        state_path=tmp_path / "gpus.json", seed="t"), HostKeys(tmp_path), "dep", "w1",
    )  # fmt: skip
    piper = SshPiperConfig(tmp_path / "piper" / "pipe.yaml", service)
    writes: list[int] = []
    real_write = sshpiper.write_atomically

    def counting_write(path: Path, content: str, mode: int) -> None:
        if path.name == "pipe.yaml":
            writes.append(1)
            time.sleep(0.01)  # a slow disk widens the window a stale writer would need
        real_write(path, content, mode)

    barrier = threading.Barrier(16)

    def change_and_sync(i: int) -> None:
        barrier.wait()
        piper.session_key(f"s-user{i}")
        _running_session(db, service, f"user{i}", 10000 + i)
        piper.sync()

    sshpiper.write_atomically = counting_write  # type: ignore[assignment]
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(change_and_sync, range(16)))
    finally:
        sshpiper.write_atomically = real_write  # type: ignore[assignment]
    document = yaml.safe_load((tmp_path / "piper" / "pipe.yaml").read_text())
    assert sorted(p["from"][0]["username"] for p in document["pipes"]) == sorted(
        f"user{i}" for i in range(16)
    )
    assert 1 <= len(writes) < 16
    assert oct((tmp_path / "piper" / "pipe.yaml").stat().st_mode & 0o777) == "0o600"
