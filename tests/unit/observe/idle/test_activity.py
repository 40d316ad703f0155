"""Looking inside a session (the probe's output) and keeping what it showed: CPU
between two looks, without the probe's own work; terminals, keepalive and
transfers; the metrics collector's CPU and GPU figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandman.observe.idle_activity import (
    KEEPALIVE_PATH,
    PROBE_SCRIPT,
    ActivityTracker,
    CpuReading,
    Probe,
    parse_probe,
)
from sandman.observe.samples import SessionActivity

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
E0 = T0.timestamp()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_probe_reads_what_only_the_inside_can_tell() -> None:
    assert KEEPALIVE_PATH in PROBE_SCRIPT and "/dev/pts/" in PROBE_SCRIPT
    assert "cpu.stat" in PROBE_SCRIPT and "cpuacct.usage" in PROBE_SCRIPT


def test_parsing_cgroup_v1_output() -> None:
    output = (
        f"cpu {E0:.6f} 37670811 ns\n"
        f"tty 20001 {E0 - 300:.0f}\n"
        f"tty 20001 {E0 - 60:.0f}\n"
        f"tty 0 {E0:.0f}\n"  # root's terminal: not the user's input
        "keepalive 1893488400\n"
        "transfers 2\n"
        f"cpu_end {E0 + 0.01:.6f} 44443608 ns\n"
    )
    probe = parse_probe(output, uid=20001)
    assert probe.terminal_input == E0 - 60
    assert probe.keepalive == 1893488400
    assert probe.transfers == 2
    assert probe.cpu_start == CpuReading(E0, 0.037670811)
    assert probe.cpu_end is not None and abs(probe.cpu_end.usage - 0.044443608) < 1e-9


def test_parsing_cgroup_v2_and_what_is_missing_or_odd() -> None:
    probe = parse_probe(f"cpu {E0} 2500000 us\nnoise\ntty x y\ntransfers 0\ncpu_end 1 2\n", 1)
    assert probe == Probe(cpu_start=CpuReading(E0, 2.5))
    assert parse_probe("", 1) == Probe()


def probe(seconds: float, cpu: float, work: float = 0.005, **found: object) -> Probe:
    """A look at ``seconds`` after T0 when the container had used ``cpu`` seconds."""
    return Probe(
        cpu_start=CpuReading(E0 + seconds, cpu),
        cpu_end=CpuReading(E0 + seconds + 0.01, cpu + work),
        **found,  # type: ignore[arg-type]
    )


def test_cpu_between_looks_leaves_out_the_probes_own_work() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    tracker.record_probe("s", probe(0, 10.0, work=1.0), at(0))
    assert tracker.watch("s", at(0)).cpu_percent is None  # one look: no rate yet
    tracker.record_probe("s", probe(30, 11.0 + 0.6), at(30))  # 0.6 s in ~30 s: 2%
    watch = tracker.watch("s", at(30))
    assert watch.cpu_percent is not None and 1.9 < watch.cpu_percent < 2.1
    assert watch.compute is None
    tracker.record_probe("s", probe(60, 11.605 + 15.0), at(60))  # half a core
    assert tracker.watch("s", at(60)).compute == at(60)


def test_a_restarted_containers_counter_is_a_new_start() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    tracker.record_probe("s", probe(0, 500.0), at(0))
    tracker.record_probe("s", probe(30, 0.5), at(30))  # counter went back
    assert tracker.watch("s", at(30)).compute is None
    tracker.record_probe("s", probe(60, 30.5), at(60))
    assert tracker.watch("s", at(60)).compute == at(60)


def test_terminals_keepalive_and_transfers() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    tracker.record_probe("s", probe(0, 0, terminal_input=E0 - 5), at(0))
    tracker.record_probe("s", probe(30, 0, terminal_input=E0 - 100), at(30))  # one closed
    activity = tracker.activity("s", None, False, at(30))
    assert activity.terminal == at(-5)  # only moves forward
    assert activity.watched_since == at(0)
    tracker.record_probe("s", probe(60, 0, keepalive=E0 + 7200, transfers=1), at(60))
    activity = tracker.activity("s", None, False, at(60))
    assert activity.keepalive == at(7200) and activity.transfer == at(60)
    tracker.record_probe("s", probe(90, 0), at(90))  # file removed, transfer done
    activity = tracker.activity("s", at(80), False, at(90))
    assert activity.keepalive is None and activity.transfer == at(60)
    assert activity.connection == at(80)
    assert activity.last_busy(at(90)) == at(80)


def test_the_collectors_figures() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    tracker.record_sample("s", None, at(0))
    tracker.record_sample("s", SessionActivity("s", 0.03, 1.0, at(10)), at(12))
    watch = tracker.watch("s", at(12))
    assert watch.compute is None and watch.gpu_percent == 3.0 and watch.cpu_percent == 1.0
    tracker.record_sample("s", SessionActivity("s", 0.8, 1.0, at(40)), at(42))
    assert tracker.watch("s", at(42)).compute == at(40)  # the sample's moment
    tracker.record_sample("s", SessionActivity("s", None, 250.0, at(70)), at(72))
    assert tracker.watch("s", at(72)).compute == at(70)
    later = SessionActivity("s", 1.0, None, at(500))  # a clock ahead never lies ahead
    tracker.record_sample("s", later, at(100))
    assert tracker.watch("s", at(100)).compute == at(100)


def test_forgetting() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    for name in ("a", "b"):
        tracker.watch(name, at(0))
    tracker.forget_others({"b"})
    assert set(tracker.watches) == {"b"}
    tracker.reset()
    assert tracker.watches == {}
