/* SPDX-License-Identifier: MIT */
/*
 * Wait queues of events and channels (event.c has the protocol; chan.c uses it), and
 * the cancellable-wait hook of scopes (scope.c).
 */
#ifndef WEFT_WAITQ_H
#define WEFT_WAITQ_H

#include "pool.h"

#include <sched.h>

/* A wait that cancelling its scope must end. While registered (weft__scope_wait_add
 * until weft__scope_wait_del), scope_fail() calls cancel(cw) under the scope's lock,
 * once per failure (so cancel must be idempotent); the waiter's del takes the same
 * lock, so the record is valid for as long as cancel runs. */
struct weft__cwait {
    void (*cancel)(struct weft__cwait *cw);
    struct weft__cwait *next, *prev;    /* the scope's list, under its lock */
};
/* Register cw on s. -ECANCELED: s is cancelled already (cw is not registered). */
int  weft__scope_wait_add(struct weft_scope *s, struct weft__cwait *cw);
void weft__scope_wait_del(struct weft_scope *s, struct weft__cwait *cw);

/* The scope of the task running on this thread, or NULL (no task, or a task that is
 * in no scope). */
static inline struct weft_scope *weft__task_scope(void)
{
    struct weft__worker *w = weft__current();
    return w ? w->dq.scope : NULL;
}

/* A waiter's record: on the waiter's stack for the length of its wait. */
enum weft__waiter_state {
    WEFT__WAITER_NEW,     /* not on the queue yet (between the two lock sections) */
    WEFT__WAITER_LINKED,  /* on the queue: a waker or the canceller may take it */
    WEFT__WAITER_DONE,    /* taken: status is final; whoever took it sets the latch */
};

struct weft__waiter {
    struct weft__latch latch;           /* set once, by whoever took the record */
    struct weft__waiter *next, *prev;   /* circular queue, under *lock */
    struct weft__waiter **queue;        /* the queue it goes on (its head pointer) */
    _Atomic(unsigned) *lock;            /* the event's or channel's lock */
    void *elem;                         /* channels: where to copy to / from */
    enum weft__waiter_state state;      /* under *lock */
    int status;                         /* under *lock; the waiter reads it once set */
    struct weft__cwait cw;              /* on the task's scope while it waits */
};

/* The short lock of an event or channel: bit WEFT__LOCKED of a word whose other
 * bits the object may use (an event keeps its set bit beside it, so that one store
 * can set the event and unlock it: the setter's last access). A test-and-test-and-set
 * lock, as the ready queues' (runq.c): critical sections are a few loads and stores
 * and a memcpy of one element. A holder preempted mid-section is waited for with
 * sched_yield. */
#define WEFT__LOCKED 2u

static inline void weft__spin_lock(_Atomic(unsigned) *l)
{
    /* Acquire: pairs with the release in weft__spin_unlock() (or the store that
     * sets an event, event.c). */
    while (atomic_fetch_or_explicit(l, WEFT__LOCKED, memory_order_acquire) & WEFT__LOCKED) {
        for (unsigned k = 0;
             atomic_load_explicit(l, memory_order_relaxed) & WEFT__LOCKED; k++) {
            if (k < 64)
                weft__cpu_relax();
            else
                sched_yield();
        }
    }
}

static inline void weft__spin_unlock(_Atomic(unsigned) *l)
{
    /* Release: pairs with the acquire RMW in weft__spin_lock(). */
    atomic_fetch_and_explicit(l, ~WEFT__LOCKED, memory_order_release);
}

/* Queue operations, under the queue's lock. */
static inline void weft__waitq_push(struct weft__waiter **q, struct weft__waiter *r)
{
    struct weft__waiter *h = *q;
    if (!h) {
        r->next = r->prev = r;
        *q = r;
    } else {
        r->next = h;
        r->prev = h->prev;
        h->prev->next = r;
        h->prev = r;
    }
}

static inline void weft__waitq_remove(struct weft__waiter **q, struct weft__waiter *r)
{
    if (r->next == r) {
        *q = NULL;
    } else {
        r->prev->next = r->next;
        r->next->prev = r->prev;
        if (*q == r)
            *q = r->next;
    }
}

/* Take the oldest waiter off q (q not empty) and mark it taken with status. */
static inline struct weft__waiter *weft__waitq_take(struct weft__waiter **q, int status)
{
    struct weft__waiter *r = *q;
    weft__waitq_remove(q, r);
    r->state = WEFT__WAITER_DONE;
    r->status = status;
    return r;
}

/* Take every waiter off q, each marked taken with status: a NULL-terminated list
 * (through next) for weft__waiter_wake_all once the lock is released. */
static inline struct weft__waiter *weft__waitq_take_all(struct weft__waiter **q, int status)
{
    struct weft__waiter *h = *q;
    if (!h)
        return NULL;
    *q = NULL;
    h->prev->next = NULL;
    for (struct weft__waiter *r = h; r; r = r->next) {
        r->state = WEFT__WAITER_DONE;
        r->status = status;
    }
    return h;
}

/* Wake a record taken off a queue (weft__waitq_take), after the lock is released.
 * The record may be gone once this returns. NULL: nothing to do. */
static inline void weft__waiter_wake(struct weft__waiter *r)
{
    if (r)
        weft__latch_set(&r->latch);
}

/* Wake a list from weft__waitq_take_all (each record may be gone once woken). */
static inline void weft__waiter_wake_all(struct weft__waiter *r)
{
    while (r) {
        struct weft__waiter *next = r->next; /* before the set: r may vanish after it */
        weft__latch_set(&r->latch);
        r = next;
    }
}

/* What an attempt under the lock returns when the caller has to wait. */
#define WEFT__MUST_WAIT 1

/* One try of a wait's operation, under the lock: 0 or -errno (final), or
 * WEFT__MUST_WAIT. A waiter it took off a queue goes into *wake (woken after the
 * lock is released). */
typedef int (*weft__attempt_fn)(void *obj, struct weft__waiter *r, struct weft__waiter **wake);

void weft__waiter_init(struct weft__waiter *r, struct weft__waiter **queue,
                       _Atomic(unsigned) *lock, void *elem);
/* The slow path of a wait (event.c). Called with *r->lock held, after attempt
 * returned WEFT__MUST_WAIT under it; returns with the lock released, with the wait's
 * result: attempt's final result if a retry ends the wait, else the status the waker
 * or the canceller gave the record. s: the calling task's scope, or NULL. */
int weft__waiter_wait(struct weft__waiter *r, struct weft_scope *s, weft__attempt_fn attempt,
                      void *obj);

/* Testing hooks (tests/test_chan.c): records on the queues right now. */
size_t weft__waitq_len(_Atomic(unsigned) *lock, struct weft__waiter *const *q);
size_t weft__event_waiters(weft_event *e);
void weft__chan_waiters(weft_chan *c, size_t *senders, size_t *receivers);

#endif
