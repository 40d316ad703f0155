"""Environments: named, admin-registered recipes a session starts from (pure).

An environment names an image, what it offers (a shell always; JupyterLab and VS
Code in the browser where its image has them), a default GPU profile and the
teams allowed to use it (none listed: everyone). Four are built in: ``base``
(the workspace image), ``jupyter`` (base with the web apps) and ``pytorch`` and
``tensorflow`` (jupyter with the framework); a registered row of the same name
overrides a built-in's fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sandman.environments.apps import APPS, base_path
from sandman.errors import Forbidden, InvalidRequest
from sandman.image.recipes import RECIPES, environment_image

SHELL = "shell"
APP_NAMES: tuple[str, ...] = (SHELL, *APPS)  # shell, jupyterlab, vscode
DEFAULT_ENVIRONMENT = "base"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
TEAM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A Docker image reference: [registry/]repository[:tag][@digest], no spaces.
IMAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}(@sha256:[0-9a-f]{64})?$")
PROFILE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$")
FIELDS = ("image", "description", "apps", "default_profile", "allowed_teams")


@dataclass(frozen=True)
class Environment:
    name: str
    image: str
    description: str = ""
    apps: tuple[str, ...] = (SHELL,)
    default_profile: str | None = None
    allowed_teams: tuple[str, ...] = ()  # none: every team (and users in none)
    builtin: bool = False

    @property
    def web_apps(self) -> tuple[str, ...]:
        """The apps served through the apps proxy (all but the shell)."""
        return tuple(app for app in self.apps if app in APPS)


def builtin_environments(base_image: str) -> dict[str, Environment]:
    """The built-ins; ``base``'s image is the deployment's default image."""
    apps = (SHELL, "jupyterlab", "vscode")
    found = {
        DEFAULT_ENVIRONMENT: Environment(
            DEFAULT_ENVIRONMENT,
            base_image,
            "Debian with SSH, Python, git, tmux and nvtop",
            (SHELL,),
            builtin=True,
        )
    }
    for recipe in RECIPES.values():
        found[recipe.name] = Environment(
            recipe.name,
            environment_image(recipe.name),
            recipe.description,
            apps,
            builtin=True,
        )
    return found


def checked_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"environment name {name!r} must match {NAME_PATTERN.pattern} "
            "(lower case letters, digits and -, at most 32)"
        )
    return name


def checked_apps(apps: Iterable[str]) -> tuple[str, ...]:
    """Known apps, in the canonical order, the shell always among them."""
    given = list(apps)
    unknown = [app for app in given if app not in APP_NAMES]
    if unknown:
        raise InvalidRequest(
            f"unknown apps {', '.join(map(repr, unknown))}; known: {', '.join(APP_NAMES)}"
        )
    return tuple(app for app in APP_NAMES if app in given or app == SHELL)


def checked_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a POST or PATCH body, checked and normalised (absent stay absent)."""
    out: dict[str, Any] = {}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
    if "image" in values:
        image = values["image"]
        if not isinstance(image, str) or not IMAGE_PATTERN.fullmatch(image):
            raise InvalidRequest(f"image {image!r} is not an image reference")
        out["image"] = image
    if "description" in values:
        description = values["description"] or ""
        if not isinstance(description, str) or len(description) > 500:
            raise InvalidRequest("description must be text of at most 500 characters")
        out["description"] = description
    if "apps" in values:
        out["apps"] = checked_apps(values["apps"] or ())
    if "default_profile" in values:
        profile = values["default_profile"]
        if profile is not None and (
            not isinstance(profile, str) or not PROFILE_PATTERN.fullmatch(profile)
        ):
            raise InvalidRequest(f"default_profile {profile!r} is not a GPU profile name")
        out["default_profile"] = profile
    if "allowed_teams" in values:
        teams = values["allowed_teams"] or ()
        bad = [t for t in teams if not isinstance(t, str) or not TEAM_PATTERN.fullmatch(t)]
        if bad:
            raise InvalidRequest(f"allowed_teams: invalid team names {bad!r}")
        out["allowed_teams"] = tuple(sorted(set(teams)))
    return out


def new_environment(name: str, values: Mapping[str, Any]) -> Environment:
    fields_ = checked_fields(values)
    if "image" not in fields_:
        raise InvalidRequest("an environment needs an image")
    return Environment(checked_name(name), **fields_)


def patched(environment: Environment, values: Mapping[str, Any]) -> Environment:
    return replace(environment, **checked_fields(values))


def merged(
    builtins: Mapping[str, Environment], registered: Iterable[Environment]
) -> dict[str, Environment]:
    """Every environment by name: the built-ins, each overridden by a registered row
    of its name, and the registered ones; sorted by name."""
    found = dict(builtins)
    for environment in registered:
        found[environment.name] = replace(environment, builtin=environment.name in builtins)
    return dict(sorted(found.items()))


def allowed(environment: Environment, teams: Iterable[str]) -> bool:
    """Whether a user in ``teams`` may use ``environment``."""
    return not environment.allowed_teams or bool(set(environment.allowed_teams) & set(teams))


def check_allowed(environment: Environment, user_id: str, teams: Iterable[str]) -> None:
    if not allowed(environment, teams):
        raise Forbidden(
            f"environment {environment.name!r} is for teams "
            f"{', '.join(environment.allowed_teams)}; {user_id} is in none of them"
        )


@dataclass(frozen=True)
class Choice:
    """The image a session request gets, and the environment it was named by."""

    image: str
    environment: str | None
    default_profile: str | None = None


def choose(
    environments: Mapping[str, Environment],
    user_id: str,
    teams: Iterable[str],
    image: str | None,
    environment: str | None,
    allowed_images: Iterable[str] = (),
) -> Choice:
    """What a session request starts from.

    ``environment`` (default ``base``) gives its image; an ``image`` alone must be in
    ``allowed_images`` or be a registered environment's image (then it is that
    environment, teams and all). Both together are 400; an unknown environment 400;
    one the user's teams may not use 403.
    """
    teams = list(teams)
    if image is not None and environment is not None:
        raise InvalidRequest("give environment or image, not both")
    if image is not None:
        by_image = [e for e in environments.values() if e.image == image]
        for candidate in by_image:
            if allowed(candidate, teams):
                return Choice(image, candidate.name, candidate.default_profile)
        if image in set(allowed_images):
            return Choice(image, None)
        if by_image:
            check_allowed(by_image[0], user_id, teams)
        raise InvalidRequest(
            f"image {image!r} is not allowed: it is neither an environment's image nor in "
            f"SANDMAN_ALLOWED_IMAGES; name an environment instead ({', '.join(environments)})"
        )
    name = environment or DEFAULT_ENVIRONMENT
    chosen = environments.get(name)
    if chosen is None:
        raise InvalidRequest(
            f"unknown environment {name!r}; known: {', '.join(environments) or 'none'}"
        )
    check_allowed(chosen, user_id, teams)
    return Choice(chosen.image, chosen.name, chosen.default_profile)


def app_urls(
    environment: Environment | None, apps_url: str | None, session_id: str
) -> dict[str, str]:
    """The session's web apps on the apps origin, only those its environment offers."""
    if environment is None or not apps_url:
        return {}
    origin = apps_url.rstrip("/")
    return {name: origin + base_path(session_id, APPS[name]) for name in environment.web_apps}


def environment_out(environment: Environment) -> dict[str, Any]:
    """An environment as the API shows it."""
    return {
        "name": environment.name,
        "image": environment.image,
        "description": environment.description,
        "apps": list(environment.apps),
        "default_profile": environment.default_profile,
        "allowed_teams": list(environment.allowed_teams),
        "builtin": environment.builtin,
    }


__all__ = [
    "APP_NAMES",
    "DEFAULT_ENVIRONMENT",
    "Choice",
    "Environment",
    "allowed",
    "app_urls",
    "builtin_environments",
    "check_allowed",
    "checked_apps",
    "checked_fields",
    "checked_name",
    "choose",
    "environment_out",
    "merged",
    "new_environment",
    "patched",
]
