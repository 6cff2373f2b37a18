/* SPDX-License-Identifier: MIT */
/*
 * Spawn frames are recycled: once warm, spawning does no malloc at all.
 *
 * Measured two ways, so that every build checks it:
 *  - allocation calls made on the pool's worker threads while the warm rounds run,
 *    counted by whichever allocator the build has: under ASan and TSan through the
 *    sanitizer runtime's malloc hooks (glibc's arena, which mallinfo2 reads, is not
 *    used there); otherwise by interposing the malloc family in this program and
 *    forwarding to glibc's own entry points (__libc_malloc, ...);
 *  - the pool's frame slabs (lib/task.c), which in a -Djemalloc=enabled build come
 *    from a private jemalloc arena that neither of the above sees: none is added.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <malloc.h>
#include <stddef.h>

#include "weft.h"
#include "pool.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HOOKS 1
/* From the sanitizer runtimes' allocator interface (LLVM's
 * sanitizer/allocator_interface.h, which GCC does not install). */
int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *));
#else
#define HOOKS 0
#endif

#define TASKS 100000

/* Allocation calls on worker threads while counting is on. */
static _Atomic(int) counting;
static _Atomic(long) worker_allocs;

static inline void note_alloc(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed) && weft__self)
        atomic_fetch_add_explicit(&worker_allocs, 1, memory_order_relaxed);
}

#if HOOKS
static void on_malloc(const volatile void *p, size_t size)
{
    (void)p;
    (void)size;
    note_alloc();
}

static void on_free(const volatile void *p)
{
    (void)p;
}

__attribute__((constructor)) static void install_hooks(void)
{
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
#else
/* glibc's own allocator entry points: the interposed functions below forward there,
 * so memory from either side may be freed by the other. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

void *malloc(size_t n)
{
    note_alloc();
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    note_alloc();
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    note_alloc();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    note_alloc();
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    note_alloc();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    note_alloc();
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
#endif

/* The pool's frame slabs: a list linked through each slab's first word (struct slab
 * in lib/task.c), under frames_mu. */
static unsigned slabs(weft_pool *pool)
{
    unsigned n = 0;
    pthread_mutex_lock(&pool->frames_mu);
    for (void *s = pool->slabs; s; s = *(void **)s)
        n++;
    pthread_mutex_unlock(&pool->frames_mu);
    return n;
}

static _Atomic(long) ran;
static _Atomic(int) gate = 1;

static int task(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&gate, memory_order_acquire))
        sched_yield();
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return 0;
}

/* arg: the number of tasks (an int), or NULL for SCALED(TASKS). */
static int spawn_many(weft_scope *s, void *arg)
{
    int n = arg ? *(const int *)arg : SCALED(TASKS);
    for (int i = 0; i < n; i++) {
        int err = weft_spawn(s, task, NULL);
        if (err)
            return err;
    }
    atomic_store_explicit(&gate, 1, memory_order_release);
    return 0;
}

struct measure {
    weft_pool *pool;
    long allocs;
    unsigned slabs_before, slabs_after;
    int err;
};

/* One task runs every round, so the same worker spawns each time (its deque and
 * free list warm up once); the others only steal and run. */
static int rounds(void *arg)
{
    struct measure *m = arg;
    /* Warm up with every task in flight at once (tasks wait at a gate the body
     * opens after its last spawn): the most frames a round can need. Frames are
     * recycled where they finish and each worker keeps at most
     * WEFT__FRAMES_LOCAL_MAX of them (task.c), so beyond the peak in flight the
     * pool may add slabs until the thieves' caches are full: bounded, see below. */
    atomic_store(&gate, 0);
    if ((m->err = weft_scope_run(NULL, spawn_many, NULL)) != 0)
        return m->err;
    atomic_store(&ran, 0);
    m->slabs_before = slabs(m->pool);
    atomic_store(&worker_allocs, 0);
    atomic_store(&counting, 1);
    for (int k = 0; k < 5; k++)
        if ((m->err = weft_scope_run(NULL, spawn_many, NULL)) != 0)
            break;
    atomic_store(&counting, 0);
    m->allocs = atomic_load(&worker_allocs);
    m->slabs_after = slabs(m->pool);
    return m->err;
}

/* The counter itself works: an allocation on a worker is seen. */
static int alloc_once(void *arg)
{
    (void)arg;
    atomic_store(&counting, 1);
    void *volatile p = malloc(24);
    atomic_store(&counting, 0);
    free(p);
    return 0;
}

static void steady_state(unsigned threads)
{
    weft_pool *pool;
    /* Untraced: a trace's buffers grow with the work (WEFT_TRACE in the environment). */
    weft_pool_options o = {.threads = threads, .trace_path = ""};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    atomic_store(&worker_allocs, 0);
    cr_assert_eq(weft_run(pool, alloc_once, NULL), 0);
    cr_assert_eq(atomic_load(&worker_allocs), 1, "the allocation counter missed a malloc");
    struct measure m = {.pool = pool};
    cr_assert_eq(weft_run(pool, rounds, &m), 0);
    cr_assert_eq(m.err, 0);
    cr_assert_eq(atomic_load(&ran), 5L * SCALED(TASKS));
    cr_assert_gt(m.slabs_before, 0);
    /* One worker: not a slab, not an allocation call. More: each thief's cache may
     * still fill after the warm-up, but the pool never holds more than the peak in
     * flight plus a full cache and a slab per worker, and the only allocations are
     * those slabs. */
    unsigned extra = m.slabs_after - m.slabs_before;
    if (threads == 1)
        cr_assert_eq(extra, 0, "warm rounds added %u frame slabs", extra);
    size_t bound = (size_t)SCALED(TASKS) + threads * (WEFT__FRAMES_LOCAL_MAX + 2 * WEFT__FRAMES_SLAB);
    cr_assert_leq((size_t)m.slabs_after * WEFT__FRAMES_SLAB, bound, "%u slabs for %d in flight",
                  m.slabs_after, SCALED(TASKS));
    cr_assert_leq(m.allocs, (long)extra, "warm rounds made %ld allocation calls on workers for %u slabs",
                 m.allocs, extra);
    weft_pool_destroy(pool);
}

Test(frames, no_malloc_when_warm_1_worker) { steady_state(1); }
Test(frames, no_malloc_when_warm_2_workers) { steady_state(2); }
Test(frames, no_malloc_when_warm_4_workers) { steady_state(4); }

/* Spawns from a thread outside the pool take frames one at a time from the pool's
 * loose list, refilled a batch at a time (task.c), and the workers that run them
 * keep or hand back what they free: warm rounds from outside reuse frames. The
 * first round has every task in flight at once (the gate), the most it can need. */
static void outside_rounds(unsigned threads)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = threads, .trace_path = ""};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    atomic_store(&gate, 0);
    atomic_store(&ran, 0);
    int few = SCALED(TASKS) / 10;
    cr_assert_eq(weft_scope_run(pool, spawn_many, &few), 0); /* from this thread */
    unsigned before = slabs(pool);
    cr_assert_gt(before, 0);
    for (int k = 0; k < 20; k++) {
        atomic_store(&gate, 0);
        cr_assert_eq(weft_scope_run(pool, spawn_many, &few), 0);
    }
    cr_assert_eq(atomic_load(&ran), 21L * few);
    /* 20 rounds of TASKS/10 without reuse would need 20x the first round's slabs. */
    unsigned after = slabs(pool);
    size_t bound = (size_t)few +
                   threads * (WEFT__FRAMES_LOCAL_MAX + 2 * WEFT__FRAMES_SLAB) + WEFT__FRAMES_SLAB;
    cr_assert_leq((size_t)after * WEFT__FRAMES_SLAB, bound,
                  "%u slabs after 21 rounds of %d tasks from outside (%u after the first)",
                  after, few, before);
    weft_pool_destroy(pool);
}

Test(frames, reused_from_outside_1_worker) { outside_rounds(1); }
Test(frames, reused_from_outside_2_workers) { outside_rounds(2); }
