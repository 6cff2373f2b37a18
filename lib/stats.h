/* SPDX-License-Identifier: MIT */
/* Per-worker figures: event counts, time and latency (stats.c); struct weft__worker
 * embeds them. */
#ifndef WEFT_STATS_H
#define WEFT_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Latency samples a worker keeps (the last ones it took), and how often a spawn is
 * sampled when tracing is off (every this many spawns of a worker). */
#define WEFT__LAT_SAMPLES 256u
#define WEFT__LAT_EVERY   64u

/* Written by the owner only (relaxed load + store, never an RMW); read by
 * weft_pool_stats and weft_pool_stats_worker from any thread as a racy snapshot.
 * Times are CLOCK_MONOTONIC nanoseconds. Busy = since start - search_ns - the
 * running search (stats.c says why searches are timed only from their second look). */
struct weft__wstats {
    _Atomic(uint64_t) start_ns;     /* the worker thread started */
    _Atomic(uint64_t) search_ns;    /* finished timed searches, parks included */
    _Atomic(uint64_t) search_since; /* the running search is timed from here; 0: none */
    _Atomic(uint64_t) idle_ns;      /* finished parks */
    _Atomic(uint64_t) park_since;   /* start of the running park; 0: none */
    _Atomic(uint64_t) lat_n;        /* samples taken so far (the ring's next slot) */
    _Atomic(uint32_t) lat[WEFT__LAT_SAMPLES]; /* spawn-to-start, ns (saturated) */
};

/* Event counts, counted by the worker that did the thing; summed by weft_pool_stats.
 * Single writer: the owner adds with a relaxed load+store, never an RMW. */
struct weft__counters {
    _Atomic(uint64_t) spawns, steals, steal_fails, parks, wakeups, io_ops;
};

#define WEFT__COUNT_N(w, field, n)                                                    \
    atomic_store_explicit(&(w)->stats.field,                                          \
                          atomic_load_explicit(&(w)->stats.field, memory_order_relaxed) + \
                              (uint64_t)(n),                                          \
                          memory_order_relaxed)
#define WEFT__COUNT(w, field) WEFT__COUNT_N(w, field, 1)

static inline uint64_t weft__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
