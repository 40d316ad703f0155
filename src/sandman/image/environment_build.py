"""Build environment images (``sandman-<name>:latest``) with ``docker build``.

The recipes and their Dockerfiles are ``recipes`` (pure); this module prepares the
build context, builds the parent first when it is missing or stale, and labels
the image with its recipe digest so that a changed recipe is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from sandman.image.build import (
    WORKSPACE_IMAGE,
    ImageBuildError,
    _client,
    build_workspace_image,
    image_is_current,
)
from sandman.image.recipes import (
    CA_BUNDLE,
    ENVIRONMENT_LABEL,
    RECIPE_LABEL,
    RECIPES,
    Recipe,
    environment_image,
    recipe_digest,
    render_environment_dockerfile,
)

HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
Log = Callable[[str], None]


def recipe_of(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(["base", *RECIPES])
        raise ImageBuildError(
            f"environment {name!r} has no recipe here (recipes: {known}); an environment "
            "registered with its own image is built elsewhere"
        ) from None


def _files(recipe: Recipe) -> dict[str, bytes]:
    folder = resources.files("sandman.image") / "files"
    return {item.source: (folder / item.source).read_bytes() for item in recipe.files}


def _image_id(client: Any, tag: str) -> str | None:
    import docker

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def _labels(client: Any, tag: str) -> dict[str, str]:
    import docker

    try:
        return dict(client.images.get(tag).labels or {})
    except docker.errors.ImageNotFound:
        return {}


def parent_image(recipe: Recipe, base_image: str | None = None) -> str:
    """What ``recipe`` is built on: its parent environment's image, or the workspace
    image (``base_image`` instead, for ``--from``)."""
    if recipe.parent is not None:
        return environment_image(recipe.parent)
    return base_image or WORKSPACE_IMAGE


def expected_digest(name: str, base_image: str | None = None) -> str | None:
    """The digest ``name``'s image would carry now; None while its parent is missing."""
    recipe = recipe_of(name)
    client = _client()
    try:
        parent_id = _image_id(client, parent_image(recipe, base_image))
    finally:
        client.close()
    return None if parent_id is None else recipe_digest(recipe, parent_id, _files(recipe))


def environment_is_current(name: str, base_image: str | None = None) -> bool:
    """Whether ``name``'s image exists and was built from this recipe on the present
    parent (the workspace image for ``base``)."""
    if name == "base":
        return image_is_current(base_image or WORKSPACE_IMAGE)
    recipe = recipe_of(name)
    if recipe.parent is not None and not environment_is_current(recipe.parent, base_image):
        return False
    if recipe.parent is None and base_image is None and not image_is_current():
        return False
    wanted = expected_digest(name, base_image)
    client = _client()
    try:
        found = _labels(client, environment_image(name)).get(RECIPE_LABEL)
    finally:
        client.close()
    return wanted is not None and found == wanted


def host_ca_bundle() -> Path:
    """The CA bundle the build stage fetches with: this host's (it trusts what this
    host trusts, an inspecting proxy's CA included), else certifi's."""
    for candidate in HOST_CA_BUNDLES:
        if os.path.isfile(candidate):
            return Path(candidate)
    import certifi

    return Path(certifi.where())


def _context(recipe: Recipe, parent: str, destination: Path) -> None:
    (destination / "Dockerfile").write_text(render_environment_dockerfile(recipe, parent))
    for source, content in _files(recipe).items():
        item = next(f for f in recipe.files if f.source == source)
        target = destination / "rootfs" / item.target.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, item.mode)
    bundle = destination / CA_BUNDLE
    bundle.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(host_ca_bundle(), bundle)


def build_environment_image(
    name: str,
    *,
    base_image: str | None = None,
    force: bool = False,
    log: Log = print,
) -> bool:
    """Build ``sandman-<name>:latest`` unless a current one exists (``force``: always),
    building its parents first when they are missing or stale. ``base`` is the
    workspace image itself. Returns whether anything was built."""
    if name == "base":
        if not force and image_is_current(base_image or WORKSPACE_IMAGE):
            return False
        build_workspace_image(base_image=base_image, log=log)
        return True
    recipe = recipe_of(name)
    built = False
    if recipe.parent is not None:
        built = build_environment_image(recipe.parent, base_image=base_image, log=log)
    elif base_image is None and not image_is_current():
        build_workspace_image(log=log)
        built = True
    if not force and not built and environment_is_current(name, base_image):
        return False
    _build(recipe, parent_image(recipe, base_image), log)
    return True


def _build(recipe: Recipe, parent: str, log: Log) -> None:
    tag = environment_image(recipe.name)
    client = _client(timeout=3600)
    start = time.monotonic()
    try:
        parent_id = _image_id(client, parent)
        if parent_id is None:
            raise ImageBuildError(f"the base image {parent} of {tag} does not exist")
        digest = recipe_digest(recipe, parent_id, _files(recipe))
        with tempfile.TemporaryDirectory(prefix="sandman-env-") as context:
            _context(recipe, parent, Path(context))
            log(f"docker build {tag} FROM {parent} ...")
            for chunk in client.api.build(
                path=context,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                labels={RECIPE_LABEL: digest, ENVIRONMENT_LABEL: recipe.name},
            ):
                if "error" in chunk:
                    raise ImageBuildError(f"docker build of {tag} failed: {chunk['error']}")
                text = str(chunk.get("stream", "")).rstrip()
                if text:
                    log(text)
    finally:
        client.close()
    log(f"built {tag} in {time.monotonic() - start:.1f}s")
