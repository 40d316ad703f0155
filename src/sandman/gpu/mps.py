"""The MPS control daemon (``nvidia-cuda-mps-control``): the limits of a session on a
GPU shared with MPS, set where a user cannot drop them.

``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` and ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` in a
session's environment can only lower what the control daemon allows, and a user's
shell can unset them; so the daemon is told the limits itself. It starts one MPS
server per user id, and a server takes the daemon's default limits when it starts:
so before the session's container starts, the defaults are set to the replica's
limits (all replicas of a GPU have the same ones), and any server already running
for the session's user id is given them too.

The decisions (which commands, in what order) are ``limit_commands`` and
``server_commands``, pure; ``MpsControl`` only sends text lines to the control
program's stdin and reads its answer, as ``echo get_server_list |
nvidia-cuda-mps-control`` does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandman.errors import RuntimeFailure
from sandman.gpu.sharing import GpuShare
from sandman.gpu.types import GpuInventory

__all__ = [
    "MpsControl",
    "MpsTarget",
    "limit_commands",
    "limit_session",
    "mps_target",
    "proc_uid",
    "server_commands",
]

CONTROL = ("nvidia-cuda-mps-control",)
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MpsTarget:
    """Which control daemon governs a GPU, and the GPU's device number as it sees it."""

    pipe_directory: str
    device: int


def mps_target(pipe_directory: str, gpu_index: int) -> MpsTarget:
    """With ``{index}`` in the directory there is one daemon per GPU, which sees only
    that GPU (device 0); else one daemon for all, which numbers GPUs as NVML does
    (start it with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``)."""
    if "{index}" in pipe_directory:
        return MpsTarget(pipe_directory.replace("{index}", str(gpu_index)), 0)
    return MpsTarget(pipe_directory, gpu_index)


def limit_commands(share: GpuShare, device: int) -> list[str]:
    """The defaults every MPS server started from now on takes: the replica's share of
    the GPU's threads and its device memory limit."""
    if share.mode != "mps" or share.thread_percentage is None:
        return []
    return [
        f"set_default_active_thread_percentage {share.thread_percentage}",
        f"set_default_device_pinned_mem_limit {device} {share.memory_limit}",
    ]


def server_commands(share: GpuShare, device: int, pids: Sequence[int]) -> list[str]:
    """The same limits for servers that already run for the session's user id."""
    if share.mode != "mps" or share.thread_percentage is None:
        return []
    out: list[str] = []
    for pid in pids:
        out.append(f"set_active_thread_percentage {pid} {share.thread_percentage}")
        out.append(f"set_device_pinned_mem_limit {pid} {device} {share.memory_limit}")
    return out


def proc_uid(pid: int) -> int | None:
    """The real user id of a process, from ``/proc``; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class MpsControl:
    """A client of the MPS control daemon; ``command`` is the control program."""

    def __init__(
        self,
        pipe_directory: str,
        command: Sequence[str] = CONTROL,
        uid_of: Callable[[int], int | None] = proc_uid,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.pipe_directory = pipe_directory
        self.command = tuple(command)
        self.uid_of = uid_of
        self.timeout = timeout

    def send(self, target: MpsTarget, commands: Sequence[str]) -> str:
        """Send command lines to the daemon at ``target``; its answer, or
        ``RuntimeFailure`` saying why it could not be told."""
        if not commands:
            return ""
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": target.pipe_directory}
        what = f"the MPS control daemon at {target.pipe_directory}"
        try:
            done = subprocess.run(
                self.command,
                input="".join(c + "\n" for c in commands),
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise RuntimeFailure(
                f"{self.command[0]} is not installed: GPUs shared with mps need the MPS "
                "control daemon running"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeFailure(f"could not reach {what}: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
            raise RuntimeFailure(f"{what} refused {commands[0].split()[0]}: {said}")
        return done.stdout

    def server_pids(self, target: MpsTarget) -> list[int]:
        """The MPS servers the daemon runs (``get_server_list``)."""
        answer = self.send(target, ["get_server_list"])
        return [int(word) for word in answer.split() if word.isdigit()]

    def apply(self, share: GpuShare, gpu_index: int, uid: int) -> None:
        """Limit the session of ``uid`` to its replica of the GPU at ``gpu_index``."""
        target = mps_target(self.pipe_directory, gpu_index)
        self.send(target, limit_commands(share, target.device))
        mine = [pid for pid in self.server_pids(target) if self.uid_of(pid) == uid]
        self.send(target, server_commands(share, target.device, mine))


def limit_session(
    control: MpsControl, share: GpuShare | None, inventory: GpuInventory, uid: int
) -> None:
    """Before a session starts on a real GPU shared with MPS: its limits, in the daemon.

    Nothing to do for other grants, time-sliced GPUs, or simulated ones (no daemon)."""
    if share is None or share.mode != "mps" or inventory.simulated:
        return
    for device in inventory.devices():
        if device.uuid == share.gpu_uuid:
            control.apply(share, device.index, uid)
            return
    raise RuntimeFailure(f"GPU {share.gpu_uuid} is gone; its MPS limits cannot be set")
