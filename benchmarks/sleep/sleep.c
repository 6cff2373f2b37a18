/* SPDX-License-Identifier: MIT */
/*
 * sleep: what it costs a task to suspend and be resumed, and what an idle pool of
 * sleeping tasks costs.
 *
 * Suspension cost. A task (weft_run) opens a scope (weft_scope_run) and spawns
 * --tasks tasks into it (default 100 000; weft_spawn, so they go on the worker's own
 * deque), each of which does one of:
 *   empty    nothing (returns 0): the cost of a task, to subtract;
 *   sleep0   weft_sleep(0): submit a zero timeout, suspend, resume on completion;
 *   yield    weft_yield(): suspend and be requeued at once.
 * On pools of 1 and 2 workers, with io_uring (flags 0) and with the blocking
 * backend (WEFT_POOL_NO_URING). Each pool first runs every op once, untimed, with
 * min(tasks, 10 000) tasks (stacks and frames allocated); then rounds of the three
 * ops, in that order, until an op has --reps timed runs (default 7) or its runs add
 * up to --max-time seconds (default 2; one run at least): a pool whose tasks block
 * their worker in nanosleep (~50 us each, timer slack) makes one run of 100 000
 * sleeps take seconds, and the benchmark must still end in well under a minute.
 * Reported per op: the median run divided by the task count (ns per task, which for
 * sleep0 and yield is ns per suspend+resume including the task's own cost) and the
 * same minus the empty task's (the suspension alone). DESIGN.md's figure to reach:
 * under 100 ns per suspend+resume.
 *
 * Idle CPU. On 2 workers, per backend: the main thread opens a scope (from outside
 * the pool) and spawns --idle-tasks tasks (default 1 000) that each call
 * weft_sleep(2 s); once all of them have entered the call (or 0.5 s has passed), the
 * process's CPU time (getrusage RUSAGE_SELF, user + sys) is measured over 1 s of
 * wall time. The scope is then cancelled so the sleepers need not run out their two
 * seconds (in-flight sleeps return -ECANCELED). Reported: CPU ms per wall second,
 * and how many tasks were really asleep: while weft_sleep blocks its worker, only
 * as many as there are workers (or blocking threads) get that far.
 *
 * Usage: sleep [--tasks N] [--reps N] [--max-time S] [--idle-tasks N] [--no-idle]
 * Output: one line per result,
 *   RESULT sleep op=sleep0 backend=uring workers=2 tasks=100000 median_ns=...
 *          ns_per_task=... ns_minus_empty=... reps=...
 *   RESULT sleep-idle backend=uring workers=2 tasks=1000 asleep=1000 wall_ns=...
 *          cpu_ns=... cpu_ms_per_s=...
 * then a table, the target's verdict and the idle lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------------------
 * Suspension cost
 * ---------------------------------------------------------------------------- */

static int task_empty(void *arg)
{
    (void)arg;
    return 0;
}

static int task_sleep0(void *arg)
{
    (void)arg;
    return weft_sleep(0);
}

static int task_yield(void *arg)
{
    (void)arg;
    return weft_yield();
}

enum { OP_EMPTY, OP_SLEEP0, OP_YIELD, NOPS };
static const char *const op_names[NOPS] = {"empty", "sleep0", "yield"};
static const weft_fn op_fns[NOPS] = {task_empty, task_sleep0, task_yield};

struct spawn_ctx {
    weft_fn fn;
    size_t n;
};

static int spawn_body(weft_scope *s, void *arg)
{
    const struct spawn_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        int err = weft_spawn(s, c->fn, NULL);
        if (err)
            return err;
    }
    return 0;
}

static int spawn_top(void *arg)
{
    /* Inside a task, as a program's own code would be: spawns go to this worker's
     * deque, not through the injector. */
    return weft_scope_run(NULL, spawn_body, arg);
}

/* Runs n tasks of op on pool; returns the wall time in ns, or 0 after an error. */
static uint64_t run_op(weft_pool *pool, int op, size_t n, const char *backend,
                       unsigned workers)
{
    struct spawn_ctx c = {op_fns[op], n};
    uint64_t t0 = bench_now_ns();
    int err = weft_run(pool, spawn_top, &c);
    uint64_t t = bench_now_ns() - t0;
    if (err) {
        fprintf(stderr, "sleep: op=%s backend=%s workers=%u tasks=%zu: %s\n", op_names[op],
                backend, workers, n, strerror(-err));
        return 0;
    }
    return t ? t : 1;
}

struct row {
    const char *backend;
    unsigned workers;
    double per_task[NOPS]; /* median run / n, ns */
    int reps[NOPS];
};

static int measure_pool(struct row *row, unsigned flags, size_t n, int reps,
                        double max_time)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = row->workers, .flags = flags};
    int err = weft_pool_create(&pool, &o);
    if (err) {
        fprintf(stderr, "sleep: pool of %u workers, backend %s: %s\n", row->workers,
                row->backend, strerror(-err));
        return -1;
    }
    size_t warm = n < 10000 ? n : 10000;
    for (int op = 0; op < NOPS; op++)
        if (!run_op(pool, op, warm, row->backend, row->workers))
            return -1;

    double *t[NOPS];
    double total[NOPS] = {0};
    for (int op = 0; op < NOPS; op++) {
        if (!(t[op] = calloc((size_t)reps, sizeof(double))))
            return -1;
        row->reps[op] = 0;
    }
    for (int r = 0; r < reps; r++) {
        bool any = false;
        for (int op = 0; op < NOPS; op++) {
            if (row->reps[op] > 0 && total[op] >= max_time * 1e9)
                continue;
            uint64_t ns = run_op(pool, op, n, row->backend, row->workers);
            if (!ns)
                return -1;
            t[op][row->reps[op]++] = (double)ns;
            total[op] += (double)ns;
            any = true;
        }
        if (!any)
            break;
    }
    weft_pool_destroy(pool);
    for (int op = 0; op < NOPS; op++) {
        row->per_task[op] = bench_median(t[op], (size_t)row->reps[op]) / (double)n;
        free(t[op]);
    }
    return 0;
}

/* ------------------------------------------------------------------------------
 * Idle CPU with many sleeping tasks
 * ---------------------------------------------------------------------------- */

#define IDLE_SLEEP_NS 2000000000u

static _Atomic(size_t) asleep;

static int task_sleep_long(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&asleep, 1, memory_order_relaxed);
    return weft_sleep(IDLE_SLEEP_NS);
}

struct idle_ctx {
    size_t n;
    size_t asleep;
    uint64_t wall_ns, cpu_ns;
};

static int idle_body(weft_scope *s, void *arg)
{
    struct idle_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        int err = weft_spawn(s, task_sleep_long, NULL);
        if (err)
            return err;
    }
    /* This body runs on the main thread, outside the pool: its own sleeps cost no
     * CPU, so the window below sees only what the pool uses. */
    uint64_t deadline = bench_now_ns() + 500000000u;
    while (atomic_load_explicit(&asleep, memory_order_relaxed) < c->n &&
           bench_now_ns() < deadline)
        sleep_ns(1000000);
    c->asleep = atomic_load_explicit(&asleep, memory_order_relaxed);
    uint64_t c0 = cpu_ns(), t0 = bench_now_ns();
    sleep_ns(1000000000u);
    c->cpu_ns = cpu_ns() - c0;
    c->wall_ns = bench_now_ns() - t0;
    weft_scope_cancel(s, -ECANCELED);
    return 0;
}

static int measure_idle(const char *backend, unsigned flags, unsigned workers, size_t n)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = workers, .flags = flags};
    int err = weft_pool_create(&pool, &o);
    if (err) {
        fprintf(stderr, "sleep: pool of %u workers, backend %s: %s\n", workers, backend,
                strerror(-err));
        return -1;
    }
    atomic_store_explicit(&asleep, 0, memory_order_relaxed);
    struct idle_ctx c = {.n = n};
    err = weft_scope_run(pool, idle_body, &c);
    weft_pool_destroy(pool);
    if (err && err != -ECANCELED) {
        fprintf(stderr, "sleep: idle, backend %s: %s\n", backend, strerror(-err));
        return -1;
    }
    double ms_per_s = (double)c.cpu_ns / 1e6 / ((double)c.wall_ns / 1e9);
    printf("RESULT sleep-idle backend=%s workers=%u tasks=%zu asleep=%zu wall_ns=%" PRIu64
           " cpu_ns=%" PRIu64 " cpu_ms_per_s=%.3f\n",
           backend, workers, n, c.asleep, c.wall_ns, c.cpu_ns, ms_per_s);
    printf("idle CPU with %zu sleeping tasks: %.3f ms per second (backend %s, %u workers; "
           "%zu of %zu tasks asleep)\n",
           n, ms_per_s, backend, workers, c.asleep, n);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: sleep [--tasks N] [--reps N] [--max-time SECONDS] "
                    "[--idle-tasks N] [--no-idle]\n");
}

int main(int argc, char **argv)
{
    size_t n = 100000, idle_n = 1000;
    int reps = 7;
    double max_time = 2.0;
    bool idle = true;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--tasks") == 0 && a + 1 < argc) {
            n = strtoull(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) {
            reps = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--max-time") == 0 && a + 1 < argc) {
            max_time = strtod(argv[++a], NULL);
        } else if (strcmp(argv[a], "--idle-tasks") == 0 && a + 1 < argc) {
            idle_n = strtoull(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--no-idle") == 0) {
            idle = false;
        } else {
            usage();
            return 2;
        }
    }
    if (n == 0 || reps < 1 || idle_n == 0) {
        usage();
        return 2;
    }

    static const struct {
        const char *name;
        unsigned flags;
    } backends[] = {{"uring", 0}, {"blocking", WEFT_POOL_NO_URING}};
    static const unsigned workers[] = {1, 2};
    struct row rows[4];
    int nrows = 0;

    printf("# sleep: %zu tasks per run; %ld CPUs online; ns_per_task = median run / "
           "tasks; ns_minus_empty = the same minus the empty task's\n",
           n, sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    for (int b = 0; b < 2; b++) {
        for (int w = 0; w < 2; w++) {
            struct row *r = &rows[nrows++];
            *r = (struct row){.backend = backends[b].name, .workers = workers[w]};
            if (measure_pool(r, backends[b].flags, n, reps, max_time))
                return 1;
            for (int op = 0; op < NOPS; op++) {
                printf("RESULT sleep op=%s backend=%s workers=%u tasks=%zu median_ns=%.0f "
                       "ns_per_task=%.1f", op_names[op], r->backend, r->workers, n,
                       r->per_task[op] * (double)n, r->per_task[op]);
                if (op != OP_EMPTY)
                    printf(" ns_minus_empty=%.1f", r->per_task[op] - r->per_task[OP_EMPTY]);
                printf(" reps=%d\n", r->reps[op]);
            }
            fflush(stdout);
        }
    }

    printf("\nsleep: %zu tasks spawned into a scope, each doing one op; ns per task "
           "(median run / tasks)\nand ns per suspend+resume with the empty task's cost "
           "subtracted\n", n);
    printf("%-9s %-3s %12s | %12s %12s | %12s %12s | %s\n", "backend", "w", "empty",
           "sleep(0)", "- empty", "yield", "- empty", "reps e/s/y");
    for (int i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        double e = r->per_task[OP_EMPTY];
        printf("%-9s %-3u %12.1f | %12.1f %12.1f | %12.1f %12.1f | %d/%d/%d\n", r->backend,
               r->workers, e, r->per_task[OP_SLEEP0], r->per_task[OP_SLEEP0] - e,
               r->per_task[OP_YIELD], r->per_task[OP_YIELD] - e, r->reps[OP_EMPTY],
               r->reps[OP_SLEEP0], r->reps[OP_YIELD]);
    }
    printf("\ntarget: under 100 ns per suspend+resume (the '- empty' columns, io_uring):\n");
    for (int i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        if (strcmp(r->backend, "uring") != 0)
            continue;
        for (int op = OP_SLEEP0; op < NOPS; op++) {
            double v = r->per_task[op] - r->per_task[OP_EMPTY];
            printf("  %-8s %u worker%s %10.1f ns  %s\n", op == OP_SLEEP0 ? "sleep(0)" : "yield",
                   r->workers, r->workers == 1 ? " " : "s", v, v < 100 ? "met" : "missed");
        }
    }
    printf("\n");
    fflush(stdout);

    if (idle)
        for (int b = 0; b < 2; b++)
            if (measure_idle(backends[b].name, backends[b].flags, 2, idle_n))
                return 1;
    return 0;
}
