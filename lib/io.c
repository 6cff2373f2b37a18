/* SPDX-License-Identifier: MIT */
/*
 * The I/O calls. Outside any task they are the plain syscalls. Inside a task the
 * operation goes to the worker's backend (backend.h): its ring (uring.c) or,
 * without io_uring, the blocking threads (blocking.c); either way the task
 * suspends while it waits and its worker runs other work (suspend.c). This file
 * calls the backends only through backend.h's table, and never asks which one it
 * has.
 *
 * Cancellation: an operation of a task that belongs to a scope is on that scope's
 * list while it is in flight (scope.c keeps the list; this file adds and removes).
 * weft_scope_cancel walks the list and asks each operation's backend to cancel it;
 * the operation then returns -ECANCELED. One started after the cancel returns
 * -ECANCELED at once. The scope still waits for its tasks, so it returns only after
 * every cancelled operation has completed.
 *
 * The plain syscall first. On a warm page cache a trip through either backend
 * costs more than the work (an SQE, a request and a CQE; or a hand-off to a
 * blocking thread and back), so inside a task reads and writes first try
 * preadv2/pwritev2 with RWF_NOWAIT, opens openat2 with RESOLVE_CACHED, and close
 * and statx are the plain syscalls (try_cached below). Each fails with EAGAIN
 * instead of blocking, and only then does the operation go to the backend, which
 * suspends the task. So the task never blocks its worker on the disk, and a warm
 * file costs what the plain loop costs: one syscall per operation, not two.
 *
 * A task may resume on another thread after any of these calls: a thread-local
 * address (errno's too) taken before the call is stale after it (weft.h).
 */
#define _GNU_SOURCE
#include "backend.h"
#include "fault.h"

#include <errno.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* read(2)'s cap on one transfer: longer reads are cut here, which is not a short
 * read. */
#define RW_MAX 0x7ffff000u

void weft__op_cancel(struct weft__op *op)
{
    if (atomic_load_explicit(&op->cancelled, memory_order_relaxed))
        return;
    atomic_store_explicit(&op->cancelled, true, memory_order_relaxed);
    op->backend->cancel(op);
}

/* Inside a task of a cancelled scope: its I/O calls return -ECANCELED at once. */
static bool cancelled_here(const struct weft__worker *w)
{
    return w->dq.scope && weft_scope_cancelled(w->dq.scope);
}

/* ------------------------------------------------------------------------------
 * The plain syscall first, where it can say "would block".
 *
 * RWF_NOWAIT and RESOLVE_CACHED make the syscall fail with EAGAIN where it would
 * wait for the disk; then the operation goes to the backend. Measured before this
 * was shared by both backends: weft-hash -j1 over /usr/include took 53 ms through
 * the ring against 44 ms with plain syscalls.
 *
 * A NOWAIT read may come back short when only part of the range is cached. A short
 * read of a regular file means EOF to its callers (weft__read_rest relies on it),
 * so such a read must be told from one that stopped at EOF, and without a stat
 * where possible (the plain loop pays none). The page cache answers: a buffered
 * read that stops for want of cached data stops at the start of a page (of a
 * folio, whose size is a multiple of 4096 bytes), so a short read at an explicit
 * offset that ends off a 4096-byte boundary ended at EOF (in mm/filemap.c,
 * filemap_read copies whole folios up to i_size, and stops early only at a folio
 * that is not cached, or on a fault in the caller's buffer, which is -EFAULT
 * anyway). Files without a page cache do not take RWF_NOWAIT (EOPNOTSUPP: they go
 * to the backend), and for other seekable files (block devices) the same holds. Only
 * a read that ends on a page boundary, or at the file position (off == -1), is
 * checked with fstat: at the file's size it is EOF, else the rest goes to the
 * backend. A pipe's or socket's short read is just what there was.
 *
 * Known gap: RESOLVE_CACHED bounds the lookup, not the open itself, so opening a
 * FIFO without O_NONBLOCK (which waits for the other end) or a device whose open
 * waits holds the worker, on both backends. io_uring's own inline open adds
 * O_NONBLOCK and takes it off the file afterwards, which a syscall cannot do
 * without a second one (fcntl) on every open. Open FIFOs with O_NONBLOCK.
 * ---------------------------------------------------------------------------- */

/* openat2 with RESOLVE_CACHED cannot answer in this process. Relaxed: a hint, the
 * same answer for every thread. */
static _Atomic(bool) openat2_useless;

/* Does openat2 with RESOLVE_CACHED work at all? Asked when an open failed with an
 * error that could mean it does not: no openat2 (before Linux 5.6; Valgrind 3.19
 * does not know it either), no RESOLVE_CACHED (before 5.12), a seccomp filter. An
 * open of "/" answers. */
static bool openat2_works(void)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_CACHED;
    long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how));
    if (fd >= 0)
        close((int)fd);
    return fd >= 0 || errno == EAGAIN;
}

/* try_cached's open: openat2 with RESOLVE_CACHED. */
static int try_cached_open(struct weft__op *op)
{
    if (atomic_load_explicit(&openat2_useless, memory_order_relaxed))
        return 0;
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(unsigned)op->flags;
    if (op->flags & (O_CREAT | O_TMPFILE))
        how.mode = op->mode; /* openat2 refuses a mode otherwise */
    how.resolve = RESOLVE_CACHED;
    long fd = syscall(SYS_openat2, AT_FDCWD, op->path, &how, sizeof(how));
    if (fd >= 0) {
        op->res = fd;
        return 1;
    }
    int e = errno;
    if (e == EAGAIN)
        return 0; /* not cached */
    if (e == ENOSYS || e == EPERM || e == E2BIG || e == EINVAL) {
        /* This call's own error (the backend reports it), or openat2 cannot say
         * here at all: then stop asking. */
        if (!openat2_works())
            atomic_store_explicit(&openat2_useless, true, memory_order_relaxed);
        return 0;
    }
    op->res = -e;
    return 1;
}

/* try_cached's read or write: preadv2/pwritev2 with RWF_NOWAIT. */
static int try_cached_rw(struct weft__op *op, int64_t *partial)
{
    size_t len = op->len > RW_MAX ? RW_MAX : op->len;
    struct iovec iov = {op->buf, len};
    bool rd = op->kind == WEFT__OP_READ;
    ssize_t r = rd ? preadv2(op->fd, &iov, 1, op->off, RWF_NOWAIT)
                   : pwritev2(op->fd, &iov, 1, op->off, RWF_NOWAIT);
    if (r < 0) {
        int e = errno;
        if (e == EAGAIN || e == EOPNOTSUPP || e == EINVAL || e == ENOSYS)
            return 0;
        op->res = -e;
        return 1;
    }
    if ((size_t)r == len || r == 0) {
        op->res = r;
        op->eof = rd && r == 0 && len > 0;
        return 1;
    }
    if (rd && op->off != -1 && ((uint64_t)op->off + (uint64_t)r) % 4096u != 0) {
        op->res = r; /* stopped inside a page: at EOF (above) */
        op->eof = true;
        return 1;
    }
    struct stat st;
    if (fstat(op->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        op->res = r;
        return 1;
    }
    off_t end = op->off != -1 ? op->off + r : lseek(op->fd, 0, SEEK_CUR);
    if (rd && end >= st.st_size) {
        op->res = r;
        op->eof = true;
        return 1;
    }
    /* A regular file, partly cached: the rest through the backend. */
    *partial = r;
    op->buf = (char *)op->buf + r;
    op->len = len - (size_t)r;
    if (op->off != -1)
        op->off += r;
    return 0;
}

/* 1: op->res is the result (op->eof: a read that ended at EOF); 0: go to the
 * backend (for *partial more bytes, op moved past the ones already done). */
static int try_cached(struct weft__op *op, int64_t *partial)
{
    *partial = 0;
    switch (op->kind) {
    case WEFT__OP_CLOSE:
        op->res = close(op->fd) < 0 ? -errno : 0;
        return 1;
    case WEFT__OP_STATX:
        /* No "cached only" statx exists, and io_uring hands statx to its worker
         * threads (the kernel marks IORING_OP_STATX force-async): ~10 us and a
         * thread switch per call, where the syscall takes under 1 us on cached
         * metadata (weft-hash -j1: 90 ms that way against 44 ms). The blocking
         * backend's hand-off costs the same. So statx is the syscall; only cold
         * metadata then holds the worker, for one inode read. */
        op->res = statx(op->fd, op->path, op->flags, op->mask, op->stx) < 0 ? -errno : 0;
        return 1;
    case WEFT__OP_OPEN:
        return try_cached_open(op);
    case WEFT__OP_READ:
    case WEFT__OP_WRITE:
        return try_cached_rw(op, partial);
    default:
        return 0;
    }
}

/* The syscall itself, blocking the calling thread: outside tasks, on the blocking
 * threads, and where a backend cannot suspend the task. */
int64_t weft__op_syscall(struct weft__op *op)
{
    long r = 0;
    switch (op->kind) {
    case WEFT__OP_OPEN:
        r = open(op->path, op->flags, op->mode);
        break;
    case WEFT__OP_CLOSE:
        r = close(op->fd);
        break;
    case WEFT__OP_READ:
        r = op->off == -1 ? read(op->fd, op->buf, op->len)
                          : pread(op->fd, op->buf, op->len, op->off);
        break;
    case WEFT__OP_WRITE:
        r = op->off == -1 ? write(op->fd, op->buf, op->len)
                          : pwrite(op->fd, op->buf, op->len, op->off);
        break;
    case WEFT__OP_STATX:
        r = statx(op->fd, op->path, op->flags, op->mask, op->stx);
        break;
    case WEFT__OP_FSYNC:
        r = fsync(op->fd);
        break;
    case WEFT__OP_ACCEPT:
        r = accept4(op->fd, op->addr, op->addrlenp, op->flags);
        break;
    case WEFT__OP_CONNECT:
        r = connect(op->fd, op->addr, op->addrlen);
        break;
    case WEFT__OP_RECV:
        r = recv(op->fd, op->buf, op->len, op->flags);
        break;
    case WEFT__OP_SEND:
        r = send(op->fd, op->buf, op->len, op->flags);
        break;
    case WEFT__OP_SLEEP: {
        struct timespec ts = op->ts;
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        return 0;
    }
    case WEFT__OP_POLL: {
        struct pollfd p = {.fd = op->fd, .events = POLLIN};
        while ((r = poll(&p, 1, -1)) < 0 && errno == EINTR)
            ;
        return r < 0 ? -errno : p.revents;
    }
    case WEFT__OP_CALL:
        return op->fn(op->arg); /* the user's result, as it is */
    case WEFT__OP_WAITPID: {
        /* WNOWAIT: the task reaps, so a cancelled wait leaves the child unreaped. */
        siginfo_t si;
        while ((r = waitid(P_PID, (id_t)op->fd, &si, WEXITED | WNOWAIT)) < 0 &&
               errno == EINTR)
            ;
        break;
    }
    }
    return r < 0 ? -errno : r;
}

/* What a suspended task waits for, in traces (trace.c). */
static const char *const op_name[] = {
    [WEFT__OP_OPEN] = "open",     [WEFT__OP_CLOSE] = "close",   [WEFT__OP_READ] = "read",
    [WEFT__OP_WRITE] = "write",   [WEFT__OP_STATX] = "statx",   [WEFT__OP_FSYNC] = "fsync",
    [WEFT__OP_ACCEPT] = "accept", [WEFT__OP_CONNECT] = "connect", [WEFT__OP_RECV] = "recv",
    [WEFT__OP_SEND] = "send",     [WEFT__OP_SLEEP] = "sleep",   [WEFT__OP_POLL] = "waitpid",
    [WEFT__OP_CALL] = "run_blocking", [WEFT__OP_WAITPID] = "waitpid",
};

/* op to w's backend (the pool's offload backend for on_blocking), on the scope's
 * list while it is in flight. */
static int64_t run_backend(struct weft__worker *w, struct weft__op *op)
{
    op->w = w;
    op->backend = op->on_blocking ? w->pool->offload : w->io;
    memset(&op->priv, 0, sizeof(op->priv));
    atomic_init(&op->cancelled, false);
    struct weft_scope *s = w->dq.scope;
    op->scope = s;
    if (s && weft__scope_op_add(s, op) != 0)
        return -ECANCELED;
    weft__trace_why(w, op_name[op->kind]);
    int64_t r = op->backend->run(w, op);
    weft__trace_why(weft__current(), NULL); /* it may not have suspended */
    if (s) {
        weft__scope_op_del(s, op);
        if (atomic_load_explicit(&op->cancelled, memory_order_relaxed) &&
            (r == -EINTR || r == -ECANCELED))
            r = -ECANCELED;
    }
    return r;
}

/* A task that can suspend: it has a fiber (every worker has a backend, w->io,
 * from the pool's creation on). */
static bool can_suspend(const struct weft__worker *w)
{
    return w->fiber != NULL;
}

static int64_t run(struct weft__op *op)
{
    struct weft__worker *w = weft__current();
    if (!w)
        return weft__op_syscall(op);
    WEFT__COUNT(w, io_ops);
    if (!can_suspend(w))
        return weft__op_syscall(op); /* nowhere to suspend to */
    if (cancelled_here(w))
        return -ECANCELED;
    int64_t partial;
    if (try_cached(op, &partial))
        return op->res;
    int64_t r = run_backend(w, op);
    if (partial > 0)
        return r < 0 ? partial : partial + r; /* the bytes done count */
    return r;
}

/* For proc.c's operations (reactor.h). */
int64_t weft__op_run(struct weft__op *op)
{
    return run(op);
}

bool weft__cancelled_here(const struct weft__worker *w)
{
    return cancelled_here(w);
}

/* Operations on the caller's stack, zeroed but for the fields each call sets. */
#define OP(...) (struct weft__op){__VA_ARGS__}

WEFT_API int weft_open(const char *path, int flags, mode_t mode)
{
    struct weft__op op = OP(.kind = WEFT__OP_OPEN, .path = path, .flags = flags | O_CLOEXEC,
                            .mode = mode);
    return (int)run(&op);
}

WEFT_API int weft_close(int fd)
{
    struct weft__op op = OP(.kind = WEFT__OP_CLOSE, .fd = fd);
    return (int)run(&op);
}

WEFT_API ssize_t weft_read(int fd, void *buf, size_t len, off_t off)
{
    struct weft__op op = OP(.kind = WEFT__OP_READ, .fd = fd, .buf = buf, .len = len,
                            .off = off);
    return (ssize_t)run(&op);
}

WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len, off_t off)
{
    struct weft__op op = OP(.kind = WEFT__OP_WRITE, .fd = fd, .buf = (void *)buf,
                            .len = len, .off = off);
    return (ssize_t)run(&op);
}

WEFT_API int weft_statx(int dirfd, const char *path, int flags, unsigned mask,
                        struct statx *st)
{
    struct weft__op op = OP(.kind = WEFT__OP_STATX, .fd = dirfd, .path = path,
                            .flags = flags, .mask = mask, .stx = st);
    return (int)run(&op); /* the syscall inside a task too (try_cached) */
}

WEFT_API int weft_fsync(int fd)
{
    struct weft__op op = OP(.kind = WEFT__OP_FSYNC, .fd = fd);
    return (int)run(&op);
}

WEFT_API int weft_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    struct weft__op op = OP(.kind = WEFT__OP_ACCEPT, .fd = fd, .addr = addr,
                            .addrlenp = len, .flags = flags);
    return (int)run(&op);
}

WEFT_API int weft_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct weft__op op = OP(.kind = WEFT__OP_CONNECT, .fd = fd, .addr = (void *)addr,
                            .addrlen = len);
    return (int)run(&op);
}

WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
    struct weft__op op = OP(.kind = WEFT__OP_RECV, .fd = fd, .buf = buf, .len = len,
                            .flags = flags);
    return (ssize_t)run(&op);
}

WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
    struct weft__op op = OP(.kind = WEFT__OP_SEND, .fd = fd, .buf = (void *)buf,
                            .len = len, .flags = flags | MSG_NOSIGNAL);
    return (ssize_t)run(&op);
}

/* Close a descriptor weft_read_file opened itself: always (weft_close returns
 * -ECANCELED in a cancelled scope without closing, which would leak it when a
 * cancel ends the read), and as the plain syscall, as weft_close would be. */
static void close_own(int fd)
{
    close(fd);
}

/* weft_read_file's first read: a file up to this size takes one read and no stat
 * (the buffer shrinks to the file afterwards). */
#define RF_FIRST ((size_t)64 * 1024)

/* weft_read at off, and whether the read is known to have ended at EOF. */
static ssize_t read_eof(int fd, void *buf, size_t len, off_t off, bool *eof)
{
    struct weft__op op = OP(.kind = WEFT__OP_READ, .fd = fd, .buf = buf, .len = len,
                            .off = off);
    ssize_t r;
    do
        r = (ssize_t)run(&op);
    while (r == -EINTR);
    *eof = op.eof || r == 0;
    return r;
}

/* weft_read_file, warm: open, read, close, the plain loop's syscalls less its stat
 * (a short NOWAIT read proves EOF: try_cached). Cold dentries on a ring: the whole
 * file in one submission (uring.c). */
WEFT_API int weft_read_file(const char *path, void **data, size_t *size)
{
    if (!path || !data || !size)
        return -EINVAL;
    struct weft__worker *w = weft__current();
    int fd;
    if (w && can_suspend(w)) {
        if (cancelled_here(w))
            return -ECANCELED;
        WEFT__COUNT(w, io_ops);
        struct weft__op op = OP(.kind = WEFT__OP_OPEN, .path = path,
                                .flags = O_RDONLY | O_CLOEXEC);
        int64_t partial;
        if (try_cached(&op, &partial)) {
            fd = (int)op.res;
        } else {
            weft__trace_why(w, "read_file");
            int r = w->io->read_file ? w->io->read_file(w, path, data, size) : -ENOSYS;
            weft__trace_why(weft__current(), NULL);
            if (r != -ENOSYS) {
                WEFT__COUNT(w, io_ops); /* the reads and the close */
                WEFT__COUNT(w, io_ops);
                return r;
            }
            fd = (int)run_backend(w, &op);
        }
    } else {
        fd = weft_open(path, O_RDONLY, 0);
    }
    if (fd < 0)
        return fd;
    char *buf = malloc(RF_FIRST + 1);
    if (!buf) {
        close_own(fd);
        return -ENOMEM;
    }
    bool eof;
    ssize_t r = read_eof(fd, buf, RF_FIRST, 0, &eof);
    if (r < 0) {
        free(buf);
        close_own(fd);
        return (int)r;
    }
    size_t len = (size_t)r;
    if (!eof && len < RF_FIRST) {
        /* Short, not proven the end: for a regular file it is (weft_read's
         * promise); anything else reads on to a 0. So do files that say they
         * are empty: /proc and /sys files are "regular", of size 0, and return
         * a record or a page per read (/proc/self/smaps). */
        struct stat st;
        eof = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
    }
    if (!eof)
        return weft__read_rest(fd, buf, len, RF_FIRST, data, size);
    close_own(fd);
    char *nb = realloc(buf, len + 1); /* give back what the file did not use */
    if (nb)
        buf = nb;
    buf[len] = 0;
    *data = buf;
    *size = len;
    return 0;
}

int weft__read_rest(int fd, char *buf, size_t len, size_t cap, void **data, size_t *size)
{
    struct stat st;
    bool reg = false;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        reg = true; /* a short read is its end; not for size 0 (/proc, /sys) */
        if ((size_t)st.st_size >= cap && st.st_size > 0)
            cap = (size_t)st.st_size + 1; /* + 1: a short read then proves EOF */
    }
    if (cap == 0)
        cap = 4096;
    /* Size the buffer once (+ 1 for the NUL); it grows only if the file does. */
    char *nb = WEFT__FAULT("io.read_buf") ? NULL : realloc(buf, cap + 1);
    if (!nb) {
        free(buf);
        close_own(fd);
        return -ENOMEM;
    }
    buf = nb;
    /* Files can shrink or grow while we read: read until EOF whatever stat said. */
    for (;;) {
        if (len == cap) {
            size_t ncap = cap * 2;
            nb = WEFT__FAULT("io.read_buf") ? NULL : realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                close_own(fd);
                return -ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = weft_read(fd, buf + len, cap - len, (off_t)len);
        if (r < 0) {
            if (r == -EINTR)
                continue;
            free(buf);
            close_own(fd);
            return (int)r;
        }
        if (r == 0)
            break;
        size_t want = cap - len;
        len += (size_t)r;
        /* A regular file reads short only at its end: no second read to see EOF.
         * (Reads are cut at RW_MAX bytes, as read(2) does: not a short read.) */
        if (reg && (size_t)r < want && want <= RW_MAX)
            break;
    }
    close_own(fd);
    buf[len] = 0;
    *data = buf;
    *size = len;
    return 0;
}

WEFT_API int weft_sleep(uint64_t ns)
{
    if (ns == 0)
        return weft_yield();
    struct weft__op op = OP(.kind = WEFT__OP_SLEEP);
    op.ts.tv_sec = (time_t)(ns / 1000000000u);
    op.ts.tv_nsec = (long)(ns % 1000000000u);
    int64_t r = run(&op);
    return r == -ETIME ? 0 : (int)r;
}

WEFT_API int weft_yield(void)
{
    struct weft__worker *w = weft__current();
    if (!w) {
        sched_yield();
        return 0;
    }
    if (cancelled_here(w))
        return -ECANCELED;
    weft__trace_why(w, "yield");
    if (!weft__suspend_yield()) {
        weft__trace_why(w, NULL);
        sched_yield(); /* no fibers: let other threads run at least */
    }
    return 0;
}

/* Test hook (tests/test_reactor.c, test_contract.c): the pool's backend. */
const char *weft__pool_io_backend(const weft_pool *pool)
{
    return pool->io->name;
}
