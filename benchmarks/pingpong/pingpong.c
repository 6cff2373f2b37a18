/* SPDX-License-Identifier: MIT */
/*
 * pingpong: tasks that wait for each other through events and channels.
 *
 *   ping_pong (Tokio's benches/rt_multi_threaded.rs ping_pong shape): one task spawns
 *   --pings tasks; each spawns a pong task, signals it and waits for its answer;
 *   the last one to finish signals the caller. Through a pair of events (Tokio uses
 *   a pair of oneshot channels) and through a pair of capacity-1 channels created
 *   by the ping (as Tokio's oneshots are). Reported per ping.
 *
 *   round_trip: two long-lived tasks bounce one token --trips times, through an event
 *   pair (each side resets the event it waited on) and through two capacity-1
 *   channels. Reported per round trip (two wake-ups).
 *
 * Each on pools of 1 and 2 workers. With --tokio DIR, the Tokio peer in DIR (a cargo
 * project, built offline against Debian's librust-tokio-dev) is built and run in the
 * same run and its lines are printed beside ours; without cargo or tokio it is
 * skipped with a note. --reps rounds (default 7) each run every configuration once,
 * in a fixed order; medians are reported.
 *
 * Usage: pingpong [--reps N] [--pings N] [--trips N] [--tokio DIR]
 * Output: RESULT pingpong impl=... workers=... n=... median_ns=... ns_per_op=...
 * then a table.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

static size_t pings = 1000, trips = 20000;

/* ---- ping_pong through events ------------------------------------------------------ */

struct pp {
    weft_scope *s;
    _Atomic(size_t) rem;
    weft_event done;
};

struct ev_pair {
    weft_event a, b;
};

static int ev_pong(void *arg)
{
    struct ev_pair *p = arg;
    if (weft_event_wait(&p->a))
        return -1;
    weft_event_set(&p->b);
    return 0;
}

static int ev_ping(void *arg)
{
    struct pp *pp = arg;
    /* The pair lives in this ping's frame: the pong has set b (its last touch of
     * the pair) once our wait returns. */
    struct ev_pair pair = {WEFT_EVENT_INIT, WEFT_EVENT_INIT};
    int err = weft_spawn(pp->s, ev_pong, &pair);
    if (err)
        return err;
    weft_event_set(&pair.a);
    if ((err = weft_event_wait(&pair.b)))
        return err;
    if (atomic_fetch_sub_explicit(&pp->rem, 1, memory_order_relaxed) == 1)
        weft_event_set(&pp->done);
    return 0;
}

/* ---- ping_pong through channels ------------------------------------------------------ */

struct ch_pair {
    weft_chan *a, *b;
};

static int ch_pong(void *arg)
{
    struct ch_pair *p = arg;
    char v;
    if (weft_chan_recv(p->a, &v) || weft_chan_send(p->b, &v))
        return -1;
    return 0;
}

static int ch_ping(void *arg)
{
    struct pp *pp = arg;
    struct ch_pair pair;
    int err = weft_chan_create(&pair.a, 1, 1);
    if (err)
        return err;
    if ((err = weft_chan_create(&pair.b, 1, 1))) {
        weft_chan_destroy(pair.a);
        return err;
    }
    char v = 1;
    if (!(err = weft_spawn(pp->s, ch_pong, &pair)) && !(err = weft_chan_send(pair.a, &v)))
        err = weft_chan_recv(pair.b, &v);
    /* Once our recv returned, the pong is done with both channels (its send handed
     * the byte over under b's lock and touches b no more). */
    weft_chan_destroy(pair.a);
    weft_chan_destroy(pair.b);
    if (err)
        return err;
    if (atomic_fetch_sub_explicit(&pp->rem, 1, memory_order_relaxed) == 1)
        weft_event_set(&pp->done);
    return 0;
}

struct pp_run {
    struct pp *pp;
    weft_fn ping;
};

static int pp_spawner(void *arg)
{
    struct pp_run *r = arg;
    for (size_t i = 0; i < pings; i++) {
        int err = weft_spawn(r->pp->s, r->ping, r->pp);
        if (err)
            return err;
    }
    return 0;
}

static int pp_body(weft_scope *s, void *arg)
{
    struct pp_run *r = arg;
    r->pp->s = s;
    /* As Tokio's: the caller spawns one task, which spawns the pings; the caller
     * waits for the last ping's signal (here: on the event, then the scope). */
    int err = weft_spawn(s, pp_spawner, r);
    if (err)
        return err;
    return weft_event_wait(&r->pp->done);
}

static int ping_pong(weft_pool *pool, weft_fn ping)
{
    struct pp pp = {.done = WEFT_EVENT_INIT};
    atomic_init(&pp.rem, pings);
    struct pp_run r = {&pp, ping};
    return weft_scope_run(pool, pp_body, &r);
}

/* ---- round trips ------------------------------------------------------------------------ */

struct rt {
    weft_event ping, pong;
    weft_chan *c1, *c2;
};

static int rt_ev_pong(void *arg)
{
    struct rt *t = arg;
    for (size_t i = 0; i < trips; i++) {
        int err = weft_event_wait(&t->ping);
        if (err)
            return err;
        weft_event_reset(&t->ping); /* the ping waits for pong now, not for ping */
        weft_event_set(&t->pong);
    }
    return 0;
}

static int rt_ev_body(weft_scope *s, void *arg)
{
    struct rt *t = arg;
    int err = weft_spawn(s, rt_ev_pong, t);
    for (size_t i = 0; !err && i < trips; i++) {
        weft_event_set(&t->ping);
        if (!(err = weft_event_wait(&t->pong)))
            weft_event_reset(&t->pong);
    }
    return err;
}

static int rt_ch_pong(void *arg)
{
    struct rt *t = arg;
    for (size_t i = 0; i < trips; i++) {
        int v, err;
        if ((err = weft_chan_recv(t->c1, &v)) || (err = weft_chan_send(t->c2, &v)))
            return err;
    }
    return 0;
}

static int rt_ch_body(weft_scope *s, void *arg)
{
    struct rt *t = arg;
    int err = weft_spawn(s, rt_ch_pong, t);
    for (size_t i = 0; !err && i < trips; i++) {
        int v = (int)i;
        if (!(err = weft_chan_send(t->c1, &v)))
            err = weft_chan_recv(t->c2, &v);
    }
    return err;
}

/* The round trip's ping side is a task too (the body of a scope run inside one). */
struct rt_run {
    weft_pool *pool;
    int (*body)(weft_scope *, void *);
    struct rt *t;
};

static int rt_task(void *arg)
{
    struct rt_run *r = arg;
    return weft_scope_run(r->pool, r->body, r->t);
}

static int round_trip(weft_pool *pool, bool chan)
{
    struct rt t = {.ping = WEFT_EVENT_INIT, .pong = WEFT_EVENT_INIT};
    int err;
    if (chan) {
        if ((err = weft_chan_create(&t.c1, 1, sizeof(int))))
            return err;
        if ((err = weft_chan_create(&t.c2, 1, sizeof(int))))
            return err;
    }
    struct rt_run r = {pool, chan ? rt_ch_body : rt_ev_body, &t};
    err = weft_run(pool, rt_task, &r);
    weft_chan_destroy(t.c1);
    weft_chan_destroy(t.c2);
    return err;
}

/* ---- driver ------------------------------------------------------------------------------ */

enum { PP_EVENT, PP_CHAN, RT_EVENT, RT_CHAN, NIMPL };
static const char *const impl_names[] = {"ping_pong_event", "ping_pong_chan",
                                         "round_trip_event", "round_trip_chan"};

static int run_impl(int impl, weft_pool *pool)
{
    switch (impl) {
    case PP_EVENT:
        return ping_pong(pool, ev_ping);
    case PP_CHAN:
        return ping_pong(pool, ch_ping);
    case RT_EVENT:
        return round_trip(pool, false);
    default:
        return round_trip(pool, true);
    }
}

/* Build (offline, cargo) and run the Tokio peer in dir; it prints its own RESULT lines.
 * The build goes to $CARGO_TARGET_DIR if set (meson sets it inside the build
 * directory), else dir/target. */
static void run_tokio(const char *dir, int reps, double tk[][2])
{
    const char *target = getenv("CARGO_TARGET_DIR");
    char adir[PATH_MAX], cwd[PATH_MAX], tdir[2 * PATH_MAX + 16], cmd[8 * PATH_MAX];
    if (!realpath(dir, adir) || !getcwd(cwd, sizeof(cwd))) {
        printf("# tokio peer skipped: %s: %s\n", dir, strerror(errno));
        return;
    }
    if (target && *target)
        snprintf(tdir, sizeof(tdir), "%s%s%s", target[0] == '/' ? "" : cwd,
                 target[0] == '/' ? "" : "/", target);
    else
        snprintf(tdir, sizeof(tdir), "%s/target", adir);
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && cd '%s' && CARGO_TARGET_DIR='%s' nice -n 10 cargo build "
             "--release --offline -q >'%s/cargo.log' 2>&1", tdir, adir, tdir, tdir);
    fflush(stdout);
    if (system(cmd) != 0) {
        printf("# tokio peer skipped: 'cargo build --release --offline' failed in %s (no "
               "cargo, or no Debian librust-tokio-dev in /usr/share/cargo/registry?): "
               "see %s/cargo.log\n", dir, tdir);
        return;
    }
    snprintf(cmd, sizeof(cmd), "'%s/release/weft-pingpong-tokio' %d %zu %zu", tdir, reps,
             pings, trips);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f) {
        printf("# tokio peer failed: %s\n", cmd);
        return;
    }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        fputs(line, stdout);
        char impl[64];
        unsigned w;
        double per;
        const char *p = strstr(line, "impl=tokio_");
        const char *q = strstr(line, "ns_per_op=");
        if (p && q && sscanf(p, "impl=tokio_%63s workers=%u", impl, &w) == 2 &&
            sscanf(q, "ns_per_op=%lf", &per) == 1 && w >= 1 && w <= 2)
            for (int i = 0; i < NIMPL; i++)
                if (strcmp(impl, impl_names[i]) == 0)
                    tk[i][w - 1] = per;
    }
    if (pclose(f) != 0)
        printf("# tokio peer failed: %s\n", cmd);
}

static void usage(void)
{
    fprintf(stderr, "usage: pingpong [--reps N] [--pings N] [--trips N] [--tokio DIR]\n");
}

int main(int argc, char **argv)
{
    int reps = 7;
    const char *tokio = NULL;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc)
            reps = atoi(argv[++a]);
        else if (strcmp(argv[a], "--pings") == 0 && a + 1 < argc)
            pings = (size_t)strtoul(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--trips") == 0 && a + 1 < argc)
            trips = (size_t)strtoul(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--tokio") == 0 && a + 1 < argc)
            tokio = argv[++a];
        else {
            usage();
            return 2;
        }
    }
    if (reps < 1 || pings < 1 || trips < 1) {
        usage();
        return 2;
    }
    static const unsigned workers[] = {1, 2};
    weft_pool *pools[2];
    for (int w = 0; w < 2; w++) {
        weft_pool_options o = {.threads = workers[w]};
        int err = weft_pool_create(&pools[w], &o);
        if (err) {
            fprintf(stderr, "pingpong: pool of %u: %s\n", workers[w], strerror(-err));
            return 1;
        }
    }
    double *t[NIMPL][2];
    for (int i = 0; i < NIMPL; i++)
        for (int w = 0; w < 2; w++)
            if (!(t[i][w] = calloc((size_t)reps, sizeof(double))))
                return 1;
    printf("# pingpong: %zu pings per ping_pong, %zu round trips per round_trip; %ld CPUs "
           "online; %d rounds\n", pings, trips, sysconf(_SC_NPROCESSORS_ONLN), reps);
    for (int r = -1; r < reps; r++) { /* round -1: untimed warm-up */
        for (int i = 0; i < NIMPL; i++) {
            for (int w = 0; w < 2; w++) {
                uint64_t t0 = bench_now_ns();
                int err = run_impl(i, pools[w]);
                uint64_t dt = bench_now_ns() - t0;
                if (err) {
                    fprintf(stderr, "pingpong: %s on %u workers: %s\n", impl_names[i],
                            workers[w], strerror(-err));
                    return 1;
                }
                if (r >= 0)
                    t[i][w][r] = (double)dt;
            }
        }
    }
    for (int w = 0; w < 2; w++)
        weft_pool_destroy(pools[w]);

    double med[NIMPL][2];
    for (int i = 0; i < NIMPL; i++) {
        size_t n = i < RT_EVENT ? pings : trips;
        for (int w = 0; w < 2; w++) {
            med[i][w] = bench_median(t[i][w], (size_t)reps);
            printf("RESULT pingpong impl=weft_%s workers=%u n=%zu median_ns=%.0f "
                   "ns_per_op=%.1f reps=%d\n", impl_names[i], workers[w], n, med[i][w],
                   med[i][w] / (double)n, reps);
        }
    }
    double tk[NIMPL][2];
    for (int i = 0; i < NIMPL; i++)
        tk[i][0] = tk[i][1] = -1;
    if (tokio)
        run_tokio(tokio, reps, tk);
    printf("\npingpong: ns per ping (ping_pong) or per round trip (round_trip), medians "
           "of %d; vs tokio = weft time / Tokio time (< 1: weft faster)\n", reps);
    printf("%-18s %10s %10s %9s %10s %10s %9s\n", "", "weft 1w", "tokio 1w", "vs tokio",
           "weft 2w", "tokio 2w", "vs tokio");
    for (int i = 0; i < NIMPL; i++) {
        size_t n = i < RT_EVENT ? pings : trips;
        printf("%-18s", impl_names[i]);
        for (int w = 0; w < 2; w++) {
            double us = med[i][w] / (double)n;
            if (tk[i][w] > 0)
                printf(" %10.1f %10.1f %8.2fx", us, tk[i][w], us / tk[i][w]);
            else
                printf(" %10.1f %10s %9s", us, "-", "-");
        }
        printf("\n");
    }
    return 0;
}
