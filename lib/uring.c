/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: one ring per worker (struct weft__ring, w->ring).
 *
 * Rings are created with the pool, disabled (IORING_SETUP_R_DISABLED), and each
 * worker enables its own from its thread, so that SINGLE_ISSUER makes that thread
 * the only submitter and DEFER_TASKRUN runs completion work only when the worker
 * asks for completions: between tasks and while it parks, never by interrupting a
 * task. Older kernels get the ring without those two flags.
 *
 * An operation (reactor.h) comes here only when its plain syscall said it would
 * block (io.c: RWF_NOWAIT, RESOLVE_CACHED). It is prepared in an SQE whose
 * user_data is the operation itself, on the task's stack, and submitted at once;
 * if it completes inside the submission the task goes on without suspending.
 * Otherwise it suspends (suspend.c) and the worker runs other work; the CQE, reaped
 * by the same worker (only it may), puts the task on the worker's ready queue
 * (runq.c). A worker's unsubmitted entries (wake
 * messages, cancellations, the eventfd read) go out with its next submission, in
 * the same io_uring_enter.
 *
 * Parking: a worker with nothing to do waits inside io_uring_enter for one
 * completion (park.c). Other workers wake it with IORING_OP_MSG_RING from their own
 * ring; threads that are not workers (and a failed message) write to an eventfd
 * that the ring always has a read outstanding on.
 *
 * Cancellation: only the owner may submit to its ring, so a scope's cancel queues
 * the operation on its worker's inbox and wakes that worker, which submits an
 * IORING_OP_ASYNC_CANCEL for it. The operation then completes with -ECANCELED.
 * Inbox entries stay valid: the canceller holds the scope's lock, under which the
 * task removes its operation (io.c), and the owner cancels only operations it has
 * not reaped yet (their tasks are still suspended).
 *
 * Registered files: each ring registers a sparse table of NSLOTS (64) fixed-file
 * slots, used by weft_read_file alone: its open, read and probe read go out as one
 * linked chain, which needs the file opened into a slot the reads can name (see
 * "weft_read_file" below). Every other operation takes the caller's plain fd, as
 * weft.h promises; a ring whose registration failed just has no free slots, and
 * weft_read_file then takes the plain path.
 *
 * As a backend (backend.h's table, at the end): every entry. A worker whose ring
 * cannot be enabled (thread_init) moves to the blocking threads.
 *
 * Rejected: an SQPOLL thread (a core spinning on every ring: there are as many
 * workers as cores); registering the callers' own fds (weft_open returns plain fds,
 * usable by any syscall, and a slot belongs to one ring while a task may resume on
 * another worker); one shared ring (every submission would take a lock, and
 * completions would wake the wrong worker).
 */
#define _GNU_SOURCE
#include "backend.h"
#include "fault.h"

#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RING_ENTRIES_DEFAULT 256u

/* user_data of entries that are not operations (operations are 8-byte aligned). */
#define UD_WAKE   ((uint64_t)1)   /* a MSG_RING wake arriving */
#define UD_EFD    ((uint64_t)2)   /* the eventfd read */
#define UD_CANCEL ((uint64_t)3)   /* an ASYNC_CANCEL's own completion */
#define UD_MSG    ((uint64_t)5)   /* tag: a MSG_RING we sent (worker pointer | 5) */
#define UD_CLOSE  ((uint64_t)6)   /* tag: closing a fixed-file slot (slot << 3 | 6) */

/* Fixed-file slots per ring, for weft_read_file's linked open+read (below). */
#define NSLOTS 64u
/* weft_read_file's first read: files up to this size take one io_uring_enter. */
#define RF_GUESS ((size_t)64 * 1024)
#define RF_PROBE ((size_t)4096)

struct weft__ring {
    struct io_uring uring;
    int efd;                       /* eventfd: wakes from threads without a ring */
    uint64_t ebuf;                 /* the eventfd read's buffer */
    bool efd_armed;                /* owner-private */
    bool enabled;                  /* owner-private: the thread enabled the ring */
    unsigned inflight;             /* owner-private: submitted, not reaped */
    pthread_mutex_t cmu;           /* cancel inbox, and slots to close for others */
    struct weft__op *cancel_head;
    unsigned remote_close[NSLOTS]; /* under cmu */
    unsigned nremote_close;
    _Atomic(bool) cancel_any;      /* either of the two is non-empty */
    _Atomic(unsigned) *attn;       /* the owner's io_attn (pool.h): set when the next
                                      look for work should poll (an entry queued and
                                      not submitted, a cancel in the inbox) */
    /* Fixed-file slots (owner-private): the free ones (none if registering failed). */
    unsigned free_slot[NSLOTS];
    unsigned nfree_slot;
};

/* The cancel inbox (list.h), under cmu. */
WEFT__DLIST_DEFINE(cancel_list, struct weft__op, priv.ring.cprev, priv.ring.cnext)

/* The kernel has IORING_OP_MSG_RING. Relaxed: every pool stores the same answer. */
static _Atomic(bool) msg_ring_ok;

static int ring_init(struct weft__ring *ring, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_R_DISABLED | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    int r = WEFT__FAULT("uring.ring") ? -ENOMEM
                                      : io_uring_queue_init_params(entries, &ring->uring, &p);
    if (r == -EINVAL) { /* before 6.1 */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_R_DISABLED;
        r = io_uring_queue_init_params(entries, &ring->uring, &p);
    }
    if (r < 0)
        return r;
    io_uring_ring_dontfork(&ring->uring); /* DESIGN.md: rings are not inherited */
    return 0;
}

static void ring_pool_free(weft_pool *pool);

static int ring_pool_init(weft_pool *pool)
{
    unsigned entries = pool->ring_entries ? pool->ring_entries : RING_ENTRIES_DEFAULT;
    struct io_uring_probe *probe = NULL;
    int err = 0;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__ring *ring = WEFT__FAULT("uring.io") ? NULL : calloc(1, sizeof(*ring));
        if (!ring) {
            err = -ENOMEM;
            goto fail;
        }
        ring->efd = WEFT__FAULT("uring.eventfd") ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (ring->efd < 0) {
            err = -ENOMEM; /* out of descriptors, or the fault site: no ring either way */
            free(ring);
            goto fail;
        }
        if ((err = ring_init(ring, entries)) != 0) {
            close(ring->efd);
            free(ring);
            goto fail;
        }
        pthread_mutex_init(&ring->cmu, NULL);
        atomic_init(&ring->cancel_any, false);
        ring->attn = &pool->workers[i]->io_attn;
        pool->workers[i]->ring = ring;
        if (i == 0) {
            probe = io_uring_get_probe_ring(&ring->uring);
            atomic_store_explicit(&msg_ring_ok,
                                  probe && io_uring_opcode_supported(probe, IORING_OP_MSG_RING),
                                  memory_order_relaxed);
            if (probe)
                io_uring_free_probe(probe);
        }
    }
    return 0;
fail:
    ring_pool_free(pool);
    return err;
}

static void ring_pool_free(weft_pool *pool)
{
    bool dead = atomic_load_explicit(&pool->dead, memory_order_relaxed) != 0;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__worker *w = pool->workers ? pool->workers[i] : NULL;
        if (!w || !w->ring)
            continue;
        struct weft__ring *ring = w->ring;
        if (dead) {
            /* Forked child: the ring's memory was not inherited. */
            close(ring->uring.ring_fd);
        } else {
            io_uring_queue_exit(&ring->uring);
            pthread_mutex_destroy(&ring->cmu);
        }
        close(ring->efd);
        free(ring);
        w->ring = NULL;
    }
}

/* The owner: an entry to fill, queued for the next submission; the next look for
 * work polls (attn), so that it goes out even when the caller does not submit. */
static struct io_uring_sqe *get_sqe(struct weft__ring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
    if (!sqe) {
        io_uring_submit(&ring->uring); /* full: make room */
        sqe = io_uring_get_sqe(&ring->uring);
    }
    /* Relaxed: the owner's own request, read by the owner. */
    atomic_store_explicit(ring->attn, 1, memory_order_relaxed);
    return sqe;
}

/* Another thread put something in the inbox (cancel_any set under cmu): the owner's
 * next look polls. Release: pairs with the exchange in poll_ring(), so the poll that
 * takes the request sees cancel_any. */
static void ask_owner(struct weft__ring *ring)
{
    atomic_store_explicit(ring->attn, 1, memory_order_release);
}

static void arm_efd(struct weft__ring *ring)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    if (!sqe)
        return; /* next time */
    io_uring_prep_read(sqe, ring->efd, &ring->ebuf, sizeof(ring->ebuf), 0);
    io_uring_sqe_set_data64(sqe, UD_EFD);
    ring->efd_armed = true;
}

static void ring_thread_init(struct weft__worker *w)
{
    struct weft__ring *ring = w->ring;
    /* liburing 2.3 has no io_uring_enable_rings(): the register call itself. */
    if (syscall(__NR_io_uring_register, ring->uring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                NULL, 0) < 0) {
        /* Should not happen; this worker's tasks then use the blocking threads (the
         * pool's offload backend: backend.h). */
        w->io = w->pool->offload;
        w->ring = NULL;
        io_uring_queue_exit(&ring->uring);
        close(ring->efd);
        pthread_mutex_destroy(&ring->cmu);
        free(ring);
        return;
    }
    ring->enabled = true;
    if (io_uring_register_files_sparse(&ring->uring, NSLOTS) == 0) {
        for (unsigned k = 0; k < NSLOTS; k++)
            ring->free_slot[ring->nfree_slot++] = NSLOTS - 1 - k;
    }
    arm_efd(ring);
    io_uring_submit(&ring->uring);
}

/* Owner: submit a cancel for every operation on the inbox that is still in flight. */
static void drain_cancels(struct weft__ring *ring)
{
    pthread_mutex_lock(&ring->cmu);
    /* Relaxed: the lock orders the inbox. */
    atomic_store_explicit(&ring->cancel_any, false, memory_order_relaxed);
    for (unsigned k = 0; k < ring->nremote_close; k++) {
        struct io_uring_sqe *sqe = get_sqe(ring);
        if (!sqe)
            break; /* cannot happen: get_sqe submits to make room */
        io_uring_prep_close_direct(sqe, ring->remote_close[k]);
        io_uring_sqe_set_data64(sqe, (uint64_t)ring->remote_close[k] << 3 | UD_CLOSE);
    }
    ring->nremote_close = 0;
    struct weft__op *op = ring->cancel_head;
    ring->cancel_head = NULL;
    for (; op; op = op->priv.ring.cnext) {
        op->priv.ring.cancel_queued = false;
        if (op->priv.ring.done)
            continue;
        struct io_uring_sqe *sqe = get_sqe(ring);
        if (!sqe)
            continue;
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
        io_uring_sqe_set_data64(sqe, UD_CANCEL);
    }
    pthread_mutex_unlock(&ring->cmu);
}

static void efd_wake(struct weft__ring *ring)
{
    uint64_t one = 1;
    ssize_t r = write(ring->efd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is full, so a wake is pending anyway */
}

static int reap(struct weft__worker *w)
{
    struct weft__ring *ring = w->ring;
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int ready = 0;
    io_uring_for_each_cqe(&ring->uring, head, cqe) {
        n++;
        uint64_t ud = cqe->user_data;
        if (ud == UD_WAKE || ud == UD_CANCEL)
            continue;
        if (ud == UD_EFD) {
            ring->efd_armed = false;
            continue;
        }
        if ((ud & 7) == UD_CLOSE) {
            ring->free_slot[ring->nfree_slot++] = (unsigned)(ud >> 3); /* the slot is free */
            continue;
        }
        if ((ud & 7) == UD_MSG) {
            /* Our wake message failed (an overflowing target ring, say): fall back
             * to the target's eventfd, so that the wake is not lost. */
            struct weft__worker *t = (struct weft__worker *)(uintptr_t)(ud & ~(uint64_t)7);
            efd_wake(t->ring);
            continue;
        }
        struct weft__op *op = (struct weft__op *)(uintptr_t)ud;
        op->res = cqe->res;
        op->priv.ring.done = true;
        ring->inflight--;
        if (op->priv.ring.suspended) {
            weft__runq_push_ready(w, &op->wait);
            ready++;
        }
    }
    io_uring_cq_advance(&ring->uring, n);
    if (!ring->efd_armed)
        arm_efd(ring);
    return ready;
}

static int poll_ring(struct weft__worker *w, bool wait)
{
    struct weft__ring *ring = w->ring;
    /* Take the request before looking at what it was for: a request set after the
     * exchange stays for the next look. acq_rel: pairs with ask_owner()'s release.
     * The load first: most polls are the periodic ones, with no request. */
    if (atomic_load_explicit(ring->attn, memory_order_relaxed))
        atomic_exchange_explicit(ring->attn, 0, memory_order_acq_rel);
    if (atomic_load_explicit(&ring->cancel_any, memory_order_relaxed))
        drain_cancels(ring);
    if (wait) {
        if (!ring->efd_armed)
            arm_efd(ring);
        io_uring_submit_and_wait(&ring->uring, 1);
    } else if (io_uring_sq_ready(&ring->uring) != 0 || ring->inflight != 0) {
        io_uring_submit_and_get_events(&ring->uring);
    } else {
        return 0;
    }
    return reap(w);
}

/* backend.h's poll and park: without waiting, and waiting for one completion (the
 * worker parks in its ring; a wake is a completion too, below). */
static int ring_poll(struct weft__worker *w)
{
    return poll_ring(w, false);
}

static int ring_park(struct weft__worker *w)
{
    return poll_ring(w, true);
}

static void ring_wake(struct weft__worker *target)
{
    struct weft__ring *tring = target->ring;
    struct weft__worker *me = weft__current();
    if (atomic_load_explicit(&msg_ring_ok, memory_order_relaxed) && me && me->ring &&
        me->ring->enabled && me != target) {
        struct io_uring_sqe *sqe = get_sqe(me->ring);
        if (sqe) {
            io_uring_prep_msg_ring(sqe, tring->uring.ring_fd, 0, UD_WAKE, 0);
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)target | UD_MSG);
            io_uring_submit(&me->ring->uring);
            return;
        }
    }
    efd_wake(tring);
}

static void prep(struct io_uring_sqe *sqe, struct weft__op *op)
{
    /* The ring's lengths are 32-bit: clamp as read(2) does (at most 0x7ffff000). */
    unsigned len = op->len > 0x7ffff000u ? 0x7ffff000u : (unsigned)op->len;
    switch (op->kind) {
    case WEFT__OP_OPEN:
        io_uring_prep_openat(sqe, AT_FDCWD, op->path, op->flags, op->mode);
        break;
    case WEFT__OP_CLOSE:
        io_uring_prep_close(sqe, op->fd);
        break;
    case WEFT__OP_READ:
        io_uring_prep_read(sqe, op->fd, op->buf, len, (uint64_t)op->off);
        break;
    case WEFT__OP_WRITE:
        io_uring_prep_write(sqe, op->fd, op->buf, len, (uint64_t)op->off);
        break;
    case WEFT__OP_STATX:
        io_uring_prep_statx(sqe, op->fd, op->path, op->flags, op->mask, op->stx);
        break;
    case WEFT__OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, 0);
        break;
    case WEFT__OP_ACCEPT:
        io_uring_prep_accept(sqe, op->fd, op->addr, op->addrlenp, op->flags);
        break;
    case WEFT__OP_CONNECT:
        io_uring_prep_connect(sqe, op->fd, op->addr, op->addrlen);
        break;
    case WEFT__OP_RECV:
        io_uring_prep_recv(sqe, op->fd, op->buf, len, op->flags);
        break;
    case WEFT__OP_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, len, op->flags);
        break;
    case WEFT__OP_SLEEP:
        io_uring_prep_timeout(sqe, (struct __kernel_timespec *)(void *)&op->ts, 0, 0);
        break;
    case WEFT__OP_POLL:
        io_uring_prep_poll_add(sqe, op->fd, POLLIN);
        break;
    case WEFT__OP_CALL:
    case WEFT__OP_WAITPID:
        /* on_blocking: never on a ring (io.c) */
        io_uring_prep_nop(sqe);
        break;
    }
}

/* After the task switched away: from now on its completion makes it ready. */
static void after_uring(struct weft__worker *w, struct weft__wait *wt, void *arg)
{
    (void)w;
    (void)wt;
    struct weft__op *op = arg;
    op->priv.ring.suspended = true;
}

static int64_t ring_run(struct weft__worker *w, struct weft__op *op)
{
    struct weft__ring *ring = w->ring;
    struct io_uring_sqe *sqe = get_sqe(ring);
    if (!sqe)
        return weft__op_syscall(op);
    prep(sqe, op);
    io_uring_sqe_set_data(sqe, op);
    op->priv.ring.done = false;
    op->priv.ring.suspended = false;
    ring->inflight++;
    /* Submit now, with whatever else is queued: a warm-cache operation completes in
     * here and the task need not suspend. */
    io_uring_submit_and_get_events(&ring->uring);
    reap(w);
    if (!op->priv.ring.done && weft__suspend(&op->wait, after_uring, op) != 0) {
        /* No stack to suspend on: wait here, in the ring. */
        while (!op->priv.ring.done)
            poll_ring(w, true);
    }
    WEFT_ASSERT(op->priv.ring.done);
    return op->res;
}

static void ring_cancel(struct weft__op *op)
{
    struct weft__worker *w = op->w;
    struct weft__ring *ring = w->ring;
    pthread_mutex_lock(&ring->cmu);
    if (!op->priv.ring.cancel_queued) {
        op->priv.ring.cancel_queued = true;
        cancel_list_insert(&ring->cancel_head, NULL, op);
    }
    /* Relaxed: the owner reads the inbox under cmu. */
    atomic_store_explicit(&ring->cancel_any, true, memory_order_relaxed);
    pthread_mutex_unlock(&ring->cmu);
    /* A running owner polls at its next look for work; a parked one is woken. The
     * stores above precede the wake word's release (park.c). */
    ask_owner(ring);
    weft__park_wake(w);
}

static void ring_unqueue(struct weft__op *op)
{
    struct weft__ring *ring = op->w->ring;
    pthread_mutex_lock(&ring->cmu);
    if (op->priv.ring.cancel_queued) {
        cancel_list_remove(&ring->cancel_head, NULL, op);
        op->priv.ring.cancel_queued = false;
    }
    pthread_mutex_unlock(&ring->cmu);
}

/* ------------------------------------------------------------------------------
 * weft_read_file in one submission, when the path is not in the dentry cache.
 *
 * On a warm cache weft_read_file is three plain syscalls (io.c: openat2 with
 * RESOLVE_CACHED, a NOWAIT read, close), cheaper than any ring operation. When the
 * cached open says EAGAIN, the path's metadata is on the disk and so, most likely,
 * are the file's pages: then the ring's way costs one submission and one
 * suspension for the lot. On a worker with a free fixed-file slot, that
 * submission carries a chain: open into the slot,
 * read up to RF_GUESS bytes, read RF_PROBE more. The links are hard (a short read
 * does not cancel the rest), so the second read returning 0 proves EOF for any
 * file; a file that has more continues on a plain fd. The slot's close is queued
 * without waiting and goes out with the worker's next submission.
 * The slot belongs to the ring of the worker that opened it: a task that suspended
 * on the chain may come back on another worker, which then asks the owner to
 * close it (its inbox, as for cancellation).
 * ---------------------------------------------------------------------------- */

static void close_slot(struct weft__worker *owner, unsigned slot)
{
    struct weft__ring *ring = owner->ring;
    if (weft__current() == owner) {
        struct io_uring_sqe *sqe = get_sqe(ring);
        if (sqe) {
            io_uring_prep_close_direct(sqe, slot);
            io_uring_sqe_set_data64(sqe, (uint64_t)slot << 3 | UD_CLOSE);
            return;
        }
    }
    pthread_mutex_lock(&ring->cmu);
    ring->remote_close[ring->nremote_close++] = slot; /* at most NSLOTS are out */
    /* Relaxed: the owner reads the list under cmu. */
    atomic_store_explicit(&ring->cancel_any, true, memory_order_relaxed);
    pthread_mutex_unlock(&ring->cmu);
    ask_owner(ring);
    weft__park_wake(owner);
}

/* Three SQEs in a row for the chain (submitting first if the queue has less room).
 * false: none (cannot happen after the submit; any taken go back as no-ops). */
static bool take_three_sqes(struct weft__ring *ring, struct io_uring_sqe *sqe[3])
{
    if (io_uring_sq_space_left(&ring->uring) < 3)
        io_uring_submit(&ring->uring);
    for (int k = 0; k < 3; k++)
        sqe[k] = io_uring_get_sqe(&ring->uring);
    if (sqe[0] && sqe[1] && sqe[2])
        return true;
    for (int k = 0; k < 3; k++)
        if (sqe[k]) {
            io_uring_prep_nop(sqe[k]);
            io_uring_sqe_set_data64(sqe[k], UD_CANCEL);
        }
    return false;
}

static int ring_read_file(struct weft__worker *w, const char *path, void **data,
                          size_t *size)
{
    struct weft__ring *ring = w->ring;
    if (ring->nfree_slot == 0)
        return -ENOSYS;
    char *buf = WEFT__FAULT("uring.read_file") ? NULL : malloc(RF_GUESS + RF_PROBE + 1);
    if (!buf)
        return -ENOMEM;
    struct io_uring_sqe *sqe[3];
    if (!take_three_sqes(ring, sqe)) {
        free(buf);
        return -ENOSYS;
    }
    unsigned slot = ring->free_slot[--ring->nfree_slot];
    struct weft__op op[3];
    memset(op, 0, sizeof(op));
    /* No O_CLOEXEC: direct descriptors are not in the fd table (it is EINVAL). */
    io_uring_prep_openat_direct(sqe[0], AT_FDCWD, path, O_RDONLY, 0, slot);
    io_uring_prep_read(sqe[1], (int)slot, buf, (unsigned)RF_GUESS, (uint64_t)-1);
    io_uring_prep_read(sqe[2], (int)slot, buf + RF_GUESS, (unsigned)RF_PROBE, (uint64_t)-1);
    sqe[0]->flags |= IOSQE_IO_HARDLINK;
    sqe[1]->flags |= IOSQE_IO_HARDLINK | IOSQE_FIXED_FILE;
    sqe[2]->flags |= IOSQE_FIXED_FILE;
    for (int k = 0; k < 3; k++) {
        op[k].w = w;
        io_uring_sqe_set_data(sqe[k], &op[k]);
    }
    ring->inflight += 3;
    io_uring_submit_and_get_events(&ring->uring);
    reap(w);
    /* A chain completes in order: the last one done means all three are. */
    if (!op[2].priv.ring.done && weft__suspend(&op[2].wait, after_uring, &op[2]) != 0) {
        while (!op[2].priv.ring.done)
            poll_ring(w, true);
    }
    WEFT_ASSERT(op[0].priv.ring.done && op[1].priv.ring.done && op[2].priv.ring.done);
    struct weft__worker *now = weft__current();
    if (op[0].res < 0) {
        /* Nothing was opened: the slot is free at once, on its owner. */
        if (now == w)
            ring->free_slot[ring->nfree_slot++] = slot;
        else
            close_slot(w, slot); /* closing an empty slot just frees it */
        free(buf);
        return (int)op[0].res;
    }
    close_slot(w, slot);
    if (op[1].res < 0 || op[2].res < 0) {
        free(buf);
        return (int)(op[1].res < 0 ? op[1].res : op[2].res);
    }
    size_t len = (size_t)op[1].res, more = (size_t)op[2].res;
    if (more == 0) {
        /* EOF: give back what was not used. */
        char *nb = WEFT__FAULT("uring.read_file_trim") ? NULL : realloc(buf, len + 1);
        if (nb)
            buf = nb;
        buf[len] = 0;
        *data = buf;
        *size = len;
        return 0;
    }
    /* More: keep what came, go on reading from a plain fd at offset len + more. */
    memmove(buf + len, buf + RF_GUESS, more);
    len += more;
    int fd = weft_open(path, O_RDONLY, 0);
    if (fd < 0) {
        free(buf);
        return fd;
    }
    return weft__read_rest(fd, buf, len, RF_GUESS + RF_PROBE, data, size);
}

const struct weft__backend weft__backend_uring = {
    .name = "io_uring",
    .pool_init = ring_pool_init,
    .pool_free = ring_pool_free,
    .thread_init = ring_thread_init,
    .run = ring_run,
    .cancel = ring_cancel,
    .unqueue = ring_unqueue,
    .read_file = ring_read_file,
    .poll = ring_poll,
    .park = ring_park,
    .wake = ring_wake,
};
