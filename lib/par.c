/* SPDX-License-Identifier: MIT */
/*
 * Data-parallel loops: weft_par_for, weft_par_collect, weft_par_stream.
 *
 * Splitting is lazy (Tzannes, Caragea, Barua, Vishkin, "Lazy binary splitting: a
 * run-time adaptive work-stealing scheduler", PPoPP 2010): a task works through its
 * range in chunks and, before each chunk, splits off the upper half of what is left
 * (as the b side of a weft_join) only if its own deque is empty, i.e. a thief has
 * taken everything it offered, and somebody could take more. When every worker is
 * busy nothing is split; with one worker the loop is a plain loop with one extra
 * check per chunk. A loop of n items so creates O(workers * log n) jobs, and no job
 * or lock per item. Chunks start at one item and double up to CHUNK_MAX, so short
 * loops split early and long ones check rarely.
 *
 * Results: weft_par_collect hands item i the slot out + i * elem_size; each slot is
 * written by exactly one call, with no atomic or lock per item. weft_par_stream also
 * records each finished chunk under the loop's lock (one per chunk, never per item)
 * and lets whoever finds the sink idle drain what is ready: in index order with
 * WEFT_ORDERED (a min-heap of finished chunks; the run that starts at the next index
 * to emit goes out, merged with its contiguous successors), else as finished. The
 * draining thread holds the "emitting" flag, so sink calls never overlap, and no
 * thread ever waits for the sink: a finisher that finds it busy leaves its chunk in
 * the heap for the emitter, which re-checks before it gives the flag up.
 *
 * Errors: the first nonzero item or sink result is stored and every task checks it
 * before each chunk, so items not yet started are not run; weft_join returns only
 * after both halves finish, so the call returns after every running item is done.
 */
#define _GNU_SOURCE
#include "pool.h"
#include "fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MAX 64

struct run {
    size_t first, count;
};

struct loop {
    size_t n, grain;
    int (*range_fn)(void *ctx, size_t lo, size_t hi);
    int (*item_fn)(void *ctx, size_t i, void *slot);
    void *ctx;
    char *out;
    size_t elem_size;
    _Atomic(int) err;
    /* Streams only. */
    int (*sink)(void *sctx, size_t first, size_t count, const void *slots);
    void *sctx;
    bool ordered;
    pthread_mutex_t mu;
    bool emitting;
    size_t next;            /* ordered: next index to hand over */
    struct run *heap;       /* ordered: min-heap by first; else a FIFO in heap[] */
    size_t nheap, cap, head;
    int alloc_err;
};

struct part {
    struct loop *l;
    size_t lo, hi;
};

static void set_err(struct loop *l, int err)
{
    int zero = 0;
    /* Relaxed: the error is only a stop signal for other tasks; weft_join's latch
     * orders the final read after every task's write. */
    atomic_compare_exchange_strong_explicit(&l->err, &zero, err, memory_order_relaxed,
                                            memory_order_relaxed);
}

static void heap_push(struct loop *l, struct run r)
{
    if (l->nheap + l->head == l->cap) {
        if (!l->ordered && l->head) { /* compact the FIFO */
            memmove(l->heap, l->heap + l->head, l->nheap * sizeof(*l->heap));
            l->head = 0;
        } else {
            size_t ncap = l->cap ? l->cap * 2 : 64;
            struct run *nh = WEFT__FAULT("par.heap") ? NULL
                             : realloc(l->heap, ncap * sizeof(*nh));
            if (!nh) {
                l->alloc_err = -ENOMEM;
                return;
            }
            l->heap = nh;
            l->cap = ncap;
        }
    }
    if (!l->ordered) {
        l->heap[l->head + l->nheap++] = r;
        return;
    }
    size_t k = l->nheap++;
    while (k > 0 && l->heap[(k - 1) / 2].first > r.first) {
        l->heap[k] = l->heap[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    l->heap[k] = r;
}

static struct run heap_pop(struct loop *l)
{
    if (!l->ordered) {
        l->nheap--;
        return l->heap[l->head++];
    }
    struct run top = l->heap[0], last = l->heap[--l->nheap];
    size_t k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1].first < l->heap[c].first)
            c++;
        if (l->heap[c].first >= last.first)
            break;
        l->heap[k] = l->heap[c];
        k = c;
    }
    if (l->nheap)
        l->heap[k] = last;
    return top;
}

/* Take the next run ready for the sink, merged with what follows it. Lock held. */
static bool next_run(struct loop *l, struct run *out)
{
    if (l->nheap == 0)
        return false;
    if (l->ordered && l->heap[0].first != l->next)
        return false;
    *out = heap_pop(l);
    if (l->ordered) {
        while (l->nheap && l->heap[0].first == out->first + out->count)
            out->count += heap_pop(l).count;
        l->next = out->first + out->count;
    }
    if (l->nheap == 0)
        l->head = 0;
    return true;
}

/* A chunk [lo, hi) is finished: record it and drain what is ready if nobody is. */
static void finished(struct loop *l, size_t lo, size_t hi)
{
    pthread_mutex_lock(&l->mu);
    heap_push(l, (struct run){lo, hi - lo});
    int alloc_err = l->alloc_err;
    if (l->emitting || alloc_err) {
        pthread_mutex_unlock(&l->mu);
        if (alloc_err)
            set_err(l, alloc_err);
        return;
    }
    l->emitting = true;
    struct run r;
    while (next_run(l, &r)) {
        pthread_mutex_unlock(&l->mu);
        int err = atomic_load_explicit(&l->err, memory_order_relaxed);
        if (!err)
            err = l->sink(l->sctx, r.first, r.count, l->out + r.first * l->elem_size);
        pthread_mutex_lock(&l->mu);
        if (err) {
            set_err(l, err);
            l->nheap = 0; /* hand over nothing more */
            l->head = 0;
            break;
        }
    }
    l->emitting = false;
    pthread_mutex_unlock(&l->mu);
}

static int run_chunk(struct loop *l, size_t lo, size_t hi)
{
    int r = 0;
    if (l->range_fn) {
        r = l->range_fn(l->ctx, lo, hi);
    } else {
        /* Locals, so the compiler keeps them in registers across the calls. */
        int (*fn)(void *, size_t, void *) = l->item_fn;
        void *ctx = l->ctx;
        size_t es = l->elem_size;
        char *slot = l->out + lo * es;
        for (size_t i = lo; i < hi; i++, slot += es) {
            r = fn(ctx, i, slot);
            if (WEFT_UNLIKELY(r)) {
                hi = i; /* items before i are done and may still be streamed */
                break;
            }
        }
    }
    if (l->sink && hi > lo && !r)
        finished(l, lo, hi);
    return r;
}

/* Is some worker hungry enough that splitting pays? Our deque is empty (thieves
 * took what was there) and the pool has more than one worker. */
static inline bool hungry(struct weft__worker *w)
{
    return w->pool->nthreads > 1 && !weft__deque_looks_nonempty(&w->dq);
}

static int part_run(void *p);

static int process(struct loop *l, size_t lo, size_t hi)
{
    struct weft__worker *w = weft__self;
    size_t chunk = 1;
    size_t grain = l->grain ? l->grain : SIZE_MAX;
    bool waited = false;
    while (lo < hi) {
        if (atomic_load_explicit(&l->err, memory_order_relaxed))
            return 0; /* the loop failed elsewhere: skip what is not started */
        /* Split when a thief is hungry, and when the last chunk suspended while
         * its worker had nothing else queued: the other half gives the worker
         * something to run next time an item waits (one worker overlaps its items'
         * I/O this way). */
        if (hi - lo >= 2 && w &&
            (hungry(w) || (waited && !weft__deque_looks_nonempty(&w->dq)))) {
            size_t mid = lo + (hi - lo) / 2;
            struct part a = {l, lo, mid}, b = {l, mid, hi};
            return weft__join_lib(part_run, &a, part_run, &b);
        }
        size_t len = chunk < grain ? chunk : grain;
        if (len > hi - lo)
            len = hi - lo;
        unsigned long sw = w ? w->switches : 0;
        int r = run_chunk(l, lo, lo + len);
        if (w) {
            /* Items may suspend and resume on another worker. */
            struct weft__worker *now = weft__current();
            waited = now != w || now->switches != sw;
            w = now;
        }
        if (r) {
            set_err(l, r);
            return 0;
        }
        lo += len;
        if (chunk < CHUNK_MAX)
            chunk *= 2;
    }
    return 0;
}

static int part_run(void *p)
{
    struct part *pt = p;
    weft_trace_label("loop"); /* traces: a piece of a loop, not a plain join job */
    return process(pt->l, pt->lo, pt->hi);
}

static int loop_top(void *p)
{
    struct loop *l = p;
    return process(l, 0, l->n);
}

static int loop_run(weft_pool *pool, struct loop *l)
{
    int err;
    pool = weft__pool_resolve(pool, &err);
    if (!pool)
        return err;
    atomic_init(&l->err, 0);
    if (l->sink)
        pthread_mutex_init(&l->mu, NULL);
    err = weft_run(pool, loop_top, l);
    if (!err)
        err = atomic_load_explicit(&l->err, memory_order_relaxed);
    if (l->sink) {
        pthread_mutex_destroy(&l->mu);
        free(l->heap);
    }
    return err;
}

WEFT_API int weft_par_for(weft_pool *pool, size_t n, size_t grain,
                          int (*fn)(void *ctx, size_t lo, size_t hi), void *ctx)
{
    if (!fn)
        return -EINVAL;
    if (n == 0)
        return 0;
    struct loop l = {.n = n, .grain = grain, .range_fn = fn, .ctx = ctx};
    return loop_run(pool, &l);
}

static int check_buf(size_t n, const void *out, size_t elem_size, const void *fn)
{
    if (!fn || elem_size == 0 || (!out && n > 0))
        return -EINVAL;
    size_t bytes;
    if (__builtin_mul_overflow(n, elem_size, &bytes))
        return -EOVERFLOW;
    return 0;
}

WEFT_API int weft_par_collect(weft_pool *pool, size_t n, void *out, size_t elem_size,
                              int (*fn)(void *ctx, size_t i, void *slot), void *ctx)
{
    int err = check_buf(n, out, elem_size, (const void *)fn);
    if (err || n == 0)
        return err;
    struct loop l = {.n = n, .item_fn = fn, .ctx = ctx, .out = out, .elem_size = elem_size};
    return loop_run(pool, &l);
}

WEFT_API int weft_par_stream(weft_pool *pool, size_t n, void *out, size_t elem_size,
                             int (*fn)(void *ctx, size_t i, void *slot), void *ctx,
                             int (*sink)(void *sctx, size_t first, size_t count,
                                         const void *slots),
                             void *sctx, unsigned flags)
{
    int err = check_buf(n, out, elem_size, (const void *)fn);
    if (err)
        return err;
    if (!sink || (flags & ~WEFT_ORDERED))
        return -EINVAL;
    if (n == 0)
        return 0;
    struct loop l = {.n = n, .item_fn = fn, .ctx = ctx, .out = out, .elem_size = elem_size,
                     .sink = sink, .sctx = sctx, .ordered = (flags & WEFT_ORDERED) != 0};
    return loop_run(pool, &l);
}
