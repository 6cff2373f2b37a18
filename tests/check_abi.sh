#!/bin/sh
# SPDX-License-Identifier: MIT
# ABI check (STYLE.md, "Tests").
# Usage: check_abi.sh [--map weft.map] [--layout abi_layout.txt] [--run]
#                     path/to/libweft.so [path/to/weft.h [cc args...]]
#        check_abi.sh --print-layout path/to/libweft.so path/to/weft.h cc args...
# 1. Every dynamic symbol the library defines must start with "weft_"; any other name
#    is listed and the check fails. The entries that are not symbols at all, the
#    absolute version-node markers of the version script (WEFT_0.1, ..., type A,
#    value 0), are skipped.
# 2. With weft.h: every name the header declares WEFT_API (functions and the one
#    variable, weft__self) is defined by the library, weft_join's out-of-line copy
#    included (the version script's pattern alone would pass a library without them).
# 3. With --map: every symbol carries a version node the map defines, and every name
#    a node lists by name (not by pattern) carries that node: a function added in 0.2
#    is weft_version@@WEFT_0.2, not swallowed by WEFT_0.1's weft_* pattern.
# 4. With --layout and a compiler: a program built from weft.h alone (nothing linked)
#    prints the size, alignment and field offsets of every struct the header defines
#    (the public ones a program allocates, and the private weft__ ones the inline
#    weft_join reads and writes in the library's memory) and the values of the
#    constants it compiles in; the printout must equal the block of the layout file
#    recorded for the library's soname and this data model. A layout change breaks
#    binaries built against the old header: it needs a new soname (weft.h,
#    "Versions"), under which --print-layout's output is then recorded.
# 5. With --run and a compiler (plain builds, where a program needs no sanitizer
#    runtime): a program built against the header with WEFT_NO_INLINE (as C++ code
#    sees it) links to the shared library and runs weft_join through it, and the
#    library's weft_version() is the header's WEFT_VERSION.
set -eu

usage="usage: check_abi.sh [--map FILE] [--layout FILE] [--run] libweft.so [weft.h [cc ...]]"
map=""
layout=""
run=0
print_layout=0
while [ $# -gt 0 ]; do
    case $1 in
    --map) map=${2:?$usage}; shift 2 ;;
    --layout) layout=${2:?$usage}; shift 2 ;;
    --run) run=1; shift ;;
    --print-layout) print_layout=1; shift ;;
    *) break ;;
    esac
done
lib=${1:?$usage}
header=${2:-}
[ $# -ge 2 ] && shift 2 || shift $#
if [ ! -f "$lib" ]; then
    echo "check_abi: no such file: $lib" >&2
    exit 1
fi
NM=${NM:-nm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# The soname, from the dynamic section (readelf, else objdump).
soname() {
    if command -v readelf >/dev/null 2>&1; then
        readelf -d "$1" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p'
    else
        objdump -p "$1" | awk '$1 == "SONAME" { print $2 }'
    fi
}

# The layout program: weft.h's structs and constants as "what name value" lines,
# preceded by the block header "[soname model]" the layout file keys them by.
layout_of() {
    cat >"$tmp/layout.c" <<'EOC'
#include <stddef.h>
#include <stdio.h>
#include "weft.h"
#if defined(WEFT_NO_INLINE) || !defined(WEFT__IDX_TAKEN)
#error "the layout program needs the inline weft_join's definitions (C11)"
#endif
#define SIZE(T) printf("size %s %zu\nalign %s %zu\n", #T, sizeof(T), #T, _Alignof(T))
#define OFF(T, m) printf("offset %s.%s %zu\n", #T, #m, offsetof(T, m))
#define VAL(c) printf("value %s %lld\n", #c, (long long)(c))
int main(void)
{
    const char *model = sizeof(void *) == 8 && sizeof(long) == 8 ? "lp64"
                        : sizeof(void *) == 4 && sizeof(long) == 4 ? "ilp32" : "other";
    printf("model %s\n", model);
    /* Public: programs allocate these and the library reads or fills them. */
    SIZE(weft_pool_options);
    OFF(weft_pool_options, threads);
    OFF(weft_pool_options, flags);
    OFF(weft_pool_options, stack_size);
    OFF(weft_pool_options, ring_entries);
    OFF(weft_pool_options, on_worker_start);
    OFF(weft_pool_options, on_worker_stop);
    OFF(weft_pool_options, hook_arg);
    OFF(weft_pool_options, trace_path);
    SIZE(weft_stats);
    OFF(weft_stats, spawns);
    OFF(weft_stats, steals);
    OFF(weft_stats, steal_fails);
    OFF(weft_stats, parks);
    OFF(weft_stats, wakeups);
    OFF(weft_stats, io_ops);
    OFF(weft_stats, jobserver_tokens);
    OFF(weft_stats, jobserver_tokens_peak);
    OFF(weft_stats, busy_ns);
    OFF(weft_stats, idle_ns);
    OFF(weft_stats, latency_p50_ns);
    OFF(weft_stats, latency_p99_ns);
    SIZE(weft_event);
    OFF(weft_event, word_);
    OFF(weft_event, waiters_);
    VAL(WEFT_POOL_PIN);
    VAL(WEFT_POOL_NO_URING);
    VAL(WEFT_POOL_NO_JOBSERVER);
    VAL(WEFT_ORDERED);
    /* Private, but compiled into every C11 caller by the inline weft_join. */
    SIZE(struct weft__latch);
    OFF(struct weft__latch, word);
    SIZE(struct weft__job);
    OFF(struct weft__job, fn);
    OFF(struct weft__job, arg);
    OFF(struct weft__job, latch);
    OFF(struct weft__job, result);
    OFF(struct weft__job, idx);
    OFF(struct weft__job, next);
    OFF(struct weft__job, scope);
    SIZE(struct weft__deque);
    OFF(struct weft__deque, bottom);
    OFF(struct weft__deque, split);
    OFF(struct weft__deque, limit);
    OFF(struct weft__deque, slots);
    OFF(struct weft__deque, mask);
    OFF(struct weft__deque, poke);
    OFF(struct weft__deque, fence_full);
    OFF(struct weft__deque, scope);
    OFF(struct weft__deque, top);
    OFF(struct weft__deque, buf);
    VAL(WEFT__IDX_TAKEN);
    return 0;
}
EOC
    "$@" -std=c11 -I"$(dirname "$header")" "$tmp/layout.c" -o "$tmp/layout" || {
        echo "check_abi: the layout program does not compile against $header" >&2
        return 1
    }
    "$tmp/layout" >"$tmp/layout.out" || { echo "check_abi: the layout program failed" >&2; return 1; }
    model=$(sed -n 's/^model //p' "$tmp/layout.out")
    echo "[$(soname "$lib") $model]"
    grep -v '^model ' "$tmp/layout.out"
}

if [ $print_layout = 1 ]; then
    [ -n "$header" ] && [ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
    layout_of "$@"
    exit 0
fi

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

if [ -n "$map" ]; then
    # The map without its comments, as tokens: "node NAME" per version node and
    # "name NODE SYMBOL" per symbol a node's global section lists by name.
    tr '\n' ' ' <"$map" | sed -e 's,/\*\([^*]\|\*\+[^*/]\)*\*\+/, ,g' -e 's/[{};:]/ & /g' |
        awk '{
            for (i = 1; i <= NF; i++) {
                t = $i
                if (!depth) {
                    if (t == "{") { depth = 1; sect = "" }
                    else if (t == ";") after = 0
                    else if (!after) print "node " (node = t)
                } else if (t == "}") { depth = 0; after = 1 }
                else if ((t == "global" || t == "local") && $(i + 1) == ":") { sect = t; i++ }
                else if (t != ";" && sect == "global" && t !~ /[*?[]/) print "name " node " " t
            }
        }' >"$tmp/map"
    nodes=$(sed -n 's/^node //p' "$tmp/map")
    [ -n "$nodes" ] || { echo "check_abi: no version nodes in $map" >&2; exit 1; }
    # Every symbol's version (name@@NODE, or name@NODE for an old default) is a node.
    badver=""
    for v in $(printf '%s\n' "$out" | awk '{ n = $NF; if (sub(/^[^@]*@@?/, "", n)) print n }' | sort -u); do
        printf '%s\n' "$nodes" | grep -Fqx "$v" || badver="$badver $v"
    done
    [ -z "$badver" ] || { echo "check_abi: versions the map does not define:$badver" >&2; exit 1; }
    nnamed=0
    while read -r what node sym; do
        [ "$what" = name ] || continue
        nnamed=$((nnamed + 1))
        printf '%s\n' "$out" | awk '{ print $NF }' | grep -Fqx "$sym@@$node" || {
            echo "check_abi: $sym is not exported as $sym@@$node (the map lists it there):" >&2
            printf '%s\n' "$out" | grep -w "$sym" >&2 || echo "  (not exported at all)" >&2
            exit 1
        }
    done <"$tmp/map"
    echo "check_abi: versions $(printf '%s\n' "$nodes" | tr '\n' ' ')- symbols use only these," \
        "and the $nnamed name(s) listed by name carry their node"
fi

if [ -n "$layout" ]; then
    [ -n "$header" ] && [ $# -gt 0 ] ||
        { echo "check_abi: --layout needs weft.h and a compiler" >&2; exit 1; }
    [ -f "$layout" ] || { echo "check_abi: no such file: $layout" >&2; exit 1; }
    layout_of "$@" >"$tmp/now" || exit 1
    key=$(head -1 "$tmp/now")
    # The recorded block: the lines after "$key" up to the next "[" line, without
    # comments and blank lines.
    awk -v key="$key" '$0 == key { f = 1; next } /^\[/ { f = 0 }
                       f && NF && $1 !~ /^#/' "$layout" >"$tmp/recorded"
    redo="tests/check_abi.sh --print-layout $lib $header $*"
    if [ ! -s "$tmp/recorded" ]; then
        case $key in
        *" lp64]")
            echo "check_abi: $layout records no layout for $key (a new soname: append" >&2
            echo "  the block that $redo prints)" >&2
            exit 1 ;;
        *)
            echo "check_abi: no layout recorded for $key: layout not checked" ;;
        esac
    elif ! tail -n +2 "$tmp/now" | diff "$tmp/recorded" - >"$tmp/diff"; then
        echo "check_abi: the layout weft.h gives binaries differs from $layout's $key" >&2
        echo "  (< recorded, > now):" >&2
        sed 's/^/  /' "$tmp/diff" >&2
        echo "  Binaries built against the recorded layout break with this library: give it" >&2
        echo "  a new soname (weft.h, \"Versions\") and append the block that" >&2
        echo "  $redo prints." >&2
        exit 1
    else
        echo "check_abi: layout $key as recorded ($(wc -l <"$tmp/recorded") lines)"
    fi
fi

if [ $run = 1 ]; then
    [ -n "$header" ] && [ $# -gt 0 ] ||
        { echo "check_abi: --run needs weft.h and a compiler" >&2; exit 1; }
    cat >"$tmp/outofline.c" <<'EOC'
#define WEFT_NO_INLINE 1
#include <string.h>
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
    if (strcmp(weft_version(), WEFT_VERSION) != 0)
        return 2;
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
    rc=0
    "$tmp/outofline" || rc=$?
    case $rc in
    0) echo "check_abi: out-of-line weft_join links and runs; weft_version() is WEFT_VERSION" ;;
    2) echo "check_abi: weft_version() is not the header's WEFT_VERSION" >&2; exit 1 ;;
    *) echo "check_abi: the out-of-line weft_join gave wrong results" >&2; exit 1 ;;
    esac
fi
exit 0
