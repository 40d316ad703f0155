"""The decisions behind workspace images, with no disk: which action a workspace
needs, how an image is resized (or why not), when sparse images overcommit the
disk, and what the mount table says."""

from __future__ import annotations

import pytest

from sandman.domain import MAX_WORKSPACE_QUOTA, MIN_WORKSPACE_QUOTA, checked_workspace_quota
from sandman.errors import Conflict, InvalidRequest
from sandman.runtime.docker.quota import (
    CAP_SYS_RESOURCE,
    has_capability,
    mkfs_argv,
    mount_of,
    overcommit,
    parse_mountinfo,
    plan_resize,
    project_quotas_available,
    resize_argv,
    workspace_action,
)
from sandman.sizes import GIB, MIB


@pytest.mark.parametrize(
    ("mounted", "files", "image", "quota", "action"),
    [
        (True, False, True, 50 * GIB, "use_mounted"),
        (True, False, True, None, "use_mounted"),
        # a plain directory holding files wins: only a migration moves it
        (False, True, False, 50 * GIB, "use_directory"),
        (False, True, True, 50 * GIB, "use_directory"),
        # an image is mounted even with quotas off: turning them off hides no one's files
        (False, False, True, None, "mount_image"),
        (False, False, True, 50 * GIB, "mount_image"),
        (False, False, False, 50 * GIB, "create_image"),
        (False, False, False, None, "use_directory"),
    ],
)
def test_what_a_workspace_needs(
    mounted: bool, files: bool, image: bool, quota: int | None, action: str
) -> None:
    assert workspace_action(mounted, files, image, quota) == action


def test_growing_is_online_where_the_process_may() -> None:
    assert plan_resize(GIB, 10 * MIB, 2 * GIB, live=True, online_grow=True) == "online"
    assert plan_resize(GIB, 10 * MIB, 2 * GIB, live=False, online_grow=True) == "online"
    assert plan_resize(GIB, 10 * MIB, 2 * GIB, live=False, online_grow=False) == "offline"
    with pytest.raises(Conflict, match="CAP_SYS_RESOURCE"):
        plan_resize(GIB, 10 * MIB, 2 * GIB, live=True, online_grow=False)


def test_shrinking_needs_the_workspace_out_of_use_and_room_for_what_it_holds() -> None:
    assert plan_resize(2 * GIB, 10 * MIB, GIB, live=False, online_grow=True) == "offline"
    with pytest.raises(Conflict, match="end the session"):
        plan_resize(2 * GIB, 10 * MIB, GIB, live=True, online_grow=True)
    with pytest.raises(Conflict, match=r"holds 1\.5G"):
        plan_resize(2 * GIB, 3 * GIB // 2, GIB, live=False, online_grow=True)
    assert plan_resize(GIB, 10 * MIB, GIB, live=True, online_grow=False) == "none"


def test_quota_limits() -> None:
    assert checked_workspace_quota(MIN_WORKSPACE_QUOTA) == MIN_WORKSPACE_QUOTA
    assert checked_workspace_quota(MAX_WORKSPACE_QUOTA) == MAX_WORKSPACE_QUOTA
    for wrong in (0, MIN_WORKSPACE_QUOTA - 1, MAX_WORKSPACE_QUOTA + 1, -GIB):
        with pytest.raises(InvalidRequest, match="between 64M"):
            checked_workspace_quota(wrong)


def test_sparse_images_overcommit_when_they_promise_more_than_the_disk_has() -> None:
    # two 50 GiB images holding 1 GiB each, 120 GiB free: 100 <= 122
    assert overcommit([(50 * GIB, GIB), (50 * GIB, GIB)], 120 * GIB) is None
    found = overcommit([(50 * GIB, GIB), (50 * GIB, GIB)], 90 * GIB)
    assert found is not None and (found.promised, found.available) == (100 * GIB, 92 * GIB)
    message = found.message("/srv/workspaces/.images")
    assert "100G" in message and "92G" in message and "2 images" in message
    assert overcommit([], 0) is None


def test_the_capability_to_grow_online() -> None:
    status = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
    assert has_capability(status, CAP_SYS_RESOURCE)
    # a container without CAP_SYS_RESOURCE (bit 24)
    assert not has_capability(status.replace("1ffffffffff", "1fffeffffff"), CAP_SYS_RESOURCE)
    assert not has_capability("Name:\tx\n", CAP_SYS_RESOURCE)


def test_file_system_commands() -> None:
    argv = mkfs_argv("/w/.images/alice.img", 20001, 20002)
    assert argv[0] == "mkfs.ext4" and argv[-1] == "/w/.images/alice.img"
    assert "root_owner=20001:20002" in argv[argv.index("-E") + 1]
    assert argv[argv.index("-m") + 1] == "0" and argv[argv.index("-b") + 1] == "4096"
    assert resize_argv("/dev/loop3", None) == ["resize2fs", "/dev/loop3"]
    # whole 4 KiB blocks, in KiB
    assert resize_argv("a.img", 100 * MIB + 5) == ["resize2fs", "a.img", f"{100 * 1024}K"]


MOUNTINFO = """\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 22 0:26 / /srv rw,relatime shared:2 - xfs /dev/sdb1 rw,attr2,inode64,prjquota
31 30 7:3 / /srv/workspaces/alice rw,nosuid,nodev,relatime - ext4 /dev/loop3 rw
32 22 0:27 / /mnt/with\\040space rw - tmpfs tmpfs rw
"""


def test_the_mount_table() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/",
        "/srv",
        "/srv/workspaces/alice",
        "/mnt/with space",
    ]
    alice = mount_of("/srv/workspaces/alice", mounts)
    assert alice is not None and alice.source == "/dev/loop3"
    assert {"nosuid", "nodev"} <= alice.options
    inside = mount_of("/srv/workspaces/alice/data/x", mounts)
    assert inside is not None and inside.source == "/dev/loop3"
    root = mount_of("/srv/workspaces", mounts)
    assert root is not None and root.fs_type == "xfs"
    other = mount_of("/srvx", mounts)
    assert other is not None and other.mount_point == "/"


def test_project_quotas_are_recognised() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert project_quotas_available(mount_of("/srv/workspaces", mounts))
    assert not project_quotas_available(mount_of("/home", mounts))  # ext4 without prjquota
    assert not project_quotas_available(mount_of("/mnt/with space", mounts))
    assert not project_quotas_available(None)
