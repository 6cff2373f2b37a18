/* SPDX-License-Identifier: MIT */
/* Spawn frames are recycled: once warm, spawning does no malloc at all. */
#include "harness.h"

#include <malloc.h>
#include <stdatomic.h>

#include "weft.h"

#define TASKS 100000

#include <sched.h>

static _Atomic(long) ran;
static _Atomic(int) gate = 1;

static int task(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&gate, memory_order_acquire))
        sched_yield();
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return 0;
}

static int spawn_many(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < SCALED(TASKS); i++) {
        int err = weft_spawn(s, task, NULL);
        if (err)
            return err;
    }
    atomic_store_explicit(&gate, 1, memory_order_release);
    return 0;
}

struct measure {
    size_t grew, grew_mmap;
    int err;
};

/* One task runs every round, so the same worker spawns each time (its deque and
 * free list warm up once); the others only steal and run. */
static int rounds(void *arg)
{
    struct measure *m = arg;
    /* Warm up with every task in flight at once (tasks wait at a gate the body
     * opens after its last spawn): the most frames a round can need. Frames go
     * back to the worker that handed them out, so no later round needs more. */
    atomic_store(&gate, 0);
    if ((m->err = weft_scope_run(NULL, spawn_many, NULL)) != 0)
        return m->err;
    atomic_store(&ran, 0);
    struct mallinfo2 before = mallinfo2();
    for (int k = 0; k < 5; k++)
        if ((m->err = weft_scope_run(NULL, spawn_many, NULL)) != 0)
            return m->err;
    struct mallinfo2 after = mallinfo2();
    m->grew = after.uordblks - before.uordblks;
    m->grew_mmap = after.hblkhd - before.hblkhd;
    return 0;
}

static void steady_state(unsigned threads)
{
    weft_pool *pool;
    /* Untraced: a trace's buffers grow with the work (WEFT_TRACE in the environment). */
    weft_pool_options o = {.threads = threads, .trace_path = ""};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    struct measure m = {0, 0, 0};
    cr_assert_eq(weft_run(pool, rounds, &m), 0);
    cr_assert_eq(m.err, 0);
    cr_assert_eq(atomic_load(&ran), 5L * SCALED(TASKS));
    /* No block allocated and kept, none mmapped, by five rounds of spawning. */
    cr_assert_eq(m.grew, 0, "heap in use grew by %zu bytes", m.grew);
    cr_assert_eq(m.grew_mmap, 0);
    weft_pool_destroy(pool);
}

Test(frames, no_malloc_when_warm_1_worker) { steady_state(1); }
Test(frames, no_malloc_when_warm_2_workers) { steady_state(2); }
Test(frames, no_malloc_when_warm_4_workers) { steady_state(4); }
