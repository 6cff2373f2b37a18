/* SPDX-License-Identifier: MIT */
/*
 * Tokio's rt_multi_threaded benchmarks (tokio/benches/rt_multi_threaded.rs) ported
 * to weft with the same parameters, beside Tokio's own (rust/, run through
 * benchmarks/tokio/run) in the same run, on 1 and 2 workers.
 *
 * Tokio's block_on(async { ... }) becomes weft_run(pool, fn): the body runs as a
 * task of the pool, so its spawns are local (Tokio's block_on runs the future on the
 * calling thread); rt.spawn / handle.spawn from the main thread becomes a
 * weft_scope_run(pool, ...) entered from the main thread, whose spawns go through
 * the pool's injector, and the scope's end stands for awaiting the JoinHandles or
 * the mpsc message Tokio waits for. Every task is one weft_spawn_copy.
 *
 *   spawn_many_local        inside a task: 10 000 spawns; each task decrements a
 *                           shared counter (Tokio's signals a channel at zero)
 *   spawn_many_remote_idle  from the main thread: 10 000 spawns of empty tasks,
 *                           then wait for all
 *   spawn_many_remote_busy1 the same while 2 x workers tasks loop on
 *                           weft_yield() + a 10 us stall (sched_yield loop)
 *   spawn_many_remote_busy2 1 000 remote spawns while `workers` chains of tasks
 *                           stall 10 us and spawn their successor
 *   yield_many              from the main thread: 200 tasks, each weft_yield()s
 *                           1 000 times
 *   chained_spawn           inside a task: a chain of 1 000 tasks, each spawning
 *                           the next
 * Tokio's ping_pong is not ported: weft has no channel or event API yet.
 *
 * Each (bench, impl, workers) runs in a child process of its own: one untimed
 * warm-up iteration, then --reps timed ones (default 11); the median is reported.
 * Every weft iteration is checked (each task marks its slot, counters reach zero,
 * the chain reaches its end); a failure exits with status 1.
 *
 * Usage: tokio-weft [--reps N] [--bench NAME]... [--tiny] [--timeout S] [--tokio BIN]
 *   --tiny       divide the task counts by 10 (a check that everything runs)
 *   --tokio BIN  also run Tokio's versions (BIN: rust/'s weft-tokio-bench, which
 *                benchmarks/tokio/run builds) and print ratios
 *   --timeout S  end a weft measurement whose iteration takes over S seconds (10):
 *                it is reported status=failed, the run goes on, the exit status is 1
 * Output: RESULT tokio impl=weft|tokio bench=NAME workers=W tasks=N median_ns=...
 *   reps=R, then a table with weft/tokio time ratios and 2-worker speedups.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

#define STALL_NS 10000

enum bench {
    SPAWN_MANY_LOCAL,
    SPAWN_MANY_REMOTE_IDLE,
    SPAWN_MANY_REMOTE_BUSY1,
    SPAWN_MANY_REMOTE_BUSY2,
    YIELD_MANY,
    CHAINED_SPAWN,
    NBENCH
};
static const char *const bench_name[NBENCH] = {
    "spawn_many_local", "spawn_many_remote_idle", "spawn_many_remote_busy1",
    "spawn_many_remote_busy2", "yield_many", "chained_spawn",
};

struct params {
    size_t num_spawn;   /* 10 000 (busy2: a tenth) */
    size_t num_yield;   /* 1 000 per task */
    size_t yield_tasks; /* 200 */
    size_t chain;       /* 1 000 */
};

static void stall(void)
{
    uint64_t t0 = bench_now_ns();
    while (bench_now_ns() - t0 < STALL_NS)
        sched_yield();
}

/* ------------------------------------------------------------------------------
 * The ports. Each iteration returns 0 if it ran correctly.
 * ---------------------------------------------------------------------------- */

struct ctx {
    weft_pool *pool;
    struct params p;
    unsigned workers;
    _Atomic(size_t) rem;       /* spawn_many_local */
    unsigned char *marks;      /* remote spawns and yield_many: one per task */
    _Atomic(int) chain_done;   /* chained_spawn */
    _Atomic(bool) busy;        /* busy1, busy2: the background load runs */
    pthread_t busy_thread;
    int busy_err;
};

/* spawn_many_local */
struct local_arg {
    struct ctx *c;
};

static int local_task(void *p)
{
    const struct local_arg *a = p;
    /* Tokio's task sends on a channel when it is the last one; here the scope's
     * end is the signal, the decrement is kept as the tasks' work. */
    atomic_fetch_sub_explicit(&a->c->rem, 1, memory_order_relaxed);
    return 0;
}

static int local_body(weft_scope *s, void *p)
{
    struct ctx *c = p;
    for (size_t i = 0; i < c->p.num_spawn; i++) {
        struct local_arg a = {c};
        int err = weft_spawn_copy(s, local_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int local_top(void *p)
{
    return weft_scope_run(NULL, local_body, p);
}

static int iter_spawn_many_local(struct ctx *c)
{
    atomic_store(&c->rem, c->p.num_spawn);
    int err = weft_run(c->pool, local_top, c);
    return err ? err : atomic_load(&c->rem) == 0 ? 0 : -EPROTO;
}

/* spawn_many_remote_*: empty tasks spawned from the main thread. Each marks its
 * own byte so that the iteration can be checked without a shared counter. */
struct remote_arg {
    unsigned char *mark;
};

static int remote_task(void *p)
{
    const struct remote_arg *a = p;
    *a->mark = 1;
    return 0;
}

struct remote_ctx {
    unsigned char *marks;
    size_t n;
};

static int remote_body(weft_scope *s, void *p)
{
    const struct remote_ctx *r = p;
    for (size_t i = 0; i < r->n; i++) {
        struct remote_arg a = {&r->marks[i]};
        int err = weft_spawn_copy(s, remote_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int check_marks(unsigned char *marks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (marks[i] != 1)
            return -EPROTO;
    return 0;
}

static int iter_remote(struct ctx *c, size_t n)
{
    memset(c->marks, 0, n);
    struct remote_ctx r = {c->marks, n};
    int err = weft_scope_run(c->pool, remote_body, &r);
    return err ? err : check_marks(c->marks, n);
}

/* The busy loads: a thread of ours holds a scope (entered from outside the pool,
 * as Tokio's rt.spawn from the main thread) until the flag drops. */
static int busy1_task(void *p)
{
    struct ctx *c = *(struct ctx *const *)p;
    while (atomic_load_explicit(&c->busy, memory_order_relaxed)) {
        int err = weft_yield();
        if (err)
            return err;
        stall();
    }
    return 0;
}

struct chain_busy_arg {
    struct ctx *c;
    weft_scope *s;
};

static int busy2_task(void *p)
{
    const struct chain_busy_arg *a = p;
    if (!atomic_load_explicit(&a->c->busy, memory_order_relaxed))
        return 0;
    stall();
    return weft_spawn_copy(a->s, busy2_task, a, sizeof(*a));
}

static int busy1_body(weft_scope *s, void *p)
{
    struct ctx *c = p;
    for (unsigned i = 0; i < 2 * c->workers; i++) {
        int err = weft_spawn_copy(s, busy1_task, &c, sizeof(c));
        if (err)
            return err;
    }
    return 0;
}

static int busy2_body(weft_scope *s, void *p)
{
    struct ctx *c = p;
    for (unsigned i = 0; i < c->workers; i++) {
        struct chain_busy_arg a = {c, s};
        int err = weft_spawn_copy(s, busy2_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static void *busy1_thread(void *p)
{
    struct ctx *c = p;
    c->busy_err = weft_scope_run(c->pool, busy1_body, c);
    return NULL;
}

static void *busy2_thread(void *p)
{
    struct ctx *c = p;
    c->busy_err = weft_scope_run(c->pool, busy2_body, c);
    return NULL;
}

/* yield_many */
struct yield_arg {
    unsigned char *mark;
    size_t yields;
};

static int yield_task(void *p)
{
    const struct yield_arg *a = p;
    for (size_t i = 0; i < a->yields; i++) {
        int err = weft_yield();
        if (err)
            return err;
    }
    *a->mark = 1;
    return 0;
}

static int yield_body(weft_scope *s, void *p)
{
    struct ctx *c = p;
    for (size_t i = 0; i < c->p.yield_tasks; i++) {
        struct yield_arg a = {&c->marks[i], c->p.num_yield};
        int err = weft_spawn_copy(s, yield_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int iter_yield_many(struct ctx *c)
{
    memset(c->marks, 0, c->p.yield_tasks);
    int err = weft_scope_run(c->pool, yield_body, c);
    return err ? err : check_marks(c->marks, c->p.yield_tasks);
}

/* chained_spawn */
struct chain_arg {
    struct ctx *c;
    weft_scope *s;
    size_t n;
};

static int chain_task(void *p)
{
    const struct chain_arg *a = p;
    if (a->n == 0) {
        atomic_store_explicit(&a->c->chain_done, 1, memory_order_relaxed);
        return 0;
    }
    struct chain_arg next = {a->c, a->s, a->n - 1};
    return weft_spawn_copy(a->s, chain_task, &next, sizeof(next));
}

static int chain_body(weft_scope *s, void *p)
{
    struct ctx *c = p;
    struct chain_arg a = {c, s, c->p.chain};
    return weft_spawn_copy(s, chain_task, &a, sizeof(a));
}

static int chain_top(void *p)
{
    return weft_scope_run(NULL, chain_body, p);
}

static int iter_chained_spawn(struct ctx *c)
{
    atomic_store(&c->chain_done, 0);
    int err = weft_run(c->pool, chain_top, c);
    return err ? err : atomic_load(&c->chain_done) == 1 ? 0 : -EPROTO;
}

static size_t bench_tasks(enum bench b, const struct params *p)
{
    switch (b) {
    case SPAWN_MANY_REMOTE_BUSY2:
        return p->num_spawn / 10;
    case YIELD_MANY:
        return p->yield_tasks * p->num_yield;
    case CHAINED_SPAWN:
        return p->chain;
    default:
        return p->num_spawn;
    }
}

static int iterate(enum bench b, struct ctx *c)
{
    switch (b) {
    case SPAWN_MANY_LOCAL:
        return iter_spawn_many_local(c);
    case SPAWN_MANY_REMOTE_IDLE:
    case SPAWN_MANY_REMOTE_BUSY1:
        return iter_remote(c, c->p.num_spawn);
    case SPAWN_MANY_REMOTE_BUSY2:
        return iter_remote(c, c->p.num_spawn / 10);
    case YIELD_MANY:
        return iter_yield_many(c);
    case CHAINED_SPAWN:
        return iter_chained_spawn(c);
    default:
        return -EINVAL;
    }
}

/* ------------------------------------------------------------------------------
 * One measurement per child process
 * ---------------------------------------------------------------------------- */

struct job {
    enum bench b;
    unsigned workers;
    int reps;
    unsigned timeout; /* seconds per iteration */
    struct params p;
};

/* The watchdog: an iteration that takes longer than --timeout seconds ends its
 * child (a task that never runs, e.g. injected work starved by tasks that keep
 * yielding or spawning locally, would otherwise hang the benchmark). */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "tokio-weft: an iteration timed out (some task never ran?)\n";
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
        _exit(3);
    _exit(3);
}

static void measure_weft(void *arg, double *out, int max)
{
    const struct job *j = arg;
    struct ctx *c = calloc(1, sizeof(*c));
    weft_pool_options o = {.threads = j->workers};
    if (!c || weft_pool_create(&c->pool, &o) != 0)
        exit(1);
    c->p = j->p;
    c->workers = j->workers;
    c->marks = calloc(j->p.num_spawn + j->p.yield_tasks + 1, 1);
    if (!c->marks)
        exit(1);
    if (j->b == SPAWN_MANY_REMOTE_BUSY1 || j->b == SPAWN_MANY_REMOTE_BUSY2) {
        atomic_store(&c->busy, true);
        if (pthread_create(&c->busy_thread, NULL,
                           j->b == SPAWN_MANY_REMOTE_BUSY1 ? busy1_thread : busy2_thread, c))
            exit(1);
    }
    signal(SIGALRM, on_alarm);
    for (int k = -1; k < j->reps && k < max; k++) { /* k = -1: the warm-up */
        alarm(j->timeout);
        uint64_t t0 = bench_now_ns();
        int err = iterate(j->b, c);
        uint64_t t = bench_now_ns() - t0;
        alarm(0);
        if (err) {
            fprintf(stderr, "tokio-weft: %s on %u workers, iteration %d: %s\n",
                    bench_name[j->b], j->workers, k, strerror(-err));
            exit(1);
        }
        if (k >= 0)
            out[k] = (double)t;
    }
    if (j->b == SPAWN_MANY_REMOTE_BUSY1 || j->b == SPAWN_MANY_REMOTE_BUSY2) {
        atomic_store(&c->busy, false);
        pthread_join(c->busy_thread, NULL);
        if (c->busy_err) {
            fprintf(stderr, "tokio-weft: %s: the busy load failed: %s\n", bench_name[j->b],
                    strerror(-c->busy_err));
            exit(1);
        }
    }
    weft_pool_destroy(c->pool);
    free(c->marks);
    free(c);
}

/* Tokio's side: BIN --bench NAME --workers W --reps R [--tiny], one RESULT line. */
static int run_tokio(const char *bin, const struct job *j, int tiny, double *median,
                     int *reps)
{
    char w[16], r[16], t[16];
    snprintf(w, sizeof(w), "%u", j->workers);
    snprintf(r, sizeof(r), "%d", j->reps);
    snprintf(t, sizeof(t), "%u", j->timeout);
    char *argv[] = {(char *)bin, "--bench", (char *)bench_name[j->b], "--workers", w,
                    "--reps", r, "--timeout", t, tiny ? "--tiny" : NULL, NULL};
    char buf[512];
    int err = bench_run_capture(bin, argv, buf, sizeof(buf));
    if (err)
        return err;
    const char *m = strstr(buf, "median_ns="), *rr = strstr(buf, "reps=");
    if (!m || !rr)
        return -EPROTO;
    *median = strtod(m + 10, NULL);
    *reps = atoi(rr + 5);
    return 0;
}

static void fmt_time(char *s, size_t len, double ns)
{
    if (ns < 1e6)
        snprintf(s, len, "%.1f us", ns / 1e3);
    else
        snprintf(s, len, "%.2f ms", ns / 1e6);
}

static void usage(void)
{
    fprintf(stderr, "usage: tokio-weft [--reps N] [--bench NAME]... [--tiny] [--timeout S] "
                    "[--tokio BIN]\n"
                    "  NAME:");
    for (int b = 0; b < NBENCH; b++)
        fprintf(stderr, " %s", bench_name[b]);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    int reps = 11, tiny = 0, failed = 0;
    unsigned timeout = 10;
    const char *tokio = NULL;
    bool want[NBENCH], filter = false;
    for (int b = 0; b < NBENCH; b++)
        want[b] = true;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) {
            reps = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--timeout") == 0 && a + 1 < argc) {
            timeout = (unsigned)atoi(argv[++a]);
        } else if (strcmp(argv[a], "--tiny") == 0) {
            tiny = 1;
        } else if (strcmp(argv[a], "--tokio") == 0 && a + 1 < argc) {
            tokio = argv[++a];
        } else if (strcmp(argv[a], "--bench") == 0 && a + 1 < argc) {
            const char *name = argv[++a];
            int found = -1;
            for (int b = 0; b < NBENCH; b++)
                if (strcmp(name, bench_name[b]) == 0)
                    found = b;
            if (found < 0) {
                usage();
                return 2;
            }
            if (!filter)
                for (int b = 0; b < NBENCH; b++)
                    want[b] = false;
            filter = true;
            want[found] = true;
        } else {
            usage();
            return 2;
        }
    }
    if (reps < 1 || reps > 1000) {
        usage();
        return 2;
    }
    if (tokio && access(tokio, X_OK) != 0) {
        fprintf(stderr, "tokio-weft: %s: not executable; Tokio's side skipped\n", tokio);
        tokio = NULL;
    }
    int div = tiny ? 10 : 1;
    struct params p = {10000 / div, 1000 / div, 200 / div, 1000 / div};

    double med[NBENCH][2][3] = {{{0}}}; /* [bench][weft, tokio][workers] */
    printf("# tokio: Tokio's rt_multi_threaded benches ported; %s\n",
           tokio ? "Tokio 1.24 in the same run" : "Tokio's side not run (no --tokio BIN)");
    for (int b = 0; b < NBENCH; b++) {
        if (!want[b])
            continue;
        for (unsigned w = 1; w <= 2; w++) {
            struct job j = {(enum bench)b, w, reps, timeout ? timeout : 10, p};
            double v[1000];
            int got = bench_isolated(measure_weft, &j, v, reps);
            if (got <= 0) {
                /* Reported, and the run goes on: Tokio's figure is still wanted. */
                fprintf(stderr, "tokio-weft: weft's %s on %u workers failed\n",
                        bench_name[b], w);
                printf("RESULT tokio impl=weft bench=%s workers=%u tasks=%zu status=failed\n",
                       bench_name[b], w, bench_tasks((enum bench)b, &p));
                failed = 1;
            } else {
                med[b][0][w] = bench_median(v, (size_t)got);
                printf("RESULT tokio impl=weft bench=%s workers=%u tasks=%zu median_ns=%.0f "
                       "reps=%d\n", bench_name[b], w, bench_tasks((enum bench)b, &p),
                       med[b][0][w], got);
            }
            fflush(stdout);
            if (tokio) {
                int treps = 0;
                int err = run_tokio(tokio, &j, tiny, &med[b][1][w], &treps);
                if (err) {
                    /* Tokio failing (or timing out) is its result, not ours. */
                    fprintf(stderr, "tokio-weft: Tokio's %s on %u workers failed (%s)\n",
                            bench_name[b], w,
                            err == -ECHILD ? "it exited nonzero or timed out" : strerror(-err));
                    printf("RESULT tokio impl=tokio bench=%s workers=%u tasks=%zu "
                           "status=failed\n", bench_name[b], w, bench_tasks((enum bench)b, &p));
                    med[b][1][w] = 0;
                    fflush(stdout);
                    continue;
                }
                printf("RESULT tokio impl=tokio bench=%s workers=%u tasks=%zu "
                       "median_ns=%.0f reps=%d", bench_name[b], w,
                       bench_tasks((enum bench)b, &p), med[b][1][w], treps);
                if (med[b][0][w] > 0)
                    printf(" weft_vs_tokio=%.3f", med[b][0][w] / med[b][1][w]);
                printf("\n");
                fflush(stdout);
            }
        }
    }

    printf("\nTokio's rt_multi_threaded benches: median per iteration; weft/tokio = time "
           "ratio (< 1: weft faster); 2w = speedup of 2 workers over 1\n");
    printf("%-24s %2s %9s %11s %11s %11s %8s %8s %9s\n", "bench", "w", "tasks", "weft",
           "ns/task", "tokio", "ns/task", "weft/tk", "2w");
    for (int b = 0; b < NBENCH; b++) {
        if (!want[b])
            continue;
        size_t n = bench_tasks((enum bench)b, &p);
        for (unsigned w = 1; w <= 2; w++) {
            double mw = med[b][0][w], mt = med[b][1][w];
            char tw[24] = "FAILED", nw[16] = "-", tt[24], nt[16] = "-", r[16] = "-";
            snprintf(tt, sizeof(tt), "%s", tokio ? "FAILED" : "-");
            char sw[16] = "-", st[16] = "-", sp[40] = "";
            if (mw > 0) {
                fmt_time(tw, sizeof(tw), mw);
                snprintf(nw, sizeof(nw), "%.1f", mw / (double)n);
            }
            if (mt > 0) {
                fmt_time(tt, sizeof(tt), mt);
                snprintf(nt, sizeof(nt), "%.1f", mt / (double)n);
            }
            if (mw > 0 && mt > 0)
                snprintf(r, sizeof(r), "%.2fx", mw / mt);
            if (w == 2) {
                if (med[b][0][1] > 0 && mw > 0)
                    snprintf(sw, sizeof(sw), "%.2f", med[b][0][1] / mw);
                if (med[b][1][1] > 0 && mt > 0)
                    snprintf(st, sizeof(st), "%.2f", med[b][1][1] / mt);
                snprintf(sp, sizeof(sp), "%s/%s", sw, st);
            }
            printf("%-24s %2u %9zu %11s %11s %11s %8s %8s %9s\n", bench_name[b], w, n, tw,
                   nw, tt, nt, r, sp);
        }
    }
    printf("(2w: weft's, then Tokio's)\n");
    if (failed)
        fprintf(stderr, "tokio-weft: some weft runs FAILED (see above)\n");
    return failed;
}
