/* SPDX-License-Identifier: MIT */
/*
 * Traces: WEFT_TRACE=path (or weft_pool_options.trace_path) makes a pool write a
 * Chrome trace-event JSON file (Perfetto's ui.perfetto.dev and trace_processor,
 * chrome://tracing) when it is destroyed.
 *
 * What a trace shows. pid is the process, tid the worker index (thread_name events
 * say weft-N). On each worker, one "X" slice per run of a task: a task that suspends
 * shows one slice per run, each on the worker that ran it, linked by args.task (one
 * id per task). Slices never nest and never overlap on a worker: a job that runs
 * inside a wait (helping a join, a scope) ends the waiting task's slice and a new
 * one resumes it afterwards, and so do a park ("park" slices) and a suspension.
 * A suspension is an async "b"/"e" pair (cat "wait", named after what the task
 * waited for: read, open, sleep, yield, wait for a join or scope), from the moment
 * the task left its worker until a worker resumed it. A spawned task that ran on
 * another worker than its spawner has a flow ("s" at the spawn, on the spawner;
 * "f" at the start of its slice, on the thief); a stolen job's slice says
 * args.stolen_from. "C" counters give each worker's ready-queue length at slice
 * boundaries ("ready weft-N"). There is no jobserver counter: weft has no jobserver
 * client yet (lib/jobserver.c), and an always-zero counter would mislead.
 *
 * Recording. Every worker appends fixed-size binary records (struct weft__tev: no
 * formatting, no string copies, labels are pointers) to its own buffer: a few
 * stores, no lock, no atomic, no syscall. A slice is recorded whole when it ends
 * (start and duration in one record), and a flow's or a wait's two ends in one
 * record, so a trace cut short never holds half of anything. The JSON is formatted
 * only at destroy, by the destroying thread, after the workers have been joined
 * (pthread_join orders every record before the read). One file per pool: path for
 * the first pool that traces to it, path.2, path.3, ... for later ones.
 *
 * Full buffers grow: a worker whose chunk is full takes a new one from malloc
 * (1024 records, 40 KiB). Rejected: flushing full chunks to a temporary file (a
 * write(2) on a worker, in the middle of the timeline it records, a file to leak
 * when the process dies, and a read-back at the end) and formatting JSON into the
 * output when a chunk fills (a lock and ~100 us of formatting on a worker). Memory
 * is bounded instead: each chunk reserves its records' estimated JSON size from the
 * pool's budget, WEFT_TRACE_MAX_MB (default 256); a worker whose reservation fails
 * stops recording, so memory stays near a third of the budget (records are 40 bytes,
 * their JSON about 120). The writer enforces the budget exactly: it stops before
 * the event that would pass it. Either way the file ends with a metadata event
 * "weft_trace_truncated" (args: max_mb, dropped_events) and stays valid JSON.
 *
 * Off costs one predictable branch: w->trace is NULL and every hook on the worker
 * loop, the steal path, suspension and parks tests it before doing anything
 * (trace.h). The inline weft_join in weft.h has no hook: a join whose job is not
 * stolen is part of its task's slice; one that is stolen runs through
 * weft__worker_run_job, which has. Spawns pay the latency sampling of stats.c, which also
 * stamps every spawn while tracing.
 *
 * Timestamps are CLOCK_MONOTONIC, printed in microseconds with three decimals from
 * integer nanoseconds (exact: no float rounding, so touching slices stay touching).
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EV_SLICE, EV_PARK, EV_FLOW, EV_WAIT, EV_COUNTER };

/* One record. SLICE: [ts, ts + dur) of task id, arg = stolen from + 1. PARK: a park.
 * FLOW: spawned at ts on worker arg, started at dur (a time) here; id its task.
 * WAIT: task id suspended at ts on worker arg for name, resumed here after dur.
 * COUNTER: the ready-queue length id at ts. */
struct weft__tev {
    uint64_t ts, dur;
    const char *name;
    uint64_t id;
    uint32_t kind, arg;
};

#define CHUNK_EVENTS 1024u
#define EST_BYTES    120u       /* JSON bytes per record, roughly (budget) */
#define TAIL_BYTES   1024u      /* kept for the truncation event and the closing */
#define DEFAULT_MB   256u
#define MAX_MB       (1u << 20) /* 1 TiB */

struct weft__tchunk {
    struct weft__tchunk *next;
    struct weft__tev ev[CHUNK_EVENTS];
};
WEFT__FIFO_FUNCS(weft__tchunkq, struct weft__tchunk, next)

struct weft__trace {
    char *path;                    /* this pool's file */
    int fd;                        /* opened at creation, so a bad path shows early */
    uint64_t max_bytes;
    unsigned max_mb;
    _Atomic(uint64_t) reserved;    /* estimated bytes of the chunks taken */
    _Atomic(bool) truncated;       /* a worker ran out of budget */
};

/* ------------------------------------------------------------------------------
 * Creation: the environment, the file name
 * ---------------------------------------------------------------------------- */

/* Paths traced to in this process, with the number of pools that used each. */
struct used_path {
    struct used_path *next;
    unsigned n;
    char path[];
};
static pthread_mutex_t used_mu = PTHREAD_MUTEX_INITIALIZER;
static struct used_path *used;

static char *file_name(const char *path)
{
    unsigned n = 0;
    pthread_mutex_lock(&used_mu);
    struct used_path *u;
    for (u = used; u; u = u->next)
        if (strcmp(u->path, path) == 0)
            break;
    if (!u && (u = malloc(sizeof(*u) + strlen(path) + 1))) {
        strcpy(u->path, path);
        u->n = 0;
        u->next = used;
        used = u;
    }
    if (u)
        n = ++u->n;
    pthread_mutex_unlock(&used_mu);
    if (n == 0)
        return NULL;
    char *name;
    if (n == 1)
        return strdup(path);
    return asprintf(&name, "%s.%u", path, n) < 0 ? NULL : name;
}

static unsigned env_max_mb(void)
{
    const char *s = getenv("WEFT_TRACE_MAX_MB");
    if (!s || !*s)
        return DEFAULT_MB;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || s[0] == '-') {
        fprintf(stderr, "weft: ignoring WEFT_TRACE_MAX_MB=%s (want a number of MiB >= 1)\n", s);
        return DEFAULT_MB;
    }
    if (v > MAX_MB) {
        fprintf(stderr, "weft: WEFT_TRACE_MAX_MB=%s clamped to %u\n", s, MAX_MB);
        v = MAX_MB;
    }
    return (unsigned)v;
}

int weft__trace_pool_init(weft_pool *pool, const char *opt_path)
{
    const char *path = opt_path;
    bool from_env = false;
    if (!path) {
        path = getenv("WEFT_TRACE");
        from_env = true;
    }
    if (!path || !*path)
        return 0;
    struct weft__trace *tr = calloc(1, sizeof(*tr));
    if (!tr)
        return -ENOMEM;
    tr->fd = -1;
    tr->max_mb = env_max_mb();
    tr->max_bytes = (uint64_t)tr->max_mb << 20;
    atomic_init(&tr->reserved, 0);
    atomic_init(&tr->truncated, false);
    pool->trace = tr;  /* from here on weft__trace_pool_free cleans up */
    tr->path = file_name(path);
    if (!tr->path)
        return -ENOMEM;
    tr->fd = open(tr->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tr->fd < 0) {
        int err = -errno;
        if (!from_env)
            return err;
        fprintf(stderr, "weft: ignoring WEFT_TRACE=%s: cannot open %s: %s\n", path,
                tr->path, strerror(-err));
        weft__trace_pool_free(pool);
        return 0;
    }
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__tbuf *b = calloc(1, sizeof(*b));
        if (!b)
            return -ENOMEM;
        b->tr = tr;
        pool->workers[i]->trace = b;
    }
    return 0;
}

void weft__trace_pool_free(weft_pool *pool)
{
    struct weft__trace *tr = pool->trace;
    if (!tr)
        return;
    for (unsigned i = 0; pool->workers && i < pool->nthreads; i++) {
        struct weft__worker *w = pool->workers[i];
        if (!w || !w->trace)
            continue;
        for (struct weft__tchunk *c = w->trace->chunks.head, *next; c; c = next) {
            next = c->next;
            free(c);
        }
        free(w->trace);
        w->trace = NULL;
    }
    if (tr->fd >= 0)
        close(tr->fd);
    free(tr->path);
    free(tr);
    pool->trace = NULL;
}

/* ------------------------------------------------------------------------------
 * Recording (owner only)
 * ---------------------------------------------------------------------------- */

static bool chunk_new(struct weft__tbuf *b)
{
    if (b->stopped)
        return false;
    struct weft__trace *tr = b->tr;
    uint64_t want = (uint64_t)CHUNK_EVENTS * EST_BYTES;
    /* Relaxed: a budget, not a synchronisation. */
    uint64_t prev = atomic_fetch_add_explicit(&tr->reserved, want, memory_order_relaxed);
    struct weft__tchunk *c = prev + want <= tr->max_bytes ? malloc(sizeof(*c)) : NULL;
    if (!c) {
        b->stopped = true;
        atomic_store_explicit(&tr->truncated, true, memory_order_relaxed);
        return false;
    }
    weft__tchunkq_push(&b->chunks, c);
    b->ev = c->ev;
    b->end = c->ev + CHUNK_EVENTS;
    return true;
}

static struct weft__tev *ev_new(struct weft__tbuf *b, uint32_t kind, uint64_t ts)
{
    if (WEFT_UNLIKELY(b->ev == b->end) && !chunk_new(b)) {
        b->dropped++;
        return NULL;
    }
    struct weft__tev *e = b->ev++;
    e->kind = kind;
    e->ts = ts;
    e->dur = 0;
    e->name = NULL;
    e->id = 0;
    e->arg = 0;
    return e;
}

/* End the running slice at now (it stays the current task). */
static void slice_end(struct weft__tbuf *b, uint64_t now)
{
    struct weft__tev *e = ev_new(b, EV_SLICE, b->cur.since);
    if (e) {
        e->dur = now - b->cur.since;
        e->name = b->cur.name;
        e->id = b->cur.id;
        e->arg = b->cur.from;
    }
}

/* The worker's ready-queue length, when it changed. */
static void ready_sample(struct weft__worker *w, uint64_t now)
{
    struct weft__tbuf *b = w->trace;
    size_t len = atomic_load_explicit(&w->ready_len, memory_order_relaxed);
    if (len == b->last_ready)
        return;
    b->last_ready = len;
    struct weft__tev *e = ev_new(b, EV_COUNTER, now);
    if (e)
        e->id = len;
}

void weft__trace_thread_start(struct weft__worker *w, uint64_t now)
{
    struct weft__tev *e = ev_new(w->trace, EV_COUNTER, now); /* the track starts at 0 */
    if (e)
        e->id = 0;
}

static const char *default_name(struct weft__job *job)
{
    if ((uintptr_t)job & WEFT__FRAME_TAG)
        return "task";
    return "job";
}

void weft__trace_run_job(struct weft__worker *w, struct weft__job *job)
{
    struct weft__tbuf *b = w->trace;
    if (WEFT_UNLIKELY(b->stopped)) {
        weft__worker_run_job_plain(w, job); /* out of budget: nothing more is recorded */
        return;
    }
    uint64_t now = weft__now_ns();
    /* The task this job runs on top of (a wait helping), if any: on this fiber's
     * stack, so it comes back with us wherever the job leaves us. */
    struct weft__trace_task outer = b->cur;
    if (outer.id)
        slice_end(b, now);
    ready_sample(w, now);
    b->cur.id = ((uint64_t)(w->id + 1) << 40) | ++b->seq;
    b->cur.name = default_name(job);
    b->cur.since = now;
    b->cur.from = b->stolen_from;
    b->stolen_from = 0;
    if ((uintptr_t)job & WEFT__FRAME_TAG) {
        struct weft__frame *fr =
            weft__frame_of((struct weft__job *)((uintptr_t)job & ~WEFT__FRAME_TAG));
        uint64_t stamp = weft__frame_stamp(fr);
        if (stamp && fr->home && fr->home != w) {
            struct weft__tev *e = ev_new(b, EV_FLOW, stamp);
            if (e) {
                e->dur = now;
                e->id = b->cur.id;
                e->arg = fr->home->id;
            }
        }
    }

    weft__worker_run_job_plain(w, job);

    w = weft__current(); /* the job may have suspended and resumed elsewhere */
    b = w->trace;
    now = weft__now_ns();
    slice_end(b, now);
    b->cur = outer;
    b->cur.since = now;
    b->cur.from = 0;
}

void weft__trace_leave_slow(struct weft__worker *w, struct weft__trace_saved *s)
{
    struct weft__tbuf *b = w->trace;
    uint64_t now = weft__now_ns();
    s->task = b->cur;
    s->at = now;
    s->tid = w->id;
    s->why = b->why ? b->why : "wait";
    b->why = NULL;
    if (b->cur.id)
        slice_end(b, now);
    b->cur.id = 0;
}

void weft__trace_back_slow(struct weft__worker *w, struct weft__trace_saved *s)
{
    struct weft__tbuf *b = w->trace;
    uint64_t now = weft__now_ns();
    b->cur = s->task;
    b->cur.since = now;
    b->cur.from = 0;
    if (s->task.id) {
        struct weft__tev *e = ev_new(b, EV_WAIT, s->at);
        if (e) {
            e->dur = now - s->at;
            e->name = s->why;
            e->id = s->task.id;
            e->arg = s->tid;
        }
    }
    ready_sample(w, now);
}

void weft__trace_park_begin(struct weft__worker *w, uint64_t now)
{
    struct weft__tbuf *b = w->trace;
    if (b->cur.id)
        slice_end(b, now);
    b->park_since = now;
    ready_sample(w, now);
}

void weft__trace_park_end(struct weft__worker *w, uint64_t now)
{
    struct weft__tbuf *b = w->trace;
    struct weft__tev *e = ev_new(b, EV_PARK, b->park_since);
    if (e)
        e->dur = now - b->park_since;
    b->cur.since = now;
    b->cur.from = 0;
    ready_sample(w, now);
}

WEFT_API void weft_trace_label(const char *name)
{
    struct weft__worker *w = weft__current();
    if (w && w->trace && w->trace->cur.id && name)
        w->trace->cur.name = name;
}

/* ------------------------------------------------------------------------------
 * Writing (at destroy, on the destroying thread)
 * ---------------------------------------------------------------------------- */

struct out {
    FILE *f;
    uint64_t bytes, limit;
    uint64_t dropped;   /* events the limit kept out */
    bool first, full;
    int pid;
};

/* Microseconds with three decimals, from nanoseconds. */
#define US_FMT "%" PRIu64 ".%03u"
#define US(ns) (uint64_t)((ns) / 1000u), (unsigned)((ns) % 1000u)

/* One event (or a flow's or a wait's two) as formatted; kept out past the limit. */
static void emit(struct out *o, const char *s, int len, bool force)
{
    if (len <= 0)
        return;
    if (!force && (o->full || o->bytes + (uint64_t)len + 2 > o->limit)) {
        o->full = true;
        o->dropped++;
        return;
    }
    if (!o->first)
        fputs(",\n", o->f);
    o->first = false;
    fwrite(s, 1, (size_t)len, o->f);
    o->bytes += (uint64_t)len + 2;
}

/* name as a JSON string body: quotes, backslashes and control bytes escaped, cut
 * at about 200 bytes (a label is a name, not a log). */
static void json_str(char *dst, size_t cap, const char *s)
{
    size_t k = 0;
    for (; s && *s && k + 8 < cap && k < 200; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[k++] = '\\';
            dst[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(dst + k, cap - k, "\\u%04x", c);
        } else {
            dst[k++] = (char)c;
        }
    }
    dst[k] = 0;
}

static void write_event(struct out *o, unsigned tid, const struct weft__tev *e)
{
    char buf[1024], name[224];
    int n = 0;
    switch (e->kind) {
    case EV_SLICE:
        json_str(name, sizeof(name), e->name);
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"X\",\"cat\":\"task\",\"name\":\"%s\",\"pid\":%d,\"tid\":%u,"
                     "\"ts\":" US_FMT ",\"dur\":" US_FMT ",\"args\":{\"task\":%" PRIu64,
                     name, o->pid, tid, US(e->ts), US(e->dur), e->id);
        if (e->arg && n > 0 && n < (int)sizeof(buf))
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"stolen_from\":%u", e->arg - 1);
        if (n > 0 && n < (int)sizeof(buf))
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, "}}");
        break;
    case EV_PARK:
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"X\",\"cat\":\"park\",\"name\":\"park\",\"pid\":%d,\"tid\":%u,"
                     "\"ts\":" US_FMT ",\"dur\":" US_FMT "}",
                     o->pid, tid, US(e->ts), US(e->dur));
        break;
    case EV_FLOW:
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"s\",\"cat\":\"steal\",\"name\":\"spawn\",\"id\":%" PRIu64
                     ",\"pid\":%d,\"tid\":%u,\"ts\":" US_FMT "},\n"
                     "{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"steal\",\"name\":\"spawn\",\"id\":%"
                     PRIu64 ",\"pid\":%d,\"tid\":%u,\"ts\":" US_FMT "}",
                     e->id, o->pid, e->arg, US(e->ts), e->id, o->pid, tid, US(e->dur));
        break;
    case EV_WAIT:
        json_str(name, sizeof(name), e->name);
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"b\",\"cat\":\"wait\",\"name\":\"%s\",\"id\":%" PRIu64
                     ",\"pid\":%d,\"tid\":%u,\"ts\":" US_FMT "},\n"
                     "{\"ph\":\"e\",\"cat\":\"wait\",\"name\":\"%s\",\"id\":%" PRIu64
                     ",\"pid\":%d,\"tid\":%u,\"ts\":" US_FMT ",\"args\":{\"resumed_on\":%u}}",
                     name, e->id, o->pid, e->arg, US(e->ts), name, e->id, o->pid, e->arg,
                     US(e->ts + e->dur), tid);
        break;
    case EV_COUNTER:
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"C\",\"name\":\"ready weft-%u\",\"pid\":%d,\"tid\":%u,"
                     "\"ts\":" US_FMT ",\"args\":{\"value\":%" PRIu64 "}}",
                     tid, o->pid, tid, US(e->ts), e->id);
        break;
    default:
        return;
    }
    if (n >= (int)sizeof(buf))
        return; /* cannot happen: names are cut to fit */
    emit(o, buf, n, false);
}

void weft__trace_pool_write(weft_pool *pool)
{
    struct weft__trace *tr = pool->trace;
    if (!tr || tr->fd < 0)
        return;
    FILE *f = fdopen(tr->fd, "w");
    if (!f) {
        fprintf(stderr, "weft: cannot write the trace %s: %s\n", tr->path, strerror(errno));
        return;
    }
    tr->fd = -1; /* f owns it now */
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    struct out o = {.f = f, .limit = tr->max_bytes - TAIL_BYTES, .first = true,
                    .pid = (int)getpid()};
    static const char head[] = "{\"traceEvents\":[\n";
    fputs(head, f);
    o.bytes = sizeof(head) - 1;
    char buf[256];
    int n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":0,"
                     "\"args\":{\"name\":\"weft pool (%u workers)\"}}",
                     o.pid, pool->nthreads);
    emit(&o, buf, n, false);
    for (unsigned i = 0; i < pool->nthreads; i++) {
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,"
                     "\"args\":{\"name\":\"weft-%u\"}}",
                     o.pid, i, i);
        emit(&o, buf, n, false);
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":%d,\"tid\":%u,"
                     "\"args\":{\"sort_index\":%u}}",
                     o.pid, i, i);
        emit(&o, buf, n, false);
    }
    uint64_t dropped = 0;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        struct weft__tbuf *b = pool->workers[i]->trace;
        dropped += b->dropped;
        for (struct weft__tchunk *c = b->chunks.head; c; c = c->next) {
            const struct weft__tev *end = c == b->chunks.tail ? b->ev : c->ev + CHUNK_EVENTS;
            for (const struct weft__tev *e = c->ev; e < end; e++)
                write_event(&o, i, e);
        }
    }
    dropped += o.dropped;
    if (o.full || dropped || atomic_load_explicit(&tr->truncated, memory_order_relaxed)) {
        n = snprintf(buf, sizeof(buf),
                     "{\"ph\":\"M\",\"name\":\"weft_trace_truncated\",\"pid\":%d,\"tid\":0,"
                     "\"args\":{\"max_mb\":%u,\"dropped_events\":%" PRIu64 "}}",
                     o.pid, tr->max_mb, dropped);
        emit(&o, buf, n, true);
    }
    fputs("\n],\"displayTimeUnit\":\"ns\"}\n", f);
    if (ferror(f) | (fclose(f) != 0))
        fprintf(stderr, "weft: cannot write the trace %s: %s\n", tr->path, strerror(errno));
}
