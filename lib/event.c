/* SPDX-License-Identifier: MIT */
/*
 * Events, and the wait-queue protocol that events and channels (chan.c) share.
 *
 * A waiter never spins and never holds its worker: it puts a record (struct
 * weft__waiter, waitq.h) on its own stack, links it on the object's queue under the
 * object's short lock, and waits on the record's latch with weft__latch_wait_suspended():
 * inside a task the task suspends and the worker runs other work; outside, the
 * thread sleeps on the latch's futex. So there is one wait/wake protocol (latch.c);
 * this file only decides who sets which latch. weft__latch_wait is not used: it
 * helps, running other jobs on top of the waiter, and the job that would set the
 * latch may be one of the frames it buries (an event set by the task below).
 *
 * The record's state, under the object's lock:
 *
 *   NEW      the waiter is between its two lock sections (registering on its scope)
 *   LINKED   on the queue: a waker or the canceller may take it
 *   DONE     taken; status is final (0, -EPIPE, -ECANCELED)
 *
 * Whoever moves a record from LINKED to DONE, under the lock, owns it: it unlinks it,
 * writes its status (and, for a channel, copies the element), releases the lock and
 * then sets its latch, exactly once. A waker and a canceller that race both take the
 * lock; the second finds DONE and leaves the record alone. The latch's release
 * (weft__latch_set) publishes the status and the element to the waiter.
 *
 * Cancellation: a waiter inside a task of a scope registers a struct weft__cwait on
 * the scope before it links its record (scope.c keeps the list beside the I/O
 * operations'). scope_fail() calls waiter_cancel() for each under the scope's lock,
 * which takes the object's lock: lock order scope -> object, never the reverse (a
 * waiter registers between its two lock sections, holding neither). A cancel that
 * comes while the record is NEW marks it DONE with -ECANCELED and the waiter, back
 * under the lock, returns that without linking. The waiter unregisters (the scope's
 * lock again) after its wait, so the record outlives every cancel call on it.
 * Waits of tasks outside a scope and of threads outside any task do not register and
 * are not cancellable. The slow path takes the scope's mutex twice per wait; the
 * fast paths (an event already set, a channel with room or elements) take only the
 * object's lock.
 *
 * An event is a public struct (weft.h) so users can embed it and zero it: one word
 * with the set bit and the lock bit, and the queue head; all zero is unset with no
 * waiters. Setting takes the whole queue under the lock, then sets the event and
 * releases the lock in one store, and wakes every record after that. That store is
 * the setter's last access to the event: a waiter that sees the set bit (without
 * the lock: weft_event_is_set, or the wait's fast path) may free the event at once,
 * the way a completion embedded in a request is freed by whoever waited for it.
 * Records are on their waiters' stacks and are touched only until their latch is
 * set.
 * Rejected: a waiter count plus a futex on the set word (a second wait protocol, and
 * it would block the worker); a condvar per event (not zero-initialisable, blocks).
 */
#define _GNU_SOURCE
#include "waitq.h"

#include <errno.h>
#include <stddef.h>

/* weft.h declares the words plain unsigned for C++: asserted in abi.c. */

static void waiter_cancel(struct weft__cwait *cw)
{
    struct weft__waiter *r =
        (struct weft__waiter *)(void *)((char *)cw - offsetof(struct weft__waiter, cw));
    WEFT__NOISE();
    weft__spin_lock(r->lock);
    bool mine = r->state == WEFT__WAITER_LINKED;
    if (mine)
        weft__waitq_remove(r->queue, r);
    if (r->state != WEFT__WAITER_DONE) {
        r->state = WEFT__WAITER_DONE;
        r->status = -ECANCELED;
    }
    weft__spin_unlock(r->lock);
    if (mine)
        weft__waiter_wake(r);
}

void weft__waiter_init(struct weft__waiter *r, struct weft__waiter **queue,
                       _Atomic(unsigned) *lock, void *elem)
{
    weft__latch_init(&r->latch);
    r->next = r->prev = NULL;
    r->queue = queue;
    r->lock = lock;
    r->elem = elem;
    r->state = WEFT__WAITER_NEW;
    r->status = 0;
    r->cw.cancel = waiter_cancel;
    r->cw.next = r->cw.prev = NULL;
}

int weft__waiter_wait(struct weft__waiter *r, struct weft_scope *s, weft__attempt_fn attempt,
                      void *obj)
{
    if (s) {
        /* Register for cancellation without the object's lock (lock order), then
         * try again: the state may have changed meanwhile. */
        weft__spin_unlock(r->lock);
        WEFT__NOISE(); /* a cancel or a waker may come between the two sections */
        if (weft__scope_wait_add(s, &r->cw) != 0)
            return -ECANCELED;
        weft__spin_lock(r->lock);
        struct weft__waiter *wake = NULL;
        int rc = r->state == WEFT__WAITER_DONE ? r->status : attempt(obj, r, &wake);
        if (rc != WEFT__MUST_WAIT) {
            r->state = WEFT__WAITER_DONE; /* a cancel from now on leaves it alone */
            weft__spin_unlock(r->lock);
            weft__waiter_wake(wake);
            weft__scope_wait_del(s, &r->cw);
            return rc;
        }
    }
    r->state = WEFT__WAITER_LINKED;
    weft__waitq_push(r->queue, r);
    weft__spin_unlock(r->lock);
    WEFT__NOISE(); /* a waker may set the latch before we block on it */
    weft__latch_wait_suspended(&r->latch);
    /* Acquire (in weft__latch_is_set), also in release builds: pairs with the
     * taker's set, done after it wrote status (and a channel's element). The
     * latch's own paths already order it; this one does not depend on which. */
    bool set = weft__latch_is_set(&r->latch);
    WEFT_ASSERT(set);
    (void)set;
    if (s)
        weft__scope_wait_del(s, &r->cw);
    return r->status;
}

/* ------------------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------------- */

/* The event's word: the set bit, and the lock bit (WEFT__LOCKED, waitq.h). */
#define EVENT_SET 1u

static int event_attempt(void *obj, struct weft__waiter *r, struct weft__waiter **wake)
{
    (void)r;
    (void)wake;
    weft_event *e = obj;
    /* Relaxed: under the lock (the set bit changes only under it). */
    return atomic_load_explicit(&e->word_, memory_order_relaxed) & EVENT_SET ? 0
                                                                            : WEFT__MUST_WAIT;
}

WEFT_API void weft_event_set(weft_event *e)
{
    if (!e)
        return;
    /* Relaxed: a set event has no waiters (they link only while it is unset, under
     * the lock), so there is nothing to do; the store that set it published the
     * setter's work. */
    if (atomic_load_explicit(&e->word_, memory_order_relaxed) & EVENT_SET)
        return;
    weft__spin_lock(&e->word_);
    struct weft__waiter *all = weft__waitq_take_all(&e->waiters_, 0);
    /* Set and unlock in one store, our last access to e (see the top). Release:
     * publishes what the setter did before, and the queue's new state; pairs with
     * the acquire load in weft_event_is_set() (the wait's fast path) and the
     * acquire RMW of the next weft__spin_lock(). Nobody else writes the word while
     * we hold the lock: a locker's fetch_or meanwhile changed nothing. */
    atomic_store_explicit(&e->word_, EVENT_SET, memory_order_release);
    weft__waiter_wake_all(all);
}

WEFT_API bool weft_event_is_set(const weft_event *e)
{
    /* Acquire: pairs with the release store in weft_event_set(). */
    return e && (atomic_load_explicit(&e->word_, memory_order_acquire) & EVENT_SET) != 0;
}

WEFT_API void weft_event_reset(weft_event *e)
{
    if (!e)
        return;
    weft__spin_lock(&e->word_);
    WEFT_ASSERT(!e->waiters_ && "weft_event_reset while tasks wait");
    /* Clear the set bit and unlock. Release: pairs with the next locker's acquire. */
    atomic_store_explicit(&e->word_, 0, memory_order_release);
}

WEFT_API int weft_event_wait(weft_event *e)
{
    if (!e)
        return -EINVAL;
    struct weft_scope *s = weft__task_scope();
    if (s && weft_scope_cancelled(s))
        return -ECANCELED;
    if (weft_event_is_set(e))
        return 0;
    struct weft__waiter r;
    weft__waiter_init(&r, &e->waiters_, &e->word_, NULL);
    weft__spin_lock(&e->word_);
    int rc = event_attempt(e, &r, NULL);
    if (rc != WEFT__MUST_WAIT) {
        weft__spin_unlock(&e->word_);
        return rc;
    }
    return weft__waiter_wait(&r, s, event_attempt, e);
}

size_t weft__waitq_len(_Atomic(unsigned) *lock, struct weft__waiter *const *q)
{
    size_t n = 0;
    weft__spin_lock(lock);
    struct weft__waiter *h = *q;
    if (h) {
        struct weft__waiter *r = h;
        do {
            n++;
            r = r->next;
        } while (r != h);
    }
    weft__spin_unlock(lock);
    return n;
}

size_t weft__event_waiters(weft_event *e)
{
    return weft__waitq_len(&e->word_, &e->waiters_);
}
