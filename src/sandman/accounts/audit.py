"""The audit trail: append-only records chained by SHA-256.

Each record's hash covers its fields and the previous record's hash, and the
newest hash is also kept apart (``meta.audit_head``): editing or removing any
record, the last one included, breaks the chain, which ``verify`` reports.
Records are written one at a time (the head row is locked), so the chain never
forks, also with several processes on PostgreSQL.

Secrets never reach a record: callers pass names and ids only, and ``detail``
drops any key that looks like a secret.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from sandman.store.database import Database
from sandman.store.models import AuditRecord, Meta, utcnow

GENESIS = "0" * 64
HEAD = "audit_head"
SECRET_WORDS = ("token", "password", "secret", "private_key", "cookie", "authorization")


@dataclass(frozen=True)
class Entry:
    actor: str
    action: str
    target: str | None = None
    result: str = "ok"  # ok | refused | failed
    source: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] | None = None


def scrub(detail: dict[str, Any] | None) -> dict[str, Any]:
    """``detail`` without anything that could be a secret."""
    if not detail:
        return {}
    return {
        key: value
        for key, value in detail.items()
        if not any(word in key.lower() for word in SECRET_WORDS)
    }


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def record_hash(
    seq: int,
    at: datetime,
    actor: str,
    source: str | None,
    action: str,
    target: str | None,
    result: str,
    request_id: str | None,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    """The hash of one record (pure): canonical JSON of its fields and the previous hash."""
    body = json.dumps(
        [seq, _iso(at), actor, source, action, target, result, request_id, detail, prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def hash_of(row: AuditRecord) -> str:
    return record_hash(
        row.seq,
        row.at,
        row.actor,
        row.source,
        row.action,
        row.target,
        row.result,
        row.request_id,
        dict(row.detail or {}),
        row.prev_hash,
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    problem: str | None = None
    seq: int | None = None  # the first record that does not verify


class AuditLog:
    def __init__(self, db: Database, refusals_per_minute: int = 30) -> None:
        self.db = db
        self.refusals_per_minute = refusals_per_minute
        self._refusals: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def record(self, entry: Entry) -> AuditRecord:
        detail = scrub(entry.detail)
        with self.db.transaction() as db:
            head = db.scalar(select(Meta).where(Meta.key == HEAD).with_for_update())
            if head is None:
                head = Meta(key=HEAD, value=f"0:{GENESIS}")
                db.add(head)
            last_seq, _, prev_hash = head.value.partition(":")
            row = AuditRecord(
                seq=int(last_seq) + 1,
                at=utcnow(),
                actor=entry.actor[:96],
                source=(entry.source or None) and entry.source[:64],
                action=entry.action[:64],
                target=(entry.target or None) and entry.target[:255],
                result=entry.result,
                request_id=entry.request_id,
                detail=detail,
                prev_hash=prev_hash,
                hash="",
            )
            row.hash = hash_of(row)
            db.add(row)
            head.value = f"{row.seq}:{row.hash}"
            return row

    def record_refusal(self, entry: Entry) -> bool:
        """A refusal of an authenticated caller, at most ``refusals_per_minute`` per
        actor, so a script hammering a forbidden route cannot flood the trail."""
        now = time.monotonic()
        with self._lock:
            start, count = self._refusals.get(entry.actor, (now, 0))
            if now - start >= 60:
                start, count = now, 0
            if count >= self.refusals_per_minute:
                return False
            self._refusals[entry.actor] = (start, count + 1)
            if len(self._refusals) > 10_000:  # forget quiet actors
                self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] < 60}
        self.record(entry)
        return True

    def query(
        self,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[AuditRecord]:
        """The newest records first, filtered; ``after`` pages by sequence number."""
        query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
        if actor is not None:
            query = query.where(AuditRecord.actor == actor)
        if action is not None:
            if action.endswith(".*"):
                query = query.where(AuditRecord.action.startswith(action[:-1]))
            else:
                query = query.where(AuditRecord.action == action)
        if target is not None:
            query = query.where(AuditRecord.target == target)
        if since is not None:
            query = query.where(AuditRecord.at >= since)
        if until is not None:
            query = query.where(AuditRecord.at < until)
        if after is not None:
            query = query.where(AuditRecord.seq < after)
        with self.db.read() as db:
            return list(db.scalars(query))

    def _all(self, batch: int = 1000) -> Iterator[AuditRecord]:
        last = 0
        while True:
            with self.db.read() as db:
                rows = list(
                    db.scalars(
                        select(AuditRecord)
                        .where(AuditRecord.seq > last)
                        .order_by(AuditRecord.seq)
                        .limit(batch)
                    )
                )
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def verify(self) -> Verification:
        """Walk the chain from the first record; the first break is reported."""
        prev, expected_seq, count = GENESIS, 1, 0
        for row in self._all():
            if row.seq != expected_seq:
                return Verification(False, count, f"record {expected_seq} is missing", row.seq)
            if row.prev_hash != prev:
                return Verification(
                    False, count, f"record {row.seq} does not follow the one before", row.seq
                )
            if hash_of(row) != row.hash:
                return Verification(False, count, f"record {row.seq} was changed", row.seq)
            prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
        with self.db.read() as db:
            head = db.get(Meta, HEAD)
        head_value = head.value if head is not None else f"0:{GENESIS}"
        if head_value != f"{count}:{prev}":
            return Verification(
                False, count, "the newest records were removed or replaced", expected_seq
            )
        return Verification(True, count)
