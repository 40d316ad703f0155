"""Parsing a captured session state and the tmux commands that bring it back."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sandman.environments.state import (
    SEPARATOR,
    SessionState,
    TmuxWindow,
    describe,
    parse_capture,
    restore_commands,
)

WORKSPACE_FILE = json.dumps(
    {
        "data": {
            "layout-restorer:data": {"main": {}},
            "notebook:train.ipynb": {"data": {"path": "train.ipynb", "factory": "Notebook"}},
            "notebook:eval/look.ipynb": {"data": {"path": "eval/look.ipynb"}},
            "editor:notes.md": {"data": {"path": "notes.md"}},
        },
        "metadata": {"id": "default"},
    }
)


def test_a_capture_gives_windows_and_notebooks() -> None:
    output = (
        "work\t0\tshell\t/workspace/proj\n"
        "work\t1\ttrain\t/workspace/proj/runs\n"
        "misc\t0\ttop\t/tmp\n"
        "bad;name\t0\tx\t/workspace\n"  # a name tmux would not take back: left out
        "not a window line\n"
        f"{SEPARATOR}\n{WORKSPACE_FILE}\n{SEPARATOR}\nnot json\n"
    )
    state = parse_capture(output)
    assert state.tmux == (
        TmuxWindow("work", 0, "shell", "/workspace/proj"),
        TmuxWindow("work", 1, "train", "/workspace/proj/runs"),
        TmuxWindow("misc", 0, "top", "/tmp"),
    )
    assert state.notebooks == ("train.ipynb", "eval/look.ipynb")
    assert SessionState.from_json(state.as_json()) == state


def test_restoring_makes_each_session_then_its_windows_in_the_workspace() -> None:
    state = SessionState(
        (
            TmuxWindow("work", 1, "train", "/workspace/proj/runs"),
            TmuxWindow("work", 0, "shell", "/workspace/proj"),
            TmuxWindow("misc", 0, "top", "/tmp"),
        )
    )
    assert restore_commands(state) == [
        ["tmux", "new-session", "-d", "-s", "misc", "-n", "top", "-c", "/workspace"],
        ["tmux", "new-session", "-d", "-s", "work", "-n", "shell", "-c", "/workspace/proj"],
        ["tmux", "new-window", "-d", "-t", "work:", "-n", "train", "-c", "/workspace/proj/runs"],
    ]
    assert "tmux attach -t misc" in describe(state, "s1")
    assert "nothing was running" in describe(SessionState(), "s1")


@given(st.text(max_size=400))
def test_any_output_parses_without_error_and_every_window_is_safe(output: str) -> None:
    state = parse_capture(output)
    for argv in restore_commands(state):
        assert argv[0] == "tmux" and all("\n" not in part for part in argv)
        where = argv[argv.index("-c") + 1]
        assert where == "/workspace" or where.startswith("/workspace/")
