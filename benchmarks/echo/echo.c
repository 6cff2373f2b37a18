/* SPDX-License-Identifier: MIT */
/*
 * echo: a loopback TCP echo, client and server in one process.
 *
 * --conns connections (default 64), each making --rounds round-trips (default 2000)
 * of a 64-byte message: the client sends it, the server reads 64 bytes and sends
 * them back, the client reads them and checks they are what it sent (message r of
 * connection i carries i, r and a pattern of both). Then the client shuts down its
 * sending side and the server sees end-of-file.
 *
 *   weft      one pool: a task (weft_run) opens a scope and spawns an acceptor task
 *             and one client task per connection; the acceptor calls weft_accept
 *             and spawns a server task per accepted connection; clients call
 *             weft_connect, servers and clients weft_send / weft_recv. On pools of
 *             1 and 2 workers, with io_uring (flags 0) and with the blocking backend
 *             (WEFT_POOL_NO_URING).
 *   threads   the baseline: plain blocking calls, one thread per socket end: an
 *             acceptor thread that starts a server thread per accepted connection
 *             (thread-per-connection), and one client thread per connection, so
 *             2 * conns + 1 threads (64 KiB stacks).
 *
 * The listening socket (127.0.0.1, an ephemeral port) and the client sockets are
 * made before the clock starts; connecting, accepting, every round-trip and the
 * shutdown are timed. TCP_NODELAY on both ends. Rounds of the five configurations,
 * in a fixed order, --reps times (default 5); the median of each is reported as
 * round-trips per second (conns * rounds / median) and against the threads
 * baseline (> 1: more round-trips per second than threads).
 *
 * A watchdog thread ends a run that has not finished after --timeout seconds
 * (default 8) by shutting down every socket, so every blocked call returns; the
 * configuration is then reported as timed out, is not run again, and the program
 * exits with status 1. That is what happens while weft_recv blocks its worker: a
 * server task waiting for a client that has not run yet holds the only worker(s).
 * Any other failure (a wrong reply, an error from a call) also exits with 1.
 *
 * Usage: echo [--conns N] [--rounds N] [--reps N] [--timeout SECONDS]
 * Output: one line per configuration,
 *   RESULT echo impl=weft backend=uring workers=2 conns=64 rounds=2000 median_ns=...
 *          rt_per_s=... ratio_vs_threads=... reps=...
 *   RESULT echo impl=weft backend=uring workers=1 conns=64 rounds=2000 status=timeout
 *          timeout_s=8
 * then a table.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

#define MSG 64

struct echo_run {
    bool weft;                 /* weft_* calls inside tasks, else plain syscalls */
    size_t conns, rounds;
    int lfd;
    struct sockaddr_in addr;
    int *cfd;                  /* client sockets, made before the run */
    _Atomic(int) *sfd;         /* accepted sockets, -1 until accepted */
    weft_scope *scope;         /* weft: the run's scope, for the acceptor's spawns */
    pthread_t *server_th;      /* threads: one per accepted connection */
    _Atomic(int) err;          /* threads: first error */
};

/* ------------------------------------------------------------------------------
 * Calls and messages, shared by both sides
 * ---------------------------------------------------------------------------- */

static ssize_t do_recv(bool weft, int fd, void *buf, size_t len)
{
    if (weft)
        return weft_recv(fd, buf, len, 0);
    ssize_t r = recv(fd, buf, len, 0);
    return r < 0 ? -errno : r;
}

static ssize_t do_send(bool weft, int fd, const void *buf, size_t len)
{
    if (weft)
        return weft_send(fd, buf, len, MSG_NOSIGNAL);
    ssize_t r = send(fd, buf, len, MSG_NOSIGNAL);
    return r < 0 ? -errno : r;
}

/* Reads exactly MSG bytes: returns MSG, 0 at end-of-file before the first byte,
 * -ECONNRESET at end-of-file inside a message, or -errno. */
static ssize_t recv_msg(bool weft, int fd, unsigned char *buf)
{
    size_t got = 0;
    while (got < MSG) {
        ssize_t r = do_recv(weft, fd, buf + got, MSG - got);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return r;
        if (r == 0)
            return got ? -ECONNRESET : 0;
        got += (size_t)r;
    }
    return MSG;
}

static int send_msg(bool weft, int fd, const unsigned char *buf)
{
    size_t sent = 0;
    while (sent < MSG) {
        ssize_t r = do_send(weft, fd, buf + sent, MSG - sent);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return (int)r;
        sent += (size_t)r;
    }
    return 0;
}

static void fill_msg(unsigned char *m, size_t conn, size_t round)
{
    uint64_t a = conn, b = round;
    memcpy(m, &a, 8);
    memcpy(m + 8, &b, 8);
    for (size_t k = 16; k < MSG; k++)
        m[k] = (unsigned char)(conn * 31 + round * 7 + k);
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Both sides' loops. Return 0 or -errno (-EPROTO: a reply differs). */
static int serve(bool weft, int fd)
{
    unsigned char buf[MSG];
    for (;;) {
        ssize_t r = recv_msg(weft, fd, buf);
        if (r <= 0)
            return (int)r;
        int err = send_msg(weft, fd, buf);
        if (err)
            return err;
    }
}

static int client(struct echo_run *run, size_t i)
{
    int fd = run->cfd[i];
    int err;
    if (run->weft) {
        err = weft_connect(fd, (const struct sockaddr *)&run->addr, sizeof(run->addr));
    } else {
        err = connect(fd, (const struct sockaddr *)&run->addr, sizeof(run->addr));
        err = err < 0 ? -errno : 0;
    }
    if (err)
        return err;
    unsigned char msg[MSG], reply[MSG];
    for (size_t r = 0; r < run->rounds; r++) {
        fill_msg(msg, i, r);
        if ((err = send_msg(run->weft, fd, msg)))
            return err;
        ssize_t got = recv_msg(run->weft, fd, reply);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return -ECONNRESET;
        if (memcmp(msg, reply, MSG) != 0)
            return -EPROTO;
    }
    shutdown(fd, SHUT_WR);
    return 0;
}

/* Accepts the next connection and records it as connection i's server end. */
static int accept_one(struct echo_run *run, size_t i)
{
    int fd;
    if (run->weft) {
        fd = weft_accept(run->lfd, NULL, NULL, SOCK_CLOEXEC);
    } else {
        fd = accept4(run->lfd, NULL, NULL, SOCK_CLOEXEC);
        fd = fd < 0 ? -errno : fd;
    }
    if (fd < 0)
        return fd;
    nodelay(fd);
    atomic_store_explicit(&run->sfd[i], fd, memory_order_relaxed);
    return fd;
}

/* ------------------------------------------------------------------------------
 * weft: tasks in one pool
 * ---------------------------------------------------------------------------- */

struct conn_arg {
    struct echo_run *run;
    size_t i;
    int fd;
};

static int server_task(void *p)
{
    const struct conn_arg *a = p;
    return serve(true, a->fd);
}

static int client_task(void *p)
{
    const struct conn_arg *a = p;
    return client(a->run, a->i);
}

static int acceptor_task(void *p)
{
    struct echo_run *run = p;
    for (size_t i = 0; i < run->conns; i++) {
        int fd = accept_one(run, i);
        if (fd < 0)
            return fd;
        struct conn_arg a = {run, i, fd};
        int err = weft_spawn_copy(run->scope, server_task, &a, sizeof(a));
        if (err)
            return err;
    }
    return 0;
}

static int echo_body(weft_scope *s, void *p)
{
    struct echo_run *run = p;
    run->scope = s;
    int err = weft_spawn(s, acceptor_task, run);
    for (size_t i = 0; i < run->conns && !err; i++) {
        struct conn_arg a = {run, i, -1};
        err = weft_spawn_copy(s, client_task, &a, sizeof(a));
    }
    return err;
}

static int echo_top(void *p)
{
    return weft_scope_run(NULL, echo_body, p);
}

/* ------------------------------------------------------------------------------
 * threads: the blocking baseline
 * ---------------------------------------------------------------------------- */

static void note_err(struct echo_run *run, int err)
{
    int none = 0;
    if (err)
        atomic_compare_exchange_strong_explicit(&run->err, &none, err, memory_order_relaxed,
                                                memory_order_relaxed);
}

static void *server_thread(void *p)
{
    struct conn_arg *a = p;
    note_err(a->run, serve(false, a->fd));
    free(a);
    return NULL;
}

static pthread_attr_t small_stack;

static void *acceptor_thread(void *p)
{
    struct echo_run *run = p;
    size_t started = 0;
    for (size_t i = 0; i < run->conns; i++) {
        int fd = accept_one(run, i);
        if (fd < 0) {
            note_err(run, fd);
            break;
        }
        struct conn_arg *a = malloc(sizeof(*a));
        if (!a) {
            note_err(run, -ENOMEM);
            break;
        }
        *a = (struct conn_arg){run, i, fd};
        int err = pthread_create(&run->server_th[i], &small_stack, server_thread, a);
        if (err) {
            free(a);
            note_err(run, -err);
            break;
        }
        started++;
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(run->server_th[i], NULL);
    return NULL;
}

struct client_arg {
    struct echo_run *run;
    size_t i;
};

static void *client_thread(void *p)
{
    struct client_arg *a = p;
    note_err(a->run, client(a->run, a->i));
    return NULL;
}

static int run_threads(struct echo_run *run)
{
    pthread_t acc;
    pthread_t *cl = calloc(run->conns, sizeof(*cl));
    struct client_arg *ca = calloc(run->conns, sizeof(*ca));
    if (!cl || !ca)
        return -ENOMEM;
    int err = pthread_create(&acc, &small_stack, acceptor_thread, run);
    if (err)
        return -err;
    size_t started = 0;
    for (size_t i = 0; i < run->conns; i++) {
        ca[i] = (struct client_arg){run, i};
        if ((err = pthread_create(&cl[i], &small_stack, client_thread, &ca[i]))) {
            note_err(run, -err);
            /* The acceptor waits for connections that will not come: end it. */
            shutdown(run->lfd, SHUT_RDWR);
            break;
        }
        started++;
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(cl[i], NULL);
    pthread_join(acc, NULL);
    free(cl);
    free(ca);
    return atomic_load_explicit(&run->err, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------
 * Sockets and the watchdog
 * ---------------------------------------------------------------------------- */

static int open_sockets(struct echo_run *run)
{
    run->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (run->lfd < 0)
        return -errno;
    int one = 1;
    setsockopt(run->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(run->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(run->lfd, (int)run->conns + 16) < 0 ||
        getsockname(run->lfd, (struct sockaddr *)&run->addr, &len) < 0)
        return -errno;
    for (size_t i = 0; i < run->conns; i++) {
        atomic_store_explicit(&run->sfd[i], -1, memory_order_relaxed);
        run->cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (run->cfd[i] < 0)
            return -errno;
        nodelay(run->cfd[i]);
    }
    return 0;
}

static void close_sockets(struct echo_run *run)
{
    close(run->lfd);
    for (size_t i = 0; i < run->conns; i++) {
        close(run->cfd[i]);
        int fd = atomic_load_explicit(&run->sfd[i], memory_order_relaxed);
        if (fd >= 0)
            close(fd);
    }
}

/* Sockets stay open until the watchdog is joined, so the fds it shuts down are
 * always the run's own. */
struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, fired;
    double timeout;
    struct echo_run *run;
};

static void *watchdog_main(void *p)
{
    struct watchdog *wd = p;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)wd->timeout;
    deadline.tv_nsec += (long)((wd->timeout - (double)(time_t)wd->timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&wd->mu);
    while (!wd->done)
        if (pthread_cond_timedwait(&wd->cv, &wd->mu, &deadline) == ETIMEDOUT)
            break;
    if (!wd->done) {
        wd->fired = true;
        /* Shut every socket down, and again every 50 ms: a connection accepted after
         * one sweep is caught by the next. */
        while (!wd->done) {
            struct echo_run *run = wd->run;
            shutdown(run->lfd, SHUT_RDWR);
            for (size_t i = 0; i < run->conns; i++) {
                shutdown(run->cfd[i], SHUT_RDWR);
                int fd = atomic_load_explicit(&run->sfd[i], memory_order_relaxed);
                if (fd >= 0)
                    shutdown(fd, SHUT_RDWR);
            }
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_nsec += 50000000;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&wd->cv, &wd->mu, &deadline);
        }
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------- */

struct config {
    const char *impl, *backend;
    unsigned workers;
    weft_pool *pool;
    double *t;
    int reps;
    bool timed_out;
};

/* One timed run: 0 and *ns, 1 if the watchdog ended it, or -errno. */
static int one_run(struct config *c, size_t conns, size_t rounds, double timeout,
                   uint64_t *ns)
{
    struct echo_run run = {.weft = c->pool != NULL, .conns = conns, .rounds = rounds};
    run.cfd = calloc(conns, sizeof(*run.cfd));
    run.sfd = calloc(conns, sizeof(*run.sfd));
    run.server_th = calloc(conns, sizeof(*run.server_th));
    if (!run.cfd || !run.sfd || !run.server_th)
        return -ENOMEM;
    int err = open_sockets(&run);
    if (err)
        return err;

    struct watchdog wd = {.timeout = timeout, .run = &run};
    pthread_mutex_init(&wd.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd.cv, &ca);
    pthread_t wd_th;
    if ((err = pthread_create(&wd_th, NULL, watchdog_main, &wd)))
        return -err;

    uint64_t t0 = bench_now_ns();
    err = run.weft ? weft_run(c->pool, echo_top, &run) : run_threads(&run);
    *ns = bench_now_ns() - t0;

    pthread_mutex_lock(&wd.mu);
    wd.done = true;
    pthread_cond_signal(&wd.cv);
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd_th, NULL);
    pthread_cond_destroy(&wd.cv);
    pthread_condattr_destroy(&ca);
    pthread_mutex_destroy(&wd.mu);
    close_sockets(&run);
    free(run.cfd);
    free(run.sfd);
    free(run.server_th);
    if (wd.fired)
        return 1;
    return err;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo [--conns N] [--rounds N] [--reps N] [--timeout SECONDS]\n");
}

int main(int argc, char **argv)
{
    size_t conns = 64, rounds = 2000;
    int reps = 5;
    double timeout = 8;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--conns") == 0 && a + 1 < argc) {
            conns = strtoull(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--rounds") == 0 && a + 1 < argc) {
            rounds = strtoull(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) {
            reps = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--timeout") == 0 && a + 1 < argc) {
            timeout = strtod(argv[++a], NULL);
        } else {
            usage();
            return 2;
        }
    }
    if (conns == 0 || rounds == 0 || reps < 1 || !(timeout > 0)) {
        usage();
        return 2;
    }
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 64 << 10);

    static const unsigned workers[] = {1, 2};
    static const struct {
        const char *name;
        unsigned flags;
    } backends[] = {{"uring", 0}, {"blocking", WEFT_POOL_NO_URING}};
    struct config cfg[5];
    int ncfg = 0;
    cfg[ncfg++] = (struct config){"threads", "-", 0, NULL, NULL, 0, false};
    for (int b = 0; b < 2; b++) {
        for (int w = 0; w < 2; w++) {
            weft_pool *pool;
            weft_pool_options o = {.threads = workers[w], .flags = backends[b].flags};
            int err = weft_pool_create(&pool, &o);
            if (err) {
                fprintf(stderr, "echo: pool of %u workers, backend %s: %s\n", workers[w],
                        backends[b].name, strerror(-err));
                return 1;
            }
            cfg[ncfg++] = (struct config){"weft", backends[b].name, workers[w], pool, NULL,
                                          0, false};
        }
    }
    for (int c = 0; c < ncfg; c++)
        if (!(cfg[c].t = calloc((size_t)reps, sizeof(double))))
            return 1;

    printf("# echo: %zu connections x %zu round-trips of %d bytes over loopback TCP; %ld "
           "CPUs online; %d rounds; ratio_vs_threads = threads median / median (> 1: "
           "faster)\n", conns, rounds, MSG, sysconf(_SC_NPROCESSORS_ONLN), reps);
    fflush(stdout);

    for (int r = 0; r < reps; r++) {
        for (int c = 0; c < ncfg; c++) {
            if (cfg[c].timed_out)
                continue;
            uint64_t ns = 0;
            int err = one_run(&cfg[c], conns, rounds, timeout, &ns);
            if (err == 1) {
                cfg[c].timed_out = true;
                fprintf(stderr, "echo: impl=%s backend=%s workers=%u: no result within "
                                "%g s; every socket was shut down to end it (tasks that "
                                "block in weft_recv/weft_accept hold their workers?)\n",
                        cfg[c].impl, cfg[c].backend, cfg[c].workers, timeout);
                continue;
            }
            if (err) {
                fprintf(stderr, "echo: impl=%s backend=%s workers=%u round %d: %s\n",
                        cfg[c].impl, cfg[c].backend, cfg[c].workers, r,
                        err == -EPROTO ? "a reply differs from the message sent"
                                       : strerror(-err));
                return 1;
            }
            cfg[c].t[cfg[c].reps++] = (double)ns;
        }
    }

    double total = (double)conns * (double)rounds;
    double base = cfg[0].reps ? bench_median(cfg[0].t, (size_t)cfg[0].reps) : 0;
    bool failed = false;
    double med[5];
    for (int c = 0; c < ncfg; c++) {
        const struct config *k = &cfg[c];
        char w[16] = "-";
        if (k->pool)
            snprintf(w, sizeof(w), "%u", k->workers);
        if (k->timed_out) {
            failed = true;
            printf("RESULT echo impl=%s backend=%s workers=%s conns=%zu rounds=%zu "
                   "status=timeout timeout_s=%g\n", k->impl, k->backend, w, conns, rounds,
                   timeout);
            continue;
        }
        med[c] = bench_median(k->t, (size_t)k->reps);
        printf("RESULT echo impl=%s backend=%s workers=%s conns=%zu rounds=%zu "
               "median_ns=%.0f rt_per_s=%.0f ratio_vs_threads=%.3f reps=%d\n", k->impl,
               k->backend, w, conns, rounds, med[c], total / (med[c] / 1e9),
               base / med[c], k->reps);
    }

    printf("\necho: %zu connections x %zu round-trips, median of %d; round-trips per "
           "second, and vs one thread per socket\n", conns, rounds, reps);
    printf("%-8s %-9s %-8s %12s %14s %10s\n", "impl", "backend", "workers", "median",
           "round-trips/s", "vs threads");
    for (int c = 0; c < ncfg; c++) {
        const struct config *k = &cfg[c];
        char w[16];
        if (k->pool)
            snprintf(w, sizeof(w), "%u", k->workers);
        else
            snprintf(w, sizeof(w), "%zu thr", 2 * conns + 1);
        if (k->timed_out) {
            printf("%-8s %-9s %-8s %12s %14s %10s\n", k->impl, k->backend, w, "timeout", "-",
                   "-");
            continue;
        }
        printf("%-8s %-9s %-8s %9.2f ms %14.0f %9.2fx\n", k->impl, k->backend, w,
               med[c] / 1e6, total / (med[c] / 1e9), base / med[c]);
    }
    for (int c = 0; c < ncfg; c++) {
        if (cfg[c].pool)
            weft_pool_destroy(cfg[c].pool);
        free(cfg[c].t);
    }
    pthread_attr_destroy(&small_stack);
    if (failed) {
        fprintf(stderr, "echo: FAILED: some configurations did not finish within %g s\n",
                timeout);
        return 1;
    }
    return 0;
}
