/* SPDX-License-Identifier: MIT */
/* Shared helpers for weft's benchmarks: clocks, medians, child-process isolation,
 * the files' hash. */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t bench_now_ns(void);
double bench_median(double *v, size_t n);

/* Run fn(arg, out, max) in a forked child so that runtimes that keep threads
 * spinning (OpenMP, oneTBB) cannot disturb the next measurement. The child fills
 * up to max doubles; returns how many, or -1 if the child failed. */
int bench_isolated(void (*fn)(void *arg, double *out, int max), void *arg,
                   double *out, int max);

/* Run the program path with argv (execv) and read its standard output into buf
 * (size bytes, NUL-terminated; output past that is dropped). Returns 0 when it
 * exited with status 0, -ECHILD when it failed, or -errno from pipe/fork. */
int bench_run_capture(const char *path, char *const argv[], char *buf, size_t size);

/* FNV-1a over n bytes as 8-byte words (the tail zero-padded), from h: the work
 * the file benchmarks give every byte they read. */
uint64_t bench_fnv_words(uint64_t h, const void *data, size_t n);
#define BENCH_FNV_BASIS 0xcbf29ce484222325u
/* murmur3's 64-bit finalizer. */
uint64_t bench_fmix64(uint64_t h);
/* A file's digest: bench_fnv_words from the basis, the length folded in, then
 * murmur3's fmix64 (filehash, pipeline). */
uint64_t bench_hash_bytes(const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
