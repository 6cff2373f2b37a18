/* SPDX-License-Identifier: MIT */
/*
 * Child processes and blocking calls: weft_waitpid (many children waited on by
 * tasks without a thread each, statuses, pipes, -ECHILD, WNOHANG, cancellation),
 * weft_posix_spawnp (the child's signal mask is the pool creator's, SIGTERM ends a
 * child spawned from a task) and weft_run_blocking (blocking calls do not hold
 * workers). Both backends: run again with WEFT_IO=blocking (meson --setup=blocking).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "checks.h"
#include "reactor.h" /* testing hooks: weft__blocking_threads */

extern char **environ;

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Spawn argv (through weft_posix_spawnp), stdout to out_fd if >= 0, stdin from
 * in_fd if >= 0. */
static int spawn(pid_t *pid, char *const argv[], int in_fd, int out_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    int r = weft_posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return r;
}

/* ---- 1 000 children ------------------------------------------------------------- */

struct many {
    _Atomic(int) ok, bad, inflight, max_inflight, max_threads;
};

static int child_task(void *p)
{
    struct many *m = p;
    static char *const argv[] = {"/bin/true", NULL};
    pid_t pid;
    int r = spawn(&pid, argv, -1, -1);
    TCHECK(r == 0);
    if (r)
        return r;
    int in = atomic_fetch_add(&m->inflight, 1) + 1;
    int mx = atomic_load(&m->max_inflight);
    while (in > mx && !atomic_compare_exchange_weak(&m->max_inflight, &mx, in))
        ;
    int st = -1;
    r = weft_waitpid(pid, &st, 0);
    atomic_fetch_sub(&m->inflight, 1);
    if (pid % 16 == 0) {
        int t = count_threads(), mt = atomic_load(&m->max_threads);
        while (t > mt && !atomic_compare_exchange_weak(&m->max_threads, &mt, t))
            ;
    }
    if (r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        atomic_fetch_add(&m->ok, 1);
    else
        atomic_fetch_add(&m->bad, 1);
    return 0;
}

static int many_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < SCALED(1000); i++)
        if (weft_spawn(s, child_task, arg) != 0)
            return -1;
    return 0;
}

Test(proc, thousand_children_no_thread_each)
{
    weft_pool *p = mkpool(2);
    int base = count_threads();
    struct many m = {0};
    cr_assert_eq(weft_scope_run(p, many_body, &m), 0);
    cr_assert_eq(atomic_load(&m.ok), SCALED(1000));
    cr_assert_eq(atomic_load(&m.bad), 0);
    /* No blocking thread at all (pidfds on the ring, or in the one poller). */
    cr_assert_eq(weft__blocking_threads(p), 0u);
    cr_assert_leq(atomic_load(&m.max_threads), base + 1, "threads: base %d", base);
    cr_log_info("children waited on at once: up to %d", atomic_load(&m.max_inflight));
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

/* ---- statuses, pipes ------------------------------------------------------------ */

struct one {
    char *const *argv;
    int out_fd, in_fd;
    int r, st;
    pid_t pid;
};

static int run_one(void *p)
{
    struct one *o = p;
    int r = spawn(&o->pid, o->argv, o->in_fd, o->out_fd);
    if (r) {
        o->r = r;
        return 0;
    }
    o->r = weft_waitpid(o->pid, &o->st, 0);
    return 0;
}

/* A child that exits 7 and one that kills itself with the signal kill_cmd sends
 * (sig): weft_waitpid in a task on p reports both statuses. */
static void exit_and_signal(weft_pool *p, const char *kill_cmd, int sig)
{
    char *const exit7[] = {"sh", "-c", "exit 7", NULL};
    struct one o = {.argv = exit7, .in_fd = -1, .out_fd = -1};
    cr_assert_eq(weft_run(p, run_one, &o), 0);
    cr_assert_eq(o.r, o.pid);
    cr_assert(WIFEXITED(o.st) && WEXITSTATUS(o.st) == 7, "status %#x", o.st);

    char *const killed[] = {"sh", "-c", (char *)kill_cmd, NULL};
    struct one k = {.argv = killed, .in_fd = -1, .out_fd = -1};
    cr_assert_eq(weft_run(p, run_one, &k), 0);
    cr_assert_eq(k.r, k.pid);
    cr_assert(WIFSIGNALED(k.st) && WTERMSIG(k.st) == sig, "status %#x", k.st);
}

Test(proc, exit_status_and_signal)
{
    weft_pool *p = mkpool(2);
    exit_and_signal(p, "kill -KILL $$", SIGKILL);
    weft_pool_destroy(p);
}

struct piped {
    char buf[256];
    ssize_t len;
    int r, st;
};

static int piped_task(void *arg)
{
    struct piped *pp = arg;
    int fds[2];
    TCHECK(pipe2(fds, O_CLOEXEC) == 0);
    char *const argv[] = {"echo", "hello", "weft", NULL};
    pid_t pid;
    int r = spawn(&pid, argv, -1, fds[1]);
    close(fds[1]);
    TCHECK(r == 0);
    pp->len = 0;
    for (;;) {
        ssize_t n = weft_read(fds[0], pp->buf + pp->len, sizeof(pp->buf) - 1 - (size_t)pp->len, -1);
        TCHECK(n >= 0);
        if (n <= 0)
            break;
        pp->len += n;
    }
    pp->buf[pp->len] = 0;
    close(fds[0]);
    pp->r = weft_waitpid(pid, &pp->st, 0) == pid;
    return 0;
}

Test(proc, output_through_pipe)
{
    weft_pool *p = mkpool(2);
    struct piped pp = {0};
    cr_assert_eq(weft_run(p, piped_task, &pp), 0);
    cr_assert_eq(strcmp(pp.buf, "hello weft\n"), 0, "got '%s'", pp.buf);
    cr_assert(pp.r && WIFEXITED(pp.st) && WEXITSTATUS(pp.st) == 0);
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

/* ---- errors --------------------------------------------------------------------- */

struct echild {
    pid_t reaped;
    int not_child, reaped_r, einval0, einval_neg, einval_opt;
};

static int echild_task(void *arg)
{
    struct echild *e = arg;
    e->not_child = weft_waitpid(getpid(), NULL, 0);
    e->reaped_r = weft_waitpid(e->reaped, NULL, 0);
    e->einval0 = weft_waitpid(0, NULL, 0);
    e->einval_neg = weft_waitpid(-1, NULL, 0);
    e->einval_opt = weft_waitpid(e->reaped, NULL, WUNTRACED);
    return 0;
}

Test(proc, echild_and_einval)
{
    /* Outside a task. */
    cr_assert_eq(weft_waitpid(getpid(), NULL, 0), -ECHILD);
    cr_assert_eq(weft_waitpid(0, NULL, 0), -EINVAL);
    cr_assert_eq(weft_waitpid(-1, NULL, WNOHANG), -EINVAL);
    cr_assert_eq(weft_waitpid(1, NULL, 0x1000), -EINVAL);
    /* A child reaped elsewhere first. */
    char *const argv[] = {"/bin/true", NULL};
    pid_t pid;
    cr_assert_eq(weft_posix_spawnp(&pid, "/bin/true", NULL, NULL, argv, environ), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    weft_pool *p = mkpool(2);
    struct echild e = {.reaped = pid};
    cr_assert_eq(weft_run(p, echild_task, &e), 0);
    cr_assert_eq(e.not_child, -ECHILD);
    cr_assert_eq(e.reaped_r, -ECHILD);
    cr_assert_eq(e.einval0, -EINVAL);
    cr_assert_eq(e.einval_neg, -EINVAL);
    cr_assert_eq(e.einval_opt, -EINVAL);
    cr_assert_eq(weft_waitpid(pid, NULL, 0), -ECHILD); /* outside: reaped */
    /* spawnp's own errors, and bad input. */
    struct one o = {.argv = (char *const[]){"/nonexistent/weft-no-such", NULL},
                    .in_fd = -1, .out_fd = -1};
    cr_assert_eq(weft_run(p, run_one, &o), 0);
    cr_assert_eq(o.r, -ENOENT);
    cr_assert_eq(weft_posix_spawnp(&pid, NULL, NULL, NULL, argv, environ), -EINVAL);
    cr_assert_eq(weft_posix_spawnp(&pid, "true", NULL, NULL, NULL, environ), -EINVAL);
    weft_pool_destroy(p);
}

/* SIGCHLD ignored: the kernel reaps, the wait says -ECHILD (and never touches the
 * disposition). */
struct ign {
    pid_t pid;
    int wfd;
    _Atomic(int) waiting;
    int r;
};

static int ign_task(void *arg)
{
    struct ign *g = arg;
    atomic_store(&g->waiting, 1);
    g->r = weft_waitpid(g->pid, NULL, 0);
    return 0;
}

static int ign_body(weft_scope *s, void *arg)
{
    struct ign *g = arg;
    int r = weft_spawn(s, ign_task, g);
    if (r)
        return r;
    /* Close cat's stdin once the task is (about to be) waiting: whether it waits
     * in the reactor or finds cat gone, the kernel has reaped cat: -ECHILD. */
    while (!atomic_load(&g->waiting))
        sched_yield();
    close(g->wfd);
    return 0;
}

Test(proc, sigchld_ignored_is_echild)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &ign, &old), 0);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    char *const argv[] = {"cat", NULL};
    struct ign g = {0};
    cr_assert_eq(spawn(&g.pid, argv, fds[0], -1), 0);
    close(fds[0]);
    g.wfd = fds[1];
    weft_pool *p = mkpool(2);
    cr_assert_eq(weft_scope_run(p, ign_body, &g), 0);
    weft_pool_destroy(p);
    cr_assert_eq(g.r, -ECHILD);
    struct sigaction now;
    cr_assert_eq(sigaction(SIGCHLD, &old, &now), 0);
    cr_assert(now.sa_handler == SIG_IGN, "the disposition was changed");
}

/* ---- WNOHANG, cancellation ------------------------------------------------------ */

struct nohang {
    int rfd, wfd;
    pid_t pid;
    int first, last, st, polls;
};

static int nohang_task(void *arg)
{
    struct nohang *n = arg;
    char *const argv[] = {"cat", NULL};
    TCHECK(spawn(&n->pid, argv, n->rfd, -1) == 0);
    close(n->rfd);
    n->first = weft_waitpid(n->pid, &n->st, WNOHANG); /* cat waits for its stdin */
    close(n->wfd);
    uint64_t t0 = now_ms();
    do {
        n->last = weft_waitpid(n->pid, &n->st, WNOHANG);
        n->polls++;
        if (n->last == 0)
            weft_sleep(1000000);
    } while (n->last == 0 && now_ms() - t0 < 30000); /* watchdog only */
    return 0;
}

Test(proc, wnohang)
{
    weft_pool *p = mkpool(2);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    struct nohang n = {.rfd = fds[0], .wfd = fds[1]};
    cr_assert_eq(weft_run(p, nohang_task, &n), 0);
    cr_assert_eq(n.first, 0);
    cr_assert_eq(n.last, n.pid);
    cr_assert(WIFEXITED(n.st) && WEXITSTATUS(n.st) == 0);
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

struct cancel_wait {
    pid_t pid;
    _Atomic(int) waiting;
    int r;
};

static int cancel_wait_task(void *arg)
{
    struct cancel_wait *c = arg;
    atomic_store(&c->waiting, 1);
    c->r = weft_waitpid(c->pid, NULL, 0);
    return c->r == -ECANCELED ? 0 : -1;
}

static int cancel_wait_body(weft_scope *s, void *arg)
{
    struct cancel_wait *c = arg;
    weft_stats st0;
    weft_pool_stats(NULL, &st0);
    int r = weft_spawn(s, cancel_wait_task, c);
    if (r)
        return r;
    while (!atomic_load(&c->waiting))
        sched_yield();
    /* Give the wait time to reach the reactor: not needed for the result (a wait
     * that starts after the cancel returns -ECANCELED too), only so that the test
     * usually cancels a wait in flight. */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    weft_scope_cancel(s, -EIO);
    return 0;
}

/* Closes the pipe after a while if the scope never returns, so a broken cancel
 * fails the test instead of hanging it. */
struct dog {
    int fd;
    _Atomic(int) done;
};

static void *dog_main(void *arg)
{
    struct dog *d = arg;
    uint64_t t0 = now_ms();
    while (!atomic_load(&d->done) && now_ms() - t0 < 20000) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!atomic_load(&d->done))
        close(d->fd);
    return NULL;
}

Test(proc, cancel_leaves_child_unreaped)
{
    weft_pool *p = mkpool(2);
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    char *const argv[] = {"cat", NULL};
    struct cancel_wait c = {0};
    cr_assert_eq(spawn(&c.pid, argv, fds[0], -1), 0);
    close(fds[0]);
    struct dog d = {.fd = fds[1]};
    pthread_t dt;
    cr_assert_eq(pthread_create(&dt, NULL, dog_main, &d), 0);
    int r = weft_scope_run(p, cancel_wait_body, &c);
    atomic_store(&d.done, 1);
    pthread_join(dt, NULL);
    cr_assert_eq(r, -EIO);
    cr_assert_eq(c.r, -ECANCELED);
    /* cat is still ours to reap: end it and reap it. */
    int st;
    cr_assert_eq(waitpid(c.pid, &st, WNOHANG), 0, "reaped behind our back");
    close(fds[1]);
    cr_assert_eq(waitpid(c.pid, &st, 0), c.pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    weft_pool_destroy(p);
}

/* ---- without pidfd_open (before Linux 5.3): blocking threads wait ------------- */

struct fb_cancel {
    struct cancel_wait c;
    int wfd;
};

static int fb_cancel_body(weft_scope *s, void *arg)
{
    struct fb_cancel *f = arg;
    int r = cancel_wait_body(s, &f->c);
    /* The blocking thread's wait cannot be interrupted: end the child too. */
    close(f->wfd);
    return r;
}

static int few_body(weft_scope *s, void *arg)
{
    for (int i = 0; i < 40; i++)
        if (weft_spawn(s, child_task, arg) != 0)
            return -1;
    return 0;
}

Test(proc, without_pidfd)
{
    atomic_store(&weft__proc_no_pidfd, true);
    weft_pool *p = mkpool(2);
    exit_and_signal(p, "kill -TERM $$", SIGTERM);
    /* More children than blocking threads: the waits queue for them. */
    struct many m = {0};
    cr_assert_eq(weft_scope_run(p, few_body, &m), 0);
    cr_assert_eq(atomic_load(&m.ok), 40);
    cr_assert_leq(weft__blocking_threads(p), 4u); /* max(4, 2 x 2 workers) */
    cr_assert_geq(weft__blocking_threads(p), 1u); /* they did the waiting */
    /* A cancelled wait leaves the child unreaped here too. */
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    char *const argv[] = {"cat", NULL};
    struct fb_cancel f = {.wfd = fds[1]};
    cr_assert_eq(spawn(&f.c.pid, argv, fds[0], -1), 0);
    close(fds[0]);
    cr_assert_eq(weft_scope_run(p, fb_cancel_body, &f), -EIO);
    cr_assert_eq(f.c.r, -ECANCELED);
    int st;
    cr_assert_eq(waitpid(f.c.pid, &st, 0), f.c.pid, "reaped behind our back");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    weft_pool_destroy(p);
    atomic_store(&weft__proc_no_pidfd, false);
    ASSERT_NO_BAD();
}

/* ---- signal masks --------------------------------------------------------------- */

/* The child's SigBlk line, as grep prints it from /proc/self/status. */
struct sigblk {
    const posix_spawnattr_t *attr;
    bool plain;               /* posix_spawnp itself (the trap) */
    char line[128];
    int r;
};

static int sigblk_task(void *arg)
{
    struct sigblk *b = arg;
    int fds[2];
    TCHECK(pipe2(fds, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    char *const argv[] = {"grep", "SigBlk", "/proc/self/status", NULL};
    pid_t pid;
    b->r = b->plain ? -posix_spawnp(&pid, "grep", &fa, b->attr, argv, environ)
                    : weft_posix_spawnp(&pid, "grep", &fa, b->attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (b->r) {
        close(fds[0]);
        return 0;
    }
    size_t len = 0;
    ssize_t n;
    while ((n = weft_read(fds[0], b->line + len, sizeof(b->line) - 1 - len, -1)) > 0)
        len += (size_t)n;
    b->line[len] = 0;
    close(fds[0]);
    int st;
    TCHECK(weft_waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return 0;
}

static void expect_line(const sigset_t *set, char *out, size_t size)
{
    unsigned long long bits = 0;
    for (int sig = 1; sig <= 64; sig++)
        if (sigismember(set, sig) == 1)
            bits |= 1ull << (sig - 1);
    snprintf(out, size, "SigBlk:\t%016llx\n", bits);
}

Test(proc, child_gets_creator_sigmask)
{
    /* The creating thread blocks SIGUSR2 only. */
    sigset_t creator, saved;
    sigemptyset(&creator);
    sigaddset(&creator, SIGUSR2);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, &creator, &saved), 0);
    weft_pool *p = mkpool(2);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, &saved, NULL), 0);
    char want[64];
    expect_line(&creator, want, sizeof(want));

    struct sigblk b = {0};
    cr_assert_eq(weft_run(p, sigblk_task, &b), 0);
    cr_assert_eq(b.r, 0);
    cr_assert_eq(strcmp(b.line, want), 0, "child: '%s', want '%s'", b.line, want);

    /* A caller's attr without SETSIGMASK: the creator's mask too; attr untouched. */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGUSR1);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    struct sigblk b2 = {.attr = &attr};
    cr_assert_eq(weft_run(p, sigblk_task, &b2), 0);
    cr_assert_eq(b2.r, 0);
    cr_assert_eq(strcmp(b2.line, want), 0, "child: '%s', want '%s'", b2.line, want);
    short fl = 0;
    posix_spawnattr_getflags(&attr, &fl);
    cr_assert_eq(fl, POSIX_SPAWN_SETSIGDEF, "the caller's attr was modified");

    /* An attr that sets the mask itself wins. */
    sigset_t own;
    sigemptyset(&own);
    sigaddset(&own, SIGUSR1);
    sigaddset(&own, SIGHUP);
    posix_spawnattr_setsigmask(&attr, &own);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    struct sigblk b3 = {.attr = &attr};
    cr_assert_eq(weft_run(p, sigblk_task, &b3), 0);
    char want_own[64];
    expect_line(&own, want_own, sizeof(want_own));
    cr_assert_eq(strcmp(b3.line, want_own), 0, "child: '%s', want '%s'", b3.line, want_own);
    posix_spawnattr_destroy(&attr);

    /* The trap itself: plain posix_spawnp from a task passes the worker's mask on. */
    struct sigblk b4 = {.plain = true};
    cr_assert_eq(weft_run(p, sigblk_task, &b4), 0);
    cr_assert_eq(b4.r, 0);
    cr_assert_neq(strcmp(b4.line, want), 0, "workers do not block signals?");
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

struct term {
    int r, st;
};

static int term_task(void *arg)
{
    struct term *t = arg;
    char *const argv[] = {"sleep", "20", NULL};
    pid_t pid;
    t->r = spawn(&pid, argv, -1, -1);
    if (t->r)
        return 0;
    TCHECK(kill(pid, SIGTERM) == 0);
    t->r = weft_waitpid(pid, &t->st, 0) == pid ? 0 : -1;
    return 0;
}

Test(proc, sigterm_ends_child_spawned_from_task)
{
    weft_pool *p = mkpool(2);
    struct term t = {0};
    uint64_t t0 = now_ms();
    cr_assert_eq(weft_run(p, term_task, &t), 0);
    cr_assert_eq(t.r, 0);
    /* A child with SIGTERM blocked would sleep its 20 s and exit 0. */
    cr_assert(WIFSIGNALED(t.st) && WTERMSIG(t.st) == SIGTERM, "status %#x", t.st);
    cr_assert_lt(now_ms() - t0, 15000u); /* watchdog only */
    weft_pool_destroy(p);
    ASSERT_NO_BAD();
}

/* ---- weft_run_blocking ---------------------------------------------------------- */

/* A barrier with a watchdog: -ETIMEDOUT instead of a hang. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, arrived;
    bool open;
};

static int gate_arrive(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    if (++g->arrived == g->n) {
        g->open = true;
        pthread_cond_broadcast(&g->cv);
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    int r = 0;
    while (!g->open && r == 0)
        r = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
    int ok = g->open ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

struct rb {
    struct gate gate;
    _Atomic(int) on_blocking, results;
};

static int rb_fn(void *arg)
{
    struct rb *b = arg;
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (strcmp(name, "weft-blocking") == 0)
        atomic_fetch_add(&b->on_blocking, 1);
    return gate_arrive(&b->gate) == 0 ? 7 : -ETIMEDOUT;
}

static int rb_task(void *arg)
{
    struct rb *b = arg;
    int r = weft_run_blocking(rb_fn, b);
    if (r == 7)
        atomic_fetch_add(&b->results, 1);
    return r == 7 ? 0 : r;
}

static int plain_gate_task(void *arg)
{
    struct rb *b = arg;
    return gate_arrive(&b->gate); /* blocks one worker: the others must do the rest */
}

static int rb_body(weft_scope *s, void *arg)
{
    struct rb *b = arg;
    int r = weft_spawn(s, plain_gate_task, b);
    for (int i = 0; i < 4 && r == 0; i++)
        r = weft_spawn(s, rb_task, b);
    return r;
}

Test(proc, run_blocking_does_not_hold_workers)
{
    /* 2 workers, 4 calls blocked at once in fn plus a task blocked in the same
     * barrier: only possible if the waiting tasks hold no worker. */
    weft_pool *p = mkpool(2);
    struct rb b = {.gate = {.n = 5}};
    pthread_mutex_init(&b.gate.mu, NULL);
    pthread_cond_init(&b.gate.cv, NULL);
    cr_assert_eq(weft_scope_run(p, rb_body, &b), 0);
    cr_assert_eq(atomic_load(&b.results), 4);
    cr_assert_eq(atomic_load(&b.on_blocking), 4);
    cr_assert_geq(weft__blocking_threads(p), 4u);
    weft_pool_destroy(p);
    pthread_mutex_destroy(&b.gate.mu);
    pthread_cond_destroy(&b.gate.cv);
}

static int ret_self(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return 42;
}

static _Atomic(int) never_calls;

static int never(void *arg)
{
    (void)arg;
    atomic_fetch_add(&never_calls, 1);
    return 0;
}

static int rb_cancelled_body(weft_scope *s, void *arg)
{
    weft_scope_cancel(s, -EIO);
    *(int *)arg = weft_run_blocking(never, NULL);
    return 0;
}

static int rb_in_cancelled(void *arg)
{
    return weft_scope_run(NULL, rb_cancelled_body, arg) == -EIO ? 0 : -1;
}

struct rbc {
    struct gate gate;             /* the running calls wait here */
    _Atomic(int) started, queued_r, ran_r7;
    weft_scope *s;
};

static int rbc_fn(void *arg)
{
    struct rbc *c = arg;
    atomic_fetch_add(&c->started, 1);
    gate_arrive(&c->gate);
    return 7;
}

static int rbc_running(void *arg)
{
    struct rbc *c = arg;
    if (weft_run_blocking(rbc_fn, c) == 7)
        atomic_fetch_add(&c->ran_r7, 1);
    return 0;
}

static int rbc_queued(void *arg)
{
    struct rbc *c = arg;
    atomic_store(&c->queued_r, weft_run_blocking(never, NULL));
    return 0;
}

static int rbc_body(weft_scope *s, void *arg)
{
    struct rbc *c = arg;
    unsigned nb = 4; /* max(4, 2 x 2 workers) */
    for (unsigned i = 0; i < nb; i++)
        if (weft_spawn(s, rbc_running, c) != 0)
            return -1;
    uint64_t t0 = now_ms();
    while (atomic_load(&c->started) < (int)nb && now_ms() - t0 < 20000)
        sched_yield();
    if (weft_spawn(s, rbc_queued, c) != 0)
        return -1;
    /* Let the queued call reach the queue (not needed for the result). */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    weft_scope_cancel(s, -EIO);
    /* Now let the running calls finish: they run to completion. */
    pthread_mutex_lock(&c->gate.mu);
    c->gate.open = true;
    pthread_cond_broadcast(&c->gate.cv);
    pthread_mutex_unlock(&c->gate.mu);
    return 0;
}

Test(proc, run_blocking_outside_errors_cancel)
{
    pthread_t t;
    cr_assert_eq(weft_run_blocking(ret_self, &t), 42);
    cr_assert(pthread_equal(t, pthread_self()));
    cr_assert_eq(weft_run_blocking(NULL, NULL), -EINVAL);

    weft_pool *p = mkpool(2);
    int inc = 0;
    cr_assert_eq(weft_run(p, rb_in_cancelled, &inc), 0);
    cr_assert_eq(inc, -ECANCELED);

    struct rbc c = {.gate = {.n = 1000}};
    pthread_mutex_init(&c.gate.mu, NULL);
    pthread_cond_init(&c.gate.cv, NULL);
    atomic_store(&c.queued_r, 1);
    cr_assert_eq(weft_scope_run(p, rbc_body, &c), -EIO);
    cr_assert_eq(atomic_load(&c.ran_r7), 4);           /* ran to completion */
    cr_assert_eq(atomic_load(&c.queued_r), -ECANCELED); /* never started */
    cr_assert_eq(atomic_load(&never_calls), 0);
    weft_pool_destroy(p);
    pthread_mutex_destroy(&c.gate.mu);
    pthread_cond_destroy(&c.gate.cv);
}
