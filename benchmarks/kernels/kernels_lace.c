/* SPDX-License-Identifier: MIT */
/*
 * Lace peers for benchmarks/kernels: fib and knapsack, written with Lace's task macros
 * the way Lace's own users write them (TASK_n, SPAWN, CALL, SYNC: the arguments are
 * the task's parameters, in registers, and the task descriptor lives in Lace's deque).
 * Built only when meson is given a Lace source tree, -Dlace=DIR with DIR/src/lace.c
 * and DIR/src/lace.h (github.com/trolando/lace; Debian does not package it); its
 * lace_config.h is generated with every counter off.
 *
 * Lace is started once per process with the measurement's worker count (each
 * measurement is a child process of its own) and left running: its idle workers
 * spin, as Lace's do, and the child exits after its runs. Each call makes one untimed
 * run, then times one.
 */
#include <limits.h>
#include <stdbool.h>
#include <time.h>

#include "lace.h"
#include "kernels.h"

static void lace_once(int workers)
{
    static bool started;
    if (!started) {
        lace_start((unsigned)workers, 0); /* 0: Lace's default deque size */
        started = true;
    }
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

TASK_1(long, lace_fib, int, n)
{
    if (n < 2)
        return n;
    SPAWN(lace_fib, n - 1); /* the stealable half, as weft_join's b */
    long a = CALL(lace_fib, n - 2);
    long b = SYNC(lace_fib);
    return a + b;
}

long fib_lace(int n, int workers, double *ns)
{
    lace_once(workers);
    (void)RUN(lace_fib, n);
    double t0 = now_ns();
    long r = RUN(lace_fib, n);
    *ns = now_ns() - t0;
    return r;
}

TASK_4(int, lace_knap, const struct item *, e, int, c, int, n, int, v)
{
    if (c < 0)
        return INT_MIN;
    if (n == 0)
        return v;
    SPAWN(lace_knap, e + 1, c - e->weight, n - 1, v + e->value); /* "with": stealable */
    int without = CALL(lace_knap, e + 1, c, n - 1, v);
    int with = SYNC(lace_knap);
    return with > without ? with : without;
}

int knap_lace(const struct item *items, int n, int capacity, int workers, double *ns)
{
    lace_once(workers);
    (void)RUN(lace_knap, items, capacity, n, 0);
    double t0 = now_ns();
    int r = RUN(lace_knap, items, capacity, n, 0);
    *ns = now_ns() - t0;
    return r;
}
