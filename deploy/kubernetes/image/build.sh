#!/usr/bin/env bash
# Build sandman-kubernetes:latest, Sandman's own image for Kubernetes, from this
# checkout, on the engine of the node that runs it (no registry: the Deployments pull
# nothing, imagePullPolicy IfNotPresent). Load it into other nodes' engines with
#   docker save sandman-kubernetes:latest | ssh NODE docker load
#
#   deploy/kubernetes/image/build.sh [TAG]      (default sandman-kubernetes:latest)
#
# Its base is the workspace image, sandman-workspace:latest ("make setup" or
# "python -m sandman.image" builds it with debootstrap).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
TAG="${1:-sandman-kubernetes:latest}"

docker image inspect sandman-workspace:latest >/dev/null 2>&1 || {
    echo "build: no sandman-workspace:latest image; run 'python -m sandman.image' first" >&2
    exit 1
}
echo "build: $TAG from $ROOT" >&2
tar -C "$ROOT" \
    --exclude=./.venv --exclude=./.git --exclude=./.sandman \
    --exclude=./deploy/compose/.env --exclude=./deploy/compose/secrets \
    --exclude='*/__pycache__' --exclude='./*.egg-info' --exclude='./src/*.egg-info' \
    -cf - . |
    docker build -t "$TAG" -f deploy/kubernetes/image/Dockerfile -
