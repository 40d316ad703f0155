#!/usr/bin/env bash
# Start Sandman, Prometheus, Alertmanager and Grafana on this host (deploy/compose).
#
#   deploy/compose/up.sh [--gpu] [--build-only]
#
# 1. secrets: .env beside this file (mode 0600) with the admin, metrics and alerts
#    tokens and Grafana's admin password, made once with random values; the token
#    files Prometheus and Alertmanager read (secrets/, mode 0600);
# 2. the image sandman:latest, built from this checkout (its files without .venv,
#    .git and data directories);
# 3. docker compose up (or docker-compose), with compose.gpu.yaml for --gpu.
# Session containers use the workspace image, which "make setup" builds on the host.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
GPU=0
BUILD_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        --build-only) BUILD_ONLY=1 ;;
        *) echo "usage: $0 [--gpu] [--build-only]" >&2; exit 2 ;;
    esac
done

say() { printf 'up: %s\n' "$*"; }
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

make_secrets() {
    umask 077
    if [ ! -f "$HERE/.env" ]; then
        say "writing $HERE/.env (the stack's secrets; keep it)"
        {
            echo "SANDMAN_ADMIN_TOKEN=$(secret)"
            echo "SANDMAN_METRICS_TOKEN=$(secret)"
            echo "SANDMAN_ALERTS_TOKEN=$(secret)"
            echo "GRAFANA_ADMIN_PASSWORD=$(secret)"
        } >"$HERE/.env"
    fi
    # shellcheck disable=SC1091
    set -a && . "$HERE/.env" && set +a
    mkdir -p "$HERE/secrets"
    printf '%s' "$SANDMAN_METRICS_TOKEN" >"$HERE/secrets/metrics_token"
    printf '%s' "$SANDMAN_ALERTS_TOKEN" >"$HERE/secrets/alerts_token"
    # Prometheus and Alertmanager run as "nobody" (65534) in their images: the files
    # are theirs alone; the folder stays root's.
    chown 65534:65534 "$HERE/secrets/metrics_token" "$HERE/secrets/alerts_token"
    chmod 0400 "$HERE/secrets/metrics_token" "$HERE/secrets/alerts_token"
    chmod 0700 "$HERE/secrets"
}

build_image() {
    say "building sandman:latest from $ROOT"
    tar -C "$ROOT" \
        --exclude=./.venv --exclude=./.git --exclude=./.sandman \
        --exclude=./deploy/compose/.env --exclude=./deploy/compose/secrets \
        --exclude='*/__pycache__' --exclude='./*.egg-info' --exclude='./src/*.egg-info' \
        -cf - . |
        docker build -t sandman:latest -f deploy/compose/Dockerfile -
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p sandman "$@"
    else
        docker-compose -p sandman "$@"
    fi
}

main() {
    make_secrets
    build_image
    [ "$BUILD_ONLY" -eq 1 ] && return 0
    docker image inspect sandman-workspace:latest >/dev/null 2>&1 ||
        say "warning: no sandman-workspace:latest image yet; run 'make setup' to build it"
    mkdir -p /var/lib/sandman
    local files=(-f "$HERE/compose.yaml")
    [ "$GPU" -eq 1 ] && files+=(-f "$HERE/compose.gpu.yaml")
    compose --project-directory "$HERE" "${files[@]}" up -d
    say "Sandman http://127.0.0.1:8080  Grafana http://127.0.0.1:3000 (admin, GRAFANA_ADMIN_PASSWORD in .env)"
    say "Prometheus http://127.0.0.1:9090  Alertmanager http://127.0.0.1:9093"
}

main
