"""The idle sweep: gathers each session's activity, applies the rules of ``idle``,
warns users and reclaims idle sessions.

Like jupyterhub-idle-culler's loop around its pure decision: each session is
checked on its own (one failure is logged and never stops the sweep), a bounded
pool looks inside at most ``concurrency`` sessions at once, and one process
sweeps at a time (a lease in the database), so several Sandman processes on one
database warn once and reclaim once. Reclaiming is an ordinary ending with the
final status ``idle``: the container, GPU slice and port are given back, the
workspace is kept.

Where the cluster picks each session's device (Kubernetes), only the collector's
outside source sees a GPU's activity: with no figure from it, a session holding
a GPU is kept with the reason why, never reclaimed for lack of GPU evidence.

What the sweep last saw of each session (its last busy moment, the warning
standing) is written to ``session_idle`` when it changes, so login banners drawn
by a gateway in another process can say a session was about to be reclaimed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import select

from sandman.domain import SessionStatus
from sandman.errors import SandmanError
from sandman.observe.idle import (
    Activity,
    Decision,
    IdlePolicy,
    Reclaim,
    Warn,
    Warned,
    banner_lines,
    decide,
    describe,
    effective_timeout,
    human,
    reclaim_message,
    reclaim_reason,
    warning_message,
)
from sandman.observe.idle_activity import ActivityTracker, parse_probe, probe_argv
from sandman.observe.samples import ActivitySource
from sandman.observe.terminal import write_to_terminals
from sandman.services.sessions import SessionService
from sandman.store.models import Session as SessionRow
from sandman.store.models import SessionIdle, User
from sandman.store.transitions import acquire_lease

log = logging.getLogger(__name__)

LEASE = "idle-reclaim"
UNMEASURED = "no GPU measurement of its pod yet"
CONCURRENCY = 4  # sessions looked into at once
PROBE_TIMEOUT = 10.0  # seconds one look inside may take
PERSIST_STEP = timedelta(seconds=60)  # a busy moment is written again once it moved this far


class IdleNotify(Protocol):
    """Where warnings and reclaim notices go besides the log (terminals by default;
    the notifier's channels when wired)."""

    def notify(self, user_id: str, session_id: str, subject: str, text: str) -> object: ...


class TerminalNotifier:
    """Writes to the user's open terminals in the session, as ``wall`` would, but as
    the session's own user: sessions run without capabilities."""

    def __init__(self, sessions: SessionService, timeout: float = 10.0) -> None:
        self.sessions = sessions
        self.timeout = timeout

    def notify(self, user_id: str, session_id: str, subject: str, text: str) -> int:
        with self.sessions.db.read() as db:
            row = db.get(SessionRow, session_id)
            user = db.get(User, row.user_id) if row is not None else None
        if row is None or user is None or row.status != SessionStatus.RUNNING:
            return 0
        return write_to_terminals(
            self.sessions.runtime,
            row.container_id or row.container_name,
            f"{user.uid}:{user.gid}",
            subject,
            text,
            timeout=self.timeout,
        )


class ChannelNotifier(Protocol):
    """The notifier's side: every channel the user chose (webhook, e-mail...)."""

    def notify(
        self, user_id: str, session_id: str | None, subject: str, text: str, *, kind: str
    ) -> object: ...


class IdleChannels:
    """Idle notices through the notifier's channels, marked as such (``kind`` idle)."""

    def __init__(self, notifier: ChannelNotifier) -> None:
        self.notifier = notifier

    def notify(self, user_id: str, session_id: str, subject: str, text: str) -> object:
        return self.notifier.notify(user_id, session_id, subject, text, kind="idle")


@dataclass(frozen=True)
class Outcome:
    """What one check found and did."""

    session_id: str
    decision: Decision
    busy_at: datetime
    notice: str | None  # the warning standing, for login banners
    ended: bool = False
    held: str | None = None  # why it is kept whatever the clock says


def banner_notice(activity: Activity, decision: Warn, now: datetime) -> str:
    """The warning as a later login banner shows it (that login is itself activity)."""
    at = decision.reclaim_at.astimezone(UTC).strftime("%H:%M:%S UTC")
    return (
        f"Warning: idle for {human((now - decision.since).total_seconds())} "
        f"({describe(activity, now)}); it was to be reclaimed at {at}. "
        "Using it keeps it."
    )


class IdleReclaim:
    """Warns users of idle sessions and reclaims them; see the module's doc."""

    def __init__(
        self,
        sessions: SessionService,
        activity: ActivitySource | None = None,
        notifiers: list[IdleNotify] | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.sessions = sessions
        settings = sessions.settings
        self.activity = activity  # the metrics collector, when it runs
        self.notifiers: list[IdleNotify] = (
            [TerminalNotifier(sessions)] if notifiers is None else notifiers
        )
        self.concurrency = max(1, concurrency)
        self.tracker = ActivityTracker(settings.idle_cpu_percent, settings.idle_gpu_percent)
        # Why GPU activity is unknown when the collector has no figure for a session:
        # where the cluster places sessions, nothing else can see their GPUs.
        self.gpu_unmeasured = UNMEASURED if sessions.cluster_places else None
        self._lock = threading.Lock()  # the tracker, shared by the pool's threads
        self._held = False  # whether this process swept last time
        self._persisted: dict[str, tuple[datetime, str | None]] = {}
        self._notices: dict[str, str] = {}
        self._kept: dict[str, str] = {}  # session -> why it is kept, as last logged

    def policy(self, row: SessionRow) -> IdlePolicy:
        settings = self.sessions.settings
        return IdlePolicy(
            timeout=effective_timeout(
                row.idle_timeout_minutes, settings.idle_timeout, settings.idle_timeout_max
            ),
            warnings=tuple(settings.idle_warnings),
            cpu_percent=settings.idle_cpu_percent,
            gpu_percent=settings.idle_gpu_percent,
        )

    # ---------------------------------------------------------------- the sweep
    def sweep(self) -> list[str]:
        """Check every running session with a timeout; returns the ids reclaimed."""
        now = self.sessions.clock()
        if not self._lease(now):
            self._held = False  # another process sweeps; what we kept goes stale
            return []
        if not self._held:
            self.tracker.reset()  # watch from now: what was not seen is not held against anyone
            self._held = True
        rows = [
            row
            for row in self.sessions.list_sessions("active")
            if row.status == SessionStatus.RUNNING and not self.sessions.is_busy(row.id)
        ]
        watched = [(row, policy) for row in rows if (policy := self.policy(row)).enabled]
        ids = {row.id for row, _ in watched}
        with self._lock:
            self.tracker.forget_others(ids)
            for gone in set(self._persisted) - ids:
                del self._persisted[gone]
            for gone in set(self._notices) - ids:
                del self._notices[gone]
            for gone in set(self._kept) - ids:
                del self._kept[gone]
        if not watched:
            return []
        users = self._users(row.user_id for row, _ in watched)

        def one(item: tuple[SessionRow, IdlePolicy]) -> Outcome | None:
            row, policy = item
            try:
                return self.check(row, policy, users.get(row.user_id))
            except SandmanError as exc:
                log.warning("idle check of session %s failed: %s", row.id, exc.message)
            except Exception:
                log.exception("idle check of session %s failed", row.id)
            return None

        workers = min(self.concurrency, len(watched))
        with ThreadPoolExecutor(workers, thread_name_prefix="sandman-idle") as pool:
            outcomes = [o for o in pool.map(one, watched) if o is not None]
        try:
            self._persist(outcomes)
        except Exception:
            log.exception("could not record what the idle sweep saw")
        return [o.session_id for o in outcomes if o.ended]

    def check(
        self, row: SessionRow, policy: IdlePolicy, user: tuple[int, int] | None
    ) -> Outcome | None:
        """Look inside one session, decide, and act; None when there was no evidence
        to decide on (the look inside failed): a session is never reclaimed blind."""
        if user is None:
            return None
        uid, gid = user
        result = self.sessions.runtime.exec(
            row.container_id or row.container_name,
            probe_argv(),
            user=f"{uid}:{gid}",
            timeout=PROBE_TIMEOUT,
        )
        if result.timed_out:
            log.warning("looking inside session %s took over %gs", row.id, PROBE_TIMEOUT)
            return None
        now = self.sessions.clock()
        sample = self.activity.activity(row.id) if self.activity is not None else None
        with self._lock:
            self.tracker.record_probe(row.id, parse_probe(result.output, uid), now)
            self.tracker.record_sample(row.id, sample, now, self.gpu_unmeasured)
            activity = self.tracker.activity(row.id, row.last_activity, bool(row.gpu_uuid), now)
            warned = self.tracker.watch(row.id, now).warned
        decision = decide(activity, policy, warned, now)
        if isinstance(decision, Reclaim):
            # Touched since the sweep read it (an extension, the gateway, a web app)?
            fresh = self.sessions.get(row.id).last_activity
            if fresh != row.last_activity:
                activity = replace(activity, connection=fresh)
                decision = decide(activity, policy, warned, now)
        busy_at = activity.last_busy(now)
        if isinstance(decision, Warn):
            return self._warn(row, activity, policy, decision, now)
        if isinstance(decision, Reclaim):
            return self._reclaim(row, activity, policy, decision, now)
        standing = warned is not None and warned.since == busy_at
        notice = self._notices.get(row.id) if standing else None
        self._log_held(row, decision.held)
        return Outcome(row.id, decision, busy_at, notice, held=decision.held)

    def _log_held(self, row: SessionRow, held: str | None) -> None:
        """Say once, and again when the reason changes, why a session is not reclaimed."""
        with self._lock:
            before = self._kept.pop(row.id, None)
            if held is not None:
                self._kept[row.id] = held
        if held is not None and held != before:
            log.info("session %s of %s is not reclaimed as idle: %s", row.id, row.user_id, held)

    def _warn(
        self, row: SessionRow, activity: Activity, policy: IdlePolicy, decision: Warn, now: datetime
    ) -> Outcome:
        subject, text = warning_message(row.id, activity, policy, decision, now)
        log.info("session %s of %s: %s", row.id, row.user_id, subject)
        self._tell(row, subject, text)
        notice = banner_notice(activity, decision, now)
        with self._lock:
            watch = self.tracker.watch(row.id, now)
            watch.warned = Warned(decision.since, decision.warning)
            watch.last_cpu = None  # writing the warning used the session's CPU, not its user
            self._notices[row.id] = notice
        return Outcome(row.id, decision, decision.since, notice)

    def _reclaim(
        self,
        row: SessionRow,
        activity: Activity,
        policy: IdlePolicy,
        decision: Reclaim,
        now: datetime,
    ) -> Outcome:
        reason = reclaim_reason(activity, policy, decision.since, now)
        self._tell(row, *reclaim_message(row.id, reason))  # while its terminals are still there
        final = self.sessions.end(row.id, SessionStatus.IDLE, reason, seen_version=row.version)
        ended = final.status == SessionStatus.IDLE and final.end_reason == reason
        if ended:
            log.info("session %s of %s reclaimed: %s", row.id, row.user_id, reason)
        return Outcome(row.id, decision, decision.since, None, ended=ended)

    def _tell(self, row: SessionRow, subject: str, text: str) -> None:
        for notifier in self.notifiers:
            try:
                notifier.notify(row.user_id, row.id, subject, text)
            except Exception as exc:
                log.warning("could not tell %s about session %s: %s", row.user_id, row.id, exc)

    # ------------------------------------------------------------ around it
    def touch(self, session_id: str) -> None:
        """Count activity Sandman sees outside the session (a web app of it used
        through the portal's proxy, say)."""
        self.sessions.touch(session_id)

    def banner(self, session_id: str) -> str:
        """Lines for a login banner: the session's idle timeout and any warning standing."""
        with self.sessions.db.read() as db:
            row = db.get(SessionRow, session_id)
            state = db.get(SessionIdle, session_id)
        if row is None:
            return ""
        return banner_lines(self.policy(row), state.notice if state is not None else None)

    def _lease(self, now: datetime) -> bool:
        ttl = timedelta(seconds=max(3 * self.sessions.settings.idle_check_interval, 30.0))
        with self.sessions.db.transaction() as db:
            return acquire_lease(db, LEASE, self.sessions.worker_id, now, ttl)

    def _users(self, user_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        with self.sessions.db.read() as db:
            found = db.scalars(select(User).where(User.user_id.in_(set(user_ids))))
            return {user.user_id: (user.uid, user.gid) for user in found}

    def _persist(self, outcomes: list[Outcome]) -> None:
        """Write what changed: a new warning or its end, or a busy moment a minute on."""
        changed = []
        for outcome in outcomes:
            before = self._persisted.get(outcome.session_id)
            if (
                before is None
                or before[1] != outcome.notice
                or outcome.busy_at - before[0] >= PERSIST_STEP
                or outcome.ended
            ):
                changed.append(outcome)
        if not changed:
            return
        now = self.sessions.clock()
        with self.sessions.db.transaction() as db:
            for outcome in changed:
                state = db.get(SessionIdle, outcome.session_id)
                if state is None:
                    state = SessionIdle(session_id=outcome.session_id)
                    db.add(state)
                state.busy_at = outcome.busy_at
                state.notice = outcome.notice
                state.updated_at = now
        for outcome in changed:
            if outcome.ended:
                self._persisted.pop(outcome.session_id, None)
                self._notices.pop(outcome.session_id, None)
            else:
                self._persisted[outcome.session_id] = (outcome.busy_at, outcome.notice)


__all__ = ["IdleChannels", "IdleNotify", "IdleReclaim", "Outcome", "TerminalNotifier"]
