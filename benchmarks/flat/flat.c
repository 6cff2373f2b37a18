/* SPDX-License-Identifier: MIT */
/*
 * flat: one weft_spawn_copy per item inside a scope (rspack_futures::scope's
 * pattern), the item's arguments in a struct, as a user writes it:
 *
 *   scope body: for (i = 0; i < n; i++) weft_spawn_copy(s, item, &(struct){ctx, i}, ...)
 *
 * run inside a task (weft_run), so the spawns go to the worker's own deque and the
 * other worker steals. Two shapes, the issue's: n = 1 000 000 items of ~20 ns
 * (k = 16 rounds of benchmarks/collect's mixer) and n = 10 000 items of ~2 us
 * (k = 1024), on 1 and 2 workers, beside the plain serial loop.
 *
 * Every measurement runs in a child process of its own: one untimed warm-up run,
 * then --reps timed runs (default 7), the median reported. Every run's output
 * (one uint64_t per item) is hashed and compared with the serial loop's: a
 * mismatch exits 1.
 *
 * Usage: flat [--reps N] [--tiny]     (--tiny: n = 10 000 and 1 000)
 * Output: RESULT flat impl=serial|weft_spawn workers=W n=N k=K median_ns=...
 *   ns_per_task=... ratio_vs_serial=... [speedup_2v1=...] reps=R
 * (ratio_vs_serial = serial median / this median, > 1 is faster than the loop;
 * speedup_2v1 = 1-worker median / 2-worker median), then a table.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "../common/bench.h"
#include "../collect/collect.h"

struct flat_case {
    size_t n;
    unsigned k;
};

struct ctx {
    uint64_t *out;
    size_t n;
    unsigned k;
};

struct item_arg {
    const struct ctx *c;
    size_t i;
};

static int item(void *p)
{
    const struct item_arg *a = p;
    a->c->out[a->i] = collect_work(a->i, a->c->k);
    return 0;
}

static int body(weft_scope *s, void *p)
{
    const struct ctx *c = p;
    for (size_t i = 0; i < c->n; i++) {
        struct item_arg a = {c, i};
        int err = weft_spawn_copy(s, item, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int top(void *p)
{
    return weft_scope_run(NULL, body, p);
}

struct job {
    struct flat_case fc;
    int workers; /* 0: the serial loop */
    int reps;
    uint64_t expect;
};

static void measure(void *p, double *out, int max)
{
    const struct job *j = p;
    struct ctx c = {malloc(j->fc.n * sizeof(uint64_t)), j->fc.n, j->fc.k};
    weft_pool *pool = NULL;
    if (!c.out)
        exit(1);
    if (j->workers) {
        weft_pool_options o = {.threads = (unsigned)j->workers};
        if (weft_pool_create(&pool, &o) != 0)
            exit(1);
    }
    for (int r = -1; r < j->reps && r < max; r++) { /* r = -1: the warm-up */
        memset(c.out, 0, c.n * sizeof(uint64_t));
        uint64_t t0 = bench_now_ns();
        if (pool) {
            int err = weft_run(pool, top, &c);
            if (err) {
                fprintf(stderr, "flat: weft_spawn n=%zu: error %d\n", c.n, err);
                exit(1);
            }
        } else {
            for (size_t i = 0; i < c.n; i++)
                c.out[i] = collect_work(i, c.k);
        }
        double ns = (double)(bench_now_ns() - t0);
        if (collect_hash(c.out, c.n) != j->expect) {
            fprintf(stderr, "flat: %s on %d workers, n=%zu k=%u: output differs from the "
                            "serial loop's\n", pool ? "weft_spawn" : "serial", j->workers,
                    c.n, c.k);
            exit(1);
        }
        if (r >= 0)
            out[r] = ns;
    }
    weft_pool_destroy(pool);
    free(c.out);
}

int main(int argc, char **argv)
{
    int reps = 7;
    struct flat_case cases[2] = {{1000000, 16}, {10000, 1024}};
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) {
            reps = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--tiny") == 0) {
            cases[0].n = 10000;
            cases[1].n = 1000;
        } else {
            fprintf(stderr, "usage: flat [--reps N] [--tiny]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 100) {
        fprintf(stderr, "flat: --reps 1..100\n");
        return 2;
    }
    double med[2][3]; /* [case][0 = serial, workers] */
    printf("# flat: one weft_spawn_copy per item in a scope, inside a task\n");
    for (int ci = 0; ci < 2; ci++) {
        struct flat_case fc = cases[ci];
        uint64_t *ref = malloc(fc.n * sizeof(uint64_t));
        if (!ref)
            return 1;
        for (size_t i = 0; i < fc.n; i++)
            ref[i] = collect_work(i, fc.k);
        uint64_t expect = collect_hash(ref, fc.n);
        free(ref);
        for (int w = 0; w <= 2; w++) {
            struct job j = {fc, w, reps, expect};
            double v[100];
            int got = bench_isolated(measure, &j, v, reps);
            if (got <= 0) {
                fprintf(stderr, "flat: %s on %d workers, n=%zu failed\n",
                        w ? "weft_spawn" : "serial", w, fc.n);
                return 1;
            }
            double m = med[ci][w] = bench_median(v, (size_t)got);
            printf("RESULT flat impl=%s workers=%d n=%zu k=%u median_ns=%.0f ns_per_task=%.1f "
                   "ratio_vs_serial=%.3f", w ? "weft_spawn" : "serial", w ? w : 1, fc.n, fc.k,
                   m, m / (double)fc.n, med[ci][0] / m);
            if (w == 2)
                printf(" speedup_2v1=%.3f", med[ci][1] / m);
            printf(" reps=%d\n", got);
            fflush(stdout);
        }
    }
    printf("\nflat spawn: ns per item (median run / n); vs serial = serial / this (> 1: "
           "faster); 2w/1w = speedup of 2 workers over 1\n");
    char h0[40], h1[40];
    snprintf(h0, sizeof(h0), "n=%zu k=%u", cases[0].n, cases[0].k);
    snprintf(h1, sizeof(h1), "n=%zu k=%u", cases[1].n, cases[1].k);
    printf("%-12s %2s | %-31s | %-31s |\n", "impl", "w", h0, h1);
    printf("%-12s %2s | %10s %9s %9s | %10s %9s %9s\n", "", "", "ns/item", "vs serial",
           "2w/1w", "ns/item", "vs serial", "2w/1w");
    for (int w = 0; w <= 2; w++) {
        printf("%-12s %2d |", w ? "weft_spawn" : "serial", w ? w : 1);
        for (int ci = 0; ci < 2; ci++) {
            double m = med[ci][w];
            printf(" %10.1f %8.2fx ", m / (double)cases[ci].n, med[ci][0] / m);
            if (w == 2)
                printf("%8.2fx |", med[ci][1] / m);
            else
                printf("%9s |", "");
        }
        printf("\n");
    }
    return 0;
}
