"""What lets a user continue where an ended session stopped: pure parsing and builders.

Much persists already: ``/workspace`` is the home directory, so files, shell
history and JupyterLab's layout (its workspace files under
``~/.jupyter/lab/workspaces``) stay. What does not persist is the running state:
the tmux sessions (names, windows, working directories). Sandman captures both
periodically while a session runs (an ending container may not answer) and once
more as it ends, and a restored session gets its tmux windows back and is told
which notebooks were open (JupyterLab reopens them from its workspace file).

The capture is one shell command run as the user in the container; its output is
parsed here, and the commands that recreate the tmux windows are built here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

SEPARATOR = "--- sandman-state"
WINDOW_FIELDS = "#{session_name}\t#{window_index}\t#{window_name}\t#{pane_current_path}"
CAPTURE_SCRIPT = (
    f"tmux list-windows -a -F '{WINDOW_FIELDS}' 2>/dev/null; "
    f'for f in "$HOME"/.jupyter/lab/workspaces/*.jupyterlab-workspace; do '
    f'[ -f "$f" ] && echo "{SEPARATOR}" && head -c 262144 "$f"; done; true'
)
# tmux names: what ``tmux new-session -s`` accepts without surprises.
NAME = re.compile(r"^[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]{0,63}$")
MAX_WINDOWS = 64
MAX_NOTEBOOKS = 64


@dataclass(frozen=True)
class TmuxWindow:
    session: str
    index: int
    name: str
    path: str


@dataclass(frozen=True)
class SessionState:
    tmux: tuple[TmuxWindow, ...] = ()
    notebooks: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {"tmux": [asdict(w) for w in self.tmux], "notebooks": list(self.notebooks)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SessionState:
        if not data:
            return cls()
        windows = tuple(
            TmuxWindow(str(w["session"]), int(w["index"]), str(w["name"]), str(w["path"]))
            for w in data.get("tmux", [])
        )
        return cls(windows, tuple(str(n) for n in data.get("notebooks", [])))

    @property
    def empty(self) -> bool:
        return not self.tmux and not self.notebooks


def capture_argv() -> list[str]:
    return ["sh", "-c", CAPTURE_SCRIPT]


def _in_workspace(path: str) -> bool:
    return path == "/workspace" or path.startswith("/workspace/")


def parse_capture(output: str) -> SessionState:
    """The tmux windows and open notebooks a capture printed. Anything odd (a name
    tmux would not take back, a path outside ``/workspace``) is left out."""
    head, *workspaces = output.split(SEPARATOR)
    windows: list[TmuxWindow] = []
    for line in head.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        session, index, name, path = parts
        if not NAME.fullmatch(session) or not NAME.fullmatch(name or "x"):
            continue
        windows.append(TmuxWindow(session, int(index), name, path))
    notebooks: list[str] = []
    for text in workspaces:
        try:
            data = json.loads(text).get("data", {})
        except (ValueError, AttributeError):
            continue
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if key.startswith("notebook:") and isinstance(value, dict):
                opened = (value.get("data") or {}).get("path")
                if isinstance(opened, str) and opened and opened not in notebooks:
                    notebooks.append(opened)
    return SessionState(tuple(windows[:MAX_WINDOWS]), tuple(notebooks[:MAX_NOTEBOOKS]))


def restore_commands(state: SessionState) -> list[list[str]]:
    """``tmux`` commands that recreate the captured sessions and windows, in order:
    each session with its first window, then its other windows. A directory outside
    ``/workspace`` (gone with the old container) becomes ``/workspace``."""
    commands: list[list[str]] = []
    made: set[str] = set()
    for window in sorted(state.tmux, key=lambda w: (w.session, w.index)):
        where = window.path if _in_workspace(window.path) else "/workspace"
        if window.session not in made:
            made.add(window.session)
            commands.append(
                ["tmux", "new-session", "-d", "-s", window.session, "-n", window.name, "-c", where]
            )
        else:
            commands.append(
                ["tmux", "new-window", "-d", "-t", f"{window.session}:", "-n", window.name,
                 "-c", where]
            )  # fmt: skip
    return commands


def describe(state: SessionState, source: str) -> str:
    """One line for the restored session's notes."""
    sessions = sorted({w.session for w in state.tmux})
    parts = []
    if sessions:
        parts.append(
            f"{len(state.tmux)} tmux window(s) in session(s) {', '.join(sessions)} (attach with "
            f"`tmux attach -t {sessions[0]}`)"
        )
    if state.notebooks:
        parts.append(
            f"{len(state.notebooks)} open notebook(s) ({', '.join(state.notebooks[:5])}), "
            "which JupyterLab reopens from its workspace"
        )
    if not parts:
        return f"restored from session {source}: nothing was running there to bring back"
    return f"restored from session {source}: " + "; ".join(parts)
