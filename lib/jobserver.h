/* SPDX-License-Identifier: MIT */
/* GNU make jobserver client (jobserver.c): the hooks the pool calls. */
#ifndef WEFT_JOBSERVER_H
#define WEFT_JOBSERVER_H

#include "pool.h"

#include <limits.h>

/* Called by pool.c, park.c and worker.c. Each is a no-op for a pool without a
 * jobserver (pool->js == NULL). */

/* Before the workers start: attach the pool to the process's jobserver client
 * (opened on first use from MAKEFLAGS) unless flags has WEFT_POOL_NO_JOBSERVER or
 * WEFT_JOBSERVER=0. A jobserver that cannot be used is warned about once and the
 * pool runs without one. Returns 0 or -ENOMEM. */
int  weft__js_pool_init(weft_pool *pool, unsigned flags);
/* After the workers were joined (or never started): every token the pool's workers
 * hold is given back, and every cached one is written to make. A dead pool (forked
 * child) gives back nothing. */
void weft__js_pool_fini(weft_pool *pool);
/* The worker thread, before its loop: take the implicit token if free, else sleep
 * (parked, holding nothing) until there is work. */
void weft__js_thread_start(struct weft__worker *w);
/* weft__park, right before the worker sleeps: its token goes to a waiting worker or
 * the cache. */
void weft__js_sleep(struct weft__worker *w);
/* weft__worker_find_work, right after weft__park returned: get a token back (the cache,
 * the implicit one, or make's) before looking for work; waits, asleep, if none. */
void weft__js_wake(struct weft__worker *w);
/* join.c, around the sleep of a thread that waits on a latch of a pool it is no
 * worker of: a worker of another pool gives its token up meanwhile (else a pool
 * used from inside another's task could wait for a token that its caller holds,
 * forever under make -j1). begin returns what end takes (NULL: nothing to do). */
struct weft__worker *weft__js_outside_begin(void);
void weft__js_outside_end(struct weft__worker *w);
/* stop_workers, after the stop word is stored: wake the pool's token waiters. */
void weft__js_stop(weft_pool *pool);
/* weft_pool_stats: the jobserver fields. */
void weft__js_stats(const weft_pool *pool, weft_stats *out);

/* Parsing MAKEFLAGS (exposed for tests/test_jobserver.c). */
enum weft__js_kind {
    WEFT__JS_NONE,   /* no jobserver named */
    WEFT__JS_FIFO,   /* --jobserver-auth=fifo:PATH (make >= 4.4) */
    WEFT__JS_PIPE,   /* --jobserver-auth=R,W or --jobserver-fds=R,W */
    WEFT__JS_OFF,    /* negative fds: make says there is none */
    WEFT__JS_BAD,    /* unrecognised value */
};
struct weft__js_auth {
    enum weft__js_kind kind;
    int rfd, wfd;              /* PIPE */
    bool dry_run;              /* first word of single-letter flags contains 'n' */
    char path[PATH_MAX];       /* FIFO, unescaped */
    char value[64];            /* the (last) option's value, cut, for warnings */
};
/* Parse a MAKEFLAGS value (NULL: NONE). Returns a->kind. */
enum weft__js_kind weft__js_parse(const char *makeflags, struct weft__js_auth *a);
/* Are r and w the two ends of one pipe (or FIFO), open for reading and writing?
 * 0, or -EBADF (not open) / -EINVAL (not a FIFO, wrong mode, different pipes). */
int weft__js_check_pipe(int r, int w);

/* Testing hooks. */
void weft__js_test_reset_warning(void);
void weft__js_test_no_proc(bool on);          /* pretend /proc/self/fd cannot be opened */
void weft__js_test_counts(uint64_t *reads, uint64_t *writes); /* token syscalls so far */

#endif
