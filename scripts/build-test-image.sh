#!/usr/bin/env bash
# Build the tiny image the Docker tests run: a static busybox, imported without a registry.
#
# Usage: scripts/build-test-image.sh
# The image is kept once built; set REBUILD=1 to build it again.
set -euo pipefail

image=${ZENML_DOCKER_RS_TEST_IMAGE:-zenml-docker-rs-test/busybox:latest}
busybox=/bin/busybox

if [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "test image $image already exists"
    exit 0
fi
# A dynamic busybox would need the host's libc inside the image. ldd exits 1 on a
# static binary, so the check reads its output instead.
ldd_output=$(ldd "$busybox" 2>&1 || true)
if ! "$busybox" --list >/dev/null 2>&1 || [[ "$ldd_output" != *"not a dynamic executable"* ]]; then
    echo "error: $busybox is missing or not static; on Debian: apt-get install busybox-static" >&2
    exit 1
fi

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/zenml-docker-rs-test-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["/bin/sh"]' \
    --change 'LABEL io.zenml.docker-rs.test-image=true' \
    - "$image" >/dev/null
echo "built test image $image"
