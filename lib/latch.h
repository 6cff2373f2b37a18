/* SPDX-License-Identifier: MIT */
/* The latch: the one wait/wake protocol (latch.c; its top comment has the state
 * table). A latch is set once, by one setter, and has at most one waiter at a time.
 * struct weft__latch itself is in weft.h (the inline join embeds one in its job).
 * Included by pool.h. */
#ifndef WEFT_LATCH_H
#define WEFT_LATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "weft.h"

struct weft__worker;

/* The word's two states that need no waiter (latch.c has the others): inline here,
 * because every scope initialises a latch and every look for work asks whether its
 * latch is set (a call each: ~1 % of flat spawn's and a yield's time, perf). */
#define WEFT__LATCH_PENDING ((uintptr_t)0)
#define WEFT__LATCH_SET     ((uintptr_t)1)

static inline void weft__latch_init(struct weft__latch *l)
{
    atomic_init(&l->word, WEFT__LATCH_PENDING);
}

/* Acquire: pairs with the exchange in weft__latch_set(); the waiter sees the
 * effects of the work that set it. */
static inline bool weft__latch_is_set(const struct weft__latch *l)
{
    return atomic_load_explicit(&l->word, memory_order_acquire) == WEFT__LATCH_SET;
}
/* Set l and wake its waiter. Any thread; l may be freed by its waiter at once. */
void weft__latch_set(struct weft__latch *l);

/* The three waits. All return once l is set.
 *
 * weft__latch_wait_above: w, the calling worker, helps (runs other work, its own
 * deque's jobs only above floor), suspends when it finds a ready task or runs low
 * on stack, and parks when idle. w NULL: any other thread, which sleeps on a futex.
 * weft__latch_wait: the same with floor = the worker's current bottom (joins: the
 * jobs below belong to frames under the wait).
 * weft__latch_wait_suspended: no helping, nothing run on top of the caller: inside
 * a task the task suspends (its worker goes on), outside the thread sleeps. For
 * waits whose setter may need frames a helper would bury (events, channels). */
void weft__latch_wait_above(struct weft__worker *w, struct weft__latch *l, int64_t floor);
void weft__latch_wait(struct weft__worker *w, struct weft__latch *l);
void weft__latch_wait_suspended(struct weft__latch *l);

#endif
