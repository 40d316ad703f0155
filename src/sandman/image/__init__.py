"""The Sandman workspace image: how it is built and what it expects at run time."""

from sandman.image.accounts import USER_HOME, USER_SHELL, passwd_and_group
from sandman.image.build import (
    CONTAINER_COMMAND,
    PACKAGES,
    SSH_PORT,
    WORKSPACE_IMAGE,
    ImageBuildError,
    MirrorNotFound,
    build_workspace_image,
    debian_mirror_from_apt_sources,
    image_exists,
    image_is_current,
    recipe_digest,
    render_dockerfile,
)

__all__ = [
    "CONTAINER_COMMAND",
    "PACKAGES",
    "SSH_PORT",
    "USER_HOME",
    "USER_SHELL",
    "WORKSPACE_IMAGE",
    "ImageBuildError",
    "MirrorNotFound",
    "build_workspace_image",
    "debian_mirror_from_apt_sources",
    "image_exists",
    "image_is_current",
    "passwd_and_group",
    "recipe_digest",
    "render_dockerfile",
]
