/* SPDX-License-Identifier: MIT */
/*
 * The latch: the one wait/wake protocol everything waits with (a join whose job was
 * stolen, a scope, weft_run from outside, and the layers built on them).
 *
 * A latch is one-shot: it is set once, by one setter, and waited on by at most one
 * waiter at a time. The whole state is one word, struct weft__latch.word: the state
 * in its low two bits and, for the waiting states, who waits in the bits above. A
 * registration therefore names its waiter in the same atomic step that announces it,
 * and the setter learns who to wake in the same atomic step that sets the latch.
 *
 *   state (low bits)     word                 meaning
 *   LATCH_PENDING   0    0                    not set, nobody registered
 *   LATCH_SET       1    1                    set (final)
 *   LATCH_WORKER    2    worker | 2           not set; that worker waits in place
 *                                             (helping, or parked): weft__park_wake() it
 *                        NULL | 2 (== 2)      not set; a thread that is no worker
 *                                             sleeps on the futex (the word's low half)
 *   LATCH_TASK      3    wait | 3             not set; a suspended task (its struct
 *                                             weft__wait): weft__runq_ready() it
 *
 * Transitions (every one is a single atomic operation on the word):
 *
 *   from            to              by                              how
 *   any but SET     SET             the setter                      exchange; then it
 *                                                                   wakes what it swapped out
 *   PENDING         WORKER(w)/(0)   a waiter registers              CAS (fails only on SET)
 *   WORKER(a)       WORKER(c)       the waiter moved from a to c    CAS (fails only on SET)
 *   WORKER(w)       TASK(wt)        the waiter suspends (after      CAS (fails only on SET:
 *   PENDING         TASK(wt)         its switch, latch_suspended)   then it readies itself)
 *
 * Why this is correct by construction:
 *  - No field besides the word is shared: the setter reads the waiter out of the
 *    value its exchange returned, never out of memory the waiter writes.
 *  - The setter acts on exactly the registration that was current at the instant the
 *    latch became set: there is no window between "read the waiter" and "set", so a
 *    re-registration cannot slip in between (the lost wake-up of issue 9: the old
 *    protocol moved 2 -> 0 -> 2 to re-register, and a setter that had read the old
 *    waiter before the move woke a worker nobody waited on). A word that goes from
 *    WORKER(a) to WORKER(c) and back to WORKER(a) names a again, and waking a is then
 *    right: the value is the registration, so ABA is harmless.
 *  - Every registration CAS expects a value only the waiter itself can have written,
 *    so it fails only when the setter set the latch meanwhile; the waiter then sees
 *    SET and returns (or, for a suspension, readies itself: exactly one of the setter
 *    and the waiter makes a suspended task ready).
 *  - Once the word is SET the waiter may return and free the latch (it lives on the
 *    waiter's stack): the setter never touches the latch after its exchange. A worker
 *    outlives every latch; a suspended task's wait record is valid until it is made
 *    ready; a futex wake on a stale address is harmless (futex waiters re-check).
 *
 * tests/test_latch_model.c explores every interleaving of this protocol (and of the
 * old one, where it finds the lost wake-up) with a setter, a waiter that moves and
 * re-registers twice and then parks or suspends, and a spurious waker.
 *
 * Waiting: a worker registers itself and helps (runs other work) until the latch is
 * set, parking when there is nothing to run (worker.c, park.c: the park re-checks the
 * latch after announcing itself, so a set before the park is seen and a set after it
 * finds the worker on the idle stack). A ready task found while helping runs instead
 * of the wait, which then suspends (LATCH_TASK), and so does a wait that is low on
 * stack. weft__latch_wait_suspended() suspends at once, without helping: for waits
 * whose setter may need the frames the helper would run on top of (events,
 * channels). The three waits (latch.h): weft__latch_wait_above (helping, this
 * worker's own jobs only above a floor), weft__latch_wait (the same above the
 * current bottom: joins) and weft__latch_wait_suspended.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "jobserver.h"

#include <errno.h>

enum {
    LATCH_PENDING = 0,
    LATCH_SET = 1,
    LATCH_WORKER = 2,
    LATCH_TASK = 3,
    LATCH_MASK = 3,
};

_Static_assert(_Alignof(struct weft__worker) >= 4, "latch words keep the state in 2 bits");
_Static_assert(LATCH_PENDING == WEFT__LATCH_PENDING && LATCH_SET == WEFT__LATCH_SET,
               "latch.h's inline init and is_set use the same states");
_Static_assert(_Alignof(struct weft__wait) >= 4, "latch words keep the state in 2 bits");
_Static_assert(sizeof(uintptr_t) == sizeof(void *), "a latch word holds a pointer");

static inline uintptr_t word_worker(struct weft__worker *w)
{
    return (uintptr_t)w | LATCH_WORKER;
}

static inline uintptr_t word_task(struct weft__wait *wt)
{
    return (uintptr_t)wt | LATCH_TASK;
}

/* The futex a thread waiter sleeps on: the 32 bits of the word that hold the state. */
static inline _Atomic(uint32_t) *futex_word(struct weft__latch *l)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ || UINTPTR_MAX == UINT32_MAX
    return (_Atomic(uint32_t) *)(void *)&l->word;
#else
    return (_Atomic(uint32_t) *)(void *)((char *)&l->word + sizeof(uintptr_t) - 4);
#endif
}

void weft__latch_set(struct weft__latch *l)
{
    WEFT__NOISE();
    /* acq_rel: the release publishes the work done before the set (a job's result,
     * a scope's tasks); pairs with the acquire loads in weft__latch_is_set() and the
     * registration CASes' failure loads. The acquire pairs with the release of the
     * registration we swap out, so we see the wait record it names. */
    uintptr_t old = atomic_exchange_explicit(&l->word, LATCH_SET, memory_order_acq_rel);
    switch (old & LATCH_MASK) {
    case LATCH_PENDING:
        return;
    case LATCH_WORKER:
        if (old == LATCH_WORKER)
            weft__futex_wake(futex_word(l), 1);
        else
            weft__park_wake((struct weft__worker *)(old & ~(uintptr_t)LATCH_MASK));
        return;
    case LATCH_TASK: {
        struct weft__wait *wt = (struct weft__wait *)(old & ~(uintptr_t)LATCH_MASK);
        /* NULL hint: our queue if we are a worker of the waiter's pool, else its
         * home worker's (an event set from another pool, tests/test_chan.c). */
        weft__runq_ready(NULL, wt);
        return;
    }
    default:
        WEFT_ASSERT(!"latch set twice");
    }
}

/* Register (from PENDING) or re-register (from WORKER(prev)) the calling waiter as
 * next. Returns false if the latch is set (the registration did not happen). */
static bool latch_register(struct weft__latch *l, uintptr_t prev, uintptr_t next)
{
    WEFT__NOISE();
    /* Release: publishes what the waiter wrote before registering (nothing the
     * setter reads but the word itself; kept release so the order is documented).
     * Failure (acquire): the only other writer is the setter, so the word is SET;
     * pairs with its exchange, for the work it published. */
    bool ok = atomic_compare_exchange_strong_explicit(&l->word, &prev, next,
                                                      memory_order_release,
                                                      memory_order_acquire);
    WEFT_ASSERT(ok || prev == LATCH_SET);
    return ok;
}

#ifdef WEFT_HAVE_FIBERS
/* After a waiter switched away: make it the latch's suspended task, or ready if the
 * latch was set meanwhile. Runs on the worker the waiter's thread switched to, while
 * the waiter cannot run; arg is the latch. */
static void latch_suspended(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    struct weft__latch *l = arg;
    /* Acquire: if it reads SET, pairs with the setter's exchange, so the waiter
     * (resumed through the ready queue's lock) sees what was published. */
    uintptr_t cur = atomic_load_explicit(&l->word, memory_order_acquire);
    if (cur != LATCH_SET && latch_register(l, cur, word_task(wt)))
        return; /* the setter readies wt */
    weft__runq_push_ready(w, wt);
}

/* Suspend the running fiber on l, switching to to. Returns once l is set. */
static void suspend_on(struct weft__worker *w, struct weft__fiber *to, struct weft__latch *l)
{
    struct weft__wait wt;
    weft__suspend_switch(w, to, latch_suspended, &wt, l);
    WEFT_ASSERT(weft__latch_is_set(l));
}
#endif

/* The wait of worker w on a latch it registered on (WORKER(w)): run other work until
 * the latch is set; a ready task found meanwhile runs instead of this wait, which then
 * suspends on the latch (a wait never holds a ready task back). floor: see
 * weft__worker_find_work; it applies only on the worker that began the wait. */
static void wait_helping(struct weft__worker *w, struct weft__latch *l, int64_t floor)
{
    struct weft__worker *home = w;
    for (;;) {
        /* Finishes deferred here may be the last ones of the scope we wait for
         * (scope.c): hand them in before deciding anything. */
        weft__acct_flush(w);
        if (weft__latch_is_set(l))
            return;
#ifdef WEFT_HAVE_FIBERS
        if (weft__suspend_stack_low(w)) {
            /* Deep already: wait suspended, and let a fresh loop run the work. */
            struct weft__fiber *to = weft__suspend_dispatch_fiber(w);
            if (to) {
                suspend_on(w, to, l);
                return;
            }
        }
#endif
#ifdef WEFT_HAVE_FIBERS
        if (floor != INT64_MIN &&
            atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) <= floor &&
            weft__deque_looks_nonempty(&w->dq)) {
            /* Jobs on our deque, all below the floor: not ours to run on top of this
             * wait (they belong to frames under it), but nothing else here may run
             * them either while we help elsewhere or park. Worse, one can be new: a
             * job we ran suspended, other fibers popped below the floor meanwhile,
             * and it resumed here and spawned into the deque's now lower part (the
             * one-worker hang tests/test_chaos.c found). So wait suspended, and let
             * a fresh dispatch fiber, which has no floor, run them. */
            struct weft__fiber *to = weft__suspend_dispatch_fiber(w);
            if (to) {
                suspend_on(w, to, l);
                return;
            }
        }
#endif
        struct weft__job *job = weft__worker_find_work(w, l, floor);
        if (job) {
#ifdef WEFT_HAVE_FIBERS
            if (weft__is_resume(job)) {
                suspend_on(w, weft__runq_wait_of(job)->fiber, l);
                return;
            }
#endif
            weft__worker_run_job(w, job);
        }
        struct weft__worker *now = weft__current();
        if (now != w) {
            /* The job we ran suspended and we came back on another worker: the
             * registration must name the worker we wait on now. */
            if (!latch_register(l, word_worker(w), word_worker(now)))
                return;
            w = now;
            floor = w == home ? floor : INT64_MIN;
        }
    }
}

void weft__latch_wait_above(struct weft__worker *w, struct weft__latch *l, int64_t floor)
{
    if (weft__latch_is_set(l))
        return;
    if (!latch_register(l, LATCH_PENDING, w ? word_worker(w) : LATCH_WORKER))
        return;
    if (w) {
        wait_helping(w, l, floor);
        /* The waiter goes on: hand in the finishes helping deferred (scope.c). */
        weft__acct_flush(weft__current());
        return;
    }
    /* A thread that is no worker sleeps at once. Spinning first was measured and
     * rejected: with as many workers as cores the spinner takes a core from them
     * (collect n=1M on 2 workers: 0.93x serial with a 20 us spin, 1.84x without)
     * and the woken worker waits for the spinner's core (wake: 21.8 us vs 1.4 us). */
    struct weft__worker *self = weft__js_outside_begin(); /* jobserver.c: token back */
    while (!weft__latch_is_set(l))
        weft__futex_wait(futex_word(l), LATCH_WORKER);
    weft__js_outside_end(self);
}

void weft__latch_wait(struct weft__worker *w, struct weft__latch *l)
{
    weft__latch_wait_above(w, l,
                           w ? atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) : 0);
}

void weft__latch_wait_suspended(struct weft__latch *l)
{
    if (weft__latch_is_set(l))
        return;
    struct weft__worker *w = weft__current();
#ifdef WEFT_HAVE_FIBERS
    if (w && w->fiber) {
        struct weft__wait wt;
        if (weft__suspend(&wt, latch_suspended, l) == 0) {
            WEFT_ASSERT(weft__latch_is_set(l));
            return;
        }
        /* No stack to switch to: wait in place, helping, as a join does. */
    }
#endif
    weft__latch_wait(w, l);
}
