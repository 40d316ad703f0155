"""The MPS control daemon's client, against a stand-in of ``nvidia-cuda-mps-control``.

The stand-in is a small program that reads command lines on its stdin, as the real
control program does, records each line in its pipe directory and answers
``get_server_list`` with the PIDs it is given; the test checks the exact commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sandman.errors import RuntimeFailure
from sandman.gpu.mps import (
    MpsControl,
    limit_commands,
    limit_session,
    mps_target,
    server_commands,
)
from sandman.gpu.sharing import GpuShare
from sandman.gpu.types import GpuDevice, MigMode

STAND_IN = """
import os, sys
pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
os.makedirs(pipe, exist_ok=True)
with open(os.path.join(pipe, "received"), "a") as log:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        log.write(line + "\\n")
        word = line.split()[0]
        if word == "get_server_list":
            servers = os.path.join(pipe, "servers")
            if os.path.exists(servers):
                sys.stdout.write(open(servers).read())
        elif word not in (
            "set_default_active_thread_percentage", "set_default_device_pinned_mem_limit",
            "set_active_thread_percentage", "set_device_pinned_mem_limit", "quit",
        ):
            sys.stderr.write("unknown command " + word + "\\n")
            sys.exit(1)
"""

SHARE = GpuShare("GPU-1", "mps", 0.25, 5758, 25)


@pytest.fixture
def control(tmp_path: Path) -> MpsControl:
    program = tmp_path / "nvidia-cuda-mps-control"
    program.write_text(STAND_IN)
    uids = {4101: 20001, 4102: 20002}
    return MpsControl(
        str(tmp_path / "mps-{index}"), command=(sys.executable, str(program)), uid_of=uids.get
    )


def received(pipe: Path) -> list[str]:
    return (pipe / "received").read_text().splitlines()


def test_the_commands_for_a_share() -> None:
    assert limit_commands(SHARE, 0) == [
        "set_default_active_thread_percentage 25",
        "set_default_device_pinned_mem_limit 0 5758M",
    ]
    assert server_commands(SHARE, 2, [77]) == [
        "set_active_thread_percentage 77 25",
        "set_device_pinned_mem_limit 77 2 5758M",
    ]
    sliced = GpuShare("GPU-1", "time-slicing", 0.5, 23034, None)
    assert limit_commands(sliced, 0) == [] and server_commands(sliced, 0, [1]) == []


def test_one_daemon_per_gpu_or_one_for_all() -> None:
    per_gpu = mps_target("/run/mps-{index}", 3)
    assert (per_gpu.pipe_directory, per_gpu.device) == ("/run/mps-3", 0)
    shared = mps_target("/tmp/nvidia-mps", 3)
    assert (shared.pipe_directory, shared.device) == ("/tmp/nvidia-mps", 3)


def test_apply_sets_defaults_then_limits_the_users_running_server(
    control: MpsControl, tmp_path: Path
) -> None:
    pipe = tmp_path / "mps-1"
    pipe.mkdir()
    (pipe / "servers").write_text("4101\n4102\n")
    control.apply(SHARE, gpu_index=1, uid=20002)
    assert received(pipe) == [
        "set_default_active_thread_percentage 25",
        "set_default_device_pinned_mem_limit 0 5758M",
        "get_server_list",
        "set_active_thread_percentage 4102 25",
        "set_device_pinned_mem_limit 4102 0 5758M",
    ]


def test_apply_without_a_running_server_sets_only_the_defaults(
    control: MpsControl, tmp_path: Path
) -> None:
    control.apply(SHARE, gpu_index=0, uid=20001)
    assert received(tmp_path / "mps-0") == [
        "set_default_active_thread_percentage 25",
        "set_default_device_pinned_mem_limit 0 5758M",
        "get_server_list",
    ]


def test_a_refusal_is_a_runtime_failure_with_the_reason(control: MpsControl) -> None:
    with pytest.raises(RuntimeFailure, match="refused start_server: unknown command"):
        control.send(mps_target(control.pipe_directory, 0), ["start_server -uid 1"])


def test_a_missing_control_program_says_so(tmp_path: Path) -> None:
    missing = MpsControl(str(tmp_path), command=(str(tmp_path / "absent"),))
    with pytest.raises(RuntimeFailure, match="is not installed"):
        missing.apply(SHARE, 0, 1)


class _Inventory:
    backend = "nvml"

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated

    def devices(self) -> list[GpuDevice]:
        return [
            GpuDevice(2, "GPU-1", "NVIDIA L4", "L4", 23034, 0, 0, 30, 20.0, 72.0, MigMode.DISABLED)
        ]


def test_limit_session_only_on_real_mps_gpus(control: MpsControl, tmp_path: Path) -> None:
    limit_session(control, SHARE, _Inventory(simulated=True), 20001)  # type: ignore[arg-type]
    limit_session(control, None, _Inventory(simulated=False), 20001)  # type: ignore[arg-type]
    assert not list(tmp_path.glob("mps-*"))
    limit_session(control, SHARE, _Inventory(simulated=False), 20001)  # type: ignore[arg-type]
    assert received(tmp_path / "mps-2")[0] == "set_default_active_thread_percentage 25"
