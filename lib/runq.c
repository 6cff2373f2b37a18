/* SPDX-License-Identifier: MIT */
/*
 * The run queues besides the deques: what a worker can take that is not a job on
 * some deque.
 *
 *  - Each worker's ready queue: suspended tasks that may run again (a latch they
 *    wait on was set, their I/O completed). FIFO; any thread pushes (a setter, a
 *    blocking thread, another worker), the owner pops first and thieves pop when
 *    stealing (worker.c). A worker looks there before its deque: running a ready
 *    task first bounds the number of stacks held by suspended tasks (100 000 tasks
 *    that each yield hold two stacks, not 100 000).
 *  - Each worker's yield queue: tasks that called weft_yield, taken after the deque
 *    (so a task spinning on weft_yield lets new work run) unless too many wait.
 *  - The pool's injector: jobs from threads that are not workers of the pool
 *    (weft_run, a spawn from outside), under the same kind of spinlock (a pthread
 *    mutex there went to futex waits in Tokio's spawn_many_remote_idle port: the
 *    spawning thread and the workers popping take it once per task). Taken one at
 *    a time (weft__runq_pop_injected says why not in batches); a worker with local
 *    work takes up to INJECT_BURST of them in a row once it finds some (worker.c).
 *
 * The ready and yield queues of a worker share one lock, a test-and-test-and-set
 * spinlock: its critical sections are a few loads and stores, and a pthread mutex
 * cost 38% of a yield's time here (perf, 100 000 tasks yielding on 2 workers), this
 * about a third of that. A holder preempted mid-section (oversubscribed pools) is
 * waited for with sched_yield after a short spin. Each queue keeps its length in an
 * atomic beside it, written under the lock and read without it as a hint: a pop
 * looks at the length before it takes the lock, and a parker's last look
 * (weft__runq_work_visible) reads only lengths.
 *
 * A push is a publication the parking protocol must see (park.c): the owner's push
 * ends as a deque push does (weft__after_push, weft.h), any other thread's with a
 * full fence and a look at the parking word (weft__park_notify).
 *
 * Resume jobs: a pop hands out the suspended task's wait record with both tag bits
 * set (WEFT__RESUME_TAG, runq.h), so that whoever takes it from find_work knows to
 * switch to its fiber rather than call it.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <sched.h>

/* The ready queues' lock (see the top of the file). */
static inline void rq_lock(struct weft__worker *w)
{
    weft__spin_acquire(&w->ready_lock);
}

static inline void rq_unlock(struct weft__worker *w)
{
    weft__spin_release(&w->ready_lock);
}

static void queue_push(struct weft__worker *w, struct weft__jobq *q, _Atomic(size_t) *len,
                       struct weft__wait *wt)
{
    rq_lock(w);
    weft__jobq_push(q, &wt->job);
    /* Relaxed: written under the lock; read without it only as a hint (and by
     * parkers, ordered by the protocol below). */
    atomic_store_explicit(len, atomic_load_explicit(len, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    rq_unlock(w);
    if (w == weft__current()) {
        weft__after_push(w); /* the owner: as a deque push, for the length store */
        return;
    }
    /* Another thread: StoreLoad between the queue's length and the parking word;
     * pairs with the RMW + heavy barrier in weft__park() before its last look
     * (weft__runq_work_visible). */
    weft__fence();
    weft__park_notify(w->pool);
}

static struct weft__job *queue_pop(struct weft__worker *w, struct weft__jobq *q,
                                   _Atomic(size_t) *len)
{
    if (atomic_load_explicit(len, memory_order_relaxed) == 0)
        return NULL;
    rq_lock(w);
    struct weft__job *j = weft__jobq_pop(q);
    if (j)
        atomic_store_explicit(len, atomic_load_explicit(len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    rq_unlock(w);
    return j ? (struct weft__job *)((uintptr_t)j | WEFT__RESUME_TAG) : NULL;
}

void weft__runq_push_ready(struct weft__worker *w, struct weft__wait *wt)
{
    queue_push(w, &w->ready, &w->ready_len, wt);
}

struct weft__job *weft__runq_pop_ready(struct weft__worker *w)
{
    return queue_pop(w, &w->ready, &w->ready_len);
}

void weft__runq_ready(struct weft__worker *hint, struct weft__wait *wt)
{
    struct weft__worker *w = weft__current();
    if (!hint)
        hint = wt->home;
    if (!w || w->pool != hint->pool)
        w = hint;
    weft__runq_push_ready(w, wt);
}

void weft__runq_push_yielded(struct weft__worker *w, struct weft__wait *wt)
{
    queue_push(w, &w->yielded, &w->yield_len, wt);
}

struct weft__job *weft__runq_pop_yielded(struct weft__worker *w)
{
    return queue_pop(w, &w->yielded, &w->yield_len);
}

void weft__runq_inject(weft_pool *pool, struct weft__job *job)
{
    weft__spin_acquire(&pool->inj_lock);
    weft__jobq_push(&pool->inj, job);
    atomic_store_explicit(&pool->inj_len,
                          atomic_load_explicit(&pool->inj_len, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    weft__spin_release(&pool->inj_lock);
    /* StoreLoad between the injection and the parking-word load; pairs with the
     * RMW + heavy barrier in weft__park(). Not a hot path: a plain fence. */
    weft__fence();
    weft__park_notify(pool);
}

/* One job at a time, the oldest. Taking a batch onto the worker's deque (as Tokio
 * moves one into its local queue) was tried and reverted: the deque is LIFO for its
 * owner, so injected jobs under a task that keeps spawning its successor never ran
 * (benchmarks/tokio spawn_many_remote_busy2 timed out on 1 and 2 workers), where the
 * injector itself is looked at every WEFT__INJECT_EVERY jobs (worker.c). */
struct weft__job *weft__runq_pop_injected(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    if (atomic_load_explicit(&pool->inj_len, memory_order_relaxed) == 0)
        return NULL;
    weft__spin_acquire(&pool->inj_lock);
    struct weft__job *job = weft__jobq_pop(&pool->inj);
    struct weft__job *ret = NULL;
    if (job) {
        ret = job->scope ? weft__tag_frame(job) : job; /* deque slots tag frames */
        atomic_store_explicit(&pool->inj_len,
                              atomic_load_explicit(&pool->inj_len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    weft__spin_release(&pool->inj_lock);
    return ret;
}

bool weft__runq_work_visible(weft_pool *pool)
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
