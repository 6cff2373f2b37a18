/* SPDX-License-Identifier: MIT */
/* Shared helpers for weft's benchmarks: clocks, medians, child-process isolation. */
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

#ifdef __cplusplus
}
#endif
#endif
