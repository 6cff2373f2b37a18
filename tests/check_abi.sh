#!/bin/sh
# SPDX-License-Identifier: MIT
# ABI check (STYLE.md, "Tests").
# Usage: check_abi.sh path/to/libweft.so [path/to/weft.h [cc args...]]
# 1. Every dynamic symbol the library defines must start with "weft_"; any other name
#    is listed and the check fails. The one entry that is not a symbol at all, the
#    absolute version-node marker of the version script (WEFT_0.1, type A, value 0),
#    is skipped.
# 2. With weft.h: every name the header declares WEFT_API (functions and the one
#    variable, weft__self) is defined by the library, weft_join's out-of-line copy
#    included (the version script's pattern alone would pass a library without them).
# 3. With a compiler: a program built against the header with WEFT_NO_INLINE (as C++
#    code sees it) links to the shared library and runs weft_join through it.
set -eu

lib=${1:?usage: check_abi.sh path/to/libweft.so [weft.h [cc ...]]}
header=${2:-}
[ $# -ge 2 ] && shift 2 || shift $#
if [ ! -f "$lib" ]; then
    echo "check_abi: no such file: $lib" >&2
    exit 1
fi
NM=${NM:-nm}

out=$("$NM" -D --defined-only "$lib") || {
    echo "check_abi: $NM -D --defined-only $lib failed" >&2
    exit 1
}

total=0
bad=""
# Lines look like "0000000000004080 T weft_run@@WEFT_0.1".
while read -r addr type name rest; do
    [ -n "${addr:-}" ] || continue
    if [ -z "${name:-}" ]; then # no address column
        name=$type
        type=$addr
    fi
    sym=${name%%@*}
    if [ "$type" = A ] && [ "$sym" = "$name" ] && expr "$sym" : 'WEFT_[0-9][0-9.]*$' >/dev/null; then
        continue # version node marker
    fi
    total=$((total + 1))
    case $sym in
    weft_*) ;;
    *) bad="$bad $type:$name" ;;
    esac
done <<EOT
$out
EOT

if [ "$total" -eq 0 ]; then
    echo "check_abi: $lib defines no dynamic symbols at all" >&2
    exit 1
fi
if [ -n "$bad" ]; then
    echo "check_abi: $lib exports symbols outside the weft_ namespace:" >&2
    for s in $bad; do
        echo "  $s" >&2
    done
    exit 1
fi
echo "check_abi: $total symbols, all weft_*"

if [ -n "$header" ]; then
    defined=$(printf '%s\n' "$out" | awk '{ n = $NF; sub(/@.*/, "", n); print n }' | sort -u)
    # Names on WEFT_API lines: the identifier before "(" (functions) or ";" (weft__self).
    want=$(grep 'WEFT_API' "$header" | grep -v '#define' |
           sed -n 's/.*[ *]\(weft_[A-Za-z0-9_]*\) *[(;].*/\1/p; s/.*[ *]\(weft_[A-Za-z0-9_]*\)$/\1/p' |
           sort -u)
    [ -n "$want" ] || { echo "check_abi: no WEFT_API names found in $header" >&2; exit 1; }
    missing=""
    nwant=0
    for w in $want; do
        nwant=$((nwant + 1))
        printf '%s\n' "$defined" | grep -qx "$w" || missing="$missing $w"
    done
    if [ -n "$missing" ]; then
        echo "check_abi: $lib lacks symbols weft.h declares:$missing" >&2
        exit 1
    fi
    echo "check_abi: all $nwant names weft.h declares WEFT_API are defined"
fi

if [ -n "$header" ] && [ $# -gt 0 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cat >"$tmp/outofline.c" <<'EOC'
#define WEFT_NO_INLINE 1
#include "weft.h"
static int set1(void *p) { *(int *)p = 1; return 0; }
static int set2(void *p) { *(int *)p = 2; return 3; }
static int in_task(void *p)
{
    int *v = p;
    return weft_join(set1, &v[0], set2, &v[1]); /* the library's weft_join */
}
int main(void)
{
    int v[2] = {0, 0}, w[2] = {0, 0};
    int r = weft_run(NULL, in_task, v);
    int r2 = weft_join(set1, &w[0], set2, &w[1]); /* outside any task */
    return !(r == 3 && v[0] == 1 && v[1] == 2 && r2 == 3 && w[0] == 1 && w[1] == 2);
}
EOC
    "$@" -std=c11 -I"$(dirname "$header")" "$tmp/outofline.c" -o "$tmp/outofline" \
        "$lib" -Wl,-rpath,"$(cd "$(dirname "$lib")" && pwd)" -lpthread || {
        echo "check_abi: a WEFT_NO_INLINE program does not link against $lib" >&2; exit 1; }
    if ! nm "$tmp/outofline" | grep -q ' U weft_join'; then
        echo "check_abi: the test program did not take weft_join from the library" >&2
        exit 1
    fi
    "$tmp/outofline" || { echo "check_abi: the out-of-line weft_join gave wrong results" >&2; exit 1; }
    echo "check_abi: out-of-line weft_join links and runs"
fi
exit 0
