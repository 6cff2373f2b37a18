/* SPDX-License-Identifier: MIT */
/*
 * fib(n) with every call forked: the cost of fork-join itself.
 * In one run: the plain recursive C function (-O2, noinline, nothing else), weft_join
 * on 1 and 2 workers, oneTBB task_group and OpenMP tasks on 1 and 2 workers. Every
 * measurement runs in its own child process; the table shows medians and ratios.
 * Usage: fib [reps] [n...]   (default: 7 reps, n = 30 35)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "../common/bench.h"
#include "fib_peers.h"

__attribute__((noinline)) static long fib_plain(int n)
{
    return n < 2 ? n : fib_plain(n - 1) + fib_plain(n - 2);
}

/* The forked version. Its argument slot holds n on entry and fib(n) on return, so
 * each call touches one word of its parent's frame (a struct {n, result}
 * per call took 74.3M cycles for fib(32) on 1 worker against 55.2M for this, by
 * perf stat: more stores and loads on the critical path). */
static int fib_task(void *p)
{
    long *slot = p;
    long n = *slot;
    if (n < 2)
        return 0;
    long a = n - 1, b = n - 2;
    weft_join(fib_task, &a, fib_task, &b);
    *slot = a + b;
    return 0;
}

enum impl { PLAIN, WEFT, TBB, OMP, NIMPL };
static const char *const impl_name[NIMPL] = {"plain C", "weft", "oneTBB", "OpenMP"};

struct job {
    enum impl impl;
    int workers, n, reps;
};

static long expect[64];

static void measure(void *p, double *out, int max)
{
    struct job *j = p;
    weft_pool *pool = NULL;
    if (j->impl == WEFT) {
        weft_pool_options o = {.threads = (unsigned)j->workers};
        if (weft_pool_create(&pool, &o) != 0)
            exit(1);
        long warm = 20;
        weft_run(pool, fib_task, &warm);
    }
    for (int k = 0; k < j->reps && k < max; k++) {
        long r = 0;
        double ns = 0;
        uint64_t t0 = bench_now_ns();
        switch (j->impl) {
        case PLAIN:
            r = fib_plain(j->n);
            ns = (double)(bench_now_ns() - t0);
            break;
        case WEFT: {
            long f = j->n;
            weft_run(pool, fib_task, &f);
            ns = (double)(bench_now_ns() - t0);
            r = f;
            break;
        }
        case TBB:
#ifdef HAVE_TBB
            r = fib_tbb(j->n, j->workers, &ns);
#endif
            break;
        case OMP:
#ifdef HAVE_OMP
            r = fib_omp(j->n, j->workers, &ns);
#endif
            break;
        default:
            break;
        }
        if (r != expect[j->n]) {
            fprintf(stderr, "fib: %s gave %ld for fib(%d), want %ld\n", impl_name[j->impl],
                    r, j->n, expect[j->n]);
            exit(1);
        }
        out[k] = ns;
    }
    weft_pool_destroy(pool);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    int ns_[8], nn = 0;
    for (int i = 2; i < argc && nn < 8; i++)
        ns_[nn++] = atoi(argv[i]);
    if (nn == 0) {
        ns_[nn++] = 30;
        ns_[nn++] = 35;
    }
    if (reps < 1 || reps > 100)
        reps = 7;
    for (int i = 0; i < 64; i++)
        expect[i] = i < 2 ? i : expect[i - 1] + expect[i - 2];

    static const int have[NIMPL] = {1, 1,
#ifdef HAVE_TBB
                                    1,
#else
                                    0,
#endif
#ifdef HAVE_OMP
                                    1
#else
                                    0
#endif
    };
    double med[8][NIMPL][3] = {{{0}}};
    for (int a = 0; a < nn; a++) {
        for (int impl = 0; impl < NIMPL; impl++) {
            if (!have[impl])
                continue;
            for (int wk = 1; wk <= 2; wk++) {
                if (impl == PLAIN && wk == 2)
                    continue;
                struct job j = {(enum impl)impl, wk, ns_[a], reps};
                /* The slow peers get fewer repetitions on big n. */
                if ((impl == TBB || impl == OMP) && ns_[a] >= 33 && reps > 3)
                    j.reps = 3;
                double v[100];
                int got = bench_isolated(measure, &j, v, j.reps);
                if (got <= 0) {
                    fprintf(stderr, "fib: %s on %d workers failed\n", impl_name[impl], wk);
                    return 1;
                }
                med[a][impl][wk] = bench_median(v, (size_t)got);
                printf("RESULT fib impl=%s workers=%d n=%d median_ns=%.0f reps=%d\n",
                       impl == PLAIN ? "plain" : impl == WEFT ? "weft" : impl == TBB ? "tbb" : "omp",
                       wk, ns_[a], med[a][impl][wk], got);
                fflush(stdout);
            }
        }
    }

    printf("\nfib(n), every call forked; medians; ratio = time / plain C (lower is better)\n");
    printf("%-8s %7s", "impl", "workers");
    for (int a = 0; a < nn; a++)
        printf("   fib(%d) ms  ratio  2w speedup", ns_[a]);
    printf("\n");
    for (int impl = 0; impl < NIMPL; impl++) {
        if (!have[impl])
            continue;
        for (int wk = 1; wk <= 2; wk++) {
            if (impl == PLAIN && wk == 2)
                continue;
            printf("%-8s %7d", impl_name[impl], wk);
            for (int a = 0; a < nn; a++) {
                double m = med[a][impl][wk], base = med[a][PLAIN][1];
                if (wk == 2)
                    printf("   %10.1f  %5.2fx  %9.2fx", m / 1e6, m / base,
                           med[a][impl][1] / m);
                else
                    printf("   %10.1f  %5.2fx  %10s", m / 1e6, m / base, "");
            }
            printf("\n");
        }
    }
    return 0;
}
