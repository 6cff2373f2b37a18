/* SPDX-License-Identifier: MIT */
/*
 * Pool lifecycle: create/destroy churn, concurrent outside callers, an idle pool
 * uses no CPU, the default pool, fork(), signal masks of workers, WEFT_NUM_THREADS,
 * and the NULL cases of the pool functions.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "checks.h"
#include "pool.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#include <sanitizer/lsan_interface.h>
#else
#define UNDER_ASAN 0
#endif

/* ThreadSanitizer does not support starting threads in the child of a multi-threaded
 * fork (die_after_fork): there the child checks only what needs no new thread. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif


static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int probe_fn(void *p)
{
    *(pthread_t *)p = pthread_self();
    return 0;
}

/* Is the calling thread a worker of pool? (weft_run calls fn in place there.) */
static bool on_pool(weft_pool *pool)
{
    pthread_t t;
    return weft_run(pool, probe_fn, &t) == 0 && pthread_equal(t, pthread_self());
}

struct fib {
    int n;
    long r;
};

static int fib_task(void *p)
{
    struct fib *f = p;
    if (f->n < 2) {
        f->r = f->n;
        return 0;
    }
    struct fib a = {f->n - 1, 0}, b = {f->n - 2, 0};
    int err = weft_join(fib_task, &a, fib_task, &b);
    f->r = a.r + b.r;
    return err;
}

static int count_task(void *p)
{
    atomic_fetch_add_explicit((_Atomic(long) *)p, 1, memory_order_relaxed);
    return 0;
}

static int count_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 16; i++)
        if (weft_spawn(s, count_task, arg) != 0)
            return -1;
    return 0;
}

/* ---- create / destroy ---------------------------------------------------------- */

Test(lifecycle, create_destroy_many, .timeout = 240)
{
    int n = SCALED(1000);
    if (n < 100)
        n = 100;
    for (int i = 0; i < n; i++) {
        weft_pool *p = mkpool(1 + (unsigned)i % 4);
        cr_assert_eq(weft_pool_threads(p), 1 + (unsigned)i % 4);
        if (i % 3 == 1) {
            struct fib f = {10, 0};
            cr_assert_eq(weft_run(p, fib_task, &f), 0);
            cr_assert_eq(f.r, 55);
        } else if (i % 3 == 2) {
            _Atomic(long) c = 0;
            cr_assert_eq(weft_scope_run(p, count_body, &c), 0);
            cr_assert_eq(atomic_load(&c), 16);
        }
        weft_pool_destroy(p);
    }
}

Test(lifecycle, destroy_with_no_work)
{
    for (unsigned t = 1; t <= 8; t++) {
        weft_pool *p = mkpool(t);
        weft_pool_destroy(p);
    }
    /* opts == NULL: all defaults. */
    weft_pool *p = NULL;
    cr_assert_eq(weft_pool_create(&p, NULL), 0);
    cr_assert_not_null(p);
    cr_assert_geq(weft_pool_threads(p), 1);
    weft_pool_destroy(p);
}

Test(lifecycle, destroy_right_after_work)
{
    /* Destroy as soon as the last run returns: the workers are still searching. */
    for (int i = 0; i < SCALED(200); i++) {
        weft_pool *p = mkpool(2);
        struct fib f = {15, 0};
        cr_assert_eq(weft_run(p, fib_task, &f), 0);
        cr_assert_eq(f.r, 610);
        weft_pool_destroy(p);
    }
}

/* Every test runs in a fresh process (both harnesses): no default pool exists yet
 * here, so weft_pool_stats(NULL) has none to read. */
Test(lifecycle, null_pool_functions)
{
    weft_pool_destroy(NULL); /* no-op */
    cr_assert_eq(weft_pool_threads(NULL), 0);
    weft_stats st;
    memset(&st, 0xff, sizeof(st));
    weft_pool_stats(NULL, &st);
    cr_assert_eq(st.spawns, 0);
    cr_assert_eq(st.steals, 0);
    cr_assert_eq(st.steal_fails, 0);
    cr_assert_eq(st.parks, 0);
    cr_assert_eq(st.wakeups, 0);
    cr_assert_eq(st.io_ops, 0);
    weft_pool *p = mkpool(1);
    weft_pool_stats(p, NULL); /* nowhere to write: must not crash */
    weft_pool_destroy(p);
}

/* Documented: destroy from one of the pool's own tasks warns and does nothing. */
static int destroy_own(void *p)
{
    weft_pool_destroy(p);
    return 5;
}

Test(lifecycle, destroy_from_own_task_is_refused)
{
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_run(p, destroy_own, p), 5);
    struct fib f = {12, 0};
    cr_assert_eq(weft_run(p, fib_task, &f), 0); /* still alive */
    cr_assert_eq(f.r, 144);
    weft_pool_destroy(p);
}

/* ---- weft_run from many outside threads at once ------------------------------- */

struct runner {
    weft_pool *pool;
    int rounds, id;
};

static _Atomic(long) run_total;

static void *runner_main(void *p)
{
    struct runner *r = p;
    for (int i = 0; i < r->rounds; i++) {
        struct fib f = {(i + r->id) % 12, -1};
        TCHECK(weft_run(r->pool, fib_task, &f) == 0);
        long want = 0, a = 0, b = 1;
        for (int k = 0; k < f.n; k++) {
            long t = a + b;
            a = b;
            b = t;
        }
        want = a;
        TCHECK(f.r == want);
        atomic_fetch_add_explicit(&run_total, 1, memory_order_relaxed);
    }
    return NULL;
}

static void run_from_threads(weft_pool *pool)
{
    pthread_t th[8];
    struct runner r[8];
    atomic_store(&run_total, 0);
    for (int i = 0; i < 8; i++) {
        r[i] = (struct runner){pool, SCALED(3000), i};
        cr_assert_eq(pthread_create(&th[i], NULL, runner_main, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&run_total), 8L * SCALED(3000));
}

Test(lifecycle, run_from_8_outside_threads, .timeout = 120)
{
    weft_pool *p = mkpool(2);
    run_from_threads(p);
    weft_pool_destroy(p);
}

Test(lifecycle, run_from_8_outside_threads_default_pool, .timeout = 120)
{
    run_from_threads(NULL);
}

/* ---- an idle pool uses no CPU ----------------------------------------------------- */

/* CPU time of one thread (any thread of this process), in seconds. */
static double thread_cpu_seconds(pthread_t th)
{
    clockid_t clk;
    struct timespec ts;
    if (pthread_getcpuclockid(th, &clk) != 0 || clock_gettime(clk, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double workers_cpu_seconds(weft_pool *p)
{
    double sum = 0;
    for (unsigned i = 0; i < weft_pool_threads(p); i++) {
        double c = thread_cpu_seconds(p->workers[i]->thread);
        cr_assert_geq(c, 0, "CPU clock of worker %u", i);
        sum += c;
    }
    return sum;
}

/* Once every worker has parked (waited for, not slept for), nothing wakes them: over
 * a second no worker wakes up or parks again, and their threads' own CPU clocks
 * (which load elsewhere on the machine does not inflate) stay put. */
Test(lifecycle, idle_pool_uses_no_cpu, .timeout = 60)
{
    weft_pool *p = mkpool(2);
    struct fib f = {20, 0};
    cr_assert_eq(weft_run(p, fib_task, &f), 0);
    _Atomic(long) c = 0;
    cr_assert_eq(weft_scope_run(p, count_body, &c), 0);
    cr_assert(wt_wait_parked(p, 2, 10000), "the idle workers did not all park in 10 s "
              "(%llu asleep)", (unsigned long long)wt_parked(p));
    weft_stats a, b;
    weft_pool_stats(p, &a);
    double before = workers_cpu_seconds(p);
    sleep_ms(1000); /* the idle spell observed (not a synchronisation) */
    double used = workers_cpu_seconds(p) - before;
    weft_pool_stats(p, &b);
    cr_log_info("idle pool: workers used %.2f ms CPU in 1 s", used * 1e3);
    cr_assert_eq(b.wakeups, a.wakeups, "an idle worker woke up");
    cr_assert_eq(b.parks, a.parks, "an idle worker parked again");
    cr_assert_eq(b.parks - b.wakeups, 2);
    /* A parked thread runs nothing; the bound only absorbs clock granularity. */
    cr_assert_lt(used, 0.005, "the parked workers used %.2f ms CPU in 1 s", used * 1e3);
    weft_pool_destroy(p);
}

/* ---- the default pool ------------------------------------------------------------ */

static void *get_default(void *p)
{
    *(weft_pool **)p = weft_default_pool();
    return NULL;
}

Test(lifecycle, default_pool_is_one_pool)
{
    /* Raced from several threads on first use: still one pool. */
    pthread_t th[4];
    weft_pool *got[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, get_default, &got[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    weft_pool *d = weft_default_pool();
    cr_assert_not_null(d);
    cr_assert_eq(weft_default_pool(), d);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(got[i], d);
    cr_assert_geq(weft_pool_threads(d), 1);
    /* NULL from outside any worker means the default pool. */
    pthread_t t;
    cr_assert_eq(weft_run(NULL, probe_fn, &t), 0);
    cr_assert(!pthread_equal(t, pthread_self()));
    struct fib f = {18, 0};
    cr_assert_eq(weft_run(NULL, fib_task, &f), 0);
    cr_assert_eq(f.r, 2584);
    /* weft_join from outside any task runs on the default pool. */
    struct fib a = {10, 0}, b = {11, 0};
    cr_assert_eq(weft_join(fib_task, &a, fib_task, &b), 0);
    cr_assert_eq(a.r + b.r, 144);
}

static int in_default(void *p)
{
    weft_pool *d = p;
    TCHECK(on_pool(d));
    TCHECK(weft_default_pool() == d);
    return 0;
}

Test(lifecycle, default_pool_inside_its_task)
{
    weft_pool *d = weft_default_pool();
    cr_assert_not_null(d);
    cr_assert_eq(weft_run(NULL, in_default, d), 0);
    ASSERT_NO_BAD();
}

/* ---- fork() ---------------------------------------------------------------------- */

static int must_not_run(void *p)
{
    (void)p;
    _exit(90); /* a callback on a dead pool ran */
}

static int must_not_run_body(weft_scope *s, void *arg)
{
    (void)s;
    (void)arg;
    _exit(91);
}

static int must_not_run_range(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    (void)lo;
    (void)hi;
    _exit(92);
}

/* The child's checks; returns the exit status (0: all good). */
static int child_checks(weft_pool *inherited)
{
    if (inherited) {
        if (weft_run(inherited, must_not_run, NULL) != -ECHILD)
            return 10;
        if (weft_scope_run(inherited, must_not_run_body, NULL) != -ECHILD)
            return 11;
        if (weft_par_for(inherited, 100, 0, must_not_run_range, NULL) != -ECHILD)
            return 12;
        weft_pool_destroy(inherited); /* only frees */
    }
    if (UNDER_TSAN)
        return 0;
    weft_pool *q = NULL;
    weft_pool_options o = {.threads = 2};
    if (weft_pool_create(&q, &o) != 0 || !q)
        return 20;
    struct fib f = {20, 0};
    if (weft_run(q, fib_task, &f) != 0 || f.r != 6765)
        return 21;
    _Atomic(long) c = 0;
    if (weft_scope_run(q, count_body, &c) != 0 || atomic_load(&c) != 16)
        return 22;
    weft_pool_destroy(q);
    weft_pool *d = weft_default_pool();
    if (!d)
        return 30;
    if (weft_default_pool() != d)
        return 31;
    struct fib g = {15, 0};
    if (weft_run(NULL, fib_task, &g) != 0 || g.r != 610)
        return 32;
    if (weft_run(d, fib_task, &g) != 0 || g.r != 610)
        return 33;
    return 0;
}

/* The one policy for fork() in these tests, in every build: fork only while every
 * other thread of the process sleeps where it holds no lock: each worker of each
 * pool parked (waited for through the counters, checks.h), outside callers waiting
 * in weft_run. Before LLVM 18 (llvm-project PR #75290) ASan's runtime installed no
 * pthread_atfork handler, so a child forked while a worker held an allocator lock
 * inherited that lock held and hung in its first malloc (seen twice in ~20 runs on
 * 2 loaded cores before this policy, when the fork tests were skipped under ASan);
 * GCC 12's libasan predates that fix. A parked worker sleeps in futex() or
 * io_uring_enter(), so none holds one then. */
static void quiesce_for_fork(weft_pool *pool, unsigned busy)
{
    unsigned want = weft_pool_threads(pool) - busy;
    cr_assert(wt_wait_parked(pool, want, 10000), "%u of %u workers parked before fork()",
              (unsigned)wt_parked(pool), want);
}

static int wait_child(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status))
        return 1000 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

Test(lifecycle, fork_child_gets_echild_and_new_pools, .timeout = 60)
{
    weft_pool *p = mkpool(2);
    weft_pool *d = weft_default_pool(); /* the child must get a fresh one */
    cr_assert_not_null(d);
    struct fib f = {15, 0};
    cr_assert_eq(weft_run(p, fib_task, &f), 0);
    cr_assert_eq(weft_run(d, fib_task, &f), 0);
    quiesce_for_fork(p, 0);
    quiesce_for_fork(d, 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int st = child_checks(p);
        if (st == 0 && weft_run(d, must_not_run, NULL) != -ECHILD)
            st = 40;
        _exit(st);
    }
    int st = wait_child(pid);
    cr_assert_eq(st, 0, "child failed check %d", st);
    /* The parent's pools are untouched. */
    cr_assert_eq(weft_run(p, fib_task, &f), 0);
    cr_assert_eq(weft_run(NULL, fib_task, &f), 0);
    cr_assert_eq(f.r, 610);
    weft_pool_destroy(p);
}

/* fork() from inside a task: the child's thread is no worker any more. */
static int fork_in_task(void *p)
{
    weft_pool *parent_pool = p;
    /* The other worker sleeps (quiesce_for_fork; no assertion on a worker thread). */
    if (!wt_wait_parked(parent_pool, weft_pool_threads(parent_pool) - 1, 10000))
        return 99;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int st = child_checks(NULL);
        if (st == 0 && weft_run(parent_pool, must_not_run, NULL) != -ECHILD)
            st = 50;
        _exit(st);
    }
    return wait_child(pid);
}

Test(lifecycle, fork_inside_task, .timeout = 60)
{
    weft_pool *p = mkpool(2);
    fflush(NULL);
    int st = weft_run(p, fork_in_task, p);
    cr_assert_eq(st, 0, "child failed check %d", st);
    weft_pool_destroy(p);
}

/* In the child an inherited pool is only freed: leak-checked here under ASan. The
 * child cannot simply exit(): that would run the harness's own atexit handlers
 * (Criterion's, in its test process) in a second process; so it asks LeakSanitizer
 * for a check of its own and then _exits. The pool had run spawns, joins, I/O and
 * suspensions, so frames, stacks, rings or blocking threads' state all exist. */
static int io_and_sleep(void *p)
{
    (void)p;
    char buf[16];
    int fd = weft_open("/dev/zero", O_RDONLY, 0);
    if (fd < 0 || weft_read(fd, buf, sizeof(buf), -1) != (ssize_t)sizeof(buf))
        return -EIO;
    if (weft_sleep(1000000) != 0)
        return -EIO;
    return weft_close(fd);
}

static int busy_pool_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 64; i++)
        if (weft_spawn(s, i % 8 ? count_task : io_and_sleep, arg) != 0)
            return -1;
    return 0;
}

Test(lifecycle, fork_child_frees_inherited_pool_without_leaks, .timeout = 60)
{
    for (unsigned flags = 0; flags <= WEFT_POOL_NO_URING; flags += WEFT_POOL_NO_URING) {
        weft_pool *p = NULL;
        weft_pool_options o = {.threads = 2, .flags = flags};
        cr_assert_eq(weft_pool_create(&p, &o), 0);
        _Atomic(long) c = 0;
        cr_assert_eq(weft_scope_run(p, busy_pool_body, &c), 0);
        struct fib f = {15, 0};
        cr_assert_eq(weft_run(p, fib_task, &f), 0);
        quiesce_for_fork(p, 0);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            int st = 0;
            if (weft_run(p, must_not_run, NULL) != -ECHILD)
                st = 10;
            weft_pool_destroy(p); /* only frees */
            p = NULL;
#if UNDER_ASAN
            if (st == 0 && __lsan_do_recoverable_leak_check() != 0)
                st = 60; /* LeakSanitizer printed the leak on stderr */
#endif
            _exit(st);
        }
        int st = wait_child(pid);
        cr_assert_eq(st, 0, "flags %#x: child failed check %d (60: a leak)", flags, st);
        weft_pool_destroy(p);
    }
}

/* ---- signals ---------------------------------------------------------------------- */

static const int async_sigs[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP, SIGALRM,
                                 SIGCHLD, SIGPIPE, SIGQUIT};
static const int sync_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};

static int check_mask(void *p)
{
    (void)p;
    sigset_t set;
    sigemptyset(&set);
    TCHECK(pthread_sigmask(SIG_BLOCK, NULL, &set) == 0);
    for (size_t k = 0; k < sizeof(async_sigs) / sizeof(async_sigs[0]); k++)
        TCHECK(sigismember(&set, async_sigs[k]) == 1);
    for (size_t k = 0; k < sizeof(sync_sigs) / sizeof(sync_sigs[0]); k++)
        TCHECK(sigismember(&set, sync_sigs[k]) == 0);
    return 0;
}

static int mask_body(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        TCHECK(weft_spawn(s, check_mask, NULL) == 0);
    return 0;
}

Test(lifecycle, workers_block_async_signals)
{
    sigset_t before, after;
    pthread_sigmask(SIG_BLOCK, NULL, &before);
    cr_assert_eq(sigismember(&before, SIGINT), 0, "test thread starts with SIGINT open");
    weft_pool *p = mkpool(4);
    /* The creating thread's own mask is unchanged. */
    pthread_sigmask(SIG_BLOCK, NULL, &after);
    for (int s = 1; s < 32; s++)
        cr_assert_eq(sigismember(&before, s), sigismember(&after, s), "signal %d", s);
    cr_assert_eq(weft_scope_run(p, mask_body, NULL), 0);
    cr_assert_eq(weft_run(p, check_mask, NULL), 0);
    ASSERT_NO_BAD();
    weft_pool_destroy(p);
}

static volatile sig_atomic_t usr1_hits;
static _Atomic(int) usr1_on_worker;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_hits++;
    /* Any weft worker runs with weft__self set; the handler must not run there. */
    if (weft__self)
        atomic_store(&usr1_on_worker, 1);
}

static int busy_task(void *p)
{
    (void)p;
    for (volatile int k = 0; k < 20000; k++)
        ;
    return 0;
}

static int busy_body(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++)
        TCHECK(weft_spawn(s, busy_task, NULL) == 0);
    return 0;
}

/* A process-directed signal that the test thread blocks stays pending while the
 * workers run and sleep (they block it too), and is handled by the test thread once
 * it unblocks it. */
Test(lifecycle, process_signal_not_taken_by_workers, .timeout = 60)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    /* The pool is created while this thread has SIGUSR1 open, so workers that just
     * inherited the creator's mask would take the signal below. */
    weft_pool *p = mkpool(4);
    cr_assert_eq(weft_scope_run(p, busy_body, NULL), 0); /* the workers have started */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, &old);
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    for (int r = 0; r < 5; r++) {
        cr_assert_eq(weft_scope_run(p, busy_body, NULL), 0);
        /* Every worker goes idle and sleeps while the signal is pending (a worker
         * that took it would run the handler now). Waited for, not slept for. */
        cr_assert(wt_wait_parked(p, 4, 10000), "round %d: the workers did not park", r);
    }
    cr_assert_eq(usr1_hits, 0, "SIGUSR1 was handled while the test thread blocked it");
    pthread_sigmask(SIG_SETMASK, &old, NULL); /* delivered here, now */
    /* (TSan defers handlers to its next interception point: give it one.) */
    double end = wt_now_ms() + 10000;
    while (usr1_hits == 0 && wt_now_ms() < end)
        wt_poll_pause();
    cr_assert_eq(usr1_hits, 1);
    cr_assert_eq(atomic_load(&usr1_on_worker), 0);
    ASSERT_NO_BAD();
    weft_pool_destroy(p);
    signal(SIGUSR1, SIG_DFL);
}

/* ---- WEFT_NUM_THREADS ------------------------------------------------------------- */

static unsigned threads_with_env(const char *val, unsigned opt)
{
    if (val)
        setenv("WEFT_NUM_THREADS", val, 1);
    else
        unsetenv("WEFT_NUM_THREADS");
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = opt};
    int r = weft_pool_create(&p, &o);
    unsetenv("WEFT_NUM_THREADS");
    cr_assert_eq(r, 0, "create with WEFT_NUM_THREADS=%s", val ? val : "(unset)");
    unsigned n = weft_pool_threads(p);
    weft_pool_destroy(p);
    return n;
}

Test(lifecycle, weft_num_threads_env)
{
    unsigned def = threads_with_env(NULL, 0);
    cr_assert_geq(def, 1);
    cr_assert_eq(threads_with_env("3", 0), 3);
    cr_assert_eq(threads_with_env("1", 0), 1);
    cr_assert_eq(threads_with_env("7", 0), 7);
    /* An explicit option beats the environment. */
    cr_assert_eq(threads_with_env("3", 2), 2);
    /* Garbage is ignored (with a warning): the default count. */
    static const char *garbage[] = {"abc", "-1", "0", "3x", "", " ", "0x4", "1.5",
                                    "99999999999999999999999"};
    for (size_t k = 0; k < sizeof(garbage) / sizeof(garbage[0]); k++)
        cr_assert_eq(threads_with_env(garbage[k], 0), def, "WEFT_NUM_THREADS='%s'", garbage[k]);
    /* Read at each creation: unset again gives the default. */
    cr_assert_eq(threads_with_env(NULL, 0), def);
}

/* weft_pool_stats(NULL): the calling worker's pool, else the default pool. */
static int stats_in_task(void *p)
{
    weft_stats a, b;
    weft_pool_stats(NULL, &a);
    weft_pool_stats(p, &b);
    TCHECK(a.spawns == 100 && b.spawns == 100);
    return 0;
}

static int spawn100(weft_scope *s, void *arg)
{
    for (int i = 0; i < 100; i++)
        if (weft_spawn(s, count_task, arg) != 0)
            return -1;
    return 0;
}

Test(lifecycle, stats_null_means_callers_pool)
{
    weft_pool *p = mkpool(2);
    _Atomic(long) c = 0;
    cr_assert_eq(weft_scope_run(p, spawn100, &c), 0);
    cr_assert_eq(atomic_load(&c), 100);
    cr_assert_eq(weft_run(p, stats_in_task, p), 0);
    ASSERT_NO_BAD();
    weft_pool_destroy(p);

    weft_pool *d = weft_default_pool();
    cr_assert_not_null(d);
    cr_assert_eq(weft_scope_run(NULL, count_body, &c), 0);
    weft_stats a, b;
    weft_pool_stats(NULL, &a); /* outside any worker: the default pool */
    weft_pool_stats(d, &b);
    cr_assert_geq(a.spawns, 16);
    cr_assert_eq(a.spawns, b.spawns);
}
