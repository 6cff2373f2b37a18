/* SPDX-License-Identifier: MIT */
/*
 * Child processes and blocking calls from tasks: weft_waitpid, weft_posix_spawnp,
 * weft_run_blocking. All three ride on the reactor's operations (io.c's
 * weft__op_run): the task suspends, its worker runs other work, and a cancelled
 * scope ends the wait with -ECANCELED through the scope's list of operations.
 *
 * weft_waitpid inside a task: one waitpid(pid, WNOHANG) first (a child that has
 * already exited costs one syscall); then a pidfd (pidfd_open, Linux 5.3) is waited
 * on as "readable" - IORING_OP_POLL_ADD on the worker's ring, or the blocking
 * backend's poller thread, which completes it there: no thread per child either
 * way - and waitid(P_PIDFD, WEXITED | WNOHANG) reaps exactly that process (no
 * confusion with a recycled pid) and its siginfo becomes a waitpid-style status.
 * Where pidfd_open is missing (ENOSYS), a blocking thread waits with
 * waitid(P_PID, WNOWAIT), and the task reaps when it resumes, so a cancelled wait
 * leaves the child unreaped there too (such a wait cannot be interrupted: it ends
 * when the child exits). The library never waits for -1 or a process group and
 * never touches SIGCHLD: with SIGCHLD ignored the kernel reaps the child itself,
 * and the wait returns -ECHILD.
 *
 * weft_posix_spawnp: worker threads block asynchronous signals (pool.c), and a
 * child inherits its spawner's mask: started from a task, it would ignore SIGINT
 * and SIGTERM. So the child gets the mask of the thread that created the pool
 * (recorded in the pool), unless the caller's attr sets POSIX_SPAWN_SETSIGMASK.
 * The caller's attr is never modified: a copy carries the mask. glibc's and musl's
 * posix_spawnattr_t are plain values (flags, process group, two signal sets,
 * scheduling), so a struct copy is a faithful copy; building a fresh attr through
 * the getters instead would drop whatever a newer libc adds.
 */
#define _GNU_SOURCE
#include "reactor.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Testing hook (tests/test_proc.c): behave as if pidfd_open were missing. */
_Atomic(bool) weft__proc_no_pidfd;

/* waitid's siginfo as waitpid(2)'s status word. */
static int status_of(const siginfo_t *si)
{
    switch (si->si_code) {
    case CLD_EXITED:
        return (si->si_status & 0xff) << 8;
    case CLD_KILLED:
        return si->si_status & 0x7f;
    case CLD_DUMPED:
        return (si->si_status & 0x7f) | 0x80; /* WCOREFLAG */
    default:
        return 0;
    }
}

static int plain_waitpid(pid_t pid, int *status, int options)
{
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, options)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return -errno;
    if (r > 0 && status)
        *status = st;
    return (int)r;
}

/* Reap pid through its pidfd once it is readable: its pid, 0 (not exited after
 * all), or -errno. EINVAL: no P_PIDFD (Linux 5.3): by pid. */
static int reap_pidfd(int pidfd, pid_t pid, int *status)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int r;
    while ((r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG)) < 0 &&
           errno == EINTR)
        ;
    if (r < 0)
        return errno == EINVAL ? plain_waitpid(pid, status, WNOHANG) : -errno;
    if (si.si_pid == 0)
        return 0;
    if (status)
        *status = status_of(&si);
    return (int)si.si_pid;
}

WEFT_API int weft_waitpid(pid_t pid, int *status, int options)
{
    if (pid <= 0 || (options & ~WNOHANG))
        return -EINVAL;
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return plain_waitpid(pid, status, options); /* outside a task: blocking */
    if (weft__cancelled_here(w))
        return -ECANCELED;
    int r = plain_waitpid(pid, status, WNOHANG);
    if (r != 0 || (options & WNOHANG))
        return r; /* reaped, not a child (-ECHILD), or still running with WNOHANG */
    int pidfd = atomic_load_explicit(&weft__proc_no_pidfd, memory_order_relaxed)
                    ? (errno = ENOSYS, -1)
                    : (int)syscall(SYS_pidfd_open, pid, 0); /* O_CLOEXEC always */
    if (pidfd < 0) {
        if (errno == ESRCH)
            return -ECHILD; /* gone meanwhile: reaped elsewhere */
        if (errno != ENOSYS)
            return -errno;
        /* No pidfd here: a blocking thread waits without reaping. */
        struct weft__op op = {.kind = WEFT__OP_WAITPID, .fd = (int)pid, .on_blocking = true};
        int64_t res = weft__op_run(&op);
        if (res < 0)
            return (int)res; /* -ECANCELED: left unreaped; -ECHILD */
        /* Cancelled while the thread waited (it cannot be interrupted): the
         * child exited meanwhile, and stays unreaped all the same. */
        if (atomic_load_explicit(&op.cancelled, memory_order_relaxed))
            return -ECANCELED;
        return plain_waitpid(pid, status, WNOHANG);
    }
    for (;;) {
        struct weft__op op = {.kind = WEFT__OP_POLL, .fd = pidfd};
        int64_t res = weft__op_run(&op);
        if (res < 0 && res != -EINTR) {
            r = (int)res; /* -ECANCELED: the child stays unreaped */
            break;
        }
        r = reap_pidfd(pidfd, pid, status);
        if (r != 0)
            break;
    }
    close(pidfd);
    return r;
}

WEFT_API int weft_posix_spawnp(pid_t *pid, const char *file,
                               const posix_spawn_file_actions_t *fa,
                               const posix_spawnattr_t *attr, char *const argv[],
                               char *const envp[])
{
    if (!file || !argv)
        return -EINVAL;
    struct weft__worker *w = weft__current();
    if (!w)
        return -posix_spawnp(pid, file, fa, attr, argv, envp);
    short flags = 0;
    if (attr && posix_spawnattr_getflags(attr, &flags) == 0 &&
        (flags & POSIX_SPAWN_SETSIGMASK))
        return -posix_spawnp(pid, file, fa, attr, argv, envp);
    posix_spawnattr_t a;
    if (attr) {
        a = *attr; /* a plain value (see above); never destroyed: not ours to */
    } else {
        int e = posix_spawnattr_init(&a);
        if (e)
            return -e;
    }
    int e = posix_spawnattr_setsigmask(&a, &w->pool->creator_mask);
    if (!e)
        e = posix_spawnattr_setflags(&a, (short)(flags | POSIX_SPAWN_SETSIGMASK));
    if (!e)
        e = posix_spawnp(pid, file, fa, &a, argv, envp);
    if (!attr)
        posix_spawnattr_destroy(&a);
    return -e;
}

WEFT_API int weft_run_blocking(weft_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    struct weft__worker *w = weft__current();
    if (!w || !w->fiber)
        return fn(arg); /* outside a task (or nowhere to suspend): here */
    struct weft__op op = {.kind = WEFT__OP_CALL, .fn = fn, .arg = arg, .on_blocking = true};
    return (int)weft__op_run(&op);
}
