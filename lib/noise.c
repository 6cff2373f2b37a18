/* SPDX-License-Identifier: MIT */
/*
 * Seeded scheduling noise, for tests: WEFT_SCHED=random:SEED.
 *
 * Concurrency bugs hide in interleavings the default schedule rarely produces. Go's
 * runtime randomises its scheduler under the race detector for this reason. With
 * WEFT_SCHED=random:SEED a pool (read at creation):
 *  - picks steal victims at random rather than nearest first (worker.c);
 *  - wakes a random sleeper rather than the most recently parked one (park.c);
 *  - at protocol points (deque push/pop/steal, the latch's set and registrations,
 *    parking, the after-switch actions) yields the CPU or spins for a moment.
 * Every choice comes from a generator owned by the worker that makes it, seeded from
 * SEED and the worker's index, so the same seed makes each worker draw the same
 * sequence of choices (threads outside the pool draw from per-thread generators
 * seeded from SEED and the order they first drew). Real threads still interleave as
 * the kernel runs them, so a seed replays the choices, not the whole execution; in
 * practice that reproduces most failures within a few runs.
 *
 * WEFT_SCHED=random (no seed) picks one from the clock. Either way the seed is printed
 * once on stderr ("weft: WEFT_SCHED=random:N") so a failing test's log says how to
 * replay it. -Ddebug_sched builds the library with the noise always on.
 *
 * Off costs one relaxed load and a predictable branch at each protocol point, none
 * of which are on weft_join's inline path.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "noise.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef WEFT_DEBUG_SCHED
_Atomic(bool) weft__noise_on = true;
#else
_Atomic(bool) weft__noise_on = false;
#endif

static _Atomic(uint64_t) noise_seed;
static _Atomic(uint64_t) outside_threads;
static _Atomic(bool) seed_printed;
static __thread uint64_t outside_rng;

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x ? x : 1;
}

uint64_t weft__noise_seed_worker(uint64_t seed, unsigned i)
{
    return splitmix(seed ^ ((uint64_t)i << 32));
}

uint64_t *weft__noise_rng(void)
{
    struct weft__worker *w = weft__self;
    if (w)
        return &w->rng;
    if (!outside_rng) {
        uint64_t k = atomic_fetch_add_explicit(&outside_threads, 1, memory_order_relaxed);
        outside_rng = splitmix(atomic_load_explicit(&noise_seed, memory_order_relaxed) ^
                               ~k);
    }
    return &outside_rng;
}

void weft__noise_point(void)
{
    unsigned r = (unsigned)(weft__rng_next(weft__noise_rng()) >> 40) % 16;
    if (r == 0)
        sched_yield();
    else if (r < 4)
        for (unsigned k = 0; k < r * 50; k++)
            __asm__ __volatile__("" ::: "memory");
}

bool weft__noise_config(uint64_t *seed)
{
    const char *v = getenv("WEFT_SCHED");
    bool on = false;
#ifdef WEFT_DEBUG_SCHED
    on = true;
#endif
    uint64_t s = 0;
    bool have_seed = false;
    if (v && *v) {
        if (strncmp(v, "random", 6) == 0 && (v[6] == '\0' || v[6] == ':')) {
            on = true;
            if (v[6] == ':') {
                char *end;
                errno = 0;
                unsigned long long x = strtoull(v + 7, &end, 0);
                if (errno || end == v + 7 || *end) {
                    fprintf(stderr, "weft: ignoring WEFT_SCHED=%s (want random or random:SEED)\n", v);
#ifndef WEFT_DEBUG_SCHED
                    on = false;
#endif
                } else {
                    s = x;
                    have_seed = true;
                }
            }
        } else if (strcmp(v, "default") != 0) {
            fprintf(stderr, "weft: ignoring WEFT_SCHED=%s (want random or random:SEED)\n", v);
        }
    }
    if (!on)
        return false;
    if (!have_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = splitmix((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) % 1000000000ull;
    }
    *seed = s;
    atomic_store_explicit(&noise_seed, s, memory_order_relaxed);
    atomic_store_explicit(&weft__noise_on, true, memory_order_relaxed);
    if (!atomic_exchange_explicit(&seed_printed, true, memory_order_relaxed))
        fprintf(stderr, "weft: WEFT_SCHED=random:%llu\n", (unsigned long long)s);
    return true;
}
