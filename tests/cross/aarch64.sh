#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The fiber suite on aarch64, without aarch64 hardware: builds tests/test_fiber.c
# with Debian's cross compiler and runs it under qemu-user. Criterion has no arm64
# cross package, so the test builds with the plain harness (tests/harness.h), and
# only with the files it needs: lib/fiber.c and lib/arch/switch_aarch64.S.
# Installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user if missing
# (as root, through apt-get). The binary is static, so no QEMU_LD_PREFIX is needed.
#
# Usage: tests/cross/aarch64.sh [test-name]     (e.g. pingpong; default: all)
# Environment: WEFT_CROSS_OUT=dir (default build-cross-aarch64 in the source tree),
#              WEFT_TEST_SCALE_DIV=n (loop counts divided by n; default 2: qemu is slow)
# Exit status: 0 passed, 1 failed, 77 skipped (no cross tools and cannot install).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cc="aarch64-linux-gnu-gcc"
qemu="qemu-aarch64"

missing() {
    local pkgs=()
    command -v "$cc" >/dev/null 2>&1 || pkgs+=(gcc-aarch64-linux-gnu)
    [ -e /usr/aarch64-linux-gnu/include/stdio.h ] || pkgs+=(libc6-dev-arm64-cross)
    command -v "$qemu" >/dev/null 2>&1 || pkgs+=(qemu-user)
    echo "${pkgs[@]}"
}

need=$(missing)
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "skip: missing $need (install them as root)" >&2
        exit 77
    fi
    echo "==> installing $need" >&2
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >&2; then
        apt-get update >&2 || true
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need >&2 || {
            echo "skip: could not install $need" >&2
            exit 77
        }
    fi
fi

out=${WEFT_CROSS_OUT:-$root/build-cross-aarch64}
mkdir -p "$out"
echo "==> $cc: $out/test_fiber" >&2
"$cc" -std=gnu11 -O2 -g -static -pthread \
    -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -Wno-unused-parameter -Wno-format-zero-length \
    -DWEFT_PLAIN_TESTS=1 -DWEFT_HAVE_FIBERS -DWEFT_TEST_SCALE_DIV="${WEFT_TEST_SCALE_DIV:-2}" \
    -I"$root/include" -I"$root/lib" -I"$root/tests" \
    "$root/tests/test_fiber.c" "$root/tests/harness_main.c" \
    "$root/lib/fiber.c" "$root/lib/arch/switch_aarch64.S" \
    -o "$out/test_fiber" || exit 1

echo "==> $qemu $out/test_fiber $*" >&2
status=0
WT_RUNNER="$qemu" "$qemu" "$out/test_fiber" "$@" || status=$?
case $status in
    0 | 77) exit $status ;;
    *) echo "FAILED (status $status)" >&2; exit 1 ;;
esac
