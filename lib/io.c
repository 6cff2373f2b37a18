/* SPDX-License-Identifier: MIT */
/*
 * The I/O calls. Outside any task they are the plain syscalls. Inside a task the
 * operation goes to the worker's ring (uring.c) or, without io_uring, to the
 * blocking backend (blocking.c); either way the task suspends while it waits and
 * its worker runs other work (sched.c).
 *
 * Cancellation: an operation of a task that belongs to a scope is on that scope's
 * list while it is in flight (scope.c keeps the list; this file adds and removes).
 * weft_scope_cancel walks the list and asks each operation's backend to cancel it;
 * the operation then returns -ECANCELED. One started after the cancel returns
 * -ECANCELED at once. The scope still waits for its tasks, so it returns only after
 * every cancelled operation has completed.
 *
 * A task may resume on another thread after any of these calls: a thread-local
 * address (errno's too) taken before the call is stale after it (weft.h).
 */
#define _GNU_SOURCE
#include "reactor.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void weft__op_cancel(struct weft__op *op)
{
    if (atomic_load_explicit(&op->cancelled, memory_order_relaxed))
        return;
    atomic_store_explicit(&op->cancelled, true, memory_order_relaxed);
    if (op->w->io)
        weft__uring_cancel(op);
    else
        weft__blocking_cancel(op->w->pool, op);
}

/* Inside a task of a cancelled scope: its I/O calls return -ECANCELED at once. */
static bool cancelled_here(const struct weft__worker *w)
{
    return w->scope && weft_scope_cancelled(w->scope);
}

/* What a suspended task waits for, in traces (trace.c). */
static const char *const op_name[] = {
    [WEFT__OP_OPEN] = "open",     [WEFT__OP_CLOSE] = "close",   [WEFT__OP_READ] = "read",
    [WEFT__OP_WRITE] = "write",   [WEFT__OP_STATX] = "statx",   [WEFT__OP_FSYNC] = "fsync",
    [WEFT__OP_ACCEPT] = "accept", [WEFT__OP_CONNECT] = "connect", [WEFT__OP_RECV] = "recv",
    [WEFT__OP_SEND] = "send",     [WEFT__OP_SLEEP] = "sleep",
};

static int64_t run(struct weft__op *op)
{
    struct weft__worker *w = weft__current();
    if (!w)
        return weft__op_syscall(op);
    WEFT__COUNT(w, io_ops);
    if (!w->fiber || (!w->io && !w->pool->blocking))
        return weft__op_syscall(op); /* nowhere to suspend to */
    op->w = w;
    op->done = false;
    op->suspended = false;
    op->cancel_queued = false;
    atomic_init(&op->cancelled, false);
    struct weft_scope *s = w->scope;
    op->scope = s;
    if (s && weft__scope_op_add(s, op) != 0)
        return -ECANCELED;
    weft__trace_why(w, op_name[op->kind]);
    int64_t r = w->io ? weft__uring_run(w, op) : weft__blocking_run(w, op);
    weft__trace_why(weft__current(), NULL); /* it may not have suspended */
    if (s) {
        weft__scope_op_del(s, op);
        if (atomic_load_explicit(&op->cancelled, memory_order_relaxed) &&
            (r == -EINTR || r == -ECANCELED))
            r = -ECANCELED;
    }
    return r;
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
    struct weft__worker *w = weft__current();
    if (w && w->io) {
        /* io_uring always hands statx to its own worker threads (the kernel marks
         * IORING_OP_STATX force-async): ~10 us and a thread switch per call, where
         * the syscall takes under 1 us on cached metadata; weft-hash -j1 over
         * /usr/include took 90 ms that way against 44 ms. So on the ring backend
         * statx is the plain syscall; only cold metadata then holds the worker,
         * for one inode read. */
        WEFT__COUNT(w, io_ops);
        if (cancelled_here(w))
            return -ECANCELED;
        return (int)weft__op_syscall(&op);
    }
    return (int)run(&op);
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

WEFT_API int weft_read_file(const char *path, void **data, size_t *size)
{
    if (!path || !data || !size)
        return -EINVAL;
    struct weft__worker *w = weft__current();
    if (w && w->io && w->fiber) {
        if (cancelled_here(w))
            return -ECANCELED;
        weft__trace_why(w, "read_file");
        int r = weft__uring_read_file(w, path, data, size);
        weft__trace_why(weft__current(), NULL);
        if (r != -ENOSYS) {
            WEFT__COUNT(w, io_ops); /* the open; the reads and the close: */
            WEFT__COUNT(w, io_ops);
            WEFT__COUNT(w, io_ops);
            return r;
        }
    }
    int fd = weft_open(path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    return weft__read_rest(fd, NULL, 0, 0, data, size);
}

int weft__read_rest(int fd, char *buf, size_t len, size_t cap, void **data, size_t *size)
{
    struct stat st;
    bool reg = false;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        reg = true;
        if ((size_t)st.st_size >= cap && st.st_size > 0)
            cap = (size_t)st.st_size + 1; /* + 1: a short read then proves EOF */
    }
    if (cap == 0)
        cap = 4096;
    /* Size the buffer once (+ 1 for the NUL); it grows only if the file does. */
    char *nb = realloc(buf, cap + 1);
    if (!nb) {
        free(buf);
        weft_close(fd);
        return -ENOMEM;
    }
    buf = nb;
    /* Files can shrink or grow while we read: read until EOF whatever stat said. */
    for (;;) {
        if (len == cap) {
            size_t ncap = cap * 2;
            nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                weft_close(fd);
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
            weft_close(fd);
            return (int)r;
        }
        if (r == 0)
            break;
        size_t want = cap - len;
        len += (size_t)r;
        /* A regular file reads short only at its end: no second read to see EOF.
         * (Reads are cut at 0x7ffff000 bytes, as read(2) does: not a short read.) */
        if (reg && (size_t)r < want && want <= 0x7ffff000u)
            break;
    }
    weft_close(fd);
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
    if (!weft__yield()) {
        weft__trace_why(w, NULL);
        sched_yield(); /* no fibers: let other threads run at least */
    }
    return 0;
}

#ifndef WEFT_HAVE_URING
/* Built without liburing: every pool uses the blocking backend. */
bool weft__uring_pool_init(weft_pool *pool)
{
    (void)pool;
    return false;
}
void weft__uring_pool_free(weft_pool *pool) { (void)pool; }
void weft__io_thread_init(struct weft__worker *w) { (void)w; }
bool weft__io_pending(struct weft__worker *w)
{
    (void)w;
    return false;
}
int weft__io_poll(struct weft__worker *w, bool wait)
{
    (void)w;
    (void)wait;
    return 0;
}
void weft__io_wake(struct weft__worker *target) { (void)target; }
int64_t weft__uring_run(struct weft__worker *w, struct weft__op *op)
{
    (void)w;
    return weft__op_syscall(op);
}
void weft__uring_cancel(struct weft__op *op) { (void)op; }
void weft__uring_unqueue(struct weft__op *op) { (void)op; }
int weft__uring_read_file(struct weft__worker *w, const char *path, void **data,
                          size_t *size)
{
    (void)w;
    (void)path;
    (void)data;
    (void)size;
    return -ENOSYS;
}
#endif
