"""The rules of idle reclaim, as pure functions of (activity, policy, clock): every
kind of activity keeps a session, warnings come once each at their time, and a
session is reclaimed exactly one timeout after it was last busy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sandman.errors import InvalidRequest
from sandman.observe.idle import (
    Activity,
    IdlePolicy,
    Keep,
    Reclaim,
    Warn,
    Warned,
    banner_lines,
    checked_idle_timeout,
    decide,
    describe,
    effective_timeout,
    human,
    idle_timeout_range,
    parse_warnings,
    reclaim_reason,
    warning_message,
)

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
HOUR = IdlePolicy(timeout=3600, warnings=(900, 120))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def quiet(**seen: datetime | None) -> Activity:
    """Watched since T0, with only the activity given."""
    return Activity(watched_since=T0, **seen)  # type: ignore[arg-type]


def run(activity: Activity, policy: IdlePolicy, minutes: list[float]) -> list[object]:
    """Decisions at each minute, as a sweep acting on them would see them."""
    warned: Warned | None = None
    found: list[object] = []
    for minute in minutes:
        decision = decide(activity, policy, warned, at(minute))
        if isinstance(decision, Warn):
            warned = Warned(decision.since, decision.warning)
        found.append(decision)
    return found


# ----------------------------------------------------------------- the timeout
def test_off_never_reclaims() -> None:
    assert decide(quiet(), IdlePolicy(timeout=0), None, at(10_000)) == Keep(None)


def test_reclaimed_exactly_one_timeout_after_the_last_activity() -> None:
    activity = quiet()
    assert decide(activity, HOUR, Warned(T0, 120), at(59.99)) == Keep(at(60))
    assert decide(activity, HOUR, Warned(T0, 120), at(60)) == Reclaim(T0)


@pytest.mark.parametrize("kind", ["connection", "terminal", "transfer", "keepalive", "compute"])
def test_every_kind_of_activity_keeps_a_session(kind: str) -> None:
    """Activity of any kind at minute 50 moves the reclaim to minute 110."""
    activity = quiet(**{kind: at(50)})
    assert isinstance(decide(activity, HOUR, None, at(60)), Keep)
    assert decide(activity, HOUR, None, at(100)) == Warn(900, at(50), at(110))
    assert decide(activity, HOUR, Warned(at(50), 120), at(110)) == Reclaim(at(50))


def test_the_latest_activity_counts() -> None:
    activity = quiet(connection=at(10), terminal=at(40), compute=at(25))
    assert activity.last_busy(at(90)) == at(40)
    assert decide(activity, HOUR, None, at(100)) == Reclaim(at(40))


def test_watching_from_a_restart_counts_as_activity() -> None:
    """What Sandman did not see is not held against a session: activity long ago, but
    watched only since minute 30, is reclaimed at 90, not at once."""
    activity = Activity(watched_since=at(30), connection=at(-500))
    assert isinstance(decide(activity, HOUR, None, at(60)), Keep)
    assert decide(activity, HOUR, Warned(at(30), 120), at(90)) == Reclaim(at(30))


def test_a_keepalive_ahead_keeps_until_then() -> None:
    """``sandman-keepalive 2h``: in use until minute 120, reclaimed an hour later."""
    activity = quiet(keepalive=at(120))
    assert activity.last_busy(at(60)) == at(60)
    assert isinstance(decide(activity, HOUR, None, at(164)), Keep)
    assert decide(activity, HOUR, None, at(175)) == Warn(900, at(120), at(180))
    assert decide(activity, HOUR, Warned(at(120), 120), at(180)) == Reclaim(at(120))


# ----------------------------------------------------------------- warnings
def test_warnings_come_once_each_at_their_time() -> None:
    decisions = run(quiet(), HOUR, [0, 44, 45, 46, 57, 58, 59, 60])
    assert decisions == [
        Keep(at(60)),
        Keep(at(60)),
        Warn(900, T0, at(60)),
        Keep(at(60)),
        Keep(at(60)),
        Warn(120, T0, at(60)),
        Keep(at(60)),
        Reclaim(T0),
    ]


def test_a_late_sweep_gives_only_the_nearest_warning() -> None:
    assert run(quiet(), HOUR, [59, 59.5]) == [Warn(120, T0, at(60)), Keep(at(60))]


def test_activity_starts_a_new_round_of_warnings() -> None:
    warned = Warned(T0, 120)  # both given for the stretch from T0
    resumed = quiet(terminal=at(59))
    assert decide(resumed, HOUR, warned, at(60)) == Keep(at(119))
    assert decide(resumed, HOUR, warned, at(104)) == Warn(900, at(59), at(119))


def test_warnings_as_long_as_the_timeout_or_longer_are_skipped() -> None:
    short = IdlePolicy(timeout=600, warnings=(900, 600, 120))
    assert short.applicable_warnings == (120,)
    assert run(quiet(), short, [0, 1, 7, 8, 10]) == [
        Keep(at(10)),
        Keep(at(10)),
        Keep(at(10)),
        Warn(120, T0, at(10)),
        Reclaim(T0),
    ]


def test_without_warnings_a_session_is_reclaimed_unwarned() -> None:
    silent = replace(HOUR, warnings=())
    assert run(quiet(), silent, [59, 60]) == [Keep(at(60)), Reclaim(T0)]


# ----------------------------------------------------------------- settings and asks
def test_warnings_parse_as_durations_longest_first() -> None:
    assert parse_warnings("15m,2m") == (900.0, 120.0)
    assert parse_warnings(" 2m , 15m,2m ") == (900.0, 120.0)
    assert parse_warnings("90") == (90.0,)
    assert parse_warnings("1h,30s") == (3600.0, 30.0)
    assert parse_warnings("none") == parse_warnings("") == ()
    for bad in ("0", "2x", "15m,-1m"):
        with pytest.raises(ValueError):
            parse_warnings(bad)


def test_the_effective_timeout() -> None:
    assert effective_timeout(None, 3600, None) == 3600  # the deployment's
    assert effective_timeout(30, 3600, None) == 1800  # its own
    assert effective_timeout(0, 3600, None) == 0  # never
    assert effective_timeout(None, 0, None) == 0  # off
    # A maximum caps what was asked, also when it was lowered after the ask.
    assert effective_timeout(600, 3600, 7200) == 7200
    assert effective_timeout(0, 3600, 7200) == 7200
    assert effective_timeout(30, 3600, 7200) == 1800


def test_what_a_session_may_ask_for() -> None:
    assert idle_timeout_range(None, 10080) == (0, 10080)
    assert idle_timeout_range(8 * 3600, 10080) == (1, 480)
    assert checked_idle_timeout(None, 3600, 10080) is None
    assert checked_idle_timeout(0, None, 10080) == 0
    assert checked_idle_timeout(45, 3600, 10080) == 45
    with pytest.raises(InvalidRequest, match=r"cannot be 0 \(never\) here"):
        checked_idle_timeout(0, 3600, 10080)
    with pytest.raises(InvalidRequest, match=r"too long here.*at most 60 min.*ask for 1 to 60"):
        checked_idle_timeout(61, 3600, 10080)
    with pytest.raises(InvalidRequest, match=r"from 0 \(never\) to 10080"):
        checked_idle_timeout(10081, None, 10080)
    with pytest.raises(InvalidRequest):
        checked_idle_timeout(-1, None, 10080)
    with pytest.raises(InvalidRequest, match="whole number"):
        checked_idle_timeout(True, None, 10080)


# ----------------------------------------------------------------- the words
def test_durations_for_people() -> None:
    assert [human(s) for s in (0, 4.2, 89, 90, 3120, 7140, 7200, 11100)] == [
        "0 s",
        "5 s",
        "89 s",
        "2 min",
        "52 min",
        "119 min",
        "2 h",
        "3 h 5 min",
    ]


def test_what_a_warning_says() -> None:
    activity = quiet(connection=at(-7), cpu_percent=0.25, gpu_percent=0.0, has_gpu=True)
    decision = decide(activity, HOUR, None, at(45))
    assert isinstance(decision, Warn)
    subject, text = warning_message("s-1", activity, HOUR, decision, at(45))
    assert subject == "Sandman session s-1 is idle: reclaimed in 15 min"
    assert "idle for 45 min (no SSH traffic for 52 min, GPU 0%, CPU 0.2%)" in text
    assert "reclaimed in 15 min (idle timeout 60 min)" in text
    assert "/workspace is kept" in text
    assert "sandman-keepalive" in text and "PATCH /sessions/s-1" in text


def test_what_is_said_of_what_was_not_measured() -> None:
    assert describe(quiet(), at(5)) == "no SSH traffic since it started"
    no_gpu = quiet(connection=at(1), cpu_percent=12.0, gpu_percent=50.0, has_gpu=False)
    assert describe(no_gpu, at(5)) == "no SSH traffic for 4 min, CPU 12%"


def test_the_end_reason() -> None:
    reason = reclaim_reason(quiet(cpu_percent=0.0), HOUR, T0, at(60))
    assert (
        reason == "idle for 60 min (no SSH traffic since it started, CPU 0%); idle timeout 60 min"
    )


def test_the_banner() -> None:
    assert banner_lines(IdlePolicy(timeout=0), "anything") == ""
    lines = banner_lines(HOUR, None)
    assert lines == (
        "  Idle:    reclaimed after 60 min without activity (sandman-keepalive keeps it)\n"
    )
    assert banner_lines(HOUR, "Warning: idle").endswith("  Warning: idle\n")
