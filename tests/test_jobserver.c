/* SPDX-License-Identifier: MIT */
/*
 * The GNU make jobserver client (lib/jobserver.c): MAKEFLAGS parsing and fd
 * validation; a FIFO server (make 4.4's protocol) and a pipe server (make 4.3's)
 * that the test runs itself: at most 1 + N workers run tasks with N tokens, and
 * 1 + N is reached (tasks that wait until that many run at once); the N bytes, the
 * same ones, are back after the pool went idle and after destroy; tokens are not
 * taken per task; the opt-outs; a forked child gives back nothing. The real make
 * is tests/test_jobserver_make.sh.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "jobserver.h"

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------
 * Parsing
 * ---------------------------------------------------------------------------- */

Test(jobserver, parse_forms)
{
    struct weft__js_auth a;
    cr_assert_eq(weft__js_parse(NULL, &a), WEFT__JS_NONE);
    cr_assert_eq(weft__js_parse("", &a), WEFT__JS_NONE);
    cr_assert_eq(weft__js_parse(" -j3", &a), WEFT__JS_NONE);
    cr_assert_eq(weft__js_parse("k -j", &a), WEFT__JS_NONE);

    cr_assert_eq(weft__js_parse(" -j3 --jobserver-auth=3,4", &a), WEFT__JS_PIPE);
    cr_assert_eq(a.rfd, 3);
    cr_assert_eq(a.wfd, 4);
    cr_assert(!a.dry_run);
    cr_assert_eq(weft__js_parse("--jobserver-fds=7,8 -j", &a), WEFT__JS_PIPE);
    cr_assert_eq(a.rfd, 7);
    cr_assert_eq(a.wfd, 8);

    cr_assert_eq(weft__js_parse("-j4 --jobserver-auth=fifo:/tmp/GMfifo123", &a), WEFT__JS_FIFO);
    cr_assert_eq(strcmp(a.path, "/tmp/GMfifo123"), 0);
    /* make escapes blanks in words with a backslash */
    cr_assert_eq(weft__js_parse("--jobserver-auth=fifo:/tmp/a\\ b\\\\c -j", &a), WEFT__JS_FIFO);
    cr_assert_eq(strcmp(a.path, "/tmp/a b\\c"), 0, "%s", a.path);

    /* negative fds: make says there is no jobserver */
    cr_assert_eq(weft__js_parse("-j --jobserver-auth=-2,-2", &a), WEFT__JS_OFF);
    cr_assert_eq(weft__js_parse("--jobserver-fds=-1,4", &a), WEFT__JS_OFF);
}

Test(jobserver, parse_last_wins_and_dry_run)
{
    struct weft__js_auth a;
    cr_assert_eq(weft__js_parse("--jobserver-auth=3,4 --jobserver-auth=fifo:/x", &a),
                 WEFT__JS_FIFO);
    cr_assert_eq(weft__js_parse("--jobserver-auth=fifo:/x --jobserver-auth=5,6", &a),
                 WEFT__JS_PIPE);
    cr_assert_eq(a.rfd, 5);
    cr_assert_eq(weft__js_parse("--jobserver-fds=3,4 --jobserver-auth=9,10", &a), WEFT__JS_PIPE);
    cr_assert_eq(a.rfd, 9);
    /* the last one is garbage: garbage */
    cr_assert_eq(weft__js_parse("--jobserver-auth=3,4 --jobserver-auth=x", &a), WEFT__JS_BAD);
    cr_assert_eq(strcmp(a.value, "x"), 0);
    /* variable definitions after "--" are not options */
    cr_assert_eq(weft__js_parse("-j --jobserver-auth=3,4 -- V=--jobserver-auth=fifo:/y", &a),
                 WEFT__JS_PIPE);

    cr_assert_eq(weft__js_parse("kn -j3 --jobserver-auth=3,4", &a), WEFT__JS_PIPE);
    cr_assert(a.dry_run);
    cr_assert_eq(weft__js_parse("ks -j3 --jobserver-auth=3,4", &a), WEFT__JS_PIPE);
    cr_assert(!a.dry_run);
    /* only the first word holds single-letter flags */
    cr_assert_eq(weft__js_parse(" -j3 --jobserver-auth=3,4 n", &a), WEFT__JS_PIPE);
    cr_assert(!a.dry_run);
    cr_assert_eq(weft__js_parse("n", &a), WEFT__JS_NONE);
    cr_assert(a.dry_run);
}

Test(jobserver, parse_garbage)
{
    struct weft__js_auth a;
    const char *bad[] = {
        "--jobserver-auth=", "--jobserver-auth=3", "--jobserver-auth=3,", "--jobserver-auth=,4",
        "--jobserver-auth=3,4x", "--jobserver-auth=a,b", "--jobserver-auth=fifo:",
        "--jobserver-auth=3;4", "--jobserver-auth=99999999999,4", "--jobserver-auth=sem:foo",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(weft__js_parse(bad[i], &a), WEFT__JS_BAD, "%s", bad[i]);
    /* a path longer than PATH_MAX */
    size_t n = PATH_MAX + 100;
    char *s = malloc(n + 32);
    strcpy(s, "--jobserver-auth=fifo:/");
    size_t l = strlen(s);
    memset(s + l, 'a', n - l);
    s[n] = '\0';
    cr_assert_eq(weft__js_parse(s, &a), WEFT__JS_BAD);
    free(s);
}

Test(jobserver, check_pipe)
{
    int p[2], q[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(q), 0);
    cr_assert_eq(weft__js_check_pipe(p[0], p[1]), 0);
    cr_assert_eq(weft__js_check_pipe(p[1], p[0]), -EINVAL); /* read end not readable */
    cr_assert_eq(weft__js_check_pipe(p[0], q[1]), -EINVAL); /* two different pipes */
    int f = open("/dev/null", O_RDWR);
    cr_assert_eq(weft__js_check_pipe(f, f), -EINVAL);        /* not a FIFO */
    close(f);
    cr_assert_eq(weft__js_check_pipe(f, p[1]), -EBADF);      /* closed */
    cr_assert_eq(weft__js_check_pipe(1000, 1001), -EBADF);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
}

/* ------------------------------------------------------------------------------
 * Pools under a jobserver
 * ---------------------------------------------------------------------------- */

struct gate {
    _Atomic(int) running, max, reached, timed_out;
    int want;
};

static void enter(struct gate *g)
{
    int v = atomic_fetch_add(&g->running, 1) + 1;
    int m = atomic_load(&g->max);
    while (v > m && !atomic_compare_exchange_weak(&g->max, &m, v))
        ;
    if (v >= g->want)
        atomic_store(&g->reached, 1);
}

/* Blocks its worker until want tasks ran at once (or a 30 s watchdog). */
static int gate_task(void *p)
{
    struct gate *g = p;
    enter(g);
    double end = now_s() + 30;
    while (!atomic_load(&g->reached)) {
        if (now_s() > end) {
            atomic_store(&g->timed_out, 1);
            break;
        }
        sleep_us(100);
    }
    atomic_fetch_sub(&g->running, 1);
    return 0;
}

static int filler_task(void *p)
{
    struct gate *g = p;
    enter(g);
    sleep_us(200);
    atomic_fetch_sub(&g->running, 1);
    return 0;
}

static int gate_body(weft_scope *s, void *p)
{
    struct gate *g = p;
    for (int i = 0; i < 3 * g->want + 20; i++)
        cr_assert_eq(weft_spawn(s, i % 3 == 0 ? gate_task : filler_task, g), 0);
    return 0;
}

/* Run gate tasks wanting `want` at once (plus fillers); returns the most that ran
 * at once. reach: the gate must open (else it must time out: not used). */
static int run_gate(weft_pool *pool, int want)
{
    struct gate g = {.want = want};
    cr_assert_eq(weft_scope_run(pool, gate_body, &g), 0);
    cr_assert(!atomic_load(&g.timed_out), "%d tasks never ran at once", want);
    return atomic_load(&g.max);
}

static int tiny(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    (void)lo;
    (void)hi;
    return 0;
}

static int bytes_in(int fd)
{
    int n = -1;
    cr_assert_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Wait (10 s watchdog) until fd holds n bytes: the pool gave its tokens back. */
static void wait_bytes(int fd, int n)
{
    double end = now_s() + 10;
    while (bytes_in(fd) != n && now_s() < end)
        sleep_us(1000);
    cr_assert_eq(bytes_in(fd), n);
}

static const char tokens[] = "+abcdefg";

/* The server's fd (rw: reads and writes the tokens) holds ntok tokens; MAKEFLAGS
 * is set. Check the bound, that it is reached, the bytes, and no per-task reads. */
static void exercise(int rw, int ntok)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = (unsigned)ntok + 3};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    for (int round = 0; round < 3; round++) {
        int max = run_gate(pool, ntok + 1);
        cr_assert_eq(max, ntok + 1, "round %d: %d tasks at once with %d tokens", round, max,
                     ntok);
    }
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert_eq(st.jobserver_tokens_peak, (uint64_t)ntok);

    /* Many tiny tasks: tokens are cached, not read per task. */
    uint64_t r0, w0, r1, w1;
    weft__js_test_counts(&r0, &w0);
    size_t items = SCALED(20000);
    cr_assert_eq(weft_par_for(pool, items, 1, tiny, NULL), 0);
    weft__js_test_counts(&r1, &w1);
    cr_assert_lt(r1 - r0, items / 20, "%llu token reads for %zu tasks",
                 (unsigned long long)(r1 - r0), items);

    /* Idle: every byte goes back without destroy (hysteresis: within 100 ms). */
    wait_bytes(rw, ntok);
    weft_pool_stats(pool, &st);
    cr_assert_eq(st.jobserver_tokens, 0);
    weft_pool_destroy(pool);
    cr_assert_eq(bytes_in(rw), ntok);
    char buf[16] = {0};
    if (ntok == 0)
        return;
    cr_assert_eq(read(rw, buf, sizeof(buf)), ntok);
    for (int i = 0; i < ntok; i++)
        cr_assert(memchr(buf, tokens[i], (size_t)ntok), "token '%c' not given back", tokens[i]);
}

static char fifo_dir[64];

static int make_fifo(int ntok, char *makeflags, size_t mfsize)
{
    strcpy(fifo_dir, "/tmp/weft-js-XXXXXX");
    cr_assert_not_null(mkdtemp(fifo_dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/fifo", fifo_dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    int rw = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(rw, 0);
    cr_assert_eq(write(rw, tokens, (size_t)ntok), ntok);
    snprintf(makeflags, mfsize, " -j%d --jobserver-auth=fifo:%s", ntok + 1, path);
    return rw;
}

static void remove_fifo(int rw)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/fifo", fifo_dir);
    close(rw);
    unlink(path);
    rmdir(fifo_dir);
}

Test(jobserver, fifo_server, .timeout = 120)
{
    for (int ntok = 0; ntok <= 2; ntok++) {
        char mf[256];
        int rw = make_fifo(ntok, mf, sizeof(mf));
        setenv("MAKEFLAGS", mf, 1);
        exercise(rw, ntok);
        unsetenv("MAKEFLAGS");
        remove_fifo(rw);
    }
}

static void pipe_server(bool no_proc)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int ntok = 2;
    cr_assert_eq(write(p[1], tokens, (size_t)ntok), ntok);
    char mf[64];
    snprintf(mf, sizeof(mf), "w -j3 --jobserver-auth=%d,%d", p[0], p[1]);
    setenv("MAKEFLAGS", mf, 1);
    weft__js_test_no_proc(no_proc);
    /* exercise() reads the tokens back through a non-blocking description of our
     * own: the inherited ones must stay blocking, as make set them. */
    char path[40];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
    int rw = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(rw, 0);
    exercise(rw, ntok);
    weft__js_test_no_proc(false);
    unsetenv("MAKEFLAGS");
    cr_assert_eq(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
    cr_assert_eq(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
    close(rw);
    close(p[0]);
    close(p[1]);
}

Test(jobserver, pipe_server, .timeout = 120)
{
    pipe_server(false);
}

Test(jobserver, pipe_server_without_proc, .timeout = 120)
{
    pipe_server(true); /* preadv2(RWF_NOWAIT) on make's own fds */
}

/* stderr into a file while fn runs; returns what was written (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
    fflush(stderr);
    int saved = dup(2);
    FILE *t = tmpfile();
    cr_assert_not_null(t);
    dup2(fileno(t), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long n = ftell(t);
    rewind(t);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, t), (size_t)n);
    fclose(t);
    return s;
}

static int count_of(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p++)
        n++;
    return n;
}

/* Two pools under a jobserver that cannot be used: both run without one. */
static void two_pools(void)
{
    for (int i = 0; i < 2; i++) {
        weft_pool *pool;
        weft_pool_options o = {.threads = 3};
        cr_assert_eq(weft_pool_create(&pool, &o), 0);
        cr_assert_eq(run_gate(pool, 3), 3); /* not limited */
        weft_stats st;
        weft_pool_stats(pool, &st);
        cr_assert_eq(st.jobserver_tokens_peak, 0);
        weft_pool_destroy(pool);
    }
}

static void unusable(const char *mf, const char *expect)
{
    weft__js_test_reset_warning();
    setenv("MAKEFLAGS", mf, 1);
    char *err = capture_stderr(two_pools);
    unsetenv("MAKEFLAGS");
    /* Not counted: the seed line each pool prints under WEFT_SCHED=random (noise.c),
     * so that the suite passes in tools/test's sched run too. */
    int seeds = count_of(err, "weft: WEFT_SCHED=random:");
    cr_assert_eq(count_of(err, "weft: ") - seeds, 1, "MAKEFLAGS=%s: stderr: %s", mf, err);
    cr_assert(strstr(err, expect), "MAKEFLAGS=%s: stderr: %s", mf, err);
    free(err);
}

Test(jobserver, unusable_servers_warn_once)
{
    unusable(" -j3 --jobserver-auth=1000,1001", "not open");
    int f = open("/dev/null", O_RDWR);
    char mf[64];
    snprintf(mf, sizeof(mf), " -j3 --jobserver-auth=%d,%d", f, f);
    unusable(mf, "not a pipe");
    close(f);
    int p[2], q[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(pipe(q), 0);
    snprintf(mf, sizeof(mf), " -j3 --jobserver-auth=%d,%d", p[0], q[1]);
    unusable(mf, "not a pipe");
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    unusable(" -j3 --jobserver-auth=fifo:/nonexistent/weft-fifo", "cannot open");
    unusable(" -j3 --jobserver-auth=bogus", "ignoring --jobserver-auth=bogus");
    /* Negative fds, or no jobserver: silence. */
    setenv("MAKEFLAGS", " -j3 --jobserver-auth=-2,-2", 1);
    char *err = capture_stderr(two_pools);
    unsetenv("MAKEFLAGS");
    cr_assert_eq(err[0], '\0', "%s", err);
    free(err);
}

/* No tokens in the server: one worker at a time, unless opted out. */
Test(jobserver, opt_outs)
{
    char mf[256];
    int rw = make_fifo(0, mf, sizeof(mf));
    setenv("MAKEFLAGS", mf, 1);
    weft_pool *pool;
    weft_pool_options o = {.threads = 3};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    struct gate g = {.want = 1000}; /* never reached: count only */
    atomic_store(&g.reached, 1);
    cr_assert_eq(weft_scope_run(pool, gate_body, &g), 0);
    cr_assert_eq(atomic_load(&g.max), 1);
    weft_pool_destroy(pool);

    o.flags = WEFT_POOL_NO_JOBSERVER;
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    cr_assert_eq(run_gate(pool, 3), 3);
    weft_pool_destroy(pool);

    o.flags = 0;
    setenv("WEFT_JOBSERVER", "0", 1);
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    cr_assert_eq(run_gate(pool, 3), 3);
    weft_pool_destroy(pool);
    unsetenv("WEFT_JOBSERVER");
    unsetenv("MAKEFLAGS");
    cr_assert_eq(bytes_in(rw), 0);
    remove_fifo(rw);
}

/* Two pools of one process share the implicit token: with no tokens in the
 * server, their tasks never overlap. */
struct two {
    weft_pool *other;
    struct gate *g;
};

static void *other_thread(void *p)
{
    struct two *t = p;
    cr_assert_eq(weft_scope_run(t->other, gate_body, t->g), 0);
    return NULL;
}

Test(jobserver, pools_share_the_implicit_token)
{
    char mf[256];
    int rw = make_fifo(0, mf, sizeof(mf));
    setenv("MAKEFLAGS", mf, 1);
    weft_pool *a, *b;
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(&a, &o), 0);
    cr_assert_eq(weft_pool_create(&b, &o), 0);
    struct gate g = {.want = 1000};
    atomic_store(&g.reached, 1);
    struct two t = {b, &g};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, other_thread, &t), 0);
    cr_assert_eq(weft_scope_run(a, gate_body, &g), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&g.max), 1);
    weft_pool_destroy(a);
    weft_pool_destroy(b);
    unsetenv("MAKEFLAGS");
    remove_fifo(rw);
}

/* fork() while the parent's workers hold tokens: the child gives back nothing
 * inherited, and a pool of its own takes nothing it does not give back. */
struct fork_ctx {
    struct gate g;
    int rw;
    pid_t child;
    weft_pool *pool;
};

__attribute__((unused)) static int run_one(void *p)
{
    (void)p;
    return 5;
}

static int forker(void *p)
{
    struct fork_ctx *f = p;
    enter(&f->g);
    /* Wait until the other task runs too: a token is held now. */
    double end = now_s() + 30;
    while (atomic_load(&f->g.running) < 2 && now_s() < end)
        sleep_us(100);
    cr_assert_eq(bytes_in(f->rw), 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* The inherited pool is dead here (and this thread runs on its stack: it
         * is left alone). A pool of the child's own works. */
        int ok = 1;
#ifndef __SANITIZE_THREAD__ /* TSan: no threads after a multi-threaded fork */
        weft_pool *mine;
        weft_pool_options o = {.threads = 2};
        ok = weft_pool_create(&mine, &o) == 0 && weft_run(mine, run_one, NULL) == 5;
        if (ok)
            weft_pool_destroy(mine);
#endif
#ifdef __SANITIZE_ADDRESS__
        _exit(ok ? 0 : 3); /* the parent's memory would read as leaks */
#else
        exit(ok ? 0 : 3);  /* at-exit handlers: still nothing written */
#endif
    }
    f->child = pid;
    atomic_store(&f->g.reached, 1);
    atomic_fetch_sub(&f->g.running, 1);
    return 0;
}

static int other(void *p)
{
    struct fork_ctx *f = p;
    enter(&f->g);
    double end = now_s() + 30;
    while (!atomic_load(&f->g.reached) && now_s() < end)
        sleep_us(100);
    atomic_fetch_sub(&f->g.running, 1);
    return 0;
}

static int fork_body(weft_scope *s, void *p)
{
    cr_assert_eq(weft_spawn(s, forker, p), 0);
    cr_assert_eq(weft_spawn(s, other, p), 0);
    return 0;
}

Test(jobserver, fork_gives_back_nothing, .timeout = 120)
{
    char mf[256];
    int rw = make_fifo(1, mf, sizeof(mf));
    setenv("MAKEFLAGS", mf, 1);
    struct fork_ctx f = {.g = {.want = 1000}, .rw = rw};
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(&f.pool, &o), 0);
    cr_assert_eq(weft_scope_run(f.pool, fork_body, &f), 0);
    int status;
    cr_assert_eq(waitpid(f.child, &status, 0), f.child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    /* The child wrote nothing: our token is with us or back, never twice. */
    cr_assert_leq(bytes_in(rw), 1);
    weft_pool_destroy(f.pool);
    cr_assert_eq(bytes_in(rw), 1);
    unsetenv("MAKEFLAGS");
    remove_fifo(rw);
}

/* A task of one pool waits for another pool: its worker gives its token up while
 * it sleeps, or (no bytes in the server) the other pool's workers would wait for
 * the implicit token forever. */
static weft_pool *inner_pool;

static int inner(void *p)
{
    (void)p;
    return 9;
}

static int outer(void *p)
{
    (void)p;
    return weft_run(inner_pool, inner, NULL);
}

Test(jobserver, nested_pools_under_one_token, .timeout = 60)
{
    char mf[256];
    int rw = make_fifo(0, mf, sizeof(mf));
    setenv("MAKEFLAGS", mf, 1);
    weft_pool *a;
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(&a, &o), 0);
    cr_assert_eq(weft_pool_create(&inner_pool, &o), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(weft_run(a, outer, NULL), 9);
    weft_pool_destroy(inner_pool);
    weft_pool_destroy(a);
    unsetenv("MAKEFLAGS");
    cr_assert_eq(bytes_in(rw), 0);
    remove_fifo(rw);
}
