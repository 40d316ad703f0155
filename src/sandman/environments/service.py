"""The environment registry: rows of ``environments`` over the built-ins (thin I/O).

Routes call this; the decisions (validation, who may use which, what a session
request starts from) are ``model``'s pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.environments.model import (
    Choice,
    Environment,
    app_urls,
    builtin_environments,
    checked_name,
    choose,
    merged,
    new_environment,
    patched,
)
from sandman.errors import Conflict, NotFound
from sandman.store.database import Database
from sandman.store.models import EnvironmentRow, TeamMember, utcnow
from sandman.store.models import Session as SessionRow


def _environment(row: EnvironmentRow) -> Environment:
    return Environment(
        name=row.name,
        image=row.image,
        description=row.description or "",
        apps=tuple(row.apps or ()),
        default_profile=row.default_profile,
        allowed_teams=tuple(row.allowed_teams or ()),
    )


def _write(row: EnvironmentRow, environment: Environment) -> None:
    row.image = environment.image
    row.description = environment.description
    row.apps = list(environment.apps)
    row.default_profile = environment.default_profile
    row.allowed_teams = list(environment.allowed_teams)
    row.updated_at = utcnow()


class Environments:
    def __init__(
        self,
        db: Database,
        base_image: str,
        allowed_images: Callable[[], list[str]] = list,
        apps_url: str | None = None,
    ) -> None:
        self.db = db
        self.builtins = builtin_environments(base_image)
        self.allowed_images = allowed_images
        self.apps_url = apps_url

    # ------------------------------------------------------------------ reads
    def _all(self, db: Db) -> dict[str, Environment]:
        rows = db.scalars(select(EnvironmentRow))
        return merged(self.builtins, (_environment(row) for row in rows))

    def all(self) -> dict[str, Environment]:
        with self.db.read() as db:
            return self._all(db)

    def get(self, name: str) -> Environment:
        found = self.all().get(name)
        if found is None:
            raise NotFound(f"no environment {name!r}")
        return found

    def teams_of(self, db: Db, user_id: str | None) -> list[str]:
        if user_id is None:
            return []
        return list(db.scalars(select(TeamMember.team).where(TeamMember.user_id == user_id)))

    # ----------------------------------------------------------------- writes
    def create(self, name: str, values: Mapping[str, Any]) -> Environment:
        environment = new_environment(name, values)
        with self.db.transaction() as db:
            if name in self._all(db):
                raise Conflict(f"environment {name!r} exists; change it with PATCH")
            row = EnvironmentRow(name=name, created_at=utcnow())
            _write(row, environment)
            db.add(row)
        return environment

    def update(self, name: str, values: Mapping[str, Any]) -> Environment:
        """Change a registered environment, or a built-in (its row then overrides it)."""
        with self.db.transaction() as db:
            current = self._all(db).get(name)
            if current is None:
                raise NotFound(f"no environment {name!r}")
            environment = patched(current, values)
            row = db.get(EnvironmentRow, name)
            if row is None:
                row = EnvironmentRow(name=name, created_at=utcnow())
                db.add(row)
            _write(row, environment)
        return environment

    def delete(self, name: str) -> None:
        """Remove a registered environment; a changed built-in goes back to its
        defaults. Built-ins themselves stay (restrict them with allowed_teams)."""
        checked_name(name)
        with self.db.transaction() as db:
            row = db.get(EnvironmentRow, name)
            if row is None:
                if name in self.builtins:
                    raise Conflict(
                        f"environment {name!r} is built in; restrict it with allowed_teams"
                    )
                raise NotFound(f"no environment {name!r}")
            db.delete(row)

    # --------------------------------------------------------------- sessions
    def choose(self, user_id: str, image: str | None, environment: str | None) -> Choice:
        """What a session request starts from (``model.choose``), with the user's teams."""
        with self.db.read() as db:
            return choose(
                self._all(db),
                user_id,
                self.teams_of(db, user_id),
                image,
                environment,
                self.allowed_images(),
            )

    def app_urls(self, rows: list[SessionRow]) -> dict[str, dict[str, str]]:
        """Each session's web app URLs (by session id), from its environment."""
        if not self.apps_url or not any(row.environment for row in rows):
            return {row.id: {} for row in rows}
        known = self.all()
        return {
            row.id: app_urls(known.get(row.environment or ""), self.apps_url, row.id)
            for row in rows
        }
