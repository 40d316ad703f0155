#!/bin/sh
# Sandman layer, run as root inside the image root (chroot or RUN step).
set -eu
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/sandman/ssh /workspace
chmod 0755 /etc/sandman /etc/sandman/ssh /workspace
chmod 0644 /etc/sandman/sshd_config /etc/motd /etc/profile.d/sandman.sh \
    /etc/dpkg/dpkg.cfg.d/sandman-excludes
chmod 0755 /usr/local/bin/sandman-keepalive
# Lean image: drop what dpkg-excludes would not have installed, plus apt state.
find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find /usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf /usr/share/man/* /usr/share/info/* /var/cache/debconf/*-old
find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin
rm -f /var/log/*.log /var/log/apt/* /etc/machine-id /var/lib/dbus/machine-id
: > /etc/machine-id
# A non-root sshd needs no privilege-separation directory, but a root sshd
# (someone debugging the image) would refuse to start without it.
mkdir -p /run/sshd && chmod 0755 /run/sshd
