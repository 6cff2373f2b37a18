/* SPDX-License-Identifier: MIT */
/* The run queues besides the deques: each worker's ready and yield queues, the
 * pool's injector (runq.c). Included by pool.h, whose structs embed the queues. */
#ifndef WEFT_RUNQ_H
#define WEFT_RUNQ_H

#include <stdbool.h>
#include <stdint.h>

#include "weft.h"
#include "list.h"

struct weft__worker;
struct weft__wait;

/* A queue of jobs, FIFO through job.next (list.h). */
WEFT__FIFO_DEFINE(weft__jobq, struct weft__job, next)

/* Resume jobs: the job of a suspended task's struct weft__wait (suspend.h), both
 * tag bits set, as the ready and yield queues hand them out. A deque slot never
 * holds one (its frames carry WEFT__FRAME_TAG, deque.h, one of the two bits). */
#define WEFT__RESUME_TAG ((uintptr_t)3)
static inline bool weft__is_resume(const struct weft__job *job)
{
    return ((uintptr_t)job & WEFT__RESUME_TAG) == WEFT__RESUME_TAG;
}
/* The suspended task a resume job stands for. */
static inline struct weft__wait *weft__runq_wait_of(struct weft__job *resume)
{
    return (struct weft__wait *)(void *)((uintptr_t)resume & ~WEFT__RESUME_TAG);
}

/* Make a suspended task runnable. Any thread; hint: a worker of the pool whose
 * queue to use when the caller is not one (NULL: the worker it suspended on). */
void weft__runq_ready(struct weft__worker *hint, struct weft__wait *wt);
/* Push wt on w's ready queue (w: a worker of the pool; any thread). */
void weft__runq_push_ready(struct weft__worker *w, struct weft__wait *wt);
/* w's oldest ready task as a resume job, or NULL. Any thread (thieves too). */
struct weft__job *weft__runq_pop_ready(struct weft__worker *w);
/* Tasks that called weft_yield: pushed after their switch, taken after the deque
 * unless too many wait (weft__runq_yield_first). */
void weft__runq_push_yielded(struct weft__worker *w, struct weft__wait *wt);
struct weft__job *weft__runq_pop_yielded(struct weft__worker *w);
/* Yielded tasks wait behind the deque, so that a task spinning on weft_yield lets
 * new work run; but each holds a stack, so past this many per worker they go first
 * (100 000 tasks that each yield then hold a few stacks per worker, not 100 000).
 * weft__runq_yield_first (pool.h, inline: a scope's drain asks it per task) says
 * whether that many wait on w. */
#define WEFT__YIELD_MAX_PER_WORKER 4u

/* The injector: jobs from threads that are not workers of the pool. The pop takes
 * the oldest injected job for worker w to run, as a deque slot holds it (frames
 * tagged), or NULL. */
void weft__runq_inject(weft_pool *pool, struct weft__job *job);
struct weft__job *weft__runq_pop_injected(struct weft__worker *w);

/* After the heavy barrier (park.c): is there anything a worker could take, on a
 * deque, a ready or yield queue, or the injector? Relaxed looks. */
bool weft__runq_work_visible(weft_pool *pool);

#endif
