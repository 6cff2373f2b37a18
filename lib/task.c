/* SPDX-License-Identifier: MIT */
/*
 * Spawn frames. A weft_spawn needs a record that outlives the spawner's stack frame:
 * the job, the scope it belongs to and up to 64 bytes of copied arguments. Frames are
 * recycled where they finish: each worker keeps a private free list (no lock, no
 * atomic), bounded at LOCAL_MAX frames; past it a batch goes back to the pool's
 * shared list, and a worker whose list runs dry takes a batch from there (both under
 * the pool's lock, once per SLAB_FRAMES frames). Once a workload has reached its
 * peak, spawning does no malloc at all, whoever runs the tasks, and a task stolen
 * from its spawner costs no write to the spawner's memory when it finishes. (Before,
 * a frame went back to the worker that handed it out, by a CAS on that worker's
 * remote-free stack: one shared write per stolen task.) Frames spawned from outside
 * threads come from the pool's shared list (under the lock).
 * Frames come in slabs that live until the pool is destroyed: from a private
 * jemalloc arena when weft is built with -Djemalloc=enabled, else from malloc.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef WEFT_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

struct slab {
    struct slab *next;
    size_t size;
    alignas(64) struct weft__frame frames[];
};

#define SLAB_FRAMES WEFT__FRAMES_SLAB

void *weft__frame_args(struct weft__job *f)
{
    return ((struct weft__frame *)(void *)f)->args;
}

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

/* The shared list is a stack of batches, so that a worker takes or hands back a
 * slab's worth of frames in O(1) under the lock: each batch is a chain of frames
 * through job.next, and its first frame holds the next batch (in job.arg) and the
 * chain's length (in job.result); a free frame uses neither. Outside threads take
 * frames one at a time from a plain list beside it (loose), refilled a batch at a
 * time. (A flat list had a worker adopt its batch by walking it, one cache miss per
 * frame when a thief on another core had freed them last: flat spawn on 2
 * workers.) */
static void batch_push_locked(weft_pool *pool, struct weft__job *head, unsigned n)
{
    head->arg = pool->frames;
    head->result = (int)n;
    pool->frames = head;
    pool->nframes += n;
}

/* Called with frames_mu held: a new slab onto the shared list, as one batch. */
static int refill_locked(weft_pool *pool)
{
    size_t size = sizeof(struct slab) + SLAB_FRAMES * sizeof(struct weft__frame);
    struct slab *s = WEFT__FAULT("task.slab") ? NULL : slab_alloc(size);
    if (!s)
        return -ENOMEM;
    s->size = size;
    s->next = pool->slabs;
    pool->slabs = s;
    for (unsigned k = 0; k < SLAB_FRAMES; k++) {
        s->frames[k].stamp = 0; /* stats.c: set only on sampled spawns, cleared at start */
        s->frames[k].job.next = k + 1 < SLAB_FRAMES ? &s->frames[k + 1].job : NULL;
    }
    batch_push_locked(pool, &s->frames[0].job, SLAB_FRAMES);
    return 0;
}

/* A frame, or NULL when out of memory. w: the calling worker of pool, or NULL. */
/* A worker keeps at most this many free frames; past it, it hands a slab's worth
 * back to the pool (so frames that finish on a thief do not pile up there). */
#define LOCAL_MAX WEFT__FRAMES_LOCAL_MAX

struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w)
{
    if (w) {
        struct weft__job *f = w->free_frames;
        if (WEFT_LIKELY(f != NULL)) {
            w->free_frames = f->next;
            w->nfree_frames--;
            /* The next spawn's frame: its line is cold when it was freed long ago
             * or on another core; fetch it while this spawn goes on. */
            __builtin_prefetch(f->next, 1);
            weft__frame_of(f)->home = w; /* the spawner (trace.c's flows) */
            return f;
        }
    }
    pthread_mutex_lock(&pool->frames_mu);
    struct weft__job *f;
    if (pool->loose && (!w || !pool->frames)) {
        /* An outside thread: one frame of the loose list, touching no other. A
         * worker with no batch left adopts the whole list. */
        f = pool->loose;
        pool->loose = f->next;
        pool->nframes--;
        pool->nloose--;
        if (w) {
            w->free_frames = pool->loose;
            w->nfree_frames = pool->nloose;
            pool->nframes -= pool->nloose;
            pool->loose = NULL;
            pool->nloose = 0;
        }
        pthread_mutex_unlock(&pool->frames_mu);
        weft__frame_of(f)->home = w;
        return f;
    }
    if (!pool->frames && refill_locked(pool) != 0) {
        pthread_mutex_unlock(&pool->frames_mu);
        return NULL;
    }
    f = pool->frames;
    unsigned n = (unsigned)f->result;
    pool->frames = f->arg;
    pool->nframes -= n;
    if (w) {
        /* Adopt the rest of the batch as the private list. */
        w->free_frames = f->next;
        w->nfree_frames = n - 1;
    } else {
        /* The rest becomes the loose list, for the next outside spawns (splitting
         * the batch instead wrote its new head's frame: a second line per spawn). */
        pool->loose = f->next;
        pool->nloose = n - 1;
        pool->nframes += n - 1;
    }
    pthread_mutex_unlock(&pool->frames_mu);
    weft__frame_of(f)->home = w;
    return f;
}

/* Frames are recycled where they finish: onto the finishing worker's own list, with
 * no shared write per task (a frame spawned on A and run by a thief B used to go
 * back to A's list with a CAS on A's cache line, once per stolen task). A worker
 * whose list outgrows LOCAL_MAX gives a batch back to the pool, and a spawner whose
 * list runs dry takes a batch from it: one lock round trip per SLAB_FRAMES frames
 * on each side of a producer/consumer pair. */
void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f)
{
    if (WEFT_LIKELY(w != NULL)) {
        f->next = w->free_frames;
        w->free_frames = f;
        ++w->nfree_frames;
        /* A frame this worker handed out goes back unbounded: the spawner of a
         * million tasks that runs them itself keeps them hot and in order (a cap
         * here sent them through the pool's list and cost a cache miss per frame
         * in frame_get's batch walk: flat spawn 42 -> 71 ns per task). Only frames
         * finished here for another spawner count against the cap. */
        if (WEFT_LIKELY(weft__frame_of(f)->home == w || w->nfree_frames <= LOCAL_MAX))
            return;
        /* The newest SLAB_FRAMES: frames this worker just ran, in its cache. */
        struct weft__job *head = w->free_frames, *tail = head;
        for (unsigned k = 1; k < SLAB_FRAMES; k++)
            tail = tail->next;
        w->free_frames = tail->next;
        w->nfree_frames -= SLAB_FRAMES;
        tail->next = NULL;
        pthread_mutex_lock(&pool->frames_mu);
        batch_push_locked(pool, head, SLAB_FRAMES);
        pthread_mutex_unlock(&pool->frames_mu);
        return;
    }
    pthread_mutex_lock(&pool->frames_mu);
    f->next = pool->loose;
    pool->loose = f;
    pool->nloose++;
    pool->nframes++;
    pthread_mutex_unlock(&pool->frames_mu);
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
    pool->slabs = NULL;
    pool->frames = NULL;
    pool->loose = NULL;
    pool->nloose = 0;
    pool->nframes = 0;
}
