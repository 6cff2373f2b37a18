/* SPDX-License-Identifier: MIT */
/*
 * proc: child processes and deadlines.
 *
 * Children. --children N /bin/true children (default 1 000), each started with
 * weft_posix_spawnp and waited for with weft_waitpid by its own task (weft_spawn
 * into one scope) on 2 workers, per backend (io_uring, blocking); against the
 * baseline a build tool without weft has: a loop of posix_spawnp + blocking
 * waitpid on the main thread. Reported: the median of --reps runs, in us per child.
 *
 * Deadlines. --deadlines N scopes in turn (default 50), each with a 10 ms deadline
 * and one task that sleeps 10 s (idle: the workers wait) or that spins until its
 * scope is cancelled on every worker (busy). Reported: how late weft_scope_run
 * returns after the deadline, median and maximum, in us.
 *
 * Output: RESULT lines, then a short table.
 *   RESULT proc-children mode=weft backend=uring workers=2 children=1000 us_per_child=...
 *   RESULT proc-deadline load=idle backend=uring late_us_median=... late_us_max=...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "weft.h"
#include "../common/bench.h"

extern char **environ;
static char *const true_argv[] = {"/bin/true", NULL};

static int child_task(void *arg)
{
    (void)arg;
    pid_t pid;
    int st;
    int r = weft_posix_spawnp(&pid, true_argv[0], NULL, NULL, true_argv, environ);
    if (r)
        return r;
    r = weft_waitpid(pid, &st, 0);
    return r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int children_body(weft_scope *s, void *arg)
{
    int n = *(int *)arg;
    for (int i = 0; i < n; i++) {
        int r = weft_spawn(s, child_task, NULL);
        if (r)
            return r;
    }
    return 0;
}

static double run_loop(int n)
{
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        pid_t pid;
        int st;
        if (posix_spawnp(&pid, true_argv[0], NULL, NULL, true_argv, environ) != 0 ||
            waitpid(pid, &st, 0) != pid) {
            fprintf(stderr, "proc: spawn/wait failed\n");
            exit(1);
        }
    }
    return (double)(bench_now_ns() - t0) / n / 1000.0;
}

static double run_weft(weft_pool *p, int n)
{
    uint64_t t0 = bench_now_ns();
    if (weft_scope_run(p, children_body, &n) != 0) {
        fprintf(stderr, "proc: a child failed\n");
        exit(1);
    }
    return (double)(bench_now_ns() - t0) / n / 1000.0;
}

/* ---- deadlines ------------------------------------------------------------------ */

#define DEADLINE_NS (10ull * 1000 * 1000)

static int sleeper(void *arg)
{
    (void)arg;
    return weft_sleep(10ull * 1000 * 1000 * 1000);
}

static int spinner(void *arg)
{
    weft_scope *s = arg;
    while (!weft_scope_cancelled(s))
        ;
    return 0;
}

struct dl {
    bool busy;
    unsigned workers;
};

static int dl_body(weft_scope *s, void *arg)
{
    struct dl *d = arg;
    weft_scope_deadline(s, DEADLINE_NS);
    if (!d->busy)
        return weft_spawn(s, sleeper, NULL);
    for (unsigned i = 0; i < d->workers; i++) {
        int r = weft_spawn(s, spinner, s);
        if (r)
            return r;
    }
    return 0;
}

static void run_deadlines(weft_pool *p, const char *backend, int n, bool busy)
{
    double *late = calloc((size_t)n, sizeof(double));
    struct dl d = {busy, weft_pool_threads(p)};
    for (int i = 0; i < n; i++) {
        uint64_t t0 = bench_now_ns();
        int r = weft_scope_run(p, dl_body, &d);
        uint64_t dt = bench_now_ns() - t0;
        if (r != -ETIMEDOUT) {
            fprintf(stderr, "proc: deadline scope returned %d\n", r);
            exit(1);
        }
        late[i] = ((double)dt - (double)DEADLINE_NS) / 1000.0;
    }
    double mx = late[0];
    for (int i = 1; i < n; i++)
        mx = late[i] > mx ? late[i] : mx;
    double med = bench_median(late, (size_t)n);
    printf("RESULT proc-deadline load=%s backend=%s workers=%u deadline_ms=10 n=%d "
           "late_us_median=%.1f late_us_max=%.1f\n",
           busy ? "busy" : "idle", backend, d.workers, n, med, mx);
    free(late);
}

int main(int argc, char **argv)
{
    int children = 1000, reps = 5, deadlines = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--children") == 0)
            children = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0)
            reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--deadlines") == 0)
            deadlines = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: proc [--children N] [--reps N] [--deadlines N]\n");
            return 2;
        }
    }
    if (children < 1 || reps < 1 || deadlines < 1)
        return 2;
    double *v = calloc((size_t)reps, sizeof(double));
    for (int k = 0; k < reps; k++)
        v[k] = run_loop(children);
    double loop = bench_median(v, (size_t)reps);
    printf("RESULT proc-children mode=loop children=%d us_per_child=%.2f\n", children, loop);
    static const struct { const char *name; unsigned flags; } backends[] = {
        {"uring", 0}, {"blocking", WEFT_POOL_NO_URING}};
    double per[2] = {0, 0};
    for (int b = 0; b < 2; b++) {
        weft_pool *p;
        weft_pool_options o = {.threads = 2, .flags = backends[b].flags};
        if (weft_pool_create(&p, &o) != 0)
            return 1;
        run_weft(p, children < 50 ? children : 50); /* warm: stacks, frames */
        for (int k = 0; k < reps; k++)
            v[k] = run_weft(p, children);
        per[b] = bench_median(v, (size_t)reps);
        printf("RESULT proc-children mode=weft backend=%s workers=2 children=%d "
               "us_per_child=%.2f\n", backends[b].name, children, per[b]);
        run_deadlines(p, backends[b].name, deadlines, false);
        run_deadlines(p, backends[b].name, deadlines, true);
        weft_pool_destroy(p);
    }
    printf("\nchildren (/bin/true), us per child: loop %.1f | weft io_uring %.1f (%.2fx) | "
           "weft blocking %.1f (%.2fx)\n", loop, per[0], loop / per[0], per[1], loop / per[1]);
    free(v);
    return 0;
}
