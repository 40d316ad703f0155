#!/usr/bin/env bash
# Build sandman-kubernetes:latest, Sandman's own image for Kubernetes, from this
# checkout, on the engine of the node that runs it (no registry: the Deployments pull
# nothing, imagePullPolicy IfNotPresent). Load it into other nodes' engines with
#   docker save sandman-kubernetes:latest | ssh NODE docker load
#
#   deploy/kubernetes/image/build.sh [TAG]      (default sandman-kubernetes:latest)
#   deploy/kubernetes/image/build.sh --if-stale [TAG]   only if TAG is missing or stale
#   deploy/kubernetes/image/build.sh --source   print the source label and exit
#
# Its base is the workspace image, sandman-workspace:latest ("make setup" or
# "python -m sandman.image" builds it with debootstrap). The host's pip ($PYTHON, else
# the checkout's .venv, else python3) builds Sandman's wheel and fetches its
# dependencies' wheels for the image's Python (3.11) and architecture; docker build
# then installs them offline. The image is labelled org.sandman.source, a SHA-256 over
# the files of src/, pyproject.toml, this Dockerfile and the base image's id: an image
# whose label differs from what --source prints is older than the checkout
# (tests/integration/kubernetes/test_image.py rebuilds it then).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BASE=sandman-workspace:latest
PYTHON_VERSION=3.11  # bookworm's, the base image's

base_id() {
    docker image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || {
        echo "build: no $BASE image; run 'python -m sandman.image' first" >&2
        exit 1
    }
}

# The files that make the image, in byte order, each with its SHA-256; then the base.
source_label() {
    local base
    base="$(base_id)"
    {
        cd "$ROOT" &&
            find src pyproject.toml deploy/kubernetes/image/Dockerfile -type f \
                ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
        echo "base $base"
    } | sha256sum | cut -d' ' -f1
}

IF_STALE=0
case "${1:-}" in
    --source) source_label; exit 0 ;;
    --if-stale) IF_STALE=1; shift ;;
esac
TAG="${1:-sandman-kubernetes:latest}"
LABEL="$(source_label)"
if [[ "$IF_STALE" == 1 ]] && [[ "$(docker image inspect \
    --format '{{index .Config.Labels "org.sandman.source"}}' "$TAG" 2>/dev/null)" == "$LABEL" ]]; then
    echo "build: $TAG is up to date" >&2
    exit 0
fi
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"
fi
ARCH="$(docker info --format '{{.Architecture}}')"  # x86_64, aarch64
PLATFORMS=()
for minor in $(seq 36 -1 17); do PLATFORMS+=(--platform "manylinux_2_${minor}_$ARCH"); done
PLATFORMS+=(--platform "manylinux2014_$ARCH")
[[ "$ARCH" == x86_64 ]] && PLATFORMS+=(--platform manylinux2010_x86_64 --platform manylinux1_x86_64)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "build: $TAG from $ROOT (org.sandman.source=$LABEL)" >&2
mkdir "$WORK/package" "$WORK/wheels"
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml README.md src | tar -C "$WORK/package" -xf -
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheels" "$WORK/package"
wheel="$(echo "$WORK"/wheels/sandman-*.whl)"
"$PYTHON" -m pip download --quiet --only-binary=:all: "${PLATFORMS[@]}" \
    --python-version "$PYTHON_VERSION" --implementation cp --dest "$WORK/wheels" \
    "$wheel[postgres]"
cp "$HERE/Dockerfile" "$WORK/Dockerfile"

old="$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
docker build --force-rm --label "org.sandman.source=$LABEL" -t "$TAG" -f "$WORK/Dockerfile" \
    "$WORK" >&2
# Leave the engine as it was but for the new image: the build stage and the image this
# one replaced go (each only if nothing else uses it).
for stage in $(docker images -q --filter dangling=true \
    --filter label=org.sandman.stage=sandman-kubernetes-build); do
    docker rmi "$stage" >/dev/null 2>&1 || true
done
new="$(docker image inspect --format '{{.Id}}' "$TAG")"
if [[ -n "$old" && "$old" != "$new" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "build: $TAG is $new" >&2
