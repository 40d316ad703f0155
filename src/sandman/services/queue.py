"""The wait queue and preemption: what starts when room frees, and for whom a
running session gives way.

The decisions are pure (``policy.queue``: order and ETA; ``policy.preemption``:
protection, reach and the choice of victims); this service reads the rows they
are decided on and acts: it promotes a queued request to ``starting`` (the same
placement and admission checks as a new request, in one transaction) and hands
it to the creation pool, cancels requests that waited too long, warns the users
of preempted sessions and ends them once their grace is over.

One process dispatches at a time (a lease); any process may read the queue.
A pass runs every ``SANDMAN_QUEUE_INTERVAL`` and at once whenever a session
ends (``wake``), so a queued request starts within moments of a slice freeing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select

from sandman.accounts.audit import Entry
from sandman.config import Settings
from sandman.domain import ACTIVE_STATUSES, SessionStatus
from sandman.gpu.planner import claim_for
from sandman.gpu.types import Claim, GpuDevice, GpuRequest
from sandman.policy.preemption import Running, choose_victims, reach
from sandman.policy.queue import (
    Holding,
    Planner,
    UsageEvent,
    Waiting,
    decayed_usage,
    order,
    planner_for,
    simulate,
)
from sandman.policy.quotas import Ask, Priority, ScopeKind
from sandman.policy.units import request_slices, words
from sandman.services.gpu_claims import claims_from_rows
from sandman.services.quotas import Quotas, session_slices
from sandman.services.sessions import Reservation, SessionService, queued_request
from sandman.store.database import Database
from sandman.store.models import GpuClaim, utcnow
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import acquire_lease, transition

log = logging.getLogger(__name__)

LEASE = "queue-dispatcher"
ACTIVE = [s.value for s in ACTIVE_STATUSES]
FAIRSHARE_HORIZON = 4  # half-lives of history that still count (1/16 of their weight)
ADMIN_HOLD = timedelta(minutes=1)  # an admin operation's claims, as the ETA sees them
VIEW_REUSE = 2.0  # seconds a read may reuse the last view with its ETAs

Notify = Callable[[str, str | None, str, str, str, str], object]  # user, session, subject,
# text, severity, kind


def asked_profile(request: GpuRequest, default_profile: str | None) -> str:
    """A label for what a request asks: its profile, or what stands for it."""
    if request.mig_profile is not None:
        return request.mig_profile
    if request.gpu_count is not None:
        return f"{request.gpu_count}x-gpu" if request.gpu_count else "none"
    if request.gpu_memory_gb is not None:
        return f"{request.gpu_memory_gb:g}gb"
    if request.mig_instance_uuid is not None:
        return "instance"
    if getattr(request, "shared", False):
        return "shared"
    return default_profile or "gpu"


@dataclass(frozen=True)
class QueueEntry:
    row: SessionRow
    request: GpuRequest
    position: int
    eta: datetime | None


@dataclass
class QueueView:
    """The queue as of ``now``: in order, each entry with its position and ETA."""

    now: datetime
    entries: list[QueueEntry] = field(default_factory=list)
    devices: list[GpuDevice] = field(default_factory=list)
    unmade: list[GpuDevice] = field(default_factory=list)  # without sessions' own instances
    running: list[SessionRow] = field(default_factory=list)
    claims: dict[str | None, list[Claim]] = field(default_factory=dict)  # by session id

    def entry(self, session_id: str) -> QueueEntry | None:
        for item in self.entries:
            if item.row.id == session_id:
                return item
        return None

    def held(self, without: Iterable[str] = ()) -> list[Claim]:
        skipped = set(without)
        return [c for owner, held in self.claims.items() if owner not in skipped for c in held]


@dataclass
class DispatchReport:
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)


class WaitQueue:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sessions: SessionService,
        quotas: Quotas,
        launch: Callable[[Reservation], object],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.sessions = sessions
        self.quotas = quotas
        self.launch = launch
        self.clock = clock
        self.notify: Notify | None = None
        self.audit: Callable[[Entry], object] | None = None
        self.waiting_by_profile: dict[str, int] = {}  # as of the last pass (metrics)
        self._wake = threading.Event()
        self._pass = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cached: tuple[float, QueueView] | None = None

    # ------------------------------------------------------------------- reading
    def view(self, extra: Waiting | None = None, etas: bool = True) -> QueueView:
        """The queue in order with positions and ETAs (``extra``: a request that would
        join it now, for the ETA a refusal quotes; ``etas=False``: without simulating
        them, as the dispatcher needs it). Reads reuse a view up to ``VIEW_REUSE`` old,
        unless a session ended or a request queued since."""
        if extra is None and etas:
            with self._cache_lock:
                cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < VIEW_REUSE:
                return cached[1]
        made = self._view(extra, etas)
        if extra is None and etas:
            with self._cache_lock:
                self._cached = (time.monotonic(), made)
        return made

    def _view(self, extra: Waiting | None, etas: bool) -> QueueView:
        now = self.clock()
        horizon = now - timedelta(seconds=self.settings.fairshare_half_life * FAIRSHARE_HORIZON)
        with self.db.read() as db:
            queued = list(
                db.scalars(
                    select(SessionRow)
                    .where(SessionRow.status == SessionStatus.QUEUED)
                    .order_by(SessionRow.created_at, SessionRow.id)
                )
            )
            history = list(
                db.scalars(
                    select(SessionRow).where(
                        SessionRow.started_at.is_not(None),
                        or_(SessionRow.status.in_(ACTIVE), SessionRow.ended_at >= horizon),
                    )
                )
            )
            claim_rows = list(db.scalars(select(GpuClaim)))
        devices = self.sessions.inventory.devices()
        running = [r for r in history if r.status in ACTIVE]
        by_session: dict[str | None, list[Claim]] = {}
        for claim in claim_rows:
            by_session.setdefault(claim.session_id, []).extend(claims_from_rows([claim]))
        # The instances sessions made go with them: as the simulation ends a session,
        # its slots are free again (its claims keep them taken while it runs).
        made = {c.instance_uuid for c in claim_rows if c.created_instance and c.instance_uuid}
        unmade = [
            replace(d, instances=tuple(i for i in d.instances if i.uuid not in made))
            for d in devices
        ]
        view = QueueView(now, devices=devices, unmade=unmade, running=running, claims=by_session)
        requests = {row.id: queued_request(row).gpu for row in queued}
        waiting = [self._waiting(row, requests[row.id]) for row in queued]
        if extra is not None:
            waiting.append(extra)
        ordered = order(waiting, self._usage(history, now))
        ends = [
            Holding(
                row.id,
                min(row.expires_at, row.preempt_at or row.expires_at),
                tuple(by_session.get(row.id, ())),
            )
            for row in running
        ]
        admin = tuple(by_session.get(None, ()))
        if admin:
            ends.append(Holding("admin", now + ADMIN_HOLD, admin))
        eta = simulate(ordered, ends, self._planner(unmade), now) if etas else {}
        rows = {row.id: row for row in queued}
        for index, item in enumerate(ordered, start=1):
            row = rows.get(item.session_id)
            if row is not None:
                view.entries.append(QueueEntry(row, item.request, index, eta.get(row.id)))
            elif extra is not None and item.session_id == extra.session_id:
                view.entries.append(
                    QueueEntry(
                        SessionRow(id=extra.session_id, user_id=extra.user_id),
                        extra.request,
                        index,
                        eta.get(extra.session_id),
                    )
                )
        return view

    def eta_for(
        self,
        user_id: str,
        team: str | None,
        priority: str,
        request: GpuRequest,
        ttl_minutes: int,
    ) -> datetime | None:
        """When a request refused for want of room would start, had it queued now."""
        probe = Waiting(
            "(this request)", user_id, team, Priority(priority), self.clock(), request, ttl_minutes
        )
        found = self.view(probe).entry(probe.session_id)
        return found.eta if found else None

    @staticmethod
    def _waiting(row: SessionRow, request: GpuRequest) -> Waiting:
        return Waiting(
            row.id,
            row.user_id,
            row.team,
            Priority(row.priority),
            row.created_at,
            request,
            row.ttl_minutes,
        )

    def _planner(self, devices: Sequence[GpuDevice]) -> Planner:
        return planner_for(devices, self.settings.default_mig_profile)

    def _usage(self, history: Iterable[SessionRow], now: datetime) -> dict[str, float]:
        """Fair share: each team's (or lone user's) slice-hours, decayed by age."""
        events = []
        for row in history:
            if row.started_at is None:
                continue
            ended = row.ended_at or now
            hours = max((ended - row.started_at).total_seconds(), 0.0) / 3600
            key = row.team or f"user:{row.user_id}"
            events.append(UsageEvent(key, session_slices(row) * hours, ended))
        half_life = timedelta(seconds=self.settings.fairshare_half_life)
        return decayed_usage(events, half_life, now)

    # ---------------------------------------------------------------- dispatching
    def wake(self, *_: object) -> None:
        """Look at the queue now (a session ended, a request queued)."""
        self.forget()
        self._wake.set()

    def forget(self) -> None:
        """The queue changed: the next read computes a fresh view."""
        with self._cache_lock:
            self._cached = None

    def run(self, stop: threading.Event) -> None:
        """Dispatch every ``queue_interval``, and whenever woken, until ``stop``."""
        while not stop.is_set():
            self._wake.wait(self.settings.queue_interval)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.dispatch()
            except Exception:
                log.exception(
                    "a queue pass failed; the next runs in %.0fs", self.settings.queue_interval
                )

    def dispatch(self) -> DispatchReport:
        """One pass: cancel what waited too long, end sessions whose preemption grace
        is over, start what fits in queue order, and preempt for what cannot."""
        report = DispatchReport()
        if not self._pass.acquire(blocking=False):
            return report  # a pass of this process is running
        try:
            now = self.clock()
            ttl = timedelta(seconds=max(3 * self.settings.queue_interval, 30.0))
            with self.db.transaction() as db:
                if not acquire_lease(db, LEASE, self.sessions.worker_id, now, ttl):
                    return report  # another process dispatches
            self._expire(now, report)
            self._preempt_due(now, report)
            self._start_or_preempt(report)
        finally:
            self._pass.release()
        return report

    def _expire(self, now: datetime, report: DispatchReport) -> None:
        with self.db.read() as db:
            late = list(
                db.scalars(
                    select(SessionRow).where(
                        SessionRow.status == SessionStatus.QUEUED, SessionRow.expires_at <= now
                    )
                )
            )
        waited = _duration(self.settings.queue_timeout)
        for row in late:
            reason = (
                f"waited {waited} (SANDMAN_QUEUE_TIMEOUT) without room: "
                f"{row.queue_reason or 'nothing fitted'}"
            )
            if self.sessions.cancel_queued(row.id, reason):
                report.cancelled.append(row.id)
                self._tell(row.user_id, row.id, "Your queued session was cancelled", reason)

    def _preempt_due(self, now: datetime, report: DispatchReport) -> None:
        """End the sessions whose grace is over, then start their requester on the
        freed slices at once, before anything else can take them."""
        with self.db.read() as db:
            marked = list(
                db.scalars(
                    select(SessionRow).where(
                        SessionRow.status.in_(ACTIVE), SessionRow.preempt_at.is_not(None)
                    )
                )
            )
            requesters = {
                row.id: row
                for row in db.scalars(
                    select(SessionRow).where(
                        SessionRow.id.in_({m.preempted_for for m in marked if m.preempted_for})
                    )
                )
            }
        for victim in marked:
            requester = requesters.get(victim.preempted_for or "")
            if requester is None or requester.status != SessionStatus.QUEUED:
                self._lift(victim, requester)
                continue
            if victim.preempt_at is None or victim.preempt_at > now:
                continue
            reason = (
                f"preempted: {_who(requester)} needed its {words(session_slices(victim))} slices"
            )
            ended = self.sessions.end(victim.id, SessionStatus.PREEMPTED, reason, wait=True)
            if ended.status == SessionStatus.PREEMPTED:
                report.preempted.append(victim.id)
                self._record("session.preempted", victim.id, requester, reason)
        for requester in requesters.values():
            if requester.status == SessionStatus.QUEUED:
                self._promote(requester, report)

    def _lift(self, victim: SessionRow, requester: SessionRow | None) -> None:
        """The request a session was to give way to started or ended otherwise: the
        session stays."""
        with self.db.transaction() as db:
            lifted = transition(
                db,
                victim.id,
                ACTIVE,
                seen_version=victim.version,
                preempt_at=None,
                preempted_for=None,
            )
        if lifted:
            why = (
                "was cancelled" if requester is None or requester.ended_at else "started elsewhere"
            )
            self._tell(
                victim.user_id,
                victim.id,
                "Your session is no longer preempted",
                f"the request it was to make room for {why}; session {victim.id} keeps running",
                severity="info",
            )

    def _start_or_preempt(self, report: DispatchReport) -> None:
        with self.db.read() as db:
            waiting = db.scalar(
                select(func.count()).where(SessionRow.status == SessionStatus.QUEUED)
            )
        if not waiting:
            self.waiting_by_profile = {}
            return  # the usual case: nothing to read further
        view = self.view(etas=False)  # the order is what matters here, not the ETAs
        self.waiting_by_profile = {}
        for entry in view.entries:
            label = asked_profile(entry.request, self.settings.default_mig_profile)
            self.waiting_by_profile[label] = self.waiting_by_profile.get(label, 0) + 1
        if not view.entries:
            return
        planner = self._planner(view.devices)
        held = view.held()
        making_room = {r.preempted_for for r in view.running if r.preempted_for}
        for entry in view.entries:
            if planner(entry.request, held) is not None:
                reservation = self._promote(entry.row, report)
                if reservation is not None:
                    held += [claim_for(a) for a in reservation.allocations]
                    self._count_started(entry)
                continue
            if entry.row.id in making_room:
                continue  # its victims are in their grace; their slices stay held
            self._maybe_preempt(entry, view, report)

    def _count_started(self, entry: QueueEntry) -> None:
        label = asked_profile(entry.request, self.settings.default_mig_profile)
        left = self.waiting_by_profile.get(label, 0) - 1
        if left > 0:
            self.waiting_by_profile[label] = left
        else:
            self.waiting_by_profile.pop(label, None)

    def _promote(self, row: SessionRow, report: DispatchReport) -> Reservation | None:
        reservation = self.sessions.promote(row.id)
        if reservation is None:
            return None
        self.forget()
        report.started.append(row.id)
        waited = _duration((self.clock() - row.created_at).total_seconds())
        log.info("queued request %s of %s starts after %s", row.id, row.user_id, waited)
        self._tell(
            row.user_id,
            row.id,
            "Your queued session is starting",
            f"session {row.id} waited {waited} and is starting now",
            severity="info",
        )
        self.launch(reservation)
        return reservation

    def _maybe_preempt(self, entry: QueueEntry, view: QueueView, report: DispatchReport) -> None:
        row = entry.row
        priority = Priority(row.priority)
        ask_slices = request_slices(entry.request, view.devices)
        with self.db.read() as db:
            blocked = self.quotas.violations(
                db,
                row.user_id,
                row.team,
                row.project,
                Ask(slices=ask_slices, ttl_minutes=row.ttl_minutes, priority=priority),
            )
            teams = {r.team for r in view.running if r.team} | ({row.team} if row.team else set())
            guarantees = {
                team: self.quotas.effective(db, ScopeKind.TEAM, team).guaranteed_slices or 0.0
                for team in teams
            }
        if blocked:
            return  # a quota keeps it waiting: preempting would free slices for nothing
        team_slices = sum(session_slices(r) for r in view.running if r.team and r.team == row.team)
        limit = reach(priority, team_slices, ask_slices, guarantees.get(row.team or "", 0.0))
        if limit is None:
            return
        candidates = [
            Running(
                r.id,
                r.user_id,
                r.team,
                Priority(r.priority),
                r.started_at or r.created_at,
                session_slices(r),
            )
            for r in view.running
            if r.status == SessionStatus.RUNNING
            and r.preempt_at is None
            and r.user_id != row.user_id
        ]
        planner = self._planner(view.unmade)

        def fits_without(ids: frozenset[str]) -> bool:
            return planner(entry.request, view.held(ids)) is not None

        victims = choose_victims(candidates, guarantees, limit, fits_without)
        if not victims:
            return
        grace = self.settings.preempt_grace
        at = self.clock() + timedelta(seconds=grace)
        rows = {r.id: r for r in view.running}
        for victim in victims:
            target = rows[victim.session_id]
            with self.db.transaction() as db:
                marked = transition(
                    db,
                    target.id,
                    [SessionStatus.RUNNING],
                    seen_version=target.version,
                    preempt_at=at,
                    preempted_for=row.id,
                )
            if not marked:
                continue
            report.warned.append(target.id)
            target.preempt_at, target.preempted_for = at, row.id
            text = (
                f"session {target.id} ends at {at.strftime('%H:%M:%S')} UTC (in "
                f"{_duration(grace)}): {_who(row)} needs its {words(victim.slices)} slices. "
                "Save your work now; your /workspace stays."
            )
            self._tell(target.user_id, target.id, "Your session will be preempted", text)
            self._record("session.preempt", target.id, row, text)
        if grace <= 0:
            self._preempt_due(self.clock(), report)

    # ------------------------------------------------------------------- helpers
    def _tell(
        self, user_id: str, session_id: str, subject: str, text: str, severity: str = "warning"
    ) -> None:
        if self.notify is not None:
            kind = "preemption" if "preempt" in subject else "queue"
            self.notify(user_id, session_id, subject, text, severity, kind)

    def _record(self, action: str, target: str, requester: SessionRow, text: str) -> None:
        if self.audit is None:
            return
        detail: dict[str, Any] = {
            "for_session": requester.id,
            "for_user": requester.user_id,
            "for_team": requester.team,
            "priority": requester.priority,
            "reason": text,
        }
        self.audit(Entry(actor="sandman", action=action, target=target, detail=detail))


def _who(row: SessionRow) -> str:
    team = f" of team {row.team}" if row.team else ""
    return f"{row.user_id}'s {row.priority}-priority request {row.id}{team}"


def _duration(length: float) -> str:
    seconds = round(length)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}m"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
