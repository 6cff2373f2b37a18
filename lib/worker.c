/* SPDX-License-Identifier: MIT */
/*
 * The worker thread: its identity (weft__self and its readers), its start, its steal
 * order, the dispatch loop at the bottom of every fiber, and the search for work.
 *
 * A worker looks for work in this order: its own deque (newest first: the job it
 * pushed last is the one whose data is in cache), other workers' deques (oldest
 * first: the biggest pieces), victims nearest first by topology with a random start
 * within each distance class, then the pool's injector (jobs from outside threads).
 * After a bounded search (a few rounds with growing pauses, then yields) it parks
 * (park.c). The same search (weft__worker_find_work) serves three kinds of waiting,
 * so there is one protocol: the dispatch loop (until the pool stops), a join whose
 * job was stolen (until the job's latch is set), and a scope (until its last task
 * finishes). Waiting is always "help until a latch is set" (the pool's stop word is
 * a latch too; latch.c has the waits).
 *
 * Suspended tasks that may run again (runq.c) come first: the worker's own ready
 * queue before its deque, other workers' ready queues before their deques; tasks
 * that yielded come after the deque. A worker whose I/O backend has completions to
 * reap (backend.h's poll: its ring, uring.c) submits and reaps there every few
 * jobs and whenever its deque runs dry; it parks where the backend says (park.c).
 *
 * The dispatch loop ("loop" alone means a parallel loop, par.c) runs on a fiber
 * (suspend.c): it takes a job and runs it, and when the job it takes is a resume
 * job it exits to that task's fiber, since nothing of its own is left on its stack.
 * The thread itself only starts the first dispatch fiber and gets its stack back
 * when the pool stops.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "backend.h"
#include "jobserver.h"
#include "fault.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

/* Search rounds before parking: spin with growing pauses, then yield. ~20-50 us. */
#define SPIN_ROUNDS  16
#define YIELD_ROUNDS 4

WEFT_API __thread struct weft__worker *weft__self __attribute__((tls_model("initial-exec")));

/* The thread's worker, read out of line (fiber.h, THE HAZARD; weft.h's
 * WEFT__SELF_AGAIN for the exported one). */
#ifndef WEFT__CURRENT_INLINE
WEFT__TLS_READER struct weft__worker *weft__current(void)
{
    return weft__self;
}
#endif

WEFT_API WEFT__TLS_READER struct weft__worker *weft__self_get(void)
{
    return weft__self;
}

static inline uint64_t rng_next(struct weft__worker *w)
{
    return weft__rng_next(&w->rng);
}

/* ------------------------------------------------------------------------------
 * The thread
 * ---------------------------------------------------------------------------- */

int weft__worker_victims_init(weft_pool *pool, struct weft__worker *w)
{
    unsigned n = pool->nthreads;
    w->victims = WEFT__FAULT("pool.victims") ? NULL : calloc(n ? n : 1, sizeof(unsigned));
    w->group_end = WEFT__FAULT("pool.victims") ? NULL : calloc(n ? n : 1, sizeof(unsigned));
    if (!w->victims || !w->group_end)
        return -ENOMEM;
    unsigned k = 0;
    for (unsigned v = 0; v < n; v++)
        if (v != w->id)
            w->victims[k++] = v;
    /* Insertion sort by distance class, then id: n is small and this runs once. */
    for (unsigned i = 1; i < k; i++) {
        unsigned v = w->victims[i], dv = weft__topo_distance(pool->topo, w->id, v), j = i;
        while (j > 0 && weft__topo_distance(pool->topo, w->id, w->victims[j - 1]) > dv) {
            w->victims[j] = w->victims[j - 1];
            j--;
        }
        w->victims[j] = v;
    }
    w->ngroups = 0;
    for (unsigned i = 0; i < k; i++)
        if (i + 1 == k || weft__topo_distance(pool->topo, w->id, w->victims[i]) !=
                              weft__topo_distance(pool->topo, w->id, w->victims[i + 1]))
            w->group_end[w->ngroups++] = i + 1;
    return 0;
}

#ifdef WEFT_HAVE_FIBERS
/* The dispatch loop. Runs on a fiber; every fiber's bottom frame is one. */
static noreturn void dispatch_loop(void)
{
    for (;;) {
        struct weft__worker *w = weft__current();
        weft_pool *pool = w->pool;
        if (weft__latch_is_set(&pool->stop))
            weft__suspend_exit_to(w, &w->thread_fiber);
        struct weft__job *job = weft__worker_find_work(w, &pool->stop, INT64_MIN);
        if (!job)
            continue;
        if (weft__is_resume(job)) /* nothing of ours is left on this stack */
            weft__suspend_exit_to(w, weft__runq_wait_of(job)->fiber);
        w->dq.scope = NULL;
        weft__worker_run_job(w, job);
    }
}

noreturn void weft__worker_fiber_main(void *arg, void *msg)
{
    (void)arg;
    (void)msg;
    weft__suspend_after_switch(weft__current());
    dispatch_loop();
}
#endif

/* The thread's work: the dispatch loop on fibers until the pool stops. */
static void worker_run(struct weft__worker *w)
{
#ifdef WEFT_HAVE_FIBERS
    weft__fiber_init_thread(&w->thread_fiber);
    w->fiber = &w->thread_fiber;
    struct weft__fiber *f = weft__suspend_dispatch_fiber(w);
    if (f) {
        struct weft__wait none;
        weft__suspend_switch(w, f, NULL, &none, NULL);
        /* Back on the thread stack: the pool stops. The after action freed the
         * last dispatch fiber; the spares go now. */
        weft__suspend_worker_fini(w);
        return;
    }
    /* No stack: run the loop on this thread's stack; nothing can suspend. */
    fprintf(stderr, "weft: no memory for a worker stack; tasks will not suspend\n");
    w->fiber = NULL;
#endif
    while (!weft__latch_is_set(&w->pool->stop)) {
        struct weft__job *job = weft__worker_find_work(w, &w->pool->stop, INT64_MIN);
        if (job)
            weft__worker_run_job(w, job);
    }
}

void *weft__worker_main(void *p)
{
    struct weft__worker *w = p;
    weft_pool *pool = w->pool;
    weft__self = w;
    char name[16];
    snprintf(name, sizeof(name), "weft-%u", w->id); /* shows in top -H, gdb, perf */
    pthread_setname_np(pthread_self(), name);
    if (pool->flags & WEFT_POOL_PIN)
        (void)weft__topo_pin(pool->topo, w->id); /* best effort: a cpuset may forbid it */
    if (w->io->thread_init)
        w->io->thread_init(w);  /* backend.h: its ring, say */
    weft__obs_thread_start(w);  /* stats.c: clocks, trace buffer */
    if (pool->on_worker_start)
        pool->on_worker_start(w->id, pool->hook_arg);
    weft__js_thread_start(w);   /* with a jobserver: a token first */
    worker_run(w);
    if (pool->on_worker_stop)
        pool->on_worker_stop(w->id, pool->hook_arg);
    weft__self = NULL;
    return NULL;
}

/* ------------------------------------------------------------------------------
 * Running and finding jobs
 * ---------------------------------------------------------------------------- */

/* job: as a deque slot holds it (spawned frames tagged). */
void weft__worker_run_job(struct weft__worker *w, struct weft__job *job)
{
    if (WEFT_UNLIKELY(w->trace != NULL)) {
        weft__trace_run_job(w, job); /* trace.c: the same, in a slice of its own */
        return;
    }
    weft__worker_run_job_plain(w, job);
}

void weft__worker_run_job_plain(struct weft__worker *w, struct weft__job *job)
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

/* Most jobs one steal takes from a victim (the one returned included). */
#define STEAL_BATCH WEFT__STEAL_MAX

/* After stealing a spawned frame from v: take half of what else is public there (at
 * most STEAL_BATCH - 1) onto our own deque, public, so that a thief of a flat spawn
 * loop pays its misses on the victim's lines once per batch rather than once per
 * task. One claim (deque.c's weft__deque_steal_batch: one read of the victim's
 * split and one CAS on top for the batch; stealing them one by one read the line
 * the spawner writes on every push once per job). As many as our deque has room
 * for once its limit is moved up (or the array grown): pushes here must not fail,
 * the jobs are ours now. */
static void steal_more(struct weft__worker *w, struct weft__worker *v)
{
    struct weft__deque *dq = &v->dq;
    int want = STEAL_BATCH - 1;
    int64_t b = atomic_load_explicit(&w->dq.bottom, memory_order_relaxed); /* our own */
    if (want > w->dq.limit - b)
        (void)weft__deque_grow(&w->dq); /* moves limit up, or grows; else fewer */
    if (want > w->dq.limit - b)
        want = (int)(w->dq.limit - b);
    if (want <= 0)
        return;
    struct weft__job *jobs[STEAL_BATCH];
    int got = weft__deque_steal_batch(dq, jobs, want);
    if (got < 0) { /* lost to another thief or the owner: once more, then leave it */
        WEFT__COUNT(w, steal_fails);
        got = weft__deque_steal_batch(dq, jobs, want);
        if (got < 0)
            got = 0;
    }
    for (int k = 0; k < got; k++) {
        struct weft__job *job = jobs[k];
        WEFT_ASSERT(!weft__is_resume(job));
        /* Its frame's lines are in the victim's cache: start them moving now, all
         * the batch's at once, rather than one miss per frame when it runs. */
        const char *fr = (const char *)((uintptr_t)job & ~WEFT__FRAME_TAG);
        __builtin_prefetch(fr);
        __builtin_prefetch(fr + 64);
        int err = weft__deque_push(&w->dq, job, true); /* room checked: cannot fail */
        WEFT_ASSERT(err == 0);
        (void)err;
    }
    if (got) {
        WEFT__COUNT_N(w, steals, got);
        weft__after_push(w); /* as any push (weft.h) */
    }
}

/* Try victim v: its ready tasks, then its deque (a lost race means the victim has
 * work: try again at once). */
static struct weft__job *steal_from(struct weft__worker *w, struct weft__worker *v)
{
    struct weft__job *job = weft__runq_pop_ready(v);
    if (job)
        return job;
    while ((job = weft__deque_steal(&v->dq)) == WEFT__STEAL_ABORT)
        WEFT__COUNT(w, steal_fails);
    if (job) {
        WEFT__COUNT(w, steals);
        weft__trace_stole(w, v->id);
        if ((uintptr_t)job & WEFT__FRAME_TAG)
            steal_more(w, v);
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
        job = weft__runq_pop_yielded(pool->workers[w->victims[k]]);
        if (job)
            return job;
    }
    return NULL;
}

/* A look that finds injected jobs takes one, and while more wait, the next looks
 * come at once: up to INJECT_BURST in a row, then one per WEFT__INJECT_EVERY again. One
 * job per WEFT__INJECT_EVERY was all a pool whose workers run a chain of long tasks (each
 * spawning its successor) gave outside threads: benchmarks/tokio's
 * spawn_many_remote_busy2, 1 000 outside spawns beside chains of 10 us tasks, took
 * 320 ms on 2 workers and 630 ms on 1 (61 x 10 us per outside task). The jobs stay
 * in the injector meanwhile, visible to every worker (taking a batch onto the deque
 * was tried: runq.c says why not). Local work keeps at least 61 jobs in 93. */
#define INJECT_BURST 32

/* After a periodic look at the injector took a job. */
static inline void inject_burst(struct weft__worker *w)
{
    /* Relaxed: a hint; the next look takes the lock. */
    if (w->inj_burst < INJECT_BURST &&
        atomic_load_explicit(&w->pool->inj_len, memory_order_relaxed) != 0) {
        w->inj_burst++;
        w->inj_tick = WEFT__INJECT_EVERY - 1; /* the next job comes from there too */
    } else {
        w->inj_burst = 0;
    }
}

/* A look found a job, or what we wait for is set: the search ends (with job, or
 * NULL). */
static bool search_over(struct weft__worker *w, struct weft__job *job,
                        const struct weft__latch *until)
{
    if (!job && !weft__latch_is_set(until))
        return false;
    weft__park_search_end(w);
    return true;
}

/* The search, once the worker's own queues and deque had nothing above its floor:
 * rounds over the other workers (spinning, then yielding), then a park, until a
 * job turns up or until is set. Counted as searching throughout (park.c). */
static struct weft__job *search(struct weft__worker *w, const struct weft__latch *until)
{
    struct weft__job *job;
    weft__park_search_begin(w);
    for (;;) {
        for (unsigned round = 0; round < SPIN_ROUNDS + YIELD_ROUNDS; round++) {
            /* Our own ready queue too: a blocking thread or another worker may
             * have made one of our tasks ready while we search. */
            job = weft__runq_pop_ready(w);
            if (!job)
                job = steal_round(w);
            if (!job)
                job = weft__runq_pop_injected(w);
            if (!job && w->io->poll && (round & 3) == 3 && w->io->poll(w) > 0)
                job = weft__runq_pop_ready(w);
            if (search_over(w, job, until))
                return job;
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
        job = weft__runq_pop_ready(w); /* parked in the ring: completions came in */
        if (search_over(w, job, until))
            return job;
    }
}

/* One job to run, or NULL once until is set (after parking, possibly). Local jobs
 * are taken only above floor: see latch.c's wait_helping and scope.c. */
struct weft__job *weft__worker_find_work(struct weft__worker *w,
                                         const struct weft__latch *until, int64_t floor)
{
    struct weft__job *job;
    WEFT_ASSERT(!w->searching); /* the early returns below do not stop searching */
    weft__io_look(w);
    job = weft__runq_pop_ready(w);
    if (job)
        return job;
    /* Work from outside threads is looked at every WEFT__INJECT_EVERY jobs even while
     * local work lasts (Tokio looks at its global queue every 61 ticks for the same
     * reason), and always before a yielded task resumes: a yield lets everything
     * runnable run first (weft.h), the injector included. */
    if (WEFT_UNLIKELY(++w->inj_tick >= WEFT__INJECT_EVERY)) {
        w->inj_tick = 0;
        if ((job = weft__runq_pop_injected(w))) {
            inject_burst(w);
            return job;
        }
        w->inj_burst = 0;
    }
    /* Past WEFT__YIELD_MAX_PER_WORKER yielders (runq.h), every other look resumes one
     * ahead of the deque: that bounds the stacks yielded tasks hold, and the other
     * looks still reach the deque (yielders going first every time starved it: 8
     * tasks spinning on weft_yield on 1 worker never let the jobs behind them on
     * the deque start, tests/test_yield.c). A yield takes the yielders' turn
     * itself, straight to the next yielder (suspend.c's yield_direct). */
    if (weft__runq_yield_first(w) && (w->yield_turn = !w->yield_turn) &&
        ((job = weft__runq_pop_injected(w)) || (job = weft__runq_pop_yielded(w))))
        return job;
    if (atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) > floor) /* owner's own */
        job = weft__deque_pop(&w->dq);
    if (job)
        return job;
    if (w->io->poll && w->io->poll(w) > 0 && (job = weft__runq_pop_ready(w)))
        return job;
    if ((job = weft__runq_pop_injected(w)) || (job = weft__runq_pop_yielded(w)))
        return job;
    /* We stop running our own jobs (none, or only some below floor): let thieves
     * have whatever is private (deque.c). */
    weft__deque_publish(&w->dq);
    /* Holding finishes of a scope (scope.c): one look at the other workers first,
     * still deferring them. A thief of a flat spawn loop takes that scope's next
     * frame here, and running it keeps the deferral (a frame of another scope, a
     * join job or a resumed task hands it in first); handing in per stolen frame was
     * one RMW per task on the counter the spawner bumps per spawn. */
    if (w->acct_done > 0 && (job = steal_round(w)) != NULL)
        return job;
    weft__acct_flush(w); /* and hand in deferred finishes (scope.c) */
    /* That may have set what we wait for (the last tasks of a scope we help were
     * ours): then return before searching, whose start and end touch the parking
     * word and, as the last searcher beside sleepers, run the heavy barrier (a scope
     * per node on 2 workers ran 10x slower that way: benchmarks/kernels nqueens). */
    if (weft__latch_is_set(until))
        return NULL;
    return search(w, until);
}
