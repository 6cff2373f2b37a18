/* SPDX-License-Identifier: MIT */
/*
 * Scoped spawn. A scope is one counter of unfinished work (the body counts as one),
 * the first error, a cancel flag and a latch for its waiter. A spawn takes a frame
 * from the worker's free list, bumps the counter and pushes the frame on the worker's
 * own deque (from an outside thread: the injector). The worker that runs a frame
 * skips it if the scope is cancelled, records a nonzero result as the scope's error
 * (first one wins, and cancels), recycles the frame, and drops the counter; whoever
 * drops it to zero sets the latch. The body's thread drops its own count after the
 * body returns and then waits on the latch, helping (a worker) or sleeping (any
 * other thread).
 *
 * The counter is kept per worker where it can be: a task that finishes adds to its
 * worker's private count of finished tasks of that scope (acct_done) instead of
 * decrementing the shared counter, and a spawn into that scope from that worker
 * takes one back (so a worker that spawns and runs a scope's tasks itself touches
 * no shared line at all). The shared counter thus never reads lower than the tasks
 * really unfinished (it counts the deferred ones as unfinished), so it reaches zero
 * only once every task finished and every deferral was handed in. A worker hands in
 * (weft__acct_flush) wherever it stops running that scope's jobs back to back:
 * before a frame of another scope, before any other job (run_job), when a wait
 * returns or a join's slow end ran jobs, before it switches fibers, before it
 * searches or parks, and before a scope's body waits. So a deferral is never held
 * across anything that could take long or wait on the scope.
 *
 * Two more owner-private shortcuts, for a tree of scopes (a scope per node, whose
 * tasks are rarely stolen). The body's worker starts with a reserve: pending starts
 * at 1 + BODY_RESERVE and that worker's deferral at BODY_RESERVE, so the body's
 * spawns take credit instead of an RMW each (the deferral counts as finished tasks
 * not yet handed in, so the invariant above holds). And when the body returns, its
 * worker runs what the body left on its deque back to back (drain_own), still
 * holding the body's count, and counts this scope's frames that finish there in a
 * local; one RMW then hands all of it in, and if that takes the counter to zero the
 * latch is never touched (nobody else can be waiting on it). Anything else due
 * first (a ready task, the injector, yielders, a low stack) hands over to the
 * general wait.
 *
 * weft_scope_limit(k): admission happens when a frame is about to run. Over the
 * limit, the frame is parked on the scope's deferred list (under the scope's lock:
 * the limited path only) and the task that finishes next admits it. So at most k
 * tasks of the scope ever run at once and no worker blocks on the limit.
 *
 * Nesting: a scope opened inside a task of scope P (the worker's dq.scope, any
 * pool) links itself into P's list of kids when it starts, and out when it has
 * finished, so P's cancel reaches it: scope_fail cancels the scope's in-flight I/O
 * and waits, then its kids, recursively. The kids list has its own spinlock
 * (klock, kids_lock()): a nested weft_scope_run takes its parent's at each end, and a
 * pthread mutex there cost ~165 instructions per nested scope (callgrind: 2 lock
 * and 2 unlock calls) against ~10; only a cancel holds it for long, while it walks
 * the kids, and waiters yield. Lock order: P's klock, then a kid's mu, then the
 * kid's klock (never the other way). A kid opened in a cancelled scope does
 * not start: -ECANCELED, body not called. Spawns pay nothing for nesting, an
 * outermost scope nothing. Join jobs carry the scope of the task that forked them
 * (weft.h), so whoever runs the b side runs it in that scope.
 *
 * Deadlines (weft_scope_deadline): an entry in the scope, armed on the pool's
 * timer (timer.c), which cancels the scope with -ETIMEDOUT. The end of a scope
 * disarms it, only if a deadline was ever set: nothing is left to cost later.
 */
#define _GNU_SOURCE
#include "backend.h"
#include "waitq.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

struct weft_scope {
    weft_pool *pool;
    _Atomic(int) err;              /* first nonzero result */
    _Atomic(bool) cancelled;
    _Atomic(unsigned) limit;       /* 0: none */
    struct weft__latch done;
    _Atomic(uint32_t) mu;          /* spinlock (spin.h): limited scopes' running
                                      and deferred, ops, waits */
    unsigned running;
    struct weft__jobq deferred;    /* frames over the limit, FIFO (under mu) */
    struct weft__op *ops;          /* in-flight I/O of its tasks (under mu; io.c) */
    struct weft_scope *parent;     /* scope of the task that opened it, or NULL */
    _Atomic(uint32_t) klock;       /* spinlock: kids and their links */
    struct weft_scope *kids;       /* scopes opened inside its tasks (klock) */
    struct weft_scope *kprev, *knext; /* in parent->kids (parent->klock) */
    _Atomic(bool) has_deadline;    /* weft_scope_deadline was called (relaxed: the
                                      scope's latch orders it before the end) */
    struct weft__deadline deadline; /* under the pool's timer lock (timer.c) */
    struct weft__cwait *waits;     /* event and channel waits of its tasks (under mu) */
    /* On a line of its own: the spawner bumps it per spawn, while the workers that
     * run the scope's frames read pool, limit and cancelled above per frame. In one
     * line, every spawn paid a miss once a thief had read them (flat spawn on 2
     * workers). */
    alignas(64) _Atomic(int64_t) pending; /* body + spawned tasks not yet finished */
};

/* The scope's lists (list.h): in-flight I/O and waits under mu, kids under klock. */
WEFT__DLIST_DEFINE(op_list, struct weft__op, sprev, snext)
WEFT__DLIST_DEFINE(wait_list, struct weft__cwait, prev, next)
WEFT__DLIST_DEFINE(kid_list, struct weft_scope, kprev, knext)

/* The scope's two spinlocks (mu, klock; spin.h). Held for a few stores, except
 * while a cancel walks a list (it cancels I/O and wakes waits): waiters then yield.
 * As pthread mutexes, the kids list's lock and unlock cost ~165 instructions per
 * nested scope and mu's init and destroy ~25 per scope (callgrind), against ~10. */
static void kids_lock(struct weft_scope *s)
{
    weft__spin_acquire(&s->klock);
}

static void kids_unlock(struct weft_scope *s)
{
    weft__spin_release(&s->klock);
}

/* The counts a scope's body starts with on its worker, for its spawns (weft_scope_run):
 * more than any body spawns between two hand-ins. */
#define BODY_RESERVE ((int64_t)1 << 40)

/* Frames use job.result as the "already admitted" mark (frames have no result). */
#define ADMITTED 1

static void scope_fail(struct weft_scope *s, int err)
{
    int zero = 0;
    atomic_compare_exchange_strong_explicit(&s->err, &zero, err, memory_order_relaxed,
                                            memory_order_relaxed);
    /* Release: tasks that see the flag also see the error. Pairs with the acquire
     * load in weft_scope_cancelled() and run_frame(). */
    if (atomic_exchange_explicit(&s->cancelled, true, memory_order_release))
        return; /* cancelled before: that call walks (or walked) the lists */
    /* In-flight I/O of its tasks: cancel it (io.c); then the scopes nested in its
     * tasks. An operation or a kid added after this walk sees the flag under mu
     * (weft__scope_op_add, link_kid). */
    weft__spin_acquire(&s->mu);
    for (struct weft__op *op = s->ops; op; op = op->snext)
        weft__op_cancel(op);
    /* Event and channel waits (event.c): each cancel ends its wait, if a waker has
     * not already; the waiter unregisters under mu, so cw is valid meanwhile. */
    for (struct weft__cwait *cw = s->waits; cw; cw = cw->next)
        cw->cancel(cw);
    weft__spin_release(&s->mu);
    kids_lock(s);
    for (struct weft_scope *k = s->kids; k; k = k->knext)
        scope_fail(k, -ECANCELED);
    kids_unlock(s);
}

int weft__scope_wait_add(struct weft_scope *s, struct weft__cwait *cw)
{
    weft__spin_acquire(&s->mu);
    /* Relaxed: mu orders it against scope_fail's walk. */
    if (atomic_load_explicit(&s->cancelled, memory_order_relaxed)) {
        weft__spin_release(&s->mu);
        return -ECANCELED;
    }
    wait_list_insert(&s->waits, NULL, cw);
    weft__spin_release(&s->mu);
    return 0;
}

void weft__scope_wait_del(struct weft_scope *s, struct weft__cwait *cw)
{
    weft__spin_acquire(&s->mu);
    wait_list_remove(&s->waits, NULL, cw);
    weft__spin_release(&s->mu);
}

void weft__scope_expire(struct weft_scope *s, int err)
{
    scope_fail(s, err);
}

/* s starts inside a task of p: onto p's kids, unless p is cancelled (-ECANCELED). */
static int link_kid(struct weft_scope *p, struct weft_scope *s)
{
    kids_lock(p);
    /* Relaxed: kids_lock orders it against scope_fail's walk, which sets the flag
     * before it takes the lock. */
    if (atomic_load_explicit(&p->cancelled, memory_order_relaxed)) {
        kids_unlock(p);
        return -ECANCELED;
    }
    s->parent = p;
    kid_list_insert(&p->kids, NULL, s);
    kids_unlock(p);
    return 0;
}

static void unlink_kid(struct weft_scope *s)
{
    struct weft_scope *p = s->parent;
    kids_lock(p);
    kid_list_remove(&p->kids, NULL, s);
    kids_unlock(p);
}

int weft__scope_op_add(struct weft_scope *s, struct weft__op *op)
{
    weft__spin_acquire(&s->mu);
    /* Relaxed: mu orders it against scope_fail's walk. */
    if (atomic_load_explicit(&s->cancelled, memory_order_relaxed)) {
        weft__spin_release(&s->mu);
        return -ECANCELED;
    }
    op_list_insert(&s->ops, NULL, op);
    weft__spin_release(&s->mu);
    return 0;
}

void weft__scope_op_del(struct weft_scope *s, struct weft__op *op)
{
    weft__spin_acquire(&s->mu);
    op_list_remove(&s->ops, NULL, op);
    weft__op_unqueue(op); /* backend.h */
    weft__spin_release(&s->mu);
}

/* n of the scope's counts are done (finished tasks, the body's own): true if that
 * took the counter to zero. acq_rel: each finisher releases its tasks' effects; the
 * last one acquires all of them. */
static bool scope_drop(struct weft_scope *s, int64_t n)
{
    return atomic_fetch_sub_explicit(&s->pending, n, memory_order_acq_rel) == n;
}

/* The same from anyone but the scope's waiter: whoever takes the counter to zero
 * sets the latch (which releases the tasks' effects to the waiter). */
static void scope_release(struct weft_scope *s, int64_t n)
{
    if (scope_drop(s, n))
        weft__latch_set(&s->done);
}

/* The finishes of s deferred on w (the body's reserve among them), taken out of the
 * deferral: the scope's waiter hands them in itself. */
static int64_t take_deferred(struct weft__worker *w, struct weft_scope *s)
{
    if (w->acct_scope != s)
        return 0;
    int64_t n = w->acct_done;
    w->acct_done = 0;
    return n;
}

void weft__acct_flush_slow(struct weft__worker *w)
{
    struct weft_scope *s = w->acct_scope;
    int64_t n = w->acct_done;
    w->acct_done = 0;
    scope_release(s, n);
}

/* Inline: with frame_get's common case inline too, a spawn that takes a frame of
 * its own list makes no call but the outside case's and the poke's. */
static inline __attribute__((always_inline)) int push_frame(weft_pool *pool,
                                                            struct weft__worker *w,
                                                            struct weft__job *f)
{
    if (!w) {
        weft__runq_inject(pool, f);
        return 0;
    }
    /* Public at once (deque.c says why), unless no other worker exists to steal
     * it: then a public frame's pop would only pay the fence for nothing. */
    int err = weft__deque_push(&w->dq, weft__tag_frame(f), pool->nthreads > 1);
    if (err)
        return err;
    weft__after_push(w); /* as in weft_join (weft.h) */
    return 0;
}

/* memcpy for size <= 64 without the call: two copies of a fixed size that overlap
 * in the middle cover any size from that size to twice it (the way memcpy itself
 * does small copies). memcpy was 4 % of a tree of scopes' time (perf, kernels uts:
 * 32 bytes per spawn). */
static inline void copy_args(unsigned char *dst, const unsigned char *src, size_t size)
{
    if (size >= 32) {
        memcpy(dst, src, 32);
        memcpy(dst + size - 32, src + size - 32, 32);
    } else if (size >= 16) {
        memcpy(dst, src, 16);
        memcpy(dst + size - 16, src + size - 16, 16);
    } else if (size >= 8) {
        memcpy(dst, src, 8);
        memcpy(dst + size - 8, src + size - 8, 8);
    } else {
        for (size_t k = 0; k < size; k++)
            dst[k] = src[k];
    }
}

static inline __attribute__((always_inline)) int spawn(weft_scope *s, weft_fn fn, void *arg,
                                                      const void *copy, size_t size)
{
    if (!s || !fn)
        return -EINVAL;
    /* Acquire: pairs with the release in scope_fail(). */
    if (atomic_load_explicit(&s->cancelled, memory_order_acquire))
        return -ECANCELED;
    weft_pool *pool = s->pool;
    struct weft__worker *w = weft__worker_of(pool);
    struct weft__job *f = weft__frame_get(pool, w);
    if (!f)
        return -ENOMEM;
    f->fn = fn;
    f->scope = s;
    f->result = 0;
    if (copy) {
        f->arg = weft__frame_of(f)->args;
        copy_args(f->arg, copy, size);
    } else {
        f->arg = arg;
    }
    weft__spawn_stamp(w, f); /* latency sample, trace flow (stats.c) */
    /* A finish of this scope deferred here pays for the spawn (see the top of the
     * file). Else relaxed: the spawner holds a count (the body's or its running
     * task's), so the counter cannot reach zero meanwhile; the push publishes the
     * frame. */
    bool credit = w && w->acct_scope == s && w->acct_done > 0;
    if (credit)
        w->acct_done--;
    else
        atomic_fetch_add_explicit(&s->pending, 1, memory_order_relaxed);
    int err = push_frame(pool, w, f);
    if (err) {
        if (credit)
            w->acct_done++;
        else
            atomic_fetch_sub_explicit(&s->pending, 1, memory_order_relaxed);
        weft__frame_set_stamp(weft__frame_of(f), 0); /* never started: no sample */
        weft__frame_put(pool, w, f);
        return err;
    }
    if (w)
        WEFT__COUNT(w, spawns);
    else
        atomic_fetch_add_explicit(&pool->ext_spawns, 1, memory_order_relaxed);
    return 0;
}

WEFT_API int weft_spawn(weft_scope *s, weft_fn fn, void *arg)
{
    return spawn(s, fn, arg, NULL, 0);
}

WEFT_API int weft_spawn_copy(weft_scope *s, weft_fn fn, const void *args, size_t size)
{
    if (size > 64 || (!args && size > 0))
        return -EINVAL;
    static const char none;
    return spawn(s, fn, NULL, size ? args : &none, size);
}

WEFT_API void weft_scope_limit(weft_scope *s, unsigned max_in_flight)
{
    if (s)
        atomic_store_explicit(&s->limit, max_in_flight, memory_order_relaxed);
}

WEFT_API void weft_scope_cancel(weft_scope *s, int err)
{
    if (s)
        scope_fail(s, err ? err : -ECANCELED);
}

WEFT_API void weft_scope_deadline(weft_scope *s, uint64_t timeout_ns)
{
    if (!s)
        return;
    if (timeout_ns == 0) {
        scope_fail(s, -ETIMEDOUT);
        return;
    }
    /* Acquire: pairs with the release in scope_fail(). */
    if (atomic_load_explicit(&s->cancelled, memory_order_acquire))
        return; /* nothing left to time */
    uint64_t now = weft__now_ns();
    uint64_t when = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
    atomic_store_explicit(&s->has_deadline, true, memory_order_relaxed);
    int err = weft__timer_arm(s->pool, &s->deadline, when);
    if (err)
        scope_fail(s, err); /* no timer: fail now rather than run unbounded */
}

WEFT_API bool weft_scope_cancelled(const weft_scope *s)
{
    /* Acquire: pairs with the release in scope_fail(). */
    return s && atomic_load_explicit(&s->cancelled, memory_order_acquire);
}

/* Run (or skip, or defer) spawned frame f of scope s on worker w. True if it
 * finished, and its count is then the caller's to hand in; false if it went onto
 * the deferred list over the scope's limit. f->fn may suspend: the caller re-reads
 * its worker. Inline in its two callers: as a call of its own it cost the general
 * path ~6 instructions per task (callgrind, benchmarks/sleep's yield). */
static inline __attribute__((always_inline)) bool
frame_exec(struct weft__worker *w, struct weft_scope *s, struct weft__job *f)
{
    weft_pool *pool = s->pool;
    unsigned limit = atomic_load_explicit(&s->limit, memory_order_relaxed);
    if (limit && f->result != ADMITTED) {
        weft__spin_acquire(&s->mu);
        if (s->running >= limit) {
            weft__jobq_push(&s->deferred, f);
            weft__spin_release(&s->mu);
            return false;
        }
        s->running++;
        weft__spin_release(&s->mu);
    }
    weft__spawn_started(w, f); /* a latency sample (stats.c) */
    /* Acquire: pairs with the release in scope_fail(). */
    if (!atomic_load_explicit(&s->cancelled, memory_order_acquire)) {
        struct weft_scope *outer = w->dq.scope;
        w->dq.scope = s;
        int r = f->fn(f->arg);
        /* f->fn may have suspended and resumed on another worker. */
        w = weft__current();
        w->dq.scope = outer;
        if (r)
            scope_fail(s, r);
    }
    struct weft__job *next = NULL;
    if (limit) {
        weft__spin_acquire(&s->mu);
        s->running--;
        if ((next = weft__jobq_pop(&s->deferred)))
            s->running++;
        weft__spin_release(&s->mu);
    }
    weft__frame_put(pool, w, f);
    if (next) {
        next->result = ADMITTED;
        if (push_frame(pool, w, next) != 0)
            weft__run_frame(w, next); /* no room in the deque: run it here */
    }
    return true;
}

/* Run (or skip, or defer) one spawned frame on worker w. */
void weft__run_frame(struct weft__worker *w, struct weft__job *f)
{
    struct weft_scope *s = f->scope;
    if (w->acct_scope != s)
        weft__acct_flush(w); /* a frame of another scope: hand in the old one's */
    if (!frame_exec(w, s, f))
        return;
    /* Deferred (the top of the file). The task may have run other scopes' frames
     * in its waits, which handed this worker's deferral to those scopes. */
    w = weft__current();
    if (w->acct_scope != s) {
        weft__acct_flush(w);
        w->acct_scope = s;
    }
    w->acct_done++;
}

/* The newest job of w's own deque above floor, if weft__worker_find_work would take
 * it next, doing on the way what find_work would do first: the look at the ring
 * every WEFT__IO_EVERY jobs (or when the backend asked). NULL, and drain_own hands
 * over to the general wait (find_work's path), when that is not the deque: a ready
 * task, injected work whose look is due, the yielders' turn, or a low stack (a wait
 * must suspend then: latch.c). Returning NULL at the first look at the ring sent a
 * flat loop's million frames down the slow path after its 32nd. Inline, here:
 * drain_own is its one caller, and a call per job (worker.c's, as it was) with
 * deque_pop's inside cost a tree of scopes 15 instructions a node (callgrind). */
static inline __attribute__((always_inline)) struct weft__job *
drain_next(struct weft__worker *w, int64_t floor)
{
    if (atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) <= floor) /* own */
        return NULL;
    weft__io_look(w);
    /* Relaxed: hints, as in find_work; a task made ready meanwhile runs at the next
     * look, as it would there. */
    if (atomic_load_explicit(&w->ready_len, memory_order_relaxed) != 0 ||
        weft__runq_yield_first(w) || weft__suspend_stack_low(w))
        return NULL;
    if (++w->inj_tick >= WEFT__INJECT_EVERY) {
        if (atomic_load_explicit(&w->pool->inj_len, memory_order_relaxed) != 0) {
            w->inj_tick = WEFT__INJECT_EVERY - 1; /* find_work's next look takes it */
            return NULL;
        }
        w->inj_tick = 0;
        w->inj_burst = 0;
    }
    return weft__deque_pop(&w->dq);
}

/* The end of a scope's body on worker w: run the jobs the body left on w's deque
 * (above floor) back to back while nothing else is due (drain_next), still
 * holding the body's count, and count the scope's own frames that finish here in a
 * local instead of the worker's deferral (which every nested scope of theirs would
 * hand in: an RMW per task of a tree of scopes). Returns those counts; *wp is the
 * worker we are on after, *floorp INT64_MIN if that is another one. The general
 * wait takes over from where this stops. */
static int64_t drain_own(struct weft__worker **wp, struct weft_scope *s, int64_t *floorp)
{
    struct weft__worker *w = *wp;
    int64_t done = 0;
    struct weft__job *job;
    while ((job = drain_next(w, *floorp)) != NULL) {
        struct weft__job *f = (struct weft__job *)((uintptr_t)job & ~WEFT__FRAME_TAG);
        if (f != job && f->scope == s && WEFT_LIKELY(w->trace == NULL)) {
            if (w->acct_scope != s)
                weft__acct_flush(w); /* as weft__run_frame */
            done += frame_exec(w, s, f);
        } else {
            weft__worker_run_job(w, job);
        }
        struct weft__worker *now = weft__current();
        if (now != w) { /* a job suspended, and we came back on another worker */
            *floorp = INT64_MIN;
            *wp = now;
            break;
        }
    }
    return done;
}

WEFT_API int weft_scope_run(weft_pool *pool, int (*body)(weft_scope *s, void *arg),
                            void *arg)
{
    /* Before any switch: weft__self itself (not weft__current(), fiber.h). */
    struct weft__worker *self = weft__self;
    if (!pool && self) {
        pool = self->pool; /* weft__pool_resolve's, without its call */
        int dead = weft__pool_check(pool);
        if (dead)
            return dead;
    } else {
        int err;
        pool = weft__pool_resolve(pool, &err);
        if (!pool)
            return err;
    }
    if (!body)
        return -EINVAL;
    /* Field by field: an initializer zeroed the whole struct with a rep stos, a
     * third of this function's time in a tree of scopes (perf, benchmarks/kernels
     * uts). pending is set below. */
    struct weft_scope s;
    s.pool = pool;
    atomic_init(&s.err, 0);
    atomic_init(&s.cancelled, false);
    atomic_init(&s.limit, 0);
    atomic_init(&s.mu, 0);
    s.running = 0;
    s.deferred = (struct weft__jobq){0};
    s.ops = NULL;
    s.parent = NULL;
    atomic_init(&s.klock, 0);
    s.kids = NULL;
    s.kprev = s.knext = NULL;
    atomic_init(&s.has_deadline, false);
    s.deadline.scope = &s;
    s.deadline.armed = false;
    s.waits = NULL;
    weft__latch_init(&s.done);
    /* Opened inside a task of another scope (of any pool): nested in it. */
    struct weft_scope *parent = self ? self->dq.scope : NULL;
    if (parent && link_kid(parent, &s) != 0) {
        return -ECANCELED;
    }

    struct weft__worker *w = self && self->pool == pool ? self : NULL;
    bool outside = !w;
    atomic_init(&s.pending, 1);
    if (outside) {
        atomic_fetch_add_explicit(&pool->outside, 1, memory_order_relaxed);
    } else {
        /* The body's spawns from this worker take their counts from a reserve
         * charged up front, as credit (the top of the file): no RMW per spawn. What
         * is left of it is handed in with the body's count. */
        weft__acct_flush(w);
        atomic_init(&s.pending, 1 + BODY_RESERVE);
        w->acct_scope = &s;
        w->acct_done = BODY_RESERVE;
    }
    /* The wait may run this worker's jobs from here up, not the ones below: those
     * belong to frames under this call (see weft__worker_find_work). */
    int64_t floor = w ? atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) : 0;
    struct weft_scope *outer = w ? w->dq.scope : NULL;
    if (w)
        w->dq.scope = &s;
    int r = body(&s, arg);
    if (!outside) {
        /* body may have suspended and resumed on another worker. */
        struct weft__worker *now = weft__current();
        if (now != w)
            floor = INT64_MIN;
        w = now;
        w->dq.scope = outer;
    }
    if (r)
        scope_fail(&s, r);
    /* The body's count and the finishes of our tasks deferred here (the reserve's
     * rest among them): held while drain_own runs what the body left on our deque,
     * then handed in with the finishes it counted, in one RMW. Whoever takes the
     * counter to zero sets the latch, unless that is us: then nobody waits on it. */
    int64_t n = 1;
    if (w) {
        n += take_deferred(w, &s);
        n += drain_own(&w, &s, &floor);
        n += take_deferred(w, &s); /* frames of ours run through the trace's path */
    }
    if (!scope_drop(&s, n)) {
        if (w)
            weft__acct_flush(w);
        weft__latch_wait_above(w, &s.done, floor);
    }
    if (atomic_load_explicit(&s.has_deadline, memory_order_relaxed))
        weft__timer_disarm(pool, &s.deadline);
    if (s.parent)
        unlink_kid(&s);
    if (outside)
        /* Release: pairs with the acquire load in weft_pool_destroy(). */
        atomic_fetch_sub_explicit(&pool->outside, 1, memory_order_release);
    return atomic_load_explicit(&s.err, memory_order_relaxed);
}
