/* SPDX-License-Identifier: MIT */
/*
 * Checks for code running on worker (or helper) threads: assertions may only run on
 * the test's own thread, so other threads record the first failing line with
 * TCHECK (VCHECK for a value) and the test asserts it with ASSERT_NO_BAD (or reads
 * bad_line itself).
 */
#ifndef WEFT_TEST_CHECKS_H
#define WEFT_TEST_CHECKS_H

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include "harness.h"
#include "weft.h"

static _Atomic(int) bad_line __attribute__((unused));

#define TCHECK(c)                                                                     \
    do {                                                                              \
        if (!(c)) {                                                                   \
            int zero_ = 0;                                                            \
            atomic_compare_exchange_strong(&bad_line, &zero_, __LINE__);              \
        }                                                                             \
    } while (0)

/* As TCHECK, for values: the first failure also keeps what was seen and wanted
 * (bad_got, bad_want), for the test's report. */
static _Atomic(long long) bad_got __attribute__((unused)), bad_want __attribute__((unused));

#define VCHECK(expr, want)                                                            \
    do {                                                                              \
        long long g_ = (long long)(expr), w_ = (long long)(want);                     \
        if (g_ != w_) {                                                               \
            int z_ = 0;                                                               \
            if (atomic_compare_exchange_strong(&bad_line, &z_, __LINE__)) {           \
                atomic_store(&bad_got, g_);                                           \
                atomic_store(&bad_want, w_);                                          \
            }                                                                         \
        }                                                                             \
    } while (0)

#define ASSERT_NO_BAD()                                                               \
    do {                                                                              \
        int l_ = atomic_exchange(&bad_line, 0);                                       \
        cr_assert_eq(l_, 0, "check at %s:%d failed on another thread", __FILE__, l_); \
    } while (0)

static inline weft_pool *mkpool(unsigned threads)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    cr_assert_not_null(p);
    return p;
}

/* Sanitizers slow the CPU, not the clock: watchdogs on CPU-bound waits grow by this. */
#define WT_SLOW (WEFT_TEST_SCALE_DIV == 1 ? 1 : 2 * WEFT_TEST_SCALE_DIV)

static inline double wt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The polling interval of the waits below: they wait for state, the sleep only keeps
 * them from spinning on a loaded machine. */
static inline void wt_poll_pause(void)
{
    struct timespec ts = {0, 200000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Workers of pool asleep right now, from the public counters: a worker counts a park
 * just before it sleeps and a wakeup just after. (A racy snapshot while the pool
 * runs; exact once it is idle.) */
static inline uint64_t wt_parked(weft_pool *pool)
{
    weft_stats st;
    weft_pool_stats(pool, &st);
    return st.parks - st.wakeups;
}

/* Wait until at least want workers of pool sleep; false if the watchdog (ms of wall
 * time, scaled for sanitizers) ran out first. */
static inline bool wt_wait_parked(weft_pool *pool, unsigned want, double ms)
{
    double end = wt_now_ms() + ms * WT_SLOW;
    while (wt_parked(pool) < want) {
        if (wt_now_ms() > end)
            return false;
        wt_poll_pause();
    }
    return true;
}

#endif
