/* SPDX-License-Identifier: MIT */
/*
 * collect: weft_par_collect against a serial loop, one weft_spawn per item (the
 * rspack_futures::scope pattern), oneTBB parallel_for and OpenMP parallel for.
 *
 * Work: item i is k rounds of a 64-bit mixer seeded with (i + 1) * golden ratio
 * (collect.h); the output is one uint64_t per item. n = 10 000 and 1 000 000 items,
 * k = 16 (light, ~20 ns an item) and k = 1024 (heavy).
 *
 * Every (variant, workers, n, k) measurement runs in a child process of its own (this
 * program re-executed with --child), so that OpenMP's and oneTBB's threads, which
 * spin for a while after a parallel region, cannot steal time from the next one.
 * The child makes one untimed warm-up call, then repeats the call until the timed
 * calls add up to --min-time seconds (default 0.2; 3 calls at least), and reports
 * the median. Every call's output is hashed and must equal the serial loop's: a
 * mismatch is an error (exit status 1).
 *
 * For n = 10 000, k = 16 on 2 workers, each parallel variant also reports the CPU
 * time (getrusage) its process uses during one idle second after the timed calls:
 * an idle weft pool should use none.
 *
 * Output: one line per result,
 *   RESULT collect impl=weft_collect workers=2 n=1000000 k=16 median_ns=... ratio_vs_serial=... reps=...
 * where ratio_vs_serial = serial median / this median (> 1 is faster than serial),
 *   RESULT collect-idle impl=... workers=2 n=10000 k=16 idle_ns=1000000000 cpu_ns=...
 * then a table of medians and ratios.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "collect.h"
#include "../common/bench.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------------
 * The variants
 * ---------------------------------------------------------------------------- */

static int serial_setup(unsigned workers, void **state)
{
    (void)workers;
    *state = NULL;
    return 0;
}

static int serial_run(void *state, uint64_t *out, size_t n, unsigned k)
{
    (void)state;
    for (size_t i = 0; i < n; i++)
        out[i] = collect_work(i, k);
    return 0;
}

static void nothing(void *state)
{
    (void)state;
}

static int pool_setup(unsigned workers, void **state)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = workers};
    int err = weft_pool_create(&pool, &o);
    *state = err ? NULL : pool;
    return err;
}

static void pool_teardown(void *state)
{
    weft_pool_destroy(state);
}

static int collect_item(void *ctx, size_t i, void *slot)
{
    *(uint64_t *)slot = collect_work(i, *(const unsigned *)ctx);
    return 0;
}

static int weft_collect_run(void *state, uint64_t *out, size_t n, unsigned k)
{
    return weft_par_collect(state, n, out, sizeof(*out), collect_item, &k);
}

/* rspack_futures::scope: one task per item, each with its captured arguments. */
struct spawn_ctx {
    uint64_t *out;
    size_t n;
    unsigned k;
};

struct spawn_args {
    const struct spawn_ctx *c;
    size_t i;
};

static int spawn_task(void *p)
{
    const struct spawn_args *a = p;
    a->c->out[a->i] = collect_work(a->i, a->c->k);
    return 0;
}

static int spawn_body(weft_scope *s, void *p)
{
    const struct spawn_ctx *c = p;
    for (size_t i = 0; i < c->n; i++) {
        struct spawn_args a = {c, i};
        int err = weft_spawn_copy(s, spawn_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int spawn_top(void *p)
{
    return weft_scope_run(NULL, spawn_body, p);
}

static int weft_spawn_run(void *state, uint64_t *out, size_t n, unsigned k)
{
    /* The scope runs inside a task, as rspack's does inside the runtime: spawns go
     * to the worker's own deque, not through the injector. */
    struct spawn_ctx c = {out, n, k};
    return weft_run(state, spawn_top, &c);
}

static const struct collect_impl impl_serial = {"serial", serial_setup, serial_run, nothing};
static const struct collect_impl impl_collect = {"weft_collect", pool_setup, weft_collect_run,
                                                 pool_teardown};
static const struct collect_impl impl_spawn = {"weft_spawn", pool_setup, weft_spawn_run,
                                               pool_teardown};

static const struct collect_impl *const impls[] = {
    &impl_serial, &impl_collect, &impl_spawn,
#ifdef HAVE_TBB
    &collect_tbb,
#endif
#ifdef HAVE_OMP
    &collect_omp_static, &collect_omp_dynamic,
#endif
};
#define NIMPLS (sizeof(impls) / sizeof(impls[0]))

static const struct collect_impl *find_impl(const char *name)
{
    for (size_t i = 0; i < NIMPLS; i++)
        if (strcmp(impls[i]->name, name) == 0)
            return impls[i];
    return NULL;
}

/* ------------------------------------------------------------------------------
 * Child: one measurement
 * ---------------------------------------------------------------------------- */

/* argv: --child impl workers n k min_time ref_hash idle. Prints
 * "median_ns reps hash idle_cpu_ns" (idle_cpu_ns -1 when not measured). */
static int child_main(char **argv)
{
    const struct collect_impl *im = find_impl(argv[0]);
    unsigned workers = (unsigned)strtoul(argv[1], NULL, 10);
    size_t n = (size_t)strtoull(argv[2], NULL, 10);
    unsigned k = (unsigned)strtoul(argv[3], NULL, 10);
    double min_time = strtod(argv[4], NULL);
    uint64_t ref = strtoull(argv[5], NULL, 16);
    int idle = atoi(argv[6]);
    if (!im || !workers || !n) {
        fprintf(stderr, "collect: bad child arguments\n");
        return 1;
    }
    uint64_t *out = aligned_alloc(64, (n * sizeof(*out) + 63) & ~(size_t)63);
    void *state = NULL;
    int err = out ? im->setup(workers, &state) : -ENOMEM;
    if (err) {
        fprintf(stderr, "collect: %s setup on %u workers: %s\n", im->name, workers,
                strerror(-err));
        return 1;
    }

    /* Warm-up, untimed: threads started, pages touched, output checked. */
    memset(out, 0, n * sizeof(*out));
    err = im->run(state, out, n, k);
    uint64_t hash = collect_hash(out, n);
    if (err || (ref && hash != ref)) {
        fprintf(stderr, "collect: %s workers=%u n=%zu k=%u: %s\n", im->name, workers, n, k,
                err ? strerror(-err) : "output differs from the serial loop's");
        return 1;
    }
    if (!ref)
        ref = hash;

    /* Timed calls until min_time seconds of them are done (3 at least). */
    size_t reps = 0, cap = 64;
    uint64_t total = 0, *t = malloc(cap * sizeof(*t));
    if (!t)
        return 1;
    while ((reps < 3 || (double)total < min_time * 1e9) && reps < 1000000) {
        if (reps == cap) {
            uint64_t *nt = realloc(t, 2 * cap * sizeof(*t));
            if (!nt)
                return 1;
            t = nt;
            cap *= 2;
        }
        memset(out, 0, n * sizeof(*out));
        uint64_t t0 = now_ns();
        err = im->run(state, out, n, k);
        t[reps] = now_ns() - t0;
        total += t[reps];
        if (err || collect_hash(out, n) != ref) {
            fprintf(stderr, "collect: %s workers=%u n=%zu k=%u call %zu: %s\n", im->name,
                    workers, n, k, reps,
                    err ? strerror(-err) : "output differs from the serial loop's");
            return 1;
        }
        reps++;
    }
    qsort(t, reps, sizeof(*t), cmp_u64);
    uint64_t median = reps % 2 ? t[reps / 2] : (t[reps / 2 - 1] + t[reps / 2]) / 2;

    long long idle_cpu = -1;
    if (idle) {
        uint64_t c0 = cpu_ns();
        struct timespec one = {1, 0};
        while (nanosleep(&one, &one) != 0 && errno == EINTR)
            ;
        idle_cpu = (long long)(cpu_ns() - c0);
    }
    im->teardown(state);
    printf("%" PRIu64 " %zu %016" PRIx64 " %lld\n", median, reps, hash, idle_cpu);
    free(t);
    free(out);
    return 0;
}

/* ------------------------------------------------------------------------------
 * Parent: every measurement in a child, then the table
 * ---------------------------------------------------------------------------- */

struct result {
    const char *impl;
    unsigned workers;
    size_t n;
    unsigned k;
    uint64_t median_ns;
    size_t reps;
    uint64_t hash;
    long long idle_cpu_ns;
};

static int run_child(const char *self, const struct collect_impl *im, unsigned workers,
                     size_t n, unsigned k, double min_time, uint64_t ref, int idle,
                     struct result *res)
{
    char a_workers[16], a_n[32], a_k[16], a_min[32], a_ref[32], a_idle[4];
    snprintf(a_workers, sizeof(a_workers), "%u", workers);
    snprintf(a_n, sizeof(a_n), "%zu", n);
    snprintf(a_k, sizeof(a_k), "%u", k);
    snprintf(a_min, sizeof(a_min), "%g", min_time);
    snprintf(a_ref, sizeof(a_ref), "%" PRIx64, ref);
    snprintf(a_idle, sizeof(a_idle), "%d", idle);
    char *args[] = {(char *)self, "--child", (char *)im->name, a_workers, a_n, a_k,
                    a_min, a_ref, a_idle, NULL};
    char buf[256];
    int err = bench_run_capture(self, args, buf, sizeof(buf));
    if (err)
        return err;
    *res = (struct result){.impl = im->name, .workers = workers, .n = n, .k = k};
    if (sscanf(buf, "%" SCNu64 " %zu %" SCNx64 " %lld", &res->median_ns, &res->reps,
               &res->hash, &res->idle_cpu_ns) != 4)
        return -EPROTO;
    return 0;
}

static void fmt_time(char *s, size_t len, uint64_t ns)
{
    if (ns < 1000)
        snprintf(s, len, "%" PRIu64 " ns", ns);
    else if (ns < 1000000)
        snprintf(s, len, "%.1f us", (double)ns / 1e3);
    else if (ns < 1000000000)
        snprintf(s, len, "%.2f ms", (double)ns / 1e6);
    else
        snprintf(s, len, "%.3f s", (double)ns / 1e9);
}

static void usage(void)
{
    fprintf(stderr, "usage: collect [--min-time SECONDS] [--impl NAME]...\n"
                    "  NAME: serial weft_collect weft_spawn"
#ifdef HAVE_TBB
                    " tbb"
#endif
#ifdef HAVE_OMP
                    " omp_static omp_dynamic64"
#endif
                    " (serial always runs)\n");
}

int main(int argc, char **argv)
{
    if (argc == 9 && strcmp(argv[1], "--child") == 0)
        return child_main(argv + 2);

    double min_time = 0.2;
    bool want[NIMPLS];
    bool filter = false;
    for (size_t i = 0; i < NIMPLS; i++)
        want[i] = true;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--min-time") == 0 && a + 1 < argc) {
            min_time = strtod(argv[++a], NULL);
        } else if (strcmp(argv[a], "--impl") == 0 && a + 1 < argc) {
            const struct collect_impl *im = find_impl(argv[++a]);
            if (!im) {
                usage();
                return 2;
            }
            if (!filter)
                for (size_t i = 1; i < NIMPLS; i++)
                    want[i] = false;
            filter = true;
            for (size_t i = 0; i < NIMPLS; i++)
                if (impls[i] == im)
                    want[i] = true;
        } else {
            usage();
            return 2;
        }
    }

    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) {
        perror("collect: /proc/self/exe");
        return 1;
    }
    self[len] = 0;

    static const size_t ns[] = {10000, 1000000};
    static const unsigned ks[] = {16, 1024};
    static const unsigned workers[] = {1, 2};
    enum { NCASES = 4 };
    struct result *res = calloc(NCASES * NIMPLS * 2, sizeof(*res));
    bool *have = calloc(NCASES * NIMPLS * 2, sizeof(*have));
    if (!res || !have)
        return 1;
#define AT(c, i, w) (((c) * NIMPLS + (i)) * 2 + (w))

    printf("# collect: %u CPUs online; ratio_vs_serial = serial median / median "
           "(> 1: faster)\n", (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    for (int c = 0; c < NCASES; c++) {
        size_t n = ns[c / 2];
        unsigned k = ks[c % 2];
        uint64_t serial_ns = 0, ref = 0;
        for (size_t i = 0; i < NIMPLS; i++) {
            if (!want[i])
                continue;
            for (int w = 0; w < 2; w++) {
                if (impls[i] == &impl_serial && w > 0)
                    continue;
                int idle = impls[i] != &impl_serial && n == 10000 && k == 16 && workers[w] == 2;
                struct result *r = &res[AT(c, i, w)];
                int err = run_child(self, impls[i], workers[w], n, k, min_time, ref, idle, r);
                if (err) {
                    fprintf(stderr, "collect: impl=%s workers=%u n=%zu k=%u failed (%s); "
                                    "see its message above\n",
                            impls[i]->name, workers[w], n, k, strerror(-err));
                    return 1;
                }
                if (impls[i] == &impl_serial) {
                    serial_ns = r->median_ns;
                    ref = r->hash;
                } else if (r->hash != ref) {
                    fprintf(stderr, "collect: impl=%s workers=%u n=%zu k=%u: output differs "
                                    "from the serial loop's\n", impls[i]->name, workers[w], n, k);
                    return 1;
                }
                have[AT(c, i, w)] = true;
                printf("RESULT collect impl=%s workers=%u n=%zu k=%u median_ns=%" PRIu64
                       " ratio_vs_serial=%.3f reps=%zu\n",
                       r->impl, r->workers, n, k, r->median_ns,
                       (double)serial_ns / (double)r->median_ns, r->reps);
                if (r->idle_cpu_ns >= 0)
                    printf("RESULT collect-idle impl=%s workers=%u n=%zu k=%u "
                           "idle_ns=1000000000 cpu_ns=%lld\n",
                           r->impl, r->workers, n, k, r->idle_cpu_ns);
                fflush(stdout);
            }
        }
    }

    /* The table: one row per (variant, workers), one column per (n, k). */
    printf("\ncollect: median time per call, and speedup vs the serial loop\n");
    printf("%-14s %-3s", "variant", "w");
    for (int c = 0; c < NCASES; c++) {
        char h[40];
        snprintf(h, sizeof(h), "n=%zu k=%u", ns[c / 2], ks[c % 2]);
        printf(" | %-20s", h);
    }
    printf("\n");
    for (size_t i = 0; i < NIMPLS; i++) {
        for (int w = 0; w < 2; w++) {
            if (!have[AT(0, i, w)])
                continue;
            printf("%-14s %-3u", impls[i]->name, workers[w]);
            for (int c = 0; c < NCASES; c++) {
                const struct result *r = &res[AT(c, i, w)];
                const struct result *s = &res[AT(c, 0, 0)];
                char t[24];
                fmt_time(t, sizeof(t), r->median_ns);
                printf(" | %10s %7.2fx ", t, (double)s->median_ns / (double)r->median_ns);
            }
            printf("\n");
        }
    }
    printf("\nCPU time used in one idle second after the runs (n=10000 k=16, 2 workers):\n");
    for (size_t i = 0; i < NIMPLS; i++) {
        const struct result *r = &res[AT(0, i, 1)];
        if (have[AT(0, i, 1)] && r->idle_cpu_ns >= 0)
            printf("  %-14s %8.3f ms\n", r->impl, (double)r->idle_cpu_ns / 1e6);
    }
    free(res);
    free(have);
    return 0;
}
