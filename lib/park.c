/* SPDX-License-Identifier: MIT */
/*
 * Parking: idle workers sleep, and no wake-up is lost.
 *
 * The model is Go's and Tokio's: the pool counts workers that are *searching* (out
 * of local work, looking at other deques and the injector) and workers that are
 * *asleep*, both in one 32-bit word (low 16 bits searching, high 16 sleeping). A
 * push wakes a sleeper only when nobody is searching, since a searcher will find the
 * new job; a searcher that finds work and was the last searcher wakes one sleeper if
 * more work is in sight, so that someone keeps looking. A worker that gives up
 * searching announces itself as a sleeper (under idle_mu, one RMW on the word),
 * then runs the heavy barrier and looks at every deque, ready and yield queue and
 * the injector once more (weft__runq_work_visible) before it sleeps on its own
 * futex word.
 *
 * Why nothing is lost: pushes must not pay for a look at the shared word, so a
 * parker that leaves nobody searching *pokes* every deque (a flag on the owner's own
 * cache line) after its RMW of the word, then runs membarrier() before its last look.
 * A push stores bottom and then loads its poke, with only a compiler barrier between
 * (weft__after_push in weft.h: the inline join, spawns, the owner's pushes onto its
 * ready queue). Either the pusher's store precedes the barrier membarrier()
 * forces on it, and the last look sees the job; or the pusher's poke load follows
 * that barrier and sees the poke, and the pusher clears it and looks at the word
 * (weft__push_poked): a sleeper with nobody searching, so it wakes one. Without
 * membarrier (old kernels, seccomp) pokes never clear and every push fences.
 * The other way into "nobody searches, somebody sleeps" is the last searcher
 * finding work: it pokes too, and wakes a sleeper if more work is in sight. A wake for
 * a specific worker (a latch it waits on, shutdown) is a store of 1 to its futex word
 * after removing it from the idle stack under idle_mu; the parker clears the word
 * under the same lock when it announces itself, and re-checks its condition after.
 *
 * A worker leaves the idle stack searching: whoever wakes it moves it from sleeping
 * to searching in the word, so that a burst of pushes wakes one worker, not all.
 *
 * Rejected: a condition variable per pool (every wake takes the lock; a broadcast
 * wakes all); spinning instead of sleeping (an idle pool must use no CPU).
 * A worker sleeps where its I/O backend says (backend.h's park and wake): a worker
 * with a ring (uring.c) inside it, so that an I/O completion ends the sleep too,
 * and a wake is then a message to that ring; one on the blocking threads on its
 * futex word.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "backend.h"
#include "jobserver.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void weft__futex_wait(_Atomic(uint32_t) *word, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void weft__futex_wake(_Atomic(uint32_t) *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void weft__park_search_begin(struct weft__worker *w)
{
    if (w->searching)
        return;
    w->searching = true;
    /* seq_cst: makes this worker count as a searcher before it looks; pairs with
     * the pushers' load of the word (a push then need not wake anyone). */
    atomic_fetch_add_explicit(&w->pool->sleep_state, WEFT__SEARCH_ONE,
                              memory_order_seq_cst);
}

/* Nobody is searching and somebody sleeps: from now on a push must wake a sleeper.
 * Poke every deque so that owners look at the word on their next push, then make
 * pushes that did not see the poke visible (heavy barrier), for the caller's look. */
static void poke_all(weft_pool *pool)
{
    if (!weft__fence_full) {
        /* Release: pairs with the exchange in weft__push_poked(). */
        for (unsigned k = 0; k < pool->nthreads; k++)
            atomic_store_explicit(&pool->workers[k]->dq.poke, 1, memory_order_release);
    }
    /* StoreLoad for every pusher at once: pairs with the compiler-only fence between
     * a push's bottom store and its poke load. */
    weft__heavy_barrier();
}

void weft__park_search_end(struct weft__worker *w)
{
    if (!w->searching)
        return;
    w->searching = false;
    weft__obs_search_end(w); /* busy time (stats.c) */
    /* seq_cst: pairs with the pushers' load as above. */
    uint32_t prev = atomic_fetch_sub_explicit(&w->pool->sleep_state, WEFT__SEARCH_ONE,
                                              memory_order_seq_cst);
    /* The last searcher found work while others sleep. Pushes from now on must wake
     * someone (poke), and if more work is in sight already, wake one now. (Waking
     * one unconditionally, as Tokio does, puts a futex wake on the path of every
     * task injected into an idle pool.) */
    if ((prev & 0xffffu) == 1 && prev >= WEFT__SLEEP_ONE) {
        poke_all(w->pool);
        if (weft__runq_work_visible(w->pool))
            weft__park_wake_one(w->pool);
    }
}

/* Pop a sleeper and move it to searching. Called with idle_mu held. */
static void remove_idle_locked(weft_pool *pool, unsigned k)
{
    struct weft__worker *w = pool->idle[k];
    pool->idle[k] = pool->idle[--pool->nidle];
    w->parked = false;
    w->searching = true;
    atomic_fetch_add_explicit(&pool->sleep_state, WEFT__SEARCH_ONE - WEFT__SLEEP_ONE,
                              memory_order_seq_cst); /* pairs with the pushers' load */
}

/* Take w off the idle stack (moving it to searching) if it is on it. Returns
 * whether it was. Used by wakers, and by a parker that found a reason not to sleep
 * (a waker may have taken it off already: it leaves searching either way). */
static bool leave_idle(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    bool was = false;
    pthread_mutex_lock(&pool->idle_mu);
    if (w->parked) {
        for (unsigned k = 0; k < pool->nidle; k++)
            if (pool->idle[k] == w) {
                remove_idle_locked(pool, k);
                was = true;
                break;
            }
    }
    pthread_mutex_unlock(&pool->idle_mu);
    return was;
}

static void wake_word(struct weft__worker *w)
{
    /* Release: pairs with the acquire load in weft__park(); the woken worker sees
     * its new state (searching, off the idle stack). */
    atomic_store_explicit(&w->wake, 1, memory_order_release);
    w->io->wake(w);         /* where it parks: its ring, or the futex word */
}

void weft__park_wake_one(weft_pool *pool)
{
    pthread_mutex_lock(&pool->idle_mu);
    if (pool->nidle == 0) {
        pthread_mutex_unlock(&pool->idle_mu);
        return;
    }
    /* LIFO: the most recently parked worker has the warmest cache. WEFT_SCHED=random:
     * a sleeper drawn by the waker's generator (noise.c), for other wake orders. */
    unsigned k = pool->nidle - 1;
    if (WEFT_UNLIKELY(pool->sched_random))
        k = (unsigned)(weft__rng_next(weft__noise_rng()) % pool->nidle);
    struct weft__worker *w = pool->idle[k];
    remove_idle_locked(pool, k);
    pthread_mutex_unlock(&pool->idle_mu);
    wake_word(w);
}

void weft__park_wake(struct weft__worker *w)
{
    /* The calling thread is w: running, so not parked, and it re-checks what it
     * waits for before it parks (a scope's last task finishing on the worker that
     * waits for the scope, the common case of nested scopes: without this, every
     * such scope took and released idle_mu, ~90 instructions). */
    if (w == weft__self)
        return;
    /* Not parked: it is awake and re-checks its condition before it sleeps again. */
    if (leave_idle(w))
        wake_word(w);
}

/* A push (or injection) happened: wake a sleeper if nobody is searching. The caller
 * has already ordered its publication before this load (see the top of the file). */
void weft__park_notify(weft_pool *pool)
{
    uint32_t s = atomic_load_explicit(&pool->sleep_state, memory_order_relaxed);
    if (WEFT__NEED_WAKE(s))
        weft__park_wake_one(pool);
}

/* A push found its deque poked: a worker went to sleep with nobody left searching
 * since the last look. Clear the poke and wake a sleeper if that is still so. */
WEFT_API void weft__push_poked(struct weft__worker *w)
{
    weft_pool *pool = w->pool;
    /* Someone may be waking up to steal: give it something to take (deque.c). */
    weft__deque_publish(&w->dq);
    if (w->dq.fence_full) {
        /* No membarrier: the parker cannot see our bottom store unless we fence. */
        weft__fence();
    } else {
        /* acq_rel RMW: reads the newest poke; its acquire pairs with the release
         * store in weft__park(), so the load below sees that parker's RMW of the
         * word. A poke stored after this exchange stays for our next push. */
        atomic_exchange_explicit(&w->dq.poke, 0, memory_order_acq_rel);
        weft__fence(); /* our bottom store vs the load */
    }
    weft__park_notify(pool);
}

/* Sleep until woken. The caller is searching and found nothing; returns searching.
 * until: a latch whose setting ends the wait (checked after announcing: its setter
 * then finds us on the idle stack, under idle_mu, and wakes us). */
void weft__park(struct weft__worker *w, const struct weft__latch *until)
{
    weft_pool *pool = w->pool;
    WEFT_ASSERT(w->searching);
    pthread_mutex_lock(&pool->idle_mu);
    w->searching = false;
    w->parked = true;
    pool->idle[pool->nidle++] = w;
    atomic_store_explicit(&w->wake, 0, memory_order_relaxed);
    /* seq_cst RMW: searching -> sleeping in one step; pairs with the pushers' load. */
    uint32_t prev = atomic_fetch_add_explicit(&pool->sleep_state,
                                              WEFT__SLEEP_ONE - WEFT__SEARCH_ONE,
                                              memory_order_seq_cst);
    pthread_mutex_unlock(&pool->idle_mu);
    WEFT__NOISE();
    if ((prev & 0xffffu) == WEFT__SEARCH_ONE)
        poke_all(pool);     /* nobody searches now; ends with the heavy barrier */
    else
        weft__heavy_barrier(); /* as in poke_all(), for our own last look */
    if (weft__latch_is_set(until) ||
        weft__runq_work_visible(pool)) {
        leave_idle(w);
        WEFT_ASSERT(w->searching);
        return;
    }
    weft__stack_cache_trim(&pool->stacks); /* fiber.c: stacks of a past burst */
    weft__js_sleep(w);          /* jobserver.c: asleep, a worker holds no token */
    WEFT__COUNT(w, parks);
    weft__obs_park_begin(w); /* idle time, park slices (stats.c); _end at each wake */
    /* Park in the backend (backend.h): in the ring, where a completion, a MSG_RING
     * or the eventfd ends the wait; on the blocking threads, on the futex word.
     * Acquire: pairs with the release store in wake_word(). */
    while (atomic_load_explicit(&w->wake, memory_order_acquire) == 0)
        if (w->io->park(w) > 0)
            break; /* completions made tasks ready here: leave the idle stack below */
    /* Leave the idle stack ourselves if we are still on it: after completions
     * (unless a waker has just taken us off it), and after a wake that may be
     * stale: a waker takes us off the idle stack under idle_mu and stores the
     * wake word after unlocking, so its store can land after we left this park
     * another way (a completion) and entered the next one, which then sees 1
     * while we are still on the idle stack, counted asleep and not searching
     * (tests/test_chaos.c under TSan hit the assertion below). Under idle_mu,
     * which also makes the read of searching race-free. */
    leave_idle(w);
    WEFT__COUNT(w, wakeups);
    weft__obs_park_end(w);
    WEFT_ASSERT(w->searching);
}
