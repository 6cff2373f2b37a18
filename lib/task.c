/* SPDX-License-Identifier: MIT */
/*
 * Spawn frames. A weft_spawn needs a record that outlives the spawner's stack frame:
 * the job, the scope it belongs to and up to 64 bytes of copied arguments. Frames are
 * recycled where they finish, with no lock and no atomic on the common path. Each
 * worker keeps two private free stores:
 *  - the frames it handed out and ran itself, a list through the frames (unbounded:
 *    the spawner of a million tasks that runs them itself reuses them hot and in
 *    order, and touches no memory but the frames);
 *  - the others (frames of other spawners that finished here, and batches adopted
 *    from the pool), a stack of pointers holding at most LOCAL_MAX plus a batch.
 *    Past LOCAL_MAX a batch goes back to the pool's shared list, and a worker with
 *    both stores empty takes a batch from there (both under the pool's lock, once
 *    per SLAB_FRAMES frames). Being an array, the stack lets a spawn prefetch the
 *    frame a dozen spawns ahead: the frames of a flat loop on 2 workers come back
 *    from the thief's core, and a list lets the spawner see one ahead only (perf:
 *    the load of the next link was 65 % of frame_get).
 * Once a workload has reached its peak, spawning does no malloc at all, whoever runs
 * the tasks, and a task stolen from its spawner costs no write to the spawner's
 * memory when it finishes. (Before, a frame went back to the worker that handed it
 * out, by a CAS on that worker's remote-free stack: one shared write per stolen
 * task.) The worker's own frames stay off the stack: a million of them made it an 8 MB
 * array to grow (a realloc on the spawn path, and a fault site), and it was slower
 * on 1 worker than the list (flat spawn, 1M tasks: 39-45 against 38-40 ms). Frames
 * spawned from outside threads come from the pool's loose list (under the lock).
 * Frames come in slabs that live until the pool is destroyed: from a private
 * jemalloc arena when weft is built with -Djemalloc=enabled, else from malloc.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "fault.h"

#include <errno.h>
#include <stdbool.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef WEFT_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* A batch of free frames as the pool's list holds it: an array of pointers, so that
 * the worker that adopts it can prefetch frames ahead without reading one to find
 * the next. There is a record per slab and they circulate: a batch handed back
 * takes a spare one, a batch adopted leaves its own spare. There are never more
 * full batches than slabs (each holds SLAB_FRAMES frames), so a spare exists
 * whenever a worker holds a batch's worth to hand back. */
struct weft__fbatch {
    struct weft__fbatch *next;
    unsigned n;
    struct weft__job *f[WEFT__FRAMES_SLAB];
};

/* The records live in blocks of their own, mapped apart from the slabs: slabs that
 * follow each other in the heap keep their frames in one run of memory, which the
 * spawner of a flat loop walks in address order. A record in each slab (576 bytes
 * between one slab's frames and the next's) cost flat spawn on 1 worker its
 * hardware prefetch: 1M tasks, spawning 9.5 -> 23 ms, the whole 38 -> 65 ms. */
#define RECS_PER_BLOCK 64u
struct fbatch_block {
    struct fbatch_block *next;
    struct weft__fbatch rec[RECS_PER_BLOCK];
};

struct slab {
    struct slab *next; /* first: tests/test_frames.c walks the list */
    size_t size;
    alignas(64) struct weft__frame frames[];
};

#define SLAB_FRAMES WEFT__FRAMES_SLAB

#ifdef WEFT_HAVE_JEMALLOC
static unsigned arena;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static bool arena_ok;

static void arena_init(void)
{
    size_t sz = sizeof(arena);
    arena_ok = mallctl("arenas.create", &arena, &sz, NULL, 0) == 0;
}

static void *slab_alloc(size_t size)
{
    pthread_once(&arena_once, arena_init);
    if (!arena_ok)
        return malloc(size);
    return mallocx(size, MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE | MALLOCX_ALIGN(64));
}

static void slab_free(void *p, size_t size)
{
    if (!arena_ok)
        free(p);
    else
        sdallocx(p, size, MALLOCX_TCACHE_NONE | MALLOCX_ALIGN(64));
}
#else
static void *slab_alloc(size_t size)
{
    void *p = NULL;
    return posix_memalign(&p, 64, size) == 0 ? p : NULL;
}

static void slab_free(void *p, size_t size)
{
    (void)size;
    free(p);
}
#endif

/* The pool's shared frames (under frames_mu): full batches (pool->frames, a queue:
 * frames_tail is its last when it is not empty), spare batch records
 * (pool->spare_batches), and single frames for outside threads (pool->loose, a plain
 * list through job.next, refilled a batch at a time; outside spawns are not the path
 * this is tuned for).
 * A queue, not a stack: the batch a thief gave back last holds the frames it ran
 * last, still in its cache, and the spawner that adopted it at once paid a
 * cross-core transfer on each line it wrote. The oldest batch has had longest to
 * leave the thief's cache. Flat spawn, 1M x k16, 2 workers, alternated with the
 * stack: medians of 52.8 -> 50.7 ms and, in the VM's slow phase, 96 -> 88 ms
 * (benchmarks/collect's weft_spawn rows: within noise). */
static void batch_push_locked(weft_pool *pool, struct weft__fbatch *b)
{
    b->next = NULL;
    if (pool->frames)
        pool->frames_tail->next = b;
    else
        pool->frames = b;
    pool->frames_tail = b;
    pool->nframes += b->n;
}

/* Called with frames_mu held, before a new slab: a block of batch records when
 * every record has its slab already (there must be one per slab at least: a spare
 * in hand is not enough, it may be the record of a batch a worker adopted, which
 * that worker's frames need when it hands them back). 0 or -ENOMEM. */
static int records_locked(weft_pool *pool)
{
    if (pool->nslabs < pool->nrecords)
        return 0;
    size_t size = sizeof(struct fbatch_block);
    struct fbatch_block *blk = WEFT__FAULT("task.batch") ? MAP_FAILED :
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (blk == MAP_FAILED)
        return -ENOMEM;
    blk->next = pool->batch_blocks;
    pool->batch_blocks = blk;
    pool->nrecords += RECS_PER_BLOCK;
    for (unsigned k = 0; k < RECS_PER_BLOCK; k++) {
        blk->rec[k].next = pool->spare_batches;
        pool->spare_batches = &blk->rec[k];
    }
    return 0;
}

/* Called with frames_mu held: a new slab onto the shared list, as one batch. */
static int refill_locked(weft_pool *pool)
{
    if (records_locked(pool) != 0)
        return -ENOMEM;
    size_t size = sizeof(struct slab) + SLAB_FRAMES * sizeof(struct weft__frame);
    struct slab *s = WEFT__FAULT("task.slab") ? NULL : slab_alloc(size);
    if (!s)
        return -ENOMEM;
    s->size = size;
    s->next = pool->slabs;
    pool->slabs = s;
    pool->nslabs++;
    /* A spare exists: the pool's list is empty when a slab is added (adopt_locked,
     * frame_get_outside), so every record beyond its batches is spare. */
    struct weft__fbatch *b = pool->spare_batches;
    WEFT_ASSERT(b != NULL);
    pool->spare_batches = b->next;
    for (unsigned k = 0; k < SLAB_FRAMES; k++) {
        /* stats.c: set only on sampled spawns, cleared at start */
        weft__frame_set_stamp(&s->frames[k], 0);
        /* Handed out last first: the slab's frames in address order. */
        b->f[k] = &s->frames[SLAB_FRAMES - 1 - k].job;
    }
    b->n = SLAB_FRAMES;
    batch_push_locked(pool, b);
    return 0;
}

/* A worker keeps at most this many free frames spawned elsewhere; past it, it hands
 * a batch back to the pool (so frames that finish on a thief do not pile up there). */
#define LOCAL_MAX WEFT__FRAMES_LOCAL_MAX
/* How far ahead of the next spawn frame_get prefetches from the stack. A spawn
 * takes ~10 ns and a line last written on another core takes ~100 ns to come over:
 * with one ahead (which a list through the frames allows) the spawner of a flat
 * loop on 2 workers waited for a miss per frame. */
#define PREFETCH_AHEAD 12

/* Whether the CPU has PREFETCHW (x86: CPUID 0x80000001, ECX bit 8; every AMD64 CPU
 * from AMD, Intel's from Broadwell on). A spawn writes the frame it takes: a plain
 * prefetch brings a line that the thief's core also holds in the shared state, and
 * the store still waits for the other copy to be invalidated (perf: 48-75 % of
 * spawn and frame_get on their first stores in flat spawn's lockstep mode, prefetch
 * or not). Set once, before the first pool's workers start (weft__frames_init). */
static bool have_prefetchw;

void weft__frames_init(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000001u, &a, &b, &c, &d))
        have_prefetchw = (c >> 8) & 1;
#endif
}

/* Fetch the line at p for writing. */
static inline void prefetch_for_write(const void *p)
{
#if defined(__x86_64__)
    if (have_prefetchw)
        __asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)p));
    else
        __builtin_prefetch(p, 1);
#else
    __builtin_prefetch(p, 1);
#endif
}

int weft__frames_worker_init(struct weft__worker *w)
{
    /* The stack never holds more: a put past LOCAL_MAX gives a batch back, and an
     * adoption fills an empty stack with at most a batch (or cap loose frames). */
    w->cap_frames = LOCAL_MAX + SLAB_FRAMES;
    w->nfree_frames = 0;
    w->own_frames = NULL;
    w->free_frames = WEFT__FAULT("task.free") ? NULL :
                     malloc(w->cap_frames * sizeof(w->free_frames[0]));
    return w->free_frames ? 0 : -ENOMEM;
}

void weft__frames_worker_fini(struct weft__worker *w)
{
    free(w->free_frames);
    w->free_frames = NULL;
}

/* Called with frames_mu held: give w's newest SLAB_FRAMES free frames (those it ran
 * last, in its cache) to the pool as a batch. w holds at least that many. */
static void give_back_locked(weft_pool *pool, struct weft__worker *w)
{
    struct weft__fbatch *b = pool->spare_batches;
    WEFT_ASSERT(b != NULL && w->nfree_frames >= SLAB_FRAMES);
    pool->spare_batches = b->next;
    w->nfree_frames -= SLAB_FRAMES;
    memcpy(b->f, &w->free_frames[w->nfree_frames], sizeof(b->f));
    b->n = SLAB_FRAMES;
    batch_push_locked(pool, b);
}

/* Called with frames_mu held, w's stack empty: fill it from the pool (a batch, else
 * the loose frames, else a new slab). 0 or -ENOMEM. */
static int adopt_locked(weft_pool *pool, struct weft__worker *w)
{
    if (!pool->frames && pool->loose) {
        unsigned n = 0;
        while (pool->loose && n < w->cap_frames) {
            w->free_frames[n++] = pool->loose;
            pool->loose = pool->loose->next;
        }
        pool->nloose -= n;
        pool->nframes -= n;
        w->nfree_frames = n;
        return 0;
    }
    if (!pool->frames && refill_locked(pool) != 0)
        return -ENOMEM;
    struct weft__fbatch *b = pool->frames;
    pool->frames = b->next;
    pool->nframes -= b->n;
    memcpy(w->free_frames, b->f, b->n * sizeof(b->f[0])); /* cap >= SLAB_FRAMES */
    w->nfree_frames = b->n;
    b->next = pool->spare_batches;
    pool->spare_batches = b;
    return 0;
}

/* frame_get's slow paths, out of line so that its common path saves no registers:
 * w's stack is empty (0 or -ENOMEM), and a frame for an outside thread. */
static __attribute__((noinline)) int frames_adopt(weft_pool *pool, struct weft__worker *w)
{
    pthread_mutex_lock(&pool->frames_mu);
    int err = adopt_locked(pool, w);
    pthread_mutex_unlock(&pool->frames_mu);
    return err;
}

/* An outside thread: one frame of the loose list, refilled from a batch (or a new
 * slab) when empty. */
static __attribute__((noinline)) struct weft__job *frame_get_outside(weft_pool *pool)
{
    pthread_mutex_lock(&pool->frames_mu);
    if (!pool->loose) {
        if (!pool->frames && refill_locked(pool) != 0) {
            pthread_mutex_unlock(&pool->frames_mu);
            return NULL;
        }
        struct weft__fbatch *b = pool->frames;
        pool->frames = b->next;
        for (unsigned k = 0; k < b->n; k++) {
            b->f[k]->next = pool->loose;
            pool->loose = b->f[k];
        }
        pool->nloose += b->n;
        b->next = pool->spare_batches;
        pool->spare_batches = b;
    }
    struct weft__job *f = pool->loose;
    pool->loose = f->next;
    pool->nloose--;
    pool->nframes--;
    pthread_mutex_unlock(&pool->frames_mu);
    weft__frame_of(f)->home = NULL;
    return f;
}

/* weft__frame_get's other cases (pool.h has the common one inline: w's own list).
 * w's own list is empty: a frame from its stack of others' frames, refilled from the
 * pool when empty; or, for an outside thread (w NULL), from the loose list. */
struct weft__job *weft__frame_get_slow(weft_pool *pool, struct weft__worker *w)
{
    if (WEFT_UNLIKELY(w == NULL))
        return frame_get_outside(pool);
    if (WEFT_UNLIKELY(w->nfree_frames == 0) && frames_adopt(pool, w) != 0)
        return NULL;
    unsigned n = --w->nfree_frames;
    struct weft__job *f = w->free_frames[n];
    /* A later spawn's frame: its lines are cold when it was freed on another core;
     * fetch them while the spawns in between go on. The job and the start of the
     * arguments: the two lines a spawn writes. */
    if (n >= PREFETCH_AHEAD) {
        const char *p = (const char *)w->free_frames[n - PREFETCH_AHEAD];
        prefetch_for_write(p);
        prefetch_for_write(p + 64);
    }
    weft__frame_of(f)->home = w; /* the spawner (trace.c's flows; frame_put) */
    return f;
}

/* frame_put's slow path, out of line: w's stack is over LOCAL_MAX. */
static __attribute__((noinline)) void frames_give_back(weft_pool *pool, struct weft__worker *w)
{
    pthread_mutex_lock(&pool->frames_mu);
    give_back_locked(pool, w);
    pthread_mutex_unlock(&pool->frames_mu);
}

static __attribute__((noinline)) void frame_put_outside(weft_pool *pool, struct weft__job *f)
{
    pthread_mutex_lock(&pool->frames_mu);
    f->next = pool->loose;
    pool->loose = f;
    pool->nloose++;
    pool->nframes++;
    pthread_mutex_unlock(&pool->frames_mu);
}

/* Frames are recycled where they finish: onto the finishing worker's own stores,
 * with no shared write per task (a frame spawned on A and run by a thief B used to
 * go back to A's list with a CAS on A's cache line, once per stolen task). A worker
 * whose stack outgrows LOCAL_MAX with frames spawned elsewhere gives a batch back
 * to the pool, and a spawner whose stores run dry takes a batch from it: one lock
 * round trip per SLAB_FRAMES frames on each side of a producer/consumer pair.
 * pool.h's weft__frame_put has the common case inline (a frame this worker handed
 * out, onto its own list); the others come here. */
void weft__frame_put_slow(weft_pool *pool, struct weft__worker *w, struct weft__job *f)
{
    if (WEFT_UNLIKELY(w == NULL)) {
        frame_put_outside(pool, f);
        return;
    }
    w->free_frames[w->nfree_frames++] = f;
    if (WEFT_UNLIKELY(w->nfree_frames > LOCAL_MAX))
        frames_give_back(pool, w);
}

/* Test hook: frames allocated so far (slabs x SLAB_FRAMES). */
size_t weft__frames_allocated(weft_pool *pool)
{
    size_t n = 0;
    pthread_mutex_lock(&pool->frames_mu);
    for (struct slab *s = pool->slabs; s; s = s->next)
        n += SLAB_FRAMES;
    pthread_mutex_unlock(&pool->frames_mu);
    return n;
}

/* Pool teardown: every frame is back on some list; free the slabs. */
void weft__frames_free(weft_pool *pool)
{
    struct slab *s = pool->slabs;
    while (s) {
        struct slab *next = s->next;
        slab_free(s, s->size);
        s = next;
    }
    struct fbatch_block *blk = pool->batch_blocks;
    while (blk) {
        struct fbatch_block *next = blk->next;
        munmap(blk, sizeof(*blk));
        blk = next;
    }
    pool->batch_blocks = NULL;
    pool->nrecords = 0;
    pool->nslabs = 0;
    pool->slabs = NULL;
    pool->frames = NULL;
    pool->spare_batches = NULL;
    pool->loose = NULL;
    pool->nloose = 0;
    pool->nframes = 0;
}
