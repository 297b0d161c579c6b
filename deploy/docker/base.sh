#!/bin/sh
# Makes the local base image the Dockerfiles build FROM by default, `arcade-base:bookworm`:
# Debian bookworm (minbase) from the mirror apt already uses, for machines that reach no
# registry. With a registry, pass --build-arg BASE=debian:bookworm-slim instead.
#
#   deploy/docker/base.sh [IMAGE]        (needs root, debootstrap and a running docker)
set -eu
image=${1:-arcade-base:bookworm}
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase bookworm "$dir/root" "$mirror" >"$dir/log" 2>&1 || {
    tail -n 20 "$dir/log" >&2
    exit 1
}
# apt's lists and caches are not part of an image.
rm -rf "$dir/root/var/lib/apt/lists/"* "$dir/root/var/cache/apt/"*.bin "$dir/root/var/cache/apt/archives/"*.deb
echo "deb $mirror bookworm main" >"$dir/root/etc/apt/sources.list"
tar -C "$dir/root" -c . | docker import - "$image" >/dev/null
echo "$image"
