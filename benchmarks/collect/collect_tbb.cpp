// SPDX-License-Identifier: MIT
// oneTBB peer of weft_par_collect: parallel_for with the auto partitioner, in an
// arena of exactly `workers` threads (the caller counts as one).
#include <cerrno>
#include <new>

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "collect.h"

namespace {

struct tbb_state {
    tbb::global_control gc;
    tbb::task_arena arena;
    explicit tbb_state(unsigned workers)
        : gc(tbb::global_control::max_allowed_parallelism, workers), arena(int(workers))
    {
        arena.initialize();
    }
};

int tbb_setup(unsigned workers, void **state)
{
    try {
        *state = new tbb_state(workers);
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    }
    return 0;
}

int tbb_run(void *state, uint64_t *out, size_t n, unsigned k)
{
    auto *st = static_cast<tbb_state *>(state);
    st->arena.execute([&] {
        tbb::parallel_for(
            tbb::blocked_range<size_t>(0, n),
            [&](const tbb::blocked_range<size_t> &r) {
                for (size_t i = r.begin(); i != r.end(); ++i)
                    out[i] = collect_work(i, k);
            },
            tbb::auto_partitioner());
    });
    return 0;
}

void tbb_teardown(void *state)
{
    delete static_cast<tbb_state *>(state);
}

} // namespace

extern "C" const struct collect_impl collect_tbb = {"tbb", tbb_setup, tbb_run, tbb_teardown};
