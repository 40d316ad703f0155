"""The ``/etc/passwd`` and ``/etc/group`` files mounted into a workspace container.

The container runs as the user's uid:gid and never as root, so it cannot add the
user to the image's account database itself. Sandman generates both files on the
host and bind-mounts them read-only over the image's copies. The base entries
below are exactly those of the Debian bookworm ``minbase`` root with the
workspace packages installed (the integration tests compare them with the built
image).
"""

from __future__ import annotations

import re

__all__ = [
    "BASE_GROUP",
    "BASE_PASSWD",
    "USER_HOME",
    "USER_SHELL",
    "passwd_and_group",
]

USER_HOME = "/workspace"
USER_SHELL = "/bin/bash"

BASE_PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
"""

BASE_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
news:x:9:
uucp:x:10:
man:x:12:
proxy:x:13:
kmem:x:15:
dialout:x:20:
fax:x:21:
voice:x:22:
cdrom:x:24:
floppy:x:25:
tape:x:26:
sudo:x:27:
audio:x:29:
dip:x:30:
www-data:x:33:
backup:x:34:
operator:x:37:
list:x:38:
irc:x:39:
src:x:40:
shadow:x:42:
utmp:x:43:
video:x:44:
sasl:x:45:
plugdev:x:46:
staff:x:50:
games:x:60:
users:x:100:
nogroup:x:65534:
_ssh:x:101:
"""

# POSIX portable user names, as Debian's adduser accepts them by default.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MIN_UID = 1000
MAX_UID = 2**31 - 2


def _ids(database: str) -> tuple[set[str], set[int]]:
    names: set[str] = set()
    ids: set[int] = set()
    for line in database.splitlines():
        fields = line.split(":")
        names.add(fields[0])
        ids.add(int(fields[2]))
    return names, ids


def reserved_names() -> frozenset[str]:
    """User and group names the image already has; no Sandman user may take one."""
    return frozenset(_ids(BASE_PASSWD)[0] | _ids(BASE_GROUP)[0])


def passwd_and_group(user: str, uid: int, gid: int) -> tuple[str, str]:
    """Return the contents of ``/etc/passwd`` and ``/etc/group`` for a workspace.

    The user's entry has home ``/workspace`` and shell ``/bin/bash``; the group
    is named after the user. Raises ``ValueError`` for a name or id that is
    invalid or would shadow one of the image's own accounts (for instance uid 0,
    ``nobody`` or anything below 1000).
    """
    if not _USER_NAME.fullmatch(user):
        raise ValueError(
            f"invalid user name {user!r}: use 1-32 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or '_'"
        )
    for kind, value in (("uid", uid), ("gid", gid)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{kind} must be an integer, got {value!r}")
        if not MIN_UID <= value <= MAX_UID:
            raise ValueError(f"{kind} {value} is outside the range {MIN_UID}..{MAX_UID}")
    user_names, uids = _ids(BASE_PASSWD)
    group_names, gids = _ids(BASE_GROUP)
    if user in user_names or user in group_names:
        raise ValueError(f"user name {user!r} is reserved by the workspace image")
    if uid in uids:
        raise ValueError(f"uid {uid} is reserved by the workspace image")
    if gid in gids:
        raise ValueError(f"gid {gid} is reserved by the workspace image")
    passwd = f"{BASE_PASSWD}{user}:x:{uid}:{gid}:{user}:{USER_HOME}:{USER_SHELL}\n"
    group = f"{BASE_GROUP}{user}:x:{gid}:\n"
    return passwd, group
