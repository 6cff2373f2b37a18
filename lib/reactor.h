/* SPDX-License-Identifier: MIT */
/* The reactor: I/O operations of suspended tasks (io.c, uring.c, blocking.c). */
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
    int64_t res;
    bool done;                       /* result is in (set by the owner's reap) */
    bool eof;                        /* io.c: a read known to have ended at EOF */
    bool suspended;                  /* the task has switched away (owner-private) */
    /* Cancellation (io.c): the scope whose list holds it (under the scope's mu). */
    struct weft_scope *scope;
    struct weft__op *sprev, *snext;
    _Atomic(bool) cancelled;         /* cancel requested (relaxed: locks order it) */
    /* uring: queued on w's cancel inbox (under its io's mutex). */
    bool cancel_queued;
    struct weft__op *cnext, *cprev;
    /* blocking backend (blocking.c). */
    struct weft__op *bnext;
    int bstate;
};

/* uring.c */
/* Set up one ring per worker (disabled until its thread enables it). false: io_uring
 * is not usable here (the pool uses the blocking backend). */
bool weft__uring_pool_init(weft_pool *pool);
void weft__uring_pool_free(weft_pool *pool);
void weft__io_thread_init(struct weft__worker *w);
/* Submitted-but-unreaped operations or unsubmitted entries. */
bool weft__io_pending(struct weft__worker *w);
/* Submit what is queued and reap completions; wait: block for at least one (the
 * worker parks in its ring). Returns the number of tasks made ready. */
int  weft__io_poll(struct weft__worker *w, bool wait);
/* End the ring wait of a parked worker (after its wake word was set). */
void weft__io_wake(struct weft__worker *target);
/* Run op on the calling worker's ring (io.c tried the plain syscall first); the
 * task suspends unless it completes at once. Returns the result (-errno). */
int64_t weft__uring_run(struct weft__worker *w, struct weft__op *op);
/* The same without trying the syscall first: always through the ring. */
int64_t weft__uring_submit_wait(struct weft__worker *w, struct weft__op *op);
/* Ask op's worker to cancel it (any thread; op stays valid: the caller holds its
 * scope's mu). */
void weft__uring_cancel(struct weft__op *op);
/* weft_read_file in one submission (a chain on a fixed-file slot); -ENOSYS: not
 * here (no free slot), use the plain way. */
int weft__uring_read_file(struct weft__worker *w, const char *path, void **data,
                          size_t *size);
/* The task is done with op: off its worker's cancel inbox. */
void weft__uring_unqueue(struct weft__op *op);

/* io.c: read fd to its end after the len bytes already in buf (malloc'd, cap bytes
 * usable, or NULL with len = cap = 0), sizing the buffer from fstat; closes fd. On
 * success *data / *size as weft_read_file's; on error buf is freed, -errno. */
int weft__read_rest(int fd, char *buf, size_t len, size_t cap, void **data, size_t *size);

/* io.c: run op for the calling task: the syscall outside a task; else on the
 * ring, or on the blocking threads (no ring, or op->on_blocking), the task
 * suspended meanwhile and op on its scope's list for cancellation. op's fields for
 * the call are set, the rest zero. Returns the result or -errno; -ECANCELED in a
 * cancelled scope. */
int64_t weft__op_run(struct weft__op *op);
/* Inside a task of a cancelled scope (w: the calling worker)? */
bool weft__cancelled_here(const struct weft__worker *w);
/* io.c: ask op's backend to cancel it (scope.c, under the scope's lock). */
void weft__op_cancel(struct weft__op *op);

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

/* blocking.c */
/* Threads the blocking pool has started (testing hook). */
unsigned weft__blocking_threads(const weft_pool *pool);
int  weft__blocking_init(weft_pool *pool);
void weft__blocking_free(weft_pool *pool);
int64_t weft__blocking_run(struct weft__worker *w, struct weft__op *op);
void weft__blocking_cancel(weft_pool *pool, struct weft__op *op);
/* The syscall for op, here and now (also: outside any task). */
int64_t weft__op_syscall(struct weft__op *op);

#endif
