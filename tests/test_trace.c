/* SPDX-License-Identifier: MIT */
/*
 * Observability: weft_worker_index, the worker hooks, per-worker statistics and the
 * trace files (lib/trace.c, lib/stats.c).
 *
 * Trace files are checked by tests/check_trace.py (python3): the JSON parses, slices
 * on one thread never overlap, every flow and every wait has both ends, plus what
 * each test expects (both workers busy, a flow, a label, a suspension, truncation).
 * The tests that need a steal force one without timing: the tasks involved wait
 * (bounded by a generous watchdog) until tasks have run on both workers, so the
 * idle worker must take one from the busy one.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checks.h"
#include "pool.h"

#ifndef WEFT_SOURCE_ROOT
#error "tests/meson.build defines WEFT_SOURCE_ROOT"
#endif
#ifndef WEFT_PYTHON
#define WEFT_PYTHON "python3"
#endif
#define CHECKER WEFT_SOURCE_ROOT "/tests/check_trace.py"
#define WEFT_TRACE_TOOL WEFT_SOURCE_ROOT "/tools/weft-trace"

/* Sanitizers slow the CPU, not the clock: the watchdog grows with them. */
#define WATCHDOG_S (30.0 * WEFT_TEST_SCALE_DIV)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool have_python(void)
{
    return system("'" WEFT_PYTHON "' -c 'import json, decimal, xml.etree.ElementTree' "
                  ">/dev/null 2>&1") == 0;
}

/* Run a shell command; its exit status (-1 if it did not exit). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void tmpdir(char *d, size_t cap)
{
    snprintf(d, cap, "%s/weft-trace-test.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(d), "mkdtemp: %s", strerror(errno));
}

static void rmdir_all(const char *d)
{
    sh("rm -rf '%s'", d);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static weft_pool *traced_pool(unsigned threads, const char *path)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads, .trace_path = path};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    return p;
}

/* ------------------------------------------------------------------------------
 * Tasks that wait until both workers have run one of them
 * ---------------------------------------------------------------------------- */

static _Atomic(unsigned) seen;

/* Mark this worker; wait until every worker in want has marked itself. */
static void meet(unsigned want)
{
    int me = weft_worker_index();
    TCHECK(me >= 0 && me < 32);
    if (me < 0 || me >= 32)
        return;
    atomic_fetch_or(&seen, 1u << me);
    double t0 = now_s();
    while ((atomic_load(&seen) & want) != want) {
        if (now_s() - t0 > WATCHDOG_S) {
            TCHECK(!"the other worker never ran a task");
            return;
        }
        sched_yield();
    }
}

/* ------------------------------------------------------------------------------
 * weft_worker_index
 * ---------------------------------------------------------------------------- */

struct idx_ctx {
    weft_pool *other;
    unsigned threads, other_threads;
    _Atomic(int) bad;
};

static int idx_other(void *p)
{
    struct idx_ctx *c = p;
    int i = weft_worker_index();
    if (i < 0 || (unsigned)i >= c->other_threads)
        atomic_store(&c->bad, __LINE__);
    return 0;
}

static int idx_task(void *p)
{
    struct idx_ctx *c = p;
    int i = weft_worker_index();
    if (i < 0 || (unsigned)i >= c->threads)
        atomic_store(&c->bad, __LINE__);
    /* Another pool's task, run from here: that pool's index range. */
    if (c->other && weft_run(c->other, idx_other, c) != 0)
        atomic_store(&c->bad, __LINE__);
    return 0;
}

static int idx_body(weft_scope *s, void *p)
{
    for (int k = 0; k < 64; k++)
        if (weft_spawn(s, idx_task, p) != 0)
            return -EIO;
    return 0;
}

static int idx_run(void *p)
{
    return weft_scope_run(NULL, idx_body, p);
}

Test(trace, worker_index)
{
    cr_assert_eq(weft_worker_index(), -1, "outside any worker");
    weft_pool *a = mkpool(3), *b = mkpool(2);
    struct idx_ctx c = {.other = b, .threads = 3, .other_threads = 2};
    cr_assert_eq(weft_run(a, idx_run, &c), 0);
    cr_assert_eq(atomic_load(&c.bad), 0, "bad index at line %d", atomic_load(&c.bad));
    cr_assert_eq(weft_worker_index(), -1, "still outside");
    weft_pool_destroy(a);
    weft_pool_destroy(b);
}

/* ------------------------------------------------------------------------------
 * Worker hooks
 * ---------------------------------------------------------------------------- */

#define HOOK_THREADS 4

struct hooks {
    _Atomic(int) starts[HOOK_THREADS], stops[HOOK_THREADS];
    _Atomic(int) nstart, nstop, bad;
    pthread_t thread[HOOK_THREADS];
    _Atomic(int) stopped_before_start;
};

static void on_start(unsigned index, void *arg)
{
    struct hooks *h = arg;
    if (index >= HOOK_THREADS || weft_worker_index() != (int)index) {
        atomic_store(&h->bad, __LINE__);
        return;
    }
    h->thread[index] = pthread_self(); /* read later on this thread, or after join */
    atomic_fetch_add(&h->starts[index], 1);
    atomic_fetch_add(&h->nstart, 1);
}

static void on_stop(unsigned index, void *arg)
{
    struct hooks *h = arg;
    if (index >= HOOK_THREADS || weft_worker_index() != (int)index) {
        atomic_store(&h->bad, __LINE__);
        return;
    }
    if (atomic_load(&h->starts[index]) != 1)
        atomic_store(&h->stopped_before_start, 1);
    if (!pthread_equal(h->thread[index], pthread_self()))
        atomic_store(&h->bad, __LINE__);
    atomic_fetch_add(&h->stops[index], 1);
    atomic_fetch_add(&h->nstop, 1);
}

static struct hooks *g_hooks;

static int hook_task(void *p)
{
    (void)p;
    int i = weft_worker_index();
    /* The start hook ran on this very thread before it took any work. */
    if (i < 0 || i >= HOOK_THREADS || atomic_load(&g_hooks->starts[i]) != 1 ||
        !pthread_equal(g_hooks->thread[i], pthread_self()))
        atomic_store(&g_hooks->bad, __LINE__);
    return 0;
}

static int hook_body(weft_scope *s, void *p)
{
    (void)p;
    for (int k = 0; k < 200; k++)
        if (weft_spawn(s, hook_task, NULL) != 0)
            return -EIO;
    return 0;
}

Test(trace, hooks_once_per_worker_on_its_thread)
{
    static struct hooks h;
    memset(&h, 0, sizeof(h));
    g_hooks = &h;
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = HOOK_THREADS, .on_worker_start = on_start,
                           .on_worker_stop = on_stop, .hook_arg = &h};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    cr_assert_eq(weft_scope_run(p, hook_body, NULL), 0);
    weft_pool_destroy(p);
    cr_assert_eq(atomic_load(&h.bad), 0, "hook check failed at line %d", atomic_load(&h.bad));
    cr_assert_eq(atomic_load(&h.nstart), HOOK_THREADS);
    cr_assert_eq(atomic_load(&h.nstop), HOOK_THREADS);
    for (int i = 0; i < HOOK_THREADS; i++) {
        cr_assert_eq(atomic_load(&h.starts[i]), 1, "start hook of worker %d", i);
        cr_assert_eq(atomic_load(&h.stops[i]), 1, "stop hook of worker %d", i);
        cr_assert(!pthread_equal(h.thread[i], pthread_self()), "ran on the worker's thread");
        for (int j = 0; j < i; j++)
            cr_assert(!pthread_equal(h.thread[i], h.thread[j]), "workers %d, %d: one thread", i, j);
    }
    cr_assert_eq(atomic_load(&h.stopped_before_start), 0);

    /* No hooks: nothing to call (the zero options of 0.1 programs). */
    weft_pool *q = mkpool(2);
    weft_pool_destroy(q);
}

/* ------------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------------- */

Test(trace, stats_worker_bad_input)
{
    weft_pool *p = mkpool(2);
    weft_stats st;
    cr_assert_eq(weft_pool_stats_worker(p, 0, NULL), -EINVAL);
    cr_assert_eq(weft_pool_stats_worker(p, 2, &st), -EINVAL);
    cr_assert_eq(weft_pool_stats_worker(p, UINT_MAX, &st), -EINVAL);
    cr_assert_eq(weft_pool_stats_worker(p, 1, &st), 0);
    if (!weft__default_pool_peek()) /* NULL outside a worker: the default pool */
        cr_assert_eq(weft_pool_stats_worker(NULL, 0, &st), -EINVAL);
    weft_pool_destroy(p);
}

static int nop(void *p)
{
    (void)p;
    return 0;
}

#define LAT_SPAWNS 4096

static int lat_body(weft_scope *s, void *p)
{
    (void)p;
    for (int k = 0; k < LAT_SPAWNS; k++)
        if (weft_spawn(s, nop, NULL) != 0)
            return -EIO;
    return 0;
}

static int lat_run(void *p)
{
    return weft_scope_run(NULL, lat_body, p);
}

Test(trace, stats_busy_idle_latency)
{
    weft_pool *p = mkpool(1);
    cr_assert_eq(weft_run(p, lat_run, NULL), 0);
    weft_stats w0, all;
    cr_assert_eq(weft_pool_stats_worker(p, 0, &w0), 0);
    weft_pool_stats(p, &all);
    cr_assert_eq(w0.spawns, LAT_SPAWNS);
    cr_assert_eq(all.spawns, LAT_SPAWNS);
    /* One spawn in 64 is sampled: 64 samples, all from worker 0. */
    cr_assert_gt(w0.latency_p50_ns, 0);
    cr_assert_geq(w0.latency_p99_ns, w0.latency_p50_ns);
    cr_assert_eq(all.latency_p50_ns, w0.latency_p50_ns, "one worker: the same samples");
    cr_assert_eq(all.latency_p99_ns, w0.latency_p99_ns);
    cr_assert_gt(w0.busy_ns, 0);
    weft_pool_destroy(p);

    /* An idle pool parks: idle time grows. */
    p = mkpool(2);
    double t0 = now_s();
    for (;;) {
        weft_pool_stats(p, &all);
        if (all.parks >= 2 && all.idle_ns > 0)
            break;
        cr_assert_lt(now_s() - t0, WATCHDOG_S, "the workers never parked");
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    weft_stats a, b;
    cr_assert_eq(weft_pool_stats_worker(p, 0, &a), 0);
    cr_assert_eq(weft_pool_stats_worker(p, 1, &b), 0);
    cr_assert_geq(all.idle_ns, a.idle_ns);
    cr_assert_eq(a.latency_p50_ns, 0, "no spawns, no samples");
    weft_pool_destroy(p);
}

/* ------------------------------------------------------------------------------
 * Traces
 * ---------------------------------------------------------------------------- */

static int collect_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    meet(3u);
    *(size_t *)slot = i * 2;
    return 0;
}

Test(trace, par_collect_on_two_workers_shows_both_busy)
{
    if (!have_python())
        cr_skip_test("python3 not available");
    char d[256], path[300], svg[320];
    tmpdir(d, sizeof(d));
    snprintf(path, sizeof(path), "%s/collect.json", d);
    snprintf(svg, sizeof(svg), "%s/collect.svg", d);
    atomic_store(&seen, 0);
    weft_pool *p = traced_pool(2, path);
    enum { N = 4096 };
    static size_t out[N];
    cr_assert_eq(weft_par_collect(p, N, out, sizeof(out[0]), collect_item, NULL), 0);
    ASSERT_NO_BAD();
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(out[i], i * 2);
    weft_stats a, b;
    cr_assert_eq(weft_pool_stats_worker(p, 0, &a), 0);
    cr_assert_eq(weft_pool_stats_worker(p, 1, &b), 0);
    cr_assert(a.busy_ns > 0 && b.busy_ns > 0, "busy: %llu, %llu",
              (unsigned long long)a.busy_ns, (unsigned long long)b.busy_ns);
    cr_assert(!exists(path) || file_size(path) == 0, "written only at destroy");
    weft_pool_destroy(p);
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' --busy-workers 2 --has-name loop --not-truncated",
                    CHECKER, path), 0);
    /* weft-trace reads it, names both workers and writes an SVG that parses. */
    char txt[320];
    snprintf(txt, sizeof(txt), "%s/summary.txt", d);
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' --svg '%s' > '%s'", WEFT_TRACE_TOOL, path, svg, txt), 0);
    cr_assert_eq(sh("grep -q '^weft-0 ' '%s' && grep -q '^weft-1 ' '%s' && "
                    "grep -q 'ten longest slices' '%s'", txt, txt, txt), 0);
    cr_assert_eq(sh("'" WEFT_PYTHON "' -c 'import sys, xml.etree.ElementTree as E; "
                    "r = E.parse(sys.argv[1]).getroot(); "
                    "sys.exit(0 if r.tag.endswith(\"svg\") and len(r.findall(\".//{*}rect\")) > 3 else 1)' '%s'",
                    svg), 0);
    rmdir_all(d);
}

static int steal_task(void *p)
{
    (void)p;
    weft_trace_label("alpha");
    meet(3u);
    return 0;
}

static int sleep_task(void *p)
{
    (void)p;
    weft_trace_label("sleeper");
    TCHECK(weft_sleep(1000000) == 0); /* suspends: one slice before, one after */
    weft_trace_label("after \"sleep\" \\ \n\t"); /* escaped in the JSON */
    return 0;
}

static int flow_body(weft_scope *s, void *p)
{
    (void)p;
    if (weft_spawn(s, steal_task, NULL) || weft_spawn(s, steal_task, NULL) ||
        weft_spawn(s, sleep_task, NULL))
        return -EIO;
    return 0;
}

static int flow_run(void *p)
{
    return weft_scope_run(NULL, flow_body, p);
}

Test(trace, flows_labels_and_suspensions)
{
    if (!have_python())
        cr_skip_test("python3 not available");
    char d[256], path[300];
    tmpdir(d, sizeof(d));
    snprintf(path, sizeof(path), "%s/flows.json", d);
    atomic_store(&seen, 0);
    weft_pool *p = traced_pool(2, path);
    cr_assert_eq(weft_run(p, flow_run, NULL), 0);
    ASSERT_NO_BAD();
    weft_pool_destroy(p);
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' --busy-workers 2 --min-flows 1 --has-name alpha "
                    "--has-name sleeper --has-wait sleep --split-task --not-truncated",
                    CHECKER, path), 0);
    rmdir_all(d);
}

Test(trace, one_file_per_pool)
{
    if (!have_python())
        cr_skip_test("python3 not available");
    char d[256], a[300], a2[310], a3[310], e[300], e2[310], e3[310], bad[320];
    tmpdir(d, sizeof(d));
    snprintf(a, sizeof(a), "%s/opt.json", d);
    snprintf(a2, sizeof(a2), "%s.2", a);
    snprintf(a3, sizeof(a3), "%s.3", a);
    snprintf(e, sizeof(e), "%s/env.json", d);
    snprintf(e2, sizeof(e2), "%s.2", e);
    snprintf(e3, sizeof(e3), "%s.3", e);
    snprintf(bad, sizeof(bad), "%s/no/such/dir/t.json", d);

    /* The option: path for the first pool, path.2 for the next. */
    weft_pool *p1 = traced_pool(1, a), *p2 = traced_pool(2, a);
    cr_assert_eq(weft_run(p1, nop, NULL), 0);
    cr_assert_eq(weft_run(p2, nop, NULL), 0);
    weft_pool_destroy(p2);
    weft_pool_destroy(p1);
    cr_assert(exists(a) && exists(a2) && !exists(a3));
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' && '" WEFT_PYTHON "' '%s' '%s'", CHECKER, a, CHECKER, a2), 0);
    cr_assert_eq(sh("grep -c '\"thread_name\"' '%s' | grep -qx 2", a2), 0, "pool 2 has 2 workers");

    /* The environment, read at each creation; "" as the option turns it off. */
    setenv("WEFT_TRACE", e, 1);
    weft_pool *q1 = mkpool(1), *q2 = mkpool(1);
    weft_pool *off = traced_pool(1, "");
    unsetenv("WEFT_TRACE");
    weft_pool *untraced = mkpool(1);
    weft_pool_destroy(q1);
    weft_pool_destroy(q2);
    weft_pool_destroy(off);
    weft_pool_destroy(untraced);
    cr_assert(exists(e) && exists(e2) && !exists(e3));
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' && '" WEFT_PYTHON "' '%s' '%s'", CHECKER, e, CHECKER, e2), 0);

    /* An explicit path that cannot be opened is an error; WEFT_TRACE's a warning. */
    weft_pool *r = NULL;
    weft_pool_options o = {.threads = 1, .trace_path = bad};
    cr_assert_eq(weft_pool_create(&r, &o), -ENOENT);
    cr_assert_null(r);
    setenv("WEFT_TRACE", bad, 1);
    o.trace_path = NULL;
    cr_assert_eq(weft_pool_create(&r, &o), 0);
    unsetenv("WEFT_TRACE");
    cr_assert_eq(weft_run(r, nop, NULL), 0);
    weft_pool_destroy(r);
    rmdir_all(d);
}

#define TRUNC_SPAWNS 40000

static int trunc_body(weft_scope *s, void *p)
{
    (void)p;
    for (int k = 0; k < TRUNC_SPAWNS; k++)
        if (weft_spawn(s, nop, NULL) != 0)
            return -EIO;
    return 0;
}

static int trunc_run(void *p)
{
    for (int r = 0; r < 4; r++) { /* 160 000 slices: about 18 MB of JSON */
        int err = weft_scope_run(NULL, trunc_body, p);
        if (err)
            return err;
    }
    return 0;
}

Test(trace, truncated_past_max_mb)
{
    if (!have_python())
        cr_skip_test("python3 not available");
    char d[256], path[300], small[300];
    tmpdir(d, sizeof(d));
    snprintf(path, sizeof(path), "%s/big.json", d);
    snprintf(small, sizeof(small), "%s/small.json", d);
    setenv("WEFT_TRACE_MAX_MB", "1", 1);
    weft_pool *p = traced_pool(2, path);
    unsetenv("WEFT_TRACE_MAX_MB");
    cr_assert_eq(weft_run(p, trunc_run, NULL), 0);
    weft_pool_destroy(p);
    long size = file_size(path);
    cr_assert(size > 0 && size <= 1L << 20, "size %ld", size);
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' --truncated --max-bytes %d", CHECKER, path, 1 << 20), 0);

    /* Garbage is ignored (a warning): the default budget, nothing truncated. */
    setenv("WEFT_TRACE_MAX_MB", "lots", 1);
    p = traced_pool(1, small);
    unsetenv("WEFT_TRACE_MAX_MB");
    cr_assert_eq(weft_run(p, lat_run, NULL), 0);
    weft_pool_destroy(p);
    cr_assert_eq(sh("'" WEFT_PYTHON "' '%s' '%s' --not-truncated --has-name task", CHECKER, small), 0);
    rmdir_all(d);
}

static int label_task(void *p)
{
    (void)p;
    weft_trace_label("untraced");
    weft_trace_label(NULL);
    return 0;
}

/* Labels outside a task, and with tracing off, are no-ops. */
Test(trace, label_outside_and_untraced)
{
    weft_trace_label("nobody");
    weft_trace_label(NULL);
    weft_pool *p = mkpool(1);
    cr_assert_eq(weft_run(p, label_task, NULL), 0);
    weft_pool_destroy(p);
}
