/* SPDX-License-Identifier: MIT */
/*
 * Fork-join and latches.
 *
 * weft_join's fast path is inline in weft.h: push b's job (on the caller's stack),
 * run a, pop b and call it. This file holds everything else: the slow end of a join
 * (b was taken by a thief, or a left extra jobs above b), joins from outside any
 * worker, and the latch that a stolen job's owner waits on.
 *
 * Latch protocol (state word): 0 pending, 1 set, 2 pending and a waiter registered,
 * 3 pending and a suspended task waiting (sched.c says how a waiter gets there).
 * The waiter stores its identity in l->waiter and CASes 0 -> 2. The setter, if it
 * sees 2, reads l->waiter *before* storing 1, because once the state reads 1 the
 * waiter may return and the latch (on its stack) is gone. After the store it wakes
 * the waiter: a worker through weft__unpark (the worker outlives the latch), a plain
 * thread through a futex wake on the state word's address (a wake on a stale address
 * is harmless: futex waiters re-check their word).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>


void weft__latch_set(struct weft__latch *l)
{
    /* Acquire: pairs with the release CASes that register a waiter (we read it). */
    uint32_t s = atomic_load_explicit(&l->state, memory_order_acquire);
    for (;;) {
        if (s == 0) {
            /* Release: publishes the job's result; pairs with the acquire loads of
             * the state by the waiter. Failure (acquire): a waiter registered. */
            if (atomic_compare_exchange_weak_explicit(&l->state, &s, 1,
                                                      memory_order_release,
                                                      memory_order_acquire))
                return;
            continue;
        }
        if (s == 3) {
            /* A suspended task (sched.c): only we leave 3, and it cannot run (and
             * free the latch) before we make it ready. */
            struct weft__wait *wt = l->waiter;
            /* Release: as above. */
            atomic_store_explicit(&l->state, 1, memory_order_release);
            weft__ready(weft__current(), wt);
            return;
        }
        WEFT_ASSERT(s == 2);
        struct weft__worker *waiter = l->waiter;
        /* Release: as above. A CAS, not a store: a waiter that moved or suspends
         * leaves 2 for 0 meanwhile (sched.c), and then waiter may be stale. Once it
         * reads 1, l may be freed. */
        if (!atomic_compare_exchange_weak_explicit(&l->state, &s, 1, memory_order_release,
                                                   memory_order_acquire))
            continue;
        if (waiter)
            weft__unpark(waiter);
        else
            weft__futex_wake(&l->state, 1);
        return;
    }
}

void weft__latch_wait(struct weft__worker *w, struct weft__latch *l)
{
    weft__latch_wait_floor(w, l,
                           w ? atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) : 0);
}

void weft__latch_wait_floor(struct weft__worker *w, struct weft__latch *l, int64_t floor)
{
    /* Acquire: pairs with the release in weft__latch_set. */
    if (atomic_load_explicit(&l->state, memory_order_acquire) == 1)
        return;
    l->waiter = w;
    uint32_t zero = 0;
    /* Release: publishes l->waiter; pairs with the acquire load in latch_set.
     * Failure means the latch was set (acquire: see its result). */
    if (!atomic_compare_exchange_strong_explicit(&l->state, &zero, 2,
                                                 memory_order_release,
                                                 memory_order_acquire))
        return;
    if (w) {
        weft__wait_latch(w, l, floor);
        return;
    }
    /* A thread that is no worker sleeps at once. Spinning first was measured and
     * rejected: with as many workers as cores the spinner takes a core from them
     * (collect n=1M on 2 workers: 0.93x serial with a 20 us spin, 1.84x without)
     * and the woken worker waits for the spinner's core (wake: 21.8 us vs 1.4 us). */
    /* Acquire: pairs with the release store in latch_set. */
    while (atomic_load_explicit(&l->state, memory_order_acquire) != 1)
        weft__futex_wait(&l->state, 2);
}

/* The slow end of a join. slot: the job as its deque slot holds it (tagged or not).
 * t: the top weft_join read after storing bottom = job->idx, or -1 if it did not
 * pop because bottom was not idx + 1 (deque indices are never negative). */
static int finish(struct weft__worker *w, struct weft__job *job, struct weft__job *slot,
                  int64_t t, int ra)
{
    struct weft__deque *dq = &w->dq;
    if (t >= 0) {
        /* weft_join stored bottom = i and read top t >= i. Not job->idx: a thief
         * that took the job meanwhile has marked that taken (worker.c). */
        int64_t i = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
        bool mine = false;
        if (t == i) {
            /* Last item: race the thieves. seq_cst pairs with their CAS. */
            mine = atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1,
                                                           memory_order_seq_cst,
                                                           memory_order_relaxed);
        }
        atomic_store_explicit(&dq->bottom, i + 1, memory_order_relaxed);
        if (mine) {
            int rb = job->fn(job->arg);
            return ra ? ra : rb;
        }
    } else {
        /* a left jobs above ours (spawns into an outer scope): run them first,
         * newest first, until we reach our own job or find it stolen. */
        for (;;) {
            if (weft__stack_low(w))
                break; /* deep: leave them to the wait, which then suspends */
            struct weft__job *top = weft__deque_pop(dq);
            if (top == slot) {
                int rb = job->fn(job->arg);
                return ra ? ra : rb;
            }
            if (!top)
                break;
            weft__run_job(w, top);
            /* That job may have suspended: we may be on another worker now, whose
             * deque does not hold our job; popping it is still helping. */
            w = weft__current();
            dq = &w->dq;
        }
    }
    /* Stolen: help until the thief is done with it. */
    weft__latch_wait(w, &job->latch);
    return ra ? ra : job->result;
}

WEFT_API int weft__join_finish(struct weft__worker *w, struct weft__job *job,
                               int64_t t, int ra)
{
    return finish(w, job, job, t, ra);
}

int weft__join_fenced(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    struct weft__worker *w = weft__self;
    if (!w || !a || !b)
        return weft__join_outside(a, arg_a, b, arg_b);
    struct weft__job job;
    job.fn = b;
    job.arg = arg_b;
    job.scope = w->dq.scope;
    atomic_init(&job.latch.state, 0);
    struct weft__job *slot = (struct weft__job *)((uintptr_t)&job | WEFT__FENCED_TAG);
    atomic_init(&job.idx, atomic_load_explicit(&w->dq.bottom, memory_order_relaxed));
    if (weft__deque_push(&w->dq, slot) != 0) { /* no memory to grow: run inline */
        int ra = a(arg_a), rb = b(arg_b);
        return ra ? ra : rb;
    }
    /* As in weft_join: StoreLoad between the bottom store and the poke load. */
    atomic_signal_fence(memory_order_seq_cst);
    if (WEFT_UNLIKELY(atomic_load_explicit(&w->dq.poke, memory_order_relaxed) != 0))
        weft__push_poked(w);
    int ra = a(arg_a);
    w = weft__current();
    struct weft__deque *dq = &w->dq;
    int64_t i = atomic_load_explicit(&job.idx, memory_order_relaxed), t = -1;
    /* Ours only if the slot still holds it (weft.h). */
    if (atomic_load_explicit(&dq->bottom, memory_order_relaxed) == i + 1 &&
        atomic_load_explicit(&dq->slots[i & dq->mask], memory_order_relaxed) == slot) {
        atomic_store_explicit(&dq->bottom, i, memory_order_relaxed);
        /* StoreLoad between the bottom store and the top load; pairs with the plain
         * fence a thief runs for tagged slots (deque.c). */
        atomic_thread_fence(memory_order_seq_cst);
        t = atomic_load_explicit(&dq->top, memory_order_relaxed);
        if (t < i) {
            int rb = b(arg_b);
            return ra ? ra : rb;
        }
    }
    return finish(w, &job, slot, t, ra);
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
