#!/bin/bash
# Fetches, on a machine with Debian 12's package registry, the Debian
# packages that building and running fptq needs (tests/gpu/gpu_deps.sh lists
# them) into .gpu-deps/debs, and unpacks them into .gpu-deps/root for a local
# try. The lent GPU machine has no registry: the run tool carries
# .gpu-deps/debs (compressed) and device_check.sh unpacks them there.
#   tests/gpu/fetch_debs.sh            (from the repository root or anywhere)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/tests/gpu/gpu_deps.sh"
debs="$repo/.gpu-deps/debs" root="$repo/.gpu-deps/root"
mkdir -p "$debs"
cd "$debs"
rm -f ./*.deb
# shellcheck disable=SC2086
if ! apt-get download $GPU_DEPS_PACKAGES >/dev/null 2>"$debs/../download.err"; then
    apt-get update -qq
    apt-get download $GPU_DEPS_PACKAGES >/dev/null
fi
rm -f "$debs/../download.err"
ls ./*.deb | sed 's|^\./||' >"$debs/LIST"
rm -rf "$root"
gpu_deps_extract "$debs" "$root"
echo "fetch_debs: $(ls ./*.deb | wc -l) packages, $(du -sm "$debs" | cut -f1) MiB of .debs (what travels), $(du -sm "$root" | cut -f1) MiB unpacked in $root"
