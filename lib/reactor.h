/* SPDX-License-Identifier: MIT */
/* The reactor: I/O operations of suspended tasks (io.c; its backends, uring.c and
 * blocking.c, behind backend.h). */
#ifndef WEFT_REACTOR_H
#define WEFT_REACTOR_H

#include "pool.h"

#include <time.h>

enum weft__op_kind {
    WEFT__OP_OPEN, WEFT__OP_CLOSE, WEFT__OP_READ, WEFT__OP_WRITE, WEFT__OP_STATX,
    WEFT__OP_FSYNC, WEFT__OP_ACCEPT, WEFT__OP_CONNECT, WEFT__OP_RECV, WEFT__OP_SEND,
    WEFT__OP_SLEEP,
    WEFT__OP_POLL,      /* wait until fd is readable (a pidfd: proc.c); res: revents */
    WEFT__OP_CALL,      /* fn(arg) on a blocking thread (weft_run_blocking) */
    WEFT__OP_WAITPID,   /* waitid(P_PID, fd, WEXITED | WNOWAIT) on a blocking thread */
};

struct weft__backend; /* backend.h */

/* One I/O operation of a task, on the task's (suspended) stack. */
struct weft__op {
    struct weft__wait wait;          /* the task, while it waits */
    struct weft__worker *w;          /* worker that submitted it (its ring or queue) */
    enum weft__op_kind kind;
    int fd, flags;
    unsigned mask;
    mode_t mode;
    void *buf;
    size_t len;
    off_t off;
    const char *path;
    void *addr;                      /* sockaddr */
    socklen_t addrlen;               /* connect */
    socklen_t *addrlenp;             /* accept */
    void *stx;                       /* struct statx */
    struct timespec ts;              /* sleep: relative; blocking: absolute deadline */
    int (*fn)(void *);               /* call */
    void *arg;
    bool on_blocking;                /* runs on the blocking threads on either backend */
    bool eof;                        /* io.c: a read known to have ended at EOF */
    int64_t res;
    /* The backend that runs it (backend.h): w's, or the pool's offload backend for
     * on_blocking; io.c sets it before the op goes on its scope's list. */
    const struct weft__backend *backend;
    /* Cancellation (io.c): the scope whose list holds it (under the scope's mu). */
    struct weft_scope *scope;
    struct weft__op *sprev, *snext;
    _Atomic(bool) cancelled;         /* cancel requested (relaxed: locks order it) */
    /* The backend's own fields, of the one op->backend names: io.c zeroes them
     * before the op goes on its scope's list (a cancel may come from then on), and
     * from then on only that backend touches them. */
    union {
        struct {                     /* uring.c */
            bool done;               /* result is in (set by the owner's reap) */
            bool suspended;          /* the task has switched away (owner-private) */
            bool cancel_queued;      /* on w's cancel inbox (under its ring's cmu) */
            struct weft__op *cnext, *cprev; /* the inbox's links (under cmu) */
        } ring;
        struct {                     /* blocking.c, all under its mu */
            struct weft__op *next;   /* the queue of syscalls, or the poller's list */
            int state;               /* BS_*: where it is */
        } blocking;
    } priv;
};

/* io.c: read fd to its end after the len bytes already in buf (malloc'd, cap bytes
 * usable, or NULL with len = cap = 0), sizing the buffer from fstat; closes fd. On
 * success *data / *size as weft_read_file's; on error buf is freed, -errno. */
int weft__read_rest(int fd, char *buf, size_t len, size_t cap, void **data, size_t *size);

/* io.c: run op for the calling task: the syscall outside a task; else on the
 * worker's backend, or on the pool's offload backend (op->on_blocking), the task
 * suspended meanwhile and op on its scope's list for cancellation. op's fields for
 * the call are set, the rest zero. Returns the result or -errno; -ECANCELED in a
 * cancelled scope. */
int64_t weft__op_run(struct weft__op *op);
/* Inside a task of a cancelled scope (w: the calling worker)? */
bool weft__cancelled_here(const struct weft__worker *w);
/* io.c: ask op's backend to cancel it (scope.c, under the scope's lock). */
void weft__op_cancel(struct weft__op *op);
/* io.c: the syscall for op, here and now (outside any task, and the backends'
 * last resort where they cannot suspend). */
int64_t weft__op_syscall(struct weft__op *op);

/* timer.c: scope deadlines, one timer thread per pool. An entry lives in its scope;
 * every field is under the timer's lock. */
struct weft__deadline {
    struct weft_scope *scope;
    uint64_t when;                   /* CLOCK_MONOTONIC ns */
    size_t idx;                      /* in the heap, while armed */
    bool armed;
};
int  weft__timer_init(weft_pool *pool);
void weft__timer_free(weft_pool *pool);
/* Arm d to fire at when, or earlier if it is armed already (the earliest wins).
 * -ENOMEM, or -EAGAIN when the timer thread cannot start. */
int  weft__timer_arm(weft_pool *pool, struct weft__deadline *d, uint64_t when);
/* d will not fire (waits for a firing that is under way). */
void weft__timer_disarm(weft_pool *pool, struct weft__deadline *d);
/* Testing hooks: entries armed; whether the thread exists. */
size_t weft__timer_armed(const weft_pool *pool);
bool weft__timer_started(const weft_pool *pool);
/* scope.c: cancel s with err (-ETIMEDOUT); called by the timer thread. */
void weft__scope_expire(struct weft_scope *s, int err);

/* proc.c: testing hook, weft_waitpid as where pidfd_open is missing. */
extern _Atomic(bool) weft__proc_no_pidfd;

/* blocking.c: threads the blocking pool has started (testing hook). */
unsigned weft__blocking_threads(const weft_pool *pool);

#endif
