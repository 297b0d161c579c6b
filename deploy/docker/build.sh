#!/bin/sh
# Builds Arcade's images from this checkout:
#
#   deploy/docker/build.sh [TAG]      (default TAG: the checkout's `git describe`)
#
# The binaries are built here with cargo (release; the broker without the `--dev` agent) and
# stripped; each image is `Dockerfile`'s target FROM $BASE (default arcade-base:bookworm, see
# base.sh), built with the host's network (apt inside the build). Prints the image names.
set -eu
cd "$(dirname "$0")/../.."
tag=${1:-$(git describe --always --dirty 2>/dev/null || echo dev)}
base=${BASE:-arcade-base:bookworm}
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
cargo build --release --locked --quiet -p broker --no-default-features --bin arcade-broker
cargo build --release --locked --quiet -p agent --bin arcade-agent
cargo build --release --locked --quiet -p portal-client --bin arcade
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/bin"
cp target/release/arcade-broker target/release/arcade-agent target/release/arcade "$ctx/bin/"
strip "$ctx/bin/"*
cp deploy/docker/Dockerfile "$ctx/"
for target in broker agent; do
    docker build --quiet --network host --target "$target" \
        --build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
        -t "arcade-$target:$tag" "$ctx" >/dev/null
    echo "arcade-$target:$tag"
done
