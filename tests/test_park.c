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

/* cycles submissions from this thread; every pause_every-th one after a pause long
 * enough for the workers to park; a few more after short random pauses. */
static void submit_cycles(weft_pool *pool, size_t cycles, size_t pause_every, uint64_t seed)
{
    uint64_t counter = 0, rng = seed | 1;
    for (size_t i = 0; i < cycles; i++) {
        uint64_t x = xorshift(&rng);
        if (pause_every && i % pause_every == pause_every - 1)
            sleep_us(200);
        else if ((x & 255) == 0)
            sleep_us((long)(x >> 60)); /* 0-15 us: lands in the middle of a search */
        else if ((x & 255) == 1)
            sched_yield();
        int r = weft_run(pool, bump, &counter);
        if (r != 7)
            cr_assert(0, "cycle %zu: weft_run returned %d", i, r);
    }
    cr_assert_eq(counter, cycles);
}

Test(park, idle_submit_cycles_2_workers, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    submit_cycles(pool, SCALED(100000), 1000, 1);
    /* A long idle spell: every worker is asleep now, and the next run wakes one. */
    sleep_us(20000);
    uint64_t c = 0;
    cr_assert_eq(weft_run(pool, bump, &c), 7);
    cr_assert_eq(c, 1);
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_log_info("2 workers: parks %llu wakeups %llu", (unsigned long long)st.parks,
                (unsigned long long)st.wakeups);
    cr_assert_gt(st.parks, 0);
    cr_assert_gt(st.wakeups, 0);
    weft_pool_destroy(pool);
}

Test(park, idle_submit_cycles_1_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(1);
    submit_cycles(pool, SCALED(30000), 300, 2);
    sleep_us(20000);
    uint64_t c = 0;
    cr_assert_eq(weft_run(pool, bump, &c), 7);
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert_gt(st.parks, 0);
    cr_assert_gt(st.wakeups, 0);
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
        s[i] = (struct submitter){pool, SCALED(20000), (uint64_t)i * 7919 + 1, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, submitter_main, &s[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(s[i].counter, s[i].cycles);
    }
    ASSERT_NO_BAD();
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

static int sleepy_join(void *p)
{
    (void)p;
    usleep(2000); /* the other worker finds nothing and parks meanwhile */
    struct handoff h = {0};
    int r = weft_join(side_a, &h, side_b, &h);
    TCHECK(r == 0);
    TCHECK(!pthread_equal(h.a_thread, h.b_thread));
    return r;
}

Test(park, join_push_wakes_sleeping_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 10; rep++)
        cr_assert_eq(weft_run(pool, sleepy_join, NULL), 0);
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
    (void)p;
    usleep(2000);
    struct spawn_handoff h = {0};
    int r = weft_scope_run(NULL, handoff_body, &h);
    TCHECK(r == 0);
    TCHECK(!pthread_equal(h.body_thread, h.task_thread));
    return r;
}

Test(park, spawn_push_wakes_sleeping_worker, .timeout = 120)
{
    weft_pool *pool = mkpool(2);
    for (int rep = 0; rep < 10; rep++)
        cr_assert_eq(weft_run(pool, sleepy_scope, NULL), 0);
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
        usleep(300);
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
        sleep_us(5000);
    }
    weft_pool_destroy(pool);
}
