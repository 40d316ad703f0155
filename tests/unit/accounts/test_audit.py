"""The audit chain: every record verifies, and any edit or removal is found."""

from __future__ import annotations

from sqlalchemy import delete, update

from sandman.accounts.audit import AuditLog, Entry, scrub
from sandman.core import Sandman
from sandman.store.models import AuditRecord


def fill(audit: AuditLog, count: int) -> None:
    for n in range(count):
        audit.record(
            Entry(actor="ada", action="session.create", target=f"s{n}", source="127.0.0.1")
        )


def test_an_untouched_chain_verifies(core: Sandman) -> None:
    assert core.audit.verify().ok  # empty
    fill(core.audit, 5)
    result = core.audit.verify()
    assert result.ok and result.records == 5


def test_an_edited_record_is_found(core: Sandman) -> None:
    fill(core.audit, 5)
    with core.db.transaction() as db:
        db.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(actor="mallory"))
    result = core.audit.verify()
    assert not result.ok and result.seq == 3 and "changed" in (result.problem or "")


def test_a_removed_record_is_found(core: Sandman) -> None:
    fill(core.audit, 5)
    with core.db.transaction() as db:
        db.execute(delete(AuditRecord).where(AuditRecord.seq == 2))
    result = core.audit.verify()
    assert not result.ok and "missing" in (result.problem or "")


def test_removing_the_newest_records_is_found(core: Sandman) -> None:
    fill(core.audit, 5)
    with core.db.transaction() as db:
        db.execute(delete(AuditRecord).where(AuditRecord.seq >= 4))
    result = core.audit.verify()
    assert not result.ok and "newest" in (result.problem or "")


def test_a_rehashed_edit_still_breaks_the_chain(core: Sandman) -> None:
    """Recomputing the edited record's own hash does not help: the next one names it."""
    from sandman.accounts.audit import hash_of

    fill(core.audit, 4)
    with core.db.transaction() as db:
        row = db.get(AuditRecord, 2)
        assert row is not None
        row.target = "elsewhere"
        row.hash = hash_of(row)
    result = core.audit.verify()
    assert not result.ok and result.seq == 3


def test_secrets_never_reach_a_record(core: Sandman) -> None:
    detail = {"name": "ci", "token": "sm_secret", "password": "x", "ssh_private_key": "k"}
    assert scrub(detail) == {"name": "ci"}
    row = core.audit.record(Entry(actor="ada", action="token.create", detail=detail))
    assert row.detail == {"name": "ci"}


def test_refusals_are_rate_limited_per_actor(core: Sandman) -> None:
    audit = AuditLog(core.db, refusals_per_minute=3)
    kept = [
        audit.record_refusal(Entry(actor="alice", action="session.end", result="refused"))
        for _ in range(10)
    ]
    assert kept == [True, True, True] + [False] * 7
    assert audit.record_refusal(Entry(actor="bob", action="session.end", result="refused"))
    assert len(audit.query(action="session.end")) == 4


def test_query_filters(core: Sandman) -> None:
    fill(core.audit, 3)
    core.audit.record(Entry(actor="otto", action="gpu.mig_create", target="GPU-1"))
    assert [r.actor for r in core.audit.query(action="gpu.*")] == ["otto"]
    assert [r.target for r in core.audit.query(actor="ada", limit=2)] == ["s2", "s1"]
    assert [r.target for r in core.audit.query(actor="ada", after=2)] == ["s0"]
