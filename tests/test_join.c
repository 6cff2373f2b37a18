/* SPDX-License-Identifier: MIT */
/* Fork-join: weft_join against closed forms, on 1, 2, 4 and 8 workers. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>

#include "weft.h"

struct fib {
    int n;
    long r;
};

static int fib_task(void *p)
{
    struct fib *f = p;
    if (f->n < 2) {
        f->r = f->n;
        return 0;
    }
    struct fib a = {f->n - 1, 0}, b = {f->n - 2, 0};
    int err = weft_join(fib_task, &a, fib_task, &b);
    f->r = a.r + b.r;
    return err;
}

static long fib_closed(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

static void fib_on(unsigned threads)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    cr_assert_eq(weft_pool_threads(pool), threads);
    int top = 27;
    for (int n = 0; n <= top; n += (n < 20 ? 1 : 7)) {
        struct fib f = {n, -1};
        cr_assert_eq(weft_run(pool, fib_task, &f), 0);
        cr_assert_eq(f.r, fib_closed(n), "fib(%d) on %u workers", n, threads);
    }
    weft_pool_destroy(pool);
}

Test(join, fib_1_worker) { fib_on(1); }
Test(join, fib_2_workers) { fib_on(2); }
Test(join, fib_4_workers) { fib_on(4); }
Test(join, fib_8_workers) { fib_on(8); }

#include <pthread.h>
#include <string.h>

static int get_name(void *arg)
{
    return pthread_getname_np(pthread_self(), arg, 16);
}

/* Workers carry their name (weft-N) for top -H, gdb and perf. */
Test(join, workers_are_named)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    char name[16] = "";
    cr_assert_eq(weft_run(pool, get_name, name), 0);
    cr_assert(strncmp(name, "weft-", 5) == 0, "worker name '%s'", name);
    weft_pool_destroy(pool);
}

/* weft_join from outside any worker runs both sides (on the default pool). */
static int set_one(void *p)
{
    *(int *)p = 1;
    return 0;
}

static int fail_7(void *p)
{
    *(int *)p = 1;
    return 7;
}

Test(join, outside_worker_and_errors)
{
    int x = 0, y = 0;
    cr_assert_eq(weft_join(set_one, &x, set_one, &y), 0);
    cr_assert(x == 1 && y == 1);
    x = y = 0;
    cr_assert_eq(weft_join(fail_7, &x, set_one, &y), 7); /* a's error, b still ran */
    cr_assert(x == 1 && y == 1);
    x = y = 0;
    cr_assert_eq(weft_join(set_one, &x, fail_7, &y), 7); /* else b's */
    cr_assert(x == 1 && y == 1);
}
