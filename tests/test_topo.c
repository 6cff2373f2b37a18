/* SPDX-License-Identifier: MIT */
/* Topology: the default worker count and the steal order. */
#define _GNU_SOURCE
#include "harness.h"

#include <sched.h>
#include <stdlib.h>

#include "topo.h"
#include "weft.h"

Test(topo, parse_cpu_max)
{
    cr_assert_eq(weft__parse_cpu_max("max 100000\n"), 0);
    cr_assert_eq(weft__parse_cpu_max("200000 100000\n"), 2);
    cr_assert_eq(weft__parse_cpu_max("150000 100000\n"), 2); /* rounded up */
    cr_assert_eq(weft__parse_cpu_max("50000 100000"), 1);
    cr_assert_eq(weft__parse_cpu_max("100000 100000"), 1);
    cr_assert_eq(weft__parse_cpu_max("garbage"), 0);
    cr_assert_eq(weft__parse_cpu_max("12x 100000"), 0);
    cr_assert_eq(weft__parse_cpu_max("100000 0"), 0);
    cr_assert_eq(weft__parse_cpu_max(""), 0);
}

Test(topo, default_threads_follow_affinity_and_quota)
{
    struct weft__topo t;
    cr_assert_eq(weft__topo_init(&t), 0);
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    cr_assert_eq(t.ncpus, (unsigned)CPU_COUNT(&set));
    unsigned want = t.ncpus;
    if (t.quota && t.quota < want)
        want = t.quota;
    cr_assert_eq(weft__topo_default_threads(&t), want);
    /* A quota below the mask wins; none or above it changes nothing. */
    t.quota = 1;
    cr_assert_eq(weft__topo_default_threads(&t), 1);
    t.quota = 0;
    cr_assert_eq(weft__topo_default_threads(&t), t.ncpus);
    t.quota = t.ncpus + 5;
    cr_assert_eq(weft__topo_default_threads(&t), t.ncpus);
    /* Same CPU is nearest of all. */
    for (unsigned i = 0; i < t.ncpus; i++)
        for (unsigned j = 0; j < t.ncpus; j++)
            cr_assert_leq(weft__topo_distance(&t, i, i), weft__topo_distance(&t, i, j));
    weft__topo_free(&t);
}

static int report_cpu(void *arg)
{
    *(int *)arg = sched_getcpu();
    return 0;
}

/* A pool created under a one-CPU affinity mask gets one worker by default. */
Test(topo, affinity_mask_limits_default_pool)
{
    cpu_set_t old, one;
    cr_assert_eq(sched_getaffinity(0, sizeof(old), &old), 0);
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &old)) {
            first = c;
            break;
        }
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
    unsetenv("WEFT_NUM_THREADS");
    /* topo is read once per process: this test runs in its own process (both
     * harnesses run each test in a fresh one), so no earlier test's view leaks
     * in, and the 1-CPU view read here leaks into no later test. */
    weft_pool *pool;
    cr_assert_eq(weft_pool_create(&pool, NULL), 0);
    cr_assert_eq(weft_pool_threads(pool), 1);
    int cpu = -2;
    cr_assert_eq(weft_run(pool, report_cpu, &cpu), 0);
    cr_assert_eq(cpu, first);
    weft_pool_destroy(pool);
    sched_setaffinity(0, sizeof(old), &old);
}

/* WEFT_PIN=1: worker i runs on the i-th allowed CPU. */
Test(topo, pin_puts_workers_on_their_cpus)
{
    setenv("WEFT_PIN", "1", 1);
    weft_pool *pool;
    weft_pool_options o = {.threads = 1};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    unsetenv("WEFT_PIN");
    struct weft__topo t;
    cr_assert_eq(weft__topo_init(&t), 0);
    int cpu = -2;
    cr_assert_eq(weft_run(pool, report_cpu, &cpu), 0);
    cr_assert_eq(cpu, (int)t.cpus[0]);
    weft__topo_free(&t);
    weft_pool_destroy(pool);
}
