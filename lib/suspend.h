/* SPDX-License-Identifier: MIT */
/* Suspension: switching fibers, the after-switch actions, stack depth (suspend.c).
 * Included by pool.h, whose struct weft__worker holds the switch's state. */
#ifndef WEFT_SUSPEND_H
#define WEFT_SUSPEND_H

#include <stdbool.h>
#include <stdnoreturn.h>

#include "weft.h"

struct weft__worker;
struct weft__fiber;

/* Fresh dispatch fibers a worker keeps for its next suspensions. So an idle worker
 * holds at most 1 + WEFT__SPARE_FIBERS stacks. */
#define WEFT__SPARE_FIBERS 8

/* A suspended task. Lives on the suspended fiber's own stack. job is what the ready
 * queues hold (tagged WEFT__RESUME_TAG when handed out: runq.h). */
struct weft__wait {
    struct weft__job job;
    struct weft__fiber *fiber;
    struct weft__worker *home;  /* the worker it suspended on (weft__runq_ready's
                                   fallback) */
};

/* Runs on the worker a fiber switched to, right after the switch: the only safe
 * place to publish the fiber that left (DESIGN.md, suspension protocol). */
typedef void (*weft__after_fn)(struct weft__worker *w, struct weft__wait *wt, void *arg);

/* Suspend the running task: after the switch, after(w, wt, arg) runs on the worker
 * (and must arrange for weft__runq_ready(wt) to be called exactly once). Returns
 * when the task runs again, on any worker. -ENOMEM: no stack, nothing happened (the
 * caller then does its work blocking). Inside a task only. */
int weft__suspend(struct weft__wait *wt, weft__after_fn after, void *arg);
/* Suspend until some other ready work ran (weft_yield). false: nothing else to run,
 * or not inside a task. */
bool weft__suspend_yield(void);
/* weft__suspend_stack_low (less than a quarter of the running fiber's stack left)
 * is inline in pool.h. */
/* Before the thread starts: its first dispatch fiber (a spare). 0 or -ENOMEM. */
int weft__suspend_worker_init(struct weft__worker *w);

#ifdef WEFT_HAVE_FIBERS
/* Leave the running fiber suspended for to; after(w', wt, arg) runs once the switch
 * is complete. Returns when something resumes this fiber, on any worker. */
void weft__suspend_switch(struct weft__worker *w, struct weft__fiber *to,
                          weft__after_fn after, struct weft__wait *wt, void *arg);
/* Leave the running fiber for good (it holds nothing: the dispatch loop's bottom)
 * and run to; the fiber that left goes back to the spares or the cache. */
noreturn void weft__suspend_exit_to(struct weft__worker *w, struct weft__fiber *to);
/* Run the action the fiber that switched here left (a fresh fiber's first step). */
void weft__suspend_after_switch(struct weft__worker *w);
/* A fresh dispatch fiber (a spare, else from the cache), or NULL without memory. */
struct weft__fiber *weft__suspend_dispatch_fiber(struct weft__worker *w);
/* Back on the thread's own stack as the pool stops: free the spares. */
void weft__suspend_worker_fini(struct weft__worker *w);
#endif

#endif
