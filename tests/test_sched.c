/* SPDX-License-Identifier: MIT */
/* WEFT_SCHED=random:SEED (lib/noise.c): parsing, seeding, and a workload under it. */
#define _GNU_SOURCE
#include <stdlib.h>

#include "checks.h"
#include "pool.h"

Test(sched, parses_random_with_and_without_seed)
{
    uint64_t seed = 0;
    setenv("WEFT_SCHED", "random:12345", 1);
    cr_assert(weft__noise_config(&seed));
    cr_assert_eq(seed, 12345);
    setenv("WEFT_SCHED", "random:0x10", 1);
    cr_assert(weft__noise_config(&seed));
    cr_assert_eq(seed, 16);
    seed = 0;
    setenv("WEFT_SCHED", "random", 1);
    cr_assert(weft__noise_config(&seed));
    unsetenv("WEFT_SCHED");
}

Test(sched, garbage_is_ignored)
{
#ifndef WEFT_DEBUG_SCHED
    uint64_t seed = 99;
    const char *bad[] = {"random:", "random:12x", "randomly", "fifo", "random:-", NULL};
    for (int i = 0; bad[i]; i++) {
        setenv("WEFT_SCHED", bad[i], 1);
        cr_assert(!weft__noise_config(&seed), "%s", bad[i]);
    }
    unsetenv("WEFT_SCHED");
    cr_assert(!weft__noise_config(&seed));
    cr_assert_eq(seed, 99, "an ignored setting leaves the seed alone");
#endif
}

/* Each worker's generator depends on the seed and its index only. */
Test(sched, worker_generators_follow_the_seed)
{
    for (unsigned i = 0; i < 64; i++) {
        uint64_t a = weft__noise_seed_worker(7, i), b = weft__noise_seed_worker(7, i);
        cr_assert_eq(a, b);
        cr_assert_neq(a, 0);
        cr_assert_neq(a, weft__noise_seed_worker(8, i));
        cr_assert_neq(a, weft__noise_seed_worker(7, i + 1));
        uint64_t x = a, y = b;
        for (int k = 0; k < 100; k++)
            cr_assert_eq(weft__rng_next(&x), weft__rng_next(&y));
    }
}

static long plain(long n)
{
    return n < 2 ? n : plain(n - 1) + plain(n - 2) + 1;
}

static int fib(void *p)
{
    long *n = p;
    if (*n < 2)
        return 0;
    long a = *n - 1, b = *n - 2;
    int err = weft_join(fib, &a, fib, &b);
    *n = a + b + 1; /* count calls: fib-style call tree size */
    return err;
}

static int item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    TCHECK(i < 5000);
    *(size_t *)slot = i * 3;
    return 0;
}

/* A pool created under WEFT_SCHED=random steals and wakes at random and adds noise
 * at protocol points; results must not change. */
Test(sched, workloads_are_correct_under_random_schedules)
{
    setenv("WEFT_SCHED", "random:4242", 1);
    for (unsigned threads = 1; threads <= 4; threads++) {
        weft_pool *p = mkpool(threads);
        cr_assert(p->sched_random);
        long n = 18;
        cr_assert_eq(weft_run(p, fib, &n), 0);
        cr_assert_eq(n, plain(18));
        size_t out[5000];
        cr_assert_eq(weft_par_collect(p, 5000, out, sizeof(out[0]), item, NULL), 0);
        for (size_t i = 0; i < 5000; i++)
            cr_assert_eq(out[i], i * 3);
        ASSERT_NO_BAD();
        weft_pool_destroy(p);
    }
    unsetenv("WEFT_SCHED");
}
