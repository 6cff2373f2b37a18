/* SPDX-License-Identifier: MIT */
/* OpenMP peers of weft_par_collect: schedule(static) and schedule(dynamic, 64). */
#include <errno.h>
#include <omp.h>

#include "collect.h"

static int omp_setup(unsigned workers, void **state)
{
    *state = NULL;
    omp_set_dynamic(0);
    omp_set_num_threads((int)workers);
    return 0;
}

static int omp_run_static(void *state, uint64_t *out, size_t n, unsigned k)
{
    (void)state;
    long nn = (long)n;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < nn; i++)
        out[i] = collect_work((size_t)i, k);
    return 0;
}

static int omp_run_dynamic(void *state, uint64_t *out, size_t n, unsigned k)
{
    (void)state;
    long nn = (long)n;
#pragma omp parallel for schedule(dynamic, 64)
    for (long i = 0; i < nn; i++)
        out[i] = collect_work((size_t)i, k);
    return 0;
}

static void omp_teardown(void *state)
{
    (void)state;
}

const struct collect_impl collect_omp_static = {"omp_static", omp_setup, omp_run_static,
                                                omp_teardown};
const struct collect_impl collect_omp_dynamic = {"omp_dynamic64", omp_setup, omp_run_dynamic,
                                                 omp_teardown};
