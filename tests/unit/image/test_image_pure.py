"""Pure parts of ``sandman.image``: no Docker engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandman.image import (
    CONTAINER_COMMAND,
    PACKAGES,
    MirrorNotFound,
    debian_mirror_from_apt_sources,
    passwd_and_group,
    render_dockerfile,
)
from sandman.image.accounts import BASE_GROUP, BASE_PASSWD
from sandman.image.build import LAYER_FILES

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

NODESOURCE = """\
Types: deb
URIs: https://deb.nodesource.example/node_20.x
Suites: nodistro
Components: main
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mirror_from_deb822(tmp_path: Path) -> None:
    paths = [
        tmp_path / "missing.list",
        _write(tmp_path, "nodesource.sources", NODESOURCE),
        _write(tmp_path, "debian.sources", DEB822),
    ]
    assert debian_mirror_from_apt_sources(paths) == "http://mirror.example/debian"
    assert debian_mirror_from_apt_sources(paths, suite="bookworm") == "http://mirror.example/debian"


def test_mirror_from_one_line_format_skips_security_and_third_party(tmp_path: Path) -> None:
    text = (
        "# comment\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb https://packages.cloud.example/apt cloud-sdk-bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://other.example/debian bookworm contrib\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://right.example/debian/ bookworm main contrib\n"
    )
    path = _write(tmp_path, "sources.list", text)
    assert debian_mirror_from_apt_sources([path]) == "http://right.example/debian"


def test_mirror_disabled_stanza_and_wrong_suite(tmp_path: Path) -> None:
    disabled = _write(
        tmp_path, "a.sources", DEB822.replace("Types: deb\n#", "Enabled: no\nTypes: deb\n#", 1)
    )
    with pytest.raises(MirrorNotFound, match="--mirror"):
        debian_mirror_from_apt_sources([disabled])
    plain = _write(tmp_path, "b.sources", DEB822)
    with pytest.raises(MirrorNotFound, match="trixie"):
        debian_mirror_from_apt_sources([plain], suite="trixie")


def test_render_dockerfile() -> None:
    text = render_dockerfile("nvidia/cuda:12.4.1-runtime-ubuntu22.04")
    lines = text.splitlines()
    assert "FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04" in lines
    assert "COPY rootfs/ /" in lines
    for package in PACKAGES:
        assert f"        {package}" in text
    assert "apt-get install -y --no-install-recommends \\" in text
    assert "/usr/local/lib/sandman/finalize.sh" in text
    assert lines[-1] == 'CMD ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/sandman/sshd_config"]'
    assert list(CONTAINER_COMMAND) == [
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        "/etc/sandman/sshd_config",
    ]
    assert "EXPOSE 2222/tcp" in lines
    assert render_dockerfile("debian:bookworm") == render_dockerfile("debian:bookworm")


@pytest.mark.parametrize("bad", ["", "a b", "x\nRUN rm -rf /"])
def test_render_dockerfile_rejects_bad_base(bad: str) -> None:
    with pytest.raises(ValueError):
        render_dockerfile(bad)


def test_render_dockerfile_rejects_bad_package() -> None:
    with pytest.raises(ValueError):
        render_dockerfile("debian:bookworm", ["curl; rm -rf /"])


def test_layer_files_are_packaged() -> None:
    from importlib import resources

    files = resources.files("sandman.image") / "files"
    for item in LAYER_FILES:
        assert (files / item.source).is_file(), item.source
    config = (files / "sshd_config").read_text()
    for directive in (
        "Port 2222",
        "PidFile none",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile /etc/sandman/ssh/authorized_keys",
        "HostKey /etc/sandman/ssh/ssh_host_ed25519_key",
        "StrictModes no",
        "PermitRootLogin no",
        "AllowTcpForwarding yes",
        "Subsystem sftp internal-sftp",
        "MaxStartups 200:30:400",
    ):
        assert directive in config.splitlines(), directive


def test_passwd_and_group() -> None:
    passwd, group = passwd_and_group("alice", 10001, 10002)
    assert passwd == BASE_PASSWD + "alice:x:10001:10002:alice:/workspace:/bin/bash\n"
    assert group == BASE_GROUP + "alice:x:10002:\n"
    assert "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin" in passwd.splitlines()
    assert "tty:x:5:" in group.splitlines()


@pytest.mark.parametrize(
    ("user", "uid", "gid"),
    [
        ("root", 10001, 10001),
        ("sshd", 10001, 10001),
        ("nogroup", 10001, 10001),
        ("Alice", 10001, 10001),
        ("a:b", 10001, 10001),
        ("alice", 0, 10001),
        ("alice", 999, 10001),
        ("alice", 65534, 10001),
        ("alice", 10001, 65534),
        ("alice", 10001, 100),
        ("alice", 2**31, 10001),
    ],
)
def test_passwd_and_group_rejects(user: str, uid: int, gid: int) -> None:
    with pytest.raises(ValueError):
        passwd_and_group(user, uid, gid)
