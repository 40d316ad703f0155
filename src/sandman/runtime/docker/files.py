"""How a session's files and workspace reach a Docker container: host paths, bind-mounted.

Layout under the data directory::

    sessions/<session_id>/files/<path in the container>   mounted read-only, one by one

Workspaces live under the workspace root and are never deleted here: discarding
a session removes only ``sessions/<id>``. A workspace with a quota is an image
mounted on its directory (``images``); one without is a plain directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandman.domain import validate_user_id
from sandman.fsutil import write_private
from sandman.runtime.base import SessionLaunch, Workspace
from sandman.runtime.docker.images import WorkspaceImages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = True


def _relative(path: str) -> PurePosixPath:
    """The container path as a relative one; refuses anything that could climb out."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2:
        raise ValueError(f"session file path {path!r} must be absolute and plain")
    return pure.relative_to("/")


class HostFiles:
    def __init__(self, data_dir: Path, workspace_root: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.workspace_root = workspace_root.resolve()
        self.images = WorkspaceImages(self.workspace_root)

    def workspace(self, user_id: str) -> Path:
        return self.workspace_root / validate_user_id(user_id)

    def existing_workspace_owner(self, user_id: str) -> int | None:
        """The uid owning a workspace left from an earlier install, to keep files readable."""
        path = self.workspace(user_id)
        return path.stat().st_uid if path.is_dir() else None

    def ensure_workspace(self, workspace: Workspace) -> Path:
        """The workspace, ready to mount; the caller holds ``images.lock`` for the user."""
        mounted = self.images.ensure(workspace)
        if mounted is not None:
            return mounted
        path = self.workspace(workspace.user_id)
        self.workspace_root.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            path.mkdir(mode=0o750)
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise RuntimeError(f"{path} exists and is not a directory") from None
            if path.stat().st_uid != workspace.uid:
                log.warning(
                    "workspace %s is owned by uid %s, not %s",
                    path,
                    path.stat().st_uid,
                    workspace.uid,
                )
            return path
        os.chown(path, workspace.uid, workspace.gid)
        return path

    def session_dir(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id

    def write(self, launch: SessionLaunch) -> list[Mount]:
        """Write the session's files and return the mounts: the workspace, then each file."""
        uid, gid = launch.workspace.uid, launch.workspace.gid
        root = self.session_dir(launch.session_id) / "files"
        mounts = [
            Mount(
                str(self.ensure_workspace(launch.workspace)),
                launch.workspace.mount_path,
                read_only=False,
            )
        ]
        for item in launch.files:
            host = root / _relative(item.path)
            host.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            owner = (uid, gid) if item.owned_by_user else (0, 0)
            write_private(host, item.content, item.mode, *owner)
            mounts.append(Mount(str(host), item.path, read_only=True))
        return mounts

    def discard(self, session_id: str) -> None:
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)
