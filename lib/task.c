/* SPDX-License-Identifier: MIT */
/*
 * Spawn frames. A weft_spawn needs a record that outlives the spawner's stack frame:
 * the job, the scope it belongs to and up to 64 bytes of copied arguments. Frames are
 * recycled and always go back to the worker that handed them out (their home), the
 * way mimalloc returns blocks to the heap of the thread that owns them: the home
 * worker keeps a private free list (no lock, no atomic); a frame finished on another
 * worker is pushed onto its home's remote-free stack (one CAS), and the home takes
 * the whole stack with one exchange when its private list runs dry. So a worker
 * needs no more frames than it ever had in flight at once, and once a workload has
 * reached its peak, spawning does no malloc at all, whoever runs the tasks. Frames
 * spawned from outside threads come from the pool's shared list (under a lock).
 * Frames come in slabs that live until the pool is destroyed: from a private
 * jemalloc arena when weft is built with -Djemalloc=enabled, else from malloc.
 */
#define _GNU_SOURCE
#include "pool.h"

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

#define SLAB_FRAMES 64u

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

/* Called with frames_mu held: a new slab onto the shared list. */
static int refill_locked(weft_pool *pool)
{
    size_t size = sizeof(struct slab) + SLAB_FRAMES * sizeof(struct weft__frame);
    struct slab *s = slab_alloc(size);
    if (!s)
        return -ENOMEM;
    s->size = size;
    s->next = pool->slabs;
    pool->slabs = s;
    for (unsigned k = 0; k < SLAB_FRAMES; k++) {
        s->frames[k].stamp = 0; /* stats.c: set only on sampled spawns, cleared at start */
        s->frames[k].job.next = pool->frames;
        pool->frames = &s->frames[k].job;
    }
    pool->nframes += SLAB_FRAMES;
    return 0;
}

/* A frame, or NULL when out of memory. w: the calling worker of pool, or NULL. */
struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w)
{
    if (w) {
        struct weft__job *f = w->free_frames;
        if (WEFT_UNLIKELY(!f)) {
            /* Acquire: pairs with the release CAS in weft__frame_put(), so the
             * frames' links written by other workers are visible. */
            f = atomic_exchange_explicit(&w->remote_frames, NULL, memory_order_acquire);
        }
        if (WEFT_LIKELY(f != NULL)) {
            w->free_frames = f->next;
            return f;
        }
    }
    pthread_mutex_lock(&pool->frames_mu);
    if (!pool->frames && refill_locked(pool) != 0) {
        pthread_mutex_unlock(&pool->frames_mu);
        return NULL;
    }
    struct weft__job *f = pool->frames;
    pool->frames = f->next;
    pool->nframes--;
    weft__frame_of(f)->home = w;
    if (w) {
        /* Adopt a batch for the private list while we hold the lock. */
        for (unsigned k = 1; k < SLAB_FRAMES && pool->frames; k++) {
            struct weft__job *g = pool->frames;
            pool->frames = g->next;
            pool->nframes--;
            weft__frame_of(g)->home = w;
            g->next = w->free_frames;
            w->free_frames = g;
        }
    }
    pthread_mutex_unlock(&pool->frames_mu);
    return f;
}

/* f has finished; w is the worker that ran it (frames only run on workers). */
void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f)
{
    struct weft__worker *home = weft__frame_of(f)->home;
    if (WEFT_LIKELY(home == w && w)) {
        f->next = w->free_frames;
        w->free_frames = f;
        return;
    }
    if (home) {
        struct weft__job *head = atomic_load_explicit(&home->remote_frames,
                                                      memory_order_relaxed);
        do {
            f->next = head;
            /* Release: publishes f->next to the home's exchange in frame_get(). */
        } while (!atomic_compare_exchange_weak_explicit(&home->remote_frames, &head, f,
                                                        memory_order_release,
                                                        memory_order_relaxed));
        return;
    }
    pthread_mutex_lock(&pool->frames_mu);
    f->next = pool->frames;
    pool->frames = f;
    pool->nframes++;
    pthread_mutex_unlock(&pool->frames_mu);
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
    pool->nframes = 0;
}
