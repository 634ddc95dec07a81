#!/usr/bin/env bash
# Build ZenML's default parent image locally, without any container registry.
#
# ZenML builds every pipeline image FROM `zenmldocker/zenml:<zenml>-py<python>`
# and does not pull that tag when it already exists locally. This script makes
# that image from Debian packages and PyPI: a minimal bookworm root filesystem
# (debootstrap), a venv with `zenml[local]`, the host's CA bundle, imported
# with `docker import`. An existing image with the same tag is kept, so the
# script is cheap to call again.
#
# Usage: scripts/build-base-image.sh [ZENML_VERSION] [PYTHON_VERSION]
# Defaults: the zenml and Python versions of `python3` on PATH.
# Environment: DEBIAN_MIRROR overrides the mirror read from the host's apt
# sources; REBUILD=1 rebuilds an existing image.
set -euo pipefail

python_bin=${PYTHON:-python3}
zenml_version=${1:-$("$python_bin" -c 'import zenml; print(zenml.__version__)')}
python_version=${2:-$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
image="zenmldocker/zenml:${zenml_version}-py${python_version}"

if [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already exists; set REBUILD=1 to rebuild it"
    exit 0
fi

# bookworm ships Python 3.11; another Python needs another Debian release.
if [[ "$python_version" != 3.11 ]]; then
    echo "error: this script builds Python 3.11 images (Debian bookworm), not Python $python_version." >&2
    echo "Run it with a Python 3.11 interpreter: PYTHON=python3.11 $0" >&2
    exit 1
fi

# The mirror is whatever the host's apt uses, so the script works behind the
# same mirror or proxy the host is set up for.
host_debian_mirror() {
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null \
            | awk '{print $2}' | grep -v security | head -n 1 || true)
    fi
    echo "$uri"
}
mirror=${DEBIAN_MIRROR:-$(host_debian_mirror)}
if [[ -z "$mirror" ]]; then
    echo "error: no Debian mirror found in /etc/apt; set DEBIAN_MIRROR to one." >&2
    exit 1
fi

for tool in debootstrap docker; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: '$tool' is not installed; on Debian: apt-get install $tool" >&2
        exit 1
    fi
done

ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [[ ! -f "$ca_bundle" ]]; then
    echo "error: CA bundle $ca_bundle not found; pip inside the image needs it." >&2
    exit 1
fi

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/zenml-base-rootfs.XXXXXX")
cleanup() {
    umount "$rootfs/proc" 2>/dev/null || true
    rm -rf "$rootfs"
}
trap cleanup EXIT

echo "building base image $image (zenml $zenml_version, Python $python_version) from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv \
    bookworm "$rootfs" "$mirror" >"$rootfs.debootstrap.log" 2>&1 || {
    echo "error: debootstrap failed; last lines of $rootfs.debootstrap.log:" >&2
    tail -n 20 "$rootfs.debootstrap.log" >&2
    exit 1
}
rm -f "$rootfs.debootstrap.log"

mkdir -p "$rootfs/etc/ssl/certs"
cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"

# A clean environment keeps host pip settings (find-links, caches) out.
chroot "$rootfs" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /bin/sh -ec "
        python3 -m venv /opt/venv
        /opt/venv/bin/pip install --no-cache-dir --quiet 'zenml[local]==${zenml_version}'
    "

umount "$rootfs/proc"
rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/* "$rootfs/root/.cache"

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'WORKDIR /app' \
    --change 'LABEL io.zenml.docker-rs.base-image=true' \
    - "$image" >/dev/null
echo "built base image $image"
