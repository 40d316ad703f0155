#!/usr/bin/env bash
# Prepare this machine for "make run" and "make test" (Debian 12, as root).
#
#   1. .venv with Python 3.11 and "pip install -e '.[dev]'" (again whenever
#      pyproject.toml is newer than the last install);
#   2. docker.io, debootstrap, the OpenSSH client and server, rsync (apt);
#   3. a running Docker engine (started in the background if it does not answer);
#   4. the Sandman workspace image (built if missing or stale), and with --for-tests
#      the jupyter environment's image (sandman-jupyter:latest, likewise);
#   5. with --for-tests, the test OpenID provider's node_modules (npm ci, once
#      per lockfile, under ${XDG_CACHE_HOME:-~/.cache}/sandman/oidc-provider/), and
#      Debian's prometheus, prometheus-alertmanager and docker-compose (promtool,
#      amtool, a private Prometheus and Alertmanager, and "compose config"), and
#      Debian's chromium (the portal's browser tests, driven by Playwright);
#   6. with --for-tests, Kubernetes 1.20 (kube-apiserver, kube-scheduler,
#      kube-controller-manager, kubelet, kubectl, pause) built offline from Debian's
#      kubernetes source package by scripts/kube-build.sh, cached outside the
#      repository by version, with Debian's golang-go and etcd-server; and
#      Sandman's own image for Kubernetes (sandman-kubernetes:latest, when stale).
#
# Idempotent and quiet when there is nothing to do; exits non-zero with a message
# on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

VENV="$ROOT/.venv"
STAMP="$VENV/.sandman-installed"
DOCKERD_LOG=/var/log/sandman-dockerd.log
DOCKER_TIMEOUT=60

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
need_root() { [ "$(id -u)" -eq 0 ] || die "$1 needs root; run this script as root"; }

# ---------------------------------------------------------------- system packages
APT_UPDATED=0
apt_install() {
    need_root "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

sshd_running() {
    [ -s /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null
}

have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

install_system_packages() {
    local missing=() tool packages=(docker.io debootstrap openssh-client openssh-server rsync)
    for tool in dockerd debootstrap ssh scp sftp rsync sshd; do
        have "$tool" || missing+=("$tool")
    done
    # The tests also run Sandman's store against a private PostgreSQL server.
    if [ "$FOR_TESTS" -eq 1 ] && ! have_postgres; then
        missing+=(postgresql)
        packages+=(postgresql)
    fi
    # The monitoring tests check deploy/ with promtool and amtool, run a private
    # Prometheus and Alertmanager, and validate the compose file (pulling nothing).
    if [ "$FOR_TESTS" -eq 1 ]; then
        have promtool || { missing+=(promtool); packages+=(prometheus); }
        # The metrics tests scrape a running Sandman with that package's prometheus.
        have prometheus || { missing+=(prometheus); packages+=(prometheus); }
        have amtool || { missing+=(amtool); packages+=(prometheus-alertmanager); }
        if ! have docker-compose && ! docker compose version >/dev/null 2>&1; then
            missing+=(docker-compose)
            packages+=(docker-compose)
        fi
        # The portal's browser tests drive Debian's Chromium with Playwright.
        [ -x /usr/bin/chromium ] || { missing+=(chromium); packages+=(chromium); }
    fi
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "missing: ${missing[*]}"
    local sshd_was_running=0 policy_added=0
    sshd_running && sshd_was_running=1
    # Keep package scripts from starting services (openssh-server would start a
    # system sshd on port 22); docker is started below, the way we want it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local status=0
    (apt_install "${packages[@]}") || status=$?
    [ "$policy_added" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || exit "$status"
    if [ "$sshd_was_running" -eq 0 ] && sshd_running; then
        say "stopping the system sshd that openssh-server started"
        if [ -d /run/systemd/system ]; then
            systemctl stop ssh.service ssh.socket >/dev/null 2>&1 || true
        fi
        sshd_running && kill "$(cat /run/sshd.pid)" 2>/dev/null || true
    fi
    for tool in "${missing[@]}"; do
        [ "$tool" = postgresql ] && continue
        have "$tool" || die "$tool is still missing after apt-get install"
    done
    if [ "$FOR_TESTS" -eq 1 ]; then
        have_postgres || die "PostgreSQL is still missing after apt-get install"
    fi
}

# ---------------------------------------------------------------- python venv
python311() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

setup_venv() {
    if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ ! pyproject.toml -nt "$STAMP" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(python311)" || {
            apt_install python3 python3-venv
            python="$(python311)" || die "Python 3.11 not found (Debian 12's python3 is 3.11)"
        }
        "$python" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
        say "creating .venv with $python"
        "$python" -m venv "$VENV" || die "python -m venv .venv failed"
    fi
    say "pip install -e '.[dev]'"
    local log
    log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install -q -e '.[dev]' >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "pip install -e '.[dev]' failed"
    fi
    rm -f "$log"
    touch "$STAMP"
}

# ---------------------------------------------------------------- docker engine
docker_answers() {
    timeout 10 docker info >/dev/null 2>&1
}

start_docker() {
    docker_answers && return 0
    need_root "starting dockerd"
    if [ -d /run/systemd/system ] && systemctl start docker.service >/dev/null 2>&1; then
        say "started docker.service"
    else
        pgrep -x dockerd >/dev/null 2>&1 &&
            die "dockerd is running but 'docker info' does not answer; see its log"
        say "starting dockerd (log: $DOCKERD_LOG)"
        # --live-restore: restarting or upgrading the engine leaves running
        # session containers (and the work in them) alone.
        setsid nohup dockerd --live-restore >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    local waited=0
    until docker_answers; do
        if [ "$waited" -ge "$DOCKER_TIMEOUT" ]; then
            printf 'setup: last lines of %s:\n' "$DOCKERD_LOG" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
            die "the Docker engine did not answer within ${DOCKER_TIMEOUT}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# ---------------------------------------------------------------- test OpenID provider
# The single sign-on tests run a real OpenID provider (npm's oidc-provider). Its
# node_modules is built once per lockfile, outside the repository, and reused.
OIDC_PROVIDER_SRC="$ROOT/tests/integration/oidc/provider"

oidc_provider_dir() {
    local hash
    hash="$(sha256sum "$OIDC_PROVIDER_SRC/package-lock.json" | cut -c1-16)"
    printf '%s/sandman/oidc-provider/%s' "${XDG_CACHE_HOME:-$HOME/.cache}" "$hash"
}

install_oidc_provider() {
    local dir build
    dir="$(oidc_provider_dir)"
    [ -f "$dir/.complete" ] && [ -d "$dir/node_modules/oidc-provider" ] && return 0
    { have node && have npm; } || apt_install nodejs npm
    say "npm ci: the test OpenID provider, into $dir"
    mkdir -p "$(dirname "$dir")"
    build="$(mktemp -d "$dir.build-XXXXXX")"
    cp "$OIDC_PROVIDER_SRC/package.json" "$OIDC_PROVIDER_SRC/package-lock.json" "$build/"
    if ! (cd "$build" && npm ci --no-audit --no-fund --ignore-scripts >npm.log 2>&1); then
        tail -n 30 "$build/npm.log" >&2
        rm -rf "$build"
        die "npm ci of the test OpenID provider failed"
    fi
    rm -rf "$dir"
    mv "$build" "$dir"
    touch "$dir/.complete"
}

# ---------------------------------------------------------------- main
FOR_TESTS=0

main() {
    [ "${1:-}" = "--for-tests" ] && FOR_TESTS=1
    cd "$ROOT"
    install_system_packages
    setup_venv
    if [ "$FOR_TESTS" -eq 1 ]; then
        install_oidc_provider
        # From here on the browser tests fail, not skip, when Chromium is missing.
        touch "$VENV/.sandman-chromium"
    fi
    start_docker
    "$VENV/bin/python" -m sandman.image || die "building the workspace image failed"
    if [ "$FOR_TESTS" -eq 1 ]; then
        # The jupyter environment's image (JupyterLab and code-server on the workspace
        # image), rebuilt when its recipe or the workspace image changes.
        "$VENV/bin/python" -m sandman.image --environment jupyter ||
            die "building the jupyter environment's image failed"
        # The Kubernetes tests' control plane and kubelet, from Debian's kubernetes
        # source package (cached by version; a first build takes a while).
        "$ROOT/scripts/kube-build.sh" >/dev/null || die "building Kubernetes failed"
        # Sandman's own image for the Kubernetes Deployments, rebuilt when the hash of
        # its sources (its label org.sandman.source) differs.
        PYTHON="$VENV/bin/python" "$ROOT/deploy/kubernetes/image/build.sh" --if-stale ||
            die "building sandman-kubernetes:latest failed"
    fi
}

# Sourcing the script (for testing one step) defines the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
