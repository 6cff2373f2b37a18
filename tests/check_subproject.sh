#!/bin/sh
# SPDX-License-Identifier: MIT
# Subproject check: a small consumer project takes weft as a meson subproject, the
# way README's "Using it" says:
#   weft_dep = dependency('weft', fallback: ['weft', 'weft_dep'])
# The source tree is copied into the consumer's subprojects/weft (a vendored checkout:
# git's files when it is a work tree, else everything but build directories), the
# consumer is configured with --wrap-mode=nodownload (weft's own dependencies come
# from the system, Debian's packages, never a download) and --force-fallback-for=weft
# (an installed weft cannot stand in), built, and its program run: it forks and joins
# on a pool of two workers, checks the result and that weft_version() is the header's,
# and prints them; the script compares that line with the version in weft.h.
# Twice: with README's form, and asking for weft by name alone (which only weft's
# meson.override_dependency answers), both with a version constraint. Each time the
# check fails if weft, as a subproject, built or registered anything but its library
# (no tests, benchmarks or tools of its own in the consumer's build).
# Usage: check_subproject.sh source-root
set -eu

src=${1:?usage: check_subproject.sh source-root}
for tool in meson ninja python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_subproject: $tool not found, skipping"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-subproject.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
consumer=$tmp/consumer
dest=$consumer/subprojects/weft
mkdir -p "$dest"

step() { echo "== $*"; }
die() {
    echo "check_subproject: FAIL: $*" >&2
    exit 1
}

hdr=$src/include/weft.h
major=$(sed -n 's/^#define WEFT_VERSION_MAJOR *\([0-9][0-9]*\) *$/\1/p' "$hdr")
minor=$(sed -n 's/^#define WEFT_VERSION_MINOR *\([0-9][0-9]*\) *$/\1/p' "$hdr")
patch=$(sed -n 's/^#define WEFT_VERSION_PATCH *\([0-9][0-9]*\) *$/\1/p' "$hdr")
[ -n "$major" ] && [ -n "$minor" ] && [ -n "$patch" ] ||
    die "$hdr lacks WEFT_VERSION_MAJOR/MINOR/PATCH"
version=$major.$minor.$patch

step "copy $src into the consumer's subprojects/weft"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files: what a checkout of this tree has.
    (cd "$src" && git ls-files --cached --others --exclude-standard | while IFS= read -r f; do
        [ -f "$f" ] && printf '%s\n' "$f"
    done) >"$tmp/files"
    (cd "$src" && tar -cf - -T "$tmp/files") | tar -C "$dest" -xf - || die "copying the tree"
else
    (cd "$src" && tar -cf - --exclude='./build*' --exclude=./.git .) | tar -C "$dest" -xf - ||
        die "copying the tree"
fi
[ -f "$dest/meson.build" ] && [ -f "$dest/include/weft.h" ] || die "the copy lacks meson.build or weft.h"

cat >"$consumer/meson.build" <<EOT
project('weft-consumer', 'c', default_options: ['c_std=gnu11', 'warning_level=2'])
if get_option('form') == 'readme'
  # README's form, with a version constraint (weft's declare_dependency carries it).
  weft = dependency('weft', version: '>=$major.$minor', fallback: ['weft', 'weft_dep'])
else
  # By name alone: meson falls back to subprojects/weft, which provides the name
  # through meson.override_dependency('weft', weft_dep).
  weft = dependency('weft', version: '>=$major.$minor')
endif
if weft.version() != '$version'
  error('weft as a subproject says version ' + weft.version() + ', weft.h $version')
endif
exe = executable('consumer', 'consumer.c', dependencies: weft)
test('consumer', exe)
EOT
cat >"$consumer/meson_options.txt" <<'EOT'
option('form', type: 'combo', choices: ['readme', 'name'], value: 'readme')
EOT

cat >"$consumer/consumer.c" <<'EOT'
#include <stdio.h>
#include <string.h>
#include <weft.h>

struct fib { int n; long r; };

static int fib_task(void *p)
{
    struct fib *f = p;
    if (f->n < 2) { f->r = f->n; return 0; }
    struct fib a = {f->n - 1, 0}, b = {f->n - 2, 0};
    int err = weft_join(fib_task, &a, fib_task, &b); /* weft.h's inline join */
    f->r = a.r + b.r;
    return err;
}

int main(void)
{
    weft_pool *pool = NULL;
    weft_pool_options o = {.threads = 2};
    int err = weft_pool_create(&pool, &o);
    if (err) {
        fprintf(stderr, "consumer: weft_pool_create: %d\n", err);
        return 1;
    }
    struct fib f = {22, 0};
    err = weft_run(pool, fib_task, &f);
    weft_pool_destroy(pool);
    if (err || f.r != 17711) {
        fprintf(stderr, "consumer: fib(22) = %ld, error %d\n", f.r, err);
        return 1;
    }
    if (strcmp(weft_version(), WEFT_VERSION) != 0) {
        fprintf(stderr, "consumer: weft_version() %s, weft.h %s\n", weft_version(), WEFT_VERSION);
        return 1;
    }
    printf("fib(22) = %ld, weft %s\n", f.r, weft_version());
    return 0;
}
EOT

# consume <build dir> <form>: configure, build, run, check what weft added.
consume() {
    b=$consumer/$1
    step "$2 form: configure the consumer (--wrap-mode=nodownload --force-fallback-for=weft)"
    (cd "$consumer" && meson setup "$1" -Dform="$2" --wrap-mode=nodownload \
        --force-fallback-for=weft) >"$tmp/setup.log" 2>&1 ||
        { cat "$tmp/setup.log" >&2; die "meson setup of the consumer ($2 form)"; }
    grep 'Dependency weft' "$tmp/setup.log" | sed 's/^/   /'
    grep -q 'Executing subproject weft' "$tmp/setup.log" || die "weft was not taken as a subproject"

    step "$2 form: build"
    ninja -C "$b" >"$tmp/build.log" 2>&1 ||
        { tail -40 "$tmp/build.log" >&2; die "building the consumer and weft ($2 form)"; }

    step "$2 form: run"
    out=$("$b/consumer") || die "the consumer failed ($2 form)"
    echo "   $out"
    [ "$out" = "fib(22) = 17711, weft $version" ] || die "the consumer printed '$out'"

    step "$2 form: weft as a subproject builds its library and registers no tests"
    meson introspect "$b" --targets >"$tmp/targets.json" || die "meson introspect --targets"
    meson introspect "$b" --tests >"$tmp/tests.json" || die "meson introspect --tests"
    python3 - "$tmp/targets.json" "$tmp/tests.json" <<'PY' || die "weft built or registered more than its library"
import json, sys
targets = sorted({t["name"] for t in json.load(open(sys.argv[1]))})
tests = sorted({t["name"] for t in json.load(open(sys.argv[2]))})
extra = [t for t in targets if t not in ("weft", "consumer")]
print("   targets:", " ".join(targets), "- tests:", " ".join(tests))
if "weft" not in targets or extra or tests != ["consumer"]:
    print("unexpected targets %s or tests %s" % (extra, tests), file=sys.stderr)
    sys.exit(1)
PY
}

consume build readme
consume build-name name

echo "check_subproject: ok"
exit 0
