#!/bin/sh
# Installs Arcade's binaries, systemd units and example settings:
#
#   deploy/systemd/install.sh [--root DIR] [--bin DIR] broker|agent...
#
# --bin: where the built binaries are (default: target/release). --root: install under DIR
# instead of / (for packaging and tests): no user is made and systemd is not told.
# Settings files already in /etc/arcade are kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=
bin=target/release
roles=
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        broker|agent) roles="$roles $1"; shift ;;
        *) echo "usage: $0 [--root DIR] [--bin DIR] broker|agent..." >&2; exit 2 ;;
    esac
done
[ -n "$roles" ] || { echo "say what to install: broker, agent or both" >&2; exit 2; }
install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/arcade"
for role in $roles; do
    install -m 0755 "$bin/arcade-$role" "$root/usr/local/bin/arcade-$role"
    install -m 0644 "$here/arcade-$role.service" "$root/etc/systemd/system/arcade-$role.service"
    if [ ! -e "$root/etc/arcade/$role.env" ]; then
        install -m 0600 "$here/$role.env" "$root/etc/arcade/$role.env"
    fi
done
[ -x "$bin/arcade" ] && install -m 0755 "$bin/arcade" "$root/usr/local/bin/arcade"
if [ -z "$root" ]; then
    case $roles in *broker*)
        id arcade >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin arcade ;;
    esac
    case $roles in *agent*)
        id arcade-games >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin arcade-games ;;
    esac
    systemctl daemon-reload
    echo "installed:$roles; edit /etc/arcade/*.env, then: systemctl enable --now$(for r in $roles; do printf ' arcade-%s' "$r"; done)"
fi
