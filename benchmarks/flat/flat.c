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
 * Beside them, the limit for this pattern without a scheduler (impl=handoff): two
 * threads and the same memory traffic, written by hand. One thread writes a
 * 128-byte record per item (a weft frame's size: two cache lines), publishing its
 * count every 32; both threads claim published records 32 at a time from a shared
 * cursor and run their items (one atomic add per 32 items). The records are
 * reused from run to run, as frames are. What weft_spawn on 2 workers costs over
 * it is the scheduler's; what it costs over the serial loop is the machine's too.
 *
 * Every measurement runs in a child process of its own: one untimed warm-up run,
 * then --reps timed runs (default 7), the median reported. Every run's output
 * (one uint64_t per item) is hashed and compared with the serial loop's: a
 * mismatch exits 1.
 *
 * Usage: flat [--reps N] [--tiny]     (--tiny: n = 10 000 and 1 000)
 * Output: RESULT flat impl=serial|weft_spawn|handoff workers=W n=N k=K median_ns=...
 *   ns_per_task=... ratio_vs_serial=... [speedup_2v1=...] reps=R
 * (ratio_vs_serial = serial median / this median, > 1 is faster than the loop;
 * speedup_2v1 = 1-worker median / 2-worker median), then a table.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
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

/* The hand-written 2-thread limit (the top of the file). */
#define HANDOFF_BATCH 32

struct record {
    _Alignas(64) const struct ctx *c;
    size_t i;
    char pad[128 - sizeof(void *) - sizeof(size_t)];
};

struct handoff {
    struct record *recs;
    const struct ctx *c;
    size_t n;
    _Alignas(64) _Atomic(size_t) published; /* records written so far */
    _Alignas(64) _Atomic(size_t) next;      /* the next batch to claim */
    /* The second thread lives across the runs (one started per run shared the
     * first one's core until the kernel moved it: 1.4x instead of 1.9x on 2 us
     * items); it spins between runs. run: the run it is to take part in, 0 to
     * exit; done: the last run it finished. */
    _Alignas(64) _Atomic(unsigned) run;
    _Atomic(unsigned) done;
    pthread_t thread;
};

static void handoff_consume(struct handoff *h)
{
    for (;;) {
        size_t b = atomic_fetch_add_explicit(&h->next, HANDOFF_BATCH, memory_order_relaxed);
        if (b >= h->n)
            return;
        size_t e = b + HANDOFF_BATCH < h->n ? b + HANDOFF_BATCH : h->n;
        /* Acquire: pairs with the writer's release store, so the records are seen. */
        while (atomic_load_explicit(&h->published, memory_order_acquire) < e)
            __asm__ __volatile__("" ::: "memory");
        for (size_t k = b; k < e; k++) {
            struct item_arg a = {h->recs[k].c, h->recs[k].i};
            item(&a);
        }
    }
}

static void *handoff_thread(void *p)
{
    struct handoff *h = p;
    for (unsigned seen = 0;;) {
        unsigned r;
        /* Acquire: pairs with the release store of run, after the counters' reset. */
        while ((r = atomic_load_explicit(&h->run, memory_order_acquire)) == seen)
            __asm__ __volatile__("" ::: "memory");
        if (r == 0)
            return NULL;
        handoff_consume(h);
        seen = r;
        /* Release: its items' results, for the first thread's acquire load. */
        atomic_store_explicit(&h->done, r, memory_order_release);
    }
}

static void handoff_run(struct handoff *h)
{
    atomic_store_explicit(&h->published, 0, memory_order_relaxed);
    atomic_store_explicit(&h->next, 0, memory_order_relaxed);
    unsigned r = atomic_load_explicit(&h->run, memory_order_relaxed) + 1;
    atomic_store_explicit(&h->run, r, memory_order_release); /* start it */
    for (size_t i = 0; i < h->n; i++) {
        h->recs[i].c = h->c;
        h->recs[i].i = i;
        if ((i + 1) % HANDOFF_BATCH == 0)
            /* Release: pairs with the consumers' acquire load. */
            atomic_store_explicit(&h->published, i + 1, memory_order_release);
    }
    atomic_store_explicit(&h->published, h->n, memory_order_release);
    handoff_consume(h);
    while (atomic_load_explicit(&h->done, memory_order_acquire) != r)
        __asm__ __volatile__("" ::: "memory");
}

enum { IMPL_SERIAL, IMPL_SPAWN_1, IMPL_SPAWN_2, IMPL_HANDOFF, NIMPL };

struct job {
    struct flat_case fc;
    int workers; /* 0: the serial loop; -1: the handoff */
    int reps;
    uint64_t expect;
};

static void measure(void *p, double *out, int max)
{
    const struct job *j = p;
    struct ctx c = {malloc(j->fc.n * sizeof(uint64_t)), j->fc.n, j->fc.k};
    weft_pool *pool = NULL;
    struct handoff h = {.c = &c, .n = c.n};
    if (!c.out)
        exit(1);
    if (j->workers < 0) {
        h.recs = aligned_alloc(64, c.n * sizeof(struct record));
        if (!h.recs)
            exit(1);
        memset(h.recs, 0, c.n * sizeof(struct record)); /* faulted in before timing */
        if (pthread_create(&h.thread, NULL, handoff_thread, &h) != 0)
            exit(1);
    } else if (j->workers) {
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
        } else if (j->workers < 0) {
            handoff_run(&h);
        } else {
            for (size_t i = 0; i < c.n; i++)
                c.out[i] = collect_work(i, c.k);
        }
        double ns = (double)(bench_now_ns() - t0);
        if (collect_hash(c.out, c.n) != j->expect) {
            fprintf(stderr, "flat: %s on %d workers, n=%zu k=%u: output differs from the "
                            "serial loop's\n", pool ? "weft_spawn" : j->workers ? "handoff" :
                            "serial", j->workers, c.n, c.k);
            exit(1);
        }
        if (r >= 0)
            out[r] = ns;
    }
    weft_pool_destroy(pool);
    if (h.recs) {
        atomic_store_explicit(&h.run, 0, memory_order_release); /* exit */
        pthread_join(h.thread, NULL);
    }
    free(h.recs);
    free(c.out);
}

static const char *impl_name[NIMPL] = {"serial", "weft_spawn", "weft_spawn", "handoff"};
static const int impl_workers[NIMPL] = {0, 1, 2, -1};

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
    double med[2][NIMPL];
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
        for (int im = 0; im < NIMPL; im++) {
            int w = impl_workers[im], nw = w > 0 ? w : w < 0 ? 2 : 1;
            struct job j = {fc, w, reps, expect};
            double v[100];
            int got = bench_isolated(measure, &j, v, reps);
            if (got <= 0) {
                fprintf(stderr, "flat: %s on %d workers, n=%zu failed\n", impl_name[im], nw,
                        fc.n);
                return 1;
            }
            double m = med[ci][im] = bench_median(v, (size_t)got);
            printf("RESULT flat impl=%s workers=%d n=%zu k=%u median_ns=%.0f ns_per_task=%.1f "
                   "ratio_vs_serial=%.3f", impl_name[im], nw, fc.n, fc.k, m, m / (double)fc.n,
                   med[ci][0] / m);
            if (im == IMPL_SPAWN_2)
                printf(" speedup_2v1=%.3f", med[ci][IMPL_SPAWN_1] / m);
            if (im == IMPL_HANDOFF)
                printf(" weft_2w_vs_handoff=%.3f", med[ci][IMPL_SPAWN_2] / m);
            printf(" reps=%d\n", got);
            fflush(stdout);
        }
    }
    printf("\nflat spawn: ns per item (median run / n); vs serial = serial / this (> 1: "
           "faster); 2w/1w = speedup of 2 workers over 1; handoff = the hand-written "
           "2-thread limit, its column weft_spawn 2w's time / its time\n");
    char h0[40], h1[40];
    snprintf(h0, sizeof(h0), "n=%zu k=%u", cases[0].n, cases[0].k);
    snprintf(h1, sizeof(h1), "n=%zu k=%u", cases[1].n, cases[1].k);
    printf("%-12s %2s | %-31s | %-31s |\n", "impl", "w", h0, h1);
    printf("%-12s %2s | %10s %9s %9s | %10s %9s %9s\n", "", "", "ns/item", "vs serial",
           "2w/1w", "ns/item", "vs serial", "2w/1w");
    for (int im = 0; im < NIMPL; im++) {
        int w = impl_workers[im];
        printf("%-12s %2d |", impl_name[im], w > 0 ? w : w < 0 ? 2 : 1);
        for (int ci = 0; ci < 2; ci++) {
            double m = med[ci][im];
            printf(" %10.1f %8.2fx ", m / (double)cases[ci].n, med[ci][0] / m);
            if (im == IMPL_SPAWN_2)
                printf("%8.2fx |", med[ci][IMPL_SPAWN_1] / m);
            else if (im == IMPL_HANDOFF)
                printf("%8.2fx |", med[ci][IMPL_SPAWN_2] / m);
            else
                printf("%9s |", "");
        }
        printf("\n");
    }
    return 0;
}
