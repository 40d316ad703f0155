"""Build the Sandman workspace image.

Two ways to get it:

* from scratch with ``debootstrap`` (the default; needs root, ``debootstrap`` and a
  Debian mirror, which is read from the machine's own apt sources), imported with
  ``docker import``;
* ``FROM`` a given base image (for instance a CUDA image where a registry is
  reachable) with a generated Dockerfile and ``docker build``.

Both apply the same Sandman layer from ``sandman/image/files``: the sshd
configuration, a short motd, login-shell defaults, dpkg excludes, and
``finalize.sh`` (drops the distro host keys, creates the mount points, clears
apt state). See ``README.md`` beside this file for the runtime contract.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandman.errors import SandmanError

__all__ = [
    "CONTAINER_COMMAND",
    "IMAGE_ENV",
    "LAYER_FILES",
    "PACKAGES",
    "SSH_PORT",
    "WORKSPACE_IMAGE",
    "ImageBuildError",
    "MirrorNotFound",
    "build_workspace_image",
    "debian_mirror_from_apt_sources",
    "default_apt_source_paths",
    "image_exists",
    "render_dockerfile",
]

WORKSPACE_IMAGE = "sandman-workspace:latest"
SSH_PORT = 2222
SSHD_CONFIG = "/etc/sandman/sshd_config"
CONTAINER_COMMAND: tuple[str, ...] = ("/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG)
# Only for processes started with "docker exec"; sshd builds each session's
# environment itself (see files/profile.sh).
IMAGE_ENV: tuple[tuple[str, str], ...] = (("LANG", "C.UTF-8"),)

# Installed on top of the base system. Keep this list short: it is the build time.
# C.UTF-8 ships with libc6, so no "locales" package is needed.
PACKAGES: tuple[str, ...] = (
    "openssh-server",
    "openssh-sftp-server",
    "bash",
    "coreutils",
    "procps",
    "git",
    "python3",
    "python3-pip",
    "python3-venv",
    "tmux",
    "rsync",
    "nvtop",
    "less",
    "vim-tiny",
    "ca-certificates",
    "curl",
    "iproute2",
)

# nvtop is in Debian's "contrib" component (it uses NVIDIA's proprietary NVML).
DEBOOTSTRAP_COMPONENTS: tuple[str, ...] = ("main", "contrib")


@dataclass(frozen=True)
class LayerFile:
    """A file of the Sandman layer: its name under ``files/``, target and mode."""

    source: str
    target: str
    mode: int


LAYER_FILES: tuple[LayerFile, ...] = (
    LayerFile("sshd_config", SSHD_CONFIG, 0o644),
    LayerFile("motd", "/etc/motd", 0o644),
    LayerFile("profile.sh", "/etc/profile.d/sandman.sh", 0o644),
    LayerFile("dpkg-excludes", "/etc/dpkg/dpkg.cfg.d/sandman-excludes", 0o644),
    LayerFile("finalize.sh", "/usr/local/lib/sandman/finalize.sh", 0o755),
    LayerFile("sandman-keepalive", "/usr/local/bin/sandman-keepalive", 0o755),
)
_FINALIZE = "/usr/local/lib/sandman/finalize.sh"

DEFAULT_APT_SOURCES = Path("/etc/apt")


class ImageBuildError(SandmanError):
    """The workspace image could not be built."""


class MirrorNotFound(ImageBuildError):
    """No Debian mirror could be read from the machine's apt sources."""


# --------------------------------------------------------------------------- mirror


def default_apt_source_paths(root: Path = DEFAULT_APT_SOURCES) -> list[Path]:
    """``sources.list`` then ``sources.list.d/*.list`` and ``*.sources``, sorted."""
    paths = [root / "sources.list"]
    paths += sorted(Path(p) for p in glob.glob(str(root / "sources.list.d" / "*.list")))
    paths += sorted(Path(p) for p in glob.glob(str(root / "sources.list.d" / "*.sources")))
    return paths


@dataclass(frozen=True)
class _AptSource:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _one_line_sources(text: str) -> Iterator[_AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Drop "[arch=amd64 signed-by=...]" options.
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) < 3:
            continue
        yield _AptSource((fields[0],), (fields[1],), (fields[2],), tuple(fields[3:]))


def _deb822_sources(text: str) -> Iterator[_AptSource]:
    stanzas: list[dict[str, str]] = [{}]
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanzas[-1]:
                stanzas.append({})
            key = None
            continue
        if raw[0] in " \t":
            if key is not None:
                stanzas[-1][key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        stanzas[-1][key] = value.strip()
    for stanza in stanzas:
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        yield _AptSource(
            tuple(stanza.get("types", "").split()),
            tuple(stanza.get("uris", "").split()),
            tuple(stanza.get("suites", "").split()),
            tuple(stanza.get("components", "").split()),
        )


def _is_debian_archive(uri: str) -> bool:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https", "ftp", "file"):
        return False
    return parts.path.rstrip("/").endswith("/debian")


def _is_release_suite(candidate: str, suite: str | None) -> bool:
    if suite is not None:
        return candidate == suite
    # A codename such as "bookworm", not "bookworm-security"/"-updates"/"-backports".
    return re.fullmatch(r"[a-z]+", candidate) is not None


def debian_mirror_from_apt_sources(
    paths: Iterable[Path] | None = None, *, suite: str | None = None
) -> str:
    """Return the machine's Debian main archive URI, e.g. ``http://host/debian``.

    Reads one-line ``.list`` files and deb822 ``.sources`` files (by default the
    ones under ``/etc/apt``) and returns the first ``deb`` entry whose URI path
    ends in ``/debian`` (so not ``/debian-security`` or a third-party repository)
    whose suites include ``suite`` (any plain release codename when ``suite`` is
    None) and whose components include ``main``. Raises ``MirrorNotFound`` when
    there is none.
    """
    chosen = default_apt_source_paths() if paths is None else list(paths)
    for path in chosen:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        parser = _deb822_sources if path.name.endswith(".sources") else _one_line_sources
        for source in parser(text):
            if "deb" not in source.types or "main" not in source.components:
                continue
            if not any(_is_release_suite(s, suite) for s in source.suites):
                continue
            for uri in source.uris:
                if _is_debian_archive(uri):
                    return uri.rstrip("/")
    looked = ", ".join(str(p) for p in chosen) or "(no files)"
    wanted = f"suite {suite!r}" if suite else "a release suite"
    raise MirrorNotFound(
        f"no Debian archive (a 'deb' URI ending in /debian with {wanted} and component "
        f"'main') found in the apt sources ({looked}); pass the mirror explicitly with "
        "--mirror URL"
    )


# --------------------------------------------------------------------------- docker


def _client(timeout: int = 60) -> Any:
    import docker

    try:
        return docker.from_env(version="auto", timeout=timeout)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"the Docker engine does not answer: {exc}") from exc


def image_exists(tag: str = WORKSPACE_IMAGE) -> bool:
    """Whether the engine has an image named ``tag``."""
    import docker

    client = _client()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True


RECIPE_LABEL = "sandman.recipe"


def recipe_digest() -> str:
    """A digest of everything the image is built from, kept as an image label, so
    that setting up again rebuilds an image made from an older recipe."""
    digest = hashlib.sha256()
    source = _layer_dir()
    for item in LAYER_FILES:
        digest.update(f"{item.source}:{item.target}:{item.mode}\n".encode())
        digest.update((source / item.source).read_bytes())
    digest.update(json.dumps([list(PACKAGES), list(IMAGE_ENV), list(CONTAINER_COMMAND)]).encode())
    return digest.hexdigest()[:16]


def image_is_current(tag: str = WORKSPACE_IMAGE) -> bool:
    """Whether ``tag`` exists and was built from this version's recipe."""
    import docker

    client = _client()
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return bool(labels.get(RECIPE_LABEL) == recipe_digest())


def _dockerfile_changes() -> list[str]:
    changes = [f"ENV {name}={value}" for name, value in IMAGE_ENV]
    changes += [
        f"LABEL {RECIPE_LABEL}={recipe_digest()}",
        f"EXPOSE {SSH_PORT}/tcp",
        "WORKDIR /workspace",
        f"CMD {json.dumps(list(CONTAINER_COMMAND))}",
    ]
    return changes


# --------------------------------------------------------------------------- layer


def _layer_dir() -> Any:
    return resources.files("sandman.image") / "files"


def _copy_layer(destination: Path) -> None:
    """Write the layer files into ``destination`` laid out as the image root."""
    source = _layer_dir()
    for item in LAYER_FILES:
        target = destination / item.target.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / item.source).read_bytes())
        os.chmod(target, item.mode)


def render_dockerfile(base_image: str, packages: Sequence[str] = PACKAGES) -> str:
    """Return the Dockerfile that adds the Sandman workspace layer ``FROM base_image``.

    The build context must hold the layer files laid out under ``rootfs/`` as in
    the image (``build_workspace_image`` prepares it). Pure: no I/O.
    """
    if not base_image or any(c.isspace() for c in base_image):
        raise ValueError(f"invalid base image reference {base_image!r}")
    for package in packages:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
            raise ValueError(f"invalid package name {package!r}")
    install = " \\\n        ".join(sorted(packages))
    lines = [
        "# Generated by sandman.image.build.render_dockerfile; do not edit.",
        f"FROM {base_image}",
        "USER root",
        'SHELL ["/bin/sh", "-eu", "-c"]',
        "COPY rootfs/ /",
        "RUN export DEBIAN_FRONTEND=noninteractive; \\",
        "    apt-get update; \\",
        "    apt-get install -y --no-install-recommends \\",
        f"        {install}; \\",
        f"    {_FINALIZE}",
    ]
    lines += _dockerfile_changes()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- build


@contextmanager
def _timed(log: Callable[[str], None], what: str) -> Iterator[None]:
    start = time.monotonic()
    log(f"{what} ...")
    yield
    log(f"{what}: done in {time.monotonic() - start:.1f}s")


def _run(argv: Sequence[str], log: Callable[[str], None], what: str) -> None:
    """Run a command, keeping its output and showing its tail if it fails."""
    proc = subprocess.run(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _import_rootfs(rootfs: Path, tag: str, log: Callable[[str], None]) -> None:
    client = _client(timeout=1800)
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None
    pipe = tar.stdout
    chunks = iter(lambda: pipe.read(1 << 20), b"")
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    try:
        result = client.api.import_image(
            src=chunks,
            repository=repository,
            tag=version,
            changes=_dockerfile_changes(),
            stream_src=True,
        )
    except Exception as exc:
        tar.kill()
        raise ImageBuildError(f"docker import failed: {exc}") from exc
    finally:
        _, err = tar.communicate()
        client.close()
    if tar.returncode != 0:
        raise ImageBuildError(f"tar of {rootfs} failed: {err.decode(errors='replace')}")
    for line in str(result).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise ImageBuildError(f"docker import failed: {message['error']}")


def _build_debootstrap(tag: str, mirror: str, suite: str, log: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the workspace image with debootstrap needs root")
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None
    )
    if debootstrap is None:
        raise ImageBuildError(
            "debootstrap is not installed (apt-get install debootstrap), "
            "or build FROM a base image with --from IMAGE"
        )
    workdir = Path(tempfile.mkdtemp(prefix="sandman-rootfs-"))
    rootfs = workdir / "root"
    try:
        with _timed(log, f"debootstrap {suite} from {mirror}"):
            _run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--components={','.join(DEBOOTSTRAP_COMPONENTS)}",
                    f"--include={','.join(PACKAGES)}",
                    suite,
                    str(rootfs),
                    mirror,
                ],
                log,
                "debootstrap",
            )
        with _timed(log, "applying the Sandman layer"):
            _copy_layer(rootfs)
            _run(["chroot", str(rootfs), _FINALIZE], log, "finalize.sh in the new root")
        with _timed(log, f"docker import as {tag}"):
            _import_rootfs(rootfs, tag, log)
    finally:
        _remove_tree(workdir)


def _remove_tree(path: Path) -> None:
    # debootstrap may leave /proc or /sys mounted in the root if it was interrupted.
    for mount in ("proc", "sys", "dev/pts"):
        mountpoint = path / "root" / mount
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _build_from_base(tag: str, base_image: str, log: Callable[[str], None]) -> None:
    client = _client(timeout=3600)
    with tempfile.TemporaryDirectory(prefix="sandman-build-") as context:
        (Path(context) / "Dockerfile").write_text(render_dockerfile(base_image))
        _copy_layer(Path(context) / "rootfs")
        try:
            with _timed(log, f"docker build FROM {base_image} as {tag}"):
                for chunk in client.api.build(path=context, tag=tag, rm=True, decode=True):
                    if "error" in chunk:
                        raise ImageBuildError(f"docker build failed: {chunk['error']}")
                    text = str(chunk.get("stream", "")).rstrip()
                    if text:
                        log(text)
        finally:
            client.close()


def build_workspace_image(
    tag: str = WORKSPACE_IMAGE,
    *,
    base_image: str | None = None,
    mirror: str | None = None,
    suite: str = "bookworm",
    log: Callable[[str], None] = print,
) -> None:
    """Build (or rebuild) the workspace image ``tag``.

    Without ``base_image``: debootstrap ``suite`` from ``mirror`` (default: the
    Debian archive in this machine's apt sources) and ``docker import`` it. With
    ``base_image``: ``docker build`` the Dockerfile of ``render_dockerfile``.
    """
    start = time.monotonic()
    if base_image is not None:
        _build_from_base(tag, base_image, log)
    else:
        chosen = mirror or debian_mirror_from_apt_sources(suite=suite)
        _build_debootstrap(tag, chosen.rstrip("/"), suite, log)
    log(f"built {tag} in {time.monotonic() - start:.1f}s")
