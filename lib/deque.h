/* SPDX-License-Identifier: MIT */
/* The split work-stealing deque: internal interface (see deque.c). */
#ifndef WEFT_DEQUE_H
#define WEFT_DEQUE_H

#include "weft.h"
#include "noise.h"

/* A circular array; replaced (never shrunk) when full. Old arrays stay alive until
 * the deque is freed, because a thief may still read a slot of one. */
struct weft__dqbuf {
    int64_t mask;                    /* capacity - 1; capacity is a power of two */
    struct weft__dqbuf *prev;        /* older arrays, freed with the deque */
    _Atomic(struct weft__job *) slot[];
};

/* Result of a steal attempt that found nothing to take. */
#define WEFT__STEAL_EMPTY ((struct weft__job *)0)
#define WEFT__STEAL_ABORT ((struct weft__job *)1) /* lost a race; worth retrying */

int  weft__deque_init(struct weft__deque *dq);
void weft__deque_free(struct weft__deque *dq);
/* Start an empty, unused deque's indices at base (instead of 0). */
void weft__deque_set_base(struct weft__deque *dq, int64_t base);
/* Owner only (weft__deque_push is inline, below). */
struct weft__job *weft__deque_pop_public(struct weft__deque *dq, int64_t b);
void weft__deque_publish(struct weft__deque *dq);
/* Any thread. */
struct weft__job *weft__deque_steal(struct weft__deque *dq);
/* Most jobs one weft__deque_steal_batch takes (deque.c's pop relies on it). */
#define WEFT__STEAL_MAX 32
int weft__deque_steal_batch(struct weft__deque *dq, struct weft__job **out, int max);
/* Hints (relaxed reads): any job at all / any public job. */
bool weft__deque_looks_nonempty(const struct weft__deque *dq);
bool weft__deque_looks_stealable(const struct weft__deque *dq);
int  weft__deque_grow(struct weft__deque *dq);

/* Owner only: push job (0, or -ENOMEM when the array cannot grow). public: publish at
 * once (spawned frames); else private unless thieves have nothing left (deque.c).
 * Inline: a spawn's push was a call that saved three registers for a 10-store body. */
static inline int weft__deque_push(struct weft__deque *dq, struct weft__job *job, bool public)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    if (WEFT_UNLIKELY(b >= dq->limit)) {
        int err = weft__deque_grow(dq);
        if (err)
            return err;
    }
    atomic_store_explicit(&dq->slots[b & dq->mask], job, memory_order_relaxed);
    WEFT__NOISE();
    /* Relaxed: private until published; bottom is a hint to others. */
    atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
    /* As weft_join's push (weft.h): publish when thieves have nothing left. */
    int64_t s = atomic_load_explicit(&dq->split, memory_order_relaxed);
    if (public || atomic_load_explicit(&dq->top, memory_order_relaxed) == s)
        /* Release: as in weft__deque_publish(); pairs with the acquire load of split
         * in weft__deque_steal(). */
        atomic_store_explicit(&dq->split, b + 1, memory_order_release);
    return 0;
}

/* The StoreLoad barrier of the rare side of the parking protocol's asymmetric pair:
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) when available, else a plain fence
 * (and then weft__fence_full makes the owner side fence too). */
void weft__heavy_barrier(void);
void weft__barrier_init(void);
void weft__barrier_after_fork(void);
extern int weft__fence_full;

/* Deque slots tag what they hold in the low bit: spawned frames (which have a
 * scope) carry FRAME; join jobs are untagged. */
#define WEFT__FRAME_TAG  ((uintptr_t)1)
static inline struct weft__job *weft__tag_frame(struct weft__job *f)
{
    return (struct weft__job *)((uintptr_t)f | WEFT__FRAME_TAG);
}

/* Owner only, after taking slot b: start fetching the job the next pop takes (a
 * frame spawned long ago, or by another core, is cold: flat spawn loops pop a
 * million of them). The slot may be stale or about to be stolen; a prefetch of
 * whatever it holds is harmless. */
static inline void weft__deque_prefetch_next(struct weft__deque *dq, int64_t b)
{
    uintptr_t next = (uintptr_t)atomic_load_explicit(&dq->slots[(b - 1) & dq->mask],
                                                     memory_order_relaxed);
    __builtin_prefetch((const void *)(next & ~WEFT__FRAME_TAG));
}

/* Owner only: take the newest job, or NULL. The private case inline, plain loads
 * and stores (no thief can see the job); the public one in deque.c. Inline: a
 * scope's drain and find_work called it for the private case, 24 instructions a
 * job on 1 worker. */
static inline struct weft__job *weft__deque_pop(struct weft__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed) - 1;
    int64_t s = atomic_load_explicit(&dq->split, memory_order_relaxed); /* owner's own */
    if (WEFT_UNLIKELY(b < s))
        return weft__deque_pop_public(dq, b);
    atomic_store_explicit(&dq->bottom, b, memory_order_relaxed);
    weft__deque_prefetch_next(dq, b);
    return atomic_load_explicit(&dq->slots[b & dq->mask], memory_order_relaxed);
}

#endif
