"""The portal's pages of one's own account: SSH keys, tokens, notification
channels, and one's usage and cost."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from sandman.accounting.reports import GroupBy, Period
from sandman.accounts.policy import Action, Target, grantable_scopes, require, usage_visibility
from sandman.errors import InvalidRequest, SandmanError
from sandman.observe.notify_channels import Channels, Webhook, WebhookFormat
from sandman.services.keys import normalize_public_keys
from sandman.web.portal_base import PREFIX, PortalRoute, Seen, core_of, form_of, redirect, render

router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)


def _own(seen: Any, action: Action) -> None:
    require(seen.caller, action, Target(owner=seen.user_id, role=seen.caller.role))


# -- SSH keys ------------------------------------------------------------------------
@router.get("/keys", name="portal.keys")
def keys_page(request: Request, seen: Seen) -> Response:
    _own(seen, Action.KEY_MANAGE)
    keys = core_of(request).accounts.directory.ssh_keys(seen.user_id)
    return render(request, "keys.html", {"keys": keys}, viewer=seen)


@router.post("/keys", name="user.keys_put")
async def change_keys(request: Request, seen: Seen) -> Response:
    """Add a key (``add``) or remove one (``remove``: its index)."""
    core = core_of(request)
    form = await form_of(request)
    _own(seen, Action.KEY_MANAGE)
    directory = core.accounts.directory
    try:
        keys = await run_in_threadpool(directory.ssh_keys, seen.user_id)
        if form.get("add", "").strip():
            keys = normalize_public_keys([*keys, form["add"].strip()])
            message = "key added"
        elif form.get("remove", "").isdigit() and int(form["remove"]) < len(keys):
            del keys[int(form["remove"])]
            message = "key removed"
        else:
            raise InvalidRequest("paste a public key to add, or pick one to remove")
        await run_in_threadpool(directory.set_ssh_keys, seen.user_id, keys)
    except SandmanError as exc:
        return redirect(request, f"{PREFIX}/keys", exc.message, "error")
    return redirect(request, f"{PREFIX}/keys", message)


# -- tokens ----------------------------------------------------------------------------
@router.get("/tokens", name="portal.tokens")
def tokens_page(request: Request, seen: Seen) -> Response:
    _own(seen, Action.TOKEN_READ)
    tokens = core_of(request).credentials.list_tokens(seen.user_id)
    return render(request, "tokens.html", {"tokens": tokens, "secret": None}, viewer=seen)


@router.post("/tokens", name="token.create")
async def create_token(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    _own(seen, Action.TOKEN_CREATE)
    try:
        days = int(form["days"]) if form.get("days", "").strip() else None
        scopes = grantable_scopes(seen.caller, None)
        view, secret = await run_in_threadpool(
            core.credentials.create_token,
            seen.user_id,
            form.get("name", "").strip(),
            scopes,
            days,
            seen.user_id,
        )
    except (SandmanError, ValueError) as exc:
        text = exc.message if isinstance(exc, SandmanError) else "days: a whole number"
        return redirect(request, f"{PREFIX}/tokens", text, "error")
    request.state.audit_target = view.id
    tokens = await run_in_threadpool(core.credentials.list_tokens, seen.user_id)
    # The secret is shown this once, on this page; nothing keeps it.
    return render(request, "tokens.html", {"tokens": tokens, "secret": secret}, viewer=seen)


@router.post("/tokens/{token_id}/revoke", name="token.revoke")
async def revoke_token(token_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    token = await run_in_threadpool(core.credentials.token, token_id)
    require(seen.caller, Action.TOKEN_REVOKE, Target(owner=token.user_id))
    await run_in_threadpool(core.credentials.revoke, token_id)
    return redirect(request, f"{PREFIX}/tokens", f"token {token.name} revoked")


# -- notification channels -------------------------------------------------------------
@router.get("/notifications", name="portal.notifications")
def notifications_page(request: Request, seen: Seen) -> Response:
    _own(seen, Action.NOTIFICATION_READ)
    found = core_of(request).notifications.get_user(seen.user_id)
    return render(
        request,
        "notifications.html",
        {"found": found, "formats": [f.value for f in WebhookFormat]},
        viewer=seen,
    )


@router.post("/notifications", name="notification.set")
async def set_notifications(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    _own(seen, Action.NOTIFICATION_SET)
    back = f"{PREFIX}/notifications"
    try:
        if form.get("reset") == "on":
            await run_in_threadpool(core.notifications.clear_user, seen.user_id)
            return redirect(request, back, "the defaults apply again")
        url = form.get("webhook_url", "").strip()
        hook = None
        if url:
            hook = Webhook(url, WebhookFormat(form.get("webhook_format") or "json"))
        channels = Channels(
            webhook=hook,
            email=form.get("email", "").strip() or None,
            terminal=form.get("terminal") == "on",
        )
        await run_in_threadpool(
            core.notifications.set_user, seen.user_id, channels, seen.caller.actor
        )
    except (SandmanError, ValueError) as exc:
        text = exc.message if isinstance(exc, SandmanError) else "unknown webhook format"
        return redirect(request, back, text, "error")
    return redirect(request, back, "notification channels saved")


# -- usage and cost --------------------------------------------------------------------
@router.get("/usage", name="portal.usage")
def usage_page(request: Request, seen: Seen, period: str = "day") -> Response:
    core = core_of(request)
    visibility = usage_visibility(seen.caller)
    try:
        chosen = Period(period)
    except ValueError:
        raise InvalidRequest("period: day, week or month") from None
    report = core.usage.report(visibility, GroupBy.USER, chosen)
    rows = [r for r in report.rows if r.group is not None]
    return render(
        request,
        "usage.html",
        {"report": report, "rows": rows, "period": chosen.value},
        viewer=seen,
    )
