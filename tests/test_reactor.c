/* SPDX-License-Identifier: MIT */
/*
 * The reactor (lib/io.c and the suspension layer): I/O, sleeps and yields made inside
 * a task suspend the task, not its worker, and resume it with the syscall's result.
 * Every test runs on both backends: io_uring (flags 0) and the blocking-thread pool
 * (WEFT_POOL_NO_URING); tools/test may also run the whole suite with WEFT_IO=blocking.
 *
 * Many of these workloads deadlock if a call blocks its worker (2 workers, more
 * waiting tasks than that). Such waits are bounded: a watchdog thread unblocks the
 * calls after a deadline (writes the pipes, shuts the sockets down) and the test then
 * fails saying so, instead of hanging until the suite's timeout. The only timing
 * assertions are generous upper bounds (scaled for sanitizers) and the lower bound of
 * a sleep, which a correct sleep never misses.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checks.h"
#include "pool.h"
#ifdef WEFT_HAVE_URING
#include <liburing.h>
#endif

#ifndef cr_log_warn
#define cr_log_warn(...) cr_log_info(__VA_ARGS__)
#endif

/* Sanitizers slow the CPU, not the clock: bounds on CPU-bound wall time grow. */
#define SLOW WT_SLOW
#define MS 1000000ull /* ns */

/* ------------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define ASSERT_CLEAN(what, be)                                                        \
    do {                                                                              \
        int l_ = atomic_exchange(&bad_line, 0);                                       \
        long long g_ = atomic_exchange(&bad_got, 0);                                  \
        long long w_ = atomic_exchange(&bad_want, 0);                                 \
        cr_assert_eq(l_, 0, "%s [%s]: check at %s:%d failed (a value check: got %lld, " \
                     "want %lld)", what, be, __FILE__, l_, g_, w_);                   \
    } while (0)

static const unsigned backends[] = {0, WEFT_POOL_NO_URING};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

/* Whether this process may use io_uring at all, asked of the kernel directly (not
 * of weft, whose fallback is what the tests check): a seccomp filter, a container
 * runtime or io_uring_disabled refuse io_uring_setup. */
static bool uring_refused(void)
{
#ifdef WEFT_HAVE_URING
    static int refused = -1;
    if (refused < 0) {
        struct io_uring ring;
        int r = io_uring_queue_init(8, &ring, 0);
        refused = r < 0;
        if (r == 0)
            io_uring_queue_exit(&ring);
        else
            cr_log_info("io_uring refused here (%d): flags 0 means the blocking backend", r);
    }
    return refused;
#else
    return true; /* built without liburing */
#endif
}

static const char *backend_want(unsigned flags)
{
    if (flags & WEFT_POOL_NO_URING)
        return "blocking";
    const char *e = getenv("WEFT_IO");
    if (e && strcmp(e, "blocking") == 0)
        return "blocking";
    /* Where io_uring is refused the pool falls back: the tests then run both halves
     * on the blocking backend, and uses_io_uring_where_allowed counts the skip. */
    return uring_refused() ? "blocking" : "io_uring";
}

/* A pool of threads workers on the backend flags asks for; checks which it got. */
static weft_pool *pool_on(unsigned threads, unsigned flags)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads, .flags = flags};
    int r = weft_pool_create(&p, &o);
    cr_assert_eq(r, 0, "weft_pool_create(threads %u, flags %#x): %d", threads, flags, r);
    cr_assert_eq(weft_pool_threads(p), threads);
    const char *be = weft__pool_io_backend(p);
    cr_assert(be && strcmp(be, backend_want(flags)) == 0,
              "flags %#x, WEFT_IO=%s: backend %s, want %s", flags,
              getenv("WEFT_IO") ? getenv("WEFT_IO") : "(unset)", be ? be : "(none)",
              backend_want(flags));
    return p;
}

/* The io_uring-specific check: a pool without WEFT_POOL_NO_URING (and without
 * WEFT_IO=blocking) uses io_uring wherever the kernel lets this process have a ring.
 * Skipped, and counted as skipped, where it does not. */
Test(reactor, uses_io_uring_where_allowed)
{
    const char *e = getenv("WEFT_IO");
    if (e && strcmp(e, "blocking") == 0)
        cr_skip_test("WEFT_IO=blocking: no pool uses io_uring");
    if (uring_refused())
        cr_skip_test("io_uring is refused in this environment (or not built)");
    weft_pool *p = pool_on(2, 0);
    cr_assert(strcmp(weft__pool_io_backend(p), "io_uring") == 0);
    weft_pool_destroy(p);
}

/* A thread that, unless stopped first, calls fire(ctx) after a deadline: it unblocks
 * whatever a test waits for, so a test of suspension fails instead of hanging when
 * the calls block their workers. */
struct watchdog {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    _Atomic(bool) fired;
    double ms;
    void (*fire)(void *ctx);
    void *ctx;
};

static void *watchdog_main(void *p)
{
    struct watchdog *wd = p;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    long long ns = (long long)(wd->ms * 1e6) + dl.tv_nsec;
    dl.tv_sec += (time_t)(ns / 1000000000);
    dl.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&wd->mu);
    int r = 0;
    while (!wd->stop && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&wd->cv, &wd->mu, &dl);
    bool fire = !wd->stop;
    pthread_mutex_unlock(&wd->mu);
    if (fire) {
        atomic_store(&wd->fired, true);
        wd->fire(wd->ctx);
    }
    return NULL;
}

static void watchdog_start(struct watchdog *wd, double ms, void (*fire)(void *), void *ctx)
{
    memset(wd, 0, sizeof(*wd));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&wd->mu, NULL);
    atomic_init(&wd->fired, false);
    wd->ms = ms;
    wd->fire = fire;
    wd->ctx = ctx;
    cr_assert_eq(pthread_create(&wd->th, NULL, watchdog_main, wd), 0);
}

/* Stop the watchdog (it has fired, or never will); returns whether it fired. */
static bool watchdog_stop(struct watchdog *wd)
{
    pthread_mutex_lock(&wd->mu);
    wd->stop = true;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->th, NULL);
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    return atomic_load(&wd->fired);
}

/* Watchdog action for pipes: write len bytes of '!' into each fd. */
struct pipe_kick {
    const int *fds;
    size_t n, len;
};

static void kick_pipes(void *p)
{
    const struct pipe_kick *k = p;
    char junk[64];
    memset(junk, '!', sizeof(junk));
    for (size_t i = 0; i < k->n; i++)
        if (write(k->fds[i], junk, k->len < sizeof(junk) ? k->len : sizeof(junk)) < 0)
            perror("watchdog write");
}

/* Wait, inside a task or outside, until *v >= want or ms have passed. */
static bool wait_count(_Atomic(unsigned) *v, unsigned want, double ms)
{
    double end = now_ms() + ms;
    while (atomic_load(v) < want) {
        if (now_ms() > end)
            return false;
        weft_sleep(MS / 2);
    }
    return true;
}

/* Contents of a test file: not periodic, so a read at a wrong offset never matches. */
static char pat(size_t i, unsigned seed)
{
    uint64_t x = ((uint64_t)i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 40);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (char)x;
}

static void fill(char *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pat(i, seed);
}

/* Write size bytes of pattern seed to path with plain syscalls; 0 or -errno. */
static int write_file(const char *path, size_t size, unsigned seed)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    fill(buf, size, seed);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err = fd < 0 ? -errno : 0;
    size_t off = 0;
    while (!err && off < size) {
        ssize_t w = write(fd, buf + off, size - off);
        if (w <= 0)
            err = w < 0 ? -errno : -EIO;
        else
            off += (size_t)w;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return err;
}

static char *make_tmpdir(void)
{
    char *d = strdup("/tmp/weft-reactor-XXXXXX");
    cr_assert_not_null(d);
    cr_assert_not_null(mkdtemp(d), "mkdtemp: %s", strerror(errno));
    return d;
}

/* ------------------------------------------------------------------------------
 * 1, 11. Sleeps suspend: 10 000 tasks sleeping 1 ms on 2 workers take far less
 * than 10 000 ms; also with more workers than cores.
 * ---------------------------------------------------------------------------- */

struct sleepers {
    unsigned n;
    _Atomic(unsigned) done, asleep, most_asleep;
};

static int sleep_task(void *p)
{
    struct sleepers *sl = p;
    /* How many sleep at once: at most one per worker if a sleep holds its worker. */
    unsigned now = atomic_fetch_add(&sl->asleep, 1) + 1;
    unsigned most = atomic_load(&sl->most_asleep);
    while (now > most && !atomic_compare_exchange_weak(&sl->most_asleep, &most, now))
        ;
    VCHECK(weft_sleep(MS), 0);
    atomic_fetch_sub(&sl->asleep, 1);
    atomic_fetch_add(&sl->done, 1);
    return 0;
}

static int sleep_body(weft_scope *s, void *p)
{
    struct sleepers *sl = p;
    for (unsigned i = 0; i < sl->n; i++) {
        int r = weft_spawn(s, sleep_task, sl);
        if (r)
            return r;
    }
    return 0;
}

static void sleepers_on(unsigned threads, unsigned flags, unsigned n)
{
    const char *be = backend_want(flags);
    weft_pool *pool = pool_on(threads, flags);
    struct sleepers sl = {.n = n};
    atomic_init(&sl.done, 0);
    atomic_init(&sl.asleep, 0);
    atomic_init(&sl.most_asleep, 0);
    double t0 = now_ms();
    int r = weft_scope_run(pool, sleep_body, &sl);
    double ms = now_ms() - t0;
    cr_log_info("[%s] %u workers: %u tasks x weft_sleep(1 ms) took %.0f ms, up to %u "
                "asleep at once", be, threads, n, ms, atomic_load(&sl.most_asleep));
    cr_assert_eq(r, 0, "[%s] scope: %d", be, r);
    ASSERT_CLEAN("sleepers", be);
    cr_assert_eq(atomic_load(&sl.done), n, "[%s] finished %u of %u", be,
                 atomic_load(&sl.done), n);
    cr_assert_gt(atomic_load(&sl.most_asleep), threads, "[%s] at most %u tasks slept at "
                 "once on %u workers: a sleep holds its worker", be,
                 atomic_load(&sl.most_asleep), threads);
    /* most_asleep above is the check that sleeps suspend: with blocking sleeps at most
     * one task per worker sleeps at once. Wall time is no such check (blocking sleeps
     * would take n / threads ms: 5 000, 1 000, 500 ms here, which a loaded 2-core
     * machine may also need for suspending ones); it is a watchdog only. */
    double bound = 60000.0 * SLOW;
    cr_assert_lt(ms, bound, "[%s] %u sleeps of 1 ms on %u workers took %.0f ms (watchdog "
                 "%.0f)", be, n, threads, ms, bound);
    weft_pool_destroy(pool);
}

Test(reactor, sleep_10000_tasks_on_2_workers, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        sleepers_on(2, backends[b], SCALED(10000));
}

Test(reactor, sleep_oversubscribed_4_workers, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        sleepers_on(4, backends[b], SCALED(4000));
}

Test(reactor, sleep_oversubscribed_8_workers, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        sleepers_on(8, backends[b], SCALED(4000));
}

/* A sleep never ends early (1 ms of slack for clock granularity), in a task or not. */
static int timed_sleep(void *p)
{
    double t0 = now_ms();
    VCHECK(weft_sleep(20 * MS), 0);
    *(double *)p = now_ms() - t0;
    return 0;
}

Test(reactor, sleep_lasts_at_least_its_time, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        double ms = 0;
        cr_assert_eq(weft_run(pool, timed_sleep, &ms), 0);
        ASSERT_CLEAN("timed sleep", be);
        cr_assert_geq(ms, 19.0, "[%s] weft_sleep(20 ms) in a task took %.2f ms", be, ms);
        weft_pool_destroy(pool);
    }
    double ms = 0;
    timed_sleep(&ms); /* outside any task */
    ASSERT_CLEAN("timed sleep outside", "none");
    cr_assert_geq(ms, 19.0, "weft_sleep(20 ms) outside a task took %.2f ms", ms);
}

/* ------------------------------------------------------------------------------
 * 2. Files read through weft_read / weft_read_file equal their pread contents,
 * inside tasks (weft_run, weft_scope_run, weft_par_collect) and outside any task.
 * ---------------------------------------------------------------------------- */

struct tfile {
    char *path;
    size_t size;
};

/* Read the whole file with plain preads: what the weft calls must return. */
static char *pread_all(const char *path, size_t size)
{
    char *want = malloc(size + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    VCHECK(fd >= 0, 1);
    size_t off = 0;
    while (fd >= 0 && off < size) {
        ssize_t r = pread(fd, want + off, size - off, (off_t)off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    VCHECK(off, size);
    if (fd >= 0)
        close(fd);
    return want;
}

#define CHUNK ((1u << 20) + 3) /* reads smaller than the big file, odd on purpose */

static void check_file(const struct tfile *f)
{
    char *want = pread_all(f->path, f->size);

    /* weft_read_file: the whole file, a spare NUL after it. */
    void *data = NULL;
    size_t size = 0;
    VCHECK(weft_read_file(f->path, &data, &size), 0);
    VCHECK(size, f->size);
    if (data && size == f->size) {
        VCHECK(memcmp(data, want, size), 0);
        VCHECK(((char *)data)[size], 0);
    }
    free(data);

    char *got = malloc(f->size + CHUNK);
    int fd = weft_open(f->path, O_RDONLY, 0);
    VCHECK(fd >= 0, 1);
    if (fd < 0 || !got) {
        free(got);
        free(want);
        return;
    }
    /* weft_read with explicit offsets, in reads smaller than the file. */
    size_t off = 0;
    for (;;) {
        ssize_t r = weft_read(fd, got + off, CHUNK, (off_t)off);
        if (r <= 0) {
            VCHECK(r, 0);
            break;
        }
        off += (size_t)r;
        if (off > f->size)
            break;
    }
    VCHECK(off, f->size);
    if (off == f->size)
        VCHECK(memcmp(got, want, off), 0);
    /* weft_read with off == -1: uses and advances the file position. */
    VCHECK(lseek(fd, 0, SEEK_CUR), 0);
    memset(got, 0, f->size);
    off = 0;
    for (;;) {
        ssize_t r = weft_read(fd, got + off, CHUNK, -1);
        if (r <= 0) {
            VCHECK(r, 0);
            break;
        }
        off += (size_t)r;
        if (off > f->size)
            break;
    }
    VCHECK(off, f->size);
    if (off == f->size)
        VCHECK(memcmp(got, want, off), 0);
    VCHECK(lseek(fd, 0, SEEK_CUR), (long long)f->size);
    /* At and past EOF: 0. */
    VCHECK(weft_read(fd, got, 16, (off_t)f->size), 0);
    VCHECK(weft_read(fd, got, 16, (off_t)f->size + 4096), 0);
    VCHECK(weft_read(fd, got, 16, -1), 0);
    VCHECK(weft_close(fd), 0);
    free(got);
    free(want);
}

/* A file that shrinks between reads, inside one task: each read returns what is
 * there, weft_read past EOF returns 0, weft_read_file the current contents. */
static void check_shrink(const char *dir, unsigned id)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/shrink-%u", dir, id);
    const size_t big = 256 * 1024 + 5, mid = 100000, small = 10, piece = 65536;
    VCHECK(write_file(path, big, id), 0);
    char *content = malloc(big);
    char *buf = malloc(piece);
    fill(content, big, id);
    int fd = weft_open(path, O_RDWR, 0);
    VCHECK(fd >= 0, 1);
    if (fd < 0)
        goto out;
    VCHECK(weft_read(fd, buf, piece, 0), piece);
    VCHECK(memcmp(buf, content, piece), 0);
    VCHECK(ftruncate(fd, (off_t)mid), 0);
    VCHECK(weft_read(fd, buf, piece, (off_t)piece), mid - piece);
    VCHECK(memcmp(buf, content + piece, mid - piece), 0);
    VCHECK(weft_read(fd, buf, piece, (off_t)mid), 0);
    VCHECK(weft_read(fd, buf, 10, (off_t)big), 0); /* where data used to be */

    void *data = NULL;
    size_t size = 0;
    VCHECK(weft_read_file(path, &data, &size), 0);
    VCHECK(size, mid);
    if (data && size == mid)
        VCHECK(memcmp(data, content, mid), 0);
    free(data);

    VCHECK(ftruncate(fd, (off_t)small), 0);
    data = NULL;
    VCHECK(weft_read_file(path, &data, &size), 0);
    VCHECK(size, small);
    if (data && size == small)
        VCHECK(memcmp(data, content, small), 0);
    free(data);
    /* The file position: from 0, the 10 bytes left, then EOF. */
    VCHECK(weft_read(fd, buf, 100, -1), small);
    VCHECK(memcmp(buf, content, small), 0);
    VCHECK(weft_read(fd, buf, 100, -1), 0);

    VCHECK(ftruncate(fd, 0), 0);
    data = NULL;
    VCHECK(weft_read_file(path, &data, &size), 0);
    VCHECK(size, 0);
    free(data);
    VCHECK(weft_close(fd), 0);
out:
    unlink(path);
    free(buf);
    free(content);
}

/* A file truncated while weft_read_file reads it (a join of the two): the result is
 * no shorter than the new size and no longer than the old one, and holds the old
 * contents (see race_reader for the bytes past the new size). */
struct race {
    char path[256];
    size_t big, small;
    unsigned seed;
};

static int race_reader(void *p)
{
    struct race *rc = p;
    void *data = NULL;
    size_t size = 0;
    VCHECK(weft_read_file(rc->path, &data, &size), 0);
    VCHECK(size >= rc->small && size <= rc->big, 1);
    if (data && size <= rc->big) {
        /* Below the new size, the old bytes. Above it, a read racing the truncation
         * may see the kernel zeroing the tail of a large folio before it is dropped:
         * old bytes or zeros. */
        const char *d = data;
        char *want = malloc(size + 1);
        fill(want, size, rc->seed);
        VCHECK(memcmp(d, want, size < rc->small ? size : rc->small), 0);
        for (size_t i = rc->small; i < size; i++)
            if (d[i] != want[i] && d[i] != 0) {
                VCHECK(i, -1); /* got: the offset of a byte neither old nor zero */
                break;
            }
        free(want);
    }
    free(data);
    return 0;
}

static int race_truncator(void *p)
{
    struct race *rc = p;
    VCHECK(weft_yield(), 0);
    VCHECK(truncate(rc->path, (off_t)rc->small), 0);
    return 0;
}

static void check_shrink_race(const char *dir, unsigned id)
{
    struct race rc = {.big = (3u << 20) + 17, .small = 1u << 20, .seed = id};
    snprintf(rc.path, sizeof(rc.path), "%s/race-%u", dir, id);
    VCHECK(write_file(rc.path, rc.big, id), 0);
    VCHECK(weft_join(race_reader, &rc, race_truncator, &rc), 0);
    unlink(rc.path);
}

struct fileset {
    const char *dir;
    struct tfile *f;
    size_t n;
};

static int check_all(void *p)
{
    struct fileset *fs = p;
    for (size_t i = 0; i < fs->n; i++)
        check_file(&fs->f[i]);
    check_shrink(fs->dir, 1);
    return 0;
}

static int check_one_task(void *p)
{
    check_file(p);
    return 0;
}

struct shrink_arg {
    const char *dir;
    unsigned id;
};

static int shrink_task(void *p)
{
    const struct shrink_arg *a = p;
    check_shrink(a->dir, a->id);
    return 0;
}

static int shrink_race_task(void *p)
{
    const struct shrink_arg *a = p;
    check_shrink_race(a->dir, a->id);
    return 0;
}

static int files_body(weft_scope *s, void *p)
{
    struct fileset *fs = p;
    for (size_t i = 0; i < fs->n; i++) {
        int r = weft_spawn(s, check_one_task, &fs->f[i]);
        if (r)
            return r;
    }
    for (unsigned k = 0; k < 4; k++) {
        struct shrink_arg a = {fs->dir, 10 + k};
        int r = weft_spawn_copy(s, k < 2 ? shrink_task : shrink_race_task, &a, sizeof(a));
        if (r)
            return r;
    }
    return 0;
}

static int collect_item(void *ctx, size_t i, void *slot)
{
    struct fileset *fs = ctx;
    check_file(&fs->f[i]);
    *(int *)slot = 1;
    return 0;
}

static void make_files(struct fileset *fs, const char *dir, const size_t *sizes, size_t n)
{
    fs->dir = dir;
    fs->n = n;
    fs->f = calloc(n, sizeof(*fs->f));
    cr_assert_not_null(fs->f);
    for (size_t i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/f%zu", dir, i);
        fs->f[i].path = strdup(path);
        fs->f[i].size = sizes[i];
        int r = write_file(path, sizes[i], (unsigned)i);
        cr_assert_eq(r, 0, "%s: %d", path, r);
    }
}

static void free_files(struct fileset *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        unlink(fs->f[i].path);
        free(fs->f[i].path);
    }
    free(fs->f);
}

static void files_on(unsigned flags)
{
    const char *be = backend_want(flags);
    char *dir = make_tmpdir();
    /* Empty, one byte, and larger than one read (3 MiB + 17 bytes). */
    static const size_t edge[] = {0, 1, (3u << 20) + 17};
    struct fileset fs;
    make_files(&fs, dir, edge, sizeof(edge) / sizeof(edge[0]));

    weft_pool *pool = pool_on(2, flags);
    cr_assert_eq(weft_run(pool, check_all, &fs), 0);
    ASSERT_CLEAN("files in weft_run", be);
    cr_assert_eq(weft_scope_run(pool, files_body, &fs), 0);
    ASSERT_CLEAN("files in weft_scope_run", be);
    check_all(&fs); /* outside any task: plain blocking calls */
    ASSERT_CLEAN("files outside any task", be);

    /* Many files of many sizes, one weft_par_collect item each. */
    size_t nmany = SCALED(96);
    size_t *sizes = malloc(nmany * sizeof(*sizes));
    for (size_t i = 0; i < nmany; i++)
        sizes[i] = i < 3 ? edge[i] : (i * 7919u) % (300u * 1024u) + (i % 5 == 0 ? 4096 : 0);
    struct fileset many;
    make_files(&many, dir, sizes, nmany);
    int *slots = calloc(nmany, sizeof(int));
    cr_assert_eq(weft_par_collect(pool, nmany, slots, sizeof(int), collect_item, &many), 0);
    ASSERT_CLEAN("files in weft_par_collect", be);
    for (size_t i = 0; i < nmany; i++)
        cr_assert_eq(slots[i], 1, "[%s] item %zu not run", be, i);
    weft_pool_destroy(pool);

    free(slots);
    free(sizes);
    free_files(&many);
    free_files(&fs);
    rmdir(dir);
    free(dir);
}

Test(reactor, read_files_equal_pread, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        files_on(backends[b]);
}

/* ------------------------------------------------------------------------------
 * 3, 11. Loopback TCP echo between tasks: a listener task accepts n connections and
 * spawns an echo task for each; n client tasks connect, send a distinct message,
 * read it back. Plain blocking sockets from socket().
 * ---------------------------------------------------------------------------- */

#define MSG_MAX 256

struct echo {
    int lfd;
    struct sockaddr_in addr;
    unsigned n;
    weft_scope *s;
    _Atomic(int) *cfd;           /* client sockets (-1: none yet); closed by the test */
    _Atomic(unsigned) accepted, echoed, connected, ok;
    struct watchdog wd;
};

struct conn {
    struct echo *e;
    int fd;
};

struct client {
    struct echo *e;
    unsigned i;
};

static size_t make_msg(unsigned i, char *buf)
{
    size_t len = 24 + (i * 37u) % (MSG_MAX - 32);
    int h = snprintf(buf, MSG_MAX, "weft echo %u:", i);
    fill(buf + h, len - (size_t)h, i);
    return len;
}

static bool wd_fired(struct echo *e)
{
    return atomic_load(&e->wd.fired);
}

static int echo_task(void *p)
{
    const struct conn *c = p;
    struct echo *e = c->e;
    char buf[512];
    for (;;) {
        ssize_t r = weft_recv(c->fd, buf, sizeof(buf), 0);
        if (r <= 0) {
            if (!wd_fired(e))
                VCHECK(r, 0);
            break;
        }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = weft_send(c->fd, buf + off, (size_t)(r - off), 0);
            if (w <= 0) {
                if (!wd_fired(e))
                    VCHECK(w, r - off);
                goto out;
            }
            off += w;
        }
    }
out:
    VCHECK(weft_close(c->fd), 0);
    atomic_fetch_add(&e->echoed, 1);
    return 0;
}

static int listener_task(void *p)
{
    struct echo *e = p;
    for (unsigned i = 0; i < e->n; i++) {
        int fd;
        int flags = (i & 1) ? SOCK_CLOEXEC : 0;
        if (i & 2) {
            struct sockaddr_in peer;
            socklen_t plen = sizeof(peer);
            memset(&peer, 0, sizeof(peer));
            fd = weft_accept(e->lfd, (struct sockaddr *)&peer, &plen, flags);
            if (fd >= 0) {
                VCHECK(plen, sizeof(peer));
                VCHECK(peer.sin_family, AF_INET);
                VCHECK(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
            }
        } else {
            fd = weft_accept(e->lfd, NULL, NULL, flags);
        }
        if (fd < 0) {
            if (!wd_fired(e))
                VCHECK(fd, 0);
            return 0;
        }
        VCHECK(!!(fcntl(fd, F_GETFD) & FD_CLOEXEC), !!(i & 1));
        atomic_fetch_add(&e->accepted, 1);
        struct conn c = {e, fd};
        int r = weft_spawn_copy(e->s, echo_task, &c, sizeof(c));
        VCHECK(r, 0);
        if (r)
            close(fd);
    }
    return 0;
}

static int client_task(void *p)
{
    const struct client *c = p;
    struct echo *e = c->e;
    char msg[MSG_MAX], back[MSG_MAX + 16];
    size_t len = make_msg(c->i, msg);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    VCHECK(fd >= 0, 1);
    if (fd < 0)
        return 0;
    atomic_store(&e->cfd[c->i], fd);
    if (wd_fired(e))
        return 0;
    int r = weft_connect(fd, (const struct sockaddr *)&e->addr, sizeof(e->addr));
    if (r != 0) {
        if (!wd_fired(e))
            VCHECK(r, 0);
        return 0;
    }
    atomic_fetch_add(&e->connected, 1);
    for (size_t off = 0; off < len;) {
        ssize_t w = weft_send(fd, msg + off, len - off, 0);
        if (w <= 0) {
            if (!wd_fired(e))
                VCHECK(w, len - off);
            return 0;
        }
        off += (size_t)w;
    }
    VCHECK(shutdown(fd, SHUT_WR), 0); /* the echo task sees EOF after the message */
    size_t got = 0;
    for (;;) {
        ssize_t n = weft_recv(fd, back + got, sizeof(back) - got, 0);
        if (n <= 0) {
            if (!wd_fired(e))
                VCHECK(n, 0);
            break;
        }
        got += (size_t)n;
        if (got == sizeof(back))
            break;
    }
    if (!wd_fired(e)) {
        VCHECK(got, len);
        if (got == len)
            VCHECK(memcmp(back, msg, len), 0);
    }
    if (got == len && memcmp(back, msg, len) == 0)
        atomic_fetch_add(&e->ok, 1);
    return 0;
}

static int echo_body(weft_scope *s, void *p)
{
    struct echo *e = p;
    e->s = s;
    int r = weft_spawn(s, listener_task, e);
    if (r)
        return r;
    for (unsigned i = 0; i < e->n; i++) {
        struct client c = {e, i};
        r = weft_spawn_copy(s, client_task, &c, sizeof(c));
        if (r)
            return r;
    }
    return 0;
}

static int echo_main(void *p)
{
    return weft_scope_run(NULL, echo_body, p);
}

/* Watchdog: shut every socket down, so each blocked call returns. */
static void kick_sockets(void *p)
{
    struct echo *e = p;
    shutdown(e->lfd, SHUT_RDWR);
    for (unsigned i = 0; i < e->n; i++) {
        int fd = atomic_load(&e->cfd[i]);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
    }
}

/* How many connections the descriptor limit allows (two descriptors each). */
static unsigned fit_connections(unsigned want)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
    }
    rlim_t room = rl.rlim_cur > 256 ? (rl.rlim_cur - 256) / 2 : 0;
    if (rl.rlim_cur != RLIM_INFINITY && room < want) {
        cr_log_warn("RLIMIT_NOFILE hard limit %llu: %llu connections instead of %u",
                    (unsigned long long)rl.rlim_max, (unsigned long long)room, want);
        want = (unsigned)room;
    }
    return want;
}

static void echo_on(unsigned threads, unsigned flags, unsigned n_want)
{
    const char *be = backend_want(flags);
    unsigned n = fit_connections(n_want);
    unsigned least = n_want < 200 ? n_want : 200;
    cr_assert_geq(n, least, "only %u connections fit under RLIMIT_NOFILE; need %u", n, least);
    weft_pool *pool = pool_on(threads, flags);

    struct echo *e = calloc(1, sizeof(*e));
    cr_assert_not_null(e);
    e->n = n;
    e->cfd = malloc(n * sizeof(*e->cfd));
    for (unsigned i = 0; i < n; i++)
        atomic_init(&e->cfd[i], -1);
    atomic_init(&e->accepted, 0);
    atomic_init(&e->echoed, 0);
    atomic_init(&e->connected, 0);
    atomic_init(&e->ok, 0);
    e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(e->lfd, 0);
    e->addr.sin_family = AF_INET;
    e->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    e->addr.sin_port = 0;
    cr_assert_eq(bind(e->lfd, (struct sockaddr *)&e->addr, sizeof(e->addr)), 0);
    cr_assert_eq(listen(e->lfd, (int)n + 64), 0);
    socklen_t alen = sizeof(e->addr);
    cr_assert_eq(getsockname(e->lfd, (struct sockaddr *)&e->addr, &alen), 0);

    double limit = 15000.0 * SLOW;
    watchdog_start(&e->wd, limit, kick_sockets, e);
    double t0 = now_ms();
    int r = weft_run(pool, echo_main, e);
    double ms = now_ms() - t0;
    bool fired = watchdog_stop(&e->wd);
    cr_log_info("[%s] %u workers: %u echo connections in %.0f ms", be, threads, n, ms);
    cr_assert(!fired, "[%s] %u workers: the echo did not finish in %.0f s (accepted %u, "
              "connected %u, echoed %u, ok %u of %u): a socket call held its worker",
              be, threads, limit / 1e3, atomic_load(&e->accepted),
              atomic_load(&e->connected), atomic_load(&e->echoed), atomic_load(&e->ok), n);
    cr_assert_eq(r, 0, "[%s] scope: %d", be, r);
    ASSERT_CLEAN("tcp echo", be);
    cr_assert_eq(atomic_load(&e->accepted), n);
    cr_assert_eq(atomic_load(&e->connected), n);
    cr_assert_eq(atomic_load(&e->echoed), n);
    cr_assert_eq(atomic_load(&e->ok), n);
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(weft_close(atomic_load(&e->cfd[i])), 0); /* outside any task */
    close(e->lfd);
    weft_pool_destroy(pool);
    free(e->cfd);
    free(e);
}

Test(reactor, tcp_echo_1000_connections, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        echo_on(2, backends[b], SCALED(1000));
}

Test(reactor, tcp_echo_oversubscribed_4_workers, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        echo_on(4, backends[b], SCALED(400));
}

Test(reactor, tcp_echo_oversubscribed_8_workers, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        echo_on(8, backends[b], SCALED(400));
}

/* ------------------------------------------------------------------------------
 * 4. Suspension nested in every construct: a task suspends (sleep, and a read of a
 * pipe another task writes later) inside weft_join inside weft_scope_run inside a
 * weft_par_for item; every item's effects are visible after the loop.
 * ---------------------------------------------------------------------------- */

struct nitem {
    int pr, pw;
    unsigned i;
    size_t len;
    char msg[48];
    /* Effects, plain fields: the loop's return must publish them. */
    int pre_sleep, written, slept, got, join_rc, joined, scope_rc, done;
};

static int n_writer(void *p)
{
    struct nitem *it = p;
    VCHECK(weft_sleep(2 * MS), 0); /* the reader is waiting by then, usually */
    VCHECK(weft_write(it->pw, it->msg, it->len, -1), it->len);
    it->written = 1;
    return 0;
}

static int n_sleep(void *p)
{
    struct nitem *it = p;
    VCHECK(weft_sleep(MS), 0);
    it->slept = 1;
    return 0;
}

static int n_read(void *p)
{
    struct nitem *it = p;
    char buf[64];
    size_t got = 0;
    while (got < it->len) {
        ssize_t r = weft_read(it->pr, buf + got, it->len - got, -1);
        if (r <= 0) {
            VCHECK(r, 1);
            return -EIO;
        }
        got += (size_t)r;
    }
    it->got = memcmp(buf, it->msg, it->len) == 0;
    return 0;
}

static int n_reader(void *p)
{
    struct nitem *it = p;
    /* Even items suspend in a (b waits on the deque), odd ones in b. */
    if (it->i % 2 == 0)
        it->join_rc = weft_join(n_read, it, n_sleep, it);
    else
        it->join_rc = weft_join(n_sleep, it, n_read, it);
    it->joined = it->slept + it->got;
    return 0;
}

static int n_body(weft_scope *s, void *p)
{
    /* The writer first: a worker pops the reader first, and it must wait. */
    int r = weft_spawn(s, n_writer, p);
    return r ? r : weft_spawn(s, n_reader, p);
}

static int n_range(void *ctx, size_t lo, size_t hi)
{
    struct nitem *items = ctx;
    for (size_t i = lo; i < hi; i++) {
        struct nitem *it = &items[i];
        it->pre_sleep = weft_sleep(100000) == 0; /* the loop's own task suspends too */
        it->scope_rc = weft_scope_run(NULL, n_body, it);
        it->done = 1;
    }
    return 0;
}

static void nested_on(unsigned flags)
{
    const char *be = backend_want(flags);
    size_t n = SCALED(64);
    struct nitem *items = calloc(n, sizeof(*items));
    int *wfds = malloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        int fds[2];
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        items[i].pr = fds[0];
        items[i].pw = wfds[i] = fds[1];
        items[i].i = (unsigned)i;
        int h = snprintf(items[i].msg, sizeof(items[i].msg), "item %zu says ", i);
        items[i].len = (size_t)h + i % 16 + 1;
        memset(items[i].msg + h, 'a' + (int)(i % 26), i % 16 + 1);
    }
    weft_pool *pool = pool_on(2, flags);
    struct pipe_kick kick = {wfds, n, 64};
    struct watchdog wd;
    double limit = 15000.0 * SLOW;
    watchdog_start(&wd, limit, kick_pipes, &kick);
    int r = weft_par_for(pool, n, 1, n_range, items);
    bool fired = watchdog_stop(&wd);
    cr_assert(!fired, "[%s] the nested reads did not finish in %.0f s (the watchdog wrote "
              "the pipes): a read held its worker", be, limit / 1e3);
    cr_assert_eq(r, 0, "[%s] par_for: %d", be, r);
    ASSERT_CLEAN("nested suspension", be);
    for (size_t i = 0; i < n; i++) {
        struct nitem *it = &items[i];
        cr_assert(it->done && it->pre_sleep && it->scope_rc == 0 && it->written &&
                  it->slept && it->got && it->join_rc == 0 && it->joined == 2,
                  "[%s] item %zu: done %d pre_sleep %d scope %d written %d slept %d got %d "
                  "join %d joined %d", be, i, it->done, it->pre_sleep, it->scope_rc,
                  it->written, it->slept, it->got, it->join_rc, it->joined);
        close(it->pr);
        close(it->pw);
    }
    weft_pool_destroy(pool);
    free(wfds);
    free(items);
}

Test(reactor, suspend_in_join_in_scope_in_par_for, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        nested_on(backends[b]);
}

/* ------------------------------------------------------------------------------
 * 5. Cancellation: a task of a cancelled scope waiting in weft_read (a pipe that
 * gets no data) or weft_sleep(10 s) gets -ECANCELED at once, and the scope returns
 * the cancel's error. Waits outside the cancelled scope are not cancelled.
 * ---------------------------------------------------------------------------- */

#define UNSET LLONG_MIN

struct cancel {
    int pr, pw;                  /* nobody writes it (but the watchdog, after 10 s) */
    int bpr, bpw;                /* the bystander's pipe, written after the scope */
    weft_scope *s;
    weft_pool *pool;
    int how;                     /* 0: weft_scope_cancel; 1: a task fails with -EIO */
    _Atomic(bool) in_flight;     /* the cancel came while both waits were in flight */
    _Atomic(unsigned) started, bystanding;
    _Atomic(long long) read_res, sleep_res, sleep_ms, spawn_res, scope_res;
    _Atomic(long long) b_sleep_res, b_sleep_ms, b_read_res;
    _Atomic(bool) all_started;
};

static void cancel_init(struct cancel *c)
{
    memset(c, 0, sizeof(*c));
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    c->pr = fds[0];
    c->pw = fds[1];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    c->bpr = fds[0];
    c->bpw = fds[1];
    atomic_init(&c->started, 0);
    atomic_init(&c->bystanding, 0);
    atomic_init(&c->read_res, UNSET);
    atomic_init(&c->sleep_res, UNSET);
    atomic_init(&c->sleep_ms, UNSET);
    atomic_init(&c->spawn_res, UNSET);
    atomic_init(&c->scope_res, UNSET);
    atomic_init(&c->b_sleep_res, UNSET);
    atomic_init(&c->b_sleep_ms, UNSET);
    atomic_init(&c->b_read_res, UNSET);
    atomic_init(&c->all_started, false);
    atomic_init(&c->in_flight, false);
}

static void cancel_fini(struct cancel *c)
{
    close(c->pr);
    close(c->pw);
    close(c->bpr);
    close(c->bpw);
}

static int c_reader(void *p)
{
    struct cancel *c = p;
    atomic_fetch_add(&c->started, 1);
    char ch;
    atomic_store(&c->read_res, weft_read(c->pr, &ch, 1, -1));
    return 0;
}

static int c_sleeper(void *p)
{
    struct cancel *c = p;
    atomic_fetch_add(&c->started, 1);
    double t0 = now_ms();
    int r = weft_sleep(10000 * MS);
    atomic_store(&c->sleep_ms, (long long)(now_ms() - t0));
    atomic_store(&c->sleep_res, r);
    return 0;
}

/* Whether the calling thread is a worker of pool. */
static bool weft_worker_on(weft_pool *pool)
{
    return weft__self && weft__self->pool == pool;
}

/* Wait until the reader and the sleeper (and the bystander, if any) have started and
 * are in their waits; then cancel. In their waits means: started, not finished, and
 * every worker but the canceller's own asleep, so no worker runs them: they are
 * suspended with their calls in flight (waited for, not slept for). */
static int c_cancel(struct cancel *c, unsigned bystanders)
{
    bool ok = wait_count(&c->started, 2, 5000.0 * SLOW) &&
              wait_count(&c->bystanding, bystanders, 5000.0 * SLOW);
    atomic_store(&c->all_started, ok);
    unsigned busy = weft_worker_on(c->pool) ? 1 : 0;
    atomic_store(&c->in_flight,
                 ok && wt_wait_parked(c->pool, weft_pool_threads(c->pool) - busy, 5000) &&
                 atomic_load(&c->read_res) == UNSET && atomic_load(&c->sleep_res) == UNSET);
    if (c->how == 1)
        return -EIO;
    weft_scope_cancel(c->s, 0);
    atomic_store(&c->spawn_res, weft_spawn(c->s, c_reader, c));
    return 0;
}

/* Variant A: the body cancels, on the thread that called weft_scope_run. */
static int cancel_body_a(weft_scope *s, void *p)
{
    struct cancel *c = p;
    c->s = s;
    int r = weft_spawn(s, c_reader, c);
    if (!r)
        r = weft_spawn(s, c_sleeper, c);
    return r ? r : c_cancel(c, 0);
}

static void cancel_check(struct cancel *c, const char *be, bool fired, int want_scope)
{
    cr_assert(atomic_load(&c->all_started), "[%s] the reader and the sleeper did not both "
              "start (a waiting task held its worker?)", be);
    cr_assert(atomic_load(&c->in_flight), "[%s] the workers did not all go idle while the "
              "read and the sleep waited (a wait holds its worker?)", be);
    cr_assert(!fired, "[%s] the read was not cancelled: the watchdog wrote its pipe after "
              "10 s (read returned %lld)", be, atomic_load(&c->read_res));
    cr_assert_eq(atomic_load(&c->scope_res), want_scope, "[%s] scope", be);
    cr_assert_eq(atomic_load(&c->read_res), -ECANCELED, "[%s] weft_read in a cancelled "
                 "scope", be);
    cr_assert_eq(atomic_load(&c->sleep_res), -ECANCELED, "[%s] weft_sleep(10 s) in a "
                 "cancelled scope (after %lld ms)", be, atomic_load(&c->sleep_ms));
    cr_assert_lt(atomic_load(&c->sleep_ms), 10000, "[%s] the cancelled sleep took %lld ms:"
                 " it ran its full 10 s", be, atomic_load(&c->sleep_ms));
}

Test(reactor, cancel_read_and_sleep_from_body, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        struct cancel c;
        cancel_init(&c);
        c.pool = pool;
        struct pipe_kick kick = {&c.pw, 1, 8};
        struct watchdog wd;
        watchdog_start(&wd, 10000, kick_pipes, &kick);
        double t0 = now_ms();
        atomic_store(&c.scope_res, weft_scope_run(pool, cancel_body_a, &c));
        double ms = now_ms() - t0;
        bool fired = watchdog_stop(&wd);
        cancel_check(&c, be, fired, -ECANCELED);
        cr_assert_eq(atomic_load(&c.spawn_res), -ECANCELED, "[%s] spawn after cancel", be);
        cr_assert_lt(ms, 5000.0 * SLOW, "[%s] the cancelled scope took %.0f ms (watchdog)",
                     be, ms);
        cancel_fini(&c);
        weft_pool_destroy(pool);
    }
}

/* Variant B: inside a task. A task of the scope cancels it (how 0) or fails (how 1)
 * while a bystander outside the scope, joined with it, sleeps and reads: the
 * bystander's calls complete normally. */
static int c_canceller(void *p)
{
    return c_cancel(p, 1);
}

static int cancel_body_b(weft_scope *s, void *p)
{
    struct cancel *c = p;
    c->s = s;
    int r = weft_spawn(s, c_reader, c);
    if (!r)
        r = weft_spawn(s, c_sleeper, c);
    if (!r)
        r = weft_spawn(s, c_canceller, c);
    return r;
}

static int c_scope(void *p)
{
    struct cancel *c = p;
    atomic_store(&c->scope_res, weft_scope_run(NULL, cancel_body_b, c));
    /* Now the bystander may have its byte. */
    VCHECK(weft_write(c->bpw, "x", 1, -1), 1);
    return 0;
}

static int c_bystander(void *p)
{
    struct cancel *c = p;
    atomic_fetch_add(&c->bystanding, 1);
    double t0 = now_ms();
    atomic_store(&c->b_sleep_res, weft_sleep(50 * MS));
    atomic_store(&c->b_sleep_ms, (long long)(now_ms() - t0));
    char ch;
    atomic_store(&c->b_read_res, weft_read(c->bpr, &ch, 1, -1));
    return 0;
}

static int c_outer(void *p)
{
    return weft_join(c_bystander, p, c_scope, p);
}

static void cancel_in_task_on(unsigned flags, int how)
{
    const char *be = backend_want(flags);
    weft_pool *pool = pool_on(2, flags);
    struct cancel c;
    cancel_init(&c);
    c.pool = pool;
    c.how = how;
    int kfds[2] = {c.pw, c.bpw};
    struct pipe_kick kick = {kfds, 2, 8};
    struct watchdog wd;
    watchdog_start(&wd, 10000, kick_pipes, &kick);
    int r = weft_run(pool, c_outer, &c);
    bool fired = watchdog_stop(&wd);
    cancel_check(&c, be, fired, how == 1 ? -EIO : -ECANCELED);
    cr_assert_eq(r, 0, "[%s] weft_run: %d", be, r);
    ASSERT_CLEAN("cancel in a task", be);
    cr_assert_eq(atomic_load(&c.b_sleep_res), 0, "[%s] a sleep outside the cancelled scope",
                 be);
    cr_assert_geq(atomic_load(&c.b_sleep_ms), 49, "[%s] weft_sleep(50 ms) took %lld ms", be,
                  atomic_load(&c.b_sleep_ms));
    cr_assert_eq(atomic_load(&c.b_read_res), 1, "[%s] a read outside the cancelled scope",
                 be);
    if (how == 0)
        cr_assert_eq(atomic_load(&c.spawn_res), -ECANCELED, "[%s] spawn after cancel", be);
    cancel_fini(&c);
    weft_pool_destroy(pool);
}

Test(reactor, cancel_from_a_task_spares_other_waits, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        cancel_in_task_on(backends[b], 0);
}

Test(reactor, failing_task_cancels_waits, .timeout = 120)
{
    for (size_t b = 0; b < NBACKENDS; b++)
        cancel_in_task_on(backends[b], 1);
}

/* ------------------------------------------------------------------------------
 * 6. Bad input gives the syscall's -errno, inside a task and outside.
 * ---------------------------------------------------------------------------- */

struct bad {
    const char *file; /* a regular file of 64 bytes */
    int ffd;          /* open on it */
    int pr;           /* a pipe with data in it */
};

static int bad_inputs(void *p)
{
    const struct bad *b = p;
    char buf[16];
    struct statx st;
    void *data = NULL;
    size_t size = 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(9);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    VCHECK(weft_read(-1, buf, sizeof(buf), 0), -EBADF);
    VCHECK(weft_read(-1, buf, sizeof(buf), -1), -EBADF);
    VCHECK(weft_write(-1, buf, sizeof(buf), 0), -EBADF);
    VCHECK(weft_read(b->ffd, NULL, 10, 0), -EFAULT);
    VCHECK(weft_open("/nonexistent/x", O_RDONLY, 0), -ENOENT);
    VCHECK(weft_statx(AT_FDCWD, "/nonexistent/x", 0, STATX_SIZE, &st), -ENOENT);
    VCHECK(weft_close(-1), -EBADF);
    VCHECK(weft_fsync(-1), -EBADF);
    VCHECK(weft_recv(b->ffd, buf, sizeof(buf), 0), -ENOTSOCK);
    VCHECK(weft_recv(b->pr, buf, sizeof(buf), 0), -ENOTSOCK);
    VCHECK(weft_send(b->ffd, buf, sizeof(buf), 0), -ENOTSOCK);
    VCHECK(weft_accept(b->ffd, NULL, NULL, 0), -ENOTSOCK);
    VCHECK(weft_connect(b->ffd, (const struct sockaddr *)&a, sizeof(a)), -ENOTSOCK);
    VCHECK(weft_read_file(NULL, &data, &size), -EINVAL);
    VCHECK(weft_read_file(b->file, NULL, &size), -EINVAL);
    VCHECK(weft_read_file(b->file, &data, NULL), -EINVAL);
    VCHECK(weft_read_file("/nonexistent/x", &data, &size), -ENOENT);
    /* The descriptors the failed calls got are untouched. */
    VCHECK(weft_read(b->ffd, buf, 4, 0), 4);
    VCHECK(memcmp(buf, "bad!", 4), 0);
    return 0;
}

static int bad_body(weft_scope *s, void *p)
{
    for (int i = 0; i < 8; i++) {
        int r = weft_spawn(s, bad_inputs, p);
        if (r)
            return r;
    }
    return 0;
}

Test(reactor, bad_input_gives_the_syscalls_errno, .timeout = 60)
{
    char *dir = make_tmpdir();
    char path[256];
    snprintf(path, sizeof(path), "%s/bad", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    char content[64];
    memset(content, 'z', sizeof(content));
    memcpy(content, "bad!", 4);
    cr_assert_eq(write(fd, content, sizeof(content)), (ssize_t)sizeof(content));
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    cr_assert_eq(write(fds[1], content, sizeof(content)), (ssize_t)sizeof(content));
    struct bad b = {path, fd, fds[0]};
    for (size_t k = 0; k < NBACKENDS; k++) {
        const char *be = backend_want(backends[k]);
        weft_pool *pool = pool_on(2, backends[k]);
        cr_assert_eq(weft_run(pool, bad_inputs, &b), 0);
        ASSERT_CLEAN("bad input in weft_run", be);
        cr_assert_eq(weft_scope_run(pool, bad_body, &b), 0);
        ASSERT_CLEAN("bad input in a scope", be);
        weft_pool_destroy(pool);
    }
    bad_inputs(&b); /* outside any task */
    ASSERT_CLEAN("bad input outside any task", "none");
    close(fds[0]);
    close(fds[1]);
    close(fd);
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------
 * 7. weft_pool_destroy while tasks are suspended: it waits for the outside caller,
 * so every task finishes and the scope returns 0.
 * ---------------------------------------------------------------------------- */

struct drain {
    weft_pool *pool;
    unsigned n;
    int pr, pw;                 /* the tasks wait for a byte each */
    _Atomic(unsigned) started, finished;
    _Atomic(int) rc;
    _Atomic(bool) destroying;
};

static int drain_task(void *p)
{
    struct drain *d = p;
    atomic_fetch_add(&d->started, 1);
    char ch;
    VCHECK(weft_read(d->pr, &ch, 1, -1), 1);
    atomic_fetch_add(&d->finished, 1);
    return 0;
}

static int drain_body(weft_scope *s, void *p)
{
    struct drain *d = p;
    for (unsigned i = 0; i < d->n; i++) {
        int r = weft_spawn(s, drain_task, d);
        if (r)
            return r;
    }
    return 0;
}

static void *drain_thread(void *p)
{
    struct drain *d = p;
    atomic_store(&d->rc, weft_scope_run(d->pool, drain_body, d));
    return NULL;
}

/* Opens the gate once the test thread is about to call weft_pool_destroy. */
static void *drain_writer(void *p)
{
    struct drain *d = p;
    while (!atomic_load(&d->destroying))
        wt_poll_pause();
    /* Workload delay: lets destroy reach its wait before the tasks can finish (the
     * assertions hold either way; only this makes the drain path likely). */
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    char ones[128];
    memset(ones, 1, sizeof(ones));
    for (unsigned left = d->n; left;) {
        ssize_t w = write(d->pw, ones, left < sizeof(ones) ? left : sizeof(ones));
        if (w <= 0)
            break;
        left -= (unsigned)w;
    }
    return NULL;
}

Test(reactor, destroy_drains_suspended_tasks, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        struct drain d = {.pool = pool_on(2, backends[b]), .n = 100};
        int fds[2];
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        d.pr = fds[0];
        d.pw = fds[1];
        atomic_init(&d.started, 0);
        atomic_init(&d.finished, 0);
        atomic_init(&d.rc, 1);
        atomic_init(&d.destroying, false);
        pthread_t th, wr;
        cr_assert_eq(pthread_create(&th, NULL, drain_thread, &d), 0);
        /* Every task started and waits in its read (nothing can finish before the
         * gate opens), and both workers went idle: all of them are suspended. */
        cr_assert(wait_count(&d.started, d.n, 10000.0 * SLOW), "[%s] %u of %u tasks "
                  "started", be, atomic_load(&d.started), d.n);
        cr_assert(wt_wait_parked(d.pool, 2, 10000), "[%s] the workers did not go idle", be);
        cr_assert_eq(atomic_load(&d.finished), 0, "[%s] a task read a byte nobody wrote", be);
        cr_assert_eq(pthread_create(&wr, NULL, drain_writer, &d), 0);
        atomic_store(&d.destroying, true);
        weft_pool_destroy(d.pool);
        unsigned after = atomic_load(&d.finished);
        cr_assert_eq(after, d.n, "[%s] weft_pool_destroy returned with %u of %u tasks "
                     "finished", be, after, d.n);
        pthread_join(th, NULL);
        pthread_join(wr, NULL);
        cr_assert_eq(atomic_load(&d.rc), 0, "[%s] scope", be);
        ASSERT_CLEAN("destroy while suspended", be);
        close(fds[0]);
        close(fds[1]);
    }
}

/* ------------------------------------------------------------------------------
 * 8. No fiber stack leaked: while 2000 tasks all wait at once each holds one stack;
 * after the workload the stacks are back in the pool's cache, which keeps at most its
 * cap of them mapped. Not all of them are free: a worker's loop itself runs on a stack of the cache
 * (DESIGN.md: "continues its loop on a fresh stack from a pool") and keeps up to
 * WEFT__SPARE_FIBERS more as spares (lib/suspend.c), so up to 1 + WEFT__SPARE_FIBERS
 * per worker stay in use while the pool lives. STACKS_PER_WORKER * workers + 1
 * workloads in a row then catch a leak of even one stack each.
 * ---------------------------------------------------------------------------- */

#define STACKS_PER_WORKER (1 + WEFT__SPARE_FIBERS)

struct gate {
    int pr, pw;
    unsigned n;
    _Atomic(unsigned) waiting, done;
    bool all_waited;
    unsigned waited;             /* waiting when the gate opened */
    weft_pool *pool;
    size_t peak_free, peak_total; /* stack counts while every task waited */
};

static int gate_task(void *p)
{
    struct gate *g = p;
    VCHECK(weft_sleep(100000), 0);
    atomic_fetch_add(&g->waiting, 1);
    char ch;
    VCHECK(weft_read(g->pr, &ch, 1, -1), 1);
    atomic_fetch_add(&g->done, 1);
    return 0;
}

static int gate_body(weft_scope *s, void *p)
{
    struct gate *g = p;
    for (unsigned i = 0; i < g->n; i++) {
        int r = weft_spawn(s, gate_task, g);
        if (r)
            return r;
    }
    /* Open the gate once every task waits at it (or after a bound, to end the test). */
    g->all_waited = wait_count(&g->waiting, g->n, 10000.0 * SLOW);
    g->waited = atomic_load(&g->waiting);
    weft__pool_stack_counts(g->pool, &g->peak_free, &g->peak_total);
    char ones[256];
    memset(ones, 1, sizeof(ones));
    for (unsigned left = g->n; left;) {
        size_t k = left < sizeof(ones) ? left : sizeof(ones);
        ssize_t w = write(g->pw, ones, k);
        if (w <= 0)
            return -EIO;
        left -= (unsigned)w;
    }
    return 0;
}

/* Stacks in use once the pool is idle: at most STACKS_PER_WORKER per worker. The
 * waiter may return while workers still put the last stacks back: allow them a
 * bounded time. */
static size_t stacks_in_use_settled(weft_pool *pool, size_t *nfree, size_t *total)
{
    size_t most = STACKS_PER_WORKER * weft_pool_threads(pool);
    double end = now_ms() + 2000.0 * SLOW;
    for (;;) {
        weft__pool_stack_counts(pool, nfree, total);
        if (*total - *nfree <= most || now_ms() > end)
            return *total - *nfree;
        weft_sleep(MS);
    }
}

static void gate_run(weft_pool *pool, const char *be, unsigned n, size_t *peak_used,
                     size_t *peak_total)
{
    struct gate g = {.n = n, .pool = pool};
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    g.pr = fds[0];
    g.pw = fds[1];
    atomic_init(&g.waiting, 0);
    atomic_init(&g.done, 0);
    int r = weft_scope_run(pool, gate_body, &g);
    cr_assert_eq(r, 0, "[%s] scope: %d", be, r);
    ASSERT_CLEAN("gate workload", be);
    cr_assert(g.all_waited, "[%s] only %u of %u tasks waited at once (a wait held its "
              "worker)", be, g.waited, n);
    cr_assert_eq(atomic_load(&g.done), n);
    *peak_used = g.peak_total - g.peak_free;
    *peak_total = g.peak_total;
    close(fds[0]);
    close(fds[1]);
}

static int empty_task(void *p)
{
    (void)p;
    return 0;
}

Test(reactor, no_stack_leaked, .timeout = 120)
{
    const unsigned threads = 2;
    const size_t most = STACKS_PER_WORKER * threads;
    const unsigned runs = (unsigned)most + 1; /* a leak of 1 per run then exceeds most */
    unsigned n = SCALED(2000);
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(threads, backends[b]);
        size_t nfree, total, used;
        weft__pool_stack_counts(pool, &nfree, &total);
        cr_assert_leq(total - nfree, most, "[%s] idle new pool: %zu of %zu stacks in use",
                      be, total - nfree, total);
        /* The cache keeps this many free stacks for good (lib/pool.c), and the rest
         * until a worker about to sleep finds them unused for a second (fiber.c). */
        const size_t cap = 16 + 4 * (size_t)threads;
        for (unsigned run = 1; run <= runs; run++) {
            size_t peak_used, peak_total;
            gate_run(pool, be, n, &peak_used, &peak_total);
            used = stacks_in_use_settled(pool, &nfree, &total);
            cr_log_info("[%s] run %u, %u waiting tasks: %zu stacks in use at the peak; "
                        "after: %zu mapped, %zu free", be, run, n, peak_used, total, nfree);
            /* While all n tasks waited, each held a stack of its own, and not more
             * than one (plus the workers' loops and spares). */
            cr_assert_geq(peak_used, n, "[%s] run %u: %zu stacks in use while %u tasks "
                          "waited", be, run, peak_used, n);
            cr_assert_leq(peak_used, n + most, "[%s] run %u: %zu stacks in use for %u "
                          "waiting tasks", be, run, peak_used, n);
            cr_assert_leq(peak_total, n + most + cap, "[%s] run %u: %zu stacks mapped for "
                          "%u waiting tasks", be, run, peak_total, n);
            /* Afterwards: a leak (a stack neither free nor held by a worker) of even
             * one per run exceeds most within the runs. */
            cr_assert_leq(used, most, "[%s] run %u: %zu of %zu stacks still in use after the "
                          "workload returned (%u workers)", be, run, used, total, threads);
            /* The burst's stacks are kept for the next one, no more than were mapped. */
            cr_assert_leq(total, peak_total + most, "[%s] run %u: %zu stacks mapped after "
                          "a peak of %zu", be, run, total, peak_total);
        }
        /* And once idle for over WEFT__STACK_TRIM_NS, the cache gives the rest back
         * to the system: a worker trims when it parks, so wake one now and then
         * (an empty task), within a bound far above the second. */
        double end = now_ms() + 1000.0 * (WEFT__STACK_TRIM_NS / 1e9) + 5000.0 * SLOW;
        do {
            weft_sleep(100 * MS);
            cr_assert_eq(weft_run(pool, empty_task, NULL), 0);
            weft_sleep(10 * MS); /* the worker parks after the task */
            weft__pool_stack_counts(pool, &nfree, &total);
        } while (nfree > cap && now_ms() < end);
        cr_assert_leq(nfree, cap, "[%s] %zu free stacks kept (cap %zu) after idling", be,
                      nfree, cap);
        weft_pool_destroy(pool);
    }
}

/* ------------------------------------------------------------------------------
 * 9. weft_yield and weft_sleep(0).
 * ---------------------------------------------------------------------------- */

struct yields {
    _Atomic(unsigned) done;
    _Atomic(unsigned long) yields;
};

static int yield_task(void *p)
{
    struct yields *y = p;
    for (int k = 0; k < 100; k++) {
        VCHECK(weft_yield(), 0);
        atomic_fetch_add(&y->yields, 1);
    }
    VCHECK(weft_sleep(0), 0);
    atomic_fetch_add(&y->done, 1);
    return 0;
}

static int yield_body(weft_scope *s, void *p)
{
    for (unsigned i = 0; i < SCALED(1000); i++) {
        int r = weft_spawn(s, yield_task, p);
        if (r)
            return r;
    }
    return 0;
}

Test(reactor, yield_1000_tasks_100_times, .timeout = 120)
{
    unsigned n = SCALED(1000);
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        struct yields y;
        atomic_init(&y.done, 0);
        atomic_init(&y.yields, 0);
        double t0 = now_ms();
        cr_assert_eq(weft_scope_run(pool, yield_body, &y), 0);
        cr_log_info("[%s] %u tasks x 100 yields: %.0f ms", be, n, now_ms() - t0);
        ASSERT_CLEAN("yields", be);
        cr_assert_eq(atomic_load(&y.done), n);
        cr_assert_eq(atomic_load(&y.yields), 100ul * n);
        /* And a task that yields with nothing else to run. */
        cr_assert_eq(weft_run(pool, yield_task, &y), 0);
        ASSERT_CLEAN("a lone yield", be);
        weft_pool_destroy(pool);
    }
    cr_assert_eq(weft_yield(), 0);   /* outside any task */
    cr_assert_eq(weft_sleep(0), 0);
}

/* Two tasks that spin on weft_yield until a third has run: on 2 workers, the third
 * runs only if a yield lets the worker run other work. */
struct spin {
    weft_scope *s;
    _Atomic(unsigned) spinning;
    _Atomic(bool) flag, gave_up;
};

static int spin_setter(void *p)
{
    struct spin *sp = p;
    atomic_store(&sp->flag, true);
    return 0;
}

static bool spin_until(struct spin *sp, bool (*cond)(struct spin *), double end)
{
    while (!cond(sp)) {
        if (now_ms() > end) {
            atomic_store(&sp->gave_up, true);
            return false;
        }
        VCHECK(weft_yield(), 0);
    }
    return true;
}

static bool both_spinning(struct spin *sp)
{
    return atomic_load(&sp->spinning) >= 2;
}

static bool flag_set(struct spin *sp)
{
    return atomic_load(&sp->flag);
}

static int spinner(void *p)
{
    struct spin *sp = *(struct spin **)p;
    int first = atomic_fetch_add(&sp->spinning, 1) == 0;
    double end = now_ms() + 5000.0 * SLOW;
    if (!spin_until(sp, both_spinning, end))
        return 0;
    if (first)
        VCHECK(weft_spawn(sp->s, spin_setter, sp), 0);
    spin_until(sp, flag_set, end);
    return 0;
}

static int spin_body(weft_scope *s, void *p)
{
    struct spin *sp = p;
    sp->s = s;
    int r = weft_spawn_copy(s, spinner, &sp, sizeof(sp));
    return r ? r : weft_spawn_copy(s, spinner, &sp, sizeof(sp));
}

Test(reactor, yield_lets_other_tasks_run, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        struct spin sp;
        memset(&sp, 0, sizeof(sp));
        atomic_init(&sp.spinning, 0);
        atomic_init(&sp.flag, false);
        atomic_init(&sp.gave_up, false);
        cr_assert_eq(weft_scope_run(pool, spin_body, &sp), 0);
        ASSERT_CLEAN("yield spinners", be);
        cr_assert(!atomic_load(&sp.gave_up) && atomic_load(&sp.flag),
                  "[%s] tasks spinning on weft_yield kept a ready task from running for "
                  "%d s", be, 5 * SLOW);
        weft_pool_destroy(pool);
    }
}

/* ------------------------------------------------------------------------------
 * 10. weft_pool_stats counts I/O calls made inside tasks.
 * ---------------------------------------------------------------------------- */

#define IO_CALLS_PER_TASK 6

static int io_task(void *p)
{
    const char *path = p;
    char buf[32];
    struct statx st;
    int fd = weft_open(path, O_RDONLY, 0);                       /* 1 */
    VCHECK(fd >= 0, 1);
    VCHECK(weft_read(fd, buf, sizeof(buf), 0), sizeof(buf));     /* 2 */
    VCHECK(weft_read(fd, buf, sizeof(buf), 4096), 0);            /* 3 */
    VCHECK(weft_statx(AT_FDCWD, path, 0, STATX_SIZE, &st), 0);   /* 4 */
    VCHECK(st.stx_size, 64);
    VCHECK(weft_read(-1, buf, 1, 0), -EBADF);                    /* 5: failed calls too */
    VCHECK(weft_close(fd), 0);                                   /* 6 */
    return 0;
}

static int io_body(weft_scope *s, void *p)
{
    for (unsigned i = 0; i < SCALED(500); i++) {
        int r = weft_spawn(s, io_task, p);
        if (r)
            return r;
    }
    return 0;
}

Test(reactor, io_ops_counted, .timeout = 60)
{
    char *dir = make_tmpdir();
    char path[256];
    snprintf(path, sizeof(path), "%s/io", dir);
    cr_assert_eq(write_file(path, 64, 3), 0);
    unsigned n = SCALED(500);
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        weft_stats s0, s1;
        weft_pool_stats(pool, &s0);
        cr_assert_eq(weft_scope_run(pool, io_body, path), 0);
        cr_assert_eq(weft_run(pool, io_task, path), 0);
        ASSERT_CLEAN("io_ops workload", be);
        weft_pool_stats(pool, &s1);
        uint64_t calls = (uint64_t)(n + 1) * IO_CALLS_PER_TASK;
        cr_log_info("[%s] io_ops %llu -> %llu for %llu calls", be,
                    (unsigned long long)s0.io_ops, (unsigned long long)s1.io_ops,
                    (unsigned long long)calls);
        cr_assert_geq(s1.io_ops - s0.io_ops, calls, "[%s] io_ops grew by %llu for %llu I/O "
                      "calls", be, (unsigned long long)(s1.io_ops - s0.io_ops),
                      (unsigned long long)calls);
        weft_pool_destroy(pool);
    }
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------
 * 12. Many waiting loop items on small stacks: a loop splits after an item waited,
 * and joins and waits ran the halves on top of themselves, so the stack grew with
 * the waits (weft-hash -j1 crashed in weft_statx). Waits now stop helping and
 * suspend when their stack runs low (lib/suspend.c), and loops split after a wait
 * only when their worker has nothing queued (lib/par.c). Without the first, and
 * with every wait splitting, this test crashed (checked by hand).
 * ---------------------------------------------------------------------------- */

struct deep {
    _Atomic(unsigned) done;
};

static int deep_item(void *ctx, size_t i, void *slot)
{
    struct deep *d = ctx;
    VCHECK(weft_sleep(1000), 0);     /* a timer: always a real suspension */
    *(size_t *)slot = i * 3;
    atomic_fetch_add(&d->done, 1);
    return 0;
}

Test(reactor, waiting_loop_items_on_small_stacks, .timeout = 120)
{
    const size_t n = SCALED(5000);
    size_t *out = malloc(n * sizeof(*out));
    cr_assert_not_null(out);
    for (unsigned threads = 1; threads <= 2; threads++) {
        for (size_t b = 0; b < NBACKENDS; b++) {
            const char *be = backend_want(backends[b]);
            weft_pool *p = NULL;
            /* The smallest stacks the pool takes (WEFT__STACK_MIN, 16 KiB; more
             * under sanitizers, whose frames are bigger). */
            weft_pool_options o = {.threads = threads, .flags = backends[b],
                                   .stack_size = 16384 * (size_t)SLOW};
            cr_assert_eq(weft_pool_create(&p, &o), 0);
            struct deep d;
            atomic_init(&d.done, 0);
            memset(out, 0, n * sizeof(*out));
            int r = weft_par_collect(p, n, out, sizeof(*out), deep_item, &d);
            cr_assert_eq(r, 0, "[%s, %u workers] par_collect: %d", be, threads, r);
            ASSERT_CLEAN("deep waits", be);
            cr_assert_eq(atomic_load(&d.done), n);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(out[i], i * 3, "[%s] out[%zu]", be, i);
            weft_pool_destroy(p);
        }
    }
    free(out);
}

/* ------------------------------------------------------------------------------
 * 13. The plain syscall first (lib/io.c, try_cached): a read that RWF_NOWAIT cuts
 * short where the page cache ends must not pass for EOF, on either backend. Files
 * whose sizes sit on and around page and first-read (64 KiB) boundaries are read
 * warm, cold (posix_fadvise(POSIX_FADV_DONTNEED) after fdatasync: the NOWAIT read
 * says EAGAIN and the backend reads) and partly cached (pages evicted from 4 KiB and
 * from 64 KiB on, and every other 16 KiB: a NOWAIT read stops on a page boundary
 * short of EOF). Every weft_read asking for more than the file holds must return
 * exactly what is left (weft.h: a short read of a regular file is its end), and
 * weft_read_file the whole file. Where the file system keeps no page cache to evict
 * (tmpfs), the cold and partial cases are warm ones: the checks still hold.
 * ---------------------------------------------------------------------------- */

enum { CACHE_WARM, CACHE_COLD, CACHE_PART_4K, CACHE_PART_64K, CACHE_HOLES };

static void set_cache(const char *path, size_t size, int how)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    VCHECK(fd >= 0, 1);
    if (fd < 0)
        return;
    VCHECK(fdatasync(fd), 0); /* dirty pages are not evicted */
    switch (how) {
    case CACHE_WARM: {
        char b[4096];
        for (off_t off = 0; off < (off_t)size; off += (off_t)sizeof(b))
            VCHECK(pread(fd, b, sizeof(b), off) > 0, 1);
        break;
    }
    case CACHE_COLD:
        VCHECK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
        break;
    case CACHE_PART_4K:
        VCHECK(posix_fadvise(fd, 4096, 0, POSIX_FADV_DONTNEED), 0);
        break;
    case CACHE_PART_64K:
        VCHECK(posix_fadvise(fd, 65536, 0, POSIX_FADV_DONTNEED), 0);
        break;
    case CACHE_HOLES:
        for (off_t off = 16384; off < (off_t)size; off += 32768)
            VCHECK(posix_fadvise(fd, off, 16384, POSIX_FADV_DONTNEED), 0);
        break;
    }
    close(fd);
}

struct cached_case {
    const char *path;
    size_t size;
    unsigned seed;
    int how;
};

static void check_cached_case(const struct cached_case *c)
{
    char *want = malloc(c->size + 1);
    fill(want, c->size, c->seed);

    set_cache(c->path, c->size, c->how);
    void *data = NULL;
    size_t size = 0;
    VCHECK(weft_read_file(c->path, &data, &size), 0);
    VCHECK(size, c->size);
    if (data && size == c->size) {
        VCHECK(memcmp(data, want, size), 0);
        VCHECK(((char *)data)[size], 0);
    }
    free(data);

    size_t cap = c->size + 4097;
    char *got = malloc(cap);
    int fd = weft_open(c->path, O_RDONLY, 0);
    VCHECK(fd >= 0, 1);
    if (fd >= 0 && got) {
        /* One read for more than the whole file: all of it, at once. */
        set_cache(c->path, c->size, c->how);
        VCHECK(weft_read(fd, got, cap, 0), c->size);
        VCHECK(memcmp(got, want, c->size), 0);
        /* From an offset inside the file, at an explicit offset and at the file
         * position: exactly what is left. */
        size_t mid = c->size / 3;
        set_cache(c->path, c->size, c->how);
        VCHECK(weft_read(fd, got, cap, (off_t)mid), c->size - mid);
        VCHECK(memcmp(got, want + mid, c->size - mid), 0);
        set_cache(c->path, c->size, c->how);
        VCHECK(lseek(fd, (off_t)mid, SEEK_SET), (long long)mid);
        VCHECK(weft_read(fd, got, cap, -1), c->size - mid);
        VCHECK(memcmp(got, want + mid, c->size - mid), 0);
        VCHECK(lseek(fd, 0, SEEK_CUR), (long long)c->size);
        VCHECK(weft_read(fd, got, cap, -1), 0);
        /* Reads of exactly a page, up to EOF: each full but the last. */
        set_cache(c->path, c->size, c->how);
        size_t off = 0;
        for (;;) {
            ssize_t r = weft_read(fd, got + off, 4096, (off_t)off);
            size_t left = c->size - off;
            VCHECK(r, left < 4096 ? left : 4096);
            if (r <= 0 || (size_t)r < 4096)
                break;
            off += (size_t)r;
        }
        VCHECK(memcmp(got, want, c->size), 0);
        VCHECK(weft_close(fd), 0);
    }
    free(got);
    free(want);
}

static int cached_task(void *p)
{
    check_cached_case(p);
    return 0;
}

static int cached_item(void *ctx, size_t i, void *slot)
{
    const struct cached_case *cs = ctx;
    check_cached_case(&cs[i]);
    *(int *)slot = 1;
    return 0;
}

Test(reactor, nowait_reads_short_of_the_cache_are_not_eof, .timeout = 120)
{
    static const size_t sizes[] = {4095, 4096, 8192, 12289, 65535, 65536, 65537,
                                   3 * 65536, 3 * 65536 + 5, (1u << 20)};
    const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
    const int nhow = CACHE_HOLES + 1;
    char *dir = make_tmpdir();
    size_t n = nsizes * (size_t)nhow;
    struct cached_case *cs = calloc(n, sizeof(*cs));
    char (*paths)[256] = calloc(nsizes, sizeof(*paths));
    for (size_t k = 0; k < nsizes; k++) {
        snprintf(paths[k], sizeof(paths[k]), "%s/c%zu", dir, k);
        cr_assert_eq(write_file(paths[k], sizes[k], (unsigned)k + 100), 0);
        for (int h = 0; h < nhow; h++)
            cs[k * (size_t)nhow + (size_t)h] =
                (struct cached_case){paths[k], sizes[k], (unsigned)k + 100, h};
    }
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(2, backends[b]);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(weft_run(pool, cached_task, &cs[i]), 0);
            ASSERT_CLEAN("cached and cold reads", be);
        }
        /* Concurrently, each case on its own (the files are shared: a case may see
         * another's pages cached, which a correct read does not care about). */
        int *slots = calloc(n, sizeof(int));
        cr_assert_eq(weft_par_collect(pool, n, slots, sizeof(int), cached_item, cs), 0);
        ASSERT_CLEAN("cached and cold reads in par_collect", be);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(slots[i], 1);
        free(slots);
        weft_pool_destroy(pool);
    }
    for (size_t i = 0; i < n; i += (size_t)nhow)
        check_cached_case(&cs[i + CACHE_COLD]); /* outside any task */
    ASSERT_CLEAN("cold reads outside a task", "none");
    for (size_t k = 0; k < nsizes; k++)
        unlink(paths[k]);
    free(paths);
    free(cs);
    rmdir(dir);
    free(dir);
}

/* Files that are not in the page cache's terms: /proc (regular, size 0, no NOWAIT
 * reads, short reads that are not the end) and /dev/null (a seekable character
 * device). weft_read_file returns what a plain read loop to 0 returns. */
static int special_task(void *p)
{
    (void)p;
    char plain[8192];
    int fd = open("/proc/version", O_RDONLY | O_CLOEXEC);
    VCHECK(fd >= 0, 1);
    ssize_t n = fd >= 0 ? read(fd, plain, sizeof(plain)) : -1;
    if (fd >= 0)
        close(fd);
    VCHECK(n > 0, 1);
    void *data = NULL;
    size_t size = 0;
    VCHECK(weft_read_file("/proc/version", &data, &size), 0);
    VCHECK(size, n);
    if (data && n > 0 && size == (size_t)n)
        VCHECK(memcmp(data, plain, size), 0);
    free(data);
    data = NULL;
    VCHECK(weft_read_file("/dev/null", &data, &size), 0);
    VCHECK(size, 0);
    free(data);
    /* /proc/self/smaps returns a few mappings per read: a short read there is not
     * its end. Its contents change as the process maps memory, so compare sizes
     * only: all of it is more than one read's worth. */
    fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char *one = malloc(65536);
        ssize_t first = pread(fd, one, 65536, 0);
        size_t total = 0;
        for (ssize_t k; (k = pread(fd, one, 65536, (off_t)total)) > 0;)
            total += (size_t)k;
        close(fd);
        free(one);
        data = NULL;
        VCHECK(weft_read_file("/proc/self/smaps", &data, &size), 0);
        if (first > 0 && total > (size_t)first + 4096)
            VCHECK(size > (size_t)first, 1); /* got: truncated at the first read */
        free(data);
    }
    return 0;
}

Test(reactor, read_file_of_proc_and_devices, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(1, backends[b]);
        cr_assert_eq(weft_run(pool, special_task, NULL), 0);
        ASSERT_CLEAN("/proc and /dev files", be);
        weft_pool_destroy(pool);
    }
    special_task(NULL);
    ASSERT_CLEAN("/proc and /dev files outside a task", "none");
}

/* weft_read_file cancelled while its read waits: it returns -ECANCELED (or its
 * result, if the read won the race) and closes the file it opened. (weft_close
 * returns -ECANCELED in a cancelled scope without closing: weft_read_file used it
 * and leaked the descriptor.) The file is evicted first, so the read waits for the
 * disk where the file system has a page cache to evict. */
static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

struct cancel_rf {
    const char *path;
    int r;
};

static int cancel_rf_reader(void *p)
{
    struct cancel_rf *c = p;
    void *data = NULL;
    size_t size = 0;
    c->r = weft_read_file(c->path, &data, &size);
    free(data);
    return 0;
}

static int cancel_rf_body(weft_scope *s, void *p)
{
    int r = weft_spawn(s, cancel_rf_reader, p);
    if (r)
        return r;
    VCHECK(weft_yield(), 0); /* the reader starts, and waits for the disk */
    weft_scope_cancel(s, -ECANCELED);
    return 0;
}

static int cancel_rf_outer(void *p)
{
    weft_scope_run(NULL, cancel_rf_body, p);
    return 0;
}

Test(reactor, cancelled_read_file_closes_its_file, .timeout = 60)
{
    char *dir = make_tmpdir();
    char path[256];
    snprintf(path, sizeof(path), "%s/cancel", dir);
    cr_assert_eq(write_file(path, 4u << 20, 7), 0);
    for (size_t b = 0; b < NBACKENDS; b++) {
        const char *be = backend_want(backends[b]);
        weft_pool *pool = pool_on(1, backends[b]);
        int before = count_fds();
        for (int k = 0; k < 8; k++) {
            set_cache(path, 4u << 20, CACHE_COLD);
            struct cancel_rf c = {path, 1};
            cr_assert_eq(weft_run(pool, cancel_rf_outer, &c), 0);
            cr_assert(c.r == 0 || c.r == -ECANCELED, "[%s] weft_read_file: %d", be, c.r);
        }
        ASSERT_CLEAN("cancelled weft_read_file", be);
        cr_assert_eq(count_fds(), before, "[%s] descriptors leaked", be);
        weft_pool_destroy(pool);
    }
    unlink(path);
    rmdir(dir);
    free(dir);
}
