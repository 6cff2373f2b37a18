/* SPDX-License-Identifier: MIT */
/*
 * Suspension: tasks that wait give their stack up, workers go on (DESIGN.md,
 * "suspension" and "Suspension protocol").
 *
 * Every worker runs its loop on a fiber from the pool's stack cache, never on its
 * thread's own stack, which it keeps only to exit on. A task runs on whatever fiber
 * its worker is running; it never touches a second stack unless it waits.
 *
 * A task that waits (I/O, sleep, yield, a join or scope whose job is elsewhere with
 * nothing left to help with) calls weft__suspend(): its fiber, with every frame on
 * it (the loop at the bottom, perhaps waits that ran it), is left as it is, and the
 * worker switches to a ready task if it has one, else to a fresh loop fiber. The
 * fiber that left cannot be published while it still runs on its stack (another
 * worker could resume it at once), so the switch carries an "after" action that the
 * receiving side runs once the switch is complete: hand the wait to the reactor,
 * register it on a latch, put it on a ready queue. Go does the same with mcall().
 *
 * Ready tasks sit in per-worker FIFO queues (a spinlock each; any thread pushes, the
 * owner pops first, thieves pop when stealing). A worker looks there before its
 * deque: running a ready task first bounds the number of stacks held by suspended
 * tasks (100 000 tasks that each yield hold two stacks, not 100 000).
 *
 * Switching to a ready fiber is safe from two places only: from the bottom loop,
 * whose fiber then holds nothing and exits (its stack goes back to the cache), and
 * from a wait that first makes its own fiber resumable (registered on its latch, so
 * the latch's setter makes it ready). A resumed fiber may continue on another
 * worker: every frame below the task (the loop, waits) re-reads the current worker
 * after each call that may switch (weft__current(); fiber.h, THE HAZARD).
 *
 * Waits (joins, scopes) live in latch.c; they suspend through weft__switch_to()
 * with an after action that registers the wait record on the latch.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "reactor.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

WEFT__TLS_READER struct weft__worker *weft__current(void)
{
    return weft__self;
}

WEFT_API WEFT__TLS_READER struct weft__worker *weft__self_get(void)
{
    return weft__self;
}

/* ------------------------------------------------------------------------------
 * Ready queues
 * ---------------------------------------------------------------------------- */

/* The ready queues' lock: a test-and-test-and-set spinlock. Its critical sections
 * are a few loads and stores; a pthread mutex cost 38% of a yield's time here
 * (perf, 100 000 tasks yielding on 2 workers), this about a third of that. A
 * holder preempted mid-section (oversubscribed pools) is waited for with
 * sched_yield after a short spin. */
static inline void rq_lock(struct weft__worker *w)
{
    /* Acquire: pairs with the release in rq_unlock(). */
    while (atomic_exchange_explicit(&w->ready_lock, 1, memory_order_acquire) != 0) {
        for (unsigned k = 0; atomic_load_explicit(&w->ready_lock, memory_order_relaxed); k++) {
            if (k < 64)
                weft__cpu_relax();
            else
                sched_yield();
        }
    }
}

static inline void rq_unlock(struct weft__worker *w)
{
    /* Release: pairs with the acquire exchange in rq_lock(). */
    atomic_store_explicit(&w->ready_lock, 0, memory_order_release);
}

static void queue_push(struct weft__worker *w, struct weft__job **head,
                       struct weft__job **tail, _Atomic(size_t) *len, struct weft__wait *wt)
{
    wt->job.next = NULL;
    rq_lock(w);
    if (*tail)
        (*tail)->next = &wt->job;
    else
        *head = &wt->job;
    *tail = &wt->job;
    /* Relaxed: written under the lock; read without it only as a hint (and by
     * parkers, ordered by the protocol below). */
    atomic_store_explicit(len, atomic_load_explicit(len, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    rq_unlock(w);
    if (w == weft__current()) {
        /* The owner: as a deque push (weft.h). StoreLoad between the length store
         * and the poke load, on the parker's side only: pairs with the membarrier()
         * a parking worker runs after poking, before its last look. */
        atomic_signal_fence(memory_order_seq_cst);
        if (WEFT_UNLIKELY(atomic_load_explicit(&w->dq.poke, memory_order_relaxed) != 0))
            weft__push_poked(w);
        return;
    }
    /* Another thread: StoreLoad between the queue's length and the parking word;
     * pairs with the RMW + heavy barrier in weft__park() before its last look
     * (weft__work_visible). */
    atomic_thread_fence(memory_order_seq_cst);
    weft__notify_work(w->pool);
}

static struct weft__job *queue_pop(struct weft__worker *w, struct weft__job **head,
                                   struct weft__job **tail, _Atomic(size_t) *len)
{
    if (atomic_load_explicit(len, memory_order_relaxed) == 0)
        return NULL;
    rq_lock(w);
    struct weft__job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head)
            *tail = NULL;
        atomic_store_explicit(len, atomic_load_explicit(len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    rq_unlock(w);
    return j ? (struct weft__job *)((uintptr_t)j | WEFT__RESUME_TAG) : NULL;
}

void weft__ready_push(struct weft__worker *w, struct weft__wait *wt)
{
    queue_push(w, &w->ready_head, &w->ready_tail, &w->ready_len, wt);
}

struct weft__job *weft__ready_pop(struct weft__worker *w)
{
    return queue_pop(w, &w->ready_head, &w->ready_tail, &w->ready_len);
}

/* Yielded tasks wait behind the deque, so that a task spinning on weft_yield lets
 * new work run; but each holds a stack, so past this many per worker they go first
 * (100 000 tasks that each yield then hold a few stacks per worker, not 100 000). */
#define YIELD_MAX_PER_WORKER 4u

bool weft__yield_first(struct weft__worker *w)
{
    return atomic_load_explicit(&w->yield_len, memory_order_relaxed) >= YIELD_MAX_PER_WORKER;
}

struct weft__job *weft__yield_pop(struct weft__worker *w)
{
    return queue_pop(w, &w->yield_head, &w->yield_tail, &w->yield_len);
}

static struct weft__wait *wait_of(struct weft__job *resume)
{
    return (struct weft__wait *)(void *)((uintptr_t)resume & ~WEFT__RESUME_TAG);
}

struct weft__fiber *weft__resume_fiber(struct weft__job *resume)
{
    return wait_of(resume)->fiber;
}

void weft__ready(struct weft__worker *hint, struct weft__wait *wt)
{
    struct weft__worker *w = weft__current();
    if (!hint)
        hint = wt->home;
    if (!w || w->pool != hint->pool)
        w = hint;
    weft__ready_push(w, wt);
}

#ifdef WEFT_HAVE_FIBERS

/* ------------------------------------------------------------------------------
 * Switching
 * ---------------------------------------------------------------------------- */

static noreturn void loop_main(void *arg, void *msg);

/* Run the action the fiber that switched here left for us. */
static void run_after(struct weft__worker *w)
{
    weft__after_fn fn = w->after;
    if (fn) {
        WEFT__NOISE(); /* widen the window between a switch and its publication */
        w->after = NULL;
        fn(w, w->after_wt, w->after_arg);
    }
}

/* A fresh loop fiber: a spare one if any, else one from the cache. */
struct weft__fiber *weft__loop_fiber(struct weft__worker *w)
{
    if (w->nspare)
        return w->spare[--w->nspare];
    struct weft__fiber *f;
    if (weft__fiber_create(&w->pool->stacks, &f, loop_main, NULL) != 0)
        return NULL;
    return f;
}

/* After an exit: the fiber that left is dead. Every cache fiber is a loop fiber
 * (loop_main), so keep a few, fresh again, for the next suspensions: a worker that
 * suspends and resumes tasks all the time then never takes the cache's lock (two
 * mutex round trips per suspension otherwise: 10% of a yield, perf). */
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

/* Leave the running fiber for good and run to. */
static noreturn void exit_to(struct weft__worker *w, struct weft__fiber *to)
{
    weft__acct_flush(w); /* the fiber we resume may run long (scope.c) */
    struct weft__fiber *from = w->fiber;
    w->after = after_exit;
    w->after_from = from;
    w->fiber = to;
    weft__fiber_exit(from, to, NULL);
}

/* Leave the running fiber (suspended) for to; after(w', wt, arg) runs on the other
 * side. Returns when something resumes this fiber, on any worker. */
void weft__switch_to(struct weft__worker *w, struct weft__fiber *to, weft__after_fn after,
                     struct weft__wait *wt, void *arg)
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

/* The worker loop. Runs on a fiber; every fiber's bottom frame is one. */
static noreturn void bottom_loop(void)
{
    for (;;) {
        struct weft__worker *w = weft__current();
        weft_pool *pool = w->pool;
        if (weft__latch_is_set(&pool->stop))
            exit_to(w, &w->thread_fiber);
        struct weft__job *job = weft__find_work(w, &pool->stop, INT64_MIN);
        if (!job)
            continue;
        if (weft__is_resume(job))
            exit_to(w, wait_of(job)->fiber); /* nothing of ours is left on this stack */
        w->dq.scope = NULL;
        weft__run_job(w, job);
    }
}

static noreturn void loop_main(void *arg, void *msg)
{
    (void)arg;
    (void)msg;
    run_after(weft__current());
    bottom_loop();
}

int weft__sched_worker_init(struct weft__worker *w)
{
    struct weft__fiber *f;
    if (weft__fiber_create(&w->pool->stacks, &f, loop_main, NULL) != 0)
        return -ENOMEM;
    w->spare[w->nspare++] = f;
    return 0;
}

void weft__sched_thread(struct weft__worker *w)
{
    weft__fiber_init_thread(&w->thread_fiber);
    w->fiber = &w->thread_fiber;
    struct weft__fiber *f = weft__loop_fiber(w);
    if (!f) {
        /* No stack: run the loop on this thread's stack; nothing can suspend. */
        fprintf(stderr, "weft: no memory for a worker stack; tasks will not suspend\n");
        w->fiber = NULL;
        for (;;) {
            if (weft__latch_is_set(&w->pool->stop))
                return;
            struct weft__job *job = weft__find_work(w, &w->pool->stop, INT64_MIN);
            if (job)
                weft__run_job(w, job);
        }
    }
    struct weft__wait none;
    weft__switch_to(w, f, NULL, &none, NULL);
    /* Back on the thread stack: the pool stops. run_after freed the last loop. */
    while (w->nspare)
        weft__fiber_destroy(w->spare[--w->nspare]);
}

int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg)
{
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return -ENOMEM;
    struct weft__job *r = weft__ready_pop(w);
    struct weft__fiber *to = r ? wait_of(r)->fiber : weft__loop_fiber(w);
    if (!to)
        return -ENOMEM;
    weft__switch_to(w, to, after, wt, arg);
    return 0;
}

static void after_yield(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    (void)arg;
    queue_push(w, &w->yield_head, &w->yield_tail, &w->yield_len, wt);
}

/* The yielded task to switch to straight from a yield, or NULL: only when nothing
 * else could run before it (nothing ready, on our deque, injected, or completed in
 * our ring), which is what weft__find_work would decide on a loop fiber. Then a
 * yield is one switch instead of two (to a loop fiber, and from it to the next
 * yielder): benchmarks/tokio yield_many on 1 worker, 200 tasks yielding in turn.
 * Also taking this path when enough yielders wait that find_work would let them go
 * first, ahead of a non-empty deque, made benchmarks/sleep's one yield per task
 * slower on 2 workers (53 -> 91-187 ns): left to the loop. */
static struct weft__job *yield_direct(struct weft__worker *w)
{
    if (atomic_load_explicit(&w->yield_len, memory_order_relaxed) == 0 ||
        atomic_load_explicit(&w->ready_len, memory_order_relaxed) != 0 ||
        weft__deque_looks_nonempty(&w->dq) ||
        atomic_load_explicit(&w->pool->inj_len, memory_order_relaxed) != 0)
        return NULL;
    if (w->io && (++w->tick >= WEFT__IO_EVERY || weft__io_pending(w)))
        return NULL; /* let the loop look at the ring */
    return weft__yield_pop(w);
}

bool weft__yield(void)
{
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return false;
    /* Behind whatever is ready and whatever is on the deque (weft__find_work). */
    struct weft__wait wt;
    struct weft__job *next = yield_direct(w);
    if (next) {
        weft__switch_to(w, wait_of(next)->fiber, after_yield, &wt, NULL);
        return true;
    }
    return weft__suspend(&wt, after_yield, NULL) == 0;
}

#else /* !WEFT_HAVE_FIBERS: nothing suspends; workers run on their thread stacks */

int weft__sched_worker_init(struct weft__worker *w)
{
    (void)w;
    return 0;
}

void weft__sched_thread(struct weft__worker *w)
{
    while (!weft__latch_is_set(&w->pool->stop)) {
        struct weft__job *job = weft__find_work(w, &w->pool->stop, INT64_MIN);
        if (job)
            weft__run_job(w, job);
    }
}

int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg)
{
    (void)wt;
    (void)after;
    (void)arg;
    return -ENOMEM;
}

bool weft__yield(void)
{
    return false;
}

#endif

/* Is less than a quarter of the running fiber's stack left? Then a wait stops
 * running other jobs on top of it (each would nest deeper: a loop whose items wait
 * splits again and again, and waits run the halves) and suspends instead. */
bool weft__stack_low(struct weft__worker *w)
{
#ifdef WEFT_HAVE_FIBERS
    struct weft__fiber *f = w->fiber;
    if (!f || !f->stack)
        return false;
    char *sp = __builtin_frame_address(0);
    return sp - (char *)f->stack_lo < (ptrdiff_t)(f->stack_size / 4);
#else
    (void)w;
    return false;
#endif
}
