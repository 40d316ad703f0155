from __future__ import annotations

from pathlib import Path

import pytest

from sandman.errors import InvalidRequest
from sandman.runtime.base import SessionFile, SessionLaunch, Workspace
from sandman.runtime.docker.files import HostFiles
from sandman.services.host_keys import HostKeys


def _launch(session_id: str, files: tuple[SessionFile, ...]) -> SessionLaunch:
    return SessionLaunch(
        session_id=session_id,
        name="sandman-alice",
        image="img",
        command=("sshd",),
        hostname="alice",
        workspace=Workspace("alice", 20000, 20000),
        files=files,
    )


def test_session_files_are_mounted_read_only_and_the_workspace_outlives_them(
    tmp_path: Path,
) -> None:
    files = HostFiles(tmp_path / "data", tmp_path / "workspaces")
    secret = SessionFile("/etc/sandman/ssh/key", "PRIVATE", 0o600, owned_by_user=True)
    passwd = SessionFile("/etc/passwd", "alice:x:20000:20000::/workspace:/bin/bash\n")
    mounts = files.write(_launch("s1", (secret, passwd)))
    by_target = {m.target: m for m in mounts}
    assert set(by_target) == {"/workspace", "/etc/sandman/ssh/key", "/etc/passwd"}
    assert [m.target for m in mounts if not m.read_only] == ["/workspace"]
    key = Path(by_target["/etc/sandman/ssh/key"].source)
    assert key.read_text() == "PRIVATE"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and key.stat().st_uid == 20000
    assert Path(by_target["/etc/passwd"].source).stat().st_uid == 0
    workspace = Path(by_target["/workspace"].source)
    assert workspace == tmp_path / "workspaces" / "alice" and workspace.stat().st_uid == 20000
    (workspace / "data.bin").write_bytes(b"precious")

    files.discard("s1")
    assert not (tmp_path / "data/sessions/s1").exists()
    assert (workspace / "data.bin").read_bytes() == b"precious"
    assert files.existing_workspace_owner("alice") == 20000


@pytest.mark.parametrize("path", ["relative", "/", "/etc/../../root/x"])
def test_a_file_path_cannot_climb_out(tmp_path: Path, path: str) -> None:
    files = HostFiles(tmp_path / "data", tmp_path / "ws")
    with pytest.raises(ValueError):
        files.write(_launch("s1", (SessionFile(path, "x"),)))


def test_workspace_paths_refuse_bad_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        HostFiles(tmp_path, tmp_path / "ws").workspace("../../etc")


def test_a_users_host_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    keys = HostKeys(tmp_path)
    private, public = keys.pair("alice")
    assert public.startswith("ssh-ed25519 ") and "PRIVATE KEY" in private
    assert keys.pair("alice") == (private, public)
    assert keys.pair("bob") != (private, public)
    key_file = tmp_path / "users" / "alice" / "ssh_host_ed25519_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InvalidRequest):
        keys.pair("../etc")
