/* SPDX-License-Identifier: MIT */
/* Fork-join: weft_join against closed forms, on 1, 2, 4 and 8 workers. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

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

/*
 * Regression: a scope's wait inside the a side of a join must not run the join's own
 * b job (it sits below the scope in the same deque). If it did, a frame spawned into
 * an outer scope could land in b's emptied slot, and the join would then run b a
 * second time and drop the frame, so the outer scope never finished. One worker, so
 * the order of events is fixed: the inner scope's only task blocks until an outside
 * thread has queued a second task through the injector; that task spawns into the
 * outer scope.
 */
struct reg {
    weft_scope *outer;
    weft_scope *inner;
    _Atomic(int) b_runs, f_runs, queued;
};

static int reg_f(void *p)
{
    struct reg *r = p;
    atomic_fetch_add(&r->f_runs, 1);
    return 0;
}

static int reg_s(void *p)
{
    struct reg *r = p;
    return weft_spawn(r->outer, reg_f, r); /* lands on this worker's deque */
}

static void *reg_outside(void *p)
{
    struct reg *r = p;
    int err = weft_spawn(r->inner, reg_s, r); /* from outside: the injector */
    atomic_store(&r->queued, err ? -1 : 1);
    return NULL;
}

static int reg_gate(void *p)
{
    struct reg *r = p;
    while (atomic_load(&r->queued) == 0)
        sched_yield();
    return 0;
}

static int reg_inner_body(weft_scope *s, void *p)
{
    struct reg *r = p;
    r->inner = s;
    pthread_t th;
    if (pthread_create(&th, NULL, reg_outside, r) != 0)
        return -1;
    pthread_detach(th);
    return weft_spawn(s, reg_gate, r);
}

static int reg_a(void *p)
{
    return weft_scope_run(NULL, reg_inner_body, p);
}

static int reg_b(void *p)
{
    struct reg *r = p;
    atomic_fetch_add(&r->b_runs, 1);
    return 0;
}

static int reg_mid(void *p)
{
    return weft_join(reg_a, p, reg_b, p);
}

static int reg_nothing(void *p)
{
    (void)p;
    return 0;
}

/* A second join below the one under test, so that popping the upper job does not
 * empty the deque (an owner's pop of the last item moves top and hides the bug). */
static int reg_outer_body(weft_scope *s, void *p)
{
    struct reg *r = p;
    r->outer = s;
    return weft_join(reg_mid, r, reg_nothing, r);
}

static int reg_main(void *p)
{
    return weft_scope_run(NULL, reg_outer_body, p);
}

Test(join, scope_wait_does_not_run_the_joins_own_job, .timeout = 30)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = 1};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    for (int k = 0; k < SCALED(200); k++) {
        struct reg r;
        memset(&r, 0, sizeof(r));
        cr_assert_eq(weft_run(pool, reg_main, &r), 0);
        cr_assert_eq(atomic_load(&r.queued), 1);
        cr_assert_eq(atomic_load(&r.b_runs), 1, "b ran %d times", atomic_load(&r.b_runs));
        cr_assert_eq(atomic_load(&r.f_runs), 1);
    }
    weft_pool_destroy(pool);
}
