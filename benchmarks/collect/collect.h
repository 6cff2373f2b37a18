/* SPDX-License-Identifier: MIT */
/*
 * The collect benchmark's shared pieces: the per-item work (k rounds of a 64-bit
 * mixer), the output hash every variant is checked with, and the interface of the
 * peers' implementations (oneTBB in collect_tbb.cpp, OpenMP in collect_omp.c), which
 * live in their own files so each is built with its own runtime's flags.
 */
#ifndef WEFT_BENCH_COLLECT_H
#define WEFT_BENCH_COLLECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Item i: k rounds of the murmur3 finaliser's mixer on (i + 1) * golden ratio. */
static inline uint64_t collect_work(size_t i, unsigned k)
{
    uint64_t x = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    for (unsigned r = 0; r < k; r++) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
    }
    return x;
}

/* Order-sensitive hash of the whole output (FNV-1a over 64-bit words, finalised):
 * two outputs with the same hash are taken to be equal. */
static inline uint64_t collect_hash(const uint64_t *out, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= out[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* One implementation: setup once per process (workers threads), run once per call,
 * teardown at the end. Returns 0 or a negative errno. */
struct collect_impl {
    const char *name;
    int (*setup)(unsigned workers, void **state);
    int (*run)(void *state, uint64_t *out, size_t n, unsigned k);
    void (*teardown)(void *state);
};

#ifdef HAVE_TBB
extern const struct collect_impl collect_tbb;
#endif
#ifdef HAVE_OMP
extern const struct collect_impl collect_omp_static, collect_omp_dynamic;
#endif

#ifdef __cplusplus
}
#endif
#endif
