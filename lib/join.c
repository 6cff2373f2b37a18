/* SPDX-License-Identifier: MIT */
/*
 * Fork-join and latches.
 *
 * weft_join's fast path is inline in weft.h: push b's job (on the caller's stack),
 * run a, pop b and call it. This file holds everything else: the slow end of a join
 * (b was taken by a thief, or a left extra jobs above b), joins from outside any
 * worker, the library's own out-of-line join, and the inline join's grow
 * (weft__deque_reserve).
 *
 * The latch the joiner waits on is latch.c's.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>


/* The slow end of a join: weft_join found its job not on top (a left jobs above it,
 * spawns into an outer scope, or a thief took it, or the task moved to another
 * worker) or public (a thief may be taking it). Pop and run what is above it, newest
 * first, until we reach our own job or find it gone; then wait for the thief. */
static int finish(struct weft__worker *w, struct weft__job *job, int ra)
{
    for (;;) {
        if (weft__suspend_stack_low(w))
            break; /* deep: leave them to the wait, which then suspends */
        struct weft__job *top = weft__deque_pop(&w->dq);
        if (top == job) {
            weft__acct_flush(w); /* b may run long (scope.c) */
            int rb = job->fn(job->arg);
            return ra ? ra : rb;
        }
        if (!top)
            break; /* stolen: thieves take the oldest first, so nothing is below it */
        weft__worker_run_job(w, top);
        /* That job may have suspended: we may be on another worker now, whose
         * deque does not hold our job; popping it is still helping. */
        w = weft__current();
    }
    /* Stolen: help until the thief is done with it. */
    weft__latch_wait(w, &job->latch);
    weft__acct_flush(weft__current()); /* the joiner goes on: scope.c */
    return ra ? ra : job->result;
}

WEFT_API int weft__join_finish(struct weft__worker *w, struct weft__job *job, int ra)
{
    return finish(w, job, ra);
}

/* weft_join out of line, for the library's own callers (the loops), which cannot
 * use the inline one from inside the library build. */
int weft__join_lib(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    struct weft__worker *w = weft__self;
    if (!w || !a || !b)
        return weft__join_outside(a, arg_a, b, arg_b);
    struct weft__job job;
    job.fn = b;
    job.arg = arg_b;
    job.scope = w->dq.scope;
    weft__latch_init(&job.latch);
    atomic_init(&job.idx, atomic_load_explicit(&w->dq.bottom, memory_order_relaxed));
    if (weft__deque_push(&w->dq, &job, false) != 0) { /* no memory to grow: run inline */
        int ra = a(arg_a), rb = b(arg_b);
        return ra ? ra : rb;
    }
    weft__after_push(w); /* as in weft_join */
    int ra = a(arg_a);
    w = weft__current();
    struct weft__deque *dq = &w->dq;
    int64_t i = atomic_load_explicit(&job.idx, memory_order_relaxed);
    if (atomic_load_explicit(&dq->bottom, memory_order_relaxed) == i + 1 &&
        atomic_load_explicit(&dq->split, memory_order_relaxed) <= i) {
        atomic_store_explicit(&dq->bottom, i, memory_order_relaxed); /* private: ours */
        int rb = b(arg_b);
        return ra ? ra : rb;
    }
    return finish(w, &job, ra);
}

struct join_args {
    weft_fn a, b;
    void *arg_a, *arg_b;
};

static int join_tramp(void *p)
{
    struct join_args *j = p;
    return weft_join(j->a, j->arg_a, j->b, j->arg_b);
}

WEFT_API int weft__join_outside(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    if (!a || !b)
        return -EINVAL;
    weft_pool *pool = weft_default_pool();
    if (!pool || weft__pool_check(pool) != 0) {
        int ra = a(arg_a), rb = b(arg_b);
        return ra ? ra : rb;
    }
    struct join_args j = {a, b, arg_a, arg_b};
    return weft_run(pool, join_tramp, &j);
}

/* The inline join's out-of-line grow (weft.h), exported: -ENOMEM: no room for the
 * push; the inline join then runs a and b in order. */
WEFT_API int weft__deque_reserve(struct weft__worker *w)
{
    return weft__deque_grow(&w->dq);
}
