/* SPDX-License-Identifier: MIT */
/*
 * filehash: read and hash every regular file under a tree (default /usr/include),
 * the hashing phase of a build tool, three ways:
 *
 *   serial          one thread: open/read/close into one reused buffer, then hash;
 *   blocking_read   weft_par_collect, each item doing the same blocking
 *                   open/read/close (into a per-thread reused buffer): a worker that
 *                   waits for the kernel waits;
 *   weft_read_file  weft_par_collect, each item calling weft_read_file (the task
 *                   waits, its worker runs other items), hashing and freeing the
 *                   buffer.
 *
 * The two weft variants run on pools of 1 and 2 workers, each with io_uring (pool
 * flags 0) and with the blocking backend (WEFT_POOL_NO_URING): 8 weft
 * configurations and the serial loop, all in one run.
 *
 * The file list comes from nftw (FTW_PHYS: symlinks are not followed) and is
 * sorted, so item i is always the same file. One untimed pass reads every file
 * first (the page cache is warm for every variant) and records the reference
 * hashes; files that cannot be read are dropped from the list with a note. After
 * one untimed call per weft configuration, --reps rounds (default 7; meson and
 * benchmarks/run pass 11) each run every configuration once, in a fixed order (so
 * all of them share any drift of the machine); every call's out[] must equal
 * the reference, or the benchmark stops with exit status 1. Each configuration's
 * median is reported with the ratio serial median / its median (> 1: faster).
 *
 * The hash: FNV-1a over 8-byte little-endian words (the tail zero-padded), the
 * length folded in, then a final avalanche (murmur3's fmix64). Cheap (one multiply
 * per 8 bytes) so the I/O path, not the hash, is what the variants differ in.
 *
 * DESIGN.md's target: weft_read_file on 2 workers with io_uring at least 1.9x the
 * serial loop, and faster than blocking_read on the same pool.
 *
 * Usage: filehash [--reps N] [--root DIR]
 * Output: one line per configuration,
 *   RESULT filehash impl=weft_read_file backend=uring workers=2 files=... bytes=...
 *          median_ns=... ratio_vs_serial=... reps=...
 * then a table of medians and ratios and the target's verdict.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

/* ------------------------------------------------------------------------------
 * The file list
 * ---------------------------------------------------------------------------- */

static char **paths;
static size_t npaths, cap_paths;

static int add_path(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    if (npaths == cap_paths) {
        size_t ncap = cap_paths ? 2 * cap_paths : 4096;
        char **np = realloc(paths, ncap * sizeof(*np));
        if (!np)
            return -1;
        paths = np;
        cap_paths = ncap;
    }
    if (!(paths[npaths] = strdup(path)))
        return -1;
    npaths++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The hash: bench_hash_bytes (../common/bench.c), the same for every variant. */

/* ------------------------------------------------------------------------------
 * Blocking read of a whole file into a growable buffer
 * ---------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t cap;
};

/* Reads path into b (grown as needed); returns the length, or -errno. */
static ssize_t read_blocking(const char *path, struct buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    for (;;) {
        if (len == b->cap) {
            size_t ncap = b->cap ? 2 * b->cap : 1 << 20;
            char *np = realloc(b->p, ncap);
            if (!np) {
                close(fd);
                return -ENOMEM;
            }
            b->p = np;
            b->cap = ncap;
        }
        ssize_t r = read(fd, b->p + len, b->cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int err = -errno;
            close(fd);
            return err;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    return (ssize_t)len;
}

/* blocking_read's per-thread buffers. An item never suspends (it makes plain
 * syscalls), so a thread-local buffer stays its own for the whole item. They are
 * listed here to be freed at the end. */
static _Thread_local struct buf *tls_buf;
static struct buf **all_bufs;
static size_t nbufs;
static pthread_mutex_t bufs_lock = PTHREAD_MUTEX_INITIALIZER;

static struct buf *thread_buf(void)
{
    if (tls_buf)
        return tls_buf;
    struct buf *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    pthread_mutex_lock(&bufs_lock);
    struct buf **nb = realloc(all_bufs, (nbufs + 1) * sizeof(*nb));
    if (nb) {
        all_bufs = nb;
        all_bufs[nbufs++] = b;
    }
    pthread_mutex_unlock(&bufs_lock);
    if (!nb) {
        free(b);
        return NULL;
    }
    return tls_buf = b;
}

/* ------------------------------------------------------------------------------
 * The variants
 * ---------------------------------------------------------------------------- */

static struct buf serial_buf;

static int run_serial(uint64_t *out)
{
    for (size_t i = 0; i < npaths; i++) {
        ssize_t len = read_blocking(paths[i], &serial_buf);
        if (len < 0)
            return (int)len;
        out[i] = bench_hash_bytes(serial_buf.p, (size_t)len);
    }
    return 0;
}

static int item_blocking(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    struct buf *b = thread_buf();
    if (!b)
        return -ENOMEM;
    ssize_t len = read_blocking(paths[i], b);
    if (len < 0)
        return (int)len;
    *(uint64_t *)slot = bench_hash_bytes(b->p, (size_t)len);
    return 0;
}

static int item_read_file(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    void *data;
    size_t size;
    int err = weft_read_file(paths[i], &data, &size);
    if (err)
        return err;
    *(uint64_t *)slot = bench_hash_bytes(data, size);
    free(data);
    return 0;
}

enum { SERIAL, BLOCKING_READ, READ_FILE };
static const char *const impl_names[] = {"serial", "blocking_read", "weft_read_file"};

struct config {
    int impl;
    const char *backend; /* "uring", "blocking", or "-" for serial */
    unsigned workers;
    weft_pool *pool;
    double *t;           /* one time per round, ns */
    double median;
};

static int run_config(const struct config *c, uint64_t *out)
{
    switch (c->impl) {
    case SERIAL:
        return run_serial(out);
    case BLOCKING_READ:
        return weft_par_collect(c->pool, npaths, out, sizeof(*out), item_blocking, NULL);
    default:
        return weft_par_collect(c->pool, npaths, out, sizeof(*out), item_read_file, NULL);
    }
}

static void fmt_time(char *s, size_t len, double ns)
{
    if (ns < 1e6)
        snprintf(s, len, "%.1f us", ns / 1e3);
    else if (ns < 1e9)
        snprintf(s, len, "%.2f ms", ns / 1e6);
    else
        snprintf(s, len, "%.3f s", ns / 1e9);
}

static void usage(void)
{
    fprintf(stderr, "usage: filehash [--reps N] [--root DIR]\n");
}

int main(int argc, char **argv)
{
    int reps = 7;
    const char *root = "/usr/include";
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) {
            reps = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--root") == 0 && a + 1 < argc) {
            root = argv[++a];
        } else {
            usage();
            return 2;
        }
    }
    if (reps < 1) {
        usage();
        return 2;
    }

    if (nftw(root, add_path, 64, FTW_PHYS) != 0) {
        fprintf(stderr, "filehash: cannot list %s: %s\n", root, strerror(errno));
        return 1;
    }
    qsort(paths, npaths, sizeof(*paths), cmp_str);

    /* Warm the page cache and record the reference hashes; drop unreadable files. */
    uint64_t *ref = malloc((npaths ? npaths : 1) * sizeof(*ref));
    uint64_t *out = malloc((npaths ? npaths : 1) * sizeof(*out));
    if (!ref || !out)
        return 1;
    size_t kept = 0, dropped = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < npaths; i++) {
        ssize_t len = read_blocking(paths[i], &serial_buf);
        if (len < 0) {
            if (dropped++ < 5)
                fprintf(stderr, "filehash: note: skipping %s: %s\n", paths[i],
                        strerror((int)-len));
            free(paths[i]);
            continue;
        }
        bytes += (uint64_t)len;
        ref[kept] = bench_hash_bytes(serial_buf.p, (size_t)len);
        paths[kept++] = paths[i];
    }
    npaths = kept;
    if (dropped)
        fprintf(stderr, "filehash: note: %zu unreadable files skipped\n", dropped);
    if (npaths == 0) {
        fprintf(stderr, "filehash: no readable regular files under %s\n", root);
        return 1;
    }

    /* The configurations, in the order every round runs them. */
    static const unsigned workers[] = {1, 2};
    static const struct {
        const char *name;
        unsigned flags;
    } backends[] = {{"uring", 0}, {"blocking", WEFT_POOL_NO_URING}};
    weft_pool *pools[2][2];
    struct config cfg[1 + 2 * 2 * 2];
    int ncfg = 0;
    cfg[ncfg++] = (struct config){SERIAL, "-", 1, NULL, NULL, 0};
    for (int b = 0; b < 2; b++) {
        for (int w = 0; w < 2; w++) {
            weft_pool_options o = {.threads = workers[w], .flags = backends[b].flags};
            int err = weft_pool_create(&pools[b][w], &o);
            if (err) {
                fprintf(stderr, "filehash: pool of %u workers, backend %s: %s\n",
                        workers[w], backends[b].name, strerror(-err));
                return 1;
            }
            for (int im = BLOCKING_READ; im <= READ_FILE; im++)
                cfg[ncfg++] = (struct config){im, backends[b].name, workers[w],
                                              pools[b][w], NULL, 0};
        }
    }
    for (int c = 0; c < ncfg; c++)
        if (!(cfg[c].t = calloc((size_t)reps, sizeof(double))))
            return 1;

    printf("# filehash: %zu files, %.1f MiB under %s; %ld CPUs online; %d rounds; "
           "ratio_vs_serial = serial median / median (> 1: faster)\n",
           npaths, (double)bytes / (1 << 20), root, sysconf(_SC_NPROCESSORS_ONLN), reps);
    fflush(stdout);

    /* One untimed call per weft configuration: workers started, buffers grown. */
    for (int c = 1; c < ncfg; c++)
        run_config(&cfg[c], out);

    for (int r = 0; r < reps; r++) {
        for (int c = 0; c < ncfg; c++) {
            memset(out, 0, npaths * sizeof(*out));
            uint64_t t0 = bench_now_ns();
            int err = run_config(&cfg[c], out);
            cfg[c].t[r] = (double)(bench_now_ns() - t0);
            if (err) {
                fprintf(stderr, "filehash: impl=%s backend=%s workers=%u: %s\n",
                        impl_names[cfg[c].impl], cfg[c].backend, cfg[c].workers,
                        strerror(-err));
                return 1;
            }
            for (size_t i = 0; i < npaths; i++) {
                if (out[i] != ref[i]) {
                    fprintf(stderr, "filehash: impl=%s backend=%s workers=%u round %d: "
                                    "hash of %s is %016" PRIx64 ", the serial loop's %016"
                                    PRIx64 "\n",
                            impl_names[cfg[c].impl], cfg[c].backend, cfg[c].workers, r,
                            paths[i], out[i], ref[i]);
                    return 1;
                }
            }
        }
    }

    for (int c = 0; c < ncfg; c++)
        cfg[c].median = bench_median(cfg[c].t, (size_t)reps);
    double serial = cfg[0].median;
    for (int c = 0; c < ncfg; c++)
        printf("RESULT filehash impl=%s backend=%s workers=%u files=%zu bytes=%" PRIu64
               " median_ns=%.0f ratio_vs_serial=%.3f reps=%d\n",
               impl_names[cfg[c].impl], cfg[c].backend, cfg[c].workers, npaths, bytes,
               cfg[c].median, serial / cfg[c].median, reps);

    printf("\nfilehash: read + hash %zu files (%.1f MiB, page cache warm), median of %d, "
           "speedup vs the serial loop\n", npaths, (double)bytes / (1 << 20), reps);
    printf("%-15s %-9s %-3s %12s %9s\n", "variant", "backend", "w", "median", "vs serial");
    for (int c = 0; c < ncfg; c++) {
        char t[24];
        fmt_time(t, sizeof(t), cfg[c].median);
        printf("%-15s %-9s %-3u %12s %8.2fx\n", impl_names[cfg[c].impl], cfg[c].backend,
               cfg[c].workers, t, serial / cfg[c].median);
    }

    /* DESIGN.md's target, on the io_uring pool of 2 workers. */
    const struct config *rf = NULL, *br = NULL;
    for (int c = 0; c < ncfg; c++) {
        if (cfg[c].pool == pools[0][1] && cfg[c].impl == READ_FILE)
            rf = &cfg[c];
        if (cfg[c].pool == pools[0][1] && cfg[c].impl == BLOCKING_READ)
            br = &cfg[c];
    }
    double ratio = serial / rf->median;
    bool met = ratio >= 1.9 && rf->median < br->median;
    printf("\ntarget: weft_read_file, io_uring, 2 workers >= 1.90x serial and faster than "
           "blocking_read on the same pool: %.2fx, %.2fx blocking_read's speed: %s\n",
           ratio, br->median / rf->median, met ? "met" : "missed");

    for (int b = 0; b < 2; b++)
        for (int w = 0; w < 2; w++)
            weft_pool_destroy(pools[b][w]);
    for (int c = 0; c < ncfg; c++)
        free(cfg[c].t);
    for (size_t i = 0; i < nbufs; i++) {
        free(all_bufs[i]->p);
        free(all_bufs[i]);
    }
    free(all_bufs);
    free(serial_buf.p);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    free(ref);
    free(out);
    return 0;
}
