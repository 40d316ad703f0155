"""Notification channels (``/users/{user_id}/notifications``, ``/notifications/defaults``)
and Alertmanager's webhook (``/alerts/webhook``).

The webhook is not called by a user: Alertmanager authenticates with a secret of
its own (``SANDMAN_ALERTS_TOKEN``), so its router is mounted beside the protected
one, with its own check.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sandman.accounts.directory import EMAIL_PATTERN
from sandman.accounts.policy import Action, Caller, Target, require
from sandman.api.auth import Who, bearer_token
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UserIdPath, UtcTime
from sandman.core import Sandman
from sandman.domain import validate_user_id
from sandman.errors import Forbidden, Unauthorized
from sandman.observe.alerts import Alert
from sandman.observe.notify_channels import Channels, Webhook, WebhookFormat
from sandman.observe.notify_store import Defaults, UserChannels, UserDefaults, shown

router = APIRouter(tags=["notifications"])
alerts_router = APIRouter(tags=["notifications"])
App = Annotated[Sandman, Depends(sandman)]

URL_DOC = (
    "http or https; answers show only its scheme and host (the rest may be a secret), and a "
    "write that sends that shown form back keeps the stored URL. Link-local and cloud "
    "metadata addresses are refused, and this host's own unless the server allows them."
)

_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# A host name or IPv4 address (no user part, no IPv6 literal: use a name), a port, and
# any printable ASCII after the first /, ? or #.
URL_PATTERN = rf"^https?://[A-Za-z0-9._~-]+(?::{_PORT})?(?:[/?#][\x21-\x7e]*)?$"


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048, pattern=URL_PATTERN, description=URL_DOC)
    format: WebhookFormat = Field(
        WebhookFormat.JSON,
        description='json: Sandman\'s fields; slack: {"text"} (Slack, Mattermost); '
        "teams: an Adaptive Card message (Teams workflows and connectors).",
    )


class WebhookOut(BaseModel):
    url: str = Field(description="Scheme and host only.")
    format: WebhookFormat


Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]


class ChannelsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: WebhookIn | None = Field(None, description="A webhook to POST each notice to.")
    email: Email | None = Field(None, description="An address to mail each notice to.")
    terminal: bool = Field(
        True, description="Write notices about a session to the user's open terminals in it."
    )


class NotificationsOut(BaseModel):
    user_id: str
    webhook: WebhookOut | None
    email: str | None
    terminal: bool
    own: bool = Field(description="The user's own choice; false: the defaults apply.")
    updated_at: UtcTime | None


class AdminChannels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: WebhookIn | None = Field(None, description="Where alerts about no session go.")
    email: Email | None = Field(None, description="The admins' address.")


class UserDefaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: WebhookIn | None = Field(None, description="A webhook shared by such users.")
    email: bool = Field(True, description="Mail each user at their account's address.")
    terminal: bool = Field(True, description="Write to the user's open terminals.")


class DefaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    admins: AdminChannels = Field(default_factory=AdminChannels)
    users: UserDefaultsBody = Field(
        default_factory=UserDefaultsBody,
        description="What a user who chose no channels gets.",
    )


class AdminChannelsOut(BaseModel):
    webhook: WebhookOut | None
    email: str | None


class UserDefaultsOut(BaseModel):
    webhook: WebhookOut | None
    email: bool
    terminal: bool


class DefaultsOut(BaseModel):
    admins: AdminChannelsOut
    users: UserDefaultsOut


def _hook(body: WebhookIn | None) -> Webhook | None:
    return None if body is None else Webhook(body.url, body.format)


def _hook_out(hook: Webhook | None) -> dict[str, Any] | None:
    return None if hook is None else {"url": hook.url, "format": hook.format}


def _out(found: UserChannels) -> dict[str, Any]:
    channels = shown(found.channels)
    return {
        "user_id": found.user_id,
        "webhook": _hook_out(channels.webhook),
        "email": channels.email,
        "terminal": channels.terminal,
        "own": found.own,
        "updated_at": found.updated_at,
    }


def _defaults_out(defaults: Defaults) -> dict[str, Any]:
    admins = shown(defaults.admins)
    users = shown(Channels(webhook=defaults.users.webhook))
    return {
        "admins": {"webhook": _hook_out(admins.webhook), "email": admins.email},
        "users": {
            "webhook": _hook_out(users.webhook),
            "email": defaults.users.email,
            "terminal": defaults.users.terminal,
        },
    }


def _may(app: Sandman, caller: Caller, action: Action, user_id: str) -> None:
    validate_user_id(user_id)
    role = app.accounts.directory.role_of(user_id)
    require(caller, action, Target(owner=user_id, role=role))


@router.get(
    "/users/{user_id}/notifications",
    name="notification.read",
    response_model=NotificationsOut,
    responses=errors(404),
)
def get_notifications(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    """Where the user's notifications go: their own choice, or the defaults (a user:
    their own; operators and admins: anyone's)."""
    _may(app, caller, Action.NOTIFICATION_READ, user_id)
    return _out(app.notifications.get_user(user_id))


@router.put(
    "/users/{user_id}/notifications",
    name="notification.set",
    response_model=NotificationsOut,
    responses=errors(404),
)
def put_notifications(
    user_id: UserIdPath, body: ChannelsBody, app: App, caller: Who
) -> dict[str, Any]:
    """Choose where the user's notifications go (alerts about their session, idle
    warnings): a webhook, an e-mail address, their terminals. Replaces any earlier
    choice; 400 for a URL that is refused."""
    _may(app, caller, Action.NOTIFICATION_SET, user_id)
    channels = Channels(webhook=_hook(body.webhook), email=body.email, terminal=body.terminal)
    return _out(app.notifications.set_user(user_id, channels, caller.actor))


@router.delete(
    "/users/{user_id}/notifications",
    name="notification.clear",
    status_code=204,
    responses=errors(404),
)
def delete_notifications(user_id: UserIdPath, app: App, caller: Who) -> Response:
    """Forget the user's own choice: the defaults apply again."""
    _may(app, caller, Action.NOTIFICATION_SET, user_id)
    app.notifications.clear_user(user_id)
    return Response(status_code=204)


@router.get(
    "/notifications/defaults", name="notification.defaults_read", response_model=DefaultsOut
)
def get_defaults(app: App, caller: Who) -> dict[str, Any]:
    """The admins' channel (alerts that concern no session) and what users who chose
    nothing get. Admins."""
    require(caller, Action.NOTIFICATION_DEFAULTS)
    return _defaults_out(app.notifications.get_defaults())


@router.put("/notifications/defaults", name="notification.defaults", response_model=DefaultsOut)
def put_defaults(body: DefaultsBody, app: App, caller: Who) -> dict[str, Any]:
    """Set the admins' channel and the users' defaults. Admins."""
    require(caller, Action.NOTIFICATION_DEFAULTS)
    defaults = Defaults(
        admins=Channels(webhook=_hook(body.admins.webhook), email=body.admins.email),
        users=UserDefaults(
            webhook=_hook(body.users.webhook),
            email=body.users.email,
            terminal=body.users.terminal,
        ),
    )
    return _defaults_out(app.notifications.set_defaults(defaults, caller.actor))


# ------------------------------------------------------------------ Alertmanager
class AlertIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None  # Alertmanager's name


class AlertmanagerBody(BaseModel):
    """Alertmanager's webhook payload (version 4); fields Sandman does not use pass."""

    model_config = ConfigDict(extra="allow")
    version: str | None = None
    status: Literal["firing", "resolved"] | None = None
    alerts: list[AlertIn] = Field(max_length=1000)


class AlertsOut(BaseModel):
    alerts: int = Field(description="Alerts received.")
    notices: int = Field(description="Notices queued for users and admins.")


async def alertmanager(request: Request) -> None:
    """The caller is Alertmanager: ``Authorization: Bearer $SANDMAN_ALERTS_TOKEN``."""
    state: Any = request.app.state
    core: Sandman = state.sandman
    expected = core.settings.alerts_token
    if expected is None:
        raise Forbidden("the alerts webhook is off: set SANDMAN_ALERTS_TOKEN")
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <alerts token>'")
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("wrong alerts token")


@alerts_router.post(
    "/alerts/webhook",
    name="alerts.webhook",
    response_model=AlertsOut,
    dependencies=[Depends(alertmanager)],
    responses=errors(400, 401, 403, 500),
)
async def alerts_webhook(body: AlertmanagerBody, app: App) -> dict[str, Any]:
    """Alertmanager's webhook receiver. Authenticated by its own secret, not a user's
    credential: `Authorization: Bearer <SANDMAN_ALERTS_TOKEN>` (401 when missing or
    wrong, 403 while the server has none set). Alerts about a session (labels
    `session`, or `UUID` and `GPU_I_ID` of the GPU it holds) go to its user; the rest,
    and those whose rule says `audience: admins` or `both`, to the admins' channel."""
    alerts = [Alert(a.status, a.labels, a.annotations, a.startsAt) for a in body.alerts]
    queued = await run_in_threadpool(app.alerts.receive, alerts)
    return {"alerts": len(alerts), "notices": queued}
