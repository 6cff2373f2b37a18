/* SPDX-License-Identifier: MIT */
/* Pools and workers: the structures every layer shares. */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>

#include "weft.h"
#include "debug.h"
#include "deque.h"
#include "topo.h"

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
    uint64_t rng;                   /* owner-private xorshift state */
    bool searching;                 /* owner-private: counted in the parking word */
    /* Steal order: other workers' ids, nearest first; groups of equal distance are
     * delimited by group_end[] and searched from a random start. */
    unsigned *victims;
    unsigned *group_end;
    unsigned ngroups;
    /* Spawn frames (task.c): owner-private free list. */
    struct weft__job *free_frames;
    /* Parking (park.c). wake is the futex word; parked is guarded by pool->idle_mu. */
    alignas(64) _Atomic(uint32_t) wake;
    bool parked;
    /* Frames of this worker finished by others (task.c): a Treiber stack. */
    alignas(64) _Atomic(struct weft__job *) remote_frames;
    alignas(64) struct weft__counters stats;
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

    alignas(64) _Atomic(uint32_t) stop;   /* 1: workers leave their loop */
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
    struct weft__worker **workers;
    const struct weft__topo *topo;        /* process-wide, read once */
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
/* The calling thread's worker if it belongs to pool, else NULL. */
static inline struct weft__worker *weft__worker_of(const weft_pool *pool)
{
    struct weft__worker *w = weft__self;
    return (w && w->pool == pool) ? w : NULL;
}

/* worker.c */
/* job as a deque slot holds it: spawned frames carry WEFT__FRAME_TAG. */
void weft__run_job(struct weft__worker *w, struct weft__job *job);
/* Run other work until *word reads 1 (a latch's state or the pool's stop word). */
void weft__help_until(struct weft__worker *w, const _Atomic(uint32_t) *word, int64_t floor);
void weft__inject(weft_pool *pool, struct weft__job *job);
struct weft__job *weft__inject_pop(weft_pool *pool);
bool weft__work_visible(weft_pool *pool);

/* park.c */
void weft__park(struct weft__worker *w, const _Atomic(uint32_t) *until);
void weft__unpark_one(weft_pool *pool);
void weft__unpark(struct weft__worker *w);
void weft__start_searching(struct weft__worker *w);
void weft__stop_searching(struct weft__worker *w);
void weft__notify_work(weft_pool *pool);
void weft__futex_wait(_Atomic(uint32_t) *word, uint32_t val);
void weft__futex_wake(_Atomic(uint32_t) *word, int n);

/* join.c */
/* weft_join whose pop fences, so that its steals need no membarrier: for callers
 * that split rarely and lose splits often (the loops). */
int weft__join_fenced(weft_fn a, void *arg_a, weft_fn b, void *arg_b);
void weft__latch_set(struct weft__latch *l);
void weft__latch_wait(struct weft__worker *w, struct weft__latch *l);
/* As weft__latch_wait, helping only with local jobs at or above floor (scopes). */
void weft__latch_wait_floor(struct weft__worker *w, struct weft__latch *l, int64_t floor);

/* task.c */
struct weft__job *weft__frame_get(weft_pool *pool, struct weft__worker *w);
void weft__frame_put(weft_pool *pool, struct weft__worker *w, struct weft__job *f);
void weft__frames_free(weft_pool *pool);
void *weft__frame_args(struct weft__job *f);

/* scope.c */
void weft__run_frame(struct weft__worker *w, struct weft__job *f);

#define WEFT__SEARCH_ONE 1u
#define WEFT__SLEEP_ONE  (1u << 16)
/* Parking word: a sleeper exists and nobody is searching. */
#define WEFT__NEED_WAKE(s) ((s) >= WEFT__SLEEP_ONE && ((s) & 0xffffu) == 0)

#endif
