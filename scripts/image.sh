#!/usr/bin/env bash
# Builds the container image from the Dockerfile with buildah, shipping a
# binary built on this host (no registry, no network: the Dockerfile's
# `image-prebuilt` target).
#
#   scripts/image.sh STRIPPED-LOOPP IMAGE-NAME
#
# BUILDAH_FLAGS adds flags (default: the vfs storage driver and chroot
# isolation, which work without a container runtime or privileges beyond
# root's). The context is made next to the binary and removed after.
set -euo pipefail
bin=$1 image=$2
root=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(dirname "$bin")/image-context.$$
trap 'rm -rf "$ctx"' EXIT
rm -rf "$ctx"
mkdir -p "$ctx/prebuilt/bin" "$ctx/prebuilt/data" "$ctx/prebuilt/tmp"
cp "$bin" "$ctx/prebuilt/bin/loopp"
for p in loopp-node loopp-median loopp-devchain loopp-example; do
	ln -s loopp "$ctx/prebuilt/bin/$p"
done
# shellcheck disable=SC2086
buildah ${BUILDAH_FLAGS:---storage-driver vfs} bud --isolation chroot --quiet \
	--target image-prebuilt -f "$root/Dockerfile" -t "$image" "$ctx"
echo "built $image"
