/* SPDX-License-Identifier: MIT */
/*
 * Bounded MPMC channels whose waiters suspend (the task, not the worker).
 *
 * A channel is a ring of capacity slots, two wait queues (senders waiting for room,
 * receivers waiting for an element) and a closed flag, all under one short lock
 * (waitq.h). Waiting uses event.c's record protocol: a record on the waiter's stack,
 * taken under the lock by whoever completes it, its latch set after the unlock.
 *
 * Hand-off instead of retry: a waiter is never woken to try again. Whoever ends its
 * wait also does its operation, under the lock:
 *  - a send that finds a receiver waiting copies the element straight into the
 *    receiver's buffer (the receiver's record points at it);
 *  - a receive that takes an element from a full channel moves the oldest waiting
 *    sender's element into the freed slot.
 * So a woken waiter's operation is complete (status 0) or did not happen (-EPIPE on
 * close, -ECANCELED on cancel): nothing is lost or duplicated, there is no
 * thundering herd, and the order is FIFO per channel (waiting senders join the ring
 * in their arrival order, behind what is already in it). Invariants, under the lock:
 * receivers wait only while the ring is empty, senders only while it is full.
 *
 * Close marks the channel and takes both queues with -EPIPE: waiting senders' elements
 * are not sent; waiting receivers exist only when the ring is empty, so they are
 * done. Later receives drain the ring, then get -EPIPE.
 *
 * Cancellation is event.c's: a record taken by the canceller was not served, so a
 * cancelled receive took nothing and a cancelled send enqueued nothing; a record a
 * waker took first completes with 0 even if the scope is cancelled just after.
 *
 * Rejected: a lock-free ring (Vyukov's bounded MPMC queue) with the wait queues
 * beside it: a fast path without a lock, but the "empty, so wait" decision must then
 * be re-checked against the ring with a second protocol, and waits are the point of
 * this channel; its critical sections are a few stores and one memcpy.
 */
#define _GNU_SOURCE
#include "waitq.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct weft_chan {
    _Atomic(unsigned) lock;
    bool closed;                      /* under lock */
    size_t cap, esize;                /* read-only after create */
    size_t head, count;               /* under lock: oldest slot, elements in the ring */
    struct weft__waiter *senders;     /* under lock: waiting for room (ring full) */
    struct weft__waiter *receivers;   /* under lock: waiting for an element (empty) */
    unsigned char *buf;               /* cap * esize bytes, after the struct */
};

static inline unsigned char *slot(weft_chan *c, size_t i)
{
    i += c->head;
    if (i >= c->cap)
        i -= c->cap;
    return c->buf + i * c->esize;
}

static int send_attempt(void *obj, struct weft__waiter *r, struct weft__waiter **wake)
{
    weft_chan *c = obj;
    if (c->closed)
        return -EPIPE;
    if (c->receivers) {
        WEFT_ASSERT(c->count == 0);
        struct weft__waiter *rx = weft__waitq_take(&c->receivers, 0);
        memcpy(rx->elem, r->elem, c->esize);
        *wake = rx;
        return 0;
    }
    if (c->count < c->cap) {
        memcpy(slot(c, c->count), r->elem, c->esize);
        c->count++;
        return 0;
    }
    return WEFT__MUST_WAIT;
}

static int recv_attempt(void *obj, struct weft__waiter *r, struct weft__waiter **wake)
{
    weft_chan *c = obj;
    if (c->count) {
        memcpy(r->elem, slot(c, 0), c->esize);
        c->head = c->head + 1 == c->cap ? 0 : c->head + 1;
        c->count--;
        if (c->senders) {
            /* The ring was full: the oldest waiting sender's element takes the slot. */
            WEFT_ASSERT(c->count + 1 == c->cap);
            struct weft__waiter *tx = weft__waitq_take(&c->senders, 0);
            memcpy(slot(c, c->count), tx->elem, c->esize);
            c->count++;
            *wake = tx;
        }
        return 0;
    }
    WEFT_ASSERT(!c->senders);
    if (c->closed)
        return -EPIPE;
    return WEFT__MUST_WAIT;
}

/* A send or receive: the fast path under the lock, else the wait. */
static int op(weft_chan *c, struct weft__waiter **queue, void *elem, weft__attempt_fn attempt)
{
    struct weft_scope *s = weft__task_scope();
    if (s && weft_scope_cancelled(s))
        return -ECANCELED;
    struct weft__waiter r;
    weft__waiter_init(&r, queue, &c->lock, elem);
    struct weft__waiter *wake = NULL;
    weft__spin_lock(&c->lock);
    int rc = attempt(c, &r, &wake);
    if (rc != WEFT__MUST_WAIT) {
        weft__spin_unlock(&c->lock);
        weft__waiter_wake(wake);
        return rc;
    }
    return weft__waiter_wait(&r, s, attempt, c);
}

WEFT_API int weft_chan_create(weft_chan **c, size_t capacity, size_t elem_size)
{
    if (!c || capacity == 0 || elem_size == 0)
        return -EINVAL;
    if (capacity > SIZE_MAX / elem_size ||
        capacity * elem_size > SIZE_MAX - sizeof(struct weft_chan))
        return -EOVERFLOW;
    weft_chan *ch = malloc(sizeof(*ch) + capacity * elem_size);
    if (!ch)
        return -ENOMEM;
    atomic_init(&ch->lock, 0);
    ch->closed = false;
    ch->cap = capacity;
    ch->esize = elem_size;
    ch->head = ch->count = 0;
    ch->senders = ch->receivers = NULL;
    ch->buf = (unsigned char *)(ch + 1);
    *c = ch;
    return 0;
}

WEFT_API void weft_chan_destroy(weft_chan *c)
{
    if (!c)
        return;
    WEFT_ASSERT(!c->senders && !c->receivers && "weft_chan_destroy while tasks wait");
    free(c);
}

WEFT_API int weft_chan_send(weft_chan *c, const void *elem)
{
    if (!c || !elem)
        return -EINVAL;
    return op(c, &c->senders, (void *)elem, send_attempt);
}

WEFT_API int weft_chan_recv(weft_chan *c, void *elem)
{
    if (!c || !elem)
        return -EINVAL;
    return op(c, &c->receivers, elem, recv_attempt);
}

WEFT_API void weft_chan_close(weft_chan *c)
{
    if (!c)
        return;
    weft__spin_lock(&c->lock);
    if (c->closed) {
        weft__spin_unlock(&c->lock);
        return;
    }
    c->closed = true;
    struct weft__waiter *tx = weft__waitq_take_all(&c->senders, -EPIPE);
    struct weft__waiter *rx = weft__waitq_take_all(&c->receivers, -EPIPE);
    weft__spin_unlock(&c->lock);
    weft__waiter_wake_all(tx);
    weft__waiter_wake_all(rx);
}

void weft__chan_waiters(weft_chan *c, size_t *senders, size_t *receivers)
{
    *senders = weft__waitq_len(&c->lock, &c->senders);
    *receivers = weft__waitq_len(&c->lock, &c->receivers);
}
