/* SPDX-License-Identifier: MIT */
/*
 * GNU make jobserver client: under `make -jN`, a process's pools together run at
 * most 1 + (tokens held) workers at once.
 *
 * The protocol (GNU make manual, "POSIX Jobserver"): make hands its jobs a pipe or
 * a named FIFO holding one byte per free job slot. Every job owns one slot without
 * a byte, the implicit token; to run more at once it reads bytes, and it writes
 * each byte back when done, the same byte it read. MAKEFLAGS names the server:
 * `--jobserver-auth=fifo:PATH` (make >= 4.4), or `--jobserver-auth=R,W` (make 4.2,
 * 4.3) and `--jobserver-fds=R,W` (older), two fds inherited from make and shared
 * with its other jobs. The last such option wins; negative fds mean none.
 *
 * What this file owns: one client per process (the struct `B` below), shared by
 * every pool that uses it, so that two pools of one process share the implicit
 * token too; the token each worker holds (struct js_slot); the cache of tokens of
 * workers that sleep; and a watcher thread.
 *
 * Invariants:
 *  - A worker holds a token whenever it is awake: from the moment it leaves
 *    weft__park (weft__js_wake) or starts (weft__js_thread_start) until it sleeps
 *    in weft__park again (weft__js_sleep). Running a task needs being awake, so at
 *    most 1 + (bytes held) workers run tasks, across all pools of the process.
 *    Searching workers (a few tens of microseconds before they park) count as
 *    running: simpler, and they are on a CPU. A worker that parks inside a wait
 *    (a join, a scope) gives its token up too and needs one again before it goes
 *    on with the task below; that cannot deadlock, because only awake workers hold
 *    tokens and every awake worker either runs work or parks, and parking hands
 *    its token to a waiter. (With no byte from make the pool behaves as a pool of
 *    one worker, which weft supports: waits suspend or help.)
 *  - A token is the implicit one (never written to make) or a byte; the byte read
 *    is the byte written back. held_by_value[] counts the bytes the process holds,
 *    so that an exit can give back everything it still holds.
 *  - Tokens are not taken per task: a sleeping worker's token goes to a worker that
 *    waits for one, else to the cache (the implicit token to its flag); a waking
 *    worker takes the implicit token, then the newest cached byte, and only then
 *    reads make's fd. The watcher writes a cached byte back once it has been
 *    cached LINGER_NS (20 ms: DESIGN.md's "within 100 ms of going idle").
 *  - No worker blocks on make's fds, and none spins: a worker that finds no token
 *    registers as a waiter and sleeps on its own futex word. Whoever frees a token
 *    (a worker going to sleep, the watcher reading a byte that arrived) hands it
 *    to the first waiter and wakes it; pool stop wakes its waiters empty-handed.
 *    So a waiter exists only while no token is free in the process, and the pool's
 *    parking protocol may count waiters as searchers: sleepers could not run the
 *    work either. The watcher polls the read fd only while someone waits, and has
 *    a timeout (LINGER_NS) only while bytes are held, so an idle process uses no
 *    CPU, and caching a byte on the way to sleep makes no syscall. All reads are
 *    non-blocking (see "fds").
 *  - Pool destroy gives back the tokens of its workers (to other pools' waiters or
 *    the cache) and then writes every cached byte to make. The last pool closes the
 *    client; the next pool opens it again from MAKEFLAGS. At exit, every byte
 *    still held (also by pools never destroyed) is written back. A forked child
 *    writes nothing inherited: its client starts empty (the inherited one's tokens
 *    belong to the parent) and it closes only our own fds; a pool of its own then
 *    opens the client afresh, with an implicit token of its own, as any process
 *    a job starts would.
 *  - Every field of B is guarded by B.mu; held/peak are also atomics for the
 *    lock-free stats. A slot's token is owner-private, except that while the slot
 *    is on the waiter list the waker writes it under B.mu (the owner reads it back
 *    under B.mu after its futex wait).
 *
 * fds: for FIFOs we open the path twice, O_RDONLY and O_WRONLY, both O_NONBLOCK:
 * our own open file descriptions, so non-blocking is safe. Inherited pipe fds share
 * their open file description with make and its other jobs, so O_NONBLOCK must not
 * be set on them; instead we open /proc/self/fd/R and /proc/self/fd/W, which gives
 * new descriptions of the same pipe that may be non-blocking (checked on Linux 6.x).
 * Without /proc, reads of the inherited fd use preadv2(RWF_NOWAIT), which never
 * blocks (pipes take it on the 6.x kernels checked); where the kernel refuses it,
 * the jobserver is not used (warning). Writes of one byte never block: the pipe holds
 * at most the job count. Inherited fds are validated first (open, FIFOs, one pipe,
 * readable and writable): make closes them in recipes without `+`, and the numbers
 * may then be reused; if invalid, one warning and no jobserver.
 *
 * Dry runs: a first MAKEFLAGS word without '-' containing 'n' means `make -n`.
 * It is parsed (weft__js_auth.dry_run) but changes nothing: a recipe that runs
 * under `make -n` was marked `+` and runs for real, beside make's other `+` jobs,
 * so its fds are valid and using them is right.
 *
 * Rejected: acquiring through each worker's io_uring (POLL_ADD on the read fd):
 * it needs the blocking backend's twin and an op kind in uring.c, and still needs
 * a timer for the hysteresis; one watcher thread per process does both for every
 * backend. A blocking read on the worker (stalls the worker, and make's other jobs
 * may take the byte first). Per-task acquire and release (a syscall pair per task,
 * and the pool overshoots while bytes are in flight). A client per pool (two pools
 * would run on two implicit tokens).
 */
#define _GNU_SOURCE
#include "jobserver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define JS_NONE     (-1)
#define JS_IMPLICIT 256
#define LINGER_NS   (20u * 1000000u)

struct js_slot {
    int token;                       /* JS_NONE, JS_IMPLICIT or a byte (see above) */
    bool waiting;                    /* on the waiter list (B.mu) */
    struct js_slot *wprev, *wnext;   /* waiter list (B.mu) */
    _Atomic(uint32_t) wake;          /* futex word of a waiter */
};

/* The waiter list (list.h), FIFO, under B.mu. */
WEFT__DLIST_DEFINE(waiter_list, struct js_slot, wprev, wnext)

struct weft__js {
    unsigned n;
    struct js_slot slot[];
};

struct cached {
    unsigned char byte;
    uint64_t since;                  /* CLOCK_MONOTONIC ns */
};

/* Lock order: life_mu (open/close the client), then B.mu. */
static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    pthread_mutex_t mu;
    unsigned users;                  /* pools attached; the client is open iff > 0 */
    bool closed;                     /* the exit handler gave everything back */
    int rfd, wfd;                    /* where tokens are read from and written to */
    bool own_rfd, own_wfd;           /* ours to close (not make's) */
    bool nowait_read;                /* rfd is make's own: read with RWF_NOWAIT */
    bool rfd_dead;                   /* EOF or error: no more bytes from make */
    int efd;                         /* eventfd: wakes the watcher */
    pthread_t watcher;
    bool quit;                       /* the watcher should flush and exit */
    bool watching;                   /* the watcher polls rfd (waiters exist) */
    bool implicit_free;
    struct cached *cache;            /* oldest first */
    unsigned ncache, cap;
    struct js_slot *whead, *wtail;   /* workers waiting for a token, FIFO */
    uint32_t held_by_value[256];     /* bytes held (workers and cache) */
    _Atomic(unsigned) held, peak;
} B = {.mu = PTHREAD_MUTEX_INITIALIZER, .rfd = -1, .wfd = -1, .efd = -1};

static pthread_once_t js_once = PTHREAD_ONCE_INIT;
static _Atomic(bool) warned, warned_env, warned_write;
static _Atomic(bool) test_no_proc;
static _Atomic(uint64_t) n_reads, n_writes;

static void warn_once(_Atomic(bool) *flag, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warn_once(_Atomic(bool) *flag, const char *fmt, ...)
{
    if (atomic_exchange_explicit(flag, true, memory_order_relaxed))
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------------
 * MAKEFLAGS
 * ---------------------------------------------------------------------------- */

static const char *after_prefix(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

/* strlcpy: dst gets as much of src as fits. */
static void copy_cut(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool parse_fd(const char **p, int *fd)
{
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < INT_MIN || v > INT_MAX)
        return false;
    *fd = (int)v;
    *p = end;
    return true;
}

enum weft__js_kind weft__js_parse(const char *mf, struct weft__js_auth *a)
{
    memset(a, 0, sizeof(*a));
    a->kind = WEFT__JS_NONE;
    a->rfd = a->wfd = -1;
    if (!mf)
        return a->kind;
    /* Words are separated by blanks; make escapes blanks and backslashes inside a
     * word with a backslash. */
    char word[PATH_MAX + 64], val[PATH_MAX + 8];
    bool have = false, val_long = false, first = true;
    const char *p = mf;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        size_t n = 0;
        bool too_long = false;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            char c = *p++;
            if (c == '\\' && *p)
                c = *p++;
            if (n + 1 < sizeof(word))
                word[n++] = c;
            else
                too_long = true;
        }
        word[n] = '\0';
        if (first) {
            first = false;
            if (word[0] != '-') {      /* the single-letter flags, e.g. "kn" */
                if (strchr(word, 'n'))
                    a->dry_run = true;
                continue;
            }
        }
        if (strcmp(word, "--") == 0)   /* variable definitions follow */
            break;
        const char *v = after_prefix(word, "--jobserver-auth=");
        if (!v)
            v = after_prefix(word, "--jobserver-fds=");
        if (!v)
            continue;
        have = true;                    /* the last one wins */
        val_long = too_long || strlen(v) >= sizeof(a->path);
        copy_cut(val, sizeof(val), v);
    }
    if (!have)
        return a->kind;
    copy_cut(a->value, sizeof(a->value), val);
    const char *path = after_prefix(val, "fifo:");
    if (path) {
        if (!*path || val_long)
            return a->kind = WEFT__JS_BAD;
        copy_cut(a->path, sizeof(a->path), path);
        return a->kind = WEFT__JS_FIFO;
    }
    const char *q = val;
    int r, w;
    if (!parse_fd(&q, &r) || *q++ != ',' || !parse_fd(&q, &w) || *q)
        return a->kind = WEFT__JS_BAD;
    if (r < 0 || w < 0)
        return a->kind = WEFT__JS_OFF;
    a->rfd = r;
    a->wfd = w;
    return a->kind = WEFT__JS_PIPE;
}

int weft__js_check_pipe(int r, int w)
{
    if (fcntl(r, F_GETFD) < 0 || fcntl(w, F_GETFD) < 0)
        return -EBADF;
    struct stat sr, sw;
    if (fstat(r, &sr) != 0 || fstat(w, &sw) != 0)
        return -EBADF;
    if (!S_ISFIFO(sr.st_mode) || !S_ISFIFO(sw.st_mode) || sr.st_ino != sw.st_ino ||
        sr.st_dev != sw.st_dev)
        return -EINVAL;
    int fr = fcntl(r, F_GETFL), fw = fcntl(w, F_GETFL);
    if (fr < 0 || fw < 0 || (fr & O_ACCMODE) == O_WRONLY || (fw & O_ACCMODE) == O_RDONLY)
        return -EINVAL;
    return 0;
}

/* ------------------------------------------------------------------------------
 * Tokens (all *_locked functions: B.mu held)
 * ---------------------------------------------------------------------------- */

static ssize_t read_token(unsigned char *c)
{
    if (B.nowait_read) {
        struct iovec iov = {c, 1};
        return preadv2(B.rfd, &iov, 1, -1, RWF_NOWAIT);
    }
    return read(B.rfd, c, 1);
}

/* A byte was read. Returns true when it is the only one held: the watcher, asleep
 * without a timeout, must start watching the cache. */
static bool got_byte_locked(unsigned char c)
{
    B.held_by_value[c]++;
    unsigned h = atomic_load_explicit(&B.held, memory_order_relaxed) + 1;
    atomic_store_explicit(&B.held, h, memory_order_relaxed);
    if (h > atomic_load_explicit(&B.peak, memory_order_relaxed))
        atomic_store_explicit(&B.peak, h, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_reads, 1, memory_order_relaxed);
    return h == 1;
}

/* Write c back to make. The pipe never fills (it holds at most the job count), so
 * EAGAIN is not expected; it is retried briefly anyway. A byte that cannot be
 * written is lost to make (warned once). */
static void write_token_locked(unsigned char c)
{
    /* Counted as given back before the write: whoever sees the byte in the pipe
     * (make, a test reading FIONREAD and then weft_pool_stats) must not still find
     * it counted in jobserver_tokens. The write is a syscall, which orders the
     * store before the byte appears. */
    WEFT_ASSERT(B.held_by_value[c] > 0);
    B.held_by_value[c]--;
    atomic_store_explicit(&B.held, atomic_load_explicit(&B.held, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    for (int tries = 0; tries < 50; tries++) {
        ssize_t n = write(B.wfd, &c, 1);
        if (n == 1) {
            atomic_fetch_add_explicit(&n_writes, 1, memory_order_relaxed);
            break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = B.wfd, .events = POLLOUT};
            (void)poll(&pf, 1, 10);
            continue;
        }
        warn_once(&warned_write, "weft: cannot give a jobserver token back: %s\n",
                  strerror(n < 0 ? errno : EIO));
        break;
    }
}

static void flush_cache_locked(void)
{
    for (unsigned i = 0; i < B.ncache; i++)
        write_token_locked(B.cache[i].byte);
    B.ncache = 0;
}

/* Bytes cached LINGER_NS ago or earlier go back to make. */
static void expire_locked(uint64_t now)
{
    unsigned k = 0;
    while (k < B.ncache && now - B.cache[k].since >= LINGER_NS)
        write_token_locked(B.cache[k++].byte);
    if (k) {
        memmove(B.cache, B.cache + k, (B.ncache - k) * sizeof(B.cache[0]));
        B.ncache -= k;
    }
}

static void delist_locked(struct js_slot *s)
{
    waiter_list_remove(&B.whead, &B.wtail, s);
    s->wprev = s->wnext = NULL;
    s->waiting = false;
}

/* Wake a waiter taken off the list. Under B.mu: the waiter reads its token under
 * B.mu after waking, so its pool (and slot) cannot go away before we are done. */
static void wake_slot_locked(struct js_slot *s)
{
    /* Release: pairs with the acquire load in wait_for_token(). */
    atomic_store_explicit(&s->wake, 1, memory_order_release);
    weft__futex_wake(&s->wake, 1);
}

/* A token is free: to the first waiter, else the implicit flag or the cache (the
 * watcher looks at the cache at least every LINGER_NS while bytes are held). */
static void give_locked(int tok)
{
    struct js_slot *s = B.whead;
    if (s) {
        delist_locked(s);
        s->token = tok;
        wake_slot_locked(s);
        return;
    }
    if (tok == JS_IMPLICIT) {
        B.implicit_free = true;
        return;
    }
    if (B.closed)
        return;                        /* written back by the exit handler already */
    if (B.ncache == B.cap) {
        unsigned cap = B.cap ? 2 * B.cap : 16;
        struct cached *c = realloc(B.cache, cap * sizeof(*c));
        if (!c) {
            write_token_locked((unsigned char)tok);
            return;
        }
        B.cache = c;
        B.cap = cap;
    }
    B.cache[B.ncache++] = (struct cached){(unsigned char)tok, now_ns()};
}

/* The implicit token if free, else the newest cached byte. */
static bool take_locked(struct js_slot *s)
{
    if (B.implicit_free) {
        B.implicit_free = false;
        s->token = JS_IMPLICIT;
        return true;
    }
    if (B.ncache) {
        s->token = B.cache[--B.ncache].byte;
        return true;
    }
    return false;
}

static void kick_watcher(void)
{
    uint64_t one = 1;
    ssize_t n = write(B.efd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is full, so the watcher wakes anyway */
}

static bool stopping(const weft_pool *pool)
{
    return weft__latch_is_set(&pool->stop); /* the stop latch (pool.c) */
}

/* Get s a token: cached, implicit or read; else wait asleep for one. Returns with
 * s->token set, or without one when the pool stops. */
static void acquire(weft_pool *pool, struct js_slot *s)
{
    for (;;) {
        if (stopping(pool))
            return;
        pthread_mutex_lock(&B.mu);
        bool got = take_locked(s);
        bool can_read = !B.rfd_dead && !B.closed;
        pthread_mutex_unlock(&B.mu);
        if (got)
            return;
        unsigned char c;
        ssize_t n = can_read ? read_token(&c) : -1;
        pthread_mutex_lock(&B.mu);
        if (n == 1) {
            bool first = got_byte_locked(c);
            if (!B.closed) {
                s->token = c;
                pthread_mutex_unlock(&B.mu);
                if (first)
                    kick_watcher();
                return;
            }
            write_token_locked(c);     /* exit() gave everything back meanwhile */
        }
        /* Freed meanwhile, or the pool stops (js_stop takes B.mu after the stop
         * store, so it either runs before this check or sees us on the list). */
        if (take_locked(s) || stopping(pool)) {
            pthread_mutex_unlock(&B.mu);
            return;
        }
        atomic_store_explicit(&s->wake, 0, memory_order_relaxed);
        s->waiting = true;
        waiter_list_append(&B.whead, &B.wtail, s);
        bool kick = !B.watching && !B.rfd_dead && !B.closed;
        pthread_mutex_unlock(&B.mu);
        if (kick)
            kick_watcher();
        /* Acquire: pairs with the release store in wake_slot_locked(). */
        while (atomic_load_explicit(&s->wake, memory_order_acquire) == 0)
            weft__futex_wait(&s->wake, 0);
        pthread_mutex_lock(&B.mu);
        got = s->token != JS_NONE;
        pthread_mutex_unlock(&B.mu);
        if (got)
            return;
    }
}

/* ------------------------------------------------------------------------------
 * The watcher: reads bytes for waiters, writes expired cached bytes back.
 * ---------------------------------------------------------------------------- */

static void *watcher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&B.mu);
    while (!B.quit) {
        uint64_t now = now_ns();
        expire_locked(now);
        /* Bytes held: look again when the oldest cached one expires, or in
         * LINGER_NS (a worker may cache one meanwhile without telling us). */
        uint64_t wait_ns = B.ncache ? B.cache[0].since + LINGER_NS - now : LINGER_NS;
        bool timed = atomic_load_explicit(&B.held, memory_order_relaxed) != 0;
        B.watching = B.whead && !B.rfd_dead && !B.closed;
        struct pollfd pf[2] = {{.fd = B.efd, .events = POLLIN},
                               {.fd = B.rfd, .events = POLLIN}};
        int nfds = B.watching ? 2 : 1;
        int timeout = timed ? (int)((wait_ns + 999999u) / 1000000u) : -1;
        pthread_mutex_unlock(&B.mu);
        int r = poll(pf, (nfds_t)nfds, timeout);
        if (r > 0 && (pf[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t n = read(B.efd, &v, sizeof(v));
            (void)n;
        }
        unsigned char c;
        ssize_t n = -1;
        int err = 0;
        if (r > 0 && nfds == 2 && pf[1].revents) {
            n = read_token(&c);
            err = n < 0 ? errno : 0;
        }
        pthread_mutex_lock(&B.mu);
        if (n == 1) {
            (void)got_byte_locked(c); /* we recompute our timeout ourselves */
            if (B.closed)
                write_token_locked(c); /* exit() gave everything back meanwhile */
            else
                give_locked(c);
        } else if (n == 0 || (n < 0 && err && err != EAGAIN && err != EWOULDBLOCK &&
                              err != EINTR)) {
            B.rfd_dead = true;        /* make is gone: only our own tokens circulate */
        }
    }
    flush_cache_locked();
    pthread_mutex_unlock(&B.mu);
    return NULL;
}

/* ------------------------------------------------------------------------------
 * Opening and closing the client (life_mu held)
 * ---------------------------------------------------------------------------- */

static void close_fds(void)
{
    if (B.own_rfd && B.rfd >= 0)
        close(B.rfd);
    if (B.own_wfd && B.wfd >= 0)
        close(B.wfd);
    if (B.efd >= 0)
        close(B.efd);
    B.rfd = B.wfd = B.efd = -1;
    B.own_rfd = B.own_wfd = B.nowait_read = false;
}

static int reopen(int fd, int mode)
{
    if (atomic_load_explicit(&test_no_proc, memory_order_relaxed))
        return -1;
    char path[40];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return open(path, mode | O_NONBLOCK | O_CLOEXEC);
}

/* open_client's steps. Each returns false when the jobserver is unusable (warned
 * once), with nothing left open. */

/* A named FIFO (make 4.4's fifo:PATH). */
static bool open_fifo(const struct weft__js_auth *a)
{
    B.rfd = open(a->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (B.rfd >= 0 && (fstat(B.rfd, &st) != 0 || !S_ISFIFO(st.st_mode))) {
        close(B.rfd);
        B.rfd = -1;
        errno = EINVAL;
    }
    if (B.rfd >= 0)
        B.wfd = open(a->path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (B.wfd < 0) {
        warn_once(&warned, "weft: cannot open the jobserver FIFO %s: %s; running without "
                           "a jobserver\n", a->path, strerror(errno));
        if (B.rfd >= 0)
            close(B.rfd);
        B.rfd = -1;
        return false;
    }
    B.own_rfd = B.own_wfd = true;
    return true;
}

/* A pipe's two inherited fds (R,W): reopened through /proc, else make's own. */
static bool open_pipe(const struct weft__js_auth *a)
{
    int err = weft__js_check_pipe(a->rfd, a->wfd);
    if (err) {
        warn_once(&warned, "weft: MAKEFLAGS names jobserver fds %d,%d, which are %s (a "
                           "recipe without '+'?); running without a jobserver\n",
                  a->rfd, a->wfd, err == -EBADF ? "not open" : "not a pipe's two ends");
        return false;
    }
    B.rfd = reopen(a->rfd, O_RDONLY);
    B.wfd = B.rfd >= 0 ? reopen(a->wfd, O_WRONLY) : -1;
    if (B.wfd >= 0) {
        B.own_rfd = B.own_wfd = true;
        return true;
    }
    if (B.rfd >= 0)
        close(B.rfd);
    /* No /proc: make's own fds, read with RWF_NOWAIT. Probe it; a byte read
     * here is ours (cached below). */
    B.rfd = a->rfd;
    B.wfd = a->wfd;
    B.nowait_read = true;
    unsigned char c;
    ssize_t n = read_token(&c);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        warn_once(&warned, "weft: cannot read the jobserver pipe without blocking (no "
                           "/proc, and preadv2(RWF_NOWAIT): %s); running without a "
                           "jobserver\n", strerror(errno));
        B.rfd = B.wfd = -1;
        B.nowait_read = false;
        return false;
    }
    if (n == 1) {
        pthread_mutex_lock(&B.mu);
        (void)got_byte_locked(c); /* the watcher starts below and sees it */
        give_locked(c);
        pthread_mutex_unlock(&B.mu);
    }
    return true;
}

/* The fds are open: the eventfd and the watcher thread. */
static bool start_watcher(void)
{
    B.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (B.efd >= 0) {
        /* The watcher takes no signals (as the workers, pool.c). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        B.quit = false;
        int e = pthread_create(&B.watcher, NULL, watcher_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e == 0)
            return true;
    }
    warn_once(&warned, "weft: cannot start the jobserver watcher; running without a "
                       "jobserver\n");
    pthread_mutex_lock(&B.mu);
    flush_cache_locked();
    pthread_mutex_unlock(&B.mu);
    close_fds();
    return false;
}

/* Open the jobserver MAKEFLAGS names. false: none, or unusable (warned once). */
static bool open_client(void)
{
    struct weft__js_auth a;
    switch (weft__js_parse(getenv("MAKEFLAGS"), &a)) {
    case WEFT__JS_NONE:
    case WEFT__JS_OFF:
        return false;
    case WEFT__JS_BAD:
        warn_once(&warned, "weft: ignoring --jobserver-auth=%s in MAKEFLAGS (want fifo:PATH "
                           "or R,W); running without a jobserver\n", a.value);
        return false;
    case WEFT__JS_FIFO:
        if (!open_fifo(&a))
            return false;
        break;
    case WEFT__JS_PIPE:
        if (!open_pipe(&a))
            return false;
        break;
    }
    return start_watcher();
}

/* The last pool is gone: stop the watcher (it writes the cache back) and close. */
static void close_client(void)
{
    pthread_mutex_lock(&B.mu);
    B.quit = true;
    pthread_mutex_unlock(&B.mu);
    kick_watcher();
    pthread_join(B.watcher, NULL);
    pthread_mutex_lock(&B.mu);
    WEFT_ASSERT(B.ncache == 0 && !B.whead);
    B.implicit_free = false;
    B.rfd_dead = B.watching = false;
    free(B.cache);
    B.cache = NULL;
    B.cap = 0;
    pthread_mutex_unlock(&B.mu);
    close_fds();
}

/* exit(): give back every byte still held, also those of workers of pools that were
 * never destroyed; tokens given back later are dropped. */
static void js_at_exit(void)
{
    pthread_mutex_lock(&B.mu);
    if (B.users && !B.closed) {
        B.ncache = 0;
        for (unsigned c = 0; c < 256; c++)
            while (B.held_by_value[c])
                write_token_locked((unsigned char)c);
        B.closed = true;
    }
    pthread_mutex_unlock(&B.mu);
}

/* A forked child: the tokens held belong to the parent. Forget them, close our own
 * fds (never make's), and let the child's first pool open the client afresh. */
static void js_atfork_child(void)
{
    pthread_mutex_init(&B.mu, NULL);
    pthread_mutex_init(&life_mu, NULL);
    if (B.users)
        close_fds();
    B.users = 0;
    B.closed = B.quit = B.watching = B.rfd_dead = B.implicit_free = false;
    /* Not freed: a parent thread may have been inside realloc() of it. */
    B.cache = NULL;
    B.ncache = B.cap = 0;
    B.whead = B.wtail = NULL;
    memset(B.held_by_value, 0, sizeof(B.held_by_value));
    atomic_store_explicit(&B.held, 0, memory_order_relaxed);
    atomic_store_explicit(&B.peak, 0, memory_order_relaxed);
}

static void js_init_once(void)
{
    pthread_atfork(NULL, NULL, js_atfork_child);
    atexit(js_at_exit);
}

static bool env_enabled(void)
{
    const char *s = getenv("WEFT_JOBSERVER");
    if (!s || !*s || strcmp(s, "1") == 0)
        return true;
    if (strcmp(s, "0") == 0)
        return false;
    warn_once(&warned_env, "weft: ignoring WEFT_JOBSERVER=%s (want 0 or 1)\n", s);
    return true;
}

/* ------------------------------------------------------------------------------
 * Hooks
 * ---------------------------------------------------------------------------- */

int weft__js_pool_init(weft_pool *pool, unsigned flags)
{
    pool->js = NULL;
    if ((flags & WEFT_POOL_NO_JOBSERVER) || !env_enabled())
        return 0;
    pthread_once(&js_once, js_init_once);
    pthread_mutex_lock(&life_mu);
    pthread_mutex_lock(&B.mu);
    bool closed = B.closed, fresh = B.users == 0;
    pthread_mutex_unlock(&B.mu);
    if (closed || (fresh && !open_client())) {
        pthread_mutex_unlock(&life_mu);
        return 0;
    }
    struct weft__js *js = calloc(1, sizeof(*js) + pool->nthreads * sizeof(js->slot[0]));
    if (!js) {
        if (fresh)
            close_client();
        pthread_mutex_unlock(&life_mu);
        return -ENOMEM;
    }
    js->n = pool->nthreads;
    for (unsigned i = 0; i < js->n; i++) {
        js->slot[i].token = JS_NONE;
        atomic_init(&js->slot[i].wake, 0);
    }
    pthread_mutex_lock(&B.mu);
    if (fresh) {
        B.implicit_free = true;
        atomic_store_explicit(&B.peak, atomic_load_explicit(&B.held, memory_order_relaxed),
                              memory_order_relaxed);
    }
    B.users++;
    pthread_mutex_unlock(&B.mu);
    pthread_mutex_unlock(&life_mu);
    pool->js = js;
    return 0;
}

void weft__js_pool_fini(weft_pool *pool)
{
    struct weft__js *js = pool->js;
    if (!js)
        return;
    pool->js = NULL;
    if (atomic_load_explicit(&pool->dead, memory_order_relaxed)) {
        free(js);                      /* forked child: nothing here is ours */
        return;
    }
    pthread_mutex_lock(&life_mu);
    pthread_mutex_lock(&B.mu);
    for (unsigned i = 0; i < js->n; i++) {
        struct js_slot *s = &js->slot[i];
        if (s->waiting)                /* not after a join; kept for safety */
            delist_locked(s);
        if (s->token != JS_NONE)
            give_locked(s->token);     /* the cache is flushed next */
        s->token = JS_NONE;
    }
    flush_cache_locked();
    bool last = --B.users == 0;
    pthread_mutex_unlock(&B.mu);
    if (last)
        close_client();
    pthread_mutex_unlock(&life_mu);
    free(js);
}

void weft__js_thread_start(struct weft__worker *w)
{
    struct weft__js *js = w->pool->js;
    if (!js)
        return;
    struct js_slot *s = &js->slot[w->id];
    pthread_mutex_lock(&B.mu);
    if (B.implicit_free) {
        B.implicit_free = false;
        s->token = JS_IMPLICIT;
    }
    pthread_mutex_unlock(&B.mu);
    if (s->token != JS_NONE)
        return;
    /* Asleep, holding nothing, until work comes; then a token first. */
    weft__park_search_begin(w);
    weft__park(w, &w->pool->stop);
    weft__js_wake(w);
    /* park returns searching, but the search we return to (weft__worker_find_work)
     * is entered not searching: it takes ready, local and injected work before it
     * starts to search, and returns such work without weft__park_search_end.
     * Entered searching, we would run a long task still counted as a searcher, so
     * pushes and injections would see a searcher and wake nobody while the rest
     * sleep (the parking protocol's "a push wakes a sleeper only when nobody
     * searches", park.c). Stop here: as the last searcher, this pokes and wakes a
     * sleeper if work is in sight, which then takes its own token (or waits for
     * one, searching). */
    weft__park_search_end(w);
}

void weft__js_sleep(struct weft__worker *w)
{
    struct weft__js *js = w->pool->js;
    if (!js)
        return;
    struct js_slot *s = &js->slot[w->id];
    if (s->token == JS_NONE)
        return;
    pthread_mutex_lock(&B.mu);
    give_locked(s->token);
    s->token = JS_NONE;
    pthread_mutex_unlock(&B.mu);
}

void weft__js_wake(struct weft__worker *w)
{
    struct weft__js *js = w->pool->js;
    if (!js)
        return;
    struct js_slot *s = &js->slot[w->id];
    if (s->token == JS_NONE)
        acquire(w->pool, s);
}

struct weft__worker *weft__js_outside_begin(void)
{
    struct weft__worker *w = weft__self;
    if (!w || !w->pool->js)
        return NULL;
    weft__js_sleep(w);
    return w;
}

void weft__js_outside_end(struct weft__worker *w)
{
    if (w)
        weft__js_wake(w);
}

void weft__js_stop(weft_pool *pool)
{
    struct weft__js *js = pool->js;
    if (!js)
        return;
    pthread_mutex_lock(&B.mu);
    for (unsigned i = 0; i < js->n; i++) {
        struct js_slot *s = &js->slot[i];
        if (s->waiting) {
            delist_locked(s);
            wake_slot_locked(s);
        }
    }
    pthread_mutex_unlock(&B.mu);
}

void weft__js_stats(const weft_pool *pool, weft_stats *out)
{
    if (!pool->js)
        return;
    out->jobserver_tokens = atomic_load_explicit(&B.held, memory_order_relaxed);
    out->jobserver_tokens_peak = atomic_load_explicit(&B.peak, memory_order_relaxed);
}

void weft__js_test_reset_warning(void)
{
    atomic_store_explicit(&warned, false, memory_order_relaxed);
}

void weft__js_test_no_proc(bool on)
{
    atomic_store_explicit(&test_no_proc, on, memory_order_relaxed);
}

void weft__js_test_counts(uint64_t *reads, uint64_t *writes)
{
    *reads = atomic_load_explicit(&n_reads, memory_order_relaxed);
    *writes = atomic_load_explicit(&n_writes, memory_order_relaxed);
}
