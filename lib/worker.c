/* SPDX-License-Identifier: MIT */
/*
 * The worker loop.
 *
 * A worker looks for work in this order: its own deque (newest first: the job it
 * pushed last is the one whose data is in cache), other workers' deques (oldest
 * first: the biggest pieces), victims nearest first by topology with a random start
 * within each distance class, then the pool's injector (jobs from outside threads).
 * After a bounded search (a few rounds with growing pauses, then yields) it parks
 * (park.c). The same loop serves three kinds of waiting, so there is one protocol:
 * the thread's main loop (until the pool stops), a join whose job was stolen (until
 * the job's latch is set), and a scope (until its last task finishes). Waiting is
 * always "help until a word reads 1".
 *
 * Suspended tasks that may run again (sched.c) come first: the worker's own ready
 * queue before its deque, other workers' ready queues before their deques. A worker
 * with a ring (uring.c) submits and reaps there every few jobs, whenever its deque
 * runs dry, and parks inside it.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "reactor.h"

#include <sched.h>
#include <stdlib.h>

/* Search rounds before parking: spin with growing pauses, then yield. ~20-50 us. */
#define SPIN_ROUNDS  16
#define YIELD_ROUNDS 4

static inline uint64_t rng_next(struct weft__worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

void weft__inject(weft_pool *pool, struct weft__job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&pool->inj_mu);
    if (pool->inj_tail)
        pool->inj_tail->next = job;
    else
        pool->inj_head = job;
    pool->inj_tail = job;
    atomic_store_explicit(&pool->inj_len,
                          atomic_load_explicit(&pool->inj_len, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&pool->inj_mu);
    /* StoreLoad between the injection and the parking-word load; pairs with the
     * RMW + heavy barrier in weft__park(). Not a hot path: a plain fence. */
    atomic_thread_fence(memory_order_seq_cst);
    weft__notify_work(pool);
}

struct weft__job *weft__inject_pop(weft_pool *pool)
{
    if (atomic_load_explicit(&pool->inj_len, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&pool->inj_mu);
    struct weft__job *job = pool->inj_head;
    struct weft__job *ret = NULL;
    if (job) {
        ret = job->scope ? weft__tag_frame(job) : job;
        pool->inj_head = job->next;
        if (!pool->inj_head)
            pool->inj_tail = NULL;
        atomic_store_explicit(&pool->inj_len,
                              atomic_load_explicit(&pool->inj_len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&pool->inj_mu);
    return ret;
}

/* After the heavy barrier: is there anything a worker could take? */
bool weft__work_visible(weft_pool *pool)
{
    if (atomic_load_explicit(&pool->inj_len, memory_order_relaxed) != 0)
        return true;
    for (unsigned i = 0; i < pool->nthreads; i++)
        if (weft__deque_looks_nonempty(&pool->workers[i]->dq) ||
            atomic_load_explicit(&pool->workers[i]->ready_len, memory_order_relaxed) != 0 ||
            atomic_load_explicit(&pool->workers[i]->yield_len, memory_order_relaxed) != 0)
            return true;
    return false;
}

/* job: as a deque slot holds it (spawned frames tagged). */
void weft__run_job(struct weft__worker *w, struct weft__job *job)
{
    if (WEFT_UNLIKELY(w->trace != NULL)) {
        weft__trace_run_job(w, job); /* trace.c: the same, in a slice of its own */
        return;
    }
    weft__run_job_plain(w, job);
}

void weft__run_job_plain(struct weft__worker *w, struct weft__job *job)
{
    WEFT_ASSERT(!weft__is_resume(job));
    if ((uintptr_t)job & WEFT__FRAME_TAG) {
        weft__run_frame(w, (struct weft__job *)((uintptr_t)job & ~WEFT__FRAME_TAG));
        return;
    }
    job = (struct weft__job *)((uintptr_t)job & ~WEFT__FENCED_TAG);
    /* A join or run job: its owner waits on the latch; job memory is the owner's
     * and must not be touched after the latch is set. Mark it taken: its joiner's
     * inline pop must not mistake a later job at the same index for it (weft.h). */
    atomic_store_explicit(&job->idx, WEFT__IDX_TAKEN, memory_order_relaxed);
    job->result = job->fn(job->arg);
    weft__latch_set(&job->latch);
}

static struct weft__job *steal_round(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    unsigned nv = pool->nthreads - 1;
    if (nv == 0)
        return NULL;
#ifdef WEFT_DEBUG_SCHED
    /* Random victims in random order: shakes out assumptions about who steals. */
    for (unsigned k = 0; k < nv; k++) {
        unsigned v = w->victims[weft__dbg_rand() % nv];
        struct weft__job *job = weft__ready_pop(pool->workers[v]);
        if (!job)
            job = weft__yield_pop(pool->workers[v]);
        if (job)
            return job;
        job = weft__deque_steal(&pool->workers[v]->dq);
        if (job == WEFT__STEAL_ABORT) {
            WEFT__COUNT(w, steal_fails);
            continue;
        }
        if (job) {
            WEFT__COUNT(w, steals);
            weft__trace_stole(w, v);
            return job;
        }
    }
    return NULL;
#else
    unsigned start = 0;
    for (unsigned g = 0; g < w->ngroups; g++) {
        unsigned end = w->group_end[g], len = end - start;
        unsigned off = len > 1 ? (unsigned)(rng_next(w) % len) : 0;
        for (unsigned k = 0; k < len; k++) {
            unsigned v = w->victims[start + (off + k) % len];
            struct weft__job *job = weft__ready_pop(pool->workers[v]);
            if (job)
                return job;
            /* A lost race means the victim has work: try it again at once. */
            while ((job = weft__deque_steal(&pool->workers[v]->dq)) == WEFT__STEAL_ABORT)
                WEFT__COUNT(w, steal_fails);
            if (job) {
                WEFT__COUNT(w, steals);
                weft__trace_stole(w, v);
                return job;
            }
        }
        start = end;
    }
    /* Tasks that yielded come last: they wait for other work by definition, and
     * moving one moves its cold stack to this core. */
    for (unsigned k = 0; k < nv; k++) {
        struct weft__job *job = weft__yield_pop(pool->workers[w->victims[k]]);
        if (job)
            return job;
    }
    return NULL;
#endif
}

/* Jobs a worker runs between looks at its ring while it has local work. */
#define IO_EVERY 32

/* One job to run, or NULL when *until reads 1 (after parking, possibly). Local jobs
 * are taken only above floor: see weft__wait_latch and scope.c. */
struct weft__job *weft__find_work(struct weft__worker *w, const _Atomic(uint32_t) *until,
                                  int64_t floor)
{
    struct weft__job *job;
    if (w->io && (++w->tick >= IO_EVERY || weft__io_pending(w))) {
        w->tick = 0;
        weft__io_poll(w, false);
    }
    job = weft__ready_pop(w);
    if (job)
        return job;
    if (weft__yield_first(w) && (job = weft__yield_pop(w)))
        return job;
    if (atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) > floor) /* owner's own */
        job = weft__deque_pop(&w->dq);
    if (job)
        return job;
    if (w->io && weft__io_poll(w, false) > 0 && (job = weft__ready_pop(w)))
        return job;
    if ((job = weft__yield_pop(w)))
        return job;
    weft__start_searching(w);
    for (;;) {
        for (unsigned round = 0; round < SPIN_ROUNDS + YIELD_ROUNDS; round++) {
            /* Our own ready queue too: a blocking thread or another worker may
             * have made one of our tasks ready while we search. */
            job = weft__ready_pop(w);
            if (!job)
                job = steal_round(w);
            if (!job)
                job = weft__inject_pop(w->pool);
            if (!job && w->io && (round & 3) == 3 && weft__io_poll(w, false) > 0)
                job = weft__ready_pop(w);
            if (job) {
                weft__stop_searching(w);
                return job;
            }
            /* Acquire: pairs with the release that set the word. */
            if (atomic_load_explicit(until, memory_order_acquire) == 1) {
                weft__stop_searching(w);
                return NULL;
            }
            weft__obs_searching(w); /* stats.c: time searches from here */
            if (round < SPIN_ROUNDS) {
                for (unsigned k = 0; k < (32u << (round / 4)); k++)
                    weft__cpu_relax();
            } else {
                sched_yield();
            }
        }
        weft__park(w, until);
        job = weft__ready_pop(w); /* parked in the ring: completions came in */
        if (job) {
            weft__stop_searching(w);
            return job;
        }
        if (atomic_load_explicit(until, memory_order_acquire) == 1) { /* as above */
            weft__stop_searching(w);
            return NULL;
        }
    }
}
