#!/usr/bin/env bash
# Build the Kubernetes control plane and node the Kubernetes tests run against,
# from Debian's own "kubernetes" source package, offline (its vendored Go modules,
# Debian's Go), and cache them outside the repository, keyed by version:
#
#   $SANDMAN_KUBE_CACHE (default /var/cache/sandman/kubernetes)/<version>/bin/
#       kube-apiserver kube-scheduler kube-controller-manager kubelet kubectl pause
#
# The source comes from the Debian mirror of this machine's apt sources, through a
# private apt configuration under the cache (the system's sources are not changed).
# Prints the bin directory on its last line. Idempotent: does nothing when the
# cache is complete. Needs root for apt-get install (golang-go, dpkg-dev, etcd-server).
set -euo pipefail

CACHE="${SANDMAN_KUBE_CACHE:-/var/cache/sandman/kubernetes}"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager kubelet kubectl)

say() { printf 'kube-build: %s\n' "$*" >&2; }
die() { printf 'kube-build: error: %s\n' "$*" >&2; exit 1; }

mirror() {
    # The first "deb" source whose components include main and that is not a
    # security or updates suite.
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        uri="$(awk '/^URIs:/ {u=$2} /^Suites:/ {s=$0} /^$/ {if (u && s !~ /security/ && !found) {print u; found=1}; u=""; s=""} END {if (u && s !~ /security/ && !found) print u}' "$f" | head -n1)"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        uri="$(awk '$1 == "deb" && $0 ~ / main/ && $3 !~ /security|updates/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    die "no Debian mirror in the apt sources"
}

need_packages() {
    local missing=()
    command -v go >/dev/null || [ -x /usr/lib/go/bin/go ] || missing+=(golang-go)
    command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v gcc >/dev/null || missing+=(gcc libc6-dev)
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        die "apt-get install ${missing[*]} failed"
}

apt_opts() {
    printf '%s\n' -o Dir::Etc::SourceList="$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache"
}

apt_private() {
    apt-get -o Dir::Etc::SourceList="$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache" "$@"
}

main() {
    need_packages
    local codename uri version
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    uri="$(mirror)"
    mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial"
    printf 'deb-src %s %s main\n' "$uri" "$codename" >"$CACHE/apt/sources.list"
    if [ ! -s "$CACHE/apt/version" ] || [ -n "${SANDMAN_KUBE_REFRESH:-}" ]; then
        say "apt-get update (deb-src $uri $codename)"
        apt_private update -qq >/dev/null || die "apt-get update of the source index failed"
        local opts
        mapfile -t opts < <(apt_opts)
        apt-cache "${opts[@]}" showsrc kubernetes 2>/dev/null | awk '/^Version:/ && !v {v=$2} END {print v}' >"$CACHE/apt/version"
    fi
    version="$(cat "$CACHE/apt/version")"
    [ -n "$version" ] || die "no kubernetes source package in $uri $codename"
    local out="$CACHE/$version/bin"
    local complete=1 b
    for b in "${BINARIES[@]}" pause; do [ -x "$out/$b" ] || complete=0; done
    if [ "$complete" -eq 1 ]; then echo "$out"; return 0; fi

    local work="$CACHE/$version/src"
    if [ ! -d "$work/source" ]; then
        rm -rf "$work" && mkdir -p "$work"
        say "apt-get source kubernetes=$version"
        (cd "$work" && apt_private source -qq "kubernetes=$version" >/dev/null) || die "apt-get source failed"
        local dir
        dir="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"
        mv "$dir" "$work/source"
    fi
    [ -d "$work/source/vendor" ] || die "the source package has no vendor/ tree"
    mkdir -p "$out"
    # As Debian's own rules build kubectl: the tree's make in GOPATH mode, its
    # vendor/ directory, no module downloads; the version is the one the archive
    # carries (hack/lib/version.sh).
    local missing=() b
    for b in "${BINARIES[@]}"; do [ -x "$out/$b" ] || missing+=("cmd/$b"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "make WHAT=\"${missing[*]}\" ($(/usr/lib/go/bin/go version | awk '{print $3}'))"
        local start=$SECONDS
        (cd "$work/source" && mkdir -p .go/src/k8s.io && { [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes; } &&
            env HOME="$work/home" GOPATH="$work/source/.go" PATH="/usr/lib/go/bin:$PATH" CGO_ENABLED=0 GOPROXY=off \
                make WHAT="${missing[*]}" >"$work/make.log" 2>&1) ||
            { tail -n 30 "$work/make.log" >&2; die "make WHAT=${missing[*]} failed (log: $work/make.log)"; }
        for b in "${missing[@]}"; do install -m 0755 "$work/source/_output/bin/${b#cmd/}" "$out/"; done
        say "built in $((SECONDS - start)) s"
    fi
    if [ ! -x "$out/pause" ]; then
        local src
        src="$(find "$work/source/build/pause" -name pause.c | head -n1)"
        [ -n "$src" ] || die "no pause.c in build/pause"
        gcc -Os -Wall -Werror -static -DVERSION="v${version%%-*}" -o "$out/pause.tmp" "$src" || die "building pause failed"
        mv "$out/pause.tmp" "$out/pause"
    fi
    echo "$out"
}

main "$@"
