/* SPDX-License-Identifier: MIT */
/*
 * Suspension: tasks that wait give their stack up, workers go on (DESIGN.md,
 * "suspension" and "Suspension protocol").
 *
 * Every worker runs its dispatch loop (worker.c) on a fiber from the pool's stack
 * cache, never on its thread's own stack, which it keeps only to exit on. A task
 * runs on whatever fiber its worker is running; it never touches a second stack
 * unless it waits.
 *
 * A task that waits (I/O, sleep, yield, a join or scope whose job is elsewhere with
 * nothing left to help with) calls weft__suspend(): its fiber, with every frame on
 * it (the dispatch loop at the bottom, perhaps waits that ran it), is left as it
 * is, and the worker switches to a ready task if it has one, else to a fresh
 * dispatch fiber. The fiber that left cannot be published while it still runs on
 * its stack (another worker could resume it at once), so the switch carries an
 * "after" action that the receiving side runs once the switch is complete: hand the
 * wait to the reactor, register it on a latch (latch.c), put it on a ready or yield
 * queue (runq.c). Go does the same with mcall().
 *
 * Switching to a ready fiber is safe from two places only: from the dispatch loop,
 * whose fiber then holds nothing and exits (weft__suspend_exit_to: its stack goes
 * back to the spares or the cache), and from a wait that first makes its own fiber
 * resumable (registered on its latch, so the latch's setter makes it ready). A
 * resumed fiber may continue on another worker: every frame below the task (the
 * dispatch loop, waits) re-reads the current worker after each call that may
 * switch (weft__current(); fiber.h, THE HAZARD).
 *
 * Stack depth: a wait runs other jobs on top of itself while it helps (latch.c), and
 * each nests deeper. Once less than a quarter of the fiber's stack is left
 * (weft__suspend_stack_low) a wait stops helping and suspends instead, so that a
 * fresh fiber runs the work.
 *
 * Every fiber of the cache is a dispatch fiber (its entry is the dispatch loop), so
 * a worker keeps up to WEFT__SPARE_FIBERS of the ones that exited, reset, for its
 * next suspensions: a worker that suspends and resumes tasks all the time then
 * never takes the cache's lock.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "backend.h"

#include <errno.h>

#ifdef WEFT_HAVE_FIBERS

/* Run the action the fiber that switched here left for us. */
static inline void run_after(struct weft__worker *w)
{
    weft__after_fn fn = w->after;
    if (fn) {
        WEFT__NOISE(); /* widen the window between a switch and its publication */
        w->after = NULL;
        fn(w, w->after_wt, w->after_arg);
    }
}

void weft__suspend_after_switch(struct weft__worker *w)
{
    run_after(w);
}

/* A fresh dispatch fiber: a spare one if any, else one from the cache. */
struct weft__fiber *weft__suspend_dispatch_fiber(struct weft__worker *w)
{
    if (w->nspare)
        return w->spare[--w->nspare];
    struct weft__fiber *f;
    if (weft__fiber_create(&w->pool->stacks, &f, weft__worker_fiber_main, NULL) != 0)
        return NULL;
    return f;
}

/* After an exit: the fiber that left is dead. Every cache fiber is a dispatch fiber
 * (weft__worker_fiber_main), so keep a few, fresh again, for the next suspensions
 * (two mutex round trips per suspension otherwise: 10% of a yield, perf). */
static void after_exit(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    (void)wt;
    (void)arg;
    struct weft__fiber *f = w->after_from;
    if (w->nspare < sizeof(w->spare) / sizeof(w->spare[0]) && f->stack) {
        weft__fiber_reset(f);
        w->spare[w->nspare++] = f;
    } else {
        weft__fiber_destroy(f);
    }
}

noreturn void weft__suspend_exit_to(struct weft__worker *w, struct weft__fiber *to)
{
    weft__acct_flush(w); /* the fiber we resume may run long (scope.c) */
    struct weft__fiber *from = w->fiber;
    w->after = after_exit;
    w->after_from = from;
    w->fiber = to;
    weft__fiber_exit(from, to, NULL);
}

void weft__suspend_switch(struct weft__worker *w, struct weft__fiber *to,
                          weft__after_fn after, struct weft__wait *wt, void *arg)
{
    struct weft__fiber *from = w->fiber;
    struct weft_scope *scope = w->dq.scope;
    struct weft__trace_saved tr;
    weft__trace_leave(w, &tr); /* trace.c: this task's slice ends */
    w->switches++;
    /* The fiber that leaves may have private jobs on the deque: let thieves have
     * them while it waits (deque.c); and finishes it deferred count (scope.c). */
    weft__deque_publish(&w->dq);
    weft__acct_flush(w);
    wt->fiber = from;
    wt->home = w;
    w->after = after;
    w->after_wt = wt;
    w->after_arg = arg;
    w->after_from = from;
    w->fiber = to;
    weft__fiber_switch(from, to, NULL);
    w = weft__current();
    run_after(w);
    w->dq.scope = scope;
    weft__trace_back(w, &tr);  /* and a new one begins, on this worker */
}

int weft__suspend_worker_init(struct weft__worker *w)
{
    struct weft__fiber *f;
    if (weft__fiber_create(&w->pool->stacks, &f, weft__worker_fiber_main, NULL) != 0)
        return -ENOMEM;
    w->spare[w->nspare++] = f;
    return 0;
}

void weft__suspend_worker_fini(struct weft__worker *w)
{
    while (w->nspare)
        weft__fiber_destroy(w->spare[--w->nspare]);
}

int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg)
{
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return -ENOMEM;
    struct weft__job *r = weft__runq_pop_ready(w);
    struct weft__fiber *to = r ? weft__runq_wait_of(r)->fiber
                               : weft__suspend_dispatch_fiber(w);
    if (!to)
        return -ENOMEM;
    weft__suspend_switch(w, to, after, wt, arg);
    return 0;
}

static void after_yield(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    (void)arg;
    weft__runq_push_yielded(w, wt);
}

/* The yielded task to switch to straight from a yield, or NULL: only when
 * weft__worker_find_work on a dispatch fiber would pick it next. That is: nothing
 * ready or injected, no look at the ring due (the backend's poll), and either an
 * empty deque or the yielders' turn ahead of it (past WEFT__YIELD_MAX_PER_WORKER
 * yielders find_work resumes one every other look, runq.c; this path takes that
 * turn the same way, through yield_turn, so the deque still gets every other look).
 * Then a yield is one switch instead of two (to a dispatch fiber, which is reset and
 * kept as a spare when it exits, and from it to the next yielder).
 * - An empty deque: benchmarks/tokio yield_many, 200 tasks yielding in turn.
 * - The yielders' turn: benchmarks/sleep, one yield per task with 100k tasks on the
 *   deque. Its "yield - empty" column, 3 alternated runs each, ns (before: the
 *   dispatch fiber every time): 1 worker, io_uring 119-130 -> 42-56, blocking
 *   113-135 -> 32-47; 2 workers 61-75 -> 27-33 and 61-94 -> 25-45. callgrind, 1
 *   worker: 888 -> 677 instructions per task. (An earlier try of this case, which
 *   did not keep the turn, had made 2 workers slower: 53 -> 91-187 ns.) */
static struct weft__job *yield_direct(struct weft__worker *w)
{
    if (atomic_load_explicit(&w->yield_len, memory_order_relaxed) == 0 ||
        atomic_load_explicit(&w->ready_len, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&w->pool->inj_len, memory_order_relaxed) != 0)
        return NULL;
    bool turn = false; /* taking the yielders' turn ahead of a non-empty deque */
    if (weft__deque_looks_nonempty(&w->dq)) {
        if (!weft__runq_yield_first(w) || w->yield_turn)
            return NULL; /* the deque's turn: find_work pops it */
        turn = true;
    }
    if (weft__io_due(w))
        return NULL; /* let the dispatch loop look at the backend (backend.h) */
    struct weft__job *j = weft__runq_pop_yielded(w);
    if (j && turn)
        w->yield_turn = true; /* as find_work's flip: the deque goes next */
    return j;
}

bool weft__suspend_yield(void)
{
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return false;
    /* Behind whatever is ready and whatever is on the deque (weft__worker_find_work). */
    struct weft__wait wt;
    struct weft__job *next = yield_direct(w);
    if (next) {
        weft__suspend_switch(w, weft__runq_wait_of(next)->fiber, after_yield, &wt, NULL);
        return true;
    }
    return weft__suspend(&wt, after_yield, NULL) == 0;
}

#else /* !WEFT_HAVE_FIBERS: nothing suspends; workers run on their thread stacks */

int weft__suspend_worker_init(struct weft__worker *w)
{
    (void)w;
    return 0;
}

int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg)
{
    (void)wt;
    (void)after;
    (void)arg;
    return -ENOMEM;
}

bool weft__suspend_yield(void)
{
    return false;
}

#endif

/* Test hook (tests/test_reactor.c): the pool's stack cache, free and in all. */
void weft__pool_stack_counts(const weft_pool *pool, size_t *nfree, size_t *total)
{
#ifdef WEFT_HAVE_FIBERS
    struct weft__stack_cache *c = (struct weft__stack_cache *)&pool->stacks;
    *nfree = weft__stack_cache_nfree(c);
    *total = weft__stack_cache_total(c);
#else
    (void)pool;
    *nfree = *total = 0;
#endif
}
