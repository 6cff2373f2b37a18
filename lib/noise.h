/* SPDX-License-Identifier: MIT */
/* Seeded scheduling noise (WEFT_SCHED=random:SEED; lib/noise.c). */
#ifndef WEFT_NOISE_H
#define WEFT_NOISE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "debug.h"

struct weft__worker;

/* On once a pool was created with WEFT_SCHED=random (always in -Ddebug_sched builds).
 * Relaxed reads: a hint that only decides whether to add noise. */
extern _Atomic(bool) weft__noise_on;

/* A protocol point: with noise on, maybe yield the CPU or spin a little, decided by
 * the calling worker's generator (a per-thread one outside workers). */
void weft__noise_point(void);

#define WEFT__NOISE()                                                                 \
    do {                                                                              \
        if (WEFT_UNLIKELY(atomic_load_explicit(&weft__noise_on, memory_order_relaxed))) \
            weft__noise_point();                                                      \
    } while (0)

/* Read WEFT_SCHED (at pool creation). Returns whether this pool schedules randomly,
 * and sets *seed. Garbage: a warning, and off. */
bool weft__noise_config(uint64_t *seed);
/* The first generator state for worker index i of a pool seeded with seed. */
uint64_t weft__noise_seed_worker(uint64_t seed, unsigned i);
/* The calling thread's generator for random choices: its worker's (any pool's), or
 * outside workers a per-thread one seeded from the seed and the order threads
 * first drew. */
uint64_t *weft__noise_rng(void);
/* xorshift64: the next value of an owner-private generator. */
static inline uint64_t weft__rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

#endif
