"""``sandman users import`` is idempotent; ``sandman audit verify`` finds an edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from sandman.cli.main import app
from sandman.config import Settings
from sandman.store.database import Database
from sandman.store.models import AuditRecord

USERS_YAML = """
users:
  - user_id: alice
    display_name: Alice Kim
    email: alice@example.org
    teams: [ml, "vision:lead"]
    default_team: ml
  - user_id: otto
    role: operator
"""
USERS_CSV = "user_id,display_name,teams,role\nbob,Bob,ml;vision,\ncarl,,,operator\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SANDMAN_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SANDMAN_ADMIN_TOKEN", "cli-token")
    monkeypatch.setenv("SANDMAN_GPU_TOPOLOGY", "a100-40gb-7x1g")
    return tmp_path


def test_importing_twice_changes_nothing(env: Path) -> None:
    yaml_file = env / "users.yaml"
    yaml_file.write_text(USERS_YAML)
    csv_file = env / "users.csv"
    csv_file.write_text(USERS_CSV)
    runner = CliRunner()
    first = runner.invoke(app, ["users", "import", str(yaml_file)])
    assert first.exit_code == 0, first.output
    assert "created: 2 (alice, otto)" in first.output
    again = runner.invoke(app, ["users", "import", str(yaml_file)])
    assert "created: 0" in again.output and "updated: 0" in again.output
    assert "unchanged: 2 (alice, otto)" in again.output
    from_csv = runner.invoke(app, ["users", "import", str(csv_file)])
    assert "created: 2 (bob, carl)" in from_csv.output, from_csv.output

    settings = Settings()
    from sandman.accounts.directory import Directory

    db = Database(settings.effective_database_url)
    try:
        directory = Directory(db, lambda _db, _u: None, lambda _s, _r: None)  # type: ignore[arg-type, return-value]
        alice = directory.get("alice")
        assert alice.teams == {"ml": "member", "vision": "lead"}
        assert (alice.default_team, alice.email) == ("ml", "alice@example.org")
        assert directory.get("carl").role == "operator"
    finally:
        db.dispose()


def test_a_bad_entry_is_refused_with_its_reason(env: Path) -> None:
    bad = env / "bad.yaml"
    bad.write_text("- user_id: Root!\n")
    result = CliRunner().invoke(app, ["users", "import", str(bad)])
    assert result.exit_code == 1 and "invalid user_id" in result.output


def test_audit_verify_finds_an_edited_record(env: Path) -> None:
    from sandman.accounts.audit import AuditLog, Entry

    settings = Settings()
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    audit = AuditLog(db)
    for n in range(3):
        audit.record(Entry(actor="ada", action="session.create", target=f"s{n}"))
    runner = CliRunner()
    intact = runner.invoke(app, ["audit", "verify"])
    assert intact.exit_code == 0 and "intact: 3 records" in intact.output
    with db.transaction() as tx:
        tx.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(result="refused"))
    db.dispose()
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1 and "record 2 was changed" in broken.output
