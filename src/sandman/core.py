"""The composition root: one ``Sandman`` wires settings, database, runtime,
GPU inventory and services together, and runs the background loops."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncssh

from sandman.accounting.budget_service import Budgets
from sandman.accounting.budgets import BudgetKind
from sandman.accounting.demand import CapacityReport, DemandLog
from sandman.accounting.rates import load_rates
from sandman.accounting.service import UsageLedger
from sandman.accounts.audit import Entry
from sandman.accounts.service import Accounts
from sandman.accounts.sso import SingleSignOn
from sandman.config import Settings
from sandman.domain import SessionStatus
from sandman.environments.apps import apps_secret, load_apps_key
from sandman.environments.service import Environments
from sandman.environments.snapshots import parse_retention
from sandman.errors import ConfigurationError, RuntimeFailure, RuntimeUnavailable, SandmanError
from sandman.gateway import asyncssh_tuning
from sandman.gateway.keys import load_or_create_key, public_key_line
from sandman.gateway.limits import StartupLimiter
from sandman.gateway.routing import ConnectionRecord
from sandman.gateway.server import TOUCH_INTERVAL_S, GatewayServer
from sandman.gpu.inventory import make_inventory
from sandman.gpu.topology import parse_sharing_setting
from sandman.gpu.types import GpuInventory, MigMode
from sandman.observe.alerts import AlertIntake
from sandman.observe.anomalies import AnomalyCheck
from sandman.observe.idle_sweep import IdleChannels, IdleReclaim
from sandman.observe.notify import Notifier
from sandman.observe.notify_send import MailSender, TerminalSender, WebhookSender
from sandman.observe.notify_store import NotificationSettings
from sandman.observe.service_metrics import budget_families, queue_families
from sandman.observe.wiring import Metrics
from sandman.runtime import make_runtime
from sandman.runtime.base import SessionRuntime
from sandman.services.certificates import UserCA
from sandman.services.creation import CreationPool
from sandman.services.gateway_routes import DatabaseRouteSource
from sandman.services.gpus import GpuAdmin
from sandman.services.health import HealthCheck
from sandman.services.host_keys import HostKeys
from sandman.services.queue import WaitQueue
from sandman.services.quotas import Quotas, admission_check, queue_check
from sandman.services.reaper import Reaper
from sandman.services.reconciler import Reconciler
from sandman.services.session_state import SessionStates
from sandman.services.sessions import SessionService
from sandman.services.snapshots import Snapshots
from sandman.services.sshpiper import SshPiperConfig
from sandman.services.workspaces import WorkspaceService
from sandman.store.database import Database
from sandman.store.models import Meta
from sandman.web.apps_access import AppsAccess

log = logging.getLogger(__name__)

RETRY_UNAVAILABLE = 2.0  # seconds between tries while the runtime does not answer


def deployment_id(db: Database) -> str:
    """A stable id for this database; every container carries it as a label, so two
    Sandman installs sharing one Docker engine never touch each other's containers."""
    with db.transaction() as tx:
        row = tx.get(Meta, "deployment_id")
        if row is None:
            row = Meta(key="deployment_id", value=uuid.uuid4().hex[:12])
            tx.add(row)
        return row.value


def gateway_tuning(setting: bool | None) -> bool:
    """Whether to tune asyncssh: as set, or by default where the verified version runs."""
    if setting is not None:
        return setting
    if asyncssh_tuning.is_supported():
        return True
    log.warning(
        "the installed asyncssh is not the version the gateway tuning is verified on "
        "(%s); relaying with stock asyncssh",
        asyncssh_tuning.PINNED_VERSION,
    )
    return False


def admin_token(
    settings: Settings, announce: Callable[[str], None], show_secret: bool = False
) -> str:
    """The configured token, or one generated once into the data dir (mode 0600).

    A generated token is shown only where ``show_secret`` says a person reads the
    output (a terminal); a service's output goes to a log, so there only its file
    is named.
    """
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / "admin_token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    if show_secret:
        announce(f"Generated the admin token (shown once; kept in {path}):\n\n    {token}\n")
    else:
        announce(f"Generated the admin token into {path} (mode 0600); read it there.")
    return token


def mail_sender(settings: Settings) -> MailSender | None:
    """The SMTP client notifications are mailed with; None without an SMTP server."""
    if settings.smtp_host is None:
        return None
    password = settings.smtp_password
    return MailSender(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        settings.notify_timeout,
        user=settings.smtp_user,
        password=password.get_secret_value() if password is not None else None,
        starttls=settings.smtp_starttls,
    )


class Sandman:
    def __init__(
        self,
        settings: Settings,
        runtime: SessionRuntime | None = None,
        inventory: GpuInventory | None = None,
        announce: Callable[[str], None] = print,
        with_gateway: bool = True,
        show_secrets: bool = False,
    ) -> None:
        settings.check()
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = Database(settings.effective_database_url)
        self.db.migrate()
        self.deployment_id = deployment_id(self.db)
        self.admin_token = admin_token(settings, announce, show_secrets)
        self.runtime: SessionRuntime = runtime or make_runtime(settings, self.deployment_id)
        topology_slug = hashlib.sha256(settings.gpu_topology.encode()).hexdigest()[:12]
        if inventory is None and settings.runtime == "kubernetes":
            from sandman.runtime.kubernetes.backend import KubernetesRuntime
            from sandman.runtime.kubernetes.client import kubernetes_inventory

            if not isinstance(self.runtime, KubernetesRuntime):
                raise ConfigurationError("SANDMAN_RUNTIME=kubernetes needs its own runtime")
            inventory = kubernetes_inventory(settings, self.runtime)
        self.inventory: GpuInventory = inventory or make_inventory(
            settings.gpu_backend,
            topology=settings.gpu_topology,
            # One state file and one set of UUIDs per topology: switching presets starts
            # from the new topology instead of failing on the old one's instances.
            state_path=settings.data_dir / f"simulated-gpus-{topology_slug}.json",
            seed=f"sandman:{settings.gpu_topology}",
            default_mode=MigMode(settings.nvml_mig_strategy),
            sharing=parse_sharing_setting(settings.gpu_sharing),
        )
        self.worker_id = f"{uuid.uuid4().hex[:16]}"
        self.sessions = SessionService(
            settings,
            self.db,
            self.runtime,
            self.inventory,
            HostKeys(settings.data_dir),
            deployment_id=self.deployment_id,
            worker_id=self.worker_id,
        )
        self.creator = CreationPool(self.sessions, settings.create_workers, settings.create_wait)
        self.quotas = Quotas(self.db)
        self.sessions.admission_checks.append(admission_check(self.quotas))
        self.sessions.extension_checks.append(
            lambda row, ttl: self.quotas.check_ttl(row.user_id, row.team, row.project, ttl)
        )
        self.sessions.queue_checks.append(queue_check(self.quotas))
        # The wait queue: a pass whenever a session ends, and on its timer.
        self.queue = WaitQueue(settings, self.db, self.sessions, self.quotas, self.creator.launch)
        self.sessions.end_hooks.append(self.queue.wake)
        # The demand log: every request's outcome, for the capacity view and layout advice.
        self.demand = DemandLog(
            self.db,
            self.inventory.devices,
            settings.default_mig_profile,
            settings.default_ttl_minutes,
            timedelta(seconds=settings.demand_retention),
        )
        self.sessions.demand_hooks.append(self.demand.record)
        self.capacity = CapacityReport(
            self.db, self.inventory.devices, self.demand, settings.default_mig_profile
        )
        # The cost ledger: a grant's start and end, in the transactions that make them.
        self.usage = UsageLedger(
            self.db,
            load_rates(
                settings.rates_file,
                settings.gpu_rates,
                settings.default_gpu_rate,
                settings.currency,
                settings.low_priority_discount,
            ),
            self.inventory,
        )
        self.sessions.grant_hooks.append(self.usage.on_grant)
        self.sessions.release_hooks.append(self.usage.on_release)
        # Budgets: a spent one whose action blocks refuses new sessions, before placement
        # (so before "no capacity"), and queued ones when their turn comes.
        self.budgets = Budgets(self.db, self.usage, self.usage.rates, settings.preempt_grace)
        self.budgets.worker_id = self.worker_id
        self.sessions.request_checks.append(
            lambda db, _user, request: self.budgets.admit(db, request.team, request.project)
        )
        self.usage.record_capacity()
        # Environments: what a session starts from (image, apps, allowed teams).
        self.environments = Environments(
            self.db,
            settings.default_image,
            lambda: list(settings.allowed_images),
            settings.effective_apps_url,
        )
        self.sessions.choose_environment = self.environments.choose
        apps_key = load_apps_key(settings.data_dir)
        self.sessions.apps_secret = lambda session_id: apps_secret(apps_key, session_id)
        self.workspaces = WorkspaceService(
            settings, self.db, self.runtime, self.sessions.ensure_user
        )
        self.accounts = Accounts(self.db, self.sessions, timedelta(seconds=settings.login_ttl))
        self.credentials = self.accounts.credentials
        self.audit = self.accounts.audit
        # Who gets through the apps origin (JupyterLab, VS Code): codes, logins, policy.
        self.apps = AppsAccess(
            self.db,
            self.accounts.directory,
            self.credentials,
            self.admin_token,
            timedelta(seconds=settings.login_ttl),
            settings.apps_admin_access,
        )
        self.sso = SingleSignOn.from_settings(settings, self.accounts)  # None without an issuer
        self.health = HealthCheck(
            {
                "database": lambda: self.db.ping(),
                "runtime": lambda: self.runtime.ping(),
                "gateway": self._check_gateway,
            }
        )
        self.workspace_root = settings.effective_workspace_root
        if settings.runtime == "kubernetes":
            from sandman.runtime.kubernetes.names import claim_name

            where = f"persistentvolumeclaim/{settings.kube_namespace}/"
            self.workspace_location: Callable[[str], str] = lambda user_id: (
                where + claim_name(user_id, settings.container_prefix)
            )
        else:
            self.workspace_location = lambda user_id: str(self.workspace_root / user_id)
        self.gpus = GpuAdmin(self.sessions)
        self.gateway: GatewayServer | None = None
        self.gateway_port = settings.gateway_port
        self.gateway_host_key: str | None = None
        gateway_dir = settings.data_dir / "gateway"
        identity_path = gateway_dir / "identity_ed25519"
        host_key_path = gateway_dir / "host_ed25519"
        self.ca: UserCA | None = None
        identity: asyncssh.SSHKey | None = None
        if settings.ssh_mode != "direct":
            identity = load_or_create_key(identity_path, comment="sandman-gateway")
            self.sessions.gateway_key = public_key_line(identity)
            # Containers trust the CA, not the gateway's key: the gateway logs in with a
            # certificate for one user that expires with the session.
            self.ca = UserCA(settings.data_dir / "ca", timedelta(minutes=settings.max_ttl_minutes))
            self.sessions.trusted_ca_keys = self.ca.trusted_keys
        self.routes = DatabaseRouteSource(self.sessions, self.ca, identity)
        self.routes.on_login = self._audit_login
        # Idle reclaim; the portal's app proxy calls ``self.idle.touch(session_id)``.
        self.idle = IdleReclaim(self.sessions)
        self.routes.notice = self.idle.banner
        if identity is not None:
            host_key = load_or_create_key(host_key_path, comment="sandman-gateway")
            self.gateway_host_key = public_key_line(host_key)
            if with_gateway and settings.run_gateway:
                host, port = settings.ssh_listen_address
                self.gateway = GatewayServer(
                    self.routes,
                    listen_host=host,
                    listen_port=port,
                    host_key_path=host_key_path,
                    identity_key_path=identity_path,
                    public_host=settings.ssh_public_host,
                    allow_passwords=settings.gateway_password_auth,
                    ciphers=settings.gateway_ciphers,
                    tune_asyncssh=gateway_tuning(settings.gateway_tuning),
                    startups=StartupLimiter(
                        per_address=settings.gateway_max_startups_per_address,
                        total=settings.gateway_max_startups,
                    ),
                    touch_interval_s=min(TOUCH_INTERVAL_S, settings.idle_check_interval),
                )
        self.sshpiper: SshPiperConfig | None = None
        if settings.sshpiper_config is not None:
            if settings.ssh_mode == "direct":
                raise ConfigurationError(
                    "SSHPiper export needs --ssh-mode gateway or both (SANDMAN_SSH_MODE): "
                    "SSHPiper logs in to the containers with the gateway's identity key, "
                    "which direct mode does not authorize in them"
                )
            piper = SshPiperConfig(settings.sshpiper_config, self.sessions)
            self.sshpiper = piper
            self.sessions.session_key = piper.session_key
            self.sessions.start_hooks.append(lambda _user, _session, _why: piper.sync())

            def forget(_user: str, session_id: str, _why: str) -> None:
                piper.forget(session_id)
                piper.sync()

            self.sessions.end_hooks.append(forget)
        # Running state (tmux, notebooks): captured periodically and as a session ends,
        # restored into a session started with "restore".
        self.states = SessionStates(self.db, self.runtime)
        self.sessions.stop_hooks.append(self.states.on_stop)
        # Writable-layer snapshots (SANDMAN_SNAPSHOT_MAX_SIZE): taken after that last
        # capture, before the container goes; a restore starts from the user's own.
        self.snapshots = Snapshots(
            self.db,
            self.runtime,
            settings.container_prefix,
            self.deployment_id,
            settings.snapshot_max_size,
            parse_retention(settings.snapshot_retention),
        )
        self.sessions.stop_hooks.append(self.snapshots.on_stop)
        self.sessions.end_hooks.append(self.snapshots.on_end)
        self.sessions.allow_snapshot = self.snapshots.allow
        self.sessions.snapshot_base = self.snapshots.base_of
        self.sessions.start_hooks.append(self.states.on_start)
        self.reaper = Reaper(self.sessions)
        self.reconciler = Reconciler(
            self.sessions,
            stale_after=max(3 * settings.reconcile_interval, 30.0),
            grace=settings.reconcile_grace,
        )
        self.metrics = Metrics(settings, self.db, self.sessions, self.inventory, self.runtime)
        self.metrics.attach(self.creator, self.reconciler)
        self.collector = self.metrics.collector  # the latest measurements, for idle decisions
        self.idle.activity = self.collector  # GPU activity and CPU per session
        self.notifications = NotificationSettings(self.db, settings.notify_allow_loopback)
        self.notifier = Notifier(
            self.notifications,
            WebhookSender(settings.notify_timeout, settings.notify_allow_loopback),
            TerminalSender(self.db, self.runtime, settings.notify_timeout),
            mail_sender(settings),
            self.audit,
            retries=settings.notify_retries,
            queue_size=settings.notify_queue,
        )
        self.alerts = AlertIntake(self.sessions, self.inventory, self.notifier.submit)
        self.anomalies = AnomalyCheck(
            self.collector.latest,
            self.metrics.history,
            lambda user, session, subject, text: self.notifier.notify(
                user, session, subject, text, severity="info", kind="anomaly"
            ),
            lambda subject, text: self.notifier.notify_admins(subject, text, kind="anomaly"),
        )
        self.idle.notifiers.append(IdleChannels(self.notifier))
        self.queue.notify = self.notifier.notify
        self.budgets.tell_leads = self._tell_leads
        self.budgets.tell_user = lambda user, session, subject, text: self.notifier.notify(
            user, session, subject, text, severity="warning", kind="budget"
        )
        self.budgets.end_session = lambda session_id, reason: self.sessions.end(
            session_id, SessionStatus.DELETED, reason
        )
        self.metrics.registry.sources.append(
            lambda: budget_families(self.budgets.used_ratio, self.budgets.hourly_cost)
        )
        self.queue.audit = self.audit.record
        self.metrics.registry.sources.append(lambda: queue_families(self.queue.waiting_by_profile))
        self._gateway_started = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _audit_login(self, record: ConnectionRecord) -> None:
        self.audit.record(
            Entry(
                actor=record.user_id,
                action="gateway.login",
                target=record.session_id,
                source=record.client_address,
                detail={"connection": record.connection_id},
            )
        )

    def _tell_leads(self, kind: BudgetKind, name: str, subject: str, text: str) -> None:
        """A budget's alert to the leads of its team (a project's: of the project's
        team), and to the admins when the team has no lead."""
        try:
            team = name if kind == BudgetKind.TEAM else self.accounts.teams.get_project(name).team
            members = self.accounts.teams.get_team(team).members
        except SandmanError:
            members = {}
        leads = [user for user, role in members.items() if role == "lead"]
        for lead in leads:
            self.notifier.notify(lead, None, subject, text, severity="warning", kind="budget")
        if not leads:
            self.notifier.notify_admins(subject, text, kind="budget")

    def _check_gateway(self) -> None:
        """The gateway this process runs listens (nothing to check when it runs elsewhere)."""
        if self.gateway is not None and self._gateway_started and not self.gateway.listening:
            raise RuntimeFailure("the SSH gateway stopped listening")

    async def start_gateway(self) -> None:
        """Start the SSH gateway on the running event loop (``serve`` and ``gateway``)."""
        if self.gateway is None:
            return
        gateway = self.gateway
        await gateway.start()
        self._gateway_started = True
        self.gateway_port = self.settings.ssh_public_port or gateway.bound_port
        loop = asyncio.get_running_loop()

        def close_connections(user_id: str, session_id: str, reason: str) -> None:
            """Tell the user why and cut their connections before the container goes."""
            future = asyncio.run_coroutine_threadsafe(
                gateway.close_user(user_id, f"session {session_id} ended: {reason}"), loop
            )
            try:
                future.result(timeout=5)
            except Exception:
                log.warning("could not close the connections of %s in time", user_id)

        self.sessions.stop_hooks.append(close_connections)
        log.info("SSH gateway on %s:%d", self.settings.ssh_listen_address[0], gateway.bound_port)

    async def stop_gateway(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()

    def start_background(self) -> None:
        """Reconcile once now, then run the reaper and reconciler on their timers."""
        try:
            self.workspaces.restore()  # whether or not the engine answers yet
            self.runtime.prepare()
            self.reconciler.run_once()
            if self.sshpiper is not None:
                self.sshpiper.sync()
        except ConfigurationError:
            raise  # it cannot work: refuse to run
        except SandmanError as exc:
            log.error("start-up reconciliation failed: %s", exc.message)
        self._loop("reaper", self.settings.ttl_check_interval, self.reaper.sweep)
        self._loop("reconciler", self.settings.reconcile_interval, self._reconcile)
        self._loop("idle", self.settings.idle_check_interval, self.idle.sweep)
        retention = timedelta(seconds=self.settings.connection_retention)
        self._loop("pruner", 3600, lambda: self.routes.prune_connections(retention))
        self._loop("capacity", 3600, self.usage.record_capacity)
        try:
            self.collector.collect()  # a first snapshot now, not one interval later
        except Exception:
            log.exception("the first metrics collection failed")
        self._loop("metrics", self.settings.metrics_interval, self.collector.collect)
        self._loop("metrics-pruner", 3600, self.metrics.history.prune)
        self._loop("demand-pruner", 3600, self.demand.prune)
        if self.settings.anomaly_interval > 0:
            self._loop("anomalies", self.settings.anomaly_interval, self.anomalies.run_once)
        self._loop("budgets", 60, self.budgets.sweep)
        self._loop("state-capture", self.settings.state_capture_interval, self.states.capture_all)
        queue = threading.Thread(
            target=self.queue.run, args=(self._stop,), name="sandman-queue", daemon=True
        )
        queue.start()
        self._threads.append(queue)

    def _reconcile(self) -> None:
        """A reconciler pass, after checking the session network and its firewall
        rules: an engine restart or a firewall reload may have removed them."""
        try:
            self.runtime.prepare()
        except RuntimeUnavailable:
            pass  # the pass below says so, and the loop tries again soon
        except SandmanError as exc:
            log.error("the session network: %s", exc.message)
        self.reconciler.run_once()

    def _loop(self, name: str, interval: float, work: Callable[[], object]) -> None:
        """Run ``work`` every ``interval``; while the runtime does not answer, every
        ``RETRY_UNAVAILABLE`` seconds instead, so the reconciler re-checks every
        session as soon as the engine is back (after a restart, say)."""

        def run() -> None:
            wait = interval
            while not self._stop.wait(wait):
                wait = interval
                try:
                    work()
                except RuntimeUnavailable as exc:
                    log.error("%s: %s; trying again in %.0fs", name, exc.message, RETRY_UNAVAILABLE)
                    wait = min(interval, RETRY_UNAVAILABLE)
                except SandmanError as exc:
                    log.error("%s: %s", name, exc.message)
                except Exception:
                    log.exception("%s failed; it runs again in %.0fs", name, interval)

        thread = threading.Thread(target=run, name=f"sandman-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.queue.wake()
        self.creator.close()
        self.notifier.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.metrics.close()
        self.inventory.close()
        self.db.dispose()
