/* SPDX-License-Identifier: MIT */
/* OpenMP peer of the UTS-shaped tree: one task per child, taskwait per node. */
#include <omp.h>

#include "../common/bench.h"
#include "kernels.h"

static long uts(uint64_t id, int depth, int depth_max)
{
    int k = uts_num_children(id, depth, depth_max);
    long counts[UTS_MAX_CHILDREN];
    for (int i = 0; i < k; i++) {
#pragma omp task shared(counts) firstprivate(i, id, depth, depth_max)
        counts[i] = uts(uts_child_id(id, i), depth + 1, depth_max);
    }
#pragma omp taskwait
    long n = 1;
    for (int i = 0; i < k; i++)
        n += counts[i];
    return n;
}

long uts_omp(int depth_max, int workers, double *ns)
{
    long r = 0;
    omp_set_dynamic(0);
    omp_set_num_threads(workers);
#pragma omp parallel
    {
#pragma omp single
        r = uts(UTS_ROOT_ID, 0, 2); /* start the team */
    }
    uint64_t t0 = bench_now_ns();
#pragma omp parallel
    {
#pragma omp single
        r = uts(UTS_ROOT_ID, 0, depth_max);
    }
    *ns = (double)(bench_now_ns() - t0);
    return r;
}
