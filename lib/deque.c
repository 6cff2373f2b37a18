/* SPDX-License-Identifier: MIT */
/*
 * Chase-Lev work-stealing deque.
 *
 * Algorithm: D. Chase and Y. Lev, "Dynamic circular work-stealing deque", SPAA 2005,
 * in the C11 formulation of N. M. Lê, A. Pop, A. Cohen and F. Zappa Nardelli,
 * "Correct and efficient work-stealing for weak memory models", PPoPP 2013 (fig. 1).
 *
 * The owner pushes and pops at the bottom; thieves take from the top with a CAS.
 * Indices grow monotonically (int64_t never wraps in practice); the array is a power
 * of two used modulo its size and is replaced by one twice as large when full. Old
 * arrays are kept until the deque is freed: a thief that loaded the old pointer may
 * still read a slot of it (its CAS then decides whether what it read counts).
 *
 * The one departure from the paper: its pop() and steal() each need a StoreLoad
 * (seq_cst) fence, and on the owner's side that fence costs more than a whole
 * fork-join. weft makes the fence asymmetric: the owner (pop, the inline push/pop
 * of weft_join in weft.h) only stops the compiler from reordering, and a thief runs
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) between its loads of top and bottom,
 * which makes every running thread of the process execute a full barrier. Either
 * the owner's bottom store happened before that barrier, and the thief sees it, or
 * the owner's top load happens after the barrier, and the owner sees the top the
 * thief read (and then takes the CAS path for the last item). Thieves pay ~0.3 us
 * per steal; steals are rare in fork-join, pops are not. The same pairing serves
 * the pusher/parker handshake (park.c). Where membarrier is not available (old
 * kernel, seccomp) both sides use the paper's fences (weft__fence_full).
 *
 * Only weft_join's inline pop skips the fence, and it only ever pops its own join
 * job; weft__deque_pop() (the worker loop, scopes) and weft__join_fenced() (the
 * loops) always fence. So a thief whose slot holds a spawned frame or a fenced join
 * job (tagged, deque.h) pairs with a fenced pop and needs only a plain fence: a
 * scope whose tasks are stolen one by one does not IPI the spawner for every steal,
 * nor a loop for every split it loses (membarrier costs ~2 us here, on a VM, with
 * a sibling running). The slot is read again after the fence, because the owner may
 * have reused the index meanwhile; if it now holds a join job, the thief runs the
 * membarrier after all.
 * Rejected: a THE-protocol lock on the last item (Cilk): a lock on the owner path;
 * Lace's split deque: needs the task stored in the slot, not a function pointer and
 * job on the caller's stack as weft's API has.
 */
#define _GNU_SOURCE
#include "deque.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "debug.h"
#include "fault.h"

int weft__fence_full = 1;

#define INITIAL_CAPACITY 256

static bool barrier_is_membarrier;

/* Called once, before the first pool's workers start (pool.c, under pthread_once). */
void weft__barrier_init(void)
{
    /* WEFT_NO_MEMBARRIER=1 forces the fallback, so tests can run it on kernels that
     * have membarrier (tools/test does). */
    const char *no = getenv("WEFT_NO_MEMBARRIER");
    if (no && strcmp(no, "1") == 0) {
        weft__fence_full = 1;
        return;
    }
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (cmds >= 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
        barrier_is_membarrier = true;
        weft__fence_full = 0;
    } else {
        weft__fence_full = 1;
    }
}

/* fork(): the child is a new process whose registration membarrier() does not
 * inherit, so without this the first steal in the child's pools would fail (and
 * abort). Re-register; if that fails, the child's pools fence on both sides. */
void weft__barrier_after_fork(void)
{
    if (!barrier_is_membarrier)
        return;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
        barrier_is_membarrier = false;
        weft__fence_full = 1;
    }
}

void weft__heavy_barrier(void)
{
    if (barrier_is_membarrier) {
        if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
            return;
        /* Registered at start, so this cannot fail; if it did, owners that do not
         * fence could hand one job to two workers. Stop rather than run on. */
        fprintf(stderr, "weft: membarrier() failed: %s\n", strerror(errno));
        abort();
    }
    atomic_thread_fence(memory_order_seq_cst); /* fallback: owners fence too */
}

static struct weft__dqbuf *buf_new(int64_t cap)
{
    struct weft__dqbuf *b = WEFT__FAULT("deque.buf") ? NULL :
                            malloc(sizeof(*b) + (size_t)cap * sizeof(b->slot[0]));
    if (!b)
        return NULL;
    b->mask = cap - 1;
    b->prev = NULL;
    return b;
}

int weft__deque_init(struct weft__deque *dq)
{
    struct weft__dqbuf *b = buf_new(INITIAL_CAPACITY);
    if (!b)
        return -ENOMEM;
    atomic_init(&dq->bottom, 0);
    atomic_init(&dq->top, 0);
    atomic_init(&dq->buf, b);
    dq->slots = b->slot;
    dq->mask = b->mask;
    dq->limit = INITIAL_CAPACITY;
    /* Without membarrier the owner must fence: pops check fence_full, and a poke
     * that never clears sends every push through weft__push_poked (park.c). */
    dq->fence_full = (uint32_t)weft__fence_full;
    atomic_init(&dq->poke, dq->fence_full);
    return 0;
}

void weft__deque_set_base(struct weft__deque *dq, int64_t base)
{
    atomic_store_explicit(&dq->bottom, base, memory_order_relaxed);
    atomic_store_explicit(&dq->top, base, memory_order_relaxed);
    dq->limit = base + dq->mask + 1;
}

void weft__deque_free(struct weft__deque *dq)
{
    struct weft__dqbuf *b = atomic_load_explicit(&dq->buf, memory_order_relaxed);
    while (b) {
        struct weft__dqbuf *prev = b->prev;
        free(b);
        b = prev;
    }
    atomic_store_explicit(&dq->buf, NULL, memory_order_relaxed);
}

/* Owner only: make room for one more push. Refreshes the cached top first; grows
 * only when the array really is full. */
int weft__deque_grow(struct weft__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    /* Acquire: pairs with the CAS in weft__deque_steal(), so a slot thieves are done
     * reading is not overwritten before their read. */
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    struct weft__dqbuf *old = atomic_load_explicit(&dq->buf, memory_order_relaxed);
    int64_t cap = old->mask + 1;
    if (b - t < cap) {
        dq->limit = t + cap;
        return 0;
    }
    struct weft__dqbuf *nb = buf_new(cap * 2);
    if (!nb)
        return -ENOMEM;
    for (int64_t i = t; i < b; i++)
        atomic_store_explicit(&nb->slot[i & nb->mask],
                              atomic_load_explicit(&old->slot[i & old->mask],
                                                   memory_order_relaxed),
                              memory_order_relaxed);
    nb->prev = old;
    /* Release: publish the copied slots; pairs with the acquire load of buf in
     * weft__deque_steal(). */
    atomic_store_explicit(&dq->buf, nb, memory_order_release);
    dq->slots = nb->slot;
    dq->mask = nb->mask;
    dq->limit = t + cap * 2;
    return 0;
}

int weft__deque_push(struct weft__deque *dq, struct weft__job *job)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    if (WEFT_UNLIKELY(b >= dq->limit)) {
        int err = weft__deque_grow(dq);
        if (err)
            return err;
    }
    atomic_store_explicit(&dq->slots[b & dq->mask], job, memory_order_relaxed);
    WEFT_DBG_YIELD();
    /* Release: publish the slot and the job's fields; pairs with the acquire load of
     * bottom in weft__deque_steal(). */
    atomic_store_explicit(&dq->bottom, b + 1, memory_order_release);
    return 0;
}

/* Owner only: take the newest job, or NULL. */
struct weft__job *weft__deque_pop(struct weft__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed) - 1;
    /* Cheap early out: top only grows, so a stale top that says "empty" is right. */
    if (atomic_load_explicit(&dq->top, memory_order_relaxed) > b)
        return NULL;
    atomic_store_explicit(&dq->bottom, b, memory_order_relaxed);
    WEFT_DBG_YIELD();
    /* StoreLoad between the bottom store and the top load: pairs with the fence
     * (frames) or heavy barrier (join jobs) in weft__deque_steal(). A real fence
     * here, unlike weft_join's inline pop: see the top of the file. */
    atomic_thread_fence(memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    if (t > b) { /* empty: a thief took the last one */
        atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    struct weft__job *job = atomic_load_explicit(&dq->slots[b & dq->mask],
                                                 memory_order_relaxed);
    if (t == b) {
        /* Last item: race the thieves for it. seq_cst as in the paper; pairs with
         * the CAS in weft__deque_steal(). */
        if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1,
                                                     memory_order_seq_cst,
                                                     memory_order_relaxed))
            job = NULL;
        atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
    }
    return job;
}

bool weft__deque_looks_nonempty(const struct weft__deque *dq)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    return t < b;
}

/* Any thread but the owner: take the oldest job, or EMPTY, or ABORT (lost a race). */
struct weft__job *weft__deque_steal(struct weft__deque *dq)
{
    /* Acquire: pairs with the CAS of other thieves and of pop(), so the slot we read
     * below was written before top moved past it. */
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    /* Acquire: pairs with the release store of bottom in push (and weft_join). */
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_acquire);
    if (t >= b)
        return WEFT__STEAL_EMPTY; /* looks empty: no need for the barrier */
    WEFT_DBG_YIELD();
    /* Acquire: pairs with the release store of buf in weft__deque_grow(). */
    struct weft__dqbuf *buf = atomic_load_explicit(&dq->buf, memory_order_acquire);
    struct weft__job *job = atomic_load_explicit(&buf->slot[t & buf->mask],
                                                 memory_order_relaxed);
    bool heavy = !((uintptr_t)job & WEFT__TAGS);
    for (;;) {
        /* StoreLoad on the owner's behalf. heavy: pairs with the compiler-only fence
         * of weft_join's inline pop; else with the fence in weft__deque_pop(). */
        if (heavy)
            weft__heavy_barrier();
        else
            atomic_thread_fence(memory_order_seq_cst);
        /* Acquire: as above; this is the load that counts. */
        b = atomic_load_explicit(&dq->bottom, memory_order_acquire);
        if (t >= b)
            return WEFT__STEAL_EMPTY;
        buf = atomic_load_explicit(&dq->buf, memory_order_acquire); /* as above */
        job = atomic_load_explicit(&buf->slot[t & buf->mask], memory_order_relaxed);
        if (heavy || ((uintptr_t)job & WEFT__TAGS))
            break;
        heavy = true; /* the index now holds a join job: the owner may not fence */
    }
    WEFT_DBG_YIELD();
    /* seq_cst as in the paper: pairs with the CAS in pop() and other thieves'. */
    if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return WEFT__STEAL_ABORT;
    return job;
}
