/* SPDX-License-Identifier: MIT */
/*
 * Scope deadlines (weft_scope_deadline): one timer per pool.
 *
 * A deadline is an entry inside its scope (struct weft__deadline, on the stack of
 * weft_scope_run) kept in a binary min-heap by expiry time, with its heap index in
 * the entry so that a scope that finishes first takes its entry out in O(log n).
 * One thread per pool, started when the first deadline is armed, sleeps on a
 * condition variable (CLOCK_MONOTONIC) until the earliest expiry or until an arm
 * makes an earlier one. On expiry it cancels the scope with -ETIMEDOUT (scope.c),
 * which cancels the scope's in-flight I/O and waits and its nested scopes.
 *
 * Locking: the heap and every entry's fields are under the timer's mu, and the
 * timer thread cancels an expired scope while it holds mu. So the end of a scope,
 * which disarms its entry under mu, either removes the entry before it fires or
 * waits until the cancel is over: the thread never touches a scope that has
 * returned. Lock order: timer mu, then the scope's mu (scope_fail); nothing takes
 * the timer's mu under a scope's.
 *
 * Why a thread: a deadline must fire while every worker runs CPU-bound tasks (they
 * see the cancel at their next spawn, wait or I/O call), so it cannot live in the
 * workers' rings or their parking (a busy worker looks at neither), nor on the
 * blocking backend's poller (absent on the io_uring backend). A condition variable
 * rather than a timerfd: the thread has nothing else to wait for, and a timed wait
 * needs no descriptor (so nothing for a forked child to inherit). Rejected: a
 * thread or a POSIX timer per scope (glibc's SIGEV_THREAD starts a thread per
 * expiry), and a sorted list (per-call timeouts are one nested scope per call, so
 * thousands of entries can be armed at once).
 */
#define _GNU_SOURCE
#include "reactor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct weft__timer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stop;
    struct weft__deadline **heap;     /* under mu */
    size_t n, cap;
};

int weft__timer_init(weft_pool *pool)
{
    struct weft__timer *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&t->mu, NULL);
    pool->timer = t;
    return 0;
}

void weft__timer_free(weft_pool *pool)
{
    struct weft__timer *t = pool->timer;
    if (!t)
        return;
    pool->timer = NULL;
    if (atomic_load_explicit(&pool->dead, memory_order_relaxed)) {
        free(t->heap); /* forked child: no thread here, mu in any state */
        free(t);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    bool started = t->started;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (started)
        pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->heap);
    free(t);
}

/* Heap helpers, under mu. */
static void place(struct weft__timer *t, size_t i, struct weft__deadline *d)
{
    t->heap[i] = d;
    d->idx = i;
}

static void sift_up(struct weft__timer *t, size_t i)
{
    struct weft__deadline *d = t->heap[i];
    while (i > 0 && t->heap[(i - 1) / 2]->when > d->when) {
        place(t, i, t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(t, i, d);
}

static void sift_down(struct weft__timer *t, size_t i)
{
    struct weft__deadline *d = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->n)
            break;
        if (c + 1 < t->n && t->heap[c + 1]->when < t->heap[c]->when)
            c++;
        if (t->heap[c]->when >= d->when)
            break;
        place(t, i, t->heap[c]);
        i = c;
    }
    place(t, i, d);
}

static void heap_remove(struct weft__timer *t, struct weft__deadline *d)
{
    size_t i = d->idx;
    d->armed = false;
    struct weft__deadline *last = t->heap[--t->n];
    if (i == t->n)
        return;
    place(t, i, last);
    sift_down(t, i);
    sift_up(t, last->idx);
}

static void *timer_main(void *arg)
{
    struct weft__timer *t = arg;
    pthread_setname_np(pthread_self(), "weft-timer");
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        if (t->n == 0) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        struct weft__deadline *d = t->heap[0];
        uint64_t now = weft__now_ns();
        if (d->when > now) {
            struct timespec ts = {(time_t)(d->when / 1000000000u),
                                  (long)(d->when % 1000000000u)};
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            continue; /* the earliest entry may have changed */
        }
        heap_remove(t, d);
        /* Under mu: the scope cannot finish its weft_scope_run meanwhile. */
        weft__scope_expire(d->scope, -ETIMEDOUT);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Under mu: start the thread with asynchronous signals blocked (it may be started
 * from a thread of the program that has them unblocked). */
static int start_thread(struct weft__timer *t)
{
    sigset_t all, old;
    sigfillset(&all);
    static const int sync_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t k = 0; k < sizeof(sync_sigs) / sizeof(sync_sigs[0]); k++)
        sigdelset(&all, sync_sigs[k]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&t->thread, NULL, timer_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return -r;
    t->started = true;
    return 0;
}

int weft__timer_arm(weft_pool *pool, struct weft__deadline *d, uint64_t when)
{
    struct weft__timer *t = pool->timer;
    pthread_mutex_lock(&t->mu);
    int err = 0;
    if (!t->started && (err = start_thread(t)) != 0)
        goto out;
    if (d->armed) {
        if (when < d->when) { /* the earliest deadline wins */
            d->when = when;
            sift_up(t, d->idx);
        }
    } else {
        if (t->n == t->cap) {
            size_t ncap = t->cap ? t->cap * 2 : 16;
            struct weft__deadline **nh = realloc(t->heap, ncap * sizeof(*nh));
            if (!nh) {
                err = -ENOMEM;
                goto out;
            }
            t->heap = nh;
            t->cap = ncap;
        }
        d->when = when;
        d->armed = true;
        place(t, t->n++, d);
        sift_up(t, d->idx);
    }
    if (t->heap[0] == d)
        pthread_cond_signal(&t->cv); /* a new earliest: the thread sleeps too long */
out:
    pthread_mutex_unlock(&t->mu);
    return err;
}

void weft__timer_disarm(weft_pool *pool, struct weft__deadline *d)
{
    struct weft__timer *t = pool->timer;
    pthread_mutex_lock(&t->mu);
    if (d->armed)
        heap_remove(t, d);
    pthread_mutex_unlock(&t->mu);
}

size_t weft__timer_armed(const weft_pool *pool)
{
    struct weft__timer *t = pool->timer;
    pthread_mutex_lock(&t->mu);
    size_t n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

bool weft__timer_started(const weft_pool *pool)
{
    struct weft__timer *t = pool->timer;
    pthread_mutex_lock(&t->mu);
    bool s = t->started;
    pthread_mutex_unlock(&t->mu);
    return s;
}
