/* SPDX-License-Identifier: MIT */
/*
 * Observability hooks: per-worker time and latency figures (stats.c) and the trace
 * (trace.c). Included at the end of pool.h, since the inline hooks read struct
 * weft__worker. With tracing off every trace hook is one load and one branch that
 * is never taken; the spawn path's latency sampling is one decrement and a branch.
 */
#ifndef WEFT_TRACE_H
#define WEFT_TRACE_H

struct weft__tev;      /* a recorded event (trace.c) */
struct weft__tchunk;   /* a block of them */
struct weft__trace;    /* a pool's trace: file, budget (trace.c) */
/* A trace buffer's chunks, FIFO (list.h; the functions are trace.c's). */
WEFT__FIFO_STRUCT(weft__tchunkq, struct weft__tchunk)

/* The task a worker runs, as the trace sees it. Kept on the task's own fiber stack
 * while it is suspended or while a nested job runs on top of it. */
struct weft__trace_task {
    const char *name;   /* weft_trace_label's, or the default name of its kind */
    uint64_t id;        /* unique in the pool; 0: no task */
    uint64_t since;     /* ns: the running slice began */
    unsigned from;      /* this slice's job was stolen from worker from - 1; 0: not */
};

/* A worker's trace buffer: owner-private, no lock, no atomic (the destroying thread
 * reads it after joining the worker). Events go to a list of chunks. */
struct weft__tbuf {
    struct weft__tev *ev, *end;         /* free space in the newest chunk */
    struct weft__tchunkq chunks;        /* oldest first */
    struct weft__trace *tr;
    struct weft__trace_task cur;        /* the slice open now (cur.id 0: none) */
    const char *why;                    /* what the running task suspends for next */
    unsigned stolen_from;               /* victim + 1 of the last steal, until it runs */
    bool stopped;                       /* out of budget: recording has stopped */
    uint64_t seq;                       /* task ids handed out */
    uint64_t park_since;
    size_t last_ready;                  /* last ready-queue length recorded */
    uint64_t dropped;                   /* events not recorded (budget) */
};

/* What a suspension keeps of the trace, on the suspended fiber's stack. */
struct weft__trace_saved {
    struct weft__trace_task task;
    const char *why;
    uint64_t at;
    unsigned tid;
};

/* ---- trace.c ---------------------------------------------------------------- */

/* At pool creation, before the workers start: opt_path (weft_pool_options'
 * trace_path; NULL: $WEFT_TRACE; "": no trace). Returns 0 (also when WEFT_TRACE
 * cannot be opened: a warning, no trace), -errno when opt_path cannot be opened,
 * -ENOMEM. */
int  weft__trace_pool_init(weft_pool *pool, const char *opt_path);
/* At destroy, after the workers have been joined: write the file. */
void weft__trace_pool_write(weft_pool *pool);
/* Free the buffers (the pool's memory goes; also for a pool inherited by fork). */
void weft__trace_pool_free(weft_pool *pool);
void weft__trace_thread_start(struct weft__worker *w, uint64_t now);
/* weft__worker_run_job inside a slice of its own. */
void weft__trace_run_job(struct weft__worker *w, struct weft__job *job);
void weft__trace_leave_slow(struct weft__worker *w, struct weft__trace_saved *s);
void weft__trace_back_slow(struct weft__worker *w, struct weft__trace_saved *s);
void weft__trace_park_begin(struct weft__worker *w, uint64_t now);
void weft__trace_park_end(struct weft__worker *w, uint64_t now);

/* A steal returned a job of worker victim (worker.c). */
static inline void weft__trace_stole(struct weft__worker *w, unsigned victim)
{
    if (WEFT_UNLIKELY(w->trace != NULL))
        w->trace->stolen_from = victim + 1;
}

/* The running task may suspend next for why (a literal): the wait's name. */
static inline void weft__trace_why(struct weft__worker *w, const char *why)
{
    if (WEFT_UNLIKELY(w != NULL && w->trace != NULL))
        w->trace->why = why;
}

/* Around a fiber switch (suspend.c): the running slice ends before, and the resumed
 * task's begins after, on whatever worker it resumed. */
static inline void weft__trace_leave(struct weft__worker *w, struct weft__trace_saved *s)
{
    if (WEFT_UNLIKELY(w->trace != NULL))
        weft__trace_leave_slow(w, s);
}

static inline void weft__trace_back(struct weft__worker *w, struct weft__trace_saved *s)
{
    if (WEFT_UNLIKELY(w->trace != NULL))
        weft__trace_back_slow(w, s);
}

/* ---- stats.c ---------------------------------------------------------------- */

/* On the worker thread, before its first job. */
void weft__obs_thread_start(struct weft__worker *w);
void weft__obs_search_slow(struct weft__worker *w);
void weft__obs_search_end_slow(struct weft__worker *w);
/* Around the sleep of a park (park.c): idle time, park slices. */
void weft__obs_park_begin(struct weft__worker *w);
void weft__obs_park_end(struct weft__worker *w);
void weft__spawn_stamp_slow(struct weft__worker *w, struct weft__frame *fr);
void weft__spawn_latency(struct weft__worker *w, struct weft__frame *fr);

/* A search found nothing at its first look and pauses (worker.c): time it from
 * here, once. */
static inline void weft__obs_searching(struct weft__worker *w)
{
    if (atomic_load_explicit(&w->wstats.search_since, memory_order_relaxed) == 0)
        weft__obs_search_slow(w);
}

/* The worker stops looking for work (park.c): end a timed search. */
static inline void weft__obs_search_end(struct weft__worker *w)
{
    if (WEFT_UNLIKELY(atomic_load_explicit(&w->wstats.search_since, memory_order_relaxed) != 0))
        weft__obs_search_end_slow(w);
}

/* A spawn from worker w (NULL: an outside thread) is about to publish frame f:
 * stamp every WEFT__LAT_EVERY-th (every one while tracing: flows need the spawn
 * time). A frame's stamp is 0 unless stamped; its start clears it. */
static inline void weft__spawn_stamp(struct weft__worker *w, struct weft__job *f)
{
    if (w && WEFT_UNLIKELY(--w->stamp_tick == 0))
        weft__spawn_stamp_slow(w, weft__frame_of(f));
}

/* Frame f starts on w (admitted, cancelled or not): a sample if it was stamped. */
static inline void weft__spawn_started(struct weft__worker *w, struct weft__job *f)
{
    struct weft__frame *fr = weft__frame_of(f);
    if (WEFT_UNLIKELY(weft__frame_stamp(fr) != 0))
        weft__spawn_latency(w, fr);
}

#endif
