"""Sandman's one settings object.

Values come from keyword arguments (the CLI's flags), then environment variables
with the ``SANDMAN_`` prefix, then the seed documents' names (``DB_PATH``,
``WORKSPACE_ROOT``, ``TTL_CHECK_INTERVAL``) as aliases.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sandman.gateway.limits import DEFAULT_PER_ADDRESS, DEFAULT_TOTAL
from sandman.runtime.egress import Egress, parse_egress
from sandman.sizes import GIB, parse_optional_size

WORKSPACE_IMAGE = "sandman-workspace:latest"

# What the gateway offers users' clients. A client takes the first cipher of
# its own list that the server offers; OpenSSH lists chacha20-poly1305 and
# then AES-CTR before AES-GCM, and the gateway relays those at about half the
# speed of AES-GCM (which has a short path in the gateway and AES-NI behind
# it). So only AES-GCM is offered by default: every OpenSSH since 6.2, PuTTY
# since 0.76 and VS Code (through OpenSSH) speak it. A client with nothing in
# common is told what is offered; list more ciphers to serve it.
GATEWAY_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """``"1m"``, ``"30s"``, ``"2s"``, ``"1h"`` or a number of seconds, as seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 1m, 2h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _quota(value: Any) -> int | None:
    from sandman.domain import checked_workspace_quota
    from sandman.errors import InvalidRequest

    size = parse_optional_size(value)
    try:
        return None if size is None else checked_workspace_quota(size)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


WorkspaceQuota = Annotated[int | None, BeforeValidator(_quota)]


def _optional_duration(value: Any) -> float | None:
    """A duration, or None for ``none``, empty or 0 (no limit)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return parse_duration(value) or None


def _warnings(value: Any) -> tuple[float, ...]:
    from sandman.observe.idle import parse_warnings

    return parse_warnings(value)


OptionalDuration = Annotated[float | None, BeforeValidator(_optional_duration)]
IdleWarnings = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_warnings)]


def _alias(name: str, *seed_names: str) -> AliasChoices:
    return AliasChoices(f"SANDMAN_{name.upper()}", *seed_names)


class Settings(BaseSettings):
    """Every knob Sandman has. Field docs are the reference."""

    model_config = SettingsConfigDict(
        env_prefix="SANDMAN_", populate_by_name=True, extra="ignore", case_sensitive=False
    )

    # --- API ---
    host: str = Field("127.0.0.1", description="API listen address.")
    port: int = Field(8080, ge=1, le=65535, description="API listen port.")
    admin_token: SecretStr | None = Field(
        None,
        validation_alias=_alias("admin_token"),
        description="Bearer token for the admin API; generated into the data dir if unset.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS; empty means CORS is off."
    )

    # --- accounts and single sign-on ---
    public_url: str | None = Field(
        None,
        description="Sandman's external address (https://gpu.example.org); the OIDC "
        "redirect URI is <public_url>/auth/callback, and https makes cookies Secure.",
    )
    login_ttl: Duration = Field(
        12 * 3600.0, gt=0, description="How long a browser login (cookie) lasts."
    )
    oidc_issuer: str | None = Field(None, description="The OpenID provider's issuer URL.")
    oidc_client_id: str | None = Field(None, description="Sandman's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="Sandman's client secret at the provider."
    )
    oidc_scopes: str = Field(
        "openid profile email groups", description="Scopes asked of the provider."
    )
    oidc_username_claim: str = Field(
        "preferred_username", description="The claim a user name is made from."
    )
    oidc_groups_claim: str = Field("groups", description="The claim listing the user's groups.")
    oidc_group_map: Path | None = Field(
        None, description="YAML mapping the provider's groups to roles and teams."
    )

    # --- web apps: JupyterLab and VS Code through Sandman (the apps origin) ---
    apps_listen: str | None = Field(
        "127.0.0.1:8081",
        description="Where `sandman serve` serves the apps origin (HOST:PORT), beside the "
        "API; empty or 'off': not served.",
    )
    apps_url: str | None = Field(
        None,
        description="The apps origin's public URL (https://apps.gpu.example.org): a host "
        "name of its own, since browsers share cookies between the ports of one host. "
        "Unset: http://localhost:<port> of apps_listen (the API answers on 127.0.0.1).",
    )
    apps_admin_access: bool = Field(
        False,
        description="Let admins open other users' JupyterLab and VS Code through the "
        "apps proxy (the user's code then runs in the admin's browser, on the apps origin).",
    )

    # --- storage ---
    data_dir: Path = Field(Path(".sandman"), description="Where Sandman keeps its state.")
    db_path: Path | None = Field(
        None, validation_alias=_alias("db_path", "DB_PATH"), description="SQLite file."
    )
    database_url: str | None = Field(
        None, description="Any SQLAlchemy URL (PostgreSQL works); overrides db_path."
    )
    workspace_root: Path | None = Field(
        None,
        validation_alias=_alias("workspace_root", "WORKSPACE_ROOT"),
        description="Parent of the users' workspaces (default: <data_dir>/workspaces).",
    )
    workspace_quota: WorkspaceQuota = Field(
        50 * GIB,
        description="What each workspace may hold (50g), unless the user has their own "
        "(PUT /users/{id}/workspace); none or 0: plain directories with no limit.",
    )

    # --- lifecycle ---
    ttl_check_interval: Duration = Field(
        60.0,
        gt=0,
        validation_alias=_alias("ttl_check_interval", "TTL_CHECK_INTERVAL"),
        description="How often the reaper looks for expired sessions.",
    )
    reconcile_interval: Duration = Field(30.0, gt=0, description="How often the reconciler runs.")
    start_timeout: Duration = Field(
        60.0, gt=0, description="How long a container may take to answer SSH."
    )
    stop_grace_period: Duration = Field(5.0, description="SIGTERM-to-SIGKILL grace on stop.")
    reconcile_grace: Duration = Field(
        30.0,
        description="The reconciler leaves sessions alone until they have run this long.",
    )
    create_workers: int = Field(
        8,
        ge=1,
        le=256,
        description="Sessions started at once; creation never runs on the threads serving reads.",
    )
    create_wait: Duration = Field(
        30.0,
        description="How long a create waits for a free worker before a 503 with Retry-After.",
    )
    delete_concurrency: int = Field(
        16, ge=1, le=256, description="Sessions torn down at once by DELETE /sessions."
    )
    default_ttl_minutes: int = Field(60, ge=1)
    max_ttl_minutes: int = Field(7 * 24 * 60, ge=1)

    # --- idle reclaim ---
    idle_timeout: Duration = Field(
        0.0,
        description="Reclaim a session after this long without activity (no SSH traffic or "
        "terminal input, GPU and CPU below their thresholds); 0: never (the default).",
    )
    idle_timeout_max: OptionalDuration = Field(
        None,
        description="The longest idle timeout a session may ask for; set, a session asking "
        "for more or for never is refused. none or 0: no maximum.",
    )
    idle_warnings: IdleWarnings = Field(
        (900.0, 120.0),
        description="When users are warned before a reclaim (15m,2m); warnings as long as "
        "the timeout or longer are skipped; none: no warnings.",
    )
    idle_gpu_percent: float = Field(
        5.0, ge=0, le=100, description="GPU activity below this (percent) counts as idle."
    )
    idle_cpu_percent: float = Field(
        5.0, ge=0, description="CPU use below this (percent of one core) counts as idle."
    )
    idle_check_interval: Duration = Field(
        30.0, gt=0, description="How often sessions are checked for idleness."
    )

    state_capture_interval: Duration = Field(
        300.0,
        gt=0,
        description="How often running sessions' tmux windows and open notebooks are "
        "captured, for restoring them later (and once more as a session ends).",
    )

    snapshot_max_size: Annotated[int | None, BeforeValidator(parse_optional_size)] = Field(
        None,
        description="Snapshots of sessions' writable layers: when set (2g), a session's "
        "changes outside /workspace are committed to a local image as it ends, if they "
        "(with the snapshot the session started from) hold at most this much, and a "
        "session restored from it starts from that image; unset, none or 0: off.",
    )
    snapshot_retention: str = Field(
        "3,30d",
        description="Which snapshots each user keeps: a count (3: the newest three), an "
        "age (30d; h, d or w), or both comma-separated (a snapshot goes when either says "
        "so); older ones' images are removed as a new one is kept.",
    )

    # --- the wait queue and preemption ---
    queue_timeout: Duration = Field(
        24 * 3600.0,
        gt=0,
        description="A queued request that has not started after this long is cancelled.",
    )
    queue_interval: Duration = Field(
        5.0,
        gt=0,
        description="How often the queue is looked at besides whenever a session ends.",
    )
    preempt_grace: Duration = Field(
        300.0,
        ge=0,
        description="Warning a preempted session's user gets before the session ends.",
    )
    fairshare_half_life: Duration = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="Past GPU use counts half after this long in the queue's fair-share order.",
    )

    # --- costs (see README "Costs"; a rates file overrides these) ---
    rates_file: Path | None = Field(
        None,
        description="A YAML file of rates (deploy/rates.example.yaml): currency, rates per "
        "GPU model, per MIG profile, the low-priority discount; read at start-up.",
    )
    gpu_rates: str = Field(
        "H100-80GB=8.0,A100-80GB=6.0,RTX-4090=2.0",
        description="Price of one whole GPU for an hour, per model: MODEL=RATE,... "
        "(catalogue keys or nvidia-smi names). A MIG instance costs its slices/7 of it.",
    )
    default_gpu_rate: float = Field(
        0.0, ge=0, description="Price per GPU-hour of models gpu_rates does not list."
    )
    currency: str = Field(
        "USD", min_length=1, max_length=16, description="The currency label of every cost."
    )
    low_priority_discount: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The fraction `low` priority sessions do not pay (0.25: they pay 75%); "
        "reports show it as its own row.",
    )

    # --- runtime ---
    runtime: Literal["docker", "kubernetes"] = Field(
        "docker",
        description="Where sessions run: docker (this host's Docker engine) or kubernetes "
        "(pods on a cluster; the GPUs are then the nodes' advertised nvidia.com resources).",
    )
    kube_config: str = Field(
        "",
        description="Kubernetes: the kubeconfig file; empty: in-cluster credentials when "
        "running in a pod, else ~/.kube/config.",
    )
    kube_namespace: str = Field(
        "sandman-sessions",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Kubernetes: the namespace of session pods, secrets and claims.",
    )
    kube_storage_class: str = Field(
        "",
        description="Kubernetes: the storage class of workspace claims; empty: the "
        "cluster's default class.",
    )
    kube_pending_timeout: Duration = Field(
        300.0,
        gt=0,
        description="Kubernetes: a pod pending longer than this fails its session with the "
        "pod's last event as the reason.",
    )
    kube_node_selectors: Annotated[dict[str, dict[str, str]], NoDecode] = Field(
        default_factory=dict,
        description="Kubernetes: node labels a session pod requires, per GPU model, as JSON "
        '({"A100-40GB": {"pool": "a100"}}); "*" applies to every model.',
    )
    kube_tolerations: Annotated[list[dict[str, str]], NoDecode] = Field(
        default_factory=list,
        description="Kubernetes: tolerations of session pods, as a JSON list of the API's "
        'objects ([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]).',
    )
    kube_workspace_size: str = Field(
        "10Gi",
        description="Kubernetes: a workspace claim's size when no workspace quota applies.",
    )

    # --- GPUs ---
    gpu_backend: Literal["simulated", "nvml"] = "simulated"
    gpu_topology: str = Field(
        "a100-40gb-7x1g", description="Preset name or YAML file for the simulated backend."
    )
    nvml_mig_strategy: Literal["static", "dynamic"] = Field(
        "static", description="How MIG-enabled GPUs found through NVML are handed out."
    )
    default_mig_profile: str | None = Field(
        "1g.5gb", description="Profile given when a request names no GPU resource."
    )
    mig_fallback: bool = Field(
        True, description="Give a whole non-MIG GPU when no MIG instance can serve a profile."
    )
    gpu_sharing: str = Field(
        "",
        description="NVML GPUs without MIG shared by several sessions: MODE:REPLICAS for "
        "every such GPU (mps:4, time-slicing:2), or per GPU index or UUID "
        "(0=mps:4,1=time-slicing:2); empty: none. Simulated GPUs: the topology's sharing.",
    )
    mps_pipe_directory: str = Field(
        "/tmp/nvidia-mps",
        description="CUDA_MPS_PIPE_DIRECTORY of the MPS control daemon that limits sessions "
        "on GPUs shared with mps; with {index}, one daemon per GPU (started with "
        "CUDA_VISIBLE_DEVICES set to that GPU).",
    )

    # --- containers ---
    default_image: str = WORKSPACE_IMAGE
    allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [WORKSPACE_IMAGE]
    )
    container_prefix: str = Field("sandman", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    network_name: str = Field("worknet", description="Docker network of session containers.")
    seal_network: bool = Field(
        True,
        description="Seal sessions off from this host, link-local addresses and each other "
        "with iptables rules of Sandman's own; false only where there is no iptables (a "
        "development machine), and sessions can then reach the host.",
    )
    egress: str = Field(
        "allow",
        description="Where sessions may connect beyond the host: allow (anywhere), deny "
        "(nowhere but DNS), or a comma-separated list of networks.",
    )
    dns_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Resolvers sessions may reach on port 53 (default: those in the host's "
        "resolv.conf, which Docker's embedded DNS forwards to).",
    )
    cpus: float = Field(4.0, gt=0, description="Default CPU limit per session.")
    memory: str = Field("16g", description="Default memory limit per session.")
    pids_limit: int = Field(4096, ge=64)
    shm_size: str = Field("2g", description="/dev/shm size; GPU frameworks need a large one.")
    uid_base: int = Field(20000, ge=1000, description="First uid handed to users.")

    # --- SSH ---
    ssh_mode: Literal["gateway", "direct", "both"] = Field(
        "gateway",
        description="gateway: one entry point for all users; direct: a published port per "
        "session with the user's keys in the container; both.",
    )
    ssh_listen: str = Field("127.0.0.1:2222", description="Gateway listen HOST:PORT.")
    run_gateway: bool = Field(
        True,
        description="Run the gateway inside `sandman serve` (false: `sandman gateway` runs it).",
    )
    ssh_public_host: str = Field("127.0.0.1", description="Host name the API reports.")
    ssh_public_port: int | None = Field(
        None, ge=1, le=65535, description="Gateway port users connect to (default: listen port)."
    )
    ssh_bind_address: str = Field("127.0.0.1", description="Where session ports are published.")
    ssh_port_start: int = Field(10000, ge=1024, le=65535)
    ssh_port_end: int = Field(20000, ge=1024, le=65535)
    gateway_password_auth: bool = Field(
        False, description="Also accept passwords at the gateway (checked against a hash)."
    )
    gateway_tuning: bool | None = Field(
        None,
        description="Relay through Sandman's tuned asyncssh data path (about twice the "
        "throughput of stock asyncssh). Default: on where the installed asyncssh is the "
        "verified version, otherwise off with one warning.",
    )
    gateway_ciphers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(GATEWAY_CIPHERS),
        description="Ciphers the gateway offers clients (comma-separated).",
    )
    gateway_max_startups_per_address: int = Field(
        DEFAULT_PER_ADDRESS,
        ge=1,
        description="Unauthenticated gateway connections allowed from one address.",
    )
    gateway_max_startups: int = Field(
        DEFAULT_TOTAL, ge=1, description="Unauthenticated gateway connections allowed in all."
    )
    gateway_upstream: Literal["published", "network"] = Field(
        "published",
        description="How the gateway reaches containers: their port on 127.0.0.1, or their "
        "address on the session network (when the gateway itself runs in a container).",
    )
    sshpiper_config: Path | None = Field(
        None,
        validation_alias=_alias("sshpiper_config", "PIPER_CONFIG"),
        description="Keep an SSHPiper pipe.yaml here in step with the active sessions.",
    )
    sshpiper_config_dir: Path | None = Field(
        None,
        validation_alias=_alias("sshpiper_config_dir", "SSHPIPER_CONFIG_DIR"),
        description="A directory for SSHPiper's pipe.yaml (the seed's name); "
        "sshpiper_config, when set, wins.",
    )

    connection_retention: Duration = Field(
        90 * 86400.0,
        gt=0,
        description="How long gateway connection records are kept (e.g. 90d).",
    )

    # --- metrics ---
    metrics_interval: Duration = Field(
        15.0,
        gt=0,
        description="How often GPUs and sessions are measured for /metrics, the history "
        "and idle decisions (one engine statistics read per running session each time).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="The bearer token scrapers off this host send to /metrics; clients on "
        "loopback need none, and without a token other clients get 403.",
    )
    gpu_metrics_prometheus: str = Field(
        "",
        description="Kubernetes: the Prometheus (http[s]://host[:port][/path]) that scrapes "
        "the cluster's dcgm-exporter; sessions' GPU activity is read from its per-pod series. "
        "Empty: GPU activity is unknown there, and sessions holding a GPU are never "
        "reclaimed as idle.",
    )
    metrics_retention: Duration = Field(
        30 * 86400.0,
        gt=0,
        description="How long one-minute averages per session and per GPU are kept (30d); "
        "pruned hourly.",
    )
    demand_retention: Duration = Field(
        90 * 86400.0,
        gt=0,
        description="How long the demand log keeps each session request and its outcome "
        "(90d), for the capacity view and the layout advice; pruned hourly.",
    )

    # --- alerts and notifications ---
    alerts_token: SecretStr | None = Field(
        None,
        description="The bearer token Alertmanager sends to POST /api/v1/alerts/webhook "
        "(a secret of its own, not a user's token); unset, that route answers 403.",
    )
    smtp_host: str | None = Field(
        None, description="The SMTP server notifications are mailed through; unset: no e-mail."
    )
    smtp_port: int = Field(
        587, ge=1, le=65535, description="The SMTP server's port (465: TLS from the start)."
    )
    smtp_user: str | None = Field(None, description="The SMTP login, if the server needs one.")
    smtp_password: SecretStr | None = Field(None, description="The SMTP login's password.")
    smtp_from: str = Field("sandman@localhost", description="The From address of notifications.")
    smtp_starttls: bool = Field(
        True, description="Upgrade the SMTP connection with STARTTLS before logging in."
    )
    notify_timeout: Duration = Field(
        10.0, gt=0, description="How long one delivery (webhook, e-mail, terminal) may take."
    )
    notify_retries: int = Field(
        3, ge=1, le=10, description="Tries per delivery before it is logged as failed."
    )
    notify_queue: int = Field(
        1000, ge=1, description="Notifications waiting to be sent; past it new ones are dropped."
    )
    notify_allow_loopback: bool = Field(
        False,
        description="Accept webhook URLs on this host (127.0.0.0/8, ::1, localhost): for a "
        "one-host setup or tests. Link-local and cloud metadata addresses are always refused.",
    )
    anomaly_interval: Duration = Field(
        900.0,
        description="How often the GPU history is searched for hung jobs, oversized slices and "
        "GPUs heating faster than their siblings; 0: never.",
    )

    log_level: str = "INFO"

    @field_validator(
        "allowed_images", "cors_origins", "gateway_ciphers", "dns_servers", mode="before"
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("kube_node_selectors", "kube_tolerations", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            import json

            if not value.strip():
                return {} if info.field_name == "kube_node_selectors" else []
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from exc
        return value

    @field_validator("gpu_metrics_prometheus")
    @classmethod
    def _prometheus_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"^https?://[^/?#@\s]+(/[^?#\s]*)?$", value):
            raise ValueError(
                f"must be a Prometheus base URL (http[s]://host[:port][/path]), not {value!r}"
            )
        return value

    @field_validator("egress")
    @classmethod
    def _egress(cls, value: str) -> str:
        return str(parse_egress(value))

    @field_validator("snapshot_retention")
    @classmethod
    def _snapshot_retention(cls, value: str) -> str:
        from sandman.environments.snapshots import parse_retention

        parse_retention(value)  # a ValueError names what is wrong
        return value.strip()

    @field_validator("gpu_sharing")
    @classmethod
    def _gpu_sharing(cls, value: str) -> str:
        from sandman.errors import ConfigurationError
        from sandman.gpu.topology import parse_sharing_setting

        try:
            parse_sharing_setting(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None
        return value.strip()

    @field_validator("gpu_rates")
    @classmethod
    def _gpu_rates(cls, value: str) -> str:
        from sandman.accounting.rates import parse_rate_list
        from sandman.errors import ConfigurationError

        try:
            parse_rate_list(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None
        return value.strip()

    @field_validator("dns_servers")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_address(item)) for item in value]

    @model_validator(mode="after")
    def _piper_dir(self) -> Settings:
        if self.sshpiper_config is None and self.sshpiper_config_dir is not None:
            self.sshpiper_config = self.sshpiper_config_dir / "pipe.yaml"
        return self

    @property
    def ssh_listen_address(self) -> tuple[str, int]:
        host, _, port = self.ssh_listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def gateway_port(self) -> int:
        return self.ssh_public_port or self.ssh_listen_address[1]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = self.db_path or self.data_dir / "sandman.db"
        return f"sqlite:///{path.resolve()}"

    @property
    def egress_policy(self) -> Egress:
        return parse_egress(self.egress)

    @property
    def apps_listen_address(self) -> tuple[str, int] | None:
        """Where the apps origin listens; None when ``apps_listen`` turns it off."""
        value = (self.apps_listen or "").strip()
        if value.lower() in ("", "off", "none"):
            return None
        host, _, port = value.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def effective_apps_url(self) -> str | None:
        """The apps origin as browsers reach it: ``apps_url``, or derived from
        ``apps_listen``; None when there is no apps origin."""
        if self.apps_url:
            return self.apps_url.rstrip("/")
        address = self.apps_listen_address
        if address is None:
            return None
        host, port = address
        local = host in ("127.0.0.1", "0.0.0.0", "::1", "::", "localhost")
        return f"http://{'localhost' if local else host}:{port}"

    @property
    def effective_workspace_root(self) -> Path:
        return (self.workspace_root or self.data_dir / "workspaces").resolve()

    def check(self) -> None:
        """Refuse combinations that cannot work, with the reason."""
        from sandman.errors import ConfigurationError

        if self.ssh_port_start > self.ssh_port_end:
            raise ConfigurationError("ssh_port_start must not exceed ssh_port_end")
        if self.default_ttl_minutes > self.max_ttl_minutes:
            raise ConfigurationError("default_ttl_minutes must not exceed max_ttl_minutes")
        if self.idle_timeout_max is not None and not 0 < self.idle_timeout <= self.idle_timeout_max:
            raise ConfigurationError(
                "idle_timeout must be set, and at most idle_timeout_max, when there is a "
                "maximum: sessions that ask for nothing get idle_timeout"
            )
        host, _, port = self.ssh_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
            raise ConfigurationError(f"ssh_listen must be HOST:PORT, not {self.ssh_listen!r}")
        apps = (self.apps_listen or "").strip()
        if apps.lower() not in ("", "off", "none"):
            host, _, port = apps.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ConfigurationError(f"apps_listen must be HOST:PORT or off, not {apps!r}")
        if self.apps_url and not re.match(r"^https?://[^/?#]+/?$", self.apps_url):
            raise ConfigurationError(
                f"apps_url must be an origin (http[s]://host[:port]), not {self.apps_url!r}"
            )
        if self.gpu_metrics_prometheus and self.runtime != "kubernetes":
            raise ConfigurationError(
                "gpu_metrics_prometheus is read on Kubernetes only (SANDMAN_RUNTIME="
                "kubernetes); elsewhere Sandman measures the GPUs itself"
            )
        if "*" in self.cors_origins:
            raise ConfigurationError(
                "cors_origins cannot be '*': the API uses credentials; list the origins"
            )
        if self.default_image not in self.allowed_images:
            raise ConfigurationError(f"default image {self.default_image} is not in allowed_images")
        if not self.gateway_ciphers:
            raise ConfigurationError("gateway_ciphers must name at least one cipher")
        from asyncssh.encryption import get_encryption_algs

        known = {alg.decode() for alg in get_encryption_algs()}
        unknown = [c for c in self.gateway_ciphers if c not in known]
        if unknown:
            raise ConfigurationError(
                f"gateway_ciphers: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
