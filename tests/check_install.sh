#!/bin/sh
# SPDX-License-Identifier: MIT
# Install check (STYLE.md, "Tests"): configure a separate build of the source tree
# with a staging prefix, install it there, then build small consumer programs outside
# the tree with `pkg-config --cflags --libs weft` (shared) and `pkg-config --static`
# (libweft.a), and run them. The consumer also checks that malloc and friends still
# resolve to libc: the library must never replace the host's allocator, and a buffer
# the library hands out (weft_read_file) must be free()able by the host. And the
# version is one: the installed weft.h's macros, weft_version(), pkg-config
# --modversion and the soname (weft.h's rule) agree.
# Usage: check_install.sh source-root build-root
set -eu

src=${1:?usage: check_install.sh source-root build-root}
build=${2:?usage: check_install.sh source-root build-root}
CC=${CC:-cc}

for tool in meson ninja pkg-config "$CC"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_install: $tool not found, skipping"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix=$tmp/prefix

step() { echo "== $*"; }
die() {
    echo "check_install: FAIL: $*" >&2
    exit 1
}

# Build the staged copy with the same allocator/topology choices as the build under
# test, so that a jemalloc build is the one whose malloc behaviour is checked.
extra=""
if command -v python3 >/dev/null 2>&1 &&
    opts=$(meson introspect "$build" --buildoptions 2>/dev/null); then
    extra=$(printf '%s' "$opts" | python3 -c '
import json, sys
d = {o["name"]: o["value"] for o in json.load(sys.stdin)}
print(" ".join("-D%s=%s" % (k, d[k]) for k in ("jemalloc", "hwloc") if k in d))
' 2>/dev/null || true)
fi

step "configure and install into $prefix ($extra)"
# shellcheck disable=SC2086
meson setup "$tmp/build" "$src" -Dtests=false -Dbenchmarks=false -Dtools=false \
    --wrap-mode=nodownload --prefix="$prefix" --libdir=lib $extra >"$tmp/setup.log" 2>&1 ||
    { cat "$tmp/setup.log" >&2; die "meson setup"; }
ninja -C "$tmp/build" install >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; die "ninja install"; }

[ -f "$prefix/include/weft.h" ] || die "weft.h not installed"
[ -f "$prefix/lib/pkgconfig/weft.pc" ] || die "weft.pc not installed"
ls "$prefix"/lib/libweft.so.* >/dev/null 2>&1 || die "libweft.so not installed"
[ -f "$prefix/lib/libweft.a" ] || die "libweft.a not installed"

mkdir "$tmp/consumer"
cat >"$tmp/consumer/prog.c" <<'EOT'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

struct fib { int n; long r; };

static int fib_task(void *p)
{
    struct fib *f = p;
    if (f->n < 2) { f->r = f->n; return 0; }
    struct fib a = {f->n - 1, 0}, b = {f->n - 2, 0};
    int err = weft_join(fib_task, &a, fib_task, &b);
    f->r = a.r + b.r;
    return err;
}

static int count_task(void *p)
{
    void *m = malloc(32); /* the host's allocator, from a worker */
    if (!m) return -1;
    free(m);
    atomic_fetch_add((_Atomic(long) *)p, 1);
    return 0;
}

static int body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 1000; i++)
        if (weft_spawn(s, count_task, arg) != 0) return -1;
    return 0;
}

#define FAIL(...) do { fprintf(stderr, "consumer: " __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

static int check_alloc(void)
{
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) FAIL("libc.so.6 not loaded?");
    static const char *const names[] = {"malloc", "free", "calloc", "realloc",
                                        "aligned_alloc", "posix_memalign", "memalign",
                                        "malloc_usable_size", NULL};
    for (int k = 0; names[k]; k++) {
        void *def = dlsym(RTLD_DEFAULT, names[k]), *own = dlsym(libc, names[k]);
        if (!def || def != own) {
            Dl_info di = {0};
            dladdr(def, &di);
            FAIL("%s resolves to %p in %s, not libc's %p", names[k], def,
                 di.dli_fname ? di.dli_fname : "?", own);
        }
    }
    Dl_info di;
    if (!dladdr((void *)malloc, &di) || !di.dli_fname || !strstr(di.dli_fname, "libc.so"))
        FAIL("malloc is not from libc (%s)", di.dli_fname ? di.dli_fname : "?");
    return 0;
}

/* The header's version macros and the library's weft_version() agree; the version
 * is printed for the script to compare with pkg-config's. */
static int check_version(void)
{
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR,
             WEFT_VERSION_PATCH);
    const char *lib = weft_version();
    if (!lib || strcmp(lib, WEFT_VERSION) != 0 || strcmp(parts, WEFT_VERSION) != 0)
        FAIL("versions disagree: weft_version() %s, WEFT_VERSION %s, macros %s",
             lib ? lib : "(null)", WEFT_VERSION, parts);
    printf("version %s\n", lib);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    /* CONSUMER_NO_ALLOC_CHECK: a non-PIE build, where a function's address is its
     * PLT entry in the executable, not libc's (the join variants below). */
    bool alloc = getenv("CONSUMER_NO_ALLOC_CHECK") == NULL;
    if (check_version() || (alloc && check_alloc())) return 1;
    weft_pool *pool = NULL;
    weft_pool_options o = {.threads = 2};
    if (weft_pool_create(&pool, &o) != 0) FAIL("weft_pool_create");
    struct fib f = {25, 0};
    if (weft_run(pool, fib_task, &f) != 0 || f.r != 75025) FAIL("fib(25) = %ld", f.r);
    _Atomic(long) n = 0;
    if (weft_scope_run(pool, body, &n) != 0 || n != 1000) FAIL("scope ran %ld", (long)n);
    void *data = NULL;
    size_t size = 0;
    if (weft_read_file(argv[0], &data, &size) != 0 || size == 0) FAIL("weft_read_file");
    free(data); /* the library's buffer, freed by the host's free() */
    weft_pool_destroy(pool);
    if (alloc && check_alloc()) return 1; /* still libc's after the library ran */
    puts("consumer ok");
    return 0;
}
EOT

step "shared: pkg-config --cflags --libs weft"
pcpath=$prefix/lib/pkgconfig
flags=$(PKG_CONFIG_PATH=$pcpath pkg-config --cflags --libs weft) || die "pkg-config weft"
echo "   $flags"
# shellcheck disable=SC2086
"$CC" -o "$tmp/consumer/prog" "$tmp/consumer/prog.c" $flags -ldl ||
    die "compiling the consumer against the staged install"
LD_LIBRARY_PATH=$prefix/lib "$tmp/consumer/prog" >"$tmp/consumer/out" ||
    { cat "$tmp/consumer/out"; die "the shared consumer failed"; }
cat "$tmp/consumer/out"

step "the inline weft_join in each kind of object (weft.h reads weft__self in asm on x86-64)"
# weft.h's inline join reads the worker with the initial-exec TLS sequence written
# out on x86-64: it must assemble and link as the compiler's own does, in a PIE, in
# a non-PIE executable and in a shared object (a -fPIC library that forks, loaded
# by the program), optimised as users build.
for mode in "-O2 -fPIE -pie" "-O2 -fno-pie -no-pie"; do
    # shellcheck disable=SC2086
    "$CC" $mode -o "$tmp/consumer/prog_mode" "$tmp/consumer/prog.c" $flags -ldl ||
        die "compiling the consumer with $mode"
    CONSUMER_NO_ALLOC_CHECK=1 LD_LIBRARY_PATH=$prefix/lib "$tmp/consumer/prog_mode" >/dev/null ||
        die "the consumer built with $mode failed"
    echo "   $mode: ok"
done
cp "$tmp/consumer/prog.c" "$tmp/consumer/lib.c"
sed -i 's/^int main(int argc, char \*\*argv)$/int consumer_main(int argc, char **argv)/' \
    "$tmp/consumer/lib.c"
grep -q '^int consumer_main' "$tmp/consumer/lib.c" || die "no main() to rename in prog.c"
printf 'int consumer_main(int, char **);\nint main(int c, char **v) { return consumer_main(c, v); }\n' \
    >"$tmp/consumer/main.c"
# shellcheck disable=SC2086
"$CC" -O2 -fPIC -shared -o "$tmp/consumer/libconsumer.so" "$tmp/consumer/lib.c" $flags -ldl ||
    die "compiling the consumer as a shared object"
# shellcheck disable=SC2086
"$CC" -O2 -o "$tmp/consumer/prog_so" "$tmp/consumer/main.c" -L"$tmp/consumer" -lconsumer $flags \
    -Wl,-rpath,"$tmp/consumer" || die "linking the shared-object consumer"
CONSUMER_NO_ALLOC_CHECK=1 LD_LIBRARY_PATH=$prefix/lib "$tmp/consumer/prog_so" >/dev/null ||
    die "the consumer in a shared object failed"
echo "   -O2 -fPIC -shared: ok"

step "versions: weft.h, weft_version(), pkg-config --modversion, soname"
# The installed header's three macros (the one definition, include/weft.h), the
# library's weft_version() (the consumer checked it against the macros and printed
# it), weft.pc's version, and the soname weft.h's rule derives from them.
hdr=$prefix/include/weft.h
major=$(sed -n 's/^#define WEFT_VERSION_MAJOR *\([0-9][0-9]*\) *$/\1/p' "$hdr")
minor=$(sed -n 's/^#define WEFT_VERSION_MINOR *\([0-9][0-9]*\) *$/\1/p' "$hdr")
patch=$(sed -n 's/^#define WEFT_VERSION_PATCH *\([0-9][0-9]*\) *$/\1/p' "$hdr")
[ -n "$major" ] && [ -n "$minor" ] && [ -n "$patch" ] ||
    die "the installed weft.h lacks WEFT_VERSION_MAJOR/MINOR/PATCH"
want=$major.$minor.$patch
got_lib=$(sed -n 's/^version //p' "$tmp/consumer/out")
got_pc=$(PKG_CONFIG_PATH=$pcpath pkg-config --modversion weft) || die "pkg-config --modversion"
[ "$got_lib" = "$want" ] || die "weft_version() says '$got_lib', weft.h $want"
[ "$got_pc" = "$want" ] || die "pkg-config --modversion says '$got_pc', weft.h $want"
if [ "$major" = 0 ]; then want_so=libweft.so.0.$minor; else want_so=libweft.so.$major; fi
if command -v readelf >/dev/null 2>&1; then
    so=$(readelf -d "$prefix/lib/libweft.so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    [ "$so" = "$want_so" ] || die "the soname is '$so', weft.h's rule says $want_so"
    [ -e "$prefix/lib/$so" ] || die "$so not installed"
    echo "   $want everywhere; soname $so"
else
    echo "   $want everywhere; soname not checked (no readelf)"
fi
if command -v readelf >/dev/null 2>&1; then
    readelf -d "$tmp/consumer/prog" | grep -q 'NEEDED.*libweft\.so' ||
        die "the shared consumer does not link libweft.so"
fi

step "the installed library and header: tests/check_abi.sh (names, versions, layouts)"
"$src/tests/check_abi.sh" --map "$src/lib/weft.map" --layout "$src/tests/abi_layout.txt" \
    "$prefix/lib/libweft.so" "$prefix/include/weft.h" "$CC" || die "check_abi.sh on the install"

step "static: pkg-config --static --cflags --libs weft (libweft.a only)"
# A copy of the prefix without the shared library, so that -lweft can only mean
# libweft.a; its .pc file is pointed at the copy.
static=$tmp/static
cp -a "$prefix" "$static"
rm -f "$static"/lib/libweft.so*
sed -i "s|^prefix=.*|prefix=$static|" "$static/lib/pkgconfig/weft.pc"
sflags=$(PKG_CONFIG_PATH=$static/lib/pkgconfig pkg-config --static --cflags --libs weft) ||
    die "pkg-config --static weft"
echo "   $sflags"
# The static flags include the private libraries of weft's own dependencies (hwloc's
# -ludev, ...). Those dependencies are still linked as shared libraries here, which
# bring their own, so a -l the toolchain cannot find (no -dev package installed) is
# dropped with a note rather than failing the check. -lweft itself is never dropped.
kept=""
for f in $sflags; do
    case $f in
    -lweft) ;;
    -l*)
        name=${f#-l}
        if [ "$("$CC" -print-file-name="lib$name.so")" = "lib$name.so" ] &&
            [ "$("$CC" -print-file-name="lib$name.a")" = "lib$name.a" ]; then
            echo "   note: $f not found by $CC, dropped (a private dependency of a dependency)"
            continue
        fi
        ;;
    esac
    kept="$kept $f"
done
sflags=$kept
# shellcheck disable=SC2086
"$CC" -o "$tmp/consumer/prog_static" "$tmp/consumer/prog.c" $sflags -ldl ||
    die "linking the consumer statically against libweft.a"
if command -v readelf >/dev/null 2>&1; then
    if readelf -d "$tmp/consumer/prog_static" | grep -q 'NEEDED.*libweft'; then
        die "the static consumer still needs libweft.so"
    fi
fi
env -u LD_LIBRARY_PATH "$tmp/consumer/prog_static" || die "the static consumer failed"

echo "check_install: ok"
exit 0
