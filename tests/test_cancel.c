/* SPDX-License-Identifier: MIT */
/*
 * Deadlines and nested cancellation: weft_scope_deadline cancels a scope whose
 * tasks sleep, or spin on every worker, with -ETIMEDOUT; the earliest deadline
 * wins; an earlier error wins; scopes that finish first leave nothing armed; one
 * timer thread serves them all. Cancelling a scope reaches the scopes opened in
 * its tasks, 1-4 deep, with sleeps, pipe reads, joins and loops at the bottom.
 * Time bounds here are generous watchdogs, never measurements.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "checks.h"
#include "reactor.h" /* testing hooks: weft__timer_armed */

#define SEC 1000000000ull
#define MS  1000000ull
/* Far beyond any prompt return, far below a sleeper's 10 s. */
#define WATCHDOG_MS 5000u

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof(comm), f)) {
            comm[strcspn(comm, "\n")] = 0;
            if (strcmp(comm, name) == 0)
                n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* ---- deadlines ------------------------------------------------------------------ */

static _Atomic(int) sleep_cancelled, sleep_other;

static int sleep10(void *arg)
{
    (void)arg;
    int r = weft_sleep(10 * SEC);
    if (r == -ECANCELED)
        atomic_fetch_add(&sleep_cancelled, 1);
    else
        atomic_fetch_add(&sleep_other, 1);
    return r;
}

struct dl {
    uint64_t first, second; /* deadlines, ns (second: 0 = none) */
    int ntasks;
    weft_fn fn;
};

static int dl_body(weft_scope *s, void *arg)
{
    struct dl *d = arg;
    weft_scope_deadline(s, d->first);
    if (d->second)
        weft_scope_deadline(s, d->second);
    for (int i = 0; i < d->ntasks; i++)
        if (weft_spawn(s, d->fn, s) != 0)
            break; /* cancelled already (a zero deadline) */
    return 0;
}

Test(cancel, deadline_ends_sleepers)
{
    weft_pool *p = mkpool(2);
    atomic_store(&sleep_cancelled, 0);
    atomic_store(&sleep_other, 0);
    struct dl d = {.first = 50 * MS, .ntasks = 8, .fn = sleep10};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_scope_run(p, dl_body, &d), -ETIMEDOUT);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    /* Every sleeper started before the deadline returned -ECANCELED; none slept. */
    cr_assert_eq(atomic_load(&sleep_other), 0);
    cr_assert_eq(weft__timer_armed(p), 0u);
    weft_pool_destroy(p);
}

static int spin_until_cancelled(void *arg)
{
    weft_scope *s = arg;
    uint64_t t0 = now_ms();
    while (!weft_scope_cancelled(s))
        if (now_ms() - t0 > 20000) {
            TCHECK(!"the deadline never fired");
            return -1;
        }
    return 0;
}

static int spin_in_task(void *arg)
{
    /* The scope's body runs on a worker too, and spins like its tasks: every
     * worker is busy when the deadline passes. */
    struct dl *d = arg;
    return weft_scope_run(NULL, dl_body, d);
}

Test(cancel, deadline_fires_while_workers_spin)
{
    weft_pool *p = mkpool(2);
    struct dl d = {.first = 50 * MS, .ntasks = 4, .fn = spin_until_cancelled};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_run(p, spin_in_task, &d), -ETIMEDOUT);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    /* From an outside thread too. */
    cr_assert_eq(weft_scope_run(p, dl_body, &d), -ETIMEDOUT);
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

static _Atomic(int) ran;

static int count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return 0;
}

Test(cancel, deadline_zero_earliest_wins)
{
    weft_pool *p = mkpool(2);
    /* 0: at once, before any task is spawned. */
    atomic_store(&ran, 0);
    struct dl z = {.first = 0, .ntasks = 4, .fn = count_run};
    cr_assert_eq(weft_scope_run(p, dl_body, &z), -ETIMEDOUT);
    cr_assert_eq(atomic_load(&ran), 0);
    /* A later call with an earlier deadline wins... */
    struct dl a = {.first = 60 * SEC, .second = 30 * MS, .ntasks = 2, .fn = sleep10};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_scope_run(p, dl_body, &a), -ETIMEDOUT);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    /* ...and one with a later deadline does not move it. */
    struct dl b = {.first = 30 * MS, .second = 60 * SEC, .ntasks = 2, .fn = sleep10};
    t0 = now_ms();
    cr_assert_eq(weft_scope_run(p, dl_body, &b), -ETIMEDOUT);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    cr_assert_eq(weft__timer_armed(p), 0u);
    weft_pool_destroy(p);
}

static int fail_eio(void *arg)
{
    (void)arg;
    return -EIO;
}

static int eio_body(weft_scope *s, void *arg)
{
    (void)arg;
    weft_scope_deadline(s, 30 * MS);
    if (weft_spawn(s, fail_eio, NULL) != 0 || weft_spawn(s, sleep10, NULL) != 0)
        return -1;
    return 0;
}

Test(cancel, earlier_error_wins)
{
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_scope_run(p, eio_body, NULL), -EIO);
    weft_pool_destroy(p);
}

/* Per-call timeouts: a nested scope with a deadline, one per call, many at once. */
struct call {
    uint64_t timeout, work;
    int r;
};

static int call_work(void *arg)
{
    struct call *c = arg;
    return weft_sleep(c->work);
}

static int call_body(weft_scope *s, void *arg)
{
    struct call *c = arg;
    weft_scope_deadline(s, c->timeout);
    return weft_spawn(s, call_work, c);
}

static int call_task(void *arg)
{
    struct call *c = arg;
    c->r = weft_scope_run(NULL, call_body, c);
    /* The outer scope is not cancelled by an inner timeout. */
    int r = weft_sleep(MS);
    return r;
}

struct calls {
    struct call *c;
    int n;
};

static int calls_body(weft_scope *s, void *arg)
{
    struct calls *cs = arg;
    for (int i = 0; i < cs->n; i++)
        if (weft_spawn(s, call_task, &cs->c[i]) != 0)
            return -1;
    return 0;
}

Test(cancel, per_call_timeouts_one_timer)
{
    weft_pool *p = mkpool(2);
    int n = SCALED(400);
    struct call *c = calloc((size_t)n, sizeof(*c));
    cr_assert_not_null(c);
    for (int i = 0; i < n; i++) {
        /* Every other call finishes first; the rest time out. */
        c[i].timeout = i % 2 ? 60 * SEC : 20 * MS;
        c[i].work = i % 2 ? MS : 10 * SEC;
    }
    struct calls cs = {c, n};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_scope_run(p, calls_body, &cs), 0);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    for (int i = 0; i < n; i++)
        cr_assert_eq(c[i].r, i % 2 ? 0 : -ETIMEDOUT, "call %d", i);
    /* Nothing left armed by the ones that finished first; one timer thread. */
    cr_assert_eq(weft__timer_armed(p), 0u);
    cr_assert_eq(threads_named("weft-timer"), 1);
    weft_pool_destroy(p);
    free(c);
}

/* ---- nested cancellation -------------------------------------------------------- */

enum bottom { B_SLEEP, B_PIPE, B_JOIN, B_LOOP };

struct nest {
    enum bottom kind;
    int depth;
    int rfd;                      /* a pipe nobody writes */
    _Atomic(int) reached;         /* waits started at the bottom */
    _Atomic(int) not_cancelled;   /* bottom waits that returned anything else */
    _Atomic(int) inner_not_cancelled; /* nested scopes that returned anything else */
};

struct level {
    struct nest *n;
    int depth;
};

static int note(struct nest *n, int r)
{
    if (r != -ECANCELED)
        atomic_fetch_add(&n->not_cancelled, 1);
    return r;
}

static int sleep_note(void *arg)
{
    struct nest *n = arg;
    atomic_fetch_add(&n->reached, 1);
    return note(n, weft_sleep(10 * SEC));
}

static int loop_item(void *ctx, size_t lo, size_t hi)
{
    struct nest *n = ctx;
    for (size_t i = lo; i < hi; i++) {
        int r = sleep_note(n);
        if (r)
            return r;
    }
    return 0;
}

static int bottom(struct nest *n)
{
    switch (n->kind) {
    case B_SLEEP:
        return sleep_note(n);
    case B_PIPE: {
        char c;
        atomic_fetch_add(&n->reached, 1);
        return note(n, (int)weft_read(n->rfd, &c, 1, -1));
    }
    case B_JOIN:
        return weft_join(sleep_note, n, sleep_note, n);
    case B_LOOP:
        return weft_par_for(NULL, 8, 1, loop_item, n);
    }
    return -1;
}

static int level_task(void *arg);

static int level_body(weft_scope *s, void *arg)
{
    return weft_spawn_copy(s, level_task, arg, sizeof(struct level));
}

static int level_task(void *arg)
{
    struct level *l = arg;
    if (l->depth == 0)
        return bottom(l->n);
    struct level down = {l->n, l->depth - 1};
    int r = weft_scope_run(NULL, level_body, &down);
    if (r != -ECANCELED)
        atomic_fetch_add(&l->n->inner_not_cancelled, 1);
    return r;
}

static int outer_body(weft_scope *s, void *arg)
{
    struct nest *n = arg;
    struct level top = {n, n->depth};
    int r = weft_spawn_copy(s, level_task, &top, sizeof(top));
    if (r)
        return r;
    /* Cancel once the bottom waits (this thread is outside the pool). */
    uint64_t t0 = now_ms();
    while (atomic_load(&n->reached) == 0 && now_ms() - t0 < 20000)
        sched_yield();
    weft_scope_cancel(s, -EIO);
    return 0;
}

Test(cancel, nested_1_to_4_deep)
{
    static const char *names[] = {"sleep", "pipe read", "join", "par_for"};
    weft_pool *p = mkpool(2);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    for (int kind = B_SLEEP; kind <= B_LOOP; kind++)
        for (int depth = 1; depth <= 4; depth++) {
            struct nest n = {.kind = (enum bottom)kind, .depth = depth, .rfd = fds[0]};
            uint64_t t0 = now_ms();
            int r = weft_scope_run(p, outer_body, &n);
            uint64_t dt = now_ms() - t0;
            cr_assert_eq(r, -EIO, "%s, depth %d: %d", names[kind], depth, r);
            cr_assert_lt(dt, WATCHDOG_MS, "%s, depth %d", names[kind], depth);
            cr_assert_geq(atomic_load(&n.reached), 1);
            cr_assert_eq(atomic_load(&n.not_cancelled), 0, "%s, depth %d", names[kind], depth);
            cr_assert_eq(atomic_load(&n.inner_not_cancelled), 0, "%s, depth %d",
                         names[kind], depth);
        }
    close(fds[0]);
    close(fds[1]);
    weft_pool_destroy(p);
}

/* The outer scope's deadline reaches 3 levels down. */
static int deadline_outer_body(weft_scope *s, void *arg)
{
    struct nest *n = arg;
    weft_scope_deadline(s, 50 * MS);
    struct level top = {n, n->depth};
    return weft_spawn_copy(s, level_task, &top, sizeof(top));
}

Test(cancel, deadline_reaches_nested)
{
    weft_pool *p = mkpool(2);
    struct nest n = {.kind = B_SLEEP, .depth = 3};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_scope_run(p, deadline_outer_body, &n), -ETIMEDOUT);
    cr_assert_lt(now_ms() - t0, WATCHDOG_MS);
    cr_assert_eq(atomic_load(&n.not_cancelled), 0);
    weft_pool_destroy(p);
}

static _Atomic(int) body_calls;

static int counting_body(weft_scope *s, void *arg)
{
    (void)s;
    (void)arg;
    atomic_fetch_add(&body_calls, 1);
    return 0;
}

struct inner_only {
    int inner_r;
    bool outer_cancelled_after;
    int late_r;
    weft_scope *outer;
};

static int cancel_self_body(weft_scope *s, void *arg)
{
    (void)arg;
    weft_scope_cancel(s, -EIO);
    return 0;
}

static int inner_only_task(void *arg)
{
    struct inner_only *io = arg;
    io->inner_r = weft_scope_run(NULL, cancel_self_body, NULL);
    io->outer_cancelled_after = weft_scope_cancelled(io->outer);
    /* Now cancel the outer scope: a scope opened after that does not start. */
    weft_scope_cancel(io->outer, -EPIPE);
    io->late_r = weft_scope_run(NULL, counting_body, NULL);
    return 0;
}

static int inner_only_body(weft_scope *s, void *arg)
{
    struct inner_only *io = arg;
    io->outer = s;
    return weft_spawn(s, inner_only_task, io);
}

Test(cancel, inner_cancel_stays_inner_and_late_scope_starts_cancelled)
{
    weft_pool *p = mkpool(2);
    atomic_store(&body_calls, 0);
    struct inner_only io = {0};
    cr_assert_eq(weft_scope_run(p, inner_only_body, &io), -EPIPE);
    cr_assert_eq(io.inner_r, -EIO);
    cr_assert(!io.outer_cancelled_after, "an inner cancel reached the outer scope");
    cr_assert_eq(io.late_r, -ECANCELED);
    cr_assert_eq(atomic_load(&body_calls), 0);
    weft_pool_destroy(p);
}

/* An event wait that ends in scope P must leave the scopes nested in P's other
 * tasks alone: only a cancel of P reaches them. (The end of every event or channel
 * wait used to walk P's kids and cancel each, a merge's copy of scope_fail's walk.)
 * Task B waits in P on `opened`; task A opens kid scope K, whose body sets `opened`
 * once B is waiting and then waits in K for B to have finished its wait; K then
 * spawns a task. On 1 worker the order is forced: B cannot be running while K's body
 * runs, so once B said it is about to wait it is suspended in the wait. */
struct wait_end {
    weft_event opened, b_done;
    _Atomic(int) b_waiting;
    _Atomic(int) kid_ran;
    int kid_r;
};

static int wait_end_kid_task(void *arg)
{
    struct wait_end *we = arg;
    atomic_fetch_add(&we->kid_ran, 1);
    return 0;
}

static int wait_end_kid_body(weft_scope *s, void *arg)
{
    struct wait_end *we = arg;
    while (!atomic_load(&we->b_waiting)) {
        int r = weft_yield();
        if (r)
            return r;
    }
    weft_event_set(&we->opened);
    int r = weft_event_wait(&we->b_done);
    if (r)
        return r;
    return weft_spawn(s, wait_end_kid_task, we);
}

static int wait_end_a(void *arg)
{
    struct wait_end *we = arg;
    we->kid_r = weft_scope_run(NULL, wait_end_kid_body, we);
    return we->kid_r;
}

static int wait_end_b(void *arg)
{
    struct wait_end *we = arg;
    atomic_store(&we->b_waiting, 1);
    int r = weft_event_wait(&we->opened);
    weft_event_set(&we->b_done);
    return r;
}

static int wait_end_body(weft_scope *s, void *arg)
{
    int r = weft_spawn(s, wait_end_b, arg);
    return r ? r : weft_spawn(s, wait_end_a, arg);
}

Test(cancel, a_wait_ending_leaves_nested_scopes_alone)
{
    for (unsigned threads = 1; threads <= 2; threads++) {
        weft_pool *p = mkpool(threads);
        for (int round = 0; round < SCALED(50); round++) {
            struct wait_end we = {.opened = WEFT_EVENT_INIT, .b_done = WEFT_EVENT_INIT};
            cr_assert_eq(weft_scope_run(p, wait_end_body, &we), 0, "%u workers, round %d",
                         threads, round);
            cr_assert_eq(we.kid_r, 0, "%u workers, round %d", threads, round);
            cr_assert_eq(atomic_load(&we.kid_ran), 1);
        }
        weft_pool_destroy(p);
    }
}
