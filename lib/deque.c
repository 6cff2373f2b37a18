/* SPDX-License-Identifier: MIT */
/*
 * The work-stealing deque: a split deque.
 *
 * Algorithm: the circular array and index discipline of D. Chase and Y. Lev,
 * "Dynamic circular work-stealing deque" (SPAA 2005), in the C11 form of N. M. Le,
 * A. Pop, A. Cohen and F. Zappa Nardelli, "Correct and efficient work-stealing for
 * weak memory models" (PPoPP 2013); with the split point of T. van Dijk and J. van de
 * Pol, "Lace: non-blocking split deque for work-stealing" (Euro-Par 2014 workshops),
 * so that the owner's common path touches owner-private memory only.
 *
 * Three indices, top <= split <= bottom. Jobs in [top, split) are public: thieves
 * take the oldest with a CAS on top, as in Chase-Lev with split in the role of
 * bottom. Jobs in [split, bottom) are private: the owner pushes and pops them with
 * plain stores, no fence and no atomic read-modify-write; no thief ever reads them.
 * The owner publishes (split = bottom, a release store) when it pushes onto a deque
 * whose public part is empty (top == split: thieves took everything published), so
 * the oldest job is always stealable and a join whose first half runs long without
 * forking still lets its second half be stolen; when it stops running its own jobs
 * (before it searches other deques, parks or switches fibers), so that nothing
 * waits in a private part whose owner is not running it; and at the next push after
 * a thief found only private jobs, or a parking worker poked (both set the poke
 * flag, park.c). Spawned frames are always pushed public (scope.c): a task that runs
 * long, or waits for its siblings by spinning, must not keep the rest of its scope
 * from the other workers, and frame pops fenced before the split deque too. So only
 * join jobs live in the private part; the cost of that is the one case Lace also
 * has: the second half of a join pushed while the deque had public work stays with
 * its owner until the owner pushes again, if the first half forks no more.
 *
 * The owner pops a public job (split > bottom - 1) the Chase-Lev way on (top, split):
 * retract split to that index, a StoreLoad fence, read top; a thief reads top, fences,
 * then reads split. Either the thief sees the retracted split, or the owner sees the
 * thief's top and, for the last public job, both CAS top for it. This is the only
 * fence on the owner's side, and it is paid once per job published and not stolen,
 * not per pop: in fork-join the public part is a few jobs at the bottom of the stack.
 *
 * Thieves of spawned frames also take batches (weft__deque_steal_batch): up to
 * WEFT__STEAL_MAX of the oldest public jobs with one read of split and one CAS on
 * top. A claim checked against a split read before the owner's retraction may
 * reach past the owner's newest job, so the owner's public pop takes a job without
 * more ado only when it is WEFT__STEAL_MAX or more above the top it read; nearer,
 * it waits until no batch is in flight (claimers; the comment there has the
 * argument).
 *
 * Indices grow monotonically (never wrap in practice; each worker counts in its own
 * range, pool.c); the array is used modulo its power-of-two size and replaced by one
 * twice as large when full. Old arrays are kept until the deque is freed: a thief
 * that loaded the old pointer may still read a slot of it (its CAS then decides
 * whether what it read counts).
 *
 * Before the split deque, owners popped with no fence and thieves ran membarrier()
 * (an IPI to every CPU running the process) per steal of a join job; DESIGN.md had
 * rejected the split deque because slots hold pointers to jobs on the caller's
 * stack, but the split point does not care what a slot holds. membarrier() remains
 * the parking protocol's heavy barrier (park.c). Rejected: a THE-protocol lock on the
 * last item (Cilk): a lock on the owner's path.
 */
#define _GNU_SOURCE
#include "deque.h"
#include "noise.h"
#include "spin.h"

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
    weft__fence(); /* fallback: owners fence too */
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
    atomic_init(&dq->split, 0);
    atomic_init(&dq->top, 0);
    atomic_init(&dq->buf, b);
    dq->slots = b->slot;
    dq->mask = b->mask;
    dq->limit = INITIAL_CAPACITY;
    /* Without membarrier a poke never clears, which sends every push through
     * weft__push_poked and its fence (park.c). */
    dq->fence_full = (uint32_t)weft__fence_full;
    atomic_init(&dq->poke, dq->fence_full);
    return 0;
}

void weft__deque_set_base(struct weft__deque *dq, int64_t base)
{
    atomic_store_explicit(&dq->bottom, base, memory_order_relaxed);
    atomic_store_explicit(&dq->split, base, memory_order_relaxed);
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

/* Owner only: make every private job public. */
void weft__deque_publish(struct weft__deque *dq)
{
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    if (atomic_load_explicit(&dq->split, memory_order_relaxed) != b) /* owner's own */
        /* Release: publishes the slots below b and their jobs' fields; pairs with
         * the acquire load of split in weft__deque_steal(). */
        atomic_store_explicit(&dq->split, b, memory_order_release);
}

/* Owner only, in pop's public path, split retracted to b and fenced, t read after
 * the fence, t < b < t + WEFT__STEAL_MAX: may job b be taken? A batch thief that
 * read split before the retraction may still CAS top from t to as far as
 * t + WEFT__STEAL_MAX, over b. Every such thief counted itself in claimers before
 * its fence, so once claimers reads 0 each has CASed or given up, and top read
 * again shows its claim; a thief that fences later sees split <= b and claims
 * below b. Single steals are not counted: as in Chase-Lev they take index top
 * only, which the caller's t == b case settles with its CAS. *tp is top read
 * again. False (split restored, b still ours and public) when batches stay in
 * flight past a short spin: a thief was descheduled between its count and its
 * CAS. The caller then reports nothing to pop; the job stays public, the thief
 * or a later pop takes it (no wait for the descheduled thread). */
static bool near_top_is_ours(struct weft__deque *dq, int64_t b, int64_t *tp)
{
    for (unsigned spins = 0;; spins++) {
        /* Acquire: pairs with the release decrement in weft__deque_steal_batch(),
         * so that the claim CAS of a thief no longer counted shows in top below. */
        if (atomic_load_explicit(&dq->claimers, memory_order_acquire) == 0)
            break;
        if (spins == 256) {
            /* Release: republish b with its slot, as a push would. */
            atomic_store_explicit(&dq->split, b + 1, memory_order_release);
            return false;
        }
        weft__cpu_relax();
    }
    *tp = atomic_load_explicit(&dq->top, memory_order_relaxed);
    return true;
}

/* Owner only: weft__deque_pop's public case (deque.h has the private one inline):
 * job b = bottom - 1 is below split. */
struct weft__job *weft__deque_pop_public(struct weft__deque *dq, int64_t b)
{
    /* Cheap early out: top only grows, so a stale top that says "empty" is right. */
    if (atomic_load_explicit(&dq->top, memory_order_relaxed) > b)
        return NULL;
    /* Public: retract split over it, then see whether a thief got there first. */
    atomic_store_explicit(&dq->split, b, memory_order_relaxed);
    WEFT__NOISE();
    /* StoreLoad between the split store and the top load: pairs with the fence
     * between a thief's top and split loads in weft__deque_steal(). */
    weft__fence();
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    struct weft__job *job = atomic_load_explicit(&dq->slots[b & dq->mask],
                                                 memory_order_relaxed);
    if (t <= b - WEFT__STEAL_MAX) {
        /* Far above top: no claim can reach it (the top of the file). Ours. */
        atomic_store_explicit(&dq->bottom, b, memory_order_relaxed);
        weft__deque_prefetch_next(dq, b);
        return job;
    }
    if (t < b && !near_top_is_ours(dq, b, &t))
        return NULL; /* a batch thief may be taking it: see near_top_is_ours */
    if (t < b) { /* more public jobs below: this one is ours */
        atomic_store_explicit(&dq->bottom, b, memory_order_relaxed);
        weft__deque_prefetch_next(dq, b);
        return job;
    }
    if (t == b) {
        /* The last public job: race the thieves for it. seq_cst as in the paper;
         * pairs with the CAS in weft__deque_steal(). */
        if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1,
                                                     memory_order_seq_cst,
                                                     memory_order_relaxed))
            job = NULL;
    } else {
        job = NULL; /* a thief took it meanwhile */
    }
    /* Empty now: bottom = split = top = b + 1. */
    atomic_store_explicit(&dq->split, b + 1, memory_order_relaxed);
    atomic_store_explicit(&dq->bottom, b + 1, memory_order_relaxed);
    return job;
}

bool weft__deque_looks_nonempty(const struct weft__deque *dq)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    int64_t b = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    return t < b;
}

bool weft__deque_looks_stealable(const struct weft__deque *dq)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_relaxed);
    int64_t s = atomic_load_explicit(&dq->split, memory_order_relaxed);
    return t < s;
}

/* Any thread but the owner: take the oldest public job, or EMPTY, or ABORT (lost a
 * race). */
struct weft__job *weft__deque_steal(struct weft__deque *dq)
{
    /* Acquire: pairs with the CAS of other thieves and of pop(), so the slot we read
     * below was written before top moved past it. */
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire);
    /* Cheap early out without the fence. Relaxed: only a hint. */
    if (t >= atomic_load_explicit(&dq->split, memory_order_relaxed)) {
        /* Nothing public, but private jobs: ask the owner to publish at its next
         * push (the poke sends it through weft__push_poked). Relaxed: a request,
         * and a lost one only delays the publication. Stored only when clear, so
         * a searching thief does not keep taking the owner's cache line. */
        if (atomic_load_explicit(&dq->bottom, memory_order_relaxed) > t &&
            !atomic_load_explicit(&dq->poke, memory_order_relaxed))
            atomic_store_explicit(&dq->poke, 1, memory_order_relaxed);
        return WEFT__STEAL_EMPTY;
    }
    WEFT__NOISE();
    /* StoreLoad on the owner's behalf: pairs with the fence in pop()'s public path. */
    weft__fence();
    /* Acquire: pairs with the release stores of split (publication), so the slot and
     * the job it points to are visible. */
    int64_t s = atomic_load_explicit(&dq->split, memory_order_acquire);
    if (t >= s)
        return WEFT__STEAL_EMPTY;
    /* Acquire: pairs with the release store of buf in weft__deque_grow(). */
    struct weft__dqbuf *buf = atomic_load_explicit(&dq->buf, memory_order_acquire);
    struct weft__job *job = atomic_load_explicit(&buf->slot[t & buf->mask],
                                                 memory_order_relaxed);
    WEFT__NOISE();
    /* seq_cst as in the paper: pairs with the CAS in pop() and other thieves'. */
    if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + 1,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return WEFT__STEAL_ABORT;
    return job;
}

/* Any thread but the owner: take up to max (<= WEFT__STEAL_MAX) of the oldest
 * public jobs with one CAS on top, into out[]: half of what is public, rounded up.
 * Returns how many, 0 if nothing was public, -1 on a lost race. One read of the
 * owner's split for the batch rather than one per job: a thief of a flat spawn
 * loop that stole job by job read the line the owner writes on every push once
 * per job, and the spawner paid a miss on it per spawn.
 *
 * Why one read of split suffices: a claim [t, t + n) is checked against split as
 * read after the fence, so it is right unless the owner retracted split over it
 * meanwhile (pop's public path). The owner takes a job b without a CAS only when b
 * is at least WEFT__STEAL_MAX above the top it reads after its fence; a thief whose
 * fence came first read top no later than that (so its CAS can succeed only from
 * that same top, and claims below b), and one whose fence came after sees the
 * retracted split. Nearer to top, the owner waits until no batch is in flight
 * (claimers, counted before the fence; near_top_is_ours). tests/test_deque.c's
 * batch_steals_* races check it (each rule removed makes them fail), and
 * tests/test_deque_model.c runs every interleaving of a small case. */
int weft__deque_steal_batch(struct weft__deque *dq, struct weft__job **out, int max)
{
    int64_t t = atomic_load_explicit(&dq->top, memory_order_acquire); /* as steal() */
    if (t >= atomic_load_explicit(&dq->split, memory_order_relaxed))
        return 0; /* a hint, as in steal(); no poke: callers steal one job first */
    /* Counted before the fence: the owner's near-top pop reads it after its own. */
    atomic_fetch_add_explicit(&dq->claimers, 1, memory_order_relaxed);
    WEFT__NOISE();
    /* StoreLoad: orders the count and the top load above before the split load;
     * pairs with the fence in pop()'s public path. */
    weft__fence();
    /* Acquire: pairs with the release stores of split (publication). */
    int64_t s = atomic_load_explicit(&dq->split, memory_order_acquire);
    int n = 0;
    if (t < s) {
        int64_t half = (s - t + 1) / 2;
        n = half < max ? (int)half : max;
        /* Acquire: pairs with the release store of buf in weft__deque_grow(). */
        struct weft__dqbuf *buf = atomic_load_explicit(&dq->buf, memory_order_acquire);
        for (int k = 0; k < n; k++)
            out[k] = atomic_load_explicit(&buf->slot[(t + k) & buf->mask],
                                          memory_order_relaxed);
        WEFT__NOISE();
        /* seq_cst as steal()'s: pairs with the CAS in pop() and other thieves'. */
        if (!atomic_compare_exchange_strong_explicit(&dq->top, &t, t + n,
                                                     memory_order_seq_cst,
                                                     memory_order_relaxed))
            n = -1;
    }
    /* Release: pairs with the acquire load in near_top_is_ours(), so that an owner
     * that sees the count drop sees the CAS above. */
    atomic_fetch_sub_explicit(&dq->claimers, 1, memory_order_release);
    return n;
}
