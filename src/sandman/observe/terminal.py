"""Messages written to a user's open terminals inside their session.

Sessions run with no capabilities, so nothing inside can broadcast (``wall``
needs a set-gid ``tty`` group). Instead Sandman runs a short shell command in
the session *as the session's own uid:gid* and writes to each ``/dev/pts/*``
that uid owns: sshd hands every login's terminal to its user, so those are
exactly the user's open shells, and the user's uid may write to them without
any privilege. Other terminals (none, in a one-user container) are skipped.

The text is cleaned first: an alert's labels and annotations come from outside,
and a terminal obeys escape sequences, so every control character but the line
break is dropped, and lines end in CR LF (the terminal may be in raw mode).

Both the idle warnings and the notifications use ``write_to_terminals``.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from sandman.errors import RuntimeFailure
from sandman.runtime.base import SessionRuntime

log = logging.getLogger(__name__)

MAX_CHARS = 2000  # a terminal message is a heads-up, not a report
PER_TERMINAL_SECONDS = 2  # a terminal stopped with Ctrl-S must not hold up the others

# $1: the message. A terminal counts when it is a character device the caller owns
# and may write; each write is cut off on its own. Prints how many were written.
SCRIPT = (
    "n=0; for t in /dev/pts/[0-9]*; do "
    '[ -c "$t" ] && [ -O "$t" ] && [ -w "$t" ] || continue; '
    f'timeout {PER_TERMINAL_SECONDS} sh -c \'printf "%s" "$1" > "$2"\' _ "$1" "$t" 2>/dev/null '
    "&& n=$((n+1)); "
    'done; echo "$n"'
)


def clean(text: str) -> str:
    """``text`` without control characters (escape sequences included), lines kept."""
    kept = []
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        if char == "\n" or unicodedata.category(char)[0] != "C":
            kept.append(char)
        elif char == "\t":
            kept.append(" ")
    return "".join(kept)


def terminal_text(subject: str, text: str) -> str:
    """The message as a terminal shows it: set apart by blank lines, CR LF line ends."""
    body = clean(text).strip()
    if len(body) > MAX_CHARS:
        body = body[: MAX_CHARS - 1] + "…"
    head = clean(subject).replace("\n", " ").strip()[:200]
    lines = ["", f"*** Sandman: {head} ***", *body.split("\n"), ""]
    return "\r\n".join(lines) + "\r\n"


def terminal_argv(message: str) -> list[str]:
    """The command that writes ``message`` (already ``terminal_text``) to the caller's
    terminals; the message travels as an argument, never through the shell's parser."""
    return ["sh", "-c", SCRIPT, "sandman-message", message]


def written_count(output: str) -> int:
    """How many terminals the command wrote to (its last output line)."""
    lines = output.strip().splitlines()
    try:
        return int(lines[-1]) if lines else 0
    except ValueError:
        return 0


def write_to_terminals(
    runtime: SessionRuntime,
    container: str,
    user: str,
    subject: str,
    text: str,
    timeout: float = 10.0,
) -> int:
    """Write ``subject`` and ``text`` to the open terminals of ``user`` (``uid:gid``, the
    session's own) in ``container``; returns how many it reached (0: none open).

    Raises ``RuntimeFailure`` when the command could not run or was cut off, and
    ``RuntimeUnavailable`` when the runtime does not answer.
    """
    argv: Sequence[str] = terminal_argv(terminal_text(subject, text))
    result = runtime.exec(container, argv, user=user, timeout=timeout)
    if result.timed_out:
        raise RuntimeFailure(f"writing to the terminals in {container} took over {timeout:g}s")
    if result.exit_code != 0:
        raise RuntimeFailure(
            f"writing to the terminals in {container} failed ({result.exit_code}): "
            f"{clean(result.output)[-200:]}"
        )
    return written_count(result.output)
