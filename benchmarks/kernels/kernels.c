/* SPDX-License-Identifier: MIT */
/*
 * kernels: classic fork-join kernels, each written twice the way a user writes it,
 * as plain serial C and with weft, run in one process tree on 1 and 2 workers:
 *
 *   fib       fib(35), every call forked: weft_join with a struct {int n; long r;}
 *             per call, fib(n-1) the stealable half (weft_join pushes its second
 *             job, as Lace's SPAWN does fib(n-1));
 *             "weft_slot" beside it (labelled tuned): benchmarks/fib's form, n and
 *             the result in one word of the parent's frame
 *   knapsack  0/1 knapsack by exhaustive branch and bound without pruning (no
 *             best-so-far bound, only the capacity check): one weft_join per item,
 *             the "take it" branch stealable; 26 items, capacity half their total
 *             weight: ~4.2e7 leaves of a few instructions
 *   uts       a UTS-shaped irregular tree (kernels.h: geometric fan-out, mean 4,
 *             from a hash of the node's id; depth 8, 503 044 nodes): one
 *             weft_scope_run per node (leaves included) and one weft_spawn_copy per
 *             child; "weft_leafless" beside it (labelled tuned) opens no scope at
 *             leaves
 *   nqueens   nqueens(12), bitmask rows: one weft_scope_run per node that is not a
 *             solution, one weft_spawn_copy per free column
 *   matmul    C += A * B, 512 x 512 doubles, recursive 2x2 blocking down to 64 x 64
 *             blocks: the four independent quadrant products of each half run under
 *             weft_join, two phases (coarse)
 *   sort      cilksort-like mergesort of 4M longs: sort four quarters in parallel,
 *             merge pairs with a parallel merge (split at the larger run's median,
 *             binary search in the other), all through weft_join (coarse)
 * and, where meson finds them, oneTBB task_group and OpenMP task peers for fib
 * (benchmarks/fib's) and uts (kernels_tbb.cpp, kernels_omp.c); Lace peers for fib and
 * knapsack when meson is given a Lace source tree (-Dlace=DIR, kernels_lace.c).
 * Beside plain C, the "calls" rows run the weft code of fib, knapsack and uts with
 * weft_join replaced by two direct calls and weft_spawn_copy by a call (calls_join
 * below): what the user's code costs with no scheduler, so that the gap between
 * plain C and weft splits into the task shape's and the scheduler's.
 *
 * The serial versions are the same algorithms with the forks replaced by calls.
 * Every measurement runs in a child process of its own (bench_isolated), so that
 * OpenMP's and oneTBB's spinning threads cannot disturb the next one; weft and
 * plain children make one untimed warm-up run, then --reps timed runs (default 5;
 * the slow peers at most 3, after their own small warm-up). Every run's result is
 * compared with the serial version's (computed once in the parent): a mismatch
 * exits 1.
 *
 * Usage: kernels [--reps N] [--kernel NAME]... [--tiny]
 *                [--fib N] [--knapsack ITEMS] [--uts DEPTH] [--queens N]
 *                [--matmul N] [--sort N]
 *   --tiny: fib 20, knapsack 12, uts 4, queens 8, matmul 128, sort 20000 (a check)
 * Output: one line per measurement,
 *   RESULT kernels kernel=fib size=35 impl=weft workers=2 median_ns=...
 *     ratio_vs_plain=... speedup_2v1=... reps=...
 * (ratio_vs_plain = median / plain's: lower is better; speedup_2v1 = the same
 * impl's 1-worker median / this one, on 2-worker lines), then a table.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"
#include "../fib/fib_peers.h"
#include "kernels.h"

struct sizes {
    int fib, knapsack, uts, queens, matmul;
    long sort;
};
static struct sizes sz = {35, 26, 8, 12, 512, 4L << 20};

/* Exit on a weft error: in a child, that fails the measurement. */
static void check(int err, const char *what)
{
    if (err) {
        fprintf(stderr, "kernels: %s: error %d\n", what, err);
        exit(1);
    }
}

/* Run two calls of the same function under weft_join: the way to fork four. */
struct pair {
    weft_fn fn;
    void *x, *y;
};

static int pair_task(void *p)
{
    struct pair *q = p;
    return weft_join(q->fn, q->x, q->fn, q->y);
}

/* ------------------------------------------------------------------------------
 * fib
 * ---------------------------------------------------------------------------- */

__attribute__((noinline)) static long fib_plain(int n)
{
    return n < 2 ? n : fib_plain(n - 1) + fib_plain(n - 2);
}

struct fib_arg {
    int n;
    long r;
};

/* The "calls" rows: each task below written once, run two ways, under weft_join
 * and with weft_join replaced by calls_join, two direct calls in order. The calls
 * version is the code users write with no scheduler at all: its struct arguments
 * and two real calls per node (the functions are noinline, so the compiler cannot
 * fold the recursion into a loop as it does plain C's), the floor for any fork-join
 * library that takes tasks as int (*)(void *). */
static inline int calls_join(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    int ra = a(arg_a), rb = b(arg_b);
    return ra ? ra : rb;
}

static inline __attribute__((always_inline)) int fib_node(struct fib_arg *f, weft_fn self,
                                                          bool calls)
{
    if (f->n < 2) {
        f->r = f->n;
        return 0;
    }
    struct fib_arg a = {f->n - 2, 0}, b = {f->n - 1, 0};
    /* b = fib(n-1) is the half weft_join pushes: stealable, as Lace's SPAWN */
    int err = calls ? calls_join(self, &a, self, &b) : weft_join(self, &a, self, &b);
    f->r = a.r + b.r;
    return err;
}

static int fib_weft(void *p)
{
    return fib_node(p, fib_weft, false);
}

__attribute__((noinline)) static int fib_calls(void *p)
{
    return fib_node(p, fib_calls, true);
}

/* Tuned: benchmarks/fib's form, one word holds n on entry and fib(n) on return. */
static int fib_slot(void *p)
{
    long *slot = p;
    long n = *slot;
    if (n < 2)
        return 0;
    long a = n - 2, b = n - 1;
    int err = weft_join(fib_slot, &a, fib_slot, &b);
    *slot = a + b;
    return err;
}

static uint64_t fib_run_plain(void)
{
    return (uint64_t)fib_plain(sz.fib);
}

static uint64_t fib_run_weft(void)
{
    struct fib_arg f = {sz.fib, 0};
    check(fib_weft(&f), "fib");
    return (uint64_t)f.r;
}

static uint64_t fib_run_calls(void)
{
    struct fib_arg f = {sz.fib, 0};
    check(fib_calls(&f), "fib");
    return (uint64_t)f.r;
}

static uint64_t fib_run_slot(void)
{
    long f = sz.fib;
    check(fib_slot(&f), "fib");
    return (uint64_t)f;
}

#ifdef HAVE_LACE
static uint64_t fib_run_lace(int workers, double *ns)
{
    return (uint64_t)fib_lace(sz.fib, workers, ns);
}
#endif
#ifdef HAVE_TBB
static uint64_t fib_run_tbb(int workers, double *ns)
{
    return (uint64_t)fib_tbb(sz.fib, workers, ns);
}
#endif
#ifdef HAVE_OMP
static uint64_t fib_run_omp(int workers, double *ns)
{
    return (uint64_t)fib_omp(sz.fib, workers, ns);
}
#endif

/* ------------------------------------------------------------------------------
 * knapsack
 * ---------------------------------------------------------------------------- */

static struct item items[64];
static int knap_capacity;

static void knap_prepare(void)
{
    uint64_t s = 1;
    int total = 0;
    for (int i = 0; i < sz.knapsack; i++) {
        s = uts_mix(s);
        items[i].weight = 1 + (int)(s % 100);
        items[i].value = 1 + (int)((s >> 32) % 100);
        total += items[i].weight;
    }
    knap_capacity = total / 2;
}

/* The best value reachable from here; INT_MIN if over capacity. */
__attribute__((noinline)) static int knap_plain(const struct item *e, int c, int n, int v)
{
    if (c < 0)
        return INT_MIN;
    if (n == 0)
        return v;
    int with = knap_plain(e + 1, c - e->weight, n - 1, v + e->value);
    int without = knap_plain(e + 1, c, n - 1, v);
    return with > without ? with : without;
}

struct knap_arg {
    const struct item *e;
    int c, n, v;
    int r;
};

static inline __attribute__((always_inline)) int knap_node(struct knap_arg *a, weft_fn self,
                                                           bool calls)
{
    if (a->c < 0) {
        a->r = INT_MIN;
        return 0;
    }
    if (a->n == 0) {
        a->r = a->v;
        return 0;
    }
    struct knap_arg with = {a->e + 1, a->c - a->e->weight, a->n - 1, a->v + a->e->value, 0};
    struct knap_arg without = {a->e + 1, a->c, a->n - 1, a->v, 0};
    /* "with" is the stealable half */
    int err = calls ? calls_join(self, &without, self, &with)
                    : weft_join(self, &without, self, &with);
    a->r = with.r > without.r ? with.r : without.r;
    return err;
}

static int knap_weft(void *p)
{
    return knap_node(p, knap_weft, false);
}

__attribute__((noinline)) static int knap_calls(void *p)
{
    return knap_node(p, knap_calls, true);
}

#ifdef HAVE_LACE
static uint64_t knap_run_lace(int workers, double *ns)
{
    return (uint64_t)knap_lace(items, sz.knapsack, knap_capacity, workers, ns);
}
#endif

static uint64_t knap_run_plain(void)
{
    return (uint64_t)knap_plain(items, knap_capacity, sz.knapsack, 0);
}

static uint64_t knap_run(weft_fn fn)
{
    struct knap_arg a = {items, knap_capacity, sz.knapsack, 0, 0};
    check(fn(&a), "knapsack");
    return (uint64_t)a.r;
}

static uint64_t knap_run_weft(void)
{
    return knap_run(knap_weft);
}

static uint64_t knap_run_calls(void)
{
    return knap_run(knap_calls);
}

/* ------------------------------------------------------------------------------
 * uts
 * ---------------------------------------------------------------------------- */

__attribute__((noinline)) static long uts_plain(uint64_t id, int depth)
{
    int k = uts_num_children(id, depth, sz.uts);
    long n = 1;
    for (int i = 0; i < k; i++)
        n += uts_plain(uts_child_id(id, i), depth + 1);
    return n;
}

static long uts_weft_node(uint64_t id, int depth, bool leafless);

struct uts_arg {
    uint64_t id;
    int depth;
    bool leafless;
    long *count;
};

static int uts_task(void *p)
{
    const struct uts_arg *a = p;
    *a->count = uts_weft_node(a->id, a->depth, a->leafless);
    return 0;
}

struct uts_node {
    uint64_t id;
    int depth, nkids;
    bool leafless;
    long counts[UTS_MAX_CHILDREN];
};

static int uts_body(weft_scope *s, void *p)
{
    struct uts_node *n = p;
    for (int i = 0; i < n->nkids; i++) {
        struct uts_arg a = {uts_child_id(n->id, i), n->depth + 1, n->leafless, &n->counts[i]};
        int err = weft_spawn_copy(s, uts_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static long uts_weft_node(uint64_t id, int depth, bool leafless)
{
    struct uts_node n;
    n.id = id;
    n.depth = depth;
    n.leafless = leafless;
    n.nkids = uts_num_children(id, depth, sz.uts);
    if (leafless && n.nkids == 0)
        return 1;
    check(weft_scope_run(NULL, uts_body, &n), "uts");
    long c = 1;
    for (int i = 0; i < n.nkids; i++)
        c += n.counts[i];
    return c;
}

/* The calls row: the same node and struct arguments, each child called in order
 * where uts_body spawns it (no scope). */
__attribute__((noinline)) static long uts_calls_node(uint64_t id, int depth);

static int uts_calls_task(void *p)
{
    const struct uts_arg *a = p;
    *a->count = uts_calls_node(a->id, a->depth);
    return 0;
}

__attribute__((noinline)) static long uts_calls_node(uint64_t id, int depth)
{
    struct uts_node n;
    n.nkids = uts_num_children(id, depth, sz.uts);
    for (int i = 0; i < n.nkids; i++) {
        struct uts_arg a = {uts_child_id(id, i), depth + 1, false, &n.counts[i]};
        check(uts_calls_task(&a), "uts");
    }
    long c = 1;
    for (int i = 0; i < n.nkids; i++)
        c += n.counts[i];
    return c;
}

static uint64_t uts_run_calls(void)
{
    return (uint64_t)uts_calls_node(UTS_ROOT_ID, 0);
}

static uint64_t uts_run_plain(void)
{
    return (uint64_t)uts_plain(UTS_ROOT_ID, 0);
}

static uint64_t uts_run_weft(void)
{
    return (uint64_t)uts_weft_node(UTS_ROOT_ID, 0, false);
}

static uint64_t uts_run_leafless(void)
{
    return (uint64_t)uts_weft_node(UTS_ROOT_ID, 0, true);
}

#ifdef HAVE_TBB
static uint64_t uts_run_tbb(int workers, double *ns)
{
    return (uint64_t)uts_tbb(sz.uts, workers, ns);
}
#endif
#ifdef HAVE_OMP
static uint64_t uts_run_omp(int workers, double *ns)
{
    return (uint64_t)uts_omp(sz.uts, workers, ns);
}
#endif

/* ------------------------------------------------------------------------------
 * nqueens
 * ---------------------------------------------------------------------------- */

/* Solutions below a board whose filled rows block cols, and the diagonals ld, rd
 * in the next row. */
__attribute__((noinline)) static long nq_plain(uint32_t all, uint32_t cols, uint32_t ld,
                                               uint32_t rd)
{
    if (cols == all)
        return 1;
    long n = 0;
    uint32_t avail = all & ~(cols | ld | rd);
    while (avail) {
        uint32_t bit = avail & -avail;
        avail -= bit;
        n += nq_plain(all, cols | bit, (ld | bit) << 1, (rd | bit) >> 1);
    }
    return n;
}

static long nq_weft_node(uint32_t all, uint32_t cols, uint32_t ld, uint32_t rd);

struct nq_arg {
    uint32_t all, cols, ld, rd;
    long *count;
};

static int nq_task(void *p)
{
    const struct nq_arg *a = p;
    *a->count = nq_weft_node(a->all, a->cols, a->ld, a->rd);
    return 0;
}

struct nq_node {
    uint32_t all, cols, ld, rd;
    int nkids;
    long counts[32];
};

static int nq_body(weft_scope *s, void *p)
{
    struct nq_node *n = p;
    uint32_t avail = n->all & ~(n->cols | n->ld | n->rd);
    while (avail) {
        uint32_t bit = avail & -avail;
        avail -= bit;
        struct nq_arg a = {n->all, n->cols | bit, (n->ld | bit) << 1, (n->rd | bit) >> 1,
                           &n->counts[n->nkids++]};
        int err = weft_spawn_copy(s, nq_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static long nq_weft_node(uint32_t all, uint32_t cols, uint32_t ld, uint32_t rd)
{
    if (cols == all)
        return 1;
    struct nq_node n;
    n.all = all;
    n.cols = cols;
    n.ld = ld;
    n.rd = rd;
    n.nkids = 0;
    check(weft_scope_run(NULL, nq_body, &n), "nqueens");
    long c = 0;
    for (int i = 0; i < n.nkids; i++)
        c += n.counts[i];
    return c;
}

static uint64_t nq_run_plain(void)
{
    return (uint64_t)nq_plain((1u << sz.queens) - 1, 0, 0, 0);
}

static uint64_t nq_run_weft(void)
{
    return (uint64_t)nq_weft_node((1u << sz.queens) - 1, 0, 0, 0);
}

/* ------------------------------------------------------------------------------
 * matmul
 * ---------------------------------------------------------------------------- */

#define MM_BASE 64
static double *mm_a, *mm_b, *mm_c;

static void mm_prepare(void)
{
    size_t n = (size_t)sz.matmul;
    free(mm_a);
    free(mm_b);
    free(mm_c);
    mm_a = malloc(n * n * sizeof(double));
    mm_b = malloc(n * n * sizeof(double));
    mm_c = malloc(n * n * sizeof(double));
    if (!mm_a || !mm_b || !mm_c)
        exit(1);
    /* Small integers: every sum is exact, so any order of the same additions per
     * element gives the same bits (and the two versions add in the same order). */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            mm_a[i * n + j] = (double)((i * 7 + j * 3) % 10);
            mm_b[i * n + j] = (double)((i * 5 + j * 11) % 9);
        }
}

static void mm_reset(void)
{
    memset(mm_c, 0, (size_t)sz.matmul * (size_t)sz.matmul * sizeof(double));
}

static uint64_t mm_hash(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = (size_t)sz.matmul * (size_t)sz.matmul;
    for (size_t i = 0; i < n; i++) {
        uint64_t x;
        memcpy(&x, &mm_c[i], sizeof(x));
        h = (h ^ x) * 0x100000001b3ull;
    }
    return h;
}

static void mm_block(const double *a, const double *b, double *c, int n, int ld)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++) {
            double aik = a[i * ld + k];
            for (int j = 0; j < n; j++)
                c[i * ld + j] += aik * b[k * ld + j];
        }
}

/* c += a * b for n x n blocks in matrices of row length ld. */
static void mm_plain(const double *a, const double *b, double *c, int n, int ld)
{
    if (n <= MM_BASE) {
        mm_block(a, b, c, n, ld);
        return;
    }
    int h = n / 2;
    const double *a11 = a, *a12 = a + h, *a21 = a + h * ld, *a22 = a + h * ld + h;
    const double *b11 = b, *b12 = b + h, *b21 = b + h * ld, *b22 = b + h * ld + h;
    double *c11 = c, *c12 = c + h, *c21 = c + h * ld, *c22 = c + h * ld + h;
    mm_plain(a11, b11, c11, h, ld);
    mm_plain(a11, b12, c12, h, ld);
    mm_plain(a21, b11, c21, h, ld);
    mm_plain(a21, b12, c22, h, ld);
    mm_plain(a12, b21, c11, h, ld);
    mm_plain(a12, b22, c12, h, ld);
    mm_plain(a22, b21, c21, h, ld);
    mm_plain(a22, b22, c22, h, ld);
}

struct mm_arg {
    const double *a, *b;
    double *c;
    int n, ld;
};

static int mm_weft(void *p)
{
    const struct mm_arg *m = p;
    int n = m->n, ld = m->ld;
    if (n <= MM_BASE) {
        mm_block(m->a, m->b, m->c, n, ld);
        return 0;
    }
    int h = n / 2;
    const double *a = m->a, *b = m->b;
    double *c = m->c;
    const double *a11 = a, *a12 = a + h, *a21 = a + h * ld, *a22 = a + h * ld + h;
    const double *b11 = b, *b12 = b + h, *b21 = b + h * ld, *b22 = b + h * ld + h;
    double *c11 = c, *c12 = c + h, *c21 = c + h * ld, *c22 = c + h * ld + h;
    /* Phase 1 then phase 2: within a phase the four products write disjoint
     * quadrants of c. */
    struct mm_arg q[8] = {
        {a11, b11, c11, h, ld}, {a11, b12, c12, h, ld},
        {a21, b11, c21, h, ld}, {a21, b12, c22, h, ld},
        {a12, b21, c11, h, ld}, {a12, b22, c12, h, ld},
        {a22, b21, c21, h, ld}, {a22, b22, c22, h, ld},
    };
    for (int ph = 0; ph < 2; ph++) {
        struct pair l = {mm_weft, &q[4 * ph], &q[4 * ph + 1]};
        struct pair r = {mm_weft, &q[4 * ph + 2], &q[4 * ph + 3]};
        int err = weft_join(pair_task, &l, pair_task, &r);
        if (err)
            return err;
    }
    return 0;
}

static uint64_t mm_run_plain(void)
{
    mm_plain(mm_a, mm_b, mm_c, sz.matmul, sz.matmul);
    return mm_hash();
}

static uint64_t mm_run_weft(void)
{
    struct mm_arg m = {mm_a, mm_b, mm_c, sz.matmul, sz.matmul};
    check(mm_weft(&m), "matmul");
    return mm_hash();
}

/* ------------------------------------------------------------------------------
 * sort (cilksort-like)
 * ---------------------------------------------------------------------------- */

#define SORT_BASE 2048  /* below: serial quicksort */
#define MERGE_BASE 2048 /* below: serial merge */
static long *sort_in, *sort_a, *sort_tmp;

static void sort_prepare(void)
{
    size_t n = (size_t)sz.sort;
    free(sort_in);
    free(sort_a);
    free(sort_tmp);
    sort_in = malloc(n * sizeof(long));
    sort_a = malloc(n * sizeof(long));
    sort_tmp = malloc(n * sizeof(long));
    if (!sort_in || !sort_a || !sort_tmp)
        exit(1);
    uint64_t s = 42;
    for (size_t i = 0; i < n; i++) {
        s = uts_mix(s);
        sort_in[i] = (long)(s >> 1);
    }
}

static void sort_reset(void)
{
    memcpy(sort_a, sort_in, (size_t)sz.sort * sizeof(long));
}

static uint64_t sort_hash(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (long i = 0; i < sz.sort; i++) {
        if (i > 0 && sort_a[i - 1] > sort_a[i])
            return 0; /* not sorted: no valid result hashes to 0 in practice */
        h = (h ^ (uint64_t)sort_a[i]) * 0x100000001b3ull;
    }
    return h;
}

static void seq_quicksort(long *a, size_t n)
{
    while (n > 16) {
        long p = a[n / 2];
        size_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < p)
                i++;
            while (a[j] > p)
                j--;
            if (i >= j)
                break;
            long t = a[i];
            a[i] = a[j];
            a[j] = t;
            i++;
            j--;
        }
        /* Recurse into the smaller part, loop on the larger. */
        if (j + 1 < n - j - 1) {
            seq_quicksort(a, j + 1);
            a += j + 1;
            n -= j + 1;
        } else {
            seq_quicksort(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (size_t i = 1; i < n; i++) {
        long x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

static void seq_merge(const long *x, size_t nx, const long *y, size_t ny, long *dst)
{
    while (nx && ny) {
        if (*y < *x) {
            *dst++ = *y++;
            ny--;
        } else {
            *dst++ = *x++;
            nx--;
        }
    }
    memcpy(dst, x, nx * sizeof(long));
    memcpy(dst + nx, y, ny * sizeof(long));
}

/* The first index in y[0..n) whose element is >= v. */
static size_t lower_bound(const long *y, size_t n, long v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (y[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void merge_plain(const long *x, size_t nx, const long *y, size_t ny, long *dst)
{
    if (nx < ny) {
        const long *t = x;
        x = y;
        y = t;
        size_t tn = nx;
        nx = ny;
        ny = tn;
    }
    if (nx + ny < MERGE_BASE || ny == 0) {
        seq_merge(x, nx, y, ny, dst);
        return;
    }
    size_t mx = nx / 2, my = lower_bound(y, ny, x[mx]);
    dst[mx + my] = x[mx];
    merge_plain(x, mx, y, my, dst);
    merge_plain(x + mx + 1, nx - mx - 1, y + my, ny - my, dst + mx + my + 1);
}

static void sort_plain(long *a, long *tmp, size_t n)
{
    if (n < SORT_BASE) {
        seq_quicksort(a, n);
        return;
    }
    size_t q = n / 4;
    sort_plain(a, tmp, q);
    sort_plain(a + q, tmp + q, q);
    sort_plain(a + 2 * q, tmp + 2 * q, q);
    sort_plain(a + 3 * q, tmp + 3 * q, n - 3 * q);
    merge_plain(a, q, a + q, q, tmp);
    merge_plain(a + 2 * q, q, a + 3 * q, n - 3 * q, tmp + 2 * q);
    merge_plain(tmp, 2 * q, tmp + 2 * q, n - 2 * q, a);
}

struct merge_arg {
    const long *x;
    size_t nx;
    const long *y;
    size_t ny;
    long *dst;
};

static int merge_weft(void *p)
{
    const struct merge_arg *m = p;
    const long *x = m->x, *y = m->y;
    size_t nx = m->nx, ny = m->ny;
    if (nx < ny) {
        const long *t = x;
        x = y;
        y = t;
        size_t tn = nx;
        nx = ny;
        ny = tn;
    }
    if (nx + ny < MERGE_BASE || ny == 0) {
        seq_merge(x, nx, y, ny, m->dst);
        return 0;
    }
    size_t mx = nx / 2, my = lower_bound(y, ny, x[mx]);
    m->dst[mx + my] = x[mx];
    struct merge_arg lo = {x, mx, y, my, m->dst};
    struct merge_arg hi = {x + mx + 1, nx - mx - 1, y + my, ny - my, m->dst + mx + my + 1};
    return weft_join(merge_weft, &lo, merge_weft, &hi);
}

struct sort_arg {
    long *a, *tmp;
    size_t n;
};

static int sort_weft(void *p)
{
    const struct sort_arg *s = p;
    long *a = s->a, *tmp = s->tmp;
    size_t n = s->n;
    if (n < SORT_BASE) {
        seq_quicksort(a, n);
        return 0;
    }
    size_t q = n / 4;
    struct sort_arg part[4] = {
        {a, tmp, q}, {a + q, tmp + q, q}, {a + 2 * q, tmp + 2 * q, q},
        {a + 3 * q, tmp + 3 * q, n - 3 * q},
    };
    struct pair l = {sort_weft, &part[0], &part[1]}, r = {sort_weft, &part[2], &part[3]};
    int err = weft_join(pair_task, &l, pair_task, &r);
    if (err)
        return err;
    struct merge_arg m1 = {a, q, a + q, q, tmp};
    struct merge_arg m2 = {a + 2 * q, q, a + 3 * q, n - 3 * q, tmp + 2 * q};
    err = weft_join(merge_weft, &m1, merge_weft, &m2);
    if (err)
        return err;
    struct merge_arg all = {tmp, 2 * q, tmp + 2 * q, n - 2 * q, a};
    return merge_weft(&all);
}

static uint64_t sort_run_plain(void)
{
    sort_plain(sort_a, sort_tmp, (size_t)sz.sort);
    return sort_hash();
}

static uint64_t sort_run_weft(void)
{
    struct sort_arg s = {sort_a, sort_tmp, (size_t)sz.sort};
    check(sort_weft(&s), "sort");
    return sort_hash();
}

/* ------------------------------------------------------------------------------
 * The harness
 * ---------------------------------------------------------------------------- */

enum impl { PLAIN, CALLS, WEFT, WEFT_TUNED, LACE, TBB, OMP, NIMPL };
#define NPEERS (NIMPL - LACE) /* the peers: Lace, oneTBB, OpenMP */

struct kernel {
    const char *name;
    const int *size_int;   /* the size parameter shown, one of these two */
    const long *size_long;
    void (*prepare)(void); /* in the parent, before the children: inputs */
    void (*reset)(void);   /* before every run, untimed */
    uint64_t (*plain)(void);
    uint64_t (*calls)(void); /* the weft code with direct calls (calls_join) */
    uint64_t (*weft)(void); /* called inside a task */
    uint64_t (*tuned)(void);
    const char *tuned_name;
    uint64_t (*peer[NPEERS])(int workers, double *ns); /* Lace, TBB, OMP */
    uint64_t expect;
};

#ifdef HAVE_LACE
#define LACE_PEER(f) f
#else
#define LACE_PEER(f) NULL
#endif
#ifdef HAVE_TBB
#define TBB_PEER(f) f
#else
#define TBB_PEER(f) NULL
#endif
#ifdef HAVE_OMP
#define OMP_PEER(f) f
#else
#define OMP_PEER(f) NULL
#endif

static struct kernel kernels[] = {
    {"fib", &sz.fib, NULL, NULL, NULL, fib_run_plain, fib_run_calls, fib_run_weft,
     fib_run_slot, "weft_slot (tuned)",
     {LACE_PEER(fib_run_lace), TBB_PEER(fib_run_tbb), OMP_PEER(fib_run_omp)}, 0},
    {"knapsack", &sz.knapsack, NULL, knap_prepare, NULL, knap_run_plain, knap_run_calls,
     knap_run_weft, NULL, NULL, {LACE_PEER(knap_run_lace), NULL, NULL}, 0},
    {"uts", &sz.uts, NULL, NULL, NULL, uts_run_plain, uts_run_calls, uts_run_weft,
     uts_run_leafless, "weft_leafless (tuned)",
     {NULL, TBB_PEER(uts_run_tbb), OMP_PEER(uts_run_omp)}, 0},
    {"nqueens", &sz.queens, NULL, NULL, NULL, nq_run_plain, NULL, nq_run_weft, NULL, NULL,
     {NULL, NULL, NULL}, 0},
    {"matmul", &sz.matmul, NULL, mm_prepare, mm_reset, mm_run_plain, NULL, mm_run_weft, NULL,
     NULL, {NULL, NULL, NULL}, 0},
    {"sort", NULL, &sz.sort, sort_prepare, sort_reset, sort_run_plain, NULL, sort_run_weft,
     NULL, NULL, {NULL, NULL, NULL}, 0},
};
#define NKERNELS (sizeof(kernels) / sizeof(kernels[0]))

static const char *impl_key(enum impl i)
{
    static const char *const k[NIMPL] = {"plain", "calls", "weft", "weft_tuned",
                                         "lace", "tbb", "omp"};
    return k[i];
}

static const char *impl_label(const struct kernel *k, enum impl i)
{
    static const char *const l[NIMPL] = {"plain C", "calls (no scheduler)", "weft", "",
                                         "Lace", "oneTBB", "OpenMP"};
    return i == WEFT_TUNED ? k->tuned_name : l[i];
}

static bool has_impl(const struct kernel *k, enum impl i)
{
    switch (i) {
    case PLAIN:
    case WEFT:
        return true;
    case CALLS:
        return k->calls != NULL;
    case WEFT_TUNED:
        return k->tuned != NULL;
    default:
        return k->peer[i - LACE] != NULL;
    }
}

struct job {
    struct kernel *k;
    enum impl impl;
    int workers, reps;
};

struct weft_call {
    uint64_t (*fn)(void);
    uint64_t r;
};

static int weft_call(void *p)
{
    struct weft_call *c = p;
    c->r = c->fn();
    return 0;
}

static void measure(void *p, double *out, int max)
{
    const struct job *j = p;
    const struct kernel *k = j->k;
    weft_pool *pool = NULL;
    if (j->impl == WEFT || j->impl == WEFT_TUNED) {
        weft_pool_options o = {.threads = (unsigned)j->workers};
        check(weft_pool_create(&pool, &o), "weft_pool_create");
    }
    /* k = -1: the untimed warm-up (the peers warm up inside their call). */
    for (int r = j->impl >= LACE ? 0 : -1; r < j->reps && r < max; r++) {
        if (k->reset)
            k->reset();
        uint64_t got = 0;
        double ns = 0;
        uint64_t t0 = bench_now_ns();
        switch (j->impl) {
        case PLAIN:
        case CALLS:
            got = j->impl == PLAIN ? k->plain() : k->calls();
            ns = (double)(bench_now_ns() - t0);
            break;
        case WEFT:
        case WEFT_TUNED: {
            struct weft_call c = {j->impl == WEFT ? k->weft : k->tuned, 0};
            check(weft_run(pool, weft_call, &c), "weft_run");
            ns = (double)(bench_now_ns() - t0);
            got = c.r;
            break;
        }
        default:
            got = k->peer[j->impl - LACE](j->workers, &ns);
            break;
        }
        if (got != k->expect) {
            fprintf(stderr, "kernels: %s %s on %d workers gave %" PRIu64 ", the serial "
                            "version %" PRIu64 "\n", k->name, impl_key(j->impl), j->workers,
                    got, k->expect);
            exit(1);
        }
        if (r >= 0)
            out[r] = ns;
    }
    weft_pool_destroy(pool);
}

static long size_of(const struct kernel *k)
{
    return k->size_int ? *k->size_int : *k->size_long;
}

static void usage(void)
{
    fprintf(stderr, "usage: kernels [--reps N] [--kernel NAME]... [--tiny] [--fib N] "
                    "[--knapsack ITEMS] [--uts DEPTH] [--queens N] [--matmul N] [--sort N]\n"
                    "  NAME: fib knapsack uts nqueens matmul sort\n");
}

int main(int argc, char **argv)
{
    int reps = 5;
    bool want[NKERNELS], filter = false;
    for (size_t i = 0; i < NKERNELS; i++)
        want[i] = true;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (strcmp(o, "--tiny") == 0) {
            sz = (struct sizes){20, 12, 4, 8, 128, 20000};
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        a++;
        if (strcmp(o, "--reps") == 0)
            reps = atoi(v);
        else if (strcmp(o, "--fib") == 0)
            sz.fib = atoi(v);
        else if (strcmp(o, "--knapsack") == 0)
            sz.knapsack = atoi(v);
        else if (strcmp(o, "--uts") == 0)
            sz.uts = atoi(v);
        else if (strcmp(o, "--queens") == 0)
            sz.queens = atoi(v);
        else if (strcmp(o, "--matmul") == 0)
            sz.matmul = atoi(v);
        else if (strcmp(o, "--sort") == 0)
            sz.sort = atol(v);
        else if (strcmp(o, "--kernel") == 0) {
            size_t i = 0;
            while (i < NKERNELS && strcmp(kernels[i].name, v) != 0)
                i++;
            if (i == NKERNELS) {
                usage();
                return 2;
            }
            if (!filter)
                memset(want, 0, sizeof(want));
            filter = true;
            want[i] = true;
        } else {
            usage();
            return 2;
        }
    }
    /* matmul needs a power of two at least the block; the others small bounds. */
    bool pow2 = sz.matmul >= MM_BASE && (sz.matmul & (sz.matmul - 1)) == 0;
    if (reps < 1 || reps > 100 || sz.fib < 0 || sz.fib > 50 || sz.knapsack < 1 ||
        sz.knapsack > 40 || sz.uts < 1 || sz.uts > 12 || sz.queens < 1 || sz.queens > 16 ||
        !pow2 || sz.matmul > 8192 || sz.sort < 4 || sz.sort > (1L << 30)) {
        fprintf(stderr, "kernels: a size is out of range (matmul: a power of two >= %d)\n",
                MM_BASE);
        return 2;
    }

    static double med[NKERNELS][NIMPL][3];
    printf("# kernels: %ld CPUs online; ratio_vs_plain = median / plain C's (lower is "
           "better); speedup_2v1 = 1-worker median / 2-worker median\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t ki = 0; ki < NKERNELS; ki++) {
        struct kernel *k = &kernels[ki];
        if (!want[ki])
            continue;
        if (k->prepare)
            k->prepare();
        if (k->reset)
            k->reset();
        k->expect = k->plain(); /* the reference, untimed, inherited by the children */
        for (int impl = 0; impl < NIMPL; impl++) {
            if (!has_impl(k, (enum impl)impl))
                continue;
            for (int w = 1; w <= 2; w++) {
                if ((impl == PLAIN || impl == CALLS) && w == 2)
                    continue;
                struct job j = {k, (enum impl)impl, w, reps};
                if ((impl == TBB || impl == OMP) && reps > 3)
                    j.reps = 3; /* the slow peers */
                double v[100];
                int got = bench_isolated(measure, &j, v, j.reps);
                if (got <= 0) {
                    fprintf(stderr, "kernels: %s %s on %d workers failed\n", k->name,
                            impl_key((enum impl)impl), w);
                    return 1;
                }
                double m = med[ki][impl][w] = bench_median(v, (size_t)got);
                printf("RESULT kernels kernel=%s size=%ld impl=%s workers=%d median_ns=%.0f "
                       "ratio_vs_plain=%.3f", k->name, size_of(k), impl_key((enum impl)impl),
                       w, m, m / med[ki][PLAIN][1]);
                if (w == 2)
                    printf(" speedup_2v1=%.3f", med[ki][impl][1] / m);
                printf(" reps=%d\n", got);
                fflush(stdout);
            }
        }
    }

    printf("\nfork-join kernels: median per run; vs plain = time / plain C's (lower is "
           "better); 2w/1w = speedup of 2 workers over 1\n");
    printf("%-14s %-22s %2s %12s %9s %7s\n", "kernel", "impl", "w", "median ms", "vs plain",
           "2w/1w");
    for (size_t ki = 0; ki < NKERNELS; ki++) {
        const struct kernel *k = &kernels[ki];
        if (!want[ki])
            continue;
        char name[40];
        snprintf(name, sizeof(name), "%s(%ld)", k->name, size_of(k));
        for (int impl = 0; impl < NIMPL; impl++) {
            if (!has_impl(k, (enum impl)impl))
                continue;
            for (int w = 1; w <= 2; w++) {
                if ((impl == PLAIN || impl == CALLS) && w == 2)
                    continue;
                double m = med[ki][impl][w];
                printf("%-14s %-22s %2d %12.3f %8.2fx", name, impl_label(k, (enum impl)impl), w,
                       m / 1e6, m / med[ki][PLAIN][1]);
                if (w == 2)
                    printf(" %6.2fx", med[ki][impl][1] / m);
                printf("\n");
            }
        }
    }
    return 0;
}
