/* SPDX-License-Identifier: MIT */
/*
 * Pools and workers: the two structures every layer shares, and the headers of the
 * layers. struct weft__worker's fields are grouped by the file that owns them (a
 * comment per group says which, and who else may read them); struct weft_pool's
 * likewise. Each concern's prototypes are in its own header, included here so that
 * a file of lib/ includes pool.h alone:
 *   latch.h (latch.c)  runq.h (runq.c)  suspend.h (suspend.c)  worker.h (worker.c)
 *   park.h (park.c)    stats.h, trace.h (stats.c, trace.c)     deque.h (deque.c)
 * and below, pool.c's own, with those of task.c, scope.c and join.c.
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>

#include "spin.h"
#include "weft.h"
#include "debug.h"
#include "deque.h"
#include "list.h"
#include "latch.h"
#include "noise.h"
#include "park.h"
#include "runq.h"
#include "stats.h"
#include "suspend.h"
#include "topo.h"
#include "worker.h"
#ifdef WEFT_HAVE_FIBERS
#include "fiber.h"
#endif

struct weft__backend;  /* backend.h: an I/O backend's operations */
struct weft__ring;     /* uring.c: a worker's io_uring */
struct weft__blocking; /* blocking.c: the fallback backend's threads */
struct weft__js;       /* jobserver.c: the pool's workers' tokens */
struct weft__timer;    /* timer.c: scope deadlines */
struct weft__fbatch;   /* task.c: a batch of free spawn frames */

struct weft__worker {
    /* The deque (deque.c; weft.h's inline join). Must be first: WEFT__DQ(). Its
     * owner line also holds dq.scope, the running task's scope (scope.c): a
     * fiber-local value kept here while the fiber runs, read by the inline join
     * for the job it pushes. */
    struct weft__deque dq;

    /* Identity (pool.c sets them before the thread starts; read-only after). */
    weft_pool *pool;
    unsigned id;
    pthread_t thread;

    /* The worker thread (worker.c) and parking (park.c), owner-private: the
     * generator for random choices (noise.h); whether the worker is counted in the
     * parking word as searching (park.c); the steal order: other workers' ids,
     * nearest first, groups of equal distance delimited by group_end[] and searched
     * from a random start (worker.c). */
    uint64_t rng;
    bool searching;
    unsigned *victims;
    unsigned *group_end;
    unsigned ngroups;

    /* Suspension (suspend.c), owner-private: the fiber running now, spare dispatch
     * fibers, and the action to run after the next switch. */
    struct weft__fiber *fiber;
    struct weft__fiber *spare[WEFT__SPARE_FIBERS];
    unsigned nspare;
    weft__after_fn after;
    struct weft__wait *after_wt;
    void *after_arg;
    struct weft__fiber *after_from;

    /* The I/O backend (backend.h) and how often the search looks at it and at the
     * injector (worker.c), owner-private; and a figure of suspend.c's. */
    const struct weft__backend *io; /* its backend: the pool's, set before the thread
                                       starts; its own thread may change it once */
    struct weft__ring *ring;        /* uring.c's: this worker's ring, or NULL */
    unsigned tick;                  /* jobs run since the last look at the ring */
    /* Nonzero: the backend wants its poll at the next look for work (entries queued
     * and not submitted, cancels in its inbox; backend.h). Set by the owner and by
     * cancelling threads, cleared by the owner's poll: one relaxed load per job pick,
     * where an indirect call to ask the backend was 3-4 % of a tree of scopes' time
     * (perf, kernels uts on io_uring). */
    _Atomic(unsigned) io_attn;
    unsigned inj_tick;              /* jobs run since the last look at the injector */
    unsigned inj_burst;             /* injected jobs taken in a row by those looks */
    bool yield_turn;                /* find_work: yielders' turn ahead of the deque */
    unsigned long switches;         /* fibers this worker has switched away from */

    /* Scope accounting (scope.c), owner-private: tasks of acct_scope finished here
     * whose count the scope has not been told yet. */
    struct weft_scope *acct_scope;
    int64_t acct_done;

    /* Observability (stats.c, trace.c), owner-private: this worker's trace buffer
     * (NULL: tracing off, the one branch the hot paths pay), and spawns left until
     * the next one whose frame is stamped for a latency sample. */
    struct weft__tbuf *trace;
    unsigned stamp_tick;

    /* Spawn frames (task.c), owner-private: the frames this worker handed out and
     * ran itself, a list through job.next; and the others (adopted batches, frames
     * of other spawners run here), a stack of at most cap_frames pointers. */
    struct weft__job *own_frames;
    struct weft__job **free_frames;
    unsigned nfree_frames, cap_frames;

    /* Parking (park.c), shared: wake is the futex word (any waker stores it);
     * parked is guarded by pool->idle_mu. */
    alignas(64) _Atomic(uint32_t) wake;
    bool parked;

    /* Run queues (runq.c), shared: suspended tasks that may run again, FIFO, and
     * tasks that called weft_yield. Any thread pushes; the owner pops first,
     * thieves too. The lengths for a lock-free look. ready_lock: a spinlock, for
     * both queues (runq.c says why). */
    alignas(64) _Atomic(uint32_t) ready_lock;
    struct weft__jobq ready;
    struct weft__jobq yielded;
    _Atomic(size_t) ready_len, yield_len;

    /* Figures (stats.c): written by the owner, read by weft_pool_stats. */
    alignas(64) struct weft__counters stats;
    alignas(64) struct weft__wstats wstats; /* busy/idle time, latency */

#ifdef WEFT_HAVE_FIBERS
    /* Suspension (suspend.c, worker.c): the thread's own stack, to exit on. */
    struct weft__fiber thread_fiber;
#endif
};

struct weft_pool {
    /* Parking (park.c). The parking word: low 16 bits searching workers, high 16
     * bits sleepers (park.h); read by every push, written only when workers start
     * or stop searching or sleeping. Then the idle stack, LIFO, under idle_mu. */
    alignas(64) _Atomic(uint32_t) sleep_state;
    alignas(64) pthread_mutex_t idle_mu;
    unsigned nidle;
    struct weft__worker **idle;

    /* The injector (runq.c): jobs from threads that are not workers of this pool. */
    alignas(64) _Atomic(uint32_t) inj_lock; /* spinlock (spin.h) */
    struct weft__jobq inj;
    _Atomic(size_t) inj_len;

    /* Lifecycle (pool.c). */
    alignas(64) struct weft__latch stop;  /* set: workers leave their dispatch loop */
    _Atomic(int) dead;                    /* -ECHILD in a forked child */
    _Atomic(unsigned) outside;            /* outside callers still waiting */
    _Atomic(uint64_t) ext_spawns;         /* spawns from outside threads (stats.c) */

    /* Spawn frames shared between workers and outside threads (task.c). */
    pthread_mutex_t frames_mu;
    struct weft__fbatch *frames;         /* full batches (task.c) */
    struct weft__fbatch *frames_tail;    /* the last of them: a queue */
    struct weft__fbatch *spare_batches;  /* batch records not in use */
    void *batch_blocks;                  /* where the records live (task.c) */
    unsigned nslabs, nrecords;           /* records >= slabs (task.c) */
    struct weft__job *loose;             /* single frames for outside threads */
    unsigned nloose;
    unsigned nframes;
    void *slabs;

    /* Configuration (pool.c) and the services, each owned by the file named;
     * set before the workers start. */
    unsigned nthreads;
    unsigned flags;
    bool sched_random;                    /* WEFT_SCHED=random (noise.c) */
#ifdef WEFT_HAVE_FIBERS
    struct weft__stack_cache stacks;      /* fiber stacks (suspend.c) */
#endif
    const struct weft__backend *io;       /* the workers' I/O backend (backend.h) */
    const struct weft__backend *offload;  /* for on_blocking ops: the blocking threads */
    struct weft__blocking *blocking;      /* blocking threads (blocking.c): the fallback
                                             backend, weft_run_blocking, waitpid
                                             without pidfd; threads start on demand */
    struct weft__js *js;                  /* make's jobserver (jobserver.c), or NULL */
    struct weft__timer *timer;            /* deadlines (timer.c) */
    sigset_t creator_mask;                /* signal mask of the thread that created
                                             the pool (weft_posix_spawnp, proc.c) */
    unsigned ring_entries;
    struct weft__worker **workers;
    const struct weft__topo *topo;        /* process-wide, read once */
    /* weft_pool_options' worker hooks (worker.c calls them) and the trace (trace.c,
     * or NULL). */
    void (*on_worker_start)(unsigned index, void *hook_arg);
    void (*on_worker_stop)(unsigned index, void *hook_arg);
    void *hook_arg;
    struct weft__trace *trace;
    weft_pool *next_pool;                 /* all pools, for the fork handler (pool.c) */
};

/* pool.c */
weft_pool *weft__pool_resolve(weft_pool *pool, int *err);
/* 0, or -ECHILD for a pool inherited across fork() (pool.c). */
static inline int weft__pool_check(const weft_pool *pool)
{
    return atomic_load_explicit(&((weft_pool *)pool)->dead, memory_order_relaxed);
}
/* The default pool if it exists (never creates it). */
weft_pool *weft__default_pool_peek(void);
/* The calling thread's worker if it belongs to pool, else NULL. */
static inline struct weft__worker *weft__worker_of(const weft_pool *pool)
{
    struct weft__worker *w = weft__self;
    return (w && w->pool == pool) ? w : NULL;
}

/* join.c */
/* weft_join out of line, for the library's own callers (the loops): the inline one
 * in weft.h is not compiled into the library. */
int weft__join_lib(weft_fn a, void *arg_a, weft_fn b, void *arg_b);

/* task.c */
/* A spawn frame: the job, the worker that handed it out (its spawner: task.c,
 * trace.c), and up to 64 bytes of copied arguments. Two cache lines exactly, in
 * slabs aligned to a line: a spawn writes both and whoever runs it reads both (a
 * 144-byte frame straddled three lines in a quarter of the cases, and its job's
 * fields two lines in half of them: on 2 workers each such line crosses between the
 * cores twice per task). The spawn time when sampled (stats.c; 0: not sampled, and
 * always once the frame has started) lives in job.idx, which only join and run jobs
 * use (weft.h, worker.c). */
struct weft__frame {
    struct weft__job job;
    struct weft__worker *home;
    alignas(16) unsigned char args[64];
};
_Static_assert(sizeof(struct weft__frame) == 128, "a spawn frame is two cache lines");
static inline struct weft__frame *weft__frame_of(struct weft__job *j)
{
    return (struct weft__frame *)(void *)j;
}
/* Relaxed: the spawner writes it before the push that publishes the frame, and
 * whoever starts the frame reads and clears it after taking it. */
static inline uint64_t weft__frame_stamp(struct weft__frame *fr)
{
    return (uint64_t)atomic_load_explicit(&fr->job.idx, memory_order_relaxed);
}
static inline void weft__frame_set_stamp(struct weft__frame *fr, uint64_t t)
{
    atomic_store_explicit(&fr->job.idx, (int64_t)t, memory_order_relaxed);
}
/* A frame, or NULL when out of memory. w: the calling worker of pool, or NULL.
 * The common case inline (a frame this worker handed out and ran itself, off its
 * list): a spawn then makes no call before its push, and saves no registers for
 * one (weft_spawn_copy's prologue and epilogue were 19 of its 75 instructions,
 * callgrind). The rest in task.c. */
struct weft__job *weft__frame_get_slow(weft_pool *pool, struct weft__worker *w);
static inline struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w)
{
    struct weft__job *f = w ? w->own_frames : NULL;
    if (WEFT_UNLIKELY(f == NULL))
        return weft__frame_get_slow(pool, w);
    /* The next one: its line is cold when it was freed long ago; fetch it while
     * this spawn goes on. A prefetch of NULL is a no-op: no branch. */
    struct weft__job *next = f->next;
    w->own_frames = next;
    __builtin_prefetch(next, 1);
    weft__frame_of(f)->home = w; /* the spawner (trace.c; frame_put) */
    return f;
}
/* f is done: back where it finished (task.c). The common case inline: a frame this
 * worker handed out goes back unbounded, hot, onto its own list (a cap there sent
 * them through the pool's list: flat spawn 42 -> 71 ns per task). The rest (a
 * frame spawned elsewhere, an outside thread's) in task.c. */
void weft__frame_put_slow(weft_pool *pool, struct weft__worker *w, struct weft__job *f);
static inline void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f)
{
    if (WEFT_LIKELY(w != NULL && weft__frame_of(f)->home == w)) {
        f->next = w->own_frames;
        w->own_frames = f;
        return;
    }
    weft__frame_put_slow(pool, w, f);
}
void weft__frames_free(weft_pool *pool);
void weft__frames_init(void); /* once per process, before any pool starts (pool.c) */
/* A worker's free stack: before its thread starts (0 or -ENOMEM), and at the end. */
int  weft__frames_worker_init(struct weft__worker *w);
void weft__frames_worker_fini(struct weft__worker *w);
/* Frames recycled per worker are bounded (task.c): */
#define WEFT__FRAMES_LOCAL_MAX 128u
#define WEFT__FRAMES_SLAB 64u
size_t weft__frames_allocated(weft_pool *pool); /* test hook */

/* scope.c */
void weft__run_frame(struct weft__worker *w, struct weft__job *f);
/* Tell the scope of w's deferred finishes about them (owner only). Called wherever
 * the worker stops running jobs of that scope back to back (scope.c says where). */
void weft__acct_flush_slow(struct weft__worker *w);
static inline void weft__acct_flush(struct weft__worker *w)
{
    if (w->acct_done)
        weft__acct_flush_slow(w);
}
/* I/O operations of tasks in a scope, for cancellation (io.c). */
struct weft__op;
int  weft__scope_op_add(struct weft_scope *s, struct weft__op *op); /* -ECANCELED */
void weft__scope_op_del(struct weft_scope *s, struct weft__op *op);

/* Testing hooks (tests/test_reactor.c): io.c, suspend.c. */
const char *weft__pool_io_backend(const weft_pool *pool);
void weft__pool_stack_counts(const weft_pool *pool, size_t *nfree, size_t *total);

/* Is less than a quarter of the running fiber's stack left? Then a wait stops
 * running other jobs on top of it (each would nest deeper: a loop whose items wait
 * splits again and again, and waits run the halves) and suspends instead. Inline:
 * the end of every scope asks (suspend.c's, kept here for struct weft__worker). */
/* Whether enough yielders wait on w that they go ahead of its deque (runq.h).
 * Relaxed: the length is a hint, as everywhere it is read without the lock. */
static inline bool weft__runq_yield_first(struct weft__worker *w)
{
    return atomic_load_explicit(&w->yield_len, memory_order_relaxed) >=
           WEFT__YIELD_MAX_PER_WORKER;
}

static inline bool weft__suspend_stack_low(struct weft__worker *w)
{
#ifdef WEFT_HAVE_FIBERS
    struct weft__fiber *f = w->fiber;
    if (!f || !f->stack)
        return false;
    char *sp = __builtin_frame_address(0);
    return sp - (char *)f->stack_lo < (ptrdiff_t)(f->stack_size / 4);
#else
    (void)w;
    return false;
#endif
}

/* The observability hooks are inline and read struct weft__worker. */
#include "trace.h"

#endif
