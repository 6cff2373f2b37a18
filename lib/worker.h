/* SPDX-License-Identifier: MIT */
/* The worker thread: start, steal order, dispatch loop, the search for work
 * (worker.c). Included by pool.h. */
#ifndef WEFT_WORKER_H
#define WEFT_WORKER_H

#include <stdint.h>
#include <stdnoreturn.h>

#include "weft.h"

struct weft__worker;
struct weft__latch;

/* Jobs (or direct yields, suspend.c) a worker runs between looks at its ring while it
 * has local work (weft__worker_find_work resets the count when it looks). */
#define WEFT__IO_EVERY 32
/* Jobs a worker runs between looks at the injector while it has local work
 * (weft__worker_find_work; scope.c's drain_next keeps the same count). */
#define WEFT__INJECT_EVERY 61

/* The calling thread's worker, read afresh: for code after a possible switch
 * (fiber.h, THE HAZARD). weft__self (weft.h) is the variable itself. */
struct weft__worker *weft__current(void);

/* The thread's entry (pthread_create's start routine; pool.c starts it). */
void *weft__worker_main(void *w);
/* w's steal order: the other workers' ids, nearest first by topology, and where each
 * group of equal distance ends. 0 or -ENOMEM. Before the thread starts. */
int weft__worker_victims_init(weft_pool *pool, struct weft__worker *w);
#ifdef WEFT_HAVE_FIBERS
/* The entry of every dispatch fiber (suspend.c creates them): the dispatch loop. */
noreturn void weft__worker_fiber_main(void *arg, void *msg);
#endif

/* job as a deque slot holds it: spawned frames carry WEFT__FRAME_TAG. Never a
 * resume job (those come only from find_work). */
void weft__worker_run_job(struct weft__worker *w, struct weft__job *job);
/* The same without the trace's slice around it (trace.c calls it). */
void weft__worker_run_job_plain(struct weft__worker *w, struct weft__job *job);
/* One job to run (a resume job: see weft__is_resume), or NULL once until is set.
 * Local jobs are taken only above floor. May park. Owner only. */
struct weft__job *weft__worker_find_work(struct weft__worker *w,
                                         const struct weft__latch *until, int64_t floor);

#endif
