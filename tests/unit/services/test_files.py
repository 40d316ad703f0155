from __future__ import annotations

from pathlib import Path

import pytest

from sandman.services.files import SessionFiles, sshd_session_config


def test_setenv_lines() -> None:
    text = sshd_session_config({"SANDMAN_GPU_UUID": "MIG-1", "NVIDIA_VISIBLE_DEVICES": "MIG-1"})
    assert text == "SetEnv NVIDIA_VISIBLE_DEVICES=MIG-1 SANDMAN_GPU_UUID=MIG-1\n"
    for bad in ({"A": "has space"}, {"A": 'quote"'}, {"lower": "x"}, {"A": "new\nline"}):
        with pytest.raises(ValueError):
            sshd_session_config(bad)


def test_session_files_and_workspace(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path / "data", tmp_path / "workspaces")
    uid, gid = 20000, 20000  # root here, so files can be chowned to the user
    paths, host_public = files.write_session("s1", "alice", uid, gid, ["ssh-ed25519 AAAA k"], {})
    assert host_public.startswith("ssh-ed25519 ")
    key = paths.ssh_dir / "ssh_host_ed25519_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert (paths.ssh_dir / "authorized_keys").read_text() == "ssh-ed25519 AAAA k\n"
    assert "alice:x:" in paths.passwd.read_text()
    (paths.workspace / "data.bin").write_bytes(b"precious")

    # the host key stays the same for the user; the workspace outlives the session
    _, again = files.write_session("s2", "alice", uid, gid, ["ssh-ed25519 AAAA k"], {})
    assert again == host_public
    files.remove_session("s1")
    files.remove_session("s2")
    assert not (tmp_path / "data/sessions/s1").exists()
    assert (paths.workspace / "data.bin").read_bytes() == b"precious"


def test_workspace_paths_refuse_bad_names(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path, tmp_path / "ws")
    from sandman.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        files.workspace("../../etc")
