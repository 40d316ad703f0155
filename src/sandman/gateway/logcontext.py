"""Loggers that carry the connection they speak about: ``[conn=3, user=u, session=s]``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter whose context can be filled in as a connection progresses."""

    def __init__(self, logger: logging.Logger, conn_id: str) -> None:
        super().__init__(logger, {})
        self.conn_id = conn_id
        self.user: str | None = None
        self.session: str | None = None

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        prefix = f"[conn={self.conn_id}, user={self.user or '-'}, session={self.session or '-'}]"
        return f"{prefix} {msg}", kwargs
