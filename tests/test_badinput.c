/* SPDX-License-Identifier: MIT */
/*
 * Bad input gets the documented error, never a crash, and a callback of a call that
 * fails is never called. Checked from outside any task and (where it matters) from
 * inside one.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "weft.h"

/* The exported, out-of-line weft_join (C11 callers get the inline one). */
extern int weft_join_exported(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
    __asm__("weft_join");

static _Atomic(int) called;

static int never(void *p)
{
    (void)p;
    atomic_fetch_add(&called, 1);
    return 0;
}

static int never_range(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    (void)lo;
    (void)hi;
    atomic_fetch_add(&called, 1);
    return 0;
}

static int never_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    (void)i;
    (void)slot;
    atomic_fetch_add(&called, 1);
    return 0;
}

static int never_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    (void)sctx;
    (void)first;
    (void)count;
    (void)slots;
    atomic_fetch_add(&called, 1);
    return 0;
}

static int ok_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    *(size_t *)slot = i;
    return 0;
}

static int ok_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    (void)first;
    (void)slots;
    *(size_t *)sctx += count;
    return 0;
}

static weft_pool *mkpool(unsigned threads)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    return p;
}

/* ---- pools ------------------------------------------------------------------------ */

Test(badinput, pool_create)
{
    cr_assert_eq(weft_pool_create(NULL, NULL), -EINVAL);
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(NULL, &o), -EINVAL);

    static const unsigned bad_threads[] = {WEFT_MAX_THREADS + 1, WEFT_MAX_THREADS + 100,
                                           INT_MAX, UINT_MAX};
    for (size_t k = 0; k < sizeof(bad_threads) / sizeof(bad_threads[0]); k++) {
        weft_pool *p = NULL;
        weft_pool_options b = {.threads = bad_threads[k]};
        cr_assert_eq(weft_pool_create(&p, &b), -EINVAL, "threads = %u", bad_threads[k]);
    }
    static const unsigned bad_flags[] = {1u << 3, 1u << 5, 1u << 31, ~0u,
                                         WEFT_POOL_PIN | (1u << 7)};
    for (size_t k = 0; k < sizeof(bad_flags) / sizeof(bad_flags[0]); k++) {
        weft_pool *p = NULL;
        weft_pool_options b = {.threads = 1, .flags = bad_flags[k]};
        cr_assert_eq(weft_pool_create(&p, &b), -EINVAL, "flags = %#x", bad_flags[k]);
    }
    /* The known flags are accepted (pinning is best effort). */
    weft_pool *p = NULL;
    weft_pool_options good = {.threads = 2,
                               .flags = WEFT_POOL_PIN | WEFT_POOL_NO_URING | WEFT_POOL_NO_JOBSERVER};
    cr_assert_eq(weft_pool_create(&p, &good), 0);
    cr_assert_eq(weft_pool_threads(p), 2);
    weft_pool_destroy(p);
}

/* ---- run / join ------------------------------------------------------------------- */

Test(badinput, run_null_fn)
{
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_run(p, NULL, NULL), -EINVAL);
    cr_assert_eq(weft_run(NULL, NULL, NULL), -EINVAL);
    /* The refused calls left the pool working (there was no callback to not call). */
    atomic_store(&called, 0);
    cr_assert_eq(weft_run(p, never, NULL), 0);
    cr_assert_eq(atomic_load(&called), 1);
    weft_pool_destroy(p);
}

static int join_null_checks(void *p)
{
    (void)p;
    int bad = 0;
    if (weft_join(NULL, NULL, never, NULL) != -EINVAL)
        bad |= 1;
    if (weft_join(never, NULL, NULL, NULL) != -EINVAL)
        bad |= 2;
    if (weft_join(NULL, NULL, NULL, NULL) != -EINVAL)
        bad |= 4;
    if (weft_join_exported(NULL, NULL, never, NULL) != -EINVAL)
        bad |= 8;
    if (weft_join_exported(never, NULL, NULL, NULL) != -EINVAL)
        bad |= 16;
    return bad;
}

Test(badinput, join_null_fn)
{
    atomic_store(&called, 0);
    cr_assert_eq(join_null_checks(NULL), 0, "outside a task");
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_run(p, join_null_checks, NULL), 0, "inside a task");
    cr_assert_eq(atomic_load(&called), 0, "the other function was called");
    weft_pool_destroy(p);
}

/* ---- scopes ------------------------------------------------------------------------- */

static int spawn_checks(weft_scope *s, void *arg)
{
    (void)arg;
    unsigned char buf[128] = {0};
    int bad = 0;
    if (weft_spawn(NULL, never, NULL) != -EINVAL)
        bad |= 1;
    if (weft_spawn(s, NULL, NULL) != -EINVAL)
        bad |= 2;
    if (weft_spawn_copy(NULL, never, buf, 8) != -EINVAL)
        bad |= 4;
    if (weft_spawn_copy(s, NULL, buf, 8) != -EINVAL)
        bad |= 8;
    if (weft_spawn_copy(s, never, buf, 65) != -EINVAL)
        bad |= 16;
    if (weft_spawn_copy(s, never, buf, 128) != -EINVAL)
        bad |= 32;
    if (weft_spawn_copy(s, never, buf, SIZE_MAX) != -EINVAL)
        bad |= 64;
    if (weft_spawn_copy(s, never, NULL, 1) != -EINVAL)
        bad |= 128;
    if (weft_spawn_copy(s, never, NULL, 64) != -EINVAL)
        bad |= 256;
    if (weft_scope_cancelled(s)) /* bad input does not cancel the scope */
        bad |= 512;
    return bad;
}

static int scope_in_task(void *p)
{
    return weft_scope_run(NULL, spawn_checks, p);
}

Test(badinput, spawn_bad_args)
{
    weft_pool *p = mkpool(2);
    atomic_store(&called, 0);
    cr_assert_eq(weft_scope_run(p, spawn_checks, NULL), 0, "outside a task");
    cr_assert_eq(weft_run(p, scope_in_task, NULL), 0, "inside a task");
    cr_assert_eq(atomic_load(&called), 0);
    weft_pool_destroy(p);
}

static _Atomic(int) empty_ran;

static int empty_copy(void *p)
{
    (void)p;
    atomic_fetch_add(&empty_ran, 1);
    return 0;
}

static int spawn_edge_ok(weft_scope *s, void *arg)
{
    (void)arg;
    unsigned char buf[64] = {0};
    if (weft_spawn_copy(s, empty_copy, NULL, 0) != 0) /* nothing to copy: fine */
        return 1;
    if (weft_spawn_copy(s, empty_copy, buf, 0) != 0)
        return 2;
    if (weft_spawn_copy(s, empty_copy, buf, 64) != 0) /* the largest allowed */
        return 3;
    return 0;
}

Test(badinput, spawn_copy_edges_accepted)
{
    weft_pool *p = mkpool(2);
    atomic_store(&empty_ran, 0);
    cr_assert_eq(weft_scope_run(p, spawn_edge_ok, NULL), 0);
    cr_assert_eq(atomic_load(&empty_ran), 3);
    weft_pool_destroy(p);
}

Test(badinput, scope_null_body)
{
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_scope_run(p, NULL, NULL), -EINVAL);
    cr_assert_eq(weft_scope_run(NULL, NULL, NULL), -EINVAL);
    void *arg = (void *)&called; /* any non-NULL arg */
    cr_assert_eq(weft_scope_run(p, NULL, arg), -EINVAL);
    /* NULL scope: no-ops / false. */
    weft_scope_limit(NULL, 3);
    weft_scope_cancel(NULL, -1);
    weft_scope_cancel(NULL, 0);
    cr_assert(!weft_scope_cancelled(NULL));
    weft_pool_destroy(p);
}

/* ---- loops --------------------------------------------------------------------------- */

static void loop_checks(weft_pool *p)
{
    size_t out[4];
    size_t big_n = SIZE_MAX / 2 + 1;
    atomic_store(&called, 0);

    cr_assert_eq(weft_par_for(p, 10, 0, NULL, NULL), -EINVAL);
    cr_assert_eq(weft_par_for(p, 10, 3, NULL, NULL), -EINVAL);
    cr_assert_eq(weft_par_for(p, 0, 0, never_range, NULL), 0);
    cr_assert_eq(weft_par_for(p, 0, 5, never_range, NULL), 0);

    cr_assert_eq(weft_par_collect(p, 4, out, sizeof(out[0]), NULL, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(p, 4, out, 0, never_item, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(p, 4, NULL, sizeof(out[0]), never_item, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(p, big_n, out, 2, never_item, NULL), -EOVERFLOW);
    cr_assert_eq(weft_par_collect(p, SIZE_MAX, out, SIZE_MAX, never_item, NULL), -EOVERFLOW);
    cr_assert_eq(weft_par_collect(p, 0, out, sizeof(out[0]), never_item, NULL), 0);
    cr_assert_eq(weft_par_collect(p, 0, NULL, sizeof(out[0]), never_item, NULL), 0);

    cr_assert_eq(weft_par_stream(p, 4, out, sizeof(out[0]), NULL, NULL, never_sink, NULL, 0),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(p, 4, out, 0, never_item, NULL, never_sink, NULL, 0), -EINVAL);
    cr_assert_eq(weft_par_stream(p, 4, NULL, 8, never_item, NULL, never_sink, NULL, 0), -EINVAL);
    cr_assert_eq(weft_par_stream(p, 4, out, sizeof(out[0]), never_item, NULL, NULL, NULL, 0),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(p, 4, out, sizeof(out[0]), never_item, NULL, never_sink, NULL,
                                 2u),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(p, 4, out, sizeof(out[0]), never_item, NULL, never_sink, NULL,
                                 WEFT_ORDERED | 0x100u),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(p, big_n, out, 4, never_item, NULL, never_sink, NULL,
                                 WEFT_ORDERED),
                 -EOVERFLOW);
    cr_assert_eq(weft_par_stream(p, 0, out, sizeof(out[0]), never_item, NULL, never_sink, NULL,
                                 WEFT_ORDERED),
                 0);
    cr_assert_eq(weft_par_stream(p, 0, out, sizeof(out[0]), never_item, NULL, never_sink, NULL,
                                 0),
                 0);
    cr_assert_eq(atomic_load(&called), 0, "a callback of a failed or empty loop ran");

    /* And good input still works after all that. */
    size_t got = 0;
    cr_assert_eq(weft_par_collect(p, 4, out, sizeof(out[0]), ok_item, NULL), 0);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(out[i], i);
    cr_assert_eq(weft_par_stream(p, 4, out, sizeof(out[0]), ok_item, NULL, ok_sink, &got,
                                 WEFT_ORDERED),
                 0);
    cr_assert_eq(got, 4);
}

Test(badinput, loops)
{
    weft_pool *p = mkpool(2);
    loop_checks(p);
    loop_checks(NULL); /* the default pool */
    weft_pool_destroy(p);
}

static int loops_in_task(void *p)
{
    size_t out[2];
    atomic_store(&called, 0);
    int bad = 0;
    if (weft_par_for(NULL, 5, 0, NULL, NULL) != -EINVAL)
        bad |= 1;
    if (weft_par_collect(NULL, SIZE_MAX, out, 16, never_item, NULL) != -EOVERFLOW)
        bad |= 2;
    if (weft_par_stream(NULL, 2, out, 8, never_item, NULL, NULL, NULL, 0) != -EINVAL)
        bad |= 4;
    if (weft_par_for(p, 0, 0, never_range, NULL) != 0)
        bad |= 8;
    return bad;
}

Test(badinput, loops_inside_task)
{
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_run(p, loops_in_task, p), 0);
    cr_assert_eq(atomic_load(&called), 0);
    weft_pool_destroy(p);
}

/* ---- I/O -------------------------------------------------------------------------------- */

static int io_checks(void *p)
{
    (void)p;
    char buf[16];
    int bad = 0;
    if (weft_read(-1, buf, sizeof(buf), 0) != -EBADF)
        bad |= 1 << 0;
    if (weft_read(-1, buf, sizeof(buf), -1) != -EBADF)
        bad |= 1 << 1;
    if (weft_write(-1, buf, sizeof(buf), 0) != -EBADF)
        bad |= 1 << 2;
    if (weft_write(-1, buf, sizeof(buf), -1) != -EBADF)
        bad |= 1 << 3;
    if (weft_close(-1) != -EBADF)
        bad |= 1 << 4;
    if (weft_fsync(-1) != -EBADF)
        bad |= 1 << 5;
    if (weft_recv(-1, buf, sizeof(buf), 0) != -EBADF)
        bad |= 1 << 6;
    if (weft_send(-1, buf, sizeof(buf), 0) != -EBADF)
        bad |= 1 << 7;
    if (weft_accept(-1, NULL, NULL, 0) != -EBADF)
        bad |= 1 << 8;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, "/nonexistent-weft-socket");
    if (weft_connect(-1, (struct sockaddr *)&sa, sizeof(sa)) != -EBADF)
        bad |= 1 << 9;
    struct statx stx;
    if (weft_statx(-1, "relative/path", 0, STATX_BASIC_STATS, &stx) != -EBADF)
        bad |= 1 << 10;
    if (weft_open("/nonexistent-weft-dir/file", O_RDONLY, 0) != -ENOENT)
        bad |= 1 << 11;
    if (weft_statx(AT_FDCWD, "/nonexistent-weft-dir/file", 0, STATX_BASIC_STATS, &stx) !=
        -ENOENT)
        bad |= 1 << 12;
    void *data = (void *)1;
    size_t size = 7;
    if (weft_read_file("/nonexistent-weft-dir/file", &data, &size) != -ENOENT)
        bad |= 1 << 13;
    if (weft_read_file(NULL, &data, &size) != -EINVAL)
        bad |= 1 << 14;
    if (weft_read_file("/etc/hostname", NULL, &size) != -EINVAL)
        bad |= 1 << 15;
    if (weft_read_file("/etc/hostname", &data, NULL) != -EINVAL)
        bad |= 1 << 16;
    /* A closed descriptor is a bad one too. */
    int fd = weft_open("/dev/null", O_RDONLY, 0);
    if (fd < 0 || weft_close(fd) != 0)
        bad |= 1 << 17;
    else if (weft_read(fd, buf, sizeof(buf), 0) != -EBADF)
        bad |= 1 << 18;
    /* Reading a directory: the syscall's own error. */
    fd = weft_open("/", O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        bad |= 1 << 19;
    else {
        if (weft_read(fd, buf, sizeof(buf), -1) != -EISDIR)
            bad |= 1 << 20;
        weft_close(fd);
    }
    /* A NULL buffer: -EFAULT from the kernel, not a crash. */
    fd = weft_open("/proc/self/stat", O_RDONLY, 0);
    if (fd < 0)
        bad |= 1 << 21;
    else {
        if (weft_read(fd, NULL, 16, 0) != -EFAULT)
            bad |= 1 << 22;
        weft_close(fd);
    }
    /* recv on something that is not a socket. */
    fd = weft_open("/dev/null", O_RDONLY, 0);
    if (fd >= 0) {
        if (weft_recv(fd, buf, sizeof(buf), 0) != -ENOTSOCK)
            bad |= 1 << 23;
        weft_close(fd);
    }
    if (weft_sleep(0) != 0)
        bad |= 1 << 24;
    if (weft_yield() != 0)
        bad |= 1 << 25;
    return bad;
}

Test(badinput, io_outside_task)
{
    int bad = io_checks(NULL);
    cr_assert_eq(bad, 0, "failed checks (bits): %#x", bad);
}

Test(badinput, io_inside_task)
{
    weft_pool *p = mkpool(2);
    int bad = weft_run(p, io_checks, NULL);
    cr_assert_eq(bad, 0, "failed checks (bits): %#x", bad);
    weft_pool_destroy(p);
}

Test(badinput, io_inside_task_blocking_backend)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = 2, .flags = WEFT_POOL_NO_URING};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    int bad = weft_run(p, io_checks, NULL);
    cr_assert_eq(bad, 0, "failed checks (bits): %#x", bad);
    weft_pool_destroy(p);
}
