/* SPDX-License-Identifier: MIT */
/*
 * The figures weft_pool_stats and weft_pool_stats_worker report: the event counters
 * (struct weft__counters, stats.h: counted by each worker with WEFT__COUNT where the
 * thing happens), busy and idle time, and the latency from a spawn to the start of
 * its task.
 *
 * Time. A worker is busy unless it is looking for work or parked; idle while it
 * sleeps in a park. The clock is never read per job, nor when a search finds work
 * at its first look (a thief that keeps stealing: a clock read there would cost as
 * much as the steal, ~100 ns on this VM's TSC). A search is timed from its first
 * pause, where it has failed once and is about to waste time on purpose, until it
 * ends; parks happen inside it. So busy = lifetime - timed searches, and the first
 * look of every search counts as busy. A wait whose job was stolen searches like an
 * idle worker, so it is not busy either once it has looked once.
 *
 * Latency. Reading a clock on every spawn would cost more than the spawn (~20 ns
 * against 45). So a worker stamps one spawn in WEFT__LAT_EVERY (a private
 * countdown: one decrement and a branch on the spawn path), the frame carries the
 * stamp (0 otherwise: slabs start so, and a start clears it), and whoever starts
 * the frame records start - stamp in its own ring of the last WEFT__LAT_SAMPLES
 * samples. While tracing, every spawn is stamped (the flows
 * of trace.c need the spawn time), so every start is sampled.
 *
 * Every field is written by its worker only, with relaxed loads and stores, and read
 * from any thread by weft_pool_stats / weft_pool_stats_worker as a racy snapshot.
 * Percentiles are nearest-rank over the samples held when the snapshot is taken.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "jobserver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LOAD(x)     atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void weft__obs_thread_start(struct weft__worker *w)
{
    uint64_t now = weft__now_ns();
    STORE(w->wstats.start_ns, now);
    w->stamp_tick = w->trace ? 1 : WEFT__LAT_EVERY;
    if (w->trace)
        weft__trace_thread_start(w, now);
}

void weft__obs_search_slow(struct weft__worker *w)
{
    STORE(w->wstats.search_since, weft__now_ns());
}

void weft__obs_search_end_slow(struct weft__worker *w)
{
    uint64_t now = weft__now_ns(), since = LOAD(w->wstats.search_since);
    STORE(w->wstats.search_ns, LOAD(w->wstats.search_ns) + (now > since ? now - since : 0));
    STORE(w->wstats.search_since, 0);
}

void weft__obs_park_begin(struct weft__worker *w)
{
    uint64_t now = weft__now_ns();
    STORE(w->wstats.park_since, now);
    if (w->trace)
        weft__trace_park_begin(w, now);
}

void weft__obs_park_end(struct weft__worker *w)
{
    uint64_t now = weft__now_ns(), since = LOAD(w->wstats.park_since);
    STORE(w->wstats.idle_ns, LOAD(w->wstats.idle_ns) + (now > since ? now - since : 0));
    STORE(w->wstats.park_since, 0);
    if (w->trace)
        weft__trace_park_end(w, now);
}

void weft__spawn_stamp_slow(struct weft__worker *w, struct weft__frame *fr)
{
    weft__frame_set_stamp(fr, weft__now_ns());
    w->stamp_tick = w->trace && !w->trace->stopped ? 1 : WEFT__LAT_EVERY;
}

void weft__spawn_latency(struct weft__worker *w, struct weft__frame *fr)
{
    uint64_t now = weft__now_ns();
    uint64_t t = weft__frame_stamp(fr);
    uint64_t d = now > t ? now - t : 0;
    uint64_t n = LOAD(w->wstats.lat_n);
    STORE(w->wstats.lat[n % WEFT__LAT_SAMPLES], d > UINT32_MAX ? UINT32_MAX : (uint32_t)d);
    STORE(w->wstats.lat_n, n + 1);
    weft__frame_set_stamp(fr, 0); /* the frame is reused unstamped unless sampled again */
}

/* ------------------------------------------------------------------------------
 * Snapshots
 * ---------------------------------------------------------------------------- */

/* w's busy and idle time up to now, the running search and park included. */
static void add_times(const struct weft__worker *w, weft_stats *out)
{
    struct weft__wstats *s = (struct weft__wstats *)&w->wstats;
    uint64_t start = LOAD(s->start_ns), search = LOAD(s->search_ns);
    uint64_t ssince = LOAD(s->search_since);
    uint64_t idle = LOAD(s->idle_ns), psince = LOAD(s->park_since);
    uint64_t now = weft__now_ns();
    if (!start)
        return; /* not started yet */
    if (ssince && now > ssince)
        search += now - ssince;
    if (psince && now > psince)
        idle += now - psince;
    uint64_t life = now > start ? now - start : 0;
    out->busy_ns += life > search ? life - search : 0;
    out->idle_ns += idle;
}

/* Append w's samples to v; returns how many. */
static size_t take_samples(const struct weft__worker *w, uint32_t *v)
{
    struct weft__wstats *s = (struct weft__wstats *)&w->wstats;
    uint64_t n = LOAD(s->lat_n);
    size_t k = n < WEFT__LAT_SAMPLES ? (size_t)n : WEFT__LAT_SAMPLES;
    for (size_t i = 0; i < k; i++)
        v[i] = LOAD(s->lat[i]);
    return k;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p% of them at or below it. */
static void percentiles(uint32_t *v, size_t n, weft_stats *out)
{
    if (n == 0)
        return;
    qsort(v, n, sizeof(*v), cmp_u32);
    out->latency_p50_ns = v[(50 * n + 99) / 100 - 1];
    out->latency_p99_ns = v[(99 * n + 99) / 100 - 1];
}

/* weft_pool_stats: the time and latency fields. */
static void pool_extra(const weft_pool *pool, weft_stats *out)
{
    for (unsigned i = 0; i < pool->nthreads; i++)
        add_times(pool->workers[i], out);
    uint32_t *v = malloc((size_t)pool->nthreads * WEFT__LAT_SAMPLES * sizeof(*v));
    if (!v)
        return; /* no percentiles rather than a failure: the call cannot fail */
    size_t n = 0;
    for (unsigned i = 0; i < pool->nthreads; i++)
        n += take_samples(pool->workers[i], v + n);
    percentiles(v, n, out);
    free(v);
}

WEFT_API void weft_pool_stats(const weft_pool *pool, weft_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!pool) {
        /* NULL: the calling worker's pool, else the default pool if it exists. */
        struct weft__worker *w = weft__self;
        pool = w ? w->pool : weft__default_pool_peek();
        if (!pool)
            return;
    }
    out->spawns = atomic_load_explicit(&((weft_pool *)pool)->ext_spawns, memory_order_relaxed);
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__counters *c = &pool->workers[i]->stats;
        out->spawns += atomic_load_explicit(&c->spawns, memory_order_relaxed);
        out->steals += atomic_load_explicit(&c->steals, memory_order_relaxed);
        out->steal_fails += atomic_load_explicit(&c->steal_fails, memory_order_relaxed);
        out->parks += atomic_load_explicit(&c->parks, memory_order_relaxed);
        out->wakeups += atomic_load_explicit(&c->wakeups, memory_order_relaxed);
        out->io_ops += atomic_load_explicit(&c->io_ops, memory_order_relaxed);
    }
    weft__js_stats(pool, out);
    pool_extra(pool, out); /* busy, idle, latency */
}


WEFT_API int weft_pool_stats_worker(const weft_pool *pool, unsigned index, weft_stats *out)
{
    if (!out)
        return -EINVAL;
    if (!pool) {
        struct weft__worker *self = weft__current();
        pool = self ? self->pool : weft__default_pool_peek();
    }
    if (!pool || index >= pool->nthreads)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    const struct weft__worker *w = pool->workers[index];
    struct weft__counters *c = (struct weft__counters *)&w->stats;
    out->spawns = LOAD(c->spawns);
    out->steals = LOAD(c->steals);
    out->steal_fails = LOAD(c->steal_fails);
    out->parks = LOAD(c->parks);
    out->wakeups = LOAD(c->wakeups);
    out->io_ops = LOAD(c->io_ops);
    add_times(w, out);
    uint32_t v[WEFT__LAT_SAMPLES];
    percentiles(v, take_samples(w, v), out);
    return 0;
}
