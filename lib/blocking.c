/* SPDX-License-Identifier: MIT */
/*
 * The blocking backend: where io_uring cannot be used (no kernel support, seccomp,
 * io_uring_disabled, WEFT_IO=blocking, WEFT_POOL_NO_URING), a task's operation runs
 * as the plain syscall on a small pool of blocking threads, and the task is resumed
 * when it is done. Same results, same errors, same cancellation.
 *
 * A thread per waiting operation would not do: a thousand tasks waiting in recv()
 * would need a thousand threads, and with any cap the tasks that would send the data
 * could be stuck behind them. So operations that can wait for ever (reads, writes,
 * recv, send and accept on anything but a regular file or block device) first wait
 * for readiness in one poller thread (poll(2) over all of them, which also keeps
 * the sleep deadlines), and only then take a blocking thread for the syscall itself
 * (recv and send with MSG_DONTWAIT, so a lost race goes back to the poller). Other
 * operations (open, statx, close, fsync, connect, file reads) go straight to a
 * blocking thread: they take as long as the disk or the kernel takes, not as long
 * as a peer.
 *
 * Threads start on demand, up to max(4, 2 x workers), and live until the pool is
 * destroyed. They block every signal (they are started by workers, which do).
 *
 * The same threads serve both backends for what has no ring operation (they are
 * every pool's offload backend, backend.h): user calls that block (weft_run_blocking: WEFT__OP_CALL, which runs to completion once
 * started) and, where pidfd_open is missing, waiting for a child (WEFT__OP_WAITPID,
 * proc.c). A pidfd (WEFT__OP_POLL) waits in the poller and completes there as
 * soon as it is readable: a thousand children waited on cost no thread each.
 *
 * Cancellation (backend.h's cancel, under the scope's lock): a queued
 * operation is taken off the queue and completes with -ECANCELED; one waiting in
 * the poller is marked and the poller completes it; one whose syscall is running
 * finishes (it is ready or bounded).
 *
 * As a backend (backend.h's table, at the end): nothing to reap and nothing kept
 * once an operation is done (the threads make its task ready themselves), so no
 * poll (so never sets io_attn) or unqueue; a worker parks on its futex word.
 */
#define _GNU_SOURCE
#include "backend.h"
#include "fault.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The queue of syscalls to run (list.h), through priv.blocking.next. */
WEFT__FIFO_DEFINE(op_fifo, struct weft__op, priv.blocking.next)

enum { BS_QUEUED = 1, BS_WAITING, BS_RUNNING, BS_DONE };

struct weft__blocking {
    weft_pool *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct op_fifo queue;                 /* syscalls to run */
    unsigned nthreads, nidle, max_threads;
    unsigned nqueued;                     /* ops on the queue (under mu) */
    pthread_t *threads;
    bool stop;
    /* Poller: operations waiting for readiness or a deadline (its own list). */
    bool poller_started;
    pthread_t poller;
    int efd;                              /* wakes the poller */
    struct weft__op *waiting;             /* linked through priv.blocking.next (under mu) */
    unsigned nwaiting;
    /* The poller's poll arrays (its own; under mu when they change), kept here too so
     * that a forked child, where the poller does not exist, can free them. */
    struct pollfd *poll_fds;
    struct weft__op **poll_ops;
};

static int blocking_pool_init(weft_pool *pool)
{
    struct weft__blocking *b = WEFT__FAULT("blocking.alloc") ? NULL : calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->pool = pool;
    /* At least max(4, 2 x workers) at once (weft.h: weft_run_blocking). */
    b->max_threads = pool->nthreads * 2 < 4 ? 4 : pool->nthreads * 2;
    b->threads = WEFT__FAULT("blocking.alloc") ? NULL
                                               : calloc(b->max_threads, sizeof(pthread_t));
    b->efd = WEFT__FAULT("blocking.eventfd") ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!b->threads || b->efd < 0) {
        if (b->efd >= 0)
            close(b->efd);
        free(b->threads);
        free(b);
        return -ENOMEM;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pool->blocking = b;
    return 0;
}

static void blocking_pool_free(weft_pool *pool)
{
    struct weft__blocking *b = pool->blocking;
    if (!b)
        return;
    pool->blocking = NULL;
    if (atomic_load_explicit(&pool->dead, memory_order_relaxed)) {
        close(b->efd); /* forked child: no threads here, locks in any state */
        free(b->poll_fds);
        free(b->poll_ops);
        free(b->threads);
        free(b);
        return;
    }
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_broadcast(&b->cv);
    unsigned n = b->nthreads;
    bool poller = b->poller_started;
    pthread_mutex_unlock(&b->mu);
    uint64_t one = 1;
    if (write(b->efd, &one, sizeof(one)) < 0) {
        /* the counter is full: the poller is being woken anyway */
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(b->threads[i], NULL);
    if (poller)
        pthread_join(b->poller, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    close(b->efd);
    free(b->threads);
    free(b);
}

/* The caller has set op's state to BS_DONE under mu (a cancel reads it there), and
 * holds mu no longer. */
static void complete(struct weft__op *op, int64_t res)
{
    op->res = res;
    /* The ready queue's lock publishes res to whoever resumes the task. */
    weft__runq_ready(op->w, &op->wait);
}

static void poller_wake(struct weft__blocking *b)
{
    uint64_t one = 1;
    if (write(b->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: a wake is pending already */
    }
}

static short op_events(const struct weft__op *op)
{
    return (op->kind == WEFT__OP_WRITE || op->kind == WEFT__OP_SEND) ? POLLOUT : POLLIN;
}

static void *bthread_main(void *arg);
static void *poller_main(void *arg);

/* Called with mu held. */
static void enqueue_locked(struct weft__blocking *b, struct weft__op *op)
{
    op->priv.blocking.state = BS_QUEUED;
    op_fifo_push(&b->queue, op);
    /* More queued than idle threads: start one. Not "no thread idle": a thread
     * signalled for an earlier op counts as idle until it runs, so two ops queued
     * back to back would leave the second without a thread (a deadlock when the
     * running calls wait for it: tests/test_proc.c under WEFT_SCHED=random). */
    if (++b->nqueued > b->nidle && b->nthreads < b->max_threads &&
        !WEFT__FAULT("thread.blocking") &&
        pthread_create(&b->threads[b->nthreads], NULL, bthread_main, b) == 0)
        b->nthreads++;
    pthread_cond_signal(&b->cv);
}

/* Called with mu held. */
static void wait_locked(struct weft__blocking *b, struct weft__op *op)
{
    op->priv.blocking.state = BS_WAITING;
    op->priv.blocking.next = b->waiting;
    b->waiting = op;
    b->nwaiting++;
    if (!b->poller_started && !WEFT__FAULT("thread.poller") &&
        pthread_create(&b->poller, NULL, poller_main, b) == 0)
        b->poller_started = true;
    poller_wake(b);
}

static void *bthread_main(void *arg)
{
    struct weft__blocking *b = arg;
    pthread_setname_np(pthread_self(), "weft-blocking");
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (op_fifo_empty(&b->queue) && !b->stop) {
            b->nidle++;
            pthread_cond_wait(&b->cv, &b->mu);
            b->nidle--;
        }
        if (b->stop)
            break;
        struct weft__op *op = op_fifo_pop(&b->queue);
        b->nqueued--;
        op->priv.blocking.state = BS_RUNNING;
        pthread_mutex_unlock(&b->mu);
        bool polled = op->flags & (int)0x40000000; /* see blocking_run */
        int saved = op->flags;
        if (polled && (op->kind == WEFT__OP_RECV || op->kind == WEFT__OP_SEND))
            op->flags = (saved & ~0x40000000) | MSG_DONTWAIT;
        else
            op->flags = saved & ~0x40000000;
        int64_t r = weft__op_syscall(op);
        op->flags = saved;
        pthread_mutex_lock(&b->mu);
        if (polled && r == -EAGAIN && !(saved & MSG_DONTWAIT) &&
            !atomic_load_explicit(&op->cancelled, memory_order_relaxed)) {
            wait_locked(b, op);    /* lost a race for the data: wait again */
            continue;
        }
        op->priv.blocking.state = BS_DONE;
        pthread_mutex_unlock(&b->mu);
        complete(op, r);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_ns(const struct weft__op *op)
{
    return (int64_t)op->ts.tv_sec * 1000000000 + op->ts.tv_nsec;
}

/* The poller's steps. Each runs with mu held; only the poller takes operations off
 * the waiting list, so what they hand back stays valid once mu is dropped. */

/* Take the cancelled operations and the sleeps that are due off the waiting list
 * (returned, linked through priv.blocking.next) and find the nearest deadline of the sleeps left
 * (*next, ns from now; -1: none). */
static struct weft__op *take_due_locked(struct weft__blocking *b, int64_t *next)
{
    int64_t now = now_ns();
    struct weft__op **pp = &b->waiting;
    struct weft__op *done = NULL;
    *next = -1;
    while (*pp) {
        struct weft__op *op = *pp;
        bool due = atomic_load_explicit(&op->cancelled, memory_order_relaxed) ||
                   (op->kind == WEFT__OP_SLEEP && deadline_ns(op) <= now);
        if (due) {
            *pp = op->priv.blocking.next;
            b->nwaiting--;
            op->priv.blocking.next = done;
            done = op;
            continue;
        }
        if (op->kind == WEFT__OP_SLEEP) {
            int64_t d = deadline_ns(op) - now;
            if (*next < 0 || d < *next)
                *next = d;
        }
        pp = &op->priv.blocking.next;
    }
    return done;
}

/* Complete the operations of list (linked through priv.blocking.next) with mu
 * dropped: due ones (by_flag) with -ECANCELED if cancelled, else 0; ready ones with
 * op->res. */
static void complete_list(struct weft__blocking *b, struct weft__op *list, bool by_flag)
{
    for (struct weft__op *op = list; op; op = op->priv.blocking.next)
        op->priv.blocking.state = BS_DONE;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        struct weft__op *op = list;
        list = op->priv.blocking.next;
        if (by_flag)
            complete(op, atomic_load_explicit(&op->cancelled, memory_order_relaxed)
                             ? -ECANCELED : 0);
        else
            complete(op, op->res);
    }
    pthread_mutex_lock(&b->mu);
}

/* Room in the poll arrays (b->poll_fds, b->poll_ops, *cap entries) for the eventfd
 * and every waiting operation, if memory allows; false: not even one entry. */
static bool poll_room_locked(struct weft__blocking *b, size_t *cap)
{
    if (b->nwaiting + 1 > *cap) {
        size_t ncap = (b->nwaiting + 1) * 2;
        struct pollfd *nf = WEFT__FAULT("blocking.pollfds") ? NULL
                            : realloc(b->poll_fds, ncap * sizeof(*nf));
        if (nf)
            b->poll_fds = nf;
        struct weft__op **no = WEFT__FAULT("blocking.pollfds") ? NULL
                               : realloc(b->poll_ops, ncap * sizeof(*no));
        if (no)
            b->poll_ops = no;
        if (nf && no)
            *cap = ncap;
    }
    return *cap != 0;
}

/* After poll() returned n entries: take the ready operations off the waiting list.
 * A WEFT__OP_POLL is done (readiness is its result: a pidfd, the child exited; no
 * blocking thread): returned, linked through priv.blocking.next. The others go to the blocking
 * threads' queue for their syscall. */
static struct weft__op *take_ready_locked(struct weft__blocking *b, const struct pollfd *fds,
                                          struct weft__op **ops, size_t n)
{
    struct weft__op *ready = NULL;
    for (size_t i = 1; i < n; i++) {
        if (!fds[i].revents)
            continue;
        struct weft__op *op = ops[i];
        for (struct weft__op **pp = &b->waiting; *pp; pp = &(*pp)->priv.blocking.next)
            if (*pp == op) {
                *pp = op->priv.blocking.next;
                b->nwaiting--;
                break;
            }
        if (op->kind == WEFT__OP_POLL) {
            op->res = fds[i].revents;
            op->priv.blocking.next = ready;
            ready = op;
            continue;
        }
        enqueue_locked(b, op);
    }
    return ready;
}

static void *poller_main(void *arg)
{
    struct weft__blocking *b = arg;
    pthread_setname_np(pthread_self(), "weft-poller");
    size_t cap = 0;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        /* Settle what is due, then build the poll set. Only this thread takes
         * operations off the waiting list, so the array stays valid unlocked. */
        int64_t next;
        struct weft__op *done = take_due_locked(b, &next);
        if (done) {
            complete_list(b, done, true);
            continue;
        }
        if (!poll_room_locked(b, &cap)) {
            /* Out of memory for even the eventfd's entry: try again in 1 ms (sleeps
             * that come due meanwhile are settled at the top). */
            pthread_mutex_unlock(&b->mu);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        struct pollfd *fds = b->poll_fds;
        struct weft__op **ops = b->poll_ops;
        size_t n = 1;
        fds[0] = (struct pollfd){.fd = b->efd, .events = POLLIN};
        for (struct weft__op *op = b->waiting; op && n < cap; op = op->priv.blocking.next) {
            if (op->kind == WEFT__OP_SLEEP)
                continue;
            fds[n] = (struct pollfd){.fd = op->fd, .events = op_events(op)};
            ops[n++] = op;
        }
        pthread_mutex_unlock(&b->mu);
        int timeout = next < 0 ? -1 : (int)((next + 999999) / 1000000);
        int r = poll(fds, n, timeout);
        pthread_mutex_lock(&b->mu);
        if (r <= 0)
            continue;
        if (fds[0].revents) {
            uint64_t v;
            ssize_t rr = read(b->efd, &v, sizeof(v));
            (void)rr;
        }
        struct weft__op *ready = take_ready_locked(b, fds, ops, n);
        if (ready)
            complete_list(b, ready, false);
    }
    pthread_mutex_unlock(&b->mu);
    free(b->poll_fds);
    free(b->poll_ops);
    return NULL;
}

/* Can this operation wait for ever (on a peer)? Then it waits for readiness first. */
static bool needs_poll(const struct weft__op *op)
{
    switch (op->kind) {
    case WEFT__OP_POLL:
        return true;
    case WEFT__OP_READ:
    case WEFT__OP_WRITE:
    case WEFT__OP_RECV:
    case WEFT__OP_SEND:
    case WEFT__OP_ACCEPT: {
        struct stat st;
        if (fstat(op->fd, &st) != 0)
            return false; /* the syscall reports the error */
        return !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISDIR(st.st_mode);
    }
    default:
        return false;
    }
}

/* After the task switched away: hand the operation over. */
static void after_blocking(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    (void)w;
    (void)wt;
    struct weft__op *op = arg;
    struct weft__blocking *b = op->w->pool->blocking;
    pthread_mutex_lock(&b->mu);
    if (atomic_load_explicit(&op->cancelled, memory_order_relaxed)) {
        op->priv.blocking.state = BS_DONE;
        pthread_mutex_unlock(&b->mu);
        complete(op, -ECANCELED);
        return;
    }
    if (op->kind == WEFT__OP_SLEEP || (op->flags & 0x40000000))
        wait_locked(b, op);
    else
        enqueue_locked(b, op);
    pthread_mutex_unlock(&b->mu);
}

/* Before a task suspends on the backend: a thread that will run its op (and the
 * poller, for an op that polls first), started now if there is none yet. false:
 * none could be started, and a suspended op would wait forever; the caller blocks
 * instead. Later thread creations that fail are harmless: one thread exists. */
static bool can_queue(struct weft__blocking *b, bool poll, bool thread)
{
    pthread_mutex_lock(&b->mu);
    if (thread && b->nthreads == 0 && !WEFT__FAULT("thread.blocking") &&
        pthread_create(&b->threads[0], NULL, bthread_main, b) == 0)
        b->nthreads = 1;
    if (poll && !b->poller_started && !WEFT__FAULT("thread.poller") &&
        pthread_create(&b->poller, NULL, poller_main, b) == 0)
        b->poller_started = true;
    bool ok = (!thread || b->nthreads > 0) && (!poll || b->poller_started);
    pthread_mutex_unlock(&b->mu);
    return ok;
}

static int64_t blocking_run(struct weft__worker *w, struct weft__op *op)
{
    (void)w; /* op->w, set by io.c before the op went on its scope's list */
    bool poll = op->kind == WEFT__OP_SLEEP || needs_poll(op); /* the poller waits for it */
    /* Sleeps and pidfd polls end in the poller itself; the rest need a thread. */
    bool thread = op->kind != WEFT__OP_SLEEP && op->kind != WEFT__OP_POLL;
    if (!can_queue(op->w->pool->blocking, poll, thread))
        return weft__op_syscall(op); /* no thread: block this worker instead */
    if (op->kind == WEFT__OP_SLEEP) {
        int64_t d = now_ns() + (int64_t)op->ts.tv_sec * 1000000000 + op->ts.tv_nsec;
        op->ts.tv_sec = d / 1000000000;
        op->ts.tv_nsec = d % 1000000000;
    } else if (poll) {
        op->flags |= 0x40000000; /* private mark: poll first (no MSG_* flag uses it) */
    }
    if (weft__suspend(&op->wait, after_blocking, op) != 0) {
        /* No stack: block this worker instead. */
        op->flags &= ~0x40000000;
        if (op->kind == WEFT__OP_SLEEP) {
            int64_t left = deadline_ns(op) - now_ns();
            op->ts.tv_sec = left > 0 ? left / 1000000000 : 0;
            op->ts.tv_nsec = left > 0 ? left % 1000000000 : 0;
        }
        return weft__op_syscall(op);
    }
    op->flags &= ~0x40000000;
    return op->res;
}

unsigned weft__blocking_threads(const weft_pool *pool)
{
    struct weft__blocking *b = pool->blocking;
    pthread_mutex_lock(&b->mu);
    unsigned n = b->nthreads;
    pthread_mutex_unlock(&b->mu);
    return n;
}

static void blocking_cancel(struct weft__op *op)
{
    struct weft__blocking *b = op->w->pool->blocking;
    pthread_mutex_lock(&b->mu);
    if (op->priv.blocking.state == BS_QUEUED) {
        if (op_fifo_remove(&b->queue, op))
            b->nqueued--;
        op->priv.blocking.state = BS_DONE;
        pthread_mutex_unlock(&b->mu);
        complete(op, -ECANCELED);
        return;
    }
    if (op->priv.blocking.state == BS_WAITING)
        poller_wake(b); /* it sees op->cancelled, stored before we took mu */
    pthread_mutex_unlock(&b->mu);
}

/* Parking (backend.h): the threads make tasks ready themselves (runq.c), so there
 * is nothing to reap, and a worker sleeps on its futex word. */
static int blocking_park(struct weft__worker *w)
{
    weft__futex_wait(&w->wake, 0);
    return 0;
}

static void blocking_wake(struct weft__worker *target)
{
    weft__futex_wake(&target->wake, 1);
}

const struct weft__backend weft__backend_blocking = {
    .name = "blocking",
    .pool_init = blocking_pool_init,
    .pool_free = blocking_pool_free,
    .run = blocking_run,
    .cancel = blocking_cancel,
    .park = blocking_park,
    .wake = blocking_wake,
};
