/* SPDX-License-Identifier: MIT */
/*
 * Parking: no lost wake-ups. An outside thread submits one task at a time to a pool
 * that has gone (or is going) idle, many times over; a lost wake-up hangs, so every
 * test has a timeout and fails instead. And work pushed by a busy worker while the
 * others sleep must wake one of them to steal it.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "checks.h"

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int bump(void *p)
{
    /* Plain increment: weft_run's completion orders it before the caller reads. */
    (*(uint64_t *)p)++;
    return 7;
}

/* cycles submissions from this thread; every pause_every-th one once every worker
 * has parked (waited for); a few more after short random pauses, which land in the
 * middle of a search or a park (workload shaping, not synchronisation). */
static void submit_cycles(weft_pool *pool, size_t cycles, size_t pause_every, uint64_t seed)
{
    seed = wt_test_seed(seed);
    uint64_t counter = 0, rng = seed | 1;
    for (size_t i = 0; i < cycles; i++) {
        uint64_t x = xorshift(&rng);
        if (pause_every && i % pause_every == pause_every - 1) {
            if (!wt_wait_parked(pool, weft_pool_threads(pool), 10000))
                cr_assert(0, "cycle %zu: the workers did not all park in 10 s (seed %llu)",
                          i, (unsigned long long)seed);
        } else if ((x & 255) == 0)
            sleep_us((long)(x >> 60)); /* 0-15 us: lands in the middle of a search */
        else if ((x & 255) == 1)
            sched_yield();
        int r = weft_run(pool, bump, &counter);
        if (r != 7)
            cr_assert(0, "cycle %zu: weft_run returned %d (seed %llu)", i, r,
                      (unsigned long long)seed);
    }
    cr_assert_eq(counter, cycles, "seed %llu", (unsigned long long)seed);
}

/* After a long idle spell every worker sleeps (waited for), and the next run wakes
 * one: the counters show that wake-up. */
static void wake_from_idle(weft_pool *pool)
{
    unsigned n = weft_pool_threads(pool);
    cr_assert(wt_wait_parked(pool, n, 10000), "%llu of %u workers parked in 10 s",
              (unsigned long long)wt_parked(pool), n);
    weft_stats a, b;
    weft_pool_stats(pool, &a);
    uint64_t c = 0;
    cr_assert_eq(weft_run(pool, bump, &c), 7);
    cr_assert_eq(c, 1);
    weft_pool_stats(pool, &b);
    cr_log_info("%u workers: parks %llu wakeups %llu", n, (unsigned long long)b.parks,
                (unsigned long long)b.wakeups);
    cr_assert_gt(a.parks, 0);
    /* The job ran on a worker that woke for it (and counted that before running it). */
    cr_assert_gt(b.wakeups, a.wakeups, "the run did not wake a worker");
}

Test(park, idle_submit_cycles_2_workers, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    submit_cycles(pool, SCALED(100000), 1000, 1);
    wake_from_idle(pool);
    weft_pool_destroy(pool);
}

Test(park, idle_submit_cycles_1_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(1);
    submit_cycles(pool, SCALED(30000), 300, 2);
    wake_from_idle(pool);
    weft_pool_destroy(pool);
}

Test(park, idle_submit_cycles_4_workers, .timeout = 120)
{
    weft_pool *pool = mkpool(4);
    submit_cycles(pool, SCALED(30000), 300, 3);
    weft_pool_destroy(pool);
}

/* No pauses at all: the workers are mostly still searching when the next job comes. */
Test(park, back_to_back_submits, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    submit_cycles(pool, SCALED(100000), 0, 4);
    weft_pool_destroy(pool);
}

/* Several outside threads submit at once, with random pauses. */
struct submitter {
    weft_pool *pool;
    size_t cycles;
    uint64_t seed, counter;
};

static int bump_atomic(void *p)
{
    atomic_fetch_add_explicit((_Atomic(uint64_t) *)p, 1, memory_order_relaxed);
    return 0;
}

static void *submitter_main(void *p)
{
    struct submitter *s = p;
    uint64_t rng = s->seed | 1;
    _Atomic(uint64_t) c = 0;
    for (size_t i = 0; i < s->cycles; i++) {
        uint64_t x = xorshift(&rng);
        if ((x & 511) == 0)
            sleep_us(200 + (long)(x >> 56));
        else if ((x & 63) == 1)
            sleep_us((long)(x >> 60));
        TCHECK(weft_run(s->pool, bump_atomic, &c) == 0);
    }
    s->counter = atomic_load(&c);
    return NULL;
}

Test(park, concurrent_outside_submitters, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    struct submitter s[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (struct submitter){pool, SCALED(20000), wt_test_seed((uint64_t)i * 7919 + 1), 0};
        cr_assert_eq(pthread_create(&th[i], NULL, submitter_main, &s[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(s[i].counter, s[i].cycles, "seed %llu", (unsigned long long)s[i].seed);
    }
    cr_assert_eq(atomic_exchange(&bad_line, 0), 0, "check failed on a submitter (seeds "
                 "%llu, %llu, %llu)", (unsigned long long)s[0].seed,
                 (unsigned long long)s[1].seed, (unsigned long long)s[2].seed);
    weft_pool_destroy(pool);
}

/* ---- a busy worker pushes while the others sleep ---------------------------------- */

struct handoff {
    _Atomic(int) b_started;
    pthread_t a_thread, b_thread;
};

static int side_a(void *p)
{
    struct handoff *h = p;
    h->a_thread = pthread_self();
    /* a cannot finish until b runs, and this worker is busy with a: b must be stolen,
     * and the thief was asleep when b was pushed. */
    while (!atomic_load_explicit(&h->b_started, memory_order_acquire)) /* pairs below */
        sched_yield();
    return 0;
}

static int side_b(void *p)
{
    struct handoff *h = p;
    h->b_thread = pthread_self();
    atomic_store_explicit(&h->b_started, 1, memory_order_release);
    return 0;
}

/* Inside a task of a 2-worker pool: wait until the other worker sleeps, and return
 * the wakeups counted so far (the caller's push must add one). */
static uint64_t other_worker_parked(weft_pool *pool)
{
    TCHECK(wt_wait_parked(pool, 1, 10000));
    weft_stats st;
    weft_pool_stats(pool, &st);
    return st.wakeups;
}

static int sleepy_join(void *p)
{
    weft_pool *pool = p;
    uint64_t woken = other_worker_parked(pool);
    struct handoff h = {0};
    int r = weft_join(side_a, &h, side_b, &h);
    TCHECK(r == 0);
    TCHECK(!pthread_equal(h.a_thread, h.b_thread));
    weft_stats st;
    weft_pool_stats(pool, &st);
    TCHECK(st.wakeups > woken); /* the push woke the sleeper */
    return r;
}

Test(park, join_push_wakes_sleeping_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 10; rep++)
        cr_assert_eq(weft_run(pool, sleepy_join, pool), 0);
    ASSERT_NO_BAD();
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert_geq(st.steals, 10, "b was stolen every time");
    weft_pool_destroy(pool);
}

struct spawn_handoff {
    _Atomic(int) started;
    pthread_t body_thread, task_thread;
};

static int handoff_task(void *p)
{
    struct spawn_handoff *h = p;
    h->task_thread = pthread_self();
    atomic_store_explicit(&h->started, 1, memory_order_release); /* pairs below */
    return 0;
}

static int handoff_body(weft_scope *s, void *arg)
{
    struct spawn_handoff *h = arg;
    h->body_thread = pthread_self();
    TCHECK(weft_spawn(s, handoff_task, h) == 0);
    /* The body holds this worker until the task has started elsewhere. */
    while (!atomic_load_explicit(&h->started, memory_order_acquire)) /* pairs above */
        sched_yield();
    return 0;
}

static int sleepy_scope(void *p)
{
    weft_pool *pool = p;
    uint64_t woken = other_worker_parked(pool);
    struct spawn_handoff h = {0};
    int r = weft_scope_run(NULL, handoff_body, &h);
    TCHECK(r == 0);
    TCHECK(!pthread_equal(h.body_thread, h.task_thread));
    weft_stats st;
    weft_pool_stats(pool, &st);
    TCHECK(st.wakeups > woken); /* the spawn woke the sleeper */
    return r;
}

Test(park, spawn_push_wakes_sleeping_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 10; rep++)
        cr_assert_eq(weft_run(pool, sleepy_scope, pool), 0);
    ASSERT_NO_BAD();
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert_geq(st.steals, 10);
    weft_pool_destroy(pool);
}

/* Same with more workers than cores, and a deeper fan-out: every leaf must run
 * somewhere while its parent's worker sleeps before pushing. */
struct fan {
    int depth;
    _Atomic(int) *leaves;
};

static int fan_task(void *p)
{
    struct fan *f = p;
    if (f->depth == 0) {
        atomic_fetch_add(f->leaves, 1);
        return 0;
    }
    if (f->depth % 3 == 0)
        usleep(300); /* workload: the other workers run dry and park meanwhile */
    struct fan a = {f->depth - 1, f->leaves}, b = {f->depth - 1, f->leaves};
    return weft_join(fan_task, &a, fan_task, &b);
}

Test(park, sleepy_fanout_oversubscribed, .timeout = 120)
{
    weft_pool *pool = mkpool(8);
    for (int rep = 0; rep < 5; rep++) {
        _Atomic(int) leaves = 0;
        struct fan f = {9, &leaves};
        cr_assert_eq(weft_run(pool, fan_task, &f), 0);
        cr_assert_eq(atomic_load(&leaves), 512);
        /* The next round starts with every worker asleep. */
        cr_assert(wt_wait_parked(pool, 8, 10000), "round %d: workers did not park", rep);
    }
    weft_pool_destroy(pool);
}
