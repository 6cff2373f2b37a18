#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# weft-hash against `xxhsum -H3` over a tree built here: empty files, a sparse file
# over 64 MiB (streamed), names with spaces, newlines and backslashes, unreadable
# files, symbolic links (to files, to directories, dangling, loops, to an ancestor),
# a FIFO. The listing must equal xxhsum's (same hashes, same order) at 1, 2 and 8
# workers and with --serial; errors must be reported with the path and the reason
# and reflected in the exit status; --check must accept both tools' listings and
# find a changed and a missing file.
#
# Usage: test-weft-hash.sh path/to/weft-hash      (exit 0 pass, 1 fail, 77 skip)
#
# Running as root: chmod 000 does not make a file unreadable for root, so the
# Permission-denied checks run only as another user. Both run the open and read
# error paths through -L instead: a dangling link (ENOENT), a link loop (ELOOP) and
# a link to /proc/self/mem, which opens but fails to read (EIO).
set -u
W=${1:?usage: test-weft-hash.sh path/to/weft-hash}
command -v xxhsum >/dev/null || { echo "SKIP: xxhsum not installed (Debian: xxhash)"; exit 77; }
export LC_ALL=C
unset WEFT_NUM_THREADS
# This test checks weft-hash's stderr byte for byte; under WEFT_SCHED=random the
# library prints its seed there (lib/noise.c), so run this one on the default schedule.
unset WEFT_SCHED

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-hash-test.XXXXXX")
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# expect DESCRIPTION COMMAND...: pass if the command succeeds.
expect() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
# has FILE LINE: FILE holds LINE as a whole line.
has() { grep -qFx -- "$2" "$1" || { echo "  missing in $(basename "$1"): $2"; sed 's/^/  | /' "$1" | head -20; return 1; }; }
same() { cmp -s "$1" "$2" || { echo "  $1 and $2 differ:"; diff "$1" "$2" | head -20; return 1; }; }

root=0
[ "$(id -u)" = 0 ] && root=1

# ---- the tree ----------------------------------------------------------------
T=$tmp/tree
mkdir -p "$T/a/b/c" "$T/big" "$T/sp ace dir" "$T/many"
: > "$T/empty"
: > "$T/a/b/c/empty2"
printf 'hello\n' > "$T/a/hello"
printf 'x' > "$T/name with spaces"
printf 'y' > "$T/$(printf 'new\nline')"
printf 'z' > "$T/back\\slash"
printf 'w' > "$T/sp ace dir/f"
head -c 300000 /dev/urandom > "$T/a/b/random"
for i in $(seq 1 200); do printf '%s' "$i" > "$T/many/f$i"; done
for i in $(seq 1 40); do mkdir "$T/many/d$i"; printf '%s' "$i" > "$T/many/d$i/g"; done
# Over 4096 paths in all, so the parallel merge sort runs (sort.c).
seq -f "$T/many/e%g" 1 4500 | xargs touch
# Over 64 MiB and sparse: no disk writes; data in the middle and at the end.
truncate -s 67M "$T/big/sparse"
printf 'middle' | dd of="$T/big/sparse" bs=1 seek=33554432 conv=notrunc status=none
printf 'end' >> "$T/big/sparse"
ln -s hello "$T/a/link-to-file"
ln -s ../a "$T/big/link-to-dir"
ln -s loop2 "$T/loop1"
ln -s loop1 "$T/loop2"
ln -s nowhere "$T/dangling"
ln -s .. "$T/a/b/up"
mkfifo "$T/fifo"
if [ $root = 0 ]; then
    printf 'secret' > "$T/a/secret"
    chmod 000 "$T/a/secret"
    mkdir "$T/locked"
    printf 'l' > "$T/locked/inside"
    chmod 000 "$T/locked"
fi

# ---- the listing equals xxhsum's, at every worker count ------------------------
find "$T" -type f -print0 2>/dev/null | sort -z | xargs -0 xxhsum -H3 > "$tmp/ref" 2>/dev/null
expect "reference listing holds the sparse file" has "$tmp/ref" \
    "$(grep -F "$T/big/sparse)" "$tmp/ref")"
want_rc=0
[ $root = 0 ] && want_rc=1
for mode in -j1 -j2 -j8 --serial; do
    "$W" $mode "$T" > "$tmp/out$mode" 2> "$tmp/err$mode"
    rc=$?
    expect "$mode: listing equals xxhsum -H3" same "$tmp/out$mode" "$tmp/ref"
    expect "$mode: exit status $want_rc (got $rc)" test $rc = $want_rc
    if [ $root = 1 ]; then
        expect "$mode: nothing on stderr (links, FIFO skipped silently)" \
            test ! -s "$tmp/err$mode"
    else
        expect "$mode: unreadable file reported" has "$tmp/err$mode" \
            "weft-hash: $T/a/secret: cannot read: Permission denied"
        expect "$mode: unreadable directory reported" has "$tmp/err$mode" \
            "weft-hash: $T/locked: cannot open directory: Permission denied"
    fi
done
[ $root = 1 ] && echo "note: running as root: chmod 000 checks skipped (root reads anyway); -L checks below cover open/read errors"
expect "sparse file line present" has "$tmp/out-j2" "$(grep -F "$T/big/sparse)" "$tmp/ref")"

# ---- -L: links followed, dangling links and loops reported ----------------------
find -L "$T" -type f -print0 2>/dev/null | sort -z | xargs -0 xxhsum -H3 > "$tmp/refL" 2>/dev/null
for mode in -j1 -j2; do
    "$W" -L $mode "$T" > "$tmp/outL" 2> "$tmp/errL"
    rc=$?
    expect "-L $mode: listing equals find -L | xxhsum -H3" same "$tmp/outL" "$tmp/refL"
    expect "-L $mode: exit status 1 (got $rc)" test $rc = 1
    expect "-L $mode: dangling link reported" has "$tmp/errL" \
        "weft-hash: $T/dangling: cannot follow symbolic link: No such file or directory"
    expect "-L $mode: link loop reported" has "$tmp/errL" \
        "weft-hash: $T/loop1: cannot follow symbolic link: Too many levels of symbolic links"
    expect "-L $mode: link to an ancestor reported" has "$tmp/errL" \
        "weft-hash: $T/a/b/up: not followed: symbolic link to an ancestor directory (file system loop)"
    nerr=$(grep -c "^weft-hash: $T/" "$tmp/errL")
    expect "-L $mode: errors counted ($nerr)" has "$tmp/errL" \
        "weft-hash: WARNING: $nerr paths could not be hashed"
done
expect "-L: file reached through a directory link" has "$tmp/outL" \
    "$(grep -F "$T/a/hello)" "$tmp/ref" | sed "s|$T/a/hello|$T/big/link-to-dir/hello|")"

# A read error that root gets too: /proc/self/mem opens, but reading offset 0 fails.
S=$tmp/special
mkdir "$S"
ln -s /proc/self/mem "$S/mem"
if ! head -c 1 /proc/self/mem > /dev/null 2>&1; then
    "$W" -L "$S" > "$tmp/outM" 2> "$tmp/errM"
    rc=$?
    expect "read error: exit status 1 (got $rc)" test $rc = 1
    expect "read error reported" has "$tmp/errM" \
        "weft-hash: $S/mem: cannot read: Input/output error"
    expect "read error: no listing line" test ! -s "$tmp/outM"
else
    echo "note: /proc/self/mem is readable here: read-error check skipped"
fi

# ---- operands ---------------------------------------------------------------
find "$T/name with spaces" "$T/a/b" "$T/empty" -type f -print0 | sort -z |
    xargs -0 xxhsum -H3 > "$tmp/refops" 2>/dev/null
"$W" "$T/a/b" "$T/name with spaces" "$T/empty" "$T/a/b" > "$tmp/outops" 2> "$tmp/errops"
rc=$?
expect "several PATHs: sorted over all, each path once" same "$tmp/outops" "$tmp/refops"
expect "several PATHs: exit status 0 (got $rc)" test $rc = 0
find "$T/a/" -type f -print0 2>/dev/null | sort -z | xargs -0 xxhsum -H3 > "$tmp/refslash" 2>/dev/null
"$W" "$T/a/" > "$tmp/outslash" 2>/dev/null
expect "PATH with a trailing slash printed as find prints it" same "$tmp/outslash" "$tmp/refslash"
"$W" "$T/a/link-to-file" > "$tmp/outlink" 2>/dev/null
expect "a link given as PATH is followed" has "$tmp/outlink" \
    "$(grep -F "$T/a/hello)" "$tmp/ref" | sed "s|$T/a/hello|$T/a/link-to-file|")"
"$W" "$T/nope" "$T/empty" > "$tmp/outnope" 2> "$tmp/errnope"
rc=$?
expect "missing PATH: exit status 1 (got $rc)" test $rc = 1
expect "missing PATH reported" has "$tmp/errnope" \
    "weft-hash: $T/nope: cannot access: No such file or directory"
expect "missing PATH: the other PATH still hashed" has "$tmp/outnope" \
    "$(grep -F "$T/empty)" "$tmp/ref")"
"$W" "$T/fifo" > /dev/null 2> "$tmp/errfifo"
rc=$?
expect "FIFO as PATH: exit status 1 (got $rc), no hang" test $rc = 1
expect "FIFO as PATH reported" has "$tmp/errfifo" \
    "weft-hash: $T/fifo: not a regular file or directory"

# ---- --check ----------------------------------------------------------------
"$W" "$T" > "$tmp/list" 2>/dev/null
nrec=$(grep -c '^XXH3 (' "$tmp/list")
"$W" --check "$tmp/list" > "$tmp/chk" 2> "$tmp/chkerr"
rc=$?
expect "--check own listing: exit status 0 (got $rc)" test $rc = 0
expect "--check: one OK per file ($nrec)" test "$(grep -c ': OK$' "$tmp/chk")" = "$nrec"
expect "--check: name with a newline read back" has "$tmp/chk" "line: OK"
"$W" --check - --quiet < "$tmp/list" > "$tmp/chkq" 2>&1
rc=$?
expect "--check - --quiet: silent, exit status 0 (got $rc)" test $rc = 0 -a ! -s "$tmp/chkq"
"$W" --check "$tmp/ref" > /dev/null 2>&1
rc=$?
expect "--check xxhsum's listing: exit status 0 (got $rc)" test $rc = 0
xxhsum -c "$tmp/list" > "$tmp/xchk" 2>/dev/null
rc=$?
expect "xxhsum -c accepts weft-hash's listing (exit status $rc)" test $rc = 0
expect "xxhsum -c: a file checked OK" has "$tmp/xchk" "$T/a/hello: OK"

printf 'changed\n' > "$T/a/hello"
rm "$T/empty"
printf 'garbage line\n' >> "$tmp/list"
"$W" --check "$tmp/list" > "$tmp/chk2" 2> "$tmp/chkerr2"
rc=$?
expect "--check after changes: exit status 1 (got $rc)" test $rc = 1
expect "--check: changed file FAILED" has "$tmp/chk2" "$T/a/hello: FAILED"
expect "--check: missing file FAILED open or read" has "$tmp/chk2" "$T/empty: FAILED open or read"
expect "--check: missing file's reason on stderr" grep -qF \
    ": $T/empty: cannot read: No such file or directory" "$tmp/chkerr2"
expect "--check: mismatch counted" has "$tmp/chkerr2" \
    "weft-hash: WARNING: 1 computed checksum did NOT match"
expect "--check: unreadable counted" has "$tmp/chkerr2" \
    "weft-hash: WARNING: 1 listed file could not be read"
expect "--check: malformed line counted" has "$tmp/chkerr2" \
    "weft-hash: WARNING: 1 line is improperly formatted"
expect "--check: unchanged file still OK" has "$tmp/chk2" "$T/a/b/random: OK"
"$W" --check "$tmp/nolisting" > /dev/null 2>&1
rc=$?
expect "--check of a missing listing: exit status 2 (got $rc)" test $rc = 2

# ---- usage ------------------------------------------------------------------
"$W" > /dev/null 2>&1;              rc=$?; expect "no PATH: exit status 2 (got $rc)" test $rc = 2
"$W" --bogus "$T" > /dev/null 2>&1; rc=$?; expect "unknown option: exit status 2 (got $rc)" test $rc = 2
"$W" -j x "$T" > /dev/null 2>&1;    rc=$?; expect "bad --threads: exit status 2 (got $rc)" test $rc = 2
"$W" --help > "$tmp/help" 2>&1;     rc=$?; expect "--help: exit status 0 (got $rc)" test $rc = 0
for opt in --threads --follow --serial --summary --check --quiet --version; do
    expect "--help documents $opt" grep -q -- "$opt" "$tmp/help"
done
"$W" --summary -j2 "$T/a" > /dev/null 2> "$tmp/sum"
expect "--summary: a RESULT line" grep -q '^RESULT weft-hash mode=weft workers=2 files=' "$tmp/sum"
expect "--summary: busy, parked and latency of the pool" grep -q '^weft-hash: pool: busy .* s, parked .* s; spawn-to-start latency p50 .* us, p99 .* us$' "$tmp/sum"
expect "--summary: a line per worker" grep -q '^weft-hash: weft-1: busy .* s, parked .* s, .* spawns' "$tmp/sum"

echo
if [ $fails -gt 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
