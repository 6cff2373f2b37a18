// SPDX-License-Identifier: MIT
// oneTBB task_group fib: every call forked, as in the weft version.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "../common/bench.h"
#include "fib_peers.h"

static long fib(int n)
{
    if (n < 2)
        return n;
    long a = 0, b = 0;
    tbb::task_group g;
    g.run([&] { a = fib(n - 1); });
    b = fib(n - 2);
    g.wait();
    return a + b;
}

extern "C" long fib_tbb(int n, int workers, double *ns)
{
    static tbb::global_control gc(tbb::global_control::max_allowed_parallelism, workers);
    tbb::task_arena arena(workers);
    long r = 0;
    arena.execute([&] { r = fib(5); }); // start the workers
    uint64_t t0 = bench_now_ns();
    arena.execute([&] { r = fib(n); });
    *ns = (double)(bench_now_ns() - t0);
    return r;
}
