#!/usr/bin/env bash
# The README's main job as a test: scripts/demo against this build (an
# ext4 image, ubiblk-init, vhost-backend with RPC, a QEMU guest checking
# sha256 while status shows the fetch, autofetch, encryption at rest).
# Its exit status is the verdict (77: QEMU cannot run here).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
exec "$top/scripts/demo" --build "${UBIBLK_BUILD:?}"
