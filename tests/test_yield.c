/* SPDX-License-Identifier: MIT */
/* weft_yield lets everything runnable run, work submitted from outside included
 * (issue 15: three yielding tasks on one worker used to starve weft_run for 3 s). */
#define _GNU_SOURCE
#include <pthread.h>
#include <time.h>

#include "checks.h"
#include "pool.h" /* testing hook: weft__pool_stack_counts */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct spin {
    weft_pool *pool;
    _Atomic(int) flag;
    _Atomic(int) started;
    _Atomic(int) gave_up;
    unsigned nspin;
};

/* Loops on weft_yield until the flag is set; gives up after a 20 s watchdog. */
static int spinner(void *p)
{
    struct spin *c = p;
    atomic_fetch_add(&c->started, 1);
    double end = now_s() + 20.0;
    while (!atomic_load_explicit(&c->flag, memory_order_acquire)) {
        TCHECK(weft_yield() == 0);
        if (now_s() > end) {
            atomic_fetch_add(&c->gave_up, 1);
            return 0;
        }
    }
    return 0;
}

static int spin_body(weft_scope *s, void *p)
{
    struct spin *c = p;
    for (unsigned i = 0; i < c->nspin; i++)
        TCHECK(weft_spawn(s, spinner, c) == 0);
    return 0;
}

static void *spin_thread(void *p)
{
    struct spin *c = p;
    TCHECK(weft_scope_run(c->pool, spin_body, c) == 0);
    return NULL;
}

static int set_flag(void *p)
{
    struct spin *c = p;
    atomic_store_explicit(&c->flag, 1, memory_order_release);
    return 0;
}

static int set_flag_body(weft_scope *s, void *p)
{
    return weft_spawn(s, set_flag, p);
}

static void starts_spinners(struct spin *c, pthread_t *t)
{
    cr_assert_eq(pthread_create(t, NULL, spin_thread, c), 0);
    while (atomic_load(&c->started) < (int)c->nspin)
        sched_yield();
}

/* Exactly the report's program: spinners fill every worker, an outside thread
 * submits the task that ends them. */
static void outside_submission(unsigned threads, bool through_scope)
{
    weft_pool *pool = mkpool(threads);
    struct spin c = {.pool = pool, .nspin = threads + 2};
    pthread_t t;
    starts_spinners(&c, &t);
    double t0 = now_s();
    if (through_scope)
        cr_assert_eq(weft_scope_run(pool, set_flag_body, &c), 0);
    else
        cr_assert_eq(weft_run(pool, set_flag, &c), 0);
    double waited = now_s() - t0;
    pthread_join(t, NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&c.gave_up), 0,
                 "the outside submission waited %.3f s behind yielding tasks", waited);
    cr_log_info("%u workers: the outside submission waited %.6f s", threads, waited);
    weft_pool_destroy(pool);
}

Test(yield, outside_run_is_not_starved_1_worker) { outside_submission(1, false); }
Test(yield, outside_run_is_not_starved_2_workers) { outside_submission(2, false); }
Test(yield, outside_scope_is_not_starved_1_worker) { outside_submission(1, true); }
Test(yield, outside_scope_is_not_starved_2_workers) { outside_submission(2, true); }

static _Atomic(int) counted;

static int count(void *p)
{
    (void)p;
    atomic_fetch_add(&counted, 1);
    return 0;
}

/* Yielders and injected work share one worker: a stream of outside submissions
 * all run while the yielders keep yielding. */
Test(yield, yielders_and_injected_work_share_a_worker)
{
    weft_pool *pool = mkpool(1);
    struct spin c = {.pool = pool, .nspin = 8};
    pthread_t t;
    starts_spinners(&c, &t);
    atomic_store(&counted, 0);
    for (int i = 0; i < SCALED(2000); i++)
        cr_assert_eq(weft_run(pool, count, NULL), 0);
    cr_assert_eq(atomic_load(&counted), SCALED(2000));
    cr_assert_eq(atomic_load(&c.gave_up), 0);
    cr_assert_eq(weft_run(pool, set_flag, &c), 0);
    pthread_join(t, NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&c.gave_up), 0);
    weft_pool_destroy(pool);
}

/* Jobs on the deque behind yielders: a task spawns the flag setter first and 8
 * spinners after it, all onto its own worker's deque (1 worker). The spinners run
 * first (newest first) and then yield; once 4 wait, yielders resume ahead of the
 * deque, and when that happened on every look the setter never ran (the spinners
 * gave up at the watchdog). */
static int setter_below_spinners(weft_scope *s, void *p)
{
    struct spin *c = p;
    TCHECK(weft_spawn(s, set_flag, c) == 0);
    for (unsigned i = 0; i < c->nspin; i++)
        TCHECK(weft_spawn(s, spinner, c) == 0);
    return 0;
}

static int deque_behind_yielders_task(void *p)
{
    return weft_scope_run(NULL, setter_below_spinners, p);
}

Test(yield, deque_jobs_behind_yielders_run)
{
    weft_pool *pool = mkpool(1);
    struct spin c = {.pool = pool, .nspin = 8};
    double t0 = now_s();
    cr_assert_eq(weft_run(pool, deque_behind_yielders_task, &c), 0);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&c.gave_up), 0,
                 "the job behind the yielders waited %.3f s", now_s() - t0);
    cr_assert_eq(atomic_load(&c.started), 8);
    weft_pool_destroy(pool);
}

/* Outside work beside a chain of local tasks (each spawns its successor, so the
 * worker's deque is never empty): the injector is looked at every 61 jobs, and a
 * look that finds work takes the next jobs from there too, up to 32 in a row. With
 * one job per look, 1 000 outside spawns beside chains of 10 us tasks took 320 ms
 * (benchmarks/tokio spawn_many_remote_busy2). Counted, not timed: on 1 worker, how
 * many chain tasks run while the outside tasks wait. */
struct chain {
    weft_pool *pool;
    _Atomic(int) injected; /* the outside thread spawned them all */
    _Atomic(int) ran;      /* outside tasks that ran */
    _Atomic(int) started;
    int n;
    long links;            /* chain tasks that ran before the last outside one: the
                              chain's worker only */
};

struct link_arg {
    struct chain *c;
    weft_scope *s;
};

static int chain_link(void *p)
{
    struct link_arg a = *(struct link_arg *)p;
    struct chain *c = a.c;
    if (atomic_load(&c->ran) == c->n)
        return 0;
    if (c->links++ == 0) {
        atomic_store(&c->started, 1);
        while (!atomic_load(&c->injected)) /* every outside task waits in the injector */
            sched_yield();
    }
    return weft_spawn_copy(a.s, chain_link, &a, sizeof(a));
}

static int chain_body(weft_scope *s, void *p)
{
    struct link_arg a = {p, s};
    return weft_spawn_copy(s, chain_link, &a, sizeof(a));
}

static int chain_root(void *p)
{
    return weft_scope_run(NULL, chain_body, p);
}

static void *chain_thread(void *p)
{
    struct chain *c = p;
    TCHECK(weft_run(c->pool, chain_root, c) == 0);
    return NULL;
}

static int outside_task(void *p)
{
    atomic_fetch_add(&((struct chain *)p)->ran, 1);
    return 0;
}

static int outside_body(weft_scope *s, void *p)
{
    struct chain *c = p;
    for (int i = 0; i < c->n; i++)
        TCHECK(weft_spawn(s, outside_task, c) == 0); /* from outside: the injector */
    atomic_store(&c->injected, 1);
    return 0;
}

Test(yield, outside_spawns_beside_a_chain_are_taken_in_bursts)
{
    struct chain c = {.pool = mkpool(1), .n = 330};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, chain_thread, &c), 0);
    while (!atomic_load(&c.started))
        sched_yield();
    cr_assert_eq(weft_scope_run(c.pool, outside_body, &c), 0);
    pthread_join(t, NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&c.ran), c.n);
    /* One outside task per 61 chain tasks would be ~20 000 links; in bursts of
     * 33, ~610. */
    cr_log_info("%ld chain tasks ran beside %d outside ones", c.links, c.n);
    cr_assert(c.links < 61L * c.n / 4, "%ld chain tasks ran before %d outside tasks",
              c.links, c.n);
    weft_pool_destroy(c.pool);
}

/* One yield per task, many tasks on the deque (benchmarks/sleep's shape): a yield
 * holds its task's stack until it resumes, so the yielders waiting at once must stay
 * few (yielders resume ahead of the deque every other look once 4 wait, runq.c),
 * whichever way a yield gets to the next task (straight to the oldest yielder, or
 * through a dispatch fiber), and every task must finish. Counted, not timed. */
struct one_yield {
    _Atomic(int) waiting; /* between a task's yield and its return from it */
    _Atomic(int) most;    /* the most at once */
    _Atomic(int) done;
};

static int one_yield_task(void *p)
{
    struct one_yield *o = p;
    int now = atomic_fetch_add(&o->waiting, 1) + 1;
    int m = atomic_load(&o->most);
    while (now > m && !atomic_compare_exchange_weak(&o->most, &m, now))
        ;
    int r = weft_yield();
    atomic_fetch_sub(&o->waiting, 1);
    atomic_fetch_add(&o->done, 1);
    return r;
}

static int one_yield_body(weft_scope *s, void *p)
{
    for (int i = 0; i < SCALED(20000); i++)
        TCHECK(weft_spawn(s, one_yield_task, p) == 0);
    return 0;
}

static int one_yield_root(void *p)
{
    return weft_scope_run(NULL, one_yield_body, p);
}

static void one_yield_each_on(unsigned threads)
{
    weft_pool *pool = mkpool(threads);
    struct one_yield o = {0};
    cr_assert_eq(weft_run(pool, one_yield_root, &o), 0);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&o.done), SCALED(20000));
    /* 4 queued per worker before they go first, the one resuming, the one that
     * just yielded: a few per worker, not thousands. */
    cr_assert_leq(atomic_load(&o.most), (int)(8 * threads), "%d yielders waited at once",
                  atomic_load(&o.most));
    size_t nfree, total;
    weft__pool_stack_counts(pool, &nfree, &total);
    cr_assert_leq(total, 16 * threads, "%zu fiber stacks for %u workers", total, threads);
    weft_pool_destroy(pool);
}

Test(yield, one_yield_per_task_holds_few_stacks_1_worker) { one_yield_each_on(1); }
Test(yield, one_yield_per_task_holds_few_stacks_2_workers) { one_yield_each_on(2); }
