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
 * (fiber.h, THE HAZARD). weft__self (weft.h) is the variable itself. On x86-64 it
 * is weft.h's WEFT__SELF_AGAIN, inline: a volatile read through %fs with a memory
 * clobber, which the compiler can neither move nor reuse across a switch (the
 * inline join relies on the same). Elsewhere, and where weft.h's inline part is
 * off, a call that is never inlined (worker.c). The call cost a tree of scopes 3
 * calls a node and the registers they clobber (callgrind: 9 instructions a node
 * in the function alone). */
#if defined(WEFT__SELF_AGAIN) && defined(__x86_64__) && defined(__LP64__) && \
    defined(__GNUC__) && !defined(__TINYC__) /* weft.h's asm read, not its fallback */
#define WEFT__CURRENT_INLINE 1
static inline struct weft__worker *weft__current(void)
{
    return WEFT__SELF_AGAIN();
}
#else
struct weft__worker *weft__current(void);
#endif

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
