"""``/queue``: the requests waiting for room, in the order they will start."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from sandman.accounts.policy import session_visibility
from sandman.api.auth import Who
from sandman.api.routes.deps import sandman
from sandman.api.schemas import QueueEntryOut
from sandman.core import Sandman
from sandman.services.queue import asked_profile

router = APIRouter(tags=["sessions"])
App = Annotated[Sandman, Depends(sandman)]


@router.get("/queue", name="queue.list", response_model=list[QueueEntryOut])
def list_queue(app: App, caller: Who) -> list[dict[str, Any]]:
    """The queue in order: priority class, then fair share (each team's recent use of
    the GPUs, decayed with ``SANDMAN_FAIRSHARE_HALF_LIFE``), then age. A request
    starts as soon as it fits, so a small one may pass a large one. Users see their
    own entries (and a team lead the team's); operators and admins all, with the
    positions in the whole queue."""
    visible = session_visibility(caller)
    out = []
    for entry in app.queue.view().entries:
        row = entry.row
        if not (visible.all or row.user_id == visible.user_id or row.team in visible.teams):
            continue
        out.append(
            {
                "session_id": row.id,
                "user_id": row.user_id,
                "team": row.team,
                "project": row.project,
                "priority": row.priority,
                "asks": asked_profile(entry.request, app.settings.default_mig_profile),
                "queue_position": entry.position,
                "eta": entry.eta,
                "reason": row.queue_reason,
                "created_at": row.created_at,
                "cancel_at": row.expires_at,
            }
        )
    return out
