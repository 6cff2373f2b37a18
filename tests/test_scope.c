/* SPDX-License-Identifier: MIT */
/*
 * Scoped spawn: every spawn runs exactly once (from outside threads and from tasks,
 * nested), the first error wins, cancellation stops tasks that have not started,
 * weft_scope_limit is never exceeded, weft_spawn_copy copies, and scopes work across
 * pools.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weft.h"
#include "checks.h"

/* Is the calling thread a worker of pool? weft_run from one of its workers calls fn
 * in place; from any other thread fn runs on a worker. */
static int probe_fn(void *p)
{
    *(pthread_t *)p = pthread_self();
    return 0;
}

static bool on_pool(weft_pool *pool)
{
    pthread_t t;
    return weft_run(pool, probe_fn, &t) == 0 && pthread_equal(t, pthread_self());
}

static void wait_flag(_Atomic(int) *f)
{
    /* Acquire: pairs with the release store that opens the gate. */
    while (!atomic_load_explicit(f, memory_order_acquire))
        sched_yield();
}

/* ---- many spawns ---------------------------------------------------------------- */

struct many {
    size_t n;
    _Atomic(unsigned char) *hits;
    _Atomic(size_t) total;
};

struct many_arg {
    struct many *m;
    size_t i;
};

static int many_task(void *p)
{
    struct many *m = ((struct many_arg *)p)->m;
    size_t i = ((struct many_arg *)p)->i;
    TCHECK(i < m->n);
    if (i < m->n)
        atomic_fetch_add_explicit(&m->hits[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->total, 1, memory_order_relaxed);
    return 0;
}

static int many_body(weft_scope *s, void *arg)
{
    struct many *m = arg;
    for (size_t i = 0; i < m->n; i++) {
        struct many_arg a = {m, i};
        int r = weft_spawn_copy(s, many_task, &a, sizeof(a));
        TCHECK(r == 0);
        if (r)
            return r;
    }
    return 0;
}

static int many_in_task(void *arg)
{
    return weft_scope_run(NULL, many_body, arg);
}

static void many_on(unsigned threads, bool from_task)
{
    weft_pool *pool = mkpool(threads);
    struct many m = {.n = SCALED(100000)};
    m.hits = calloc(m.n, 1);
    cr_assert_not_null(m.hits);
    int r = from_task ? weft_run(pool, many_in_task, &m) : weft_scope_run(pool, many_body, &m);
    cr_assert_eq(r, 0);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&m.total), m.n);
    for (size_t i = 0; i < m.n; i++)
        if (atomic_load_explicit(&m.hits[i], memory_order_relaxed) != 1)
            cr_assert(0, "task %zu ran %u times", i, (unsigned)m.hits[i]);
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert_eq(st.spawns, m.n, "spawn counter");
    free((void *)m.hits);
    weft_pool_destroy(pool);
}

Test(scope, many_spawns_from_outside_thread) { many_on(2, false); }
Test(scope, many_spawns_from_task) { many_on(2, true); }
Test(scope, many_spawns_from_task_4_workers) { many_on(4, true); }
Test(scope, many_spawns_1_worker) { many_on(1, true); }

/* ---- nested spawns: tasks spawn into the same scope, several levels ------------- */

#define FANOUT 4
#define DEPTH  7

struct nest_ctx {
    _Atomic(size_t) per_level[DEPTH + 1];
    _Atomic(uint64_t) idsum;
};

struct nest_arg {
    weft_scope *s;
    struct nest_ctx *c;
    unsigned depth;
    uint64_t id;
};

static int nest_task(void *p)
{
    struct nest_arg a = *(struct nest_arg *)p;
    TCHECK(((uintptr_t)p & 15) == 0);
    atomic_fetch_add_explicit(&a.c->per_level[a.depth], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a.c->idsum, a.id, memory_order_relaxed);
    if (a.depth == DEPTH)
        return 0;
    for (unsigned k = 0; k < FANOUT; k++) {
        struct nest_arg ch = {a.s, a.c, a.depth + 1, a.id * FANOUT + k + 1};
        TCHECK(weft_spawn_copy(a.s, nest_task, &ch, sizeof(ch)) == 0);
    }
    return 0;
}

static int nest_body(weft_scope *s, void *arg)
{
    struct nest_arg root = {s, arg, 0, 0};
    return weft_spawn_copy(s, nest_task, &root, sizeof(root));
}

static int nest_in_task(void *arg)
{
    return weft_scope_run(NULL, nest_body, arg);
}

static void nest_on(unsigned threads, bool from_task)
{
    weft_pool *pool = mkpool(threads);
    for (int rep = 0; rep < 3; rep++) {
        struct nest_ctx c;
        memset(&c, 0, sizeof(c));
        int r = from_task ? weft_run(pool, nest_in_task, &c) : weft_scope_run(pool, nest_body, &c);
        cr_assert_eq(r, 0);
        ASSERT_NO_BAD();
        size_t want = 1;
        uint64_t nodes = 0;
        for (unsigned d = 0; d <= DEPTH; d++) {
            cr_assert_eq(atomic_load(&c.per_level[d]), want, "level %u", d);
            nodes += want;
            want *= FANOUT;
        }
        /* Node ids are 0 .. nodes-1 in breadth-first numbering. */
        cr_assert_eq(atomic_load(&c.idsum), nodes * (nodes - 1) / 2);
    }
    weft_pool_destroy(pool);
}

Test(scope, nested_spawns_outside_body) { nest_on(2, false); }
Test(scope, nested_spawns_task_body) { nest_on(4, true); }
Test(scope, nested_spawns_1_worker) { nest_on(1, true); }

/* ---- the first error is the one returned ----------------------------------------- */

struct err_ctx {
    size_t n, fail_at;
    _Atomic(size_t) started, finished;
};

struct err_arg {
    struct err_ctx *c;
    size_t i;
};

static int err_task(void *p)
{
    struct err_ctx *c = ((struct err_arg *)p)->c;
    size_t i = ((struct err_arg *)p)->i;
    atomic_fetch_add_explicit(&c->started, 1, memory_order_relaxed);
    for (volatile int k = 0; k < 200; k++)
        ;
    atomic_fetch_add_explicit(&c->finished, 1, memory_order_relaxed);
    return i == c->fail_at ? -42 : 0;
}

static int err_body(weft_scope *s, void *arg)
{
    struct err_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        struct err_arg a = {c, i};
        int r = weft_spawn_copy(s, err_task, &a, sizeof(a));
        if (r == -ECANCELED)
            break; /* the failure already happened */
        TCHECK(r == 0);
    }
    return 0;
}

/* Exactly one task fails: its code is returned, and nothing is still running then. */
Test(scope, one_failing_task_error_returned)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 20; rep++) {
        struct err_ctx c = {.n = 2000, .fail_at = (size_t)rep * 97 % 2000};
        cr_assert_eq(weft_scope_run(pool, err_body, &c), -42);
        ASSERT_NO_BAD();
        size_t st = atomic_load(&c.started), fin = atomic_load(&c.finished);
        cr_assert_eq(st, fin, "scope returned with tasks still running");
        cr_assert_geq(st, 1);
        cr_assert_leq(st, c.n);
    }
    weft_pool_destroy(pool);
}

/* Two tasks fail in a forced order: B starts, A fails (-5), and only after the scope
 * is cancelled does B fail (-7). The first error (-5) must be returned. */
struct order_ctx {
    _Atomic(int) b_started;
    weft_scope *s;
};

static int order_a(void *p)
{
    struct order_ctx *c = p;
    wait_flag(&c->b_started);
    return -5;
}

static int order_b(void *p)
{
    struct order_ctx *c = p;
    atomic_store_explicit(&c->b_started, 1, memory_order_release); /* pairs with wait_flag */
    while (!weft_scope_cancelled(c->s))
        sched_yield();
    return -7;
}

static int order_body(weft_scope *s, void *arg)
{
    struct order_ctx *c = arg;
    c->s = s;
    TCHECK(weft_spawn(s, order_a, c) == 0);
    TCHECK(weft_spawn(s, order_b, c) == 0);
    return 0;
}

static int order_in_task(void *arg)
{
    return weft_scope_run(NULL, order_body, arg);
}

Test(scope, first_of_two_errors_wins, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 50; rep++) {
        struct order_ctx c = {0};
        int r = (rep & 1) ? weft_run(pool, order_in_task, &c) : weft_scope_run(pool, order_body, &c);
        cr_assert_eq(r, -5, "rep %d", rep);
        ASSERT_NO_BAD();
    }
    weft_pool_destroy(pool);
}

/* A task's error beats a later error of the body. */
static int late_fail_task(void *p)
{
    (void)p;
    return -11;
}

static int body_fails_late(weft_scope *s, void *arg)
{
    (void)arg;
    TCHECK(weft_spawn(s, late_fail_task, NULL) == 0);
    while (!weft_scope_cancelled(s))
        sched_yield();
    /* Cancelled by the failure: new spawns are refused and their fn never runs. */
    TCHECK(weft_spawn(s, late_fail_task, NULL) == -ECANCELED);
    return -22;
}

/* The body's error beats tasks that fail only after seeing it. */
static int fails_after_cancel(void *p)
{
    weft_scope *s = *(weft_scope **)p;
    while (!weft_scope_cancelled(s))
        sched_yield();
    return -44;
}

static int body_fails_first(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++)
        TCHECK(weft_spawn_copy(s, fails_after_cancel, &s, sizeof(s)) == 0);
    return -33;
}

Test(scope, body_and_task_errors, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 20; rep++) {
        cr_assert_eq(weft_scope_run(pool, body_fails_late, NULL), -11);
        cr_assert_eq(weft_scope_run(pool, body_fails_first, NULL), -33);
        ASSERT_NO_BAD();
    }
    weft_pool_destroy(pool);
}

/* weft_scope_cancel's error, its -ECANCELED default, and "first error wins". */
static int cancel_body(weft_scope *s, void *arg)
{
    int mode = *(int *)arg;
    TCHECK(!weft_scope_cancelled(s));
    switch (mode) {
    case 0:
        weft_scope_cancel(s, -99);
        break;
    case 1:
        weft_scope_cancel(s, 0);
        break;
    case 2:
        weft_scope_cancel(s, -1);
        weft_scope_cancel(s, -2);
        return -3;
    }
    TCHECK(weft_scope_cancelled(s));
    return 0;
}

Test(scope, cancel_error_codes)
{
    weft_pool *pool = mkpool(2);
    int mode = 0;
    cr_assert_eq(weft_scope_run(pool, cancel_body, &mode), -99);
    mode = 1;
    cr_assert_eq(weft_scope_run(pool, cancel_body, &mode), -ECANCELED);
    mode = 2;
    cr_assert_eq(weft_scope_run(pool, cancel_body, &mode), -1);
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
}

/* ---- cancellation stops tasks that have not started ------------------------------ */

struct gate_ctx {
    _Atomic(int) open, started;
    _Atomic(int) ran;
    int fail_code;
    int n;
    int spawned;
};

static int gated_task(void *p)
{
    struct gate_ctx *c = p;
    atomic_fetch_add_explicit(&c->started, 1, memory_order_release); /* pairs with body */
    wait_flag(&c->open);
    atomic_fetch_add_explicit(&c->ran, 1, memory_order_relaxed);
    return c->fail_code;
}

static int count_task(void *p)
{
    struct gate_ctx *c = p;
    atomic_fetch_add_explicit(&c->ran, 1, memory_order_relaxed);
    return 0;
}

static int never_task(void *p)
{
    (void)p;
    TCHECK(!"a refused spawn ran");
    return 0;
}

static int cancel_gate_body(weft_scope *s, void *arg)
{
    struct gate_ctx *c = arg;
    for (int i = 0; i < c->n; i++) {
        TCHECK(weft_spawn(s, gated_task, c) == 0);
        c->spawned++;
    }
    weft_scope_cancel(s, 0);
    TCHECK(weft_scope_cancelled(s));
    TCHECK(weft_spawn(s, never_task, c) == -ECANCELED);
    int dummy = 0;
    TCHECK(weft_spawn_copy(s, never_task, &dummy, sizeof(dummy)) == -ECANCELED);
    atomic_store_explicit(&c->open, 1, memory_order_release); /* pairs with wait_flag */
    return 0;
}

/* One worker: at most the task that was running when the scope was cancelled (it is
 * stuck at the gate) completes; all the others had not started and must not run. */
Test(scope, cancel_stops_unstarted_tasks, .timeout = 120)
{
    weft_pool *pool = mkpool(1);
    for (int rep = 0; rep < 10; rep++) {
        struct gate_ctx c = {.n = 1000};
        cr_assert_eq(weft_scope_run(pool, cancel_gate_body, &c), -ECANCELED);
        ASSERT_NO_BAD();
        int ran = atomic_load(&c.ran);
        cr_assert_eq(c.spawned, c.n);
        cr_assert_lt(ran, c.n);
        cr_assert_leq(ran, 1, "%d tasks ran after the cancel", ran);
        cr_assert_eq(atomic_load(&c.started), ran);
    }
    weft_pool_destroy(pool);
}

static int fail_gate_body(weft_scope *s, void *arg)
{
    struct gate_ctx *c = arg;
    TCHECK(weft_spawn(s, gated_task, c) == 0);
    /* Acquire: pairs with the release add in gated_task. */
    while (atomic_load_explicit(&c->started, memory_order_acquire) == 0)
        sched_yield();
    /* The only worker is stuck in the gated task: these cannot start before it ends. */
    for (int i = 0; i < c->n; i++) {
        TCHECK(weft_spawn(s, count_task, c) == 0);
        c->spawned++;
    }
    atomic_store_explicit(&c->open, 1, memory_order_release); /* pairs with wait_flag */
    while (!weft_scope_cancelled(s))
        sched_yield();
    TCHECK(weft_spawn(s, never_task, c) == -ECANCELED);
    return 0;
}

/* A failing task cancels the scope: tasks queued behind it never run. */
Test(scope, failure_stops_unstarted_tasks, .timeout = 120)
{
    weft_pool *pool = mkpool(1);
    for (int rep = 0; rep < 10; rep++) {
        struct gate_ctx c = {.n = 500, .fail_code = -9};
        cr_assert_eq(weft_scope_run(pool, fail_gate_body, &c), -9);
        ASSERT_NO_BAD();
        cr_assert_eq(c.spawned, c.n);
        /* Only the gated task itself ran. */
        cr_assert_eq(atomic_load(&c.ran), 1);
    }
    weft_pool_destroy(pool);
}

/* ---- weft_scope_limit ----------------------------------------------------------- */

struct lim_ctx {
    weft_scope *s;
    unsigned k;
    size_t n;
    bool nested;
    _Atomic(int) inflight, maxseen, rendezvous;
    _Atomic(size_t) ran;
};

struct lim_arg {
    struct lim_ctx *c;
    unsigned depth;
};

static int lim_task(void *p)
{
    struct lim_ctx *c = ((struct lim_arg *)p)->c;
    unsigned depth = ((struct lim_arg *)p)->depth;
    int now = atomic_fetch_add_explicit(&c->inflight, 1, memory_order_acq_rel) + 1;
    int m = atomic_load_explicit(&c->maxseen, memory_order_relaxed);
    while (now > m &&
           !atomic_compare_exchange_weak_explicit(&c->maxseen, &m, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    /* The first k tasks wait for each other: k tasks in flight at once must be
     * possible (k < workers), and the limit must still hold while they wait. */
    if (!atomic_load_explicit(&c->rendezvous, memory_order_acquire)) {
        if (now >= (int)c->k)
            atomic_store_explicit(&c->rendezvous, 1, memory_order_release);
        else
            wait_flag(&c->rendezvous);
    }
    uint64_t x = (uintptr_t)p * 0x9E3779B97F4A7C15ull;
    for (volatile unsigned k = 0; k < (unsigned)(x >> 55); k++)
        ;
    if ((x >> 40) % 8 == 0)
        sched_yield();
    if (c->nested && depth < 3) {
        for (int k = 0; k < 2; k++) {
            struct lim_arg a = {c, depth + 1};
            TCHECK(weft_spawn_copy(c->s, lim_task, &a, sizeof(a)) == 0);
        }
    }
    atomic_fetch_sub_explicit(&c->inflight, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&c->ran, 1, memory_order_relaxed);
    return 0;
}

static int lim_body(weft_scope *s, void *arg)
{
    struct lim_ctx *c = arg;
    c->s = s;
    weft_scope_limit(s, c->k);
    for (size_t i = 0; i < c->n; i++) {
        struct lim_arg a = {c, 0};
        TCHECK(weft_spawn_copy(s, lim_task, &a, sizeof(a)) == 0);
    }
    return 0;
}

static int lim_in_task(void *arg)
{
    return weft_scope_run(NULL, lim_body, arg);
}

static void limit_on(unsigned k, bool from_task, bool nested)
{
    weft_pool *pool = mkpool(4);
    for (int rep = 0; rep < 3; rep++) {
        struct lim_ctx c = {.k = k, .n = SCALED(3000), .nested = nested};
        int r = from_task ? weft_run(pool, lim_in_task, &c) : weft_scope_run(pool, lim_body, &c);
        cr_assert_eq(r, 0);
        ASSERT_NO_BAD();
        size_t want = nested ? c.n * 15 : c.n; /* 1 + 2 + 4 + 8 per spawned root */
        cr_assert_eq(atomic_load(&c.ran), want);
        cr_assert_eq(atomic_load(&c.inflight), 0);
        int m = atomic_load(&c.maxseen);
        cr_assert_leq(m, (int)k, "limit %u exceeded: %d in flight", k, m);
        /* The rendezvous was reached, so k ran at once. */
        cr_assert_eq(m, (int)k, "limit %u: only %d in flight", k, m);
    }
    weft_pool_destroy(pool);
}

Test(scope, limit_1, .timeout = 120) { limit_on(1, false, false); }
Test(scope, limit_2, .timeout = 120) { limit_on(2, false, false); }
Test(scope, limit_3, .timeout = 120) { limit_on(3, false, false); }
Test(scope, limit_2_body_in_task, .timeout = 120) { limit_on(2, true, false); }
Test(scope, limit_3_nested_spawns, .timeout = 120) { limit_on(3, true, true); }
Test(scope, limit_1_nested_spawns, .timeout = 120) { limit_on(1, false, true); }

/* ---- weft_spawn_copy arguments outlive the caller's frame ------------------------- */

struct copy_ctx {
    _Atomic(int) open;
    _Atomic(int) ran;
    _Atomic(int) ran_empty;
};

static struct copy_ctx *copy_c; /* one test at a time */

static unsigned char pattern(unsigned size, unsigned i, unsigned k)
{
    return (unsigned char)(size * 131u + i * 31u + k * 7u + 1u);
}

/* Payload: b[0] = size, b[1] = index, b[2..size) = pattern. */
static int copy_task(void *p)
{
    wait_flag(&copy_c->open);
    const unsigned char *b = p;
    TCHECK(((uintptr_t)p & 15) == 0);
    unsigned size = b[0], i = b[1];
    TCHECK(size >= 2 && size <= 64);
    for (unsigned k = 2; k < size && k < 64; k++)
        TCHECK(b[k] == pattern(size, i, k));
    atomic_fetch_add_explicit(&copy_c->ran, 1, memory_order_relaxed);
    return 0;
}

static int copy_task1(void *p)
{
    wait_flag(&copy_c->open);
    TCHECK(((uintptr_t)p & 15) == 0);
    TCHECK(*(const unsigned char *)p == 0xA5);
    atomic_fetch_add_explicit(&copy_c->ran, 1, memory_order_relaxed);
    return 0;
}

static int copy_task0(void *p)
{
    (void)p;
    atomic_fetch_add_explicit(&copy_c->ran_empty, 1, memory_order_relaxed);
    return 0;
}

/* The arguments live in this function's frame, which is gone when the task runs. */
static __attribute__((noinline)) int spawn_from_helper(weft_scope *s, unsigned size, unsigned i)
{
    unsigned char b[64];
    memset(b, 0xEE, sizeof(b));
    if (size == 0)
        return weft_spawn_copy(s, copy_task0, NULL, 0);
    if (size == 1) {
        b[0] = 0xA5;
        return weft_spawn_copy(s, copy_task1, b, 1);
    }
    b[0] = (unsigned char)size;
    b[1] = (unsigned char)i;
    for (unsigned k = 2; k < size; k++)
        b[k] = pattern(size, i, k);
    int r = weft_spawn_copy(s, copy_task, b, size);
    memset(b, 0x11, sizeof(b)); /* the caller's copy changes right after the spawn */
    __asm__ __volatile__("" : : "r"(b) : "memory");
    return r;
}

static __attribute__((noinline)) void scribble_stack(void)
{
    volatile unsigned char junk[32768];
    for (size_t k = 0; k < sizeof(junk); k++)
        junk[k] = (unsigned char)(0xCC ^ k);
}

#define COPY_ROUNDS 4

static int copy_body(weft_scope *s, void *arg)
{
    (void)arg;
    for (unsigned round = 0; round < COPY_ROUNDS; round++)
        for (unsigned size = 0; size <= 64; size++)
            TCHECK(spawn_from_helper(s, size, (size * 7 + round) & 0xff) == 0);
    scribble_stack();
    atomic_store_explicit(&copy_c->open, 1, memory_order_release); /* pairs with wait_flag */
    return 0;
}

static int copy_in_task(void *arg)
{
    return weft_scope_run(NULL, copy_body, arg);
}

static void copy_on(bool from_task)
{
    weft_pool *pool = mkpool(2);
    struct copy_ctx c = {0};
    copy_c = &c;
    int r = from_task ? weft_run(pool, copy_in_task, NULL) : weft_scope_run(pool, copy_body, NULL);
    cr_assert_eq(r, 0);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&c.ran), COPY_ROUNDS * 64);
    cr_assert_eq(atomic_load(&c.ran_empty), COPY_ROUNDS);
    copy_c = NULL;
    weft_pool_destroy(pool);
}

Test(scope, spawn_copy_outlives_frame_outside, .timeout = 120) { copy_on(false); }
Test(scope, spawn_copy_outlives_frame_in_task, .timeout = 120) { copy_on(true); }

/* ---- scopes from several outside threads at once -------------------------------- */

struct outside_arg {
    weft_pool *pool;
    int rounds;
    _Atomic(size_t) *total;
};

static int add_task(void *p)
{
    atomic_fetch_add_explicit((_Atomic(size_t) *)p, 1, memory_order_relaxed);
    return 0;
}

static int add_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 100; i++)
        TCHECK(weft_spawn(s, add_task, arg) == 0);
    return 0;
}

static void *outside_main(void *p)
{
    struct outside_arg *a = p;
    for (int r = 0; r < a->rounds; r++) {
        _Atomic(size_t) local = 0;
        TCHECK(weft_scope_run(a->pool, add_body, &local) == 0);
        TCHECK(atomic_load(&local) == 100);
        atomic_fetch_add(a->total, atomic_load(&local));
    }
    return NULL;
}

Test(scope, scopes_from_many_outside_threads, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    _Atomic(size_t) total = 0;
    pthread_t th[4];
    struct outside_arg a = {pool, SCALED(500), &total};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, outside_main, &a), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&total), (size_t)4 * a.rounds * 100);
    weft_pool_destroy(pool);
}

/* ---- a scope of pool B run from a worker of pool A ------------------------------ */

struct xpool {
    weft_pool *a, *b;
    _Atomic(int) ran, leaf;
};

static int leaf_on_a(void *p)
{
    struct xpool *x = p;
    TCHECK(on_pool(x->a));
    atomic_fetch_add(&x->leaf, 1);
    return 0;
}

struct xarg {
    struct xpool *x;
    int i;
};

static int xtask(void *p)
{
    struct xpool *x = ((struct xarg *)p)->x;
    int i = ((struct xarg *)p)->i;
    TCHECK(on_pool(x->b));
    if (i < 8) {
        /* Not on A: a run on A goes to A's other worker and comes back. */
        TCHECK(!on_pool(x->a));
        TCHECK(weft_run(x->a, leaf_on_a, x) == 0);
    }
    atomic_fetch_add(&x->ran, 1);
    return 0;
}

static int xbody(weft_scope *s, void *arg)
{
    struct xpool *x = arg;
    TCHECK(on_pool(x->a)); /* the body runs on the calling thread: A's worker */
    for (int i = 0; i < 1000; i++) {
        struct xarg a = {x, i};
        TCHECK(weft_spawn_copy(s, xtask, &a, sizeof(a)) == 0);
    }
    return 0;
}

static int xrun(void *arg)
{
    struct xpool *x = arg;
    return weft_scope_run(x->b, xbody, x);
}

static void xpool_on(unsigned ta, unsigned tb)
{
    struct xpool x = {0};
    x.a = mkpool(ta);
    x.b = mkpool(tb);
    for (int rep = 0; rep < 5; rep++) {
        atomic_store(&x.ran, 0);
        atomic_store(&x.leaf, 0);
        cr_assert_eq(weft_run(x.a, xrun, &x), 0);
        ASSERT_NO_BAD();
        cr_assert_eq(atomic_load(&x.ran), 1000);
        cr_assert_eq(atomic_load(&x.leaf), 8);
    }
    weft_pool_destroy(x.a);
    weft_pool_destroy(x.b);
}

Test(scope, scope_on_other_pool_from_worker, .timeout = 120) { xpool_on(2, 2); }
Test(scope, scope_on_other_pool_from_worker_b1, .timeout = 120) { xpool_on(2, 1); }

/* ---- NULL pool: the caller's worker's pool, or the default pool -------------- */

struct nullpool {
    weft_pool *expect;
    _Atomic(int) ran;
};

static int np_task(void *p)
{
    struct nullpool *n = p;
    TCHECK(on_pool(n->expect));
    atomic_fetch_add(&n->ran, 1);
    return 0;
}

static int np_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 50; i++)
        TCHECK(weft_spawn(s, np_task, arg) == 0);
    return 0;
}

static int np_in_task(void *arg)
{
    return weft_scope_run(NULL, np_body, arg);
}

Test(scope, null_pool_means_callers_pool)
{
    struct nullpool n = {0};
    n.expect = weft_default_pool();
    cr_assert_not_null(n.expect);
    cr_assert_eq(weft_scope_run(NULL, np_body, &n), 0);
    cr_assert_eq(atomic_load(&n.ran), 50);
    weft_pool *p = mkpool(2);
    n.expect = p;
    atomic_store(&n.ran, 0);
    cr_assert_eq(weft_run(p, np_in_task, &n), 0);
    cr_assert_eq(atomic_load(&n.ran), 50);
    ASSERT_NO_BAD();
    weft_pool_destroy(p);
}

/* ---- the end of a body (scope.c's drain_own) ---------------------------------- */

/* The end of a scope's body runs the jobs the body left on its worker's deque back
 * to back, counting its own frames locally, and the body's spawns take counts from
 * a reserve. These check the cases where that could lose or double a count: a body
 * that spawns into its outer scope too, tasks that yield in the middle of the drain,
 * a body that yields (and may move to another worker) between spawns, and a failure
 * in the drain. */

struct endc {
    int (*body)(weft_scope *s, void *e); /* endc_task's scope body */
    weft_scope *outer;
    int n;
    long spin_ns; /* endc_yielder: tasks of the first half spin this long */
    _Atomic(int) inner_done, outer_done, moved;
    _Atomic(unsigned char) *hits;
};

static int endc_inner(void *p)
{
    struct endc *e = p;
    atomic_fetch_add(&e->inner_done, 1);
    return 0;
}

static int endc_outer(void *p)
{
    struct endc *e = p;
    atomic_fetch_add(&e->outer_done, 1);
    return 0;
}

static int endc_mixed_body(weft_scope *s, void *p)
{
    struct endc *e = p;
    for (int i = 0; i < e->n; i++) {
        TCHECK(weft_spawn(s, endc_inner, e) == 0);
        TCHECK(weft_spawn(e->outer, endc_outer, e) == 0);
    }
    return 0;
}

/* A task that runs a scope with e->body: every task of that scope finished before
 * weft_scope_run returned. */
static int endc_task(void *p)
{
    struct endc *e = p;
    TCHECK(weft_scope_run(NULL, e->body, e) == 0);
    VCHECK(atomic_load(&e->inner_done), e->n);
    return 0;
}

static int endc_outer_body(weft_scope *s, void *p)
{
    struct endc *e = p;
    e->outer = s;
    return weft_spawn(s, endc_task, e);
}

static void body_spawns_into_outer_on(unsigned workers)
{
    weft_pool *pool = mkpool(workers);
    for (int round = 0; round < 50; round++) {
        struct endc e = {.body = endc_mixed_body, .n = 200};
        cr_assert_eq(weft_scope_run(pool, endc_outer_body, &e), 0);
        cr_assert_eq(atomic_load(&e.inner_done), e.n);
        cr_assert_eq(atomic_load(&e.outer_done), e.n);
    }
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
}

Test(scope, body_spawns_into_outer_1_worker) { body_spawns_into_outer_on(1); }
Test(scope, body_spawns_into_outer_2_workers) { body_spawns_into_outer_on(2); }

struct endc_arg {
    struct endc *e;
    int i;
};

/* Task a's index is done: each index exactly once. */
static int endc_mark(const struct endc_arg *a)
{
    VCHECK(atomic_fetch_add(&a->e->hits[a->i], 1), 0);
    atomic_fetch_add(&a->e->inner_done, 1);
    return 0;
}

/* Yields twice, then marks its index: each index exactly once. */
static int endc_yielder(void *p)
{
    const struct endc_arg *a = p;
    if (a->i < a->e->n / 2 && a->e->spin_ns) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do
            clock_gettime(CLOCK_MONOTONIC, &t);
        while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < a->e->spin_ns);
    }
    TCHECK(weft_yield() == 0);
    TCHECK(weft_yield() == 0);
    return endc_mark(a);
}

/* Spawns half, yields (on 2 workers it may come back on the other), spawns the rest. */
static int endc_yield_body(weft_scope *s, void *p)
{
    struct endc *e = p;
    for (int i = 0; i < e->n; i++) {
        if (i == e->n / 2) {
            int before = weft_worker_index();
            for (int k = 0; k < 3; k++)
                TCHECK(weft_yield() == 0);
            if (weft_worker_index() != before)
                atomic_fetch_add(&e->moved, 1);
        }
        struct endc_arg a = {e, i};
        TCHECK(weft_spawn_copy(s, endc_yielder, &a, sizeof(a)) == 0);
    }
    return 0;
}

struct endc_many {
    struct endc e[8];
};

/* Several such scopes at once, from tasks of one outer scope. */
static int endc_many_body(weft_scope *s, void *p)
{
    struct endc_many *m = p;
    for (int k = 0; k < 8; k++)
        TCHECK(weft_spawn(s, endc_task, &m->e[k]) == 0);
    return 0;
}

/* A scope record with n tasks to mark, and its check once it ran: every task ran,
 * each index exactly once. Returns how often its body came back on another worker. */
static void endc_init(struct endc *e, int (*body)(weft_scope *, void *), int n)
{
    e->body = body;
    e->n = n;
    e->hits = calloc((size_t)n, sizeof(e->hits[0]));
    cr_assert_not_null(e->hits);
}

static int endc_check(struct endc *e)
{
    cr_assert_eq(atomic_load(&e->inner_done), e->n);
    for (int i = 0; i < e->n; i++)
        cr_assert_eq(atomic_load(&e->hits[i]), 1, "task %d of %d", i, e->n);
    free(e->hits);
    return atomic_load(&e->moved);
}

static void yields_in_drain_on(unsigned workers)
{
    weft_pool *pool = mkpool(workers);
    int moved = 0;
    for (int round = 0; round < 20; round++) {
        struct endc_many m;
        memset(&m, 0, sizeof(m));
        for (int k = 0; k < 8; k++)
            endc_init(&m.e[k], endc_yield_body, 64);
        cr_assert_eq(weft_scope_run(pool, endc_many_body, &m), 0);
        for (int k = 0; k < 8; k++)
            moved += endc_check(&m.e[k]);
    }
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
    cr_log_info("bodies that came back on another worker: %d of 160", moved);
}

Test(scope, yields_in_drain_1_worker, .timeout = 120) { yields_in_drain_on(1); }
Test(scope, yields_in_drain_2_workers, .timeout = 120) { yields_in_drain_on(2); }

/* One such scope on 2 workers, its first half of tasks long enough (20 us) that the
 * other worker steals them and then, often, the yielded body: the body then spawns
 * its second half, and ends, on the other worker, with the rest of its reserve left
 * on the first. */
Test(scope, body_moves_between_spawns, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    int moved = 0;
    for (int round = 0; round < 40; round++) {
        struct endc e = {.spin_ns = 20000};
        endc_init(&e, endc_yield_body, 32);
        cr_assert_eq(weft_run(pool, endc_task, &e), 0);
        moved += endc_check(&e);
    }
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
    cr_log_info("bodies that came back on another worker: %d of 40", moved);
}

/* On one worker the drain runs the body's tasks newest first: when the 10th to run
 * fails, exactly 10 ran and the other 90 are skipped. */
struct endc_fail {
    _Atomic(int) ran;
};

struct endc_fail_arg {
    struct endc_fail *f;
    int i;
};

static int endc_fail_task(void *p)
{
    const struct endc_fail_arg *a = p;
    atomic_fetch_add(&a->f->ran, 1);
    return a->i == 90 ? -EIO : 0;
}

static int endc_fail_body(weft_scope *s, void *p)
{
    for (int i = 0; i < 100; i++) {
        struct endc_fail_arg a = {p, i};
        TCHECK(weft_spawn_copy(s, endc_fail_task, &a, sizeof(a)) == 0);
    }
    return 0;
}

static int endc_fail_in_task(void *p)
{
    VCHECK(weft_scope_run(NULL, endc_fail_body, p), -EIO);
    return 0;
}

Test(scope, failure_in_drain_skips_the_rest)
{
    weft_pool *pool = mkpool(1);
    struct endc_fail f = {0};
    cr_assert_eq(weft_run(pool, endc_fail_in_task, &f), 0);
    cr_assert_eq(atomic_load(&f.ran), 10);
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
}

/* Tasks that sleep (a timer in the worker's ring, or a blocking thread) in the middle
 * of the drain: the drain looks at the ring itself every few jobs and hands over to
 * the general wait when a task is ready. Each index exactly once. */
static int endc_sleeper(void *p)
{
    const struct endc_arg *a = p;
    if (a->i % 10 == 0)
        TCHECK(weft_sleep(1000) == 0);
    return endc_mark(a);
}

static int endc_sleep_body(weft_scope *s, void *p)
{
    struct endc *e = p;
    for (int i = 0; i < e->n; i++) {
        struct endc_arg a = {e, i};
        TCHECK(weft_spawn_copy(s, endc_sleeper, &a, sizeof(a)) == 0);
    }
    return 0;
}

static void sleeps_in_drain_on(unsigned workers)
{
    weft_pool *pool = mkpool(workers);
    for (int round = 0; round < 20; round++) {
        struct endc e = {0};
        endc_init(&e, endc_sleep_body, 200);
        cr_assert_eq(weft_run(pool, endc_task, &e), 0);
        endc_check(&e);
    }
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
}

Test(scope, sleeps_in_drain_1_worker, .timeout = 120) { sleeps_in_drain_on(1); }
Test(scope, sleeps_in_drain_2_workers, .timeout = 120) { sleeps_in_drain_on(2); }
