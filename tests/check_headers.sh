#!/bin/sh
# SPDX-License-Identifier: MIT
# Header check: each public header compiles alone (STYLE.md, "Tests"):
#   - as C11 with warnings as errors (the inline weft_join),
#   - as gnu99 (pre-C11: the out-of-line weft_join),
#   - as C11 with WEFT_NO_INLINE,
#   - as C++ when a C++ compiler is available (the out-of-line weft_join, extern "C").
# Usage: check_headers.sh include-dir c-compiler
set -eu

inc=${1:?usage: check_headers.sh include-dir c-compiler}
cc=${2:?usage: check_headers.sh include-dir c-compiler}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-headers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fail=0
run() {
    what=$1
    shift
    if "$@" >"$tmp/log" 2>&1; then
        echo "ok: $what"
    else
        echo "FAIL: $what" >&2
        echo "  $*" >&2
        sed 's/^/  | /' "$tmp/log" >&2
        fail=1
    fi
}

headers=$(cd "$inc" && ls *.h)
[ -n "$headers" ] || { echo "check_headers: no headers in $inc" >&2; exit 1; }

warn="-Wall -Wextra -Werror"
for h in $headers; do
    # The header alone, as the first and only include.
    printf '#include <%s>\n' "$h" >"$tmp/alone.c"
    # Twice (include guard), and used, so that an inline function that does not
    # compile in this mode shows up.
    cat >"$tmp/use.c" <<EOT
#include <$h>
#include <$h>
static int f(void *p) { (void)p; return 0; }
int use_header(void);
int use_header(void) { return weft_join(f, 0, f, 0); }
EOT
    run "$h alone, C11" "$cc" -std=c11 $warn -fsyntax-only -I"$inc" "$tmp/alone.c"
    run "$h used, C11" "$cc" -std=c11 $warn -fsyntax-only -I"$inc" "$tmp/use.c"
    run "$h alone, gnu99" "$cc" -std=gnu99 $warn -fsyntax-only -I"$inc" "$tmp/alone.c"
    run "$h used, gnu99" "$cc" -std=gnu99 $warn -fsyntax-only -I"$inc" "$tmp/use.c"
    run "$h used, gnu11 -DWEFT_NO_INLINE" "$cc" -std=gnu11 -DWEFT_NO_INLINE $warn \
        -fsyntax-only -I"$inc" "$tmp/use.c"
    if command -v g++ >/dev/null 2>&1; then
        cp "$tmp/alone.c" "$tmp/alone.cc"
        cp "$tmp/use.c" "$tmp/use.cc"
        run "$h alone, C++" g++ -x c++ $warn -fsyntax-only -I"$inc" "$tmp/alone.cc"
        run "$h used, C++11" g++ -x c++ -std=c++11 $warn -fsyntax-only -I"$inc" "$tmp/use.cc"
    else
        echo "skip: no g++, C++ not checked"
    fi
done
exit $fail
