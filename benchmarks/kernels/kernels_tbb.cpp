// SPDX-License-Identifier: MIT
// oneTBB peer of the UTS-shaped tree: a task_group per node, one run() per child,
// the way a TBB user writes a tree walk.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "../common/bench.h"
#include "kernels.h"

static long uts(uint64_t id, int depth, int depth_max)
{
    int k = uts_num_children(id, depth, depth_max);
    long counts[UTS_MAX_CHILDREN];
    tbb::task_group g;
    for (int i = 0; i < k; i++)
        g.run([&counts, i, id, depth, depth_max] {
            counts[i] = uts(uts_child_id(id, i), depth + 1, depth_max);
        });
    g.wait();
    long n = 1;
    for (int i = 0; i < k; i++)
        n += counts[i];
    return n;
}

extern "C" long uts_tbb(int depth_max, int workers, double *ns)
{
    static tbb::global_control gc(tbb::global_control::max_allowed_parallelism, workers);
    tbb::task_arena arena(workers);
    long r = 0;
    arena.execute([&] { r = uts(UTS_ROOT_ID, 0, 2); }); // start the workers
    uint64_t t0 = bench_now_ns();
    arena.execute([&] { r = uts(UTS_ROOT_ID, 0, depth_max); });
    *ns = (double)(bench_now_ns() - t0);
    return r;
}
