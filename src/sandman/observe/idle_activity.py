"""What a session did, gathered for idle decisions: one look inside it (a *probe*)
and the metrics collector's samples, kept per session in memory.

The probe is one short shell script run through the runtime's ``exec`` as the
session's own user (sessions have no capabilities, and need none for this). It
prints what only the inside can tell: when its terminals last read input (a
terminal's access time, as ``w`` reports idle time), the keepalive file's time,
whether a file transfer runs, and the container's CPU counter before and after
its own work, so that its own cost stays out of the CPU figure. Parsing and
bookkeeping are pure; the tracker never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sandman.observe.idle import Activity, Warned
from sandman.observe.samples import SessionActivity

KEEPALIVE_PATH = "/workspace/.sandman/keepalive"
TRANSFER_COMMANDS = ("sftp-server", "scp", "rsync")

# The container's CPU counter: cgroup v2 (usage_usec in cpu.stat) or v1 (cpuacct, ns).
PROBE_SCRIPT = rf"""
u() {{
  if [ -r /sys/fs/cgroup/cpu.stat ]; then
    sed -n 's/^usage_usec \([0-9]*\)$/\1 us/p' /sys/fs/cgroup/cpu.stat
  elif [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
    echo "$(cat /sys/fs/cgroup/cpuacct/cpuacct.usage) ns"
  fi
}}
echo "cpu $(date +%s.%N) $(u)"
stat -c 'tty %u %X' /dev/pts/[0-9]* 2>/dev/null
stat -c 'keepalive %Y' {KEEPALIVE_PATH} 2>/dev/null
echo "transfers $(cat /proc/[0-9]*/comm 2>/dev/null | grep -cxE '{"|".join(TRANSFER_COMMANDS)}')"
echo "cpu_end $(date +%s.%N) $(u)"
exit 0
"""


def probe_argv() -> list[str]:
    return ["sh", "-c", PROBE_SCRIPT]


@dataclass(frozen=True)
class CpuReading:
    at: float  # seconds since the epoch
    usage: float  # CPU seconds the container has used


@dataclass(frozen=True)
class Probe:
    """What one look inside a session found; times are seconds since the epoch."""

    terminal_input: float | None = None  # the latest input on a terminal of its user
    keepalive: float | None = None  # the keepalive file's time; may lie ahead
    transfers: int = 0  # file transfers running
    cpu_start: CpuReading | None = None
    cpu_end: CpuReading | None = None


def _cpu(fields: list[str]) -> CpuReading | None:
    """``<epoch> <n> us|ns``; None when the container showed no counter."""
    if len(fields) != 3 or fields[2] not in ("us", "ns"):
        return None
    try:
        at, usage = float(fields[0]), int(fields[1])
    except ValueError:
        return None
    return CpuReading(at, usage / (1e6 if fields[2] == "us" else 1e9))


def parse_probe(output: str, uid: int) -> Probe:
    """The probe's output; lines it does not know are ignored (an image without
    ``stat``, say, just leaves that evidence out)."""
    terminal: float | None = None
    keepalive: float | None = None
    transfers = 0
    start = end = None
    for line in output.splitlines():
        kind, _, rest = line.strip().partition(" ")
        fields = rest.split()
        try:
            if kind == "tty" and len(fields) == 2 and int(fields[0]) == uid:
                moment = float(fields[1])
                terminal = moment if terminal is None else max(terminal, moment)
            elif kind == "keepalive" and len(fields) == 1:
                keepalive = float(fields[0])
            elif kind == "transfers" and len(fields) == 1:
                transfers = int(fields[0])
        except ValueError:
            continue
        if kind == "cpu":
            start = _cpu(fields)
        elif kind == "cpu_end":
            end = _cpu(fields)
    return Probe(terminal, keepalive, transfers, start, end)


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


@dataclass
class SessionWatch:
    """One session as this process has seen it since ``since``."""

    since: datetime
    compute: datetime | None = None
    terminal: datetime | None = None
    transfer: datetime | None = None
    keepalive: datetime | None = None
    cpu_percent: float | None = None
    gpu_percent: float | None = None
    gpu_unknown: str | None = None  # why its GPU's activity could not be seen last time
    gpu_unseen: datetime | None = None  # the last moment it could not be seen
    last_cpu: CpuReading | None = None  # the counter at the end of the previous probe
    warned: Warned | None = None


class ActivityTracker:
    """The latest evidence per session, in memory.

    A session first seen (after Sandman's start, or after another process held the
    sweep) is watched from that moment, which counts as activity: CPU and GPU
    could not be watched before it, and what was not seen is never held against
    a session.
    """

    def __init__(self, cpu_percent: float, gpu_percent: float) -> None:
        self.cpu_threshold = cpu_percent
        self.gpu_threshold = gpu_percent
        self.watches: dict[str, SessionWatch] = {}

    def watch(self, session_id: str, now: datetime) -> SessionWatch:
        found = self.watches.get(session_id)
        if found is None:
            found = self.watches[session_id] = SessionWatch(since=now)
        return found

    def forget_others(self, session_ids: set[str]) -> None:
        """Drop what is kept of sessions no longer watched (ended, or reclaim off)."""
        for session_id in set(self.watches) - session_ids:
            del self.watches[session_id]

    def reset(self) -> None:
        self.watches.clear()

    def record_probe(self, session_id: str, probe: Probe, now: datetime) -> None:
        watch = self.watch(session_id, now)
        if probe.terminal_input is not None:
            watch.terminal = _later(watch.terminal, min(_moment(probe.terminal_input), now))
        # The file's own time, even when moved back: it says what the user wants now.
        watch.keepalive = _moment(probe.keepalive) if probe.keepalive is not None else None
        if probe.transfers > 0:
            watch.transfer = now
        previous, start = watch.last_cpu, probe.cpu_start
        if previous is not None and start is not None:
            seconds = start.at - previous.at
            used = start.usage - previous.usage
            if seconds > 0 and used >= 0:  # a restarted container's counter starts again
                watch.cpu_percent = 100.0 * used / seconds
                if watch.cpu_percent >= self.cpu_threshold:
                    watch.compute = now
        watch.last_cpu = probe.cpu_end or start

    def record_sample(
        self,
        session_id: str,
        sample: SessionActivity | None,
        now: datetime,
        unmeasured: str | None = None,
    ) -> None:
        """The metrics collector's figures for the last interval (when it runs).

        ``unmeasured`` is why GPU activity is unknown when there is no figure at all
        (a deployment whose GPUs only the collector's source sees); None: no figure
        is just no GPU evidence, as where the collector is the only way to see it.
        """
        if sample is None:
            if unmeasured is not None:
                watch = self.watch(session_id, now)
                watch.gpu_unknown, watch.gpu_unseen = unmeasured, now
            return
        watch = self.watch(session_id, now)
        at = min(sample.at, now)
        busy = False
        if sample.cpu_percent is not None:
            watch.cpu_percent = sample.cpu_percent
            busy = sample.cpu_percent >= self.cpu_threshold
        watch.gpu_unknown = sample.gpu_unknown
        if sample.gpu_unknown is not None:
            watch.gpu_unseen, watch.gpu_percent = now, None
        elif sample.gpu_active is not None:
            watch.gpu_percent = 100.0 * sample.gpu_active
            busy = busy or watch.gpu_percent >= self.gpu_threshold
        if busy:
            watch.compute = _later(watch.compute, at)

    def activity(
        self, session_id: str, connection: datetime | None, has_gpu: bool, now: datetime
    ) -> Activity:
        watch = self.watch(session_id, now)
        return Activity(
            watched_since=watch.since,
            connection=connection,
            terminal=watch.terminal,
            transfer=watch.transfer,
            keepalive=watch.keepalive,
            compute=watch.compute,
            cpu_percent=watch.cpu_percent,
            gpu_percent=watch.gpu_percent,
            has_gpu=has_gpu,
            gpu_unknown=watch.gpu_unknown,
            gpu_unseen=watch.gpu_unseen,
        )
