/* SPDX-License-Identifier: MIT */
/*
 * Spawn cost: weft_spawn of trivial tasks into a scope.
 *  flat: the scope body spawns N tasks (one spawner, thieves run them);
 *  tree: every task spawns two children down to a depth (everybody spawns).
 * "cold" is the first round on a fresh pool (frame slabs are allocated), "warm" the
 * median of later rounds (frames recycled, no malloc). Built twice: frames from
 * malloc (spawn) and from a private jemalloc arena (spawn-jemalloc), to compare.
 * Usage: spawn [reps]
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft.h"
#include "../common/bench.h"

#ifdef WEFT_HAVE_JEMALLOC
#define FRAMES "jemalloc"
#else
#define FRAMES "malloc"
#endif

#define FLAT_N 1000000
#define TREE_DEPTH 19 /* 2^20 - 1 tasks */

static _Atomic(long) ran;

static int leaf(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return 0;
}

static int flat_body(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < FLAT_N; i++)
        if (weft_spawn(s, leaf, NULL))
            return 1;
    return 0;
}

struct node {
    weft_scope *s;
    int depth;
};

static int tree_task(void *arg)
{
    struct node *n = arg;
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    if (n->depth == 0)
        return 0;
    struct node c = {n->s, n->depth - 1};
    weft_spawn_copy(n->s, tree_task, &c, sizeof(c));
    weft_spawn_copy(n->s, tree_task, &c, sizeof(c));
    return 0;
}

static int tree_body(weft_scope *s, void *arg)
{
    (void)arg;
    struct node root = {s, TREE_DEPTH};
    return weft_spawn_copy(s, tree_task, &root, sizeof(root));
}

struct cfg {
    int tree, workers, reps;
};

static int round_fn(void *arg)
{
    struct cfg *c = arg;
    return weft_scope_run(NULL, c->tree ? tree_body : flat_body, NULL);
}

/* out[0] = cold ns per task, out[1..] = warm rounds. */
static void measure(void *arg, double *out, int max)
{
    struct cfg *c = arg;
    weft_pool *pool;
    weft_pool_options o = {.threads = (unsigned)c->workers};
    if (weft_pool_create(&pool, &o) != 0)
        exit(1);
    long want = c->tree ? (2L << TREE_DEPTH) - 1 : FLAT_N;
    for (int k = 0; k < c->reps + 1 && k < max; k++) {
        atomic_store(&ran, 0);
        uint64_t t0 = bench_now_ns();
        if (weft_run(pool, round_fn, c) != 0 || atomic_load(&ran) != want)
            exit(2);
        out[k] = (double)(bench_now_ns() - t0) / (double)want;
    }
    weft_pool_destroy(pool);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    if (reps < 1 || reps > 50)
        reps = 7;
    printf("spawn cost, frames from %s; ns per task (spawn + run + recycle)\n", FRAMES);
    printf("%-6s %7s %10s %10s\n", "shape", "workers", "cold", "warm med");
    for (int tree = 0; tree <= 1; tree++)
        for (int wk = 1; wk <= 2; wk++) {
            struct cfg c = {tree, wk, reps};
            double v[64];
            int got = bench_isolated(measure, &c, v, reps + 1);
            if (got < 2) {
                fprintf(stderr, "spawn: run failed\n");
                return 1;
            }
            double cold = v[0], warm = bench_median(v + 1, (size_t)got - 1);
            printf("RESULT spawn frames=%s shape=%s workers=%d cold_ns=%.1f warm_ns=%.1f\n",
                   FRAMES, tree ? "tree" : "flat", wk, cold, warm);
            printf("%-6s %7d %10.1f %10.1f\n", tree ? "tree" : "flat", wk, cold, warm);
            fflush(stdout);
        }
    return 0;
}
