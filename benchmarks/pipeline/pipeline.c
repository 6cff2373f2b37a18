/* SPDX-License-Identifier: MIT */
/*
 * pipeline: a build tool's "walk, hash, write the manifest" phase, three ways:
 *
 *   serial    one thread: nftw lists the tree, then each file is read (blocking),
 *             hashed and its manifest line ("hash path\n") appended to the output,
 *             written in 64 KiB chunks;
 *   collect   nftw lists the tree, weft_par_collect reads (weft_read_file) and hashes
 *             every file into out[], then one writer formats and writes the lines;
 *   pipeline  three stages at once, with bounded memory: a walker task (nftw) sends
 *             each path into a channel of --cap (default 64) entries; 2 x workers
 *             hasher tasks receive paths, read (weft_read_file) and hash, and send
 *             (path, hash) into a second channel of --cap entries; a writer task
 *             receives them and writes the lines (weft_write, 64 KiB chunks). Closing
 *             ends each stage: the walker closes the first channel when the walk is
 *             done, the last hasher the second.
 *
 * The clock runs from the start of the walk to the last write, for every variant
 * (the walk is part of the phase). Output goes to an unlinked file in $TMPDIR (or
 * /tmp), truncated before each run. Every run's manifest is checked against the
 * serial one: the same number of lines and bytes and the same order-independent sum
 * over (hash xor hash of the path); a mismatch stops the benchmark with status 1.
 * weft variants on pools of 1 and 2 workers; one untimed warm-up round (the page
 * cache is warm for everyone), then --reps rounds (default 7) of every configuration
 * in a fixed order; medians and the ratio serial median / median (> 1: faster).
 *
 * Usage: pipeline [--reps N] [--root DIR] [--cap N]
 * Output: RESULT pipeline impl=... workers=... files=... median_ns=... ratio_vs_serial=...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

static const char *root = "/usr/include";
static size_t cap = 64;
static int out_fd = -1;

/* The hash is filehash's: bench_hash_bytes (../common/bench.c). */

/* What a run produced, to compare with the serial run. */
struct summary {
    size_t lines;
    uint64_t bytes, sum;
};

/* The manifest writer: lines into a 64 KiB buffer, written when full (with write,
 * or weft_write from a task: fnwrite). */
struct out {
    char buf[64 * 1024];
    size_t len;
    off_t off;
    bool task;
    int err;
    struct summary s;
};

static void out_flush(struct out *o)
{
    size_t done = 0;
    while (done < o->len && !o->err) {
        ssize_t r = o->task ? weft_write(out_fd, o->buf + done, o->len - done, o->off)
                            : pwrite(out_fd, o->buf + done, o->len - done, o->off);
        if (r < 0)
            o->err = o->task ? (int)r : -errno;
        else {
            done += (size_t)r;
            o->off += r;
        }
    }
    o->len = 0;
}

static void out_line(struct out *o, const char *path, uint64_t h)
{
    if (sizeof(o->buf) - o->len < strlen(path) + 20)
        out_flush(o);
    int n = snprintf(o->buf + o->len, sizeof(o->buf) - o->len, "%016" PRIx64 " %s\n", h, path);
    if (n > 0 && (size_t)n < sizeof(o->buf) - o->len) {
        o->len += (size_t)n;
        o->s.bytes += (uint64_t)n;
    }
    o->s.lines++;
    o->s.sum += h ^ bench_hash_bytes(path, strlen(path));
}

static int out_begin(struct out *o, bool task)
{
    memset(&o->s, 0, sizeof(o->s));
    o->len = 0;
    o->off = 0;
    o->task = task;
    o->err = 0;
    return ftruncate(out_fd, 0) == 0 ? 0 : -errno;
}

/* ---- the walk: nftw has no user pointer, so its sink is a global ------------------- */

static int (*walk_sink)(const char *path);
static int walk_err;

static int walk_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    int err = walk_sink(path);
    if (err) {
        walk_err = err;
        return 1;
    }
    return 0;
}

static int walk(int (*sink)(const char *path))
{
    walk_sink = sink;
    walk_err = 0;
    int r = nftw(root, walk_cb, 64, FTW_PHYS);
    if (walk_err)
        return walk_err;
    return r == 0 ? 0 : -EIO;
}

/* The collected list (serial, collect). */
static char **paths;
static size_t npaths, cap_paths;

static int list_add(const char *path)
{
    if (npaths == cap_paths) {
        size_t ncap = cap_paths ? 2 * cap_paths : 4096;
        char **np = realloc(paths, ncap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        paths = np;
        cap_paths = ncap;
    }
    if (!(paths[npaths] = strdup(path)))
        return -ENOMEM;
    npaths++;
    return 0;
}

static void list_free(void)
{
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    npaths = 0;
}

/* A file's hash; 0 if it cannot be read (every variant the same way). */
static uint64_t hash_file_blocking(const char *path, char **buf, size_t *bcap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    for (;;) {
        if (len == *bcap) {
            size_t ncap = *bcap ? 2 * *bcap : 1 << 20;
            char *nb = realloc(*buf, ncap);
            if (!nb) {
                close(fd);
                return 0;
            }
            *buf = nb;
            *bcap = ncap;
        }
        ssize_t r = read(fd, *buf + len, *bcap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return 0;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    return bench_hash_bytes(*buf, len);
}

static uint64_t hash_file_weft(const char *path)
{
    void *data;
    size_t size;
    if (weft_read_file(path, &data, &size) != 0)
        return 0;
    uint64_t h = bench_hash_bytes(data, size);
    free(data);
    return h;
}

/* ---- serial ----------------------------------------------------------------------- */

static struct out out;
static char *serial_buf;
static size_t serial_cap;

static int run_serial(weft_pool *pool, struct summary *s)
{
    (void)pool;
    int err = out_begin(&out, false);
    if (!err)
        err = walk(list_add);
    for (size_t i = 0; !err && i < npaths; i++)
        out_line(&out, paths[i], hash_file_blocking(paths[i], &serial_buf, &serial_cap));
    out_flush(&out);
    list_free();
    *s = out.s;
    return err ? err : out.err;
}

/* ---- collect ---------------------------------------------------------------------- */

static int collect_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    *(uint64_t *)slot = hash_file_weft(paths[i]);
    return 0;
}

static int run_collect(weft_pool *pool, struct summary *s)
{
    int err = out_begin(&out, false);
    if (!err)
        err = walk(list_add);
    uint64_t *h = NULL;
    if (!err && !(h = malloc((npaths ? npaths : 1) * sizeof(*h))))
        err = -ENOMEM;
    if (!err)
        err = weft_par_collect(pool, npaths, h, sizeof(*h), collect_item, NULL);
    for (size_t i = 0; !err && i < npaths; i++)
        out_line(&out, paths[i], h[i]);
    out_flush(&out);
    free(h);
    list_free();
    *s = out.s;
    return err ? err : out.err;
}

/* ---- pipeline ---------------------------------------------------------------------- */

struct result {
    char *path;
    uint64_t hash;
};

struct pipe {
    weft_chan *paths, *results;
    unsigned hashers;
    _Atomic(unsigned) hashers_left;
};

static struct pipe *the_pipe; /* for walk_send: nftw passes no pointer */

static int walk_send(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    int err = weft_chan_send(the_pipe->paths, &p);
    if (err)
        free(p);
    return err;
}

static int walker(void *arg)
{
    struct pipe *p = arg;
    int err = walk(walk_send);
    weft_chan_close(p->paths);
    return err;
}

static int hasher(void *arg)
{
    struct pipe *p = arg;
    char *path;
    int err;
    while ((err = weft_chan_recv(p->paths, &path)) == 0) {
        struct result r = {path, hash_file_weft(path)};
        if ((err = weft_chan_send(p->results, &r))) {
            free(path);
            break;
        }
    }
    if (atomic_fetch_sub_explicit(&p->hashers_left, 1, memory_order_relaxed) == 1)
        weft_chan_close(p->results);
    return err == -EPIPE ? 0 : err;
}

static int writer(void *arg)
{
    struct pipe *p = arg;
    struct result r;
    int err;
    while ((err = weft_chan_recv(p->results, &r)) == 0) {
        out_line(&out, r.path, r.hash);
        free(r.path);
    }
    out_flush(&out);
    return out.err ? out.err : err == -EPIPE ? 0 : err;
}

static int pipe_body(weft_scope *s, void *arg)
{
    struct pipe *p = arg;
    int err = weft_spawn(s, writer, p);
    for (unsigned i = 0; !err && i < p->hashers; i++)
        err = weft_spawn(s, hasher, p);
    if (!err)
        err = weft_spawn(s, walker, p);
    return err;
}

static int run_pipeline(weft_pool *pool, struct summary *s)
{
    struct pipe p = {.hashers = 2 * weft_pool_threads(pool)};
    atomic_init(&p.hashers_left, p.hashers);
    int err = out_begin(&out, true);
    if (err)
        return err;
    if ((err = weft_chan_create(&p.paths, cap, sizeof(char *))))
        return err;
    if ((err = weft_chan_create(&p.results, cap, sizeof(struct result)))) {
        weft_chan_destroy(p.paths);
        return err;
    }
    the_pipe = &p;
    err = weft_scope_run(pool, pipe_body, &p);
    /* On an error, whatever is left in the channels holds paths to free. */
    weft_chan_close(p.paths);
    weft_chan_close(p.results);
    char *path;
    struct result r;
    while (weft_chan_recv(p.paths, &path) == 0)
        free(path);
    while (weft_chan_recv(p.results, &r) == 0)
        free(r.path);
    weft_chan_destroy(p.paths);
    weft_chan_destroy(p.results);
    *s = out.s;
    return err;
}

/* ---- driver -------------------------------------------------------------------------- */

struct config {
    const char *name;
    int (*run)(weft_pool *pool, struct summary *s);
    unsigned workers;
    weft_pool *pool;
    double *t;
    double median;
};

static void usage(void)
{
    fprintf(stderr, "usage: pipeline [--reps N] [--root DIR] [--cap N]\n");
}

int main(int argc, char **argv)
{
    int reps = 7;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc)
            reps = atoi(argv[++a]);
        else if (strcmp(argv[a], "--root") == 0 && a + 1 < argc)
            root = argv[++a];
        else if (strcmp(argv[a], "--cap") == 0 && a + 1 < argc)
            cap = (size_t)strtoul(argv[++a], NULL, 10);
        else {
            usage();
            return 2;
        }
    }
    if (reps < 1 || cap < 1) {
        usage();
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    out_fd = open(tmp && *tmp ? tmp : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (out_fd < 0) {
        fprintf(stderr, "pipeline: cannot create a temporary file: %s\n", strerror(errno));
        return 1;
    }
    weft_pool *pools[2];
    for (unsigned w = 0; w < 2; w++) {
        weft_pool_options o = {.threads = w + 1};
        if (weft_pool_create(&pools[w], &o) != 0) {
            fprintf(stderr, "pipeline: cannot create a pool of %u\n", w + 1);
            return 1;
        }
    }
    struct config cfg[] = {
        {"serial", run_serial, 1, NULL, NULL, 0},
        {"collect", run_collect, 1, pools[0], NULL, 0},
        {"collect", run_collect, 2, pools[1], NULL, 0},
        {"pipeline", run_pipeline, 1, pools[0], NULL, 0},
        {"pipeline", run_pipeline, 2, pools[1], NULL, 0},
    };
    const int ncfg = (int)(sizeof(cfg) / sizeof(cfg[0]));
    for (int c = 0; c < ncfg; c++)
        if (!(cfg[c].t = calloc((size_t)reps, sizeof(double))))
            return 1;

    struct summary ref;
    if (run_serial(NULL, &ref) != 0 || ref.lines == 0) {
        fprintf(stderr, "pipeline: no readable files under %s\n", root);
        return 1;
    }
    printf("# pipeline: %zu files under %s, manifest %.1f KiB; channels of %zu; %ld CPUs "
           "online; %d rounds; ratio_vs_serial = serial median / median (> 1: faster)\n",
           ref.lines, root, (double)ref.bytes / 1024, cap, sysconf(_SC_NPROCESSORS_ONLN),
           reps);
    fflush(stdout);
    for (int r = -1; r < reps; r++) { /* round -1: untimed warm-up */
        for (int c = 0; c < ncfg; c++) {
            struct summary s;
            uint64_t t0 = bench_now_ns();
            int err = cfg[c].run(cfg[c].pool, &s);
            uint64_t dt = bench_now_ns() - t0;
            if (err) {
                fprintf(stderr, "pipeline: %s on %u workers: %s\n", cfg[c].name,
                        cfg[c].workers, strerror(-err));
                return 1;
            }
            if (s.lines != ref.lines || s.bytes != ref.bytes || s.sum != ref.sum) {
                fprintf(stderr, "pipeline: %s on %u workers: manifest differs from the "
                                "serial one (%zu lines, %" PRIu64 " bytes vs %zu, %" PRIu64
                                ")\n", cfg[c].name, cfg[c].workers, s.lines, s.bytes,
                        ref.lines, ref.bytes);
                return 1;
            }
            if (r >= 0)
                cfg[c].t[r] = (double)dt;
        }
    }
    for (unsigned w = 0; w < 2; w++)
        weft_pool_destroy(pools[w]);
    for (int c = 0; c < ncfg; c++)
        cfg[c].median = bench_median(cfg[c].t, (size_t)reps);
    double serial = cfg[0].median;
    for (int c = 0; c < ncfg; c++)
        printf("RESULT pipeline impl=%s workers=%u files=%zu cap=%zu median_ns=%.0f "
               "ratio_vs_serial=%.3f reps=%d\n", cfg[c].name, cfg[c].workers, ref.lines,
               cap, cfg[c].median, serial / cfg[c].median, reps);
    printf("\npipeline: walk + read + hash + write a manifest of %zu files, median of %d\n",
           ref.lines, reps);
    printf("%-10s %-3s %12s %10s\n", "variant", "w", "median ms", "vs serial");
    for (int c = 0; c < ncfg; c++)
        printf("%-10s %-3u %12.2f %9.2fx\n", cfg[c].name, cfg[c].workers,
               cfg[c].median / 1e6, serial / cfg[c].median);
    close(out_fd);
    free(serial_buf);
    free(paths);
    return 0;
}
