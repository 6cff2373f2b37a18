/* SPDX-License-Identifier: MIT */
/*
 * Spawn frames. A weft_spawn needs a record that outlives the spawner's stack frame:
 * the job, the scope it belongs to and up to 64 bytes of copied arguments. Frames are
 * recycled: each worker keeps a private free list (no lock, no atomic), a frame is
 * returned to the list of the worker that ran it, and lists that grow past a bound
 * hand a batch back to the pool's shared list, so a steady state of spawning does no
 * malloc at all even when one worker spawns and another runs. Frames come in slabs
 * that live until the pool is destroyed; a slab comes from a private jemalloc arena
 * when weft is built with jemalloc (-Djemalloc=enabled), else from malloc.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef WEFT_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

struct frame {
    struct weft__job job;
    alignas(16) unsigned char args[64];
};

struct slab {
    struct slab *next;
    size_t size;
    alignas(64) struct frame frames[];
};

#define SLAB_FRAMES 64u
#define LOCAL_MAX   (4 * SLAB_FRAMES)  /* past this a worker gives a batch back */

void *weft__frame_args(struct weft__job *f)
{
    return ((struct frame *)(void *)f)->args;
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
    size_t size = sizeof(struct slab) + SLAB_FRAMES * sizeof(struct frame);
    struct slab *s = slab_alloc(size);
    if (!s)
        return -ENOMEM;
    s->size = size;
    s->next = pool->slabs;
    pool->slabs = s;
    for (unsigned k = 0; k < SLAB_FRAMES; k++) {
        s->frames[k].job.next = pool->frames;
        pool->frames = &s->frames[k].job;
    }
    pool->nframes += SLAB_FRAMES;
    return 0;
}

/* A frame, or NULL when out of memory. w: the calling worker of pool, or NULL. */
struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w)
{
    if (w && WEFT_LIKELY(w->free_frames != NULL)) {
        struct weft__job *f = w->free_frames;
        w->free_frames = f->next;
        w->nfree--;
        return f;
    }
    pthread_mutex_lock(&pool->frames_mu);
    if (!pool->frames && refill_locked(pool) != 0) {
        pthread_mutex_unlock(&pool->frames_mu);
        return NULL;
    }
    struct weft__job *f = pool->frames;
    pool->frames = f->next;
    pool->nframes--;
    if (w) {
        /* Take a batch for the private list while we hold the lock. */
        while (pool->frames && w->nfree < SLAB_FRAMES) {
            struct weft__job *g = pool->frames;
            pool->frames = g->next;
            pool->nframes--;
            g->next = w->free_frames;
            w->free_frames = g;
            w->nfree++;
        }
    }
    pthread_mutex_unlock(&pool->frames_mu);
    return f;
}

void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f)
{
    if (w) {
        f->next = w->free_frames;
        w->free_frames = f;
        if (WEFT_LIKELY(++w->nfree <= LOCAL_MAX))
            return;
        /* Too many (this worker runs what others spawn): give a slab's worth back. */
        struct weft__job *head = w->free_frames, *tail = head;
        for (unsigned k = 1; k < SLAB_FRAMES; k++)
            tail = tail->next;
        w->free_frames = tail->next;
        w->nfree -= SLAB_FRAMES;
        pthread_mutex_lock(&pool->frames_mu);
        tail->next = pool->frames;
        pool->frames = head;
        pool->nframes += SLAB_FRAMES;
        pthread_mutex_unlock(&pool->frames_mu);
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
