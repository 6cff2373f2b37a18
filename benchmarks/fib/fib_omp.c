/* SPDX-License-Identifier: MIT */
/* OpenMP tasks fib: every call forked, as in the weft version. */
#include <omp.h>

#include "../common/bench.h"
#include "fib_peers.h"

static long fib(int n)
{
    if (n < 2)
        return n;
    long a, b;
#pragma omp task shared(a) firstprivate(n)
    a = fib(n - 1);
    b = fib(n - 2);
#pragma omp taskwait
    return a + b;
}

long fib_omp(int n, int workers, double *ns)
{
    long r = 0;
    omp_set_num_threads(workers);
#pragma omp parallel
    {
#pragma omp single
        r = fib(5); /* start the team */
    }
    uint64_t t0 = bench_now_ns();
#pragma omp parallel
    {
#pragma omp single
        r = fib(n);
    }
    *ns = (double)(bench_now_ns() - t0);
    return r;
}
