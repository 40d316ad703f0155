"""SQLAlchemy models.

Uniqueness in the schema is what makes double allocation impossible, also
across several API processes on PostgreSQL: a GPU unit (``gpu_claims``), a port
(``port_claims``) and a user's active session (a partial unique index) can each
be held by one session only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# A user's one session: an active one or a queued request (domain.CURRENT_STATUSES).
ACTIVE_SQL = "status IN ('starting', 'running', 'stopping', 'queued')"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key-value facts about this deployment (e.g. its id, used in container labels)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    uid: Mapped[int] = mapped_column(Integer, unique=True)
    gid: Mapped[int] = mapped_column(Integer)
    ssh_public_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str | None] = mapped_column(Text)  # scrypt; gateway passwords
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    display_name: Mapped[str | None] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The identity provider's (iss, sub) this account is bound to at its first login.
    oidc_issuer: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    default_team: Mapped[str | None] = mapped_column(String(64))
    default_project: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("uq_users_oidc", "oidc_issuer", "oidc_subject", unique=True),)


class Session(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    image: Mapped[str] = mapped_column(String(255))
    container_id: Mapped[str | None] = mapped_column(String(80))
    container_name: Mapped[str] = mapped_column(String(80))
    container_ip: Mapped[str | None] = mapped_column(String(64))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    host_public_key: Mapped[str | None] = mapped_column(Text)
    gpu_uuid: Mapped[str | None] = mapped_column(Text)  # what the container sees; comma-joined
    gpu_parent_uuid: Mapped[str | None] = mapped_column(Text)
    gpu_name: Mapped[str | None] = mapped_column(String(96))
    mig_profile: Mapped[str | None] = mapped_column(String(32))
    mig_instance_uuid: Mapped[str | None] = mapped_column(String(96))
    gpu_fallback: Mapped[bool] = mapped_column(default=False)
    gpu_share: Mapped[float | None] = mapped_column()  # a shared GPU's fraction: 0.25
    placement_reason: Mapped[str | None] = mapped_column(Text)  # why this GPU and slot
    cpus: Mapped[float] = mapped_column()
    memory: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(64), index=True)
    project: Mapped[str | None] = mapped_column(String(64))
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    authorized_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    ttl_minutes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_activity: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(Text)
    stop_status: Mapped[str | None] = mapped_column(String(16))  # final status once stopped
    worker_id: Mapped[str | None] = mapped_column(String(64))
    # Bumped by every status change; a change is a compare-and-set on it.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    endpoint_host: Mapped[str | None] = mapped_column(String(255))  # where sshd answers
    endpoint_port: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    # The session's own idle timeout; None: the deployment's; 0: never.
    idle_timeout_minutes: Mapped[int | None] = mapped_column(Integer)
    # The wait queue: what a queued request asked for (to place it when room frees),
    # and why it waits. ``expires_at`` of a queued row is its queue deadline.
    queue_request: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    queue_reason: Mapped[str | None] = mapped_column(Text)
    # Preemption: when the grace ends, and the queued request it makes room for.
    preempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    preempted_for: Mapped[str | None] = mapped_column(String(36))
    # The environment it was started from (base, jupyter, ...); None: named by image.
    environment: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_sessions_created_at_id", "created_at", "id"),
        Index(
            "uq_sessions_one_active_per_user",
            "user_id",
            unique=True,
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
    )


class GpuClaim(Base):
    """A unit of a GPU (a memory slice, the media engines, or the whole GPU) held by a
    session, or for the length of an admin operation (``held_by``, no session)."""

    __tablename__ = "gpu_claims"
    gpu_uuid: Mapped[str] = mapped_column(String(96), primary_key=True)
    unit: Mapped[str] = mapped_column(String(16), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    start: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    profile: Mapped[str | None] = mapped_column(String(32))
    instance_uuid: Mapped[str | None] = mapped_column(String(96))
    created_instance: Mapped[bool] = mapped_column(default=False)
    held_by: Mapped[str | None] = mapped_column(String(64))


class PortClaim(Base):
    __tablename__ = "port_claims"
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)


class Lease(Base):
    """A named duty that one process holds at a time (e.g. the reconciler), until it expires."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Worker(Base):
    """A running Sandman process; a stale heartbeat means its in-flight work is orphaned."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Connection(Base):
    """One SSH connection through the gateway: who, to which session, how much, and why not."""

    __tablename__ = "connections"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    client_address: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    bytes_from_client: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_to_client: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    # Refused attempts from one address for one reason in one minute share a row.
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class WorkspaceQuota(Base):
    """A user's own workspace quota, in place of the default (``SANDMAN_WORKSPACE_QUOTA``)."""

    __tablename__ = "workspace_quotas"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Team(Base):
    __tablename__ = "teams"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TeamMember(Base):
    """A user's place in a team: ``member`` or ``lead`` (who sees and ends the team's sessions)."""

    __tablename__ = "team_members"
    team: Mapped[str] = mapped_column(
        ForeignKey("teams.name", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(8), default="member")


class Project(Base):
    """What a session is charged to; it belongs to one team."""

    __tablename__ = "projects"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.name"), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    """A personal API token; only a SHA-256 of its secret is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebLogin(Base):
    """A browser's login (the session cookie); only a SHA-256 of the cookie is kept."""

    __tablename__ = "web_logins"
    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CliLoginCode(Base):
    """A one-time code that hands ``sandman login`` its token after single sign-on;
    only a SHA-256 is kept, and the CLI must show the verifier of ``challenge``."""

    __tablename__ = "cli_login_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"))
    challenge: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditRecord(Base):
    """One change or refusal, chained to the one before by ``prev_hash``: an edit or a
    removal in the middle breaks every hash after it (``sandman audit verify``)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(96), index=True)
    source: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255), index=True)
    result: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class NotificationChannel(Base):
    """Where a user's notifications go, or (``owner`` ``@admins``, ``@users``) where alerts
    that concern no session go and what a user who chose nothing gets. Owners that start
    with ``@`` cannot be user names, so one table holds both."""

    __tablename__ = "notification_channels"
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_url: Mapped[str | None] = mapped_column(Text)  # may hold a secret: never listed
    webhook_format: Mapped[str | None] = mapped_column(String(8))  # json | slack | teams
    email: Mapped[str | None] = mapped_column(String(254))
    terminal: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(96))


class QuotaRow(Base):
    """One user's, team's or project's quota (``name`` ``*``: the defaults of its kind);
    ``limits`` holds the set fields of ``policy.quotas.Quota``."""

    __tablename__ = "quotas"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class MetricPoint(Base):
    """One minute of one session or one GPU, averaged (the metrics history).

    ``kind`` is ``session`` (``key`` its id) or ``gpu`` (``key`` its UUID); a value
    the minute had no sample of is NULL. Rows older than the retention are pruned
    by ``minute``, hence its own index.
    """

    __tablename__ = "metric_points"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    gpu_util: Mapped[float | None] = mapped_column(Float)  # percent
    gpu_active: Mapped[float | None] = mapped_column(Float)  # 0-1
    cpu_percent: Mapped[float | None] = mapped_column(Float)  # of one core
    fb_used_mib: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (Index("ix_metric_points_minute", "minute"),)


class SessionIdle(Base):
    """What the idle sweep last saw of a session: the last moment it was busy and the
    warning standing, if any (login banners show it, also from another process)."""

    __tablename__ = "session_idle"
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    busy_at: Mapped[datetime] = mapped_column(UtcDateTime)
    notice: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class LedgerEvent(Base):
    """The start or the end of one session's GPU grant, to the second (the cost ledger).

    Written in the transaction that grants or takes back the GPUs, never from
    samples; one of each kind per session (the unique index). A start carries what
    the grant was and whose; an end repeats it, so either alone can be read.
    """

    __tablename__ = "ledger_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(8))  # start | end
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    user_id: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(64))
    gpu_name: Mapped[str | None] = mapped_column(String(96))
    mig_profile: Mapped[str | None] = mapped_column(String(32))
    gpu_share: Mapped[float | None] = mapped_column(Float)
    gpus: Mapped[int] = mapped_column(Integer)  # GPUs or instances granted
    priority: Mapped[str] = mapped_column(String(8))
    __table_args__ = (
        Index("uq_ledger_events_session_kind", "session_id", "kind", unique=True),
        Index("ix_ledger_events_kind_at", "kind", "at"),
    )


class LedgerCapacity(Base):
    """The GPUs there are from ``at`` on, per model (``{"A100-80GB": 2}``): a snapshot
    whenever the inventory differs from the last one (checked at start-up, hourly)."""

    __tablename__ = "ledger_capacity"
    at: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    gpus: Mapped[dict[str, int]] = mapped_column(JSON)


class LedgerDay(Base):
    """Seconds of ended grants per UTC day and per grant key (whose, what, at which
    priority): the ledger's day rollup, added to in the transaction that writes a
    grant's end, so that a report sums a few rows a day instead of pricing every grant.

    ``key`` is a digest of the columns from ``user_id`` to ``priority`` (unique per day
    with it; the upsert's conflict target); ``week`` and ``month`` are the day's ISO
    week (its Monday) and month (its first day), so that every period is a plain
    GROUP BY.
    """

    __tablename__ = "ledger_days"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    week: Mapped[date] = mapped_column(Date)
    month: Mapped[date] = mapped_column(Date)
    user_id: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(64))
    gpu_name: Mapped[str | None] = mapped_column(String(96))
    mig_profile: Mapped[str | None] = mapped_column(String(32))
    gpu_share: Mapped[float | None] = mapped_column(Float)
    gpus: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(8))
    seconds: Mapped[int] = mapped_column(BigInteger)


class DemandRecord(Base):
    """One session request and what it got: ``started``, ``queued`` or ``refused`` (with
    the reason), for the capacity view and the layout advice; pruned after
    ``demand_retention``. What was asked is kept as asked (a profile, a GPU count, a
    memory size or a shared replica), with its slices as ``policy.units`` counts them."""

    __tablename__ = "demand_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    team: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8))
    profile: Mapped[str | None] = mapped_column(String(32))
    gpu_count: Mapped[int | None] = mapped_column(Integer)
    gpu_memory_gb: Mapped[float | None] = mapped_column(Float)
    shared: Mapped[bool] = mapped_column(default=False)
    whole: Mapped[bool] = mapped_column(default=False)
    slices: Mapped[float] = mapped_column(Float)
    ttl_minutes: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(8))  # started | queued | refused
    reason: Mapped[str | None] = mapped_column(Text)


class BudgetRow(Base):
    """A team's or project's budget per calendar month (``accounting.budgets``)."""

    __tablename__ = "budgets"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # team | project
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    amount: Mapped[float] = mapped_column(Float)
    thresholds: Mapped[list[int]] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String(16))  # warn | block-new | end
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BudgetAlert(Base):
    """A threshold of a budget crossed in a month: alerted once. With action ``end``,
    the crossing of 100% schedules the end of the sessions charged to it (``end_at``)."""

    __tablename__ = "budget_alerts"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-12"
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended: Mapped[bool] = mapped_column(default=False, server_default="0")


class EnvironmentRow(Base):
    """A registered environment, or a built-in's fields as an admin changed them."""

    __tablename__ = "environments"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    image: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    apps: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_profile: Mapped[str | None] = mapped_column(String(32))
    allowed_teams: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SessionStateRow(Base):
    """A session's running state as last captured (``environments.state``): tmux
    windows and open notebooks, for restoring it in a later session."""

    __tablename__ = "session_states"
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    captured_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)


class SessionSnapshotRow(Base):
    """A session's writable-layer snapshot (``environments.snapshots``): the image
    kept for it, or why none was (``skipped``, ``failed``), or when retention let it
    go (``pruned``). No foreign key: the record outlives the session's row."""

    __tablename__ = "session_snapshots"
    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))  # kept, skipped, failed, pruned
    reason: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(255))
    image_id: Mapped[str | None] = mapped_column(String(80))
    base_image: Mapped[str | None] = mapped_column(String(255))
    layer_bytes: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    pruned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AppsCode(Base):
    """A one-time code the portal hands the apps origin (``web.apps_access``): it
    opens one app of one session for one user; only a SHA-256 is kept."""

    __tablename__ = "apps_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(36))
    app: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class AppsLogin(Base):
    """A browser's login on the apps origin (its own cookie, never the portal's);
    only a SHA-256 of the cookie is kept."""

    __tablename__ = "apps_logins"
    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
