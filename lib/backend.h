/* SPDX-License-Identifier: MIT */
/*
 * What an I/O backend must provide: the one interface between io.c (the I/O calls,
 * the plain syscall first) and the two ways a task's operation can wait, the
 * worker's io_uring (uring.c) and the blocking threads (blocking.c). The idea is Go's
 * runtime/netpoll.go, which lists what each platform's poller defines; here the
 * choice is made at run time, once per pool (pool.c), so it is a table of function
 * pointers rather than a set of names.
 *
 * Who holds which: each worker has one backend, w->io, the pool's (pool->io) unless
 * its thread could not use it (uring.c's thread_init then moves it to the blocking
 * threads). Operations that need a thread of their own (op->on_blocking:
 * weft_run_blocking, waitpid without pidfd) go to the pool's offload backend, the
 * blocking threads, whichever backend the workers use. io.c records in op->backend
 * which of the two runs an operation; the backend-private part of the operation
 * (op->priv in reactor.h) is that backend's.
 *
 * Nothing outside the two backends and pool.c's choice names either of them: io.c,
 * park.c, worker.c and scope.c call through the table.
 *
 *  entry        what it does                                   thread, locks
 *  -----------  ---------------------------------------------  -------------------------
 *  pool_init    set up the pool's part (rings; the threads'    pool.c, creating thread,
 *               state, threads start on demand). 0, or -errno: before any worker runs
 *               not usable here (the ring: pool.c takes the
 *               blocking threads instead; it has freed itself)
 *  pool_free    undo pool_init (also after its partial         pool.c, after the workers
 *               failure, and in a forked child: pool->dead,    are joined; no locks
 *               no threads, no ring memory, locks in any state)
 *  thread_init  per-worker setup on the worker's own thread    the worker, first, before
 *               (enable the ring). May move w->io to the       it runs a job
 *               blocking threads. NULL: none
 *  run          run op for the task running on w, which        the task, on w; op on its
 *               suspends until it completes (io.c tried the    scope's list, not locked
 *               plain syscall first). The result, or -errno;
 *               the task may come back on another worker
 *  cancel       make op's run end soon (-ECANCELED where it    any thread, under op's
 *               had not started); op->cancelled is set         scope's mu (op stays valid)
 *  unqueue      the task is done with op (run returned): drop  the task, under op's
 *               every reference the backend still holds (the   scope's mu
 *               ring's cancel inbox). NULL: none are kept
 *  read_file    weft_read_file's whole file, when the cached   the task, on w
 *               open said it would block; -ENOSYS: not here,
 *               io.c takes the plain way. NULL: never
 *  poll         submit and reap without waiting; the number    w's owner, between jobs
 *               of tasks made ready (on w's ready queue).      (every WEFT__IO_EVERY
 *               NULL for a backend whose completions need no   jobs, and at the next one
 *               reaping (its threads make tasks ready          when the backend set
 *               themselves: runq.c). A backend that queues     w->io_attn: weft__io_due
 *               work for the next poll (entries not yet        below)
 *               submitted, cancels from other threads) sets
 *               w->io_attn; its poll clears it
 *  park         sleep until w->wake is set, or (returns > 0)   w's owner, parked (on the
 *               completions made tasks ready; may return 0     idle stack: park.c), no
 *               early (park.c checks the wake word again)      locks
 *  wake         end target's park; its wake word is stored     any thread (a worker, a
 *               (release) already                              blocking thread, a timer)
 *
 * Cost: one indirect call where io.c, park.c and worker.c made a direct one, and
 * none on the warm-cache path, which is io.c's plain syscall; between jobs, a load
 * of io_attn (a pending() call into the backend there was 3-4 % of a tree of
 * scopes' time on io_uring).
 */
#ifndef WEFT_BACKEND_H
#define WEFT_BACKEND_H

#include "reactor.h"

struct weft__backend {
    const char *name;                 /* "io_uring", "blocking" (testing hook, io.c) */
    int  (*pool_init)(weft_pool *pool);
    void (*pool_free)(weft_pool *pool);
    void (*thread_init)(struct weft__worker *w);
    int64_t (*run)(struct weft__worker *w, struct weft__op *op);
    void (*cancel)(struct weft__op *op);
    void (*unqueue)(struct weft__op *op);
    int  (*read_file)(struct weft__worker *w, const char *path, void **data, size_t *size);
    int  (*poll)(struct weft__worker *w);
    int  (*park)(struct weft__worker *w);
    void (*wake)(struct weft__worker *target);
};

/* The two backends; only pool.c's choice (and uring.c's per-worker fallback) name
 * them. */
#ifdef WEFT_HAVE_URING
extern const struct weft__backend weft__backend_uring;
#endif
extern const struct weft__backend weft__backend_blocking;

/* The task is done with op (scope.c, under the scope's mu). */
static inline void weft__op_unqueue(struct weft__op *op)
{
    if (op->backend->unqueue)
        op->backend->unqueue(op);
}

/* Whether the owner's next look for work polls its backend: every WEFT__IO_EVERY
 * jobs, and at once when the backend asked (io_attn). Counts a job pick. Relaxed:
 * a request set meanwhile is seen at a later look; the poll that clears it orders
 * itself against the setters (uring.c). */
static inline bool weft__io_due(struct weft__worker *w)
{
    return w->io->poll && (++w->tick >= WEFT__IO_EVERY ||
                           atomic_load_explicit(&w->io_attn, memory_order_relaxed) != 0);
}

/* The look itself, where a job is picked (find_work, a scope's drain): poll when due,
 * and count afresh from there. */
static inline void weft__io_look(struct weft__worker *w)
{
    if (weft__io_due(w)) {
        w->tick = 0;
        w->io->poll(w);
    }
}

#endif
