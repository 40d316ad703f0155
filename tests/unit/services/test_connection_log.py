"""The gateway's connection log: refused attempts aggregate, old records go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from sandman.gateway.routing import ConnectionRecord
from sandman.services.gateway_routes import DatabaseRouteSource
from sandman.services.sessions import SessionService
from sandman.store.models import Connection

T0 = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)


def _record(n: int, at: datetime, result: str = "refused", **extra: object) -> ConnectionRecord:
    values: dict[str, object] = {
        "connection_id": f"c{n}", "user_id": f"guess{n % 3}", "session_id": None,
        "client_address": "203.0.113.9", "started_at": at, "ended_at": at,
        "bytes_from_client": 100, "bytes_to_client": 50, "result": result,
        "reason": "no matching key",
    }  # fmt: skip
    values.update(extra)
    return ConnectionRecord(**values)  # type: ignore[arg-type]


def _rows(service: SessionService) -> list[Connection]:
    with service.db.read() as db:
        return list(db.scalars(select(Connection).order_by(Connection.started_at)))


def test_a_flood_of_refused_logins_is_a_row_per_minute(service: SessionService) -> None:
    routes = DatabaseRouteSource(service)
    for n in range(500):  # 500 bad logins within one minute from one address
        routes.record_connection(_record(n, T0 + timedelta(milliseconds=100 * n)))
    routes.record_connection(_record(900, T0 + timedelta(minutes=1)))  # the next minute
    routes.record_connection(_record(901, T0, reason="unknown user"))  # another reason
    routes.record_connection(_record(902, T0, result="accepted", reason=None))
    rows = _rows(service)
    refused = [r for r in rows if r.result == "refused"]
    assert sorted(r.attempts for r in refused) == [1, 1, 500]
    flood = next(r for r in refused if r.attempts == 500)
    assert flood.user_id == "(several)" and flood.bytes_from_client == 500 * 100
    assert [r.id for r in rows if r.result == "accepted"] == ["c902"]


def test_records_older_than_the_retention_are_pruned(service: SessionService) -> None:
    routes = DatabaseRouteSource(service)
    now = service.clock()
    routes.record_connection(_record(1, now - timedelta(days=91), result="accepted"))
    routes.record_connection(_record(2, now - timedelta(days=89), result="accepted"))
    assert routes.prune_connections(timedelta(days=90)) == 1
    assert [r.id for r in _rows(service)] == ["c2"]
