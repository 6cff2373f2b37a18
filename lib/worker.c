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
 * always "help until a latch is set" (the pool's stop word is a latch too).
 *
 * Suspended tasks that may run again (sched.c) come first: the worker's own ready
 * queue before its deque, other workers' ready queues before their deques. A worker
 * with a ring (uring.c) submits and reaps there every few jobs, whenever its deque
 * runs dry, and parks inside it.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "reactor.h"
#include "jobserver.h"

#include <sched.h>
#include <stdlib.h>

/* Search rounds before parking: spin with growing pauses, then yield. ~20-50 us. */
#define SPIN_ROUNDS  16
#define YIELD_ROUNDS 4

static inline uint64_t rng_next(struct weft__worker *w)
{
    return weft__rng_next(&w->rng);
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

/* Jobs a worker takes from the injector at once (Tokio takes a batch from its
 * global queue the same way): the first to run, the rest onto its deque. */
#define INJECT_BATCH 32

static struct weft__job *as_slot(struct weft__job *job)
{
    return job->scope ? weft__tag_frame(job) : job; /* deque slots tag frames */
}

/* Put jobs[0..n) back at the head of the injector, in order. */
static void inject_unpop(weft_pool *pool, struct weft__job **jobs, size_t n)
{
    pthread_mutex_lock(&pool->inj_mu);
    for (size_t k = n; k-- > 0;) {
        jobs[k]->next = pool->inj_head;
        pool->inj_head = jobs[k];
        if (!pool->inj_tail)
            pool->inj_tail = jobs[k];
    }
    atomic_store_explicit(&pool->inj_len,
                          atomic_load_explicit(&pool->inj_len, memory_order_relaxed) + n,
                          memory_order_relaxed);
    pthread_mutex_unlock(&pool->inj_mu);
}

/* The oldest injected job, as a deque slot holds it, or NULL. Takes up to
 * INJECT_BATCH (at most this worker's share of what waits) under one lock and pushes
 * all but the first onto w's deque, oldest on top, so w runs them in order and other
 * workers can steal them: an outside thread spawning into a pool then contends for
 * the lock once per batch, not once per job (benchmarks/tokio spawn_many_remote_*). */
struct weft__job *weft__inject_pop(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    size_t len = atomic_load_explicit(&pool->inj_len, memory_order_relaxed);
    if (len == 0)
        return NULL;
    size_t want = len / pool->nthreads;
    want = want < 1 ? 1 : want > INJECT_BATCH ? INJECT_BATCH : want;
    struct weft__job *batch[INJECT_BATCH];
    size_t n = 0;
    pthread_mutex_lock(&pool->inj_mu);
    while (n < want && pool->inj_head) {
        batch[n++] = pool->inj_head;
        pool->inj_head = pool->inj_head->next;
    }
    if (!pool->inj_head)
        pool->inj_tail = NULL;
    atomic_store_explicit(&pool->inj_len,
                          atomic_load_explicit(&pool->inj_len, memory_order_relaxed) - n,
                          memory_order_relaxed);
    pthread_mutex_unlock(&pool->inj_mu);
    if (n == 0)
        return NULL;
    for (size_t k = n; k-- > 1;) {
        if (weft__deque_push(&w->dq, as_slot(batch[k]), true) != 0) {
            inject_unpop(pool, batch + 1, k); /* no memory to grow the deque */
            break;
        }
    }
    /* As after any push (scope.c's push_frame): StoreLoad between the bottom stores
     * and the poke load pairs with the membarrier() of a parking worker (park.c). */
    atomic_signal_fence(memory_order_seq_cst);
    if (n > 1 && WEFT_UNLIKELY(atomic_load_explicit(&w->dq.poke, memory_order_relaxed) != 0))
        weft__push_poked(w);
    return as_slot(batch[0]);
}

/* After the heavy barrier: is there anything a worker could take? */
bool weft__work_visible(weft_pool *pool)
{
    if (atomic_load_explicit(&pool->inj_len, memory_order_relaxed) != 0)
        return true;
    for (unsigned i = 0; i < pool->nthreads; i++)
        if (weft__deque_looks_stealable(&pool->workers[i]->dq) ||
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
    weft__acct_flush(w); /* a join or run job may take long (scope.c) */
    /* A join or run job: its owner waits on the latch; job memory is the owner's
     * and must not be touched after the latch is set. Mark it taken: its joiner's
     * inline pop must not mistake a later job at the same index for it (weft.h). */
    atomic_store_explicit(&job->idx, WEFT__IDX_TAKEN, memory_order_relaxed);
    /* It runs in the scope of the task that forked it (weft.h), whoever runs it. */
    struct weft_scope *outer = w->dq.scope;
    w->dq.scope = job->scope;
    job->result = job->fn(job->arg);
    weft__current()->dq.scope = outer; /* fn may have moved us to another worker */
    weft__latch_set(&job->latch);
}

/* Try victim v: its ready tasks, then its deque (a lost race means the victim has
 * work: try again at once). */
static struct weft__job *steal_from(struct weft__worker *w, struct weft__worker *v)
{
    struct weft__job *job = weft__ready_pop(v);
    if (job)
        return job;
    while ((job = weft__deque_steal(&v->dq)) == WEFT__STEAL_ABORT)
        WEFT__COUNT(w, steal_fails);
    if (job) {
        WEFT__COUNT(w, steals);
        weft__trace_stole(w, v->id);
    }
    return job;
}

/* One look at every other worker. Victims nearest first by topology, a random start
 * within each group of equal distance; with WEFT_SCHED=random (noise.c), as many
 * victims drawn at random (repeats allowed), so that any worker may steal from any
 * other in any order. */
static struct weft__job *steal_round(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    unsigned nv = pool->nthreads - 1;
    if (nv == 0)
        return NULL;
    struct weft__job *job;
    if (WEFT_UNLIKELY(pool->sched_random)) {
        for (unsigned k = 0; k < nv; k++)
            if ((job = steal_from(w, pool->workers[w->victims[rng_next(w) % nv]])))
                return job;
    } else {
        unsigned start = 0;
        for (unsigned g = 0; g < w->ngroups; g++) {
            unsigned end = w->group_end[g], len = end - start;
            unsigned off = len > 1 ? (unsigned)(rng_next(w) % len) : 0;
            for (unsigned k = 0; k < len; k++)
                if ((job = steal_from(w, pool->workers[w->victims[start + (off + k) % len]])))
                    return job;
            start = end;
        }
    }
    /* Tasks that yielded come last: they wait for other work by definition, and
     * moving one moves its cold stack to this core. */
    for (unsigned k = 0; k < nv; k++) {
        job = weft__yield_pop(pool->workers[w->victims[k]]);
        if (job)
            return job;
    }
    return NULL;
}

/* Jobs a worker runs between looks at the injector while it has local work. */
#define INJECT_EVERY 61


/* One job to run, or NULL once until is set (after parking, possibly). Local jobs
 * are taken only above floor: see latch.c's wait_helping and scope.c. */
struct weft__job *weft__find_work(struct weft__worker *w, const struct weft__latch *until,
                                  int64_t floor)
{
    struct weft__job *job;
    WEFT_ASSERT(!w->searching); /* the early returns below do not stop searching */
    if (w->io && (++w->tick >= WEFT__IO_EVERY || weft__io_pending(w))) {
        w->tick = 0;
        weft__io_poll(w, false);
    }
    job = weft__ready_pop(w);
    if (job)
        return job;
    /* Work from outside threads is looked at every INJECT_EVERY jobs even while
     * local work lasts (Tokio looks at its global queue every 61 ticks for the same
     * reason), and always before a yielded task resumes: a yield lets everything
     * runnable run first (weft.h), the injector included. */
    if (WEFT_UNLIKELY(++w->inj_tick >= INJECT_EVERY)) {
        w->inj_tick = 0;
        if ((job = weft__inject_pop(w)))
            return job;
    }
    /* Past YIELD_MAX_PER_WORKER yielders (sched.c), every other look resumes one
     * ahead of the deque: that bounds the stacks yielded tasks hold, and the other
     * looks still reach the deque (yielders going first every time starved it: 8
     * tasks spinning on weft_yield on 1 worker never let the jobs behind them on
     * the deque start, tests/test_yield.c). */
    if (weft__yield_first(w) && (w->yield_turn = !w->yield_turn) &&
        ((job = weft__inject_pop(w)) || (job = weft__yield_pop(w))))
        return job;
    if (atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) > floor) /* owner's own */
        job = weft__deque_pop(&w->dq);
    if (job)
        return job;
    if (w->io && weft__io_poll(w, false) > 0 && (job = weft__ready_pop(w)))
        return job;
    if ((job = weft__inject_pop(w)) || (job = weft__yield_pop(w)))
        return job;
    /* We stop running our own jobs (none, or only some below floor): let thieves
     * have whatever is private (deque.c). */
    weft__deque_publish(&w->dq);
    weft__acct_flush(w); /* and hand in deferred finishes (scope.c) */
    /* That may have set what we wait for (the last tasks of a scope we help were
     * ours): then return before searching, whose start and end touch the parking
     * word and, as the last searcher beside sleepers, run the heavy barrier (a scope
     * per node on 2 workers ran 10x slower that way: benchmarks/kernels nqueens). */
    if (weft__latch_is_set(until))
        return NULL;
    weft__start_searching(w);
    for (;;) {
        for (unsigned round = 0; round < SPIN_ROUNDS + YIELD_ROUNDS; round++) {
            /* Our own ready queue too: a blocking thread or another worker may
             * have made one of our tasks ready while we search. */
            job = weft__ready_pop(w);
            if (!job)
                job = steal_round(w);
            if (!job)
                job = weft__inject_pop(w);
            if (!job && w->io && (round & 3) == 3 && weft__io_poll(w, false) > 0)
                job = weft__ready_pop(w);
            if (job) {
                weft__stop_searching(w);
                return job;
            }
            if (weft__latch_is_set(until)) {
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
        weft__js_wake(w);       /* jobserver.c: a token before any work */
        job = weft__ready_pop(w); /* parked in the ring: completions came in */
        if (job) {
            weft__stop_searching(w);
            return job;
        }
        if (weft__latch_is_set(until)) {
            weft__stop_searching(w);
            return NULL;
        }
    }
}
