"""Request and response bodies. Field names follow the seed documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from sandman.config import Settings
from sandman.domain import ACTIVE_STATUSES, RESERVED_USER_IDS, USER_ID_PATTERN, SessionStatus
from sandman.policy.workload import WORKLOAD_PATTERN
from sandman.services.requests import MEMORY_PATTERN
from sandman.store.models import Session as SessionRow


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(_iso, return_type=str)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# Documented in the schema; checked by the service, whose refusal says what is allowed.
_RESERVED = "|".join(sorted(RESERVED_USER_IDS))
USER_ID_SCHEMA = {"pattern": f"^(?!(?:{_RESERVED})$){USER_ID_PATTERN.pattern[1:]}", "maxLength": 32}
# An OpenSSH public key line; the server decodes the key, so a client must send a real one.
PUBLIC_KEY_SCHEMA = {"format": "openssh-public-key"}
USER_ID_DOC = "Linux user name: ^[a-z_][a-z0-9_-]{0,31}$ (not a system account's name)"
UserId = Annotated[str, Field(description=USER_ID_DOC, json_schema_extra=USER_ID_SCHEMA)]
UserIdPath = Annotated[str, Path(description=USER_ID_DOC, json_schema_extra=USER_ID_SCHEMA)]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer: 30 or 30.0, never true or "30"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
STATUS_FILTERS = ["active", "all", *(s.value for s in SessionStatus)]
ACTIVE_VALUES = {s.value for s in ACTIVE_STATUSES}


class CreateSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = Field(
        None, description="Whose session; default: the caller (required with the admin token)."
    )
    ttl_minutes: int | None = Field(
        None, description="Lifetime in minutes (default 60, at most the server's maximum)."
    )
    mig_profile: str | None = Field(None, description="A MIG profile such as 1g.5gb.")
    mig_instance_uuid: str | None = Field(None, description="An exact MIG instance.")
    gpu_count: int | None = Field(None, description="Whole GPUs; 0 for none.")
    gpu_memory_gb: float | None = Field(None, description="Smallest slice with this memory.")
    workload_type: str | None = Field(
        None,
        description="training, inference, interactive or development (any case). Alone "
        "or with gpu_memory_gb it picks the share: MIG for inference and development, "
        "whole GPUs for training where the machine has them, the smallest fit for "
        "interactive. Beside another GPU field it is only recorded (label workload_type).",
        json_schema_extra={"pattern": WORKLOAD_PATTERN},
    )
    shared: bool = Field(
        False,
        description="A replica of a GPU shared by several sessions (time-slicing or MPS; "
        "time-sliced GPUs have no memory isolation); not with the other GPU fields.",
    )
    image: str | None = Field(
        None,
        description="An allowed image, or an environment's image; not with environment.",
    )
    environment: str | None = Field(
        None,
        description="The environment to start from (GET /environments); default base. "
        "Not with image.",
        json_schema_extra={"pattern": "^[a-z][a-z0-9-]{0,31}$"},
    )
    ssh_public_keys: list[Annotated[str, Field(json_schema_extra=PUBLIC_KEY_SCHEMA)]] | None = (
        Field(
            None,
            description="OpenSSH public keys; if absent a key pair is generated.",
            json_schema_extra={"minItems": 1},
        )
    )
    cpus: float | None = Field(None, description="CPU limit, from 0.01 to the host's CPUs.")
    memory: str | None = Field(
        None,
        description="Memory limit: 512m, 1.5g or 2t (at least 64m).",
        json_schema_extra={"pattern": MEMORY_PATTERN.pattern},
    )
    team: Name | None = None
    project: Name | None = None
    priority: Literal["low", "normal", "high"] = Field(
        "normal", description="Priority class, within the quotas' allowed_priorities."
    )
    idle_timeout_minutes: WholeNumber | None = Field(
        None,
        description="Reclaim the session after this many minutes without activity; 0: "
        "never (refused where the server sets a maximum); default: the server's "
        "SANDMAN_IDLE_TIMEOUT.",
    )
    labels: dict[Name, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict,
        max_length=32,
        json_schema_extra={"additionalProperties": False},  # keys must match the pattern
    )
    restore: str | None = Field(
        None,
        description="Start like an ended session of the user's (its id, or latest): its "
        "image, GPU share, TTL and limits unless given here, and its tmux windows back; "
        "from its writable-layer snapshot when one was kept (notes say whether).",
        json_schema_extra={"pattern": "^(latest|[0-9a-f-]{36})$"},
    )
    queue: bool = Field(
        False,
        description="When nothing fits now (or a quota allows it only once your own "
        "sessions end): wait in the queue instead of a 503 or 403. The answer is 202 "
        "with status queued, queue_position and eta.",
    )


class ExtendSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_minutes: int


class SessionMetadata(BaseModel):
    image: str
    workspace: str
    ssh_port: str | None


class WorkspaceQuotaOut(BaseModel):
    quota_bytes: int | None = Field(
        description="What the workspace may hold: the limit writes hit where it is enforced, "
        "else the one it gets when made or migrated; null when quotas are off."
    )
    used_bytes: int | None = Field(
        description="What it holds; null when not measured (no workspace yet, a plain "
        "directory, an image not mounted)."
    )


class SessionOut(BaseModel):
    session_id: str
    id: str
    user_id: str
    status: str
    container_id: str | None
    container_name: str
    container_ip: str | None
    ssh_user: str
    ssh_host: str
    ssh_port: int | None
    ssh_command: str
    ssh_host_public_key: str | None
    container_host_public_key: str | None
    direct_ssh_port: int | None
    gpu_uuid: str | None
    gpu_uuids: list[str]
    parent_gpu_uuid: str | None
    gpu_name: str | None
    mig_profile: str | None
    mig_instance_uuid: str | None
    gpu_fallback: bool
    gpu_share: float | None = Field(
        None, description="The fraction of a shared GPU the session holds (0.25); null: not shared."
    )
    gpu_simulated: bool
    placement_reason: str | None = Field(
        None,
        description="Why the placement policy chose this GPU and slot (operators and "
        "admins, on GET /sessions/{session_id}); null for others and before placement.",
    )
    image: str
    environment: str | None = Field(
        None, description="The environment it started from; null: named by its image."
    )
    apps: dict[str, str] = Field(
        default_factory=dict,
        description="The web apps its environment offers (jupyterlab, vscode) and their "
        "URLs on the apps origin (SANDMAN_APPS_URL); empty without an apps origin.",
    )
    cpus: float
    memory: str
    team: str | None
    project: str | None
    priority: str
    labels: dict[str, str]
    ttl_minutes: int
    idle_timeout_minutes: int | None = Field(
        description="The session's own idle timeout (0: never); null: the server's."
    )
    created_at: UtcTime
    started_at: UtcTime | None
    expires_at: UtcTime | None = Field(
        description="When the TTL ends it; null while queued (and for a request cancelled "
        "before it started)."
    )
    last_activity: UtcTime | None
    ended_at: UtcTime | None
    end_reason: str | None
    queue_position: int | None = Field(
        None, description="Queued: the place in the queue, from 1; else null."
    )
    eta: UtcTime | None = Field(
        None,
        description="Queued: when it would start if every running session ended at its "
        "expiry and the requests ahead started as they fit; null when unknown.",
    )
    reason: str | None = Field(None, description="Queued: why it waits, with the numbers.")
    preempt_at: UtcTime | None = Field(
        None, description="Set when the session is to be preempted: when it ends."
    )
    metadata: SessionMetadata
    workspace_quota: WorkspaceQuotaOut


class QueueEntryOut(BaseModel):
    session_id: str
    user_id: str
    team: str | None
    project: str | None
    priority: str
    asks: str = Field(description="The profile (or GPU size) asked for.")
    queue_position: int
    eta: UtcTime | None
    reason: str | None
    created_at: UtcTime
    cancel_at: UtcTime = Field(description="When it is cancelled unless it has started.")


class CreatedSessionOut(SessionOut):
    ssh_private_key: str | None = Field(
        None, description="Only when Sandman generated the key pair; shown this once."
    )
    notes: list[str] = Field(default_factory=list)


def ssh_endpoint(settings: Settings, row: SessionRow, gateway_port: int) -> tuple[str, int | None]:
    """Where the user connects: the gateway, or in direct mode the session's own port."""
    if settings.ssh_mode == "direct":
        return settings.ssh_public_host, row.ssh_port
    return settings.ssh_public_host, gateway_port


def session_out(
    row: SessionRow,
    settings: Settings,
    workspace: str,
    simulated: bool,
    gateway_port: int,
    gateway_host_key: str | None,
    workspace_quota: dict[str, Any],
) -> dict[str, Any]:
    """A session as the API shows it; ``ssh_host_public_key`` is the key of the endpoint
    the user connects to (the gateway's, or the container's in direct mode)."""
    host, port = ssh_endpoint(settings, row, gateway_port)
    port_flag = f"-p {port} " if port and port != 22 else ""
    uuids = row.gpu_uuid.split(",") if row.gpu_uuid else []
    return {
        "session_id": row.id,
        "id": row.id,
        "user_id": row.user_id,
        "status": row.status,
        "container_id": row.container_id,
        "container_name": row.container_name,
        "container_ip": row.container_ip,
        "ssh_user": row.user_id,
        "ssh_host": host,
        "ssh_port": port,
        "ssh_command": f"ssh {port_flag}{row.user_id}@{host}",
        "ssh_host_public_key": (
            row.host_public_key if settings.ssh_mode == "direct" else gateway_host_key
        ),
        "container_host_public_key": row.host_public_key,
        "direct_ssh_port": row.ssh_port if settings.ssh_mode != "gateway" else None,
        "gpu_uuid": uuids[0] if uuids else None,
        "gpu_uuids": uuids,
        "parent_gpu_uuid": (row.gpu_parent_uuid or "").split(",")[0] or None,
        "gpu_name": row.gpu_name,
        "mig_profile": row.mig_profile,
        "mig_instance_uuid": row.mig_instance_uuid,
        "gpu_fallback": row.gpu_fallback,
        "gpu_share": row.gpu_share,
        "gpu_simulated": simulated and bool(uuids),
        "placement_reason": None,  # operators only: the route fills it in
        "image": row.image,
        "environment": row.environment,
        "apps": {},  # the route fills them in from the environment
        "cpus": row.cpus,
        "memory": row.memory,
        "team": row.team,
        "project": row.project,
        "priority": row.priority,
        "labels": row.labels,
        "ttl_minutes": row.ttl_minutes,
        "idle_timeout_minutes": row.idle_timeout_minutes,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "expires_at": (
            None
            if row.status in (SessionStatus.QUEUED, SessionStatus.CANCELLED)
            and row.started_at is None
            else row.expires_at
        ),
        "last_activity": row.last_activity,
        "ended_at": row.ended_at,
        "end_reason": row.end_reason,
        "queue_position": None,
        "eta": None,
        "reason": row.queue_reason if row.status == SessionStatus.QUEUED else None,
        "preempt_at": row.preempt_at if row.status in ACTIVE_VALUES else None,
        "metadata": {
            "image": row.image,
            "workspace": workspace,
            "ssh_port": str(port) if port else None,
        },
        "workspace_quota": workspace_quota,
    }
