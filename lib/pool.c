/* SPDX-License-Identifier: MIT */
/*
 * Pools: creation, destruction, the default pool, fork, weft_run. The worker
 * threads themselves are worker.c's, the figures (weft_pool_stats) stats.c's.
 *
 * Creation runs in steps (options, the pool, its workers, the services, the
 * threads), each a function that returns 0 or -errno and leaves what it could not
 * finish to pool_free, the one unwind path. Fault injection (fault.h) names each
 * allocation, and tests/test_fault.c fails every one of them in turn.
 *
 * Lifecycle rules:
 *  - Options: explicit option > environment (WEFT_NUM_THREADS, WEFT_PIN, WEFT_IO,
 *    WEFT_TRACE: trace.c) > default (topo.c). The environment is read at each pool
 *    creation; garbage is ignored with one warning on stderr.
 *  - Workers start with asynchronous signals blocked, so a program's signal handlers
 *    run on its own threads, never in the middle of a task.
 *  - weft_pool_destroy waits for outside callers (weft_run, weft_scope_run, loops)
 *    to finish, then stops and joins the workers. Work inside the pool is always
 *    owned by some waiting outside caller, so nothing is dropped.
 *  - fork(): only the forking thread exists in the child, so every pool inherited
 *    from the parent is marked dead (its calls return -ECHILD) and the default pool
 *    is forgotten; the child may create new pools. weft_pool_destroy on a dead pool
 *    frees what it can without joining threads that do not exist.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "backend.h"
#include "fault.h"
#include "jobserver.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Lock order: create_mu, then pools_mu. */
static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static weft_pool *pools;            /* all live pools, for the fork handler */
static weft_pool *default_pool;
static bool atexit_registered;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static struct weft__topo topo;
static int topo_err;


static void atfork_prepare(void)
{
    pthread_mutex_lock(&create_mu);
    pthread_mutex_lock(&pools_mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&pools_mu);
    pthread_mutex_unlock(&create_mu);
}

static void atfork_child(void)
{
    for (weft_pool *p = pools; p; p = p->next_pool)
        atomic_store_explicit(&p->dead, -ECHILD, memory_order_relaxed);
    pools = NULL;          /* the child's pool list starts empty */
    default_pool = NULL;   /* a fresh default pool on first use */
    weft__self = NULL;     /* fork() from inside a task: this thread is no worker */
    weft__barrier_after_fork();
    pthread_mutex_init(&pools_mu, NULL);
    pthread_mutex_init(&create_mu, NULL);
}

static void global_init(void)
{
    weft__barrier_init();
    weft__frames_init();
    topo_err = weft__topo_init(&topo);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Environment: read at each pool creation, clamped, garbage ignored with a warning. */
static unsigned env_threads(void)
{
    const char *s = getenv("WEFT_NUM_THREADS");
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || s[0] == '-') {
        fprintf(stderr, "weft: ignoring WEFT_NUM_THREADS=%s (want a number >= 1)\n", s);
        return 0;
    }
    if (v > WEFT_MAX_THREADS) {
        fprintf(stderr, "weft: WEFT_NUM_THREADS=%s clamped to %u\n", s, WEFT_MAX_THREADS);
        v = WEFT_MAX_THREADS;
    }
    return (unsigned)v;
}

static bool env_flag(const char *name, const char *on)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return false;
    if (strcmp(s, on) == 0)
        return true;
    if (strcmp(s, "0") != 0 && strcmp(s, "uring") != 0)
        fprintf(stderr, "weft: ignoring %s=%s\n", name, s);
    return false;
}

static void worker_free(struct weft__worker *w)
{
    if (!w)
        return;
    weft__deque_free(&w->dq);
    weft__frames_worker_fini(w);
    free(w->victims);
    free(w->group_end);
    free(w);
}

/* The pool's memory, not its locks: also for pools inherited across fork(). */
static void pool_free_memory(weft_pool *pool)
{
    weft__trace_pool_free(pool);
    weft__js_pool_fini(pool);   /* gives every token back (none if dead) */
    /* Threads that may still wake workers go first: a blocking thread that has
     * just made a task ready may still be writing to its worker's eventfd. */
    if (pool->offload)
        pool->offload->pool_free(pool);
    weft__timer_free(pool);
    if (pool->io && pool->io != pool->offload)
        pool->io->pool_free(pool);
#ifdef WEFT_HAVE_FIBERS
    if (pool->stacks.map_size) {
        if (atomic_load_explicit(&pool->dead, memory_order_relaxed))
            weft__stack_cache_abandon(&pool->stacks);
        else
            weft__stack_cache_destroy(&pool->stacks);
    }
#endif
    if (pool->workers)
        for (unsigned i = 0; i < pool->nthreads; i++)
            worker_free(pool->workers[i]);
    free(pool->workers);
    free(pool->idle);
    weft__frames_free(pool);
}

static void pool_free(weft_pool *pool)
{
    pool_free_memory(pool);
    pthread_mutex_destroy(&pool->idle_mu);
    pthread_mutex_destroy(&pool->frames_mu);
    free(pool);
}

static void stop_workers(weft_pool *pool, unsigned started)
{
    /* Nobody registers on the stop latch: setting it wakes no one, so wake all. */
    weft__latch_set(&pool->stop);
    for (unsigned i = 0; i < started; i++)
        weft__park_wake(pool->workers[i]);
    weft__js_stop(pool);        /* workers waiting for a token */
    for (unsigned i = 0; i < started; i++)
        pthread_join(pool->workers[i]->thread, NULL);
}

/* Creation, step 1: the options as given, validated, with the environment's and
 * the defaults filled in (explicit > environment > default). */
static int options_resolve(weft_pool_options *o, const weft_pool_options *opts)
{
    *o = (weft_pool_options){0};
    if (opts)
        *o = *opts;
    if (o->threads > WEFT_MAX_THREADS ||
        (o->flags & ~(WEFT_POOL_PIN | WEFT_POOL_NO_URING | WEFT_POOL_NO_JOBSERVER)))
        return -EINVAL;
    pthread_once(&global_once, global_init);
    if (topo_err)
        return topo_err;
    if (!o->threads)
        o->threads = env_threads();
    if (!o->threads)
        o->threads = weft__topo_default_threads(&topo);
    if (env_flag("WEFT_PIN", "1"))
        o->flags |= WEFT_POOL_PIN;
    if (env_flag("WEFT_IO", "blocking"))
        o->flags |= WEFT_POOL_NO_URING;
    return 0;
}

/* Step 2: the pool itself, its locks and arrays; *seed: WEFT_SCHED's (noise.c).
 * NULL without memory (nothing to free then). */
static weft_pool *pool_alloc(const weft_pool_options *o, uint64_t *seed)
{
    weft_pool *pool = WEFT__FAULT("pool.pool") ? NULL
                    : aligned_alloc(64, (sizeof(*pool) + 63) & ~(size_t)63);
    if (!pool)
        return NULL;
    memset(pool, 0, sizeof(*pool));
    pthread_mutex_init(&pool->idle_mu, NULL);
    atomic_init(&pool->inj_lock, 0);
    pthread_mutex_init(&pool->frames_mu, NULL);
    atomic_init(&pool->sleep_state, 0);
    atomic_init(&pool->inj_len, 0);
    weft__latch_init(&pool->stop);
    atomic_init(&pool->dead, 0);
    atomic_init(&pool->outside, 0);
    atomic_init(&pool->ext_spawns, 0);
    pool->nthreads = o->threads;
    pool->sched_random = weft__noise_config(seed);
    pool->flags = o->flags;
    pool->topo = &topo;
    pool->workers = WEFT__FAULT("pool.arrays") ? NULL
                                               : calloc(o->threads, sizeof(*pool->workers));
    pool->idle = WEFT__FAULT("pool.arrays") ? NULL : calloc(o->threads, sizeof(*pool->idle));
    return pool;
}

/* Step 3: the workers (not their threads yet). 0 or -ENOMEM; pool_free undoes it. */
static int workers_alloc(weft_pool *pool, uint64_t seed)
{
    if (!pool->workers || !pool->idle)
        return -ENOMEM;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__worker *w = WEFT__FAULT("pool.worker") ? NULL
                               : aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
        if (!w)
            return -ENOMEM;
        memset(w, 0, sizeof(*w));
        pool->workers[i] = w;
        w->pool = pool;
        w->id = i;
        if (pool->sched_random)
            w->rng = weft__noise_seed_worker(seed, i);
        else
            w->rng = weft__noise_seed_worker((uint64_t)(uintptr_t)w, i);
        atomic_init(&w->wake, 0);
        atomic_init(&w->ready_lock, 0);
        atomic_init(&w->ready_len, 0);
        atomic_init(&w->yield_len, 0);
        if (weft__deque_init(&w->dq) != 0 || weft__worker_victims_init(pool, w) != 0 ||
            weft__frames_worker_init(w) != 0)
            return -ENOMEM;
        /* Each worker's deque counts in its own range of indices, 2^52 apart: a
         * task that suspended and resumed on another worker can then never take
         * that worker's bottom for its own join's (weft.h). 2^52 pushes are weeks
         * at a billion a second, and a wrap into the next range is harmless unless
         * it coincides with such a move at exactly the same index. */
        weft__deque_set_base(&w->dq, (int64_t)i << 52);
    }
    return 0;
}

/* Step 4: the services the workers use: jobserver tokens, stacks and each worker's
 * first dispatch fiber, the hooks, the trace, the reactor, the timer. 0 or -errno;
 * pool_free undoes it. */
static int services_init(weft_pool *pool, const weft_pool_options *o)
{
    if (weft__js_pool_init(pool, o->flags) != 0)
        return -ENOMEM;
#ifdef WEFT_HAVE_FIBERS
    /* Every worker runs on a cache stack, and every suspended task holds one: keep
     * a few free per worker for reuse, unmap the rest. */
    if (weft__stack_cache_init(&pool->stacks, o->stack_size, 16 + 4 * (size_t)o->threads) != 0)
        return -EINVAL; /* stack_size too large to map */
#endif
    /* Each worker's first dispatch fiber, now: a worker that could not get one later
     * could not run the tasks that suspend elsewhere and resume on it. */
    for (unsigned i = 0; i < pool->nthreads; i++)
        if (weft__suspend_worker_init(pool->workers[i]) != 0)
            return -ENOMEM;
    pool->on_worker_start = o->on_worker_start;
    pool->on_worker_stop = o->on_worker_stop;
    pool->hook_arg = o->hook_arg;
    int err = weft__trace_pool_init(pool, o->trace_path); /* WEFT_TRACE, trace.c */
    if (err)
        return err;
    /* The I/O backend (backend.h): the rings where io_uring works, else the
     * blocking threads. Those exist on both (the offload backend: weft_run_blocking),
     * started on demand; the timer thread too, on the first deadline. */
    pool->ring_entries = o->ring_entries;
    pool->offload = &weft__backend_blocking;
#ifdef WEFT_HAVE_URING
    if (!(o->flags & WEFT_POOL_NO_URING) && weft__backend_uring.pool_init(pool) == 0)
        pool->io = &weft__backend_uring;
#endif
    if (pool->offload->pool_init(pool) != 0 || weft__timer_init(pool) != 0)
        return -ENOMEM;
    if (!pool->io)
        pool->io = pool->offload;
    for (unsigned i = 0; i < pool->nthreads; i++)
        pool->workers[i]->io = pool->io;
    return 0;
}

/* Step 5: the worker threads. 0, or -EAGAIN with every thread started stopped and
 * joined again. */
static int workers_start(weft_pool *pool)
{
    /* Workers inherit this mask: asynchronous signals stay with the program's own
     * threads; faults (SIGSEGV, SIGBUS, ...) stay deliverable. */
    sigset_t all, old;
    sigfillset(&all);
    static const int sync_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t k = 0; k < sizeof(sync_sigs) / sizeof(sync_sigs[0]); k++)
        sigdelset(&all, sync_sigs[k]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pool->creator_mask = old; /* children spawned from tasks get it back (proc.c) */
    unsigned started = 0;
    int err = 0;
    for (; started < pool->nthreads; started++) {
        struct weft__worker *w = pool->workers[started];
        int pr = WEFT__FAULT("thread.worker")
                     ? EAGAIN
                     : pthread_create(&w->thread, NULL, weft__worker_main, w);
        if (pr != 0) {
            err = -EAGAIN;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        stop_workers(pool, started);
    return err;
}

WEFT_API int weft_pool_create(weft_pool **out, const weft_pool_options *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    weft_pool_options o;
    int err = options_resolve(&o, opts);
    if (err)
        return err;
    uint64_t seed = 0;
    weft_pool *pool = pool_alloc(&o, &seed);
    if (!pool)
        return -ENOMEM;
    /* One unwind path: pool_free frees whatever the steps got (each leaves what it
     * could not finish in a state pool_free understands). */
    if ((err = workers_alloc(pool, seed)) != 0 || (err = services_init(pool, &o)) != 0 ||
        (err = workers_start(pool)) != 0) {
        pool_free(pool);
        return err;
    }
    pthread_mutex_lock(&pools_mu);
    pool->next_pool = pools;
    pools = pool;
    pthread_mutex_unlock(&pools_mu);
    *out = pool;
    return 0;
}

static void unlink_pool(weft_pool *pool)
{
    pthread_mutex_lock(&pools_mu);
    for (weft_pool **pp = &pools; *pp; pp = &(*pp)->next_pool)
        if (*pp == pool) {
            *pp = pool->next_pool;
            break;
        }
    if (default_pool == pool)
        default_pool = NULL;
    pthread_mutex_unlock(&pools_mu);
}

WEFT_API void weft_pool_destroy(weft_pool *pool)
{
    if (!pool)
        return;
    if (atomic_load_explicit(&pool->dead, memory_order_relaxed)) {
        /* Inherited across fork(): its threads do not exist here. Its mutexes may
         * have been held by them, so free only memory, without destroying those. */
        pool_free_memory(pool);
        free(pool);
        return;
    }
    struct weft__worker *self = weft__self;
    if (self && self->pool == pool) {
        fprintf(stderr, "weft: weft_pool_destroy called from one of the pool's own "
                        "tasks; not destroying it (it would wait for itself)\n");
        return;
    }
    /* Acquire: pairs with the release decrement when an outside caller is done. */
    while (atomic_load_explicit(&pool->outside, memory_order_acquire) != 0) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    unlink_pool(pool);
    stop_workers(pool, pool->nthreads);
    weft__trace_pool_write(pool);
    pool_free(pool);
}

WEFT_API unsigned weft_pool_threads(const weft_pool *pool)
{
    return pool ? pool->nthreads : 0;
}

WEFT_API int weft_worker_index(void)
{
    struct weft__worker *w = weft__current();
    return w ? (int)w->id : -1;
}

static void destroy_default_at_exit(void)
{
    pthread_mutex_lock(&pools_mu);
    weft_pool *p = default_pool;
    pthread_mutex_unlock(&pools_mu);
    /* exit() from inside a task, or while other threads still use the pool: leave
     * it to the OS rather than wait forever. */
    if (!p || weft__self ||
        atomic_load_explicit(&p->outside, memory_order_relaxed) != 0)
        return;
    weft_pool_destroy(p);
}

WEFT_API weft_pool *weft_default_pool(void)
{
    pthread_mutex_lock(&pools_mu);
    weft_pool *p = default_pool;
    pthread_mutex_unlock(&pools_mu);
    if (p)
        return p;
    pthread_mutex_lock(&create_mu);
    pthread_mutex_lock(&pools_mu);
    p = default_pool;
    pthread_mutex_unlock(&pools_mu);
    if (!p && weft_pool_create(&p, NULL) == 0) {
        pthread_mutex_lock(&pools_mu);
        default_pool = p;
        bool reg = !atexit_registered;
        atexit_registered = true;
        pthread_mutex_unlock(&pools_mu);
        if (reg)
            atexit(destroy_default_at_exit);
    }
    pthread_mutex_unlock(&create_mu);
    return p;
}

weft_pool *weft__default_pool_peek(void)
{
    pthread_mutex_lock(&pools_mu);
    weft_pool *p = default_pool;
    pthread_mutex_unlock(&pools_mu);
    return p;
}

weft_pool *weft__pool_resolve(weft_pool *pool, int *err)
{
    if (!pool) {
        struct weft__worker *w = weft__self;
        pool = w ? w->pool : weft_default_pool();
        if (!pool) {
            *err = -ENOMEM;
            return NULL;
        }
    }
    *err = weft__pool_check(pool);
    return *err ? NULL : pool;
}

WEFT_API int weft_run(weft_pool *pool, weft_fn fn, void *arg)
{
    int err;
    if (!fn)
        return -EINVAL;
    pool = weft__pool_resolve(pool, &err);
    if (!pool)
        return err;
    if (weft__worker_of(pool))
        return fn(arg);
    struct weft__job job;
    memset(&job, 0, sizeof(job));
    job.fn = fn;
    job.arg = arg;
    weft__latch_init(&job.latch);
    atomic_fetch_add_explicit(&pool->outside, 1, memory_order_relaxed);
    weft__runq_inject(pool, &job);
    weft__latch_wait(NULL, &job.latch);
    /* Release: pairs with the acquire load in weft_pool_destroy(). */
    atomic_fetch_sub_explicit(&pool->outside, 1, memory_order_release);
    return job.result;
}
