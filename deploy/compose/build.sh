#!/bin/sh
# Builds the compose cluster's service images (nats, mariadb, haproxy) as TAG, FROM $BASE
# (default arcade-base:bookworm: deploy/docker/base.sh). Prints their names.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-dev}
base=${BASE:-arcade-base:bookworm}
for target in nats mariadb haproxy; do
    docker build --quiet --network host --target "$target" --build-arg "BASE=$base" \
        -f "$here/Dockerfile.services" -t "arcade-$target:$tag" "$here" >/dev/null
    echo "arcade-$target:$tag"
done
