/* SPDX-License-Identifier: MIT */
/* Pools and workers: the structures every layer shares. */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>

#include "weft.h"
#include "debug.h"
#include "deque.h"
#include "noise.h"
#include "stats.h"
#include "topo.h"
#ifdef WEFT_HAVE_FIBERS
#include "fiber.h"
#endif

/* Fresh loop fibers a worker keeps for its next suspensions (sched.c). So an idle
 * worker holds at most 1 + WEFT__SPARE_FIBERS stacks. */
#define WEFT__SPARE_FIBERS 8
/* Jobs (or direct yields, sched.c) a worker runs between looks at its ring while it
 * has local work (worker.c's find_work resets the count when it looks). */
#define WEFT__IO_EVERY 32

struct weft__io;      /* uring.c: a worker's ring */
struct weft__blocking; /* blocking.c: the fallback backend's threads */
struct weft__js;       /* jobserver.c: the pool's workers' tokens */
struct weft__timer;    /* timer.c: scope deadlines */

/* A suspended task (sched.c). Lives on the suspended fiber's own stack. job is what
 * the ready queues hold (tagged WEFT__RESUME_TAG when handed out by find_work). */
struct weft__wait {
    struct weft__job job;
    struct weft__fiber *fiber;
    struct weft__worker *home;  /* the worker it suspended on (weft__ready's fallback) */
};

/* Runs on the worker a fiber switched to, right after the switch: the only safe
 * place to publish the fiber that left (DESIGN.md, suspension protocol). */
typedef void (*weft__after_fn)(struct weft__worker *w, struct weft__wait *wt, void *arg);

/* Tasks, counted by the worker that did the thing; summed by weft_pool_stats().
 * Single writer: the owner adds with a relaxed load+store, never an RMW. */
struct weft__counters {
    _Atomic(uint64_t) spawns, steals, steal_fails, parks, wakeups, io_ops;
};

#define WEFT__COUNT(w, field)                                                         \
    atomic_store_explicit(&(w)->stats.field,                                          \
                          atomic_load_explicit(&(w)->stats.field, memory_order_relaxed) + 1, \
                          memory_order_relaxed)

struct weft__worker {
    struct weft__deque dq;          /* must be first: weft.h's WEFT__DQ() */
    weft_pool *pool;
    unsigned id;
    pthread_t thread;
    uint64_t rng;                   /* owner-private xorshift state (noise.h) */
    bool searching;                 /* owner-private: counted in the parking word */
    /* Steal order: other workers' ids, nearest first; groups of equal distance are
     * delimited by group_end[] and searched from a random start. */
    unsigned *victims;
    unsigned *group_end;
    unsigned ngroups;
    /* Suspension (sched.c), owner-private: the fiber running now, the thread's own
     * stack (to exit on), spare loop fibers, and the action to run after the next
     * switch. The scope of the running task (a fiber-local value kept here while
     * the fiber runs) is dq.scope, on the deque's owner line, where weft.h's
     * inline join reads it for the job it pushes. */
    struct weft__fiber *fiber;
    struct weft__fiber *spare[WEFT__SPARE_FIBERS];
    unsigned nspare;
    weft__after_fn after;
    struct weft__wait *after_wt;
    void *after_arg;
    struct weft__fiber *after_from;
    struct weft__io *io;            /* this worker's ring, or NULL (blocking backend) */
    unsigned tick;                  /* jobs run since the last look at the ring */
    unsigned inj_tick;              /* jobs run since the last look at the injector */
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
    /* Spawn frames (task.c): owner-private free list. */
    struct weft__job *free_frames;
    unsigned nfree_frames;
    /* Parking (park.c). wake is the futex word; parked is guarded by pool->idle_mu. */
    alignas(64) _Atomic(uint32_t) wake;
    bool parked;
    /* Ready queue (sched.c): suspended tasks that may run again, FIFO. Any thread
     * pushes; the owner pops first, thieves too. ready_len for a lock-free look.
     * ready_lock: a spinlock (sched.c says why). */
    alignas(64) _Atomic(uint32_t) ready_lock;
    struct weft__job *ready_head, *ready_tail;
    struct weft__job *yield_head, *yield_tail;  /* tasks that called weft_yield */
    _Atomic(size_t) ready_len, yield_len;
    alignas(64) struct weft__counters stats;
    alignas(64) struct weft__wstats wstats; /* busy/idle time, latency (stats.c) */
#ifdef WEFT_HAVE_FIBERS
    struct weft__fiber thread_fiber; /* the thread's own stack (sched.c) */
#endif
};

struct weft_pool {
    /* Parking word: low 16 bits searching workers, high 16 bits sleepers. Read by
     * every push; written only when workers start or stop searching or sleeping. */
    alignas(64) _Atomic(uint32_t) sleep_state;
    alignas(64) pthread_mutex_t idle_mu;
    unsigned nidle;
    struct weft__worker **idle;     /* LIFO stack of parked workers */

    /* Injector: jobs from threads that are not workers of this pool. */
    alignas(64) pthread_mutex_t inj_mu;
    struct weft__job *inj_head, *inj_tail;
    _Atomic(size_t) inj_len;

    alignas(64) struct weft__latch stop;  /* set: workers leave their loop */
    _Atomic(int) dead;                    /* -ECHILD in a forked child */
    _Atomic(unsigned) outside;            /* outside callers still waiting */
    _Atomic(uint64_t) ext_spawns;         /* spawns from outside threads */

    /* Spawn frames shared between workers and outside threads (task.c). */
    pthread_mutex_t frames_mu;
    struct weft__job *frames;
    unsigned nframes;
    void *slabs;

    unsigned nthreads;
    unsigned flags;
    bool sched_random;                    /* WEFT_SCHED=random (noise.c) */
#ifdef WEFT_HAVE_FIBERS
    struct weft__stack_cache stacks;      /* fiber stacks (sched.c) */
#endif
    bool uring;                           /* workers have rings (uring.c) */
    struct weft__blocking *blocking;      /* blocking threads (blocking.c): the fallback
                                             backend, weft_run_blocking, waitpid
                                             without pidfd; threads start on demand */
    struct weft__js *js;                  /* make's jobserver (jobserver.c), or NULL */
    struct weft__timer *timer;            /* deadlines (timer.c) */
    sigset_t creator_mask;                /* signal mask of the thread that created
                                             the pool (weft_posix_spawnp) */
    unsigned ring_entries;
    struct weft__worker **workers;
    const struct weft__topo *topo;        /* process-wide, read once */
    /* weft_pool_options' worker hooks (pool.c) and the trace (trace.c, or NULL). */
    void (*on_worker_start)(unsigned index, void *hook_arg);
    void (*on_worker_stop)(unsigned index, void *hook_arg);
    void *hook_arg;
    struct weft__trace *trace;
    weft_pool *next_pool;                 /* all pools, for the fork handler */
};

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* pool.c */
weft_pool *weft__pool_resolve(weft_pool *pool, int *err);
int weft__pool_check(const weft_pool *pool);
/* The default pool if it exists (never creates it). */
weft_pool *weft__default_pool_peek(void);
/* The calling thread's worker if it belongs to pool, else NULL. */
static inline struct weft__worker *weft__worker_of(const weft_pool *pool)
{
    struct weft__worker *w = weft__self;
    return (w && w->pool == pool) ? w : NULL;
}

/* The calling thread's worker, read afresh: for code after a possible switch
 * (fiber.h, THE HAZARD). */
struct weft__worker *weft__current(void);

/* worker.c */
/* job as a deque slot holds it: spawned frames carry WEFT__FRAME_TAG. Never a
 * resume job (those come only from find_work). */
void weft__run_job(struct weft__worker *w, struct weft__job *job);
/* The same without the trace's slice around it (trace.c calls it). */
void weft__run_job_plain(struct weft__worker *w, struct weft__job *job);
/* One job to run (a resume job: see weft__is_resume), or NULL once until is set.
 * Local jobs are taken only above floor. May park. */
struct weft__job *weft__find_work(struct weft__worker *w, const struct weft__latch *until,
                                  int64_t floor);
void weft__inject(weft_pool *pool, struct weft__job *job);
struct weft__job *weft__inject_pop(struct weft__worker *w);
bool weft__work_visible(weft_pool *pool);

/* sched.c */
/* Resume jobs: the job of a struct weft__wait, both tag bits set. */
#define WEFT__RESUME_TAG ((uintptr_t)3)
static inline bool weft__is_resume(const struct weft__job *job)
{
    return ((uintptr_t)job & WEFT__RESUME_TAG) == WEFT__RESUME_TAG;
}
/* The worker thread: runs the worker loop on fibers until the pool stops. */
void weft__sched_thread(struct weft__worker *w);
/* Before the thread starts: its first loop fiber (a spare). 0 or -ENOMEM. */
int weft__sched_worker_init(struct weft__worker *w);
/* Suspend the running task: after the switch, after(w, wt, arg) runs on the worker
 * (and must arrange for weft__ready(wt) to be called exactly once). Returns when the
 * task runs again, on any worker. -ENOMEM: no stack, nothing happened (the caller
 * then does its work blocking). Inside a task only. */
int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg);
/* Make a suspended task runnable. Any thread; hint: a worker of the pool whose
 * queue to use when the caller is not one (NULL: the worker it suspended on). */
void weft__ready(struct weft__worker *hint, struct weft__wait *wt);
/* Push wt on w's ready queue (w: a worker of the pool; any thread). */
void weft__ready_push(struct weft__worker *w, struct weft__wait *wt);
struct weft__job *weft__ready_pop(struct weft__worker *w);
/* Tasks that yielded: taken after the deque, unless too many wait (sched.c). */
struct weft__job *weft__yield_pop(struct weft__worker *w);
bool weft__yield_first(struct weft__worker *w);
/* Less than a quarter of the running fiber's stack left (sched.c). */
bool weft__stack_low(struct weft__worker *w);
#ifdef WEFT_HAVE_FIBERS
/* Leave the running fiber suspended for to; after(w', wt, arg) runs once the switch
 * is complete. Returns when something resumes this fiber, on any worker. */
void weft__switch_to(struct weft__worker *w, struct weft__fiber *to, weft__after_fn after,
                     struct weft__wait *wt, void *arg);
/* A fresh loop fiber (a spare, else from the cache), or NULL without memory. */
struct weft__fiber *weft__loop_fiber(struct weft__worker *w);
/* The fiber of a resume job (as find_work hands it out). */
struct weft__fiber *weft__resume_fiber(struct weft__job *resume);
#endif
/* Suspend until some other ready work ran (weft_yield). false: nothing else to run,
 * or not inside a task. */
bool weft__yield(void);

/* park.c */
void weft__park(struct weft__worker *w, const struct weft__latch *until);
void weft__unpark_one(weft_pool *pool);
void weft__unpark(struct weft__worker *w);
void weft__start_searching(struct weft__worker *w);
void weft__stop_searching(struct weft__worker *w);
void weft__notify_work(weft_pool *pool);
void weft__futex_wait(_Atomic(uint32_t) *word, uint32_t val);
void weft__futex_wake(_Atomic(uint32_t) *word, int n);

/* join.c */
/* weft_join out of line, for the library's own callers (the loops): the inline one
 * in weft.h is not compiled into the library. */
int weft__join_lib(weft_fn a, void *arg_a, weft_fn b, void *arg_b);

/* latch.c: the one wait/wake protocol (its top comment has the state table). A latch
 * is set once, by one setter, and has at most one waiter at a time. */
void weft__latch_init(struct weft__latch *l);
bool weft__latch_is_set(const struct weft__latch *l);
/* Set l and wake its waiter. Any thread; l may be freed by its waiter at once. */
void weft__latch_set(struct weft__latch *l);
/* Wait until l is set. w: the calling worker (NULL: any other thread, which sleeps
 * on a futex). A worker helps (runs other work, local jobs only from floor up),
 * suspends when it finds a ready task or runs low on stack, and parks when idle. */
void weft__latch_wait_floor(struct weft__worker *w, struct weft__latch *l, int64_t floor);
/* As weft__latch_wait_floor with floor = the worker's current bottom (joins). */
void weft__latch_wait(struct weft__worker *w, struct weft__latch *l);
/* Wait until l is set without running other work on top of the caller: inside a
 * task the task suspends (its worker goes on); outside, the thread sleeps. For waits
 * whose setter may need frames a helper would bury (events, channels). */
void weft__latch_block(struct weft__latch *l);

/* task.c */
/* A spawn frame: the job, the worker whose lists it returns to (NULL: the pool's
 * shared list), the spawn time when sampled (stats.c; 0: not sampled, and always
 * once the frame has started), and up to 64 bytes of copied arguments. */
struct weft__frame {
    struct weft__job job;
    struct weft__worker *home;
    uint64_t stamp;
    alignas(16) unsigned char args[64];
};
static inline struct weft__frame *weft__frame_of(struct weft__job *j)
{
    return (struct weft__frame *)(void *)j;
}
struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w);
void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f);
void weft__frames_free(weft_pool *pool);
void *weft__frame_args(struct weft__job *f);
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

/* Testing hooks (tests/test_reactor.c). */
const char *weft__pool_io_backend(const weft_pool *pool);
void weft__pool_stack_counts(const weft_pool *pool, size_t *nfree, size_t *total);

#define WEFT__SEARCH_ONE 1u
#define WEFT__SLEEP_ONE  (1u << 16)
/* Parking word: a sleeper exists and nobody is searching. */
#define WEFT__NEED_WAKE(s) ((s) >= WEFT__SLEEP_ONE && ((s) & 0xffffu) == 0)

/* The observability hooks are inline and read struct weft__worker. */
#include "trace.h"

#endif
