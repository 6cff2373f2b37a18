/* SPDX-License-Identifier: MIT */
/*
 * coldread: read and hash file trees with the page cache evicted before every run
 * (and warm, for comparison), the case io_uring exists for: a worker that waits
 * for the disk in read(2) runs nothing meanwhile, a task that waits in weft_read
 * lets its worker start the next read.
 *
 * Two trees:
 *   small  many small files: /usr/include (--root DIR), or --gen-small N files
 *          generated under a temporary directory (sizes 100 B to 64 KiB, spread
 *          over directories of 64);
 *   large  --large-files N files of --large-mib MiB (default 4 x 128 MiB),
 *          generated under a temporary directory (--tmpdir, default /var/tmp).
 *
 * Variants, each on pools of 1 and 2 workers:
 *   serial          one thread, no pool: open, read() in BLOCK pieces, hash, close;
 *   blocking_read   weft_par_collect on an io_uring pool, each item doing the same
 *                   blocking reads: the worker waits for the disk;
 *   weft_read_file  weft_par_collect, each item weft_read_file + hash: the task
 *                   waits, its worker runs the next items (lib/par.c splits a loop
 *                   whose item waited), so many reads are in flight per worker;
 *                   on the io_uring pool and on the blocking backend's pool
 *                   (WEFT_POOL_NO_URING: reads on up to max(4, 2 x workers)
 *                   blocking threads);
 *   weft_read_ahead (large tree) weft_par_collect over the files, each item reading
 *                   its file in windows of --depth BLOCKs: the next window's reads
 *                   (one weft_read per BLOCK, all in flight at once, a join tree)
 *                   run while this window is hashed (weft_join(read next, hash
 *                   this)), so the hash waits for the disk only when the disk is
 *                   slower than the hash. Two windows of memory per file.
 *
 * Cold: before every timed run (every variant, every round) each file of the tree
 * is opened and posix_fadvise(POSIX_FADV_DONTNEED)'d (no root needed; dirty pages
 * are not dropped, so generated files are fdatasync'd once), and, when
 * /proc/sys/vm/drop_caches is writable and --drop-caches is not "no", "3" is
 * written there too (dentries and inodes as well: the opens then go to the disk).
 * Whether eviction worked is checked with mincore(2) once per tree and reported
 * ("resident after eviction"): on tmpfs nothing can be evicted and the "cold"
 * rows are warm ones.
 * Warm: one untimed read of the tree first; the same variants.
 *
 * The hash: per BLOCK (1 MiB) of a file, FNV-1a over 8-byte words (--hash-rounds
 * passes), folded in order, the length folded in, murmur3's fmix64 at the end:
 * every variant feeds the same blocks, so every variant's digest of a file is the
 * same, and each one is checked against the serial loop's (exit status 1 on any
 * difference).
 *
 * Each (tree, cache) runs --reps rounds (default 5; meson and benchmarks/run pass
 * more), each round every variant once, round r starting at the r-th (under a VM
 * the host's cache may keep what the guest evicted: whoever reads first in a round
 * pays the disk, so every variant goes first as often); medians are reported with
 * the ratio serial median / median (> 1: faster) and, for the weft variants, the
 * ratio against blocking_read with the same worker count (> 1: ahead of blocking
 * reads). "inflight" is the most reads one run had in flight at once (files being
 * read for the per-file variants, BLOCK reads for weft_read_ahead).
 *
 * DESIGN.md's target: weft_read_file (and weft_read_ahead) ahead of blocking reads
 * on the same worker count when cold; at least level when warm.
 *
 * Usage: coldread [--reps N] [--root DIR | --gen-small N] [--large-files N]
 *                 [--large-mib M] [--depth D] [--hash-rounds R] [--tmpdir DIR]
 *                 [--trees small,large] [--cache warm,cold] [--drop-caches auto|yes|no]
 *                 [--keep]
 * Output: one line per measurement,
 *   RESULT coldread tree=small cache=cold impl=weft_read_file backend=uring workers=2
 *          files=... bytes=... median_ns=... ratio_vs_serial=... ratio_vs_blocking=...
 *          inflight=... reps=...
 * then a table per (tree, cache) and the target's verdict.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

#define BLOCK ((size_t)1 << 20)

/* ------------------------------------------------------------------------------
 * Options and trees
 * ---------------------------------------------------------------------------- */

static int hash_rounds = 1;
static size_t depth = 8;

struct tree {
    const char *name;
    char **paths;
    size_t n, cap;
    uint64_t bytes;
    uint64_t *ref;        /* the serial loop's digests */
    double resident;      /* fraction of pages resident after one eviction */
};

static struct tree *cur_tree; /* for nftw's callback */

static int add_path(struct tree *t, const char *path)
{
    if (t->n == t->cap) {
        size_t ncap = t->cap ? 2 * t->cap : 1024;
        char **np = realloc(t->paths, ncap * sizeof(*np));
        if (!np)
            return -1;
        t->paths = np;
        t->cap = ncap;
    }
    if (!(t->paths[t->n] = strdup(path)))
        return -1;
    t->n++;
    return 0;
}

static int ftw_add(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    return add_path(cur_tree, path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t rng(uint64_t *s)
{
    uint64_t x = (*s += 0x9E3779B97F4A7C15u);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

/* Write size pseudo-random bytes to path and fdatasync it (dirty pages cannot be
 * evicted). 0 or -1. */
static int gen_file(const char *path, size_t size, uint64_t seed, char *buf, size_t bufsz)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < bufsz ? size - off : bufsz;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            uint64_t v = rng(&seed);
            memcpy(buf + i, &v, 8);
        }
        for (size_t i = n & ~(size_t)7; i < n; i++)
            buf[i] = (char)rng(&seed);
        ssize_t w = write(fd, buf, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    int r = fdatasync(fd);
    close(fd);
    return r;
}

static char *make_tmp(const char *base, const char *what)
{
    char *d;
    if (asprintf(&d, "%s/weft-coldread-%s-XXXXXX", base, what) < 0)
        return NULL;
    if (!mkdtemp(d)) {
        fprintf(stderr, "coldread: mkdtemp under %s: %s\n", base, strerror(errno));
        free(d);
        return NULL;
    }
    return d;
}

static int gen_small(struct tree *t, const char *dir, size_t n)
{
    char *buf = malloc(65536);
    if (!buf)
        return -1;
    uint64_t seed = 42;
    char path[4096];
    for (size_t i = 0; i < n; i++) {
        if (i % 64 == 0) {
            snprintf(path, sizeof(path), "%s/d%04zu", dir, i / 64);
            if (mkdir(path, 0755) != 0) {
                free(buf);
                return -1;
            }
        }
        /* Roughly log-uniform sizes from 100 B to 64 KiB, as headers and sources
         * are: a power of two times 100, plus up to as much again. */
        size_t lo = (size_t)100 << (rng(&seed) % 10);
        size_t size = lo + (size_t)(rng(&seed) % lo);
        if (size > 65536)
            size = 65536;
        snprintf(path, sizeof(path), "%s/d%04zu/f%06zu.h", dir, i / 64, i);
        if (gen_file(path, size, seed + i, buf, 65536) != 0 || add_path(t, path) != 0) {
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
}

static int gen_large(struct tree *t, const char *dir, size_t n, size_t mib)
{
    char *buf = malloc(BLOCK);
    if (!buf)
        return -1;
    char path[4096];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/large%02zu.bin", dir, i);
        /* Not a multiple of the block: the last read is short. */
        size_t size = mib * BLOCK + 4097 * i + 123;
        if (gen_file(path, size, 1000 + i, buf, BLOCK) != 0 || add_path(t, path) != 0) {
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* ------------------------------------------------------------------------------
 * Eviction
 * ---------------------------------------------------------------------------- */

static bool use_drop_caches;

static void evict(const struct tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        int fd = open(t->paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    if (use_drop_caches) {
        int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "3\n", 2) != 2)
                use_drop_caches = false;
            close(fd);
        }
    }
}

/* The fraction of the tree's pages in the page cache (mincore), over at most 4000
 * files spread over the tree. */
static double resident(const struct tree *t)
{
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t pages = 0, in = 0;
    size_t step = t->n > 4000 ? t->n / 4000 : 1;
    unsigned char *vec = NULL;
    size_t vcap = 0;
    for (size_t i = 0; i < t->n; i += step) {
        int fd = open(t->paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size == 0) {
            close(fd);
            continue;
        }
        size_t np = ((size_t)st.st_size + (size_t)ps - 1) / (size_t)ps;
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (m == MAP_FAILED)
            continue;
        if (np > vcap) {
            unsigned char *nv = realloc(vec, np);
            if (!nv) {
                munmap(m, (size_t)st.st_size);
                break;
            }
            vec = nv;
            vcap = np;
        }
        if (mincore(m, (size_t)st.st_size, vec) == 0) {
            for (size_t k = 0; k < np; k++)
                in += vec[k] & 1;
            pages += np;
        }
        munmap(m, (size_t)st.st_size);
    }
    free(vec);
    return pages ? (double)in / (double)pages : 0;
}

/* ------------------------------------------------------------------------------
 * The digest: the same blocks for every variant
 * ---------------------------------------------------------------------------- */

static uint64_t block_hash(const void *data, size_t n)
{
    uint64_t h = BENCH_FNV_BASIS;
    for (int round = 0; round < hash_rounds; round++)
        h = bench_fnv_words(h, data, n);
    return h;
}

struct digest {
    uint64_t h, len;
};

/* One block: BLOCK bytes, or fewer for the file's last. */
static void dg_block(struct digest *d, const void *p, size_t n)
{
    d->h = (d->h ^ block_hash(p, n)) * 0x9E3779B97F4A7C15u;
    d->len += n;
}

static uint64_t dg_final(const struct digest *d)
{
    return bench_fmix64(d->h ^ d->len);
}

static uint64_t digest_buf(const char *p, size_t n)
{
    struct digest d = {0, 0};
    if (n == 0)
        dg_block(&d, p, 0); /* an empty file is one empty block, as in the loops */
    for (size_t off = 0; off < n; off += BLOCK)
        dg_block(&d, p + off, n - off < BLOCK ? n - off : BLOCK);
    return dg_final(&d);
}

/* ------------------------------------------------------------------------------
 * In-flight count (how many reads one run had going at once)
 * ---------------------------------------------------------------------------- */

static _Atomic(long) inflight, inflight_max;

static void inflight_enter(void)
{
    long v = atomic_fetch_add_explicit(&inflight, 1, memory_order_relaxed) + 1;
    long m = atomic_load_explicit(&inflight_max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(&inflight_max, &m, v,
                                                           memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

static void inflight_leave(void)
{
    atomic_fetch_sub_explicit(&inflight, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------
 * The variants
 * ---------------------------------------------------------------------------- */

/* Fill up to BLOCK bytes at off with blocking reads; bytes read or -errno. */
static ssize_t read_block_blocking(int fd, char *buf, off_t off)
{
    size_t got = 0;
    while (got < BLOCK) {
        ssize_t r = pread(fd, buf + got, BLOCK - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Open, read in blocks, hash, close, all blocking; buf holds BLOCK bytes. */
static int digest_blocking(const char *path, char *buf, uint64_t *out)
{
    inflight_enter();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        inflight_leave();
        return -errno;
    }
    struct digest d = {0, 0};
    off_t off = 0;
    int err = 0;
    for (;;) {
        ssize_t r = read_block_blocking(fd, buf, off);
        if (r < 0) {
            err = (int)r;
            break;
        }
        if (r > 0 || off == 0)
            dg_block(&d, buf, (size_t)r);
        if ((size_t)r < BLOCK)
            break;
        off += (off_t)r;
    }
    close(fd);
    inflight_leave();
    *out = dg_final(&d);
    return err;
}

static char *serial_buf;

static int run_serial(const struct tree *t, uint64_t *out)
{
    for (size_t i = 0; i < t->n; i++) {
        int err = digest_blocking(t->paths[i], serial_buf, &out[i]);
        if (err)
            return err;
    }
    return 0;
}

/* blocking_read's per-thread buffers: an item never suspends (plain syscalls), so
 * a thread-local buffer stays its own for the whole item. Listed to be freed. */
static _Thread_local char *tls_buf;
static char **all_bufs;
static size_t nbufs;
static pthread_mutex_t bufs_lock = PTHREAD_MUTEX_INITIALIZER;

static char *thread_buf(void)
{
    if (tls_buf)
        return tls_buf;
    char *b = malloc(BLOCK);
    if (!b)
        return NULL;
    pthread_mutex_lock(&bufs_lock);
    char **nb = realloc(all_bufs, (nbufs + 1) * sizeof(*nb));
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

static int item_blocking(void *ctx, size_t i, void *slot)
{
    const struct tree *t = ctx;
    char *b = thread_buf();
    if (!b)
        return -ENOMEM;
    return digest_blocking(t->paths[i], b, slot);
}

static int item_read_file(void *ctx, size_t i, void *slot)
{
    const struct tree *t = ctx;
    void *data;
    size_t size;
    inflight_enter();
    int err = weft_read_file(t->paths[i], &data, &size);
    inflight_leave();
    if (err)
        return err;
    *(uint64_t *)slot = digest_buf(data, size);
    free(data);
    return 0;
}

/* weft_read_ahead: windows of `depth` blocks, two of them, one being hashed while
 * the other is read. */
struct ra {
    int fd;
    char *win[2];
    ssize_t *len[2];   /* per block: bytes read, or -errno */
    off_t base[2];     /* file offset of each window */
    struct digest d;
};

struct ra_part {
    struct ra *ra;
    int w;
    size_t lo, hi;     /* blocks of window w */
};

/* One block at its offset with weft_read: up to BLOCK bytes (weft.h: a short read
 * of a regular file is its end, so one call does). */
static ssize_t weft_block(int fd, char *buf, off_t off)
{
    ssize_t r;
    inflight_enter();
    do
        r = weft_read(fd, buf, BLOCK, off);
    while (r == -EINTR);
    inflight_leave();
    return r;
}

/* Read blocks [lo, hi) of a window, all at once: a join tree whose leaves each
 * wait in their own weft_read. */
static int ra_read(void *p)
{
    struct ra_part *pt = p;
    struct ra *ra = pt->ra;
    if (pt->hi - pt->lo > 1) {
        size_t mid = pt->lo + (pt->hi - pt->lo) / 2;
        struct ra_part a = {ra, pt->w, pt->lo, mid}, b = {ra, pt->w, mid, pt->hi};
        return weft_join(ra_read, &a, ra_read, &b);
    }
    off_t off = ra->base[pt->w] + (off_t)(pt->lo * BLOCK);
    ra->len[pt->w][pt->lo] = weft_block(ra->fd, ra->win[pt->w] + pt->lo * BLOCK, off);
    return 0;
}

/* Hash window w's blocks in order; 1: it ended the file (a short or empty block),
 * or -errno. */
static int ra_hash_window(struct ra *ra, int w)
{
    for (size_t k = 0; k < depth; k++) {
        ssize_t n = ra->len[w][k];
        if (n < 0)
            return (int)n;
        if (n > 0 || (ra->base[w] == 0 && k == 0))
            dg_block(&ra->d, ra->win[w] + k * BLOCK, (size_t)n);
        if ((size_t)n < BLOCK)
            return 1;
    }
    return 0;
}

struct ra_hash {
    struct ra *ra;
    int w;
    int r;
};

static int ra_hash(void *p)
{
    struct ra_hash *h = p;
    h->r = ra_hash_window(h->ra, h->w);
    return h->r < 0 ? h->r : 0;
}

static int item_read_ahead(void *ctx, size_t i, void *slot)
{
    const struct tree *t = ctx;
    struct ra ra;
    memset(&ra, 0, sizeof(ra));
    ra.fd = weft_open(t->paths[i], O_RDONLY, 0);
    if (ra.fd < 0)
        return ra.fd;
    int err = 0;
    for (int w = 0; w < 2; w++) {
        ra.win[w] = malloc(depth * BLOCK);
        ra.len[w] = calloc(depth, sizeof(ssize_t));
        if (!ra.win[w] || !ra.len[w])
            err = -ENOMEM;
    }
    if (!err) {
        struct ra_part first = {&ra, 0, 0, depth};
        ra.base[0] = 0;
        err = ra_read(&first);
    }
    for (int w = 0; !err;) {
        /* Does window w end the file? Then hash it, no more to read. */
        bool last = false;
        for (size_t k = 0; k < depth; k++)
            if (ra.len[w][k] < (ssize_t)BLOCK) {
                last = true;
                break;
            }
        struct ra_hash h = {&ra, w, 0};
        if (last) {
            err = ra_hash(&h);
            break;
        }
        int nw = w ^ 1;
        ra.base[nw] = ra.base[w] + (off_t)(depth * BLOCK);
        struct ra_part next = {&ra, nw, 0, depth};
        /* The reads first: they suspend, and their worker then takes the hash. */
        err = weft_join(ra_read, &next, ra_hash, &h);
        if (!err && h.r == 1)
            break; /* cannot happen: window w was full */
        w = nw;
    }
    weft_close(ra.fd);
    for (int w = 0; w < 2; w++) {
        free(ra.win[w]);
        free(ra.len[w]);
    }
    if (!err)
        *(uint64_t *)slot = dg_final(&ra.d);
    return err;
}

enum { SERIAL, BLOCKING_READ, READ_FILE, READ_AHEAD };
static const char *const impl_names[] = {"serial", "blocking_read", "weft_read_file",
                                         "weft_read_ahead"};

struct config {
    int impl;
    const char *backend; /* "uring", "blocking", or "-" */
    unsigned workers;
    weft_pool *pool;
    double *t;
    double median;
    long inflight;       /* the most seen in any round */
};

static int run_config(struct config *c, const struct tree *t, uint64_t *out)
{
    atomic_store_explicit(&inflight, 0, memory_order_relaxed);
    atomic_store_explicit(&inflight_max, 0, memory_order_relaxed);
    int err;
    switch (c->impl) {
    case SERIAL:
        err = run_serial(t, out);
        break;
    case BLOCKING_READ:
        err = weft_par_collect(c->pool, t->n, out, sizeof(*out), item_blocking, (void *)t);
        break;
    case READ_FILE:
        err = weft_par_collect(c->pool, t->n, out, sizeof(*out), item_read_file, (void *)t);
        break;
    default:
        err = weft_par_collect(c->pool, t->n, out, sizeof(*out), item_read_ahead, (void *)t);
        break;
    }
    long m = atomic_load_explicit(&inflight_max, memory_order_relaxed);
    if (m > c->inflight)
        c->inflight = m;
    return err;
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

/* ------------------------------------------------------------------------------
 * One tree, one cache state: every configuration, reps rounds
 * ---------------------------------------------------------------------------- */

static weft_pool *pools[2][2]; /* [backend: uring, blocking][workers - 1] */
static bool verdict_missed;

static int measure(struct tree *t, bool cold, int reps)
{
    struct config cfg[16];
    int ncfg = 0;
    bool large = strcmp(t->name, "large") == 0;
    cfg[ncfg++] = (struct config){SERIAL, "-", 1, NULL, NULL, 0, 0};
    for (unsigned w = 1; w <= 2; w++) {
        cfg[ncfg++] = (struct config){BLOCKING_READ, "uring", w, pools[0][w - 1], NULL, 0, 0};
        cfg[ncfg++] = (struct config){READ_FILE, "uring", w, pools[0][w - 1], NULL, 0, 0};
        cfg[ncfg++] = (struct config){READ_FILE, "blocking", w, pools[1][w - 1], NULL, 0, 0};
        if (large) {
            cfg[ncfg++] = (struct config){READ_AHEAD, "uring", w, pools[0][w - 1], NULL, 0, 0};
            cfg[ncfg++] = (struct config){READ_AHEAD, "blocking", w, pools[1][w - 1], NULL,
                                          0, 0};
        }
    }
    uint64_t *out = malloc(t->n * sizeof(*out));
    if (!out)
        return -1;
    for (int c = 0; c < ncfg; c++)
        if (!(cfg[c].t = calloc((size_t)reps, sizeof(double))))
            return -1;
    /* Warm: one untimed run of each configuration first (workers started, buffers
     * grown, every file in the cache). */
    if (!cold)
        for (int c = 0; c < ncfg; c++)
            run_config(&cfg[c], t, out);
    for (int r = 0; r < reps; r++) {
        /* Round r starts at configuration r: on a VM the host may keep what the
         * guest evicted, and the first reader of a round pays the real disk, so
         * each configuration goes first (and last) as often as the others. */
        for (int k = 0; k < ncfg; k++) {
            int c = (r + k) % ncfg;
            if (cold)
                evict(t);
            memset(out, 0, t->n * sizeof(*out));
            uint64_t t0 = bench_now_ns();
            int err = run_config(&cfg[c], t, out);
            cfg[c].t[r] = (double)(bench_now_ns() - t0);
            if (err) {
                fprintf(stderr, "coldread: tree=%s impl=%s backend=%s workers=%u: %s\n",
                        t->name, impl_names[cfg[c].impl], cfg[c].backend, cfg[c].workers,
                        strerror(-err));
                return -1;
            }
            for (size_t i = 0; i < t->n; i++) {
                if (out[i] != t->ref[i]) {
                    fprintf(stderr, "coldread: tree=%s impl=%s backend=%s workers=%u: "
                                    "digest of %s is %016" PRIx64 ", the serial loop's %016"
                                    PRIx64 "\n", t->name, impl_names[cfg[c].impl],
                            cfg[c].backend, cfg[c].workers, t->paths[i], out[i], t->ref[i]);
                    return -1;
                }
            }
        }
    }
    for (int c = 0; c < ncfg; c++)
        cfg[c].median = bench_median(cfg[c].t, (size_t)reps);
    double serial = cfg[0].median;
    const char *cache = cold ? "cold" : "warm";
    /* blocking_read of the same worker count: the baseline of each weft variant. */
    double blk[3] = {0, 0, 0};
    for (int c = 0; c < ncfg; c++)
        if (cfg[c].impl == BLOCKING_READ)
            blk[cfg[c].workers] = cfg[c].median;
    for (int c = 0; c < ncfg; c++) {
        double vb = cfg[c].impl >= READ_FILE ? blk[cfg[c].workers] / cfg[c].median : 0;
        printf("RESULT coldread tree=%s cache=%s impl=%s backend=%s workers=%u files=%zu "
               "bytes=%" PRIu64 " median_ns=%.0f ratio_vs_serial=%.3f", t->name, cache,
               impl_names[cfg[c].impl], cfg[c].backend, cfg[c].workers, t->n, t->bytes,
               cfg[c].median, serial / cfg[c].median);
        if (vb > 0)
            printf(" ratio_vs_blocking=%.3f", vb);
        printf(" inflight=%ld reps=%d\n", cfg[c].inflight, reps);
    }
    printf("\ncoldread: %s tree, %zu files, %.1f MiB, page cache %s", t->name, t->n,
           (double)t->bytes / (1 << 20), cache);
    if (cold)
        printf(" (evicted before every run: fadvise%s; resident after eviction %.1f%%)",
               use_drop_caches ? " + drop_caches" : "", 100 * t->resident);
    printf(", median of %d\n", reps);
    printf("%-16s %-9s %-3s %12s %9s %10s %12s %9s\n", "variant", "backend", "w", "median",
           "MiB/s", "vs serial", "vs blocking", "inflight");
    for (int c = 0; c < ncfg; c++) {
        char tm[24], vb[16] = "";
        fmt_time(tm, sizeof(tm), cfg[c].median);
        if (cfg[c].impl >= READ_FILE)
            snprintf(vb, sizeof(vb), "%.2fx", blk[cfg[c].workers] / cfg[c].median);
        printf("%-16s %-9s %-3u %12s %9.0f %9.2fx %12s %9ld\n", impl_names[cfg[c].impl],
               cfg[c].backend, cfg[c].workers, tm,
               (double)t->bytes / (1 << 20) / (cfg[c].median / 1e9),
               serial / cfg[c].median, vb, cfg[c].inflight);
    }
    /* The target: on io_uring, ahead of blocking reads with the same worker count
     * when cold, level (>= 1.0) when warm. */
    int best = large ? READ_AHEAD : READ_FILE;
    for (unsigned w = 1; w <= 2; w++) {
        for (int c = 0; c < ncfg; c++) {
            if (cfg[c].impl != best || cfg[c].workers != w || strcmp(cfg[c].backend, "uring"))
                continue;
            double v = blk[w] / cfg[c].median;
            bool met = cold ? v > 1.0 : v >= 1.0;
            verdict_missed |= !met;
            printf("target (%s, %s, %u worker%s): %s on io_uring %s blocking_read: "
                   "%.2fx its speed: %s\n", t->name, cache, w, w > 1 ? "s" : "",
                   impl_names[best], cold ? "ahead of" : "at least level with", v,
                   met ? "met" : "missed");
        }
    }
    printf("\n");
    fflush(stdout);
    for (int c = 0; c < ncfg; c++)
        free(cfg[c].t);
    free(out);
    return 0;
}

/* ------------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: coldread [--reps N] [--root DIR | --gen-small N] [--large-files N]\n"
            "                [--large-mib M] [--depth D] [--hash-rounds R] [--tmpdir DIR]\n"
            "                [--trees small,large] [--cache warm,cold]\n"
            "                [--drop-caches auto|yes|no] [--keep]\n");
}

static int prepare(struct tree *t)
{
    qsort(t->paths, t->n, sizeof(*t->paths), cmp_str);
    t->ref = malloc((t->n ? t->n : 1) * sizeof(*t->ref));
    if (!t->ref)
        return -1;
    /* Reference digests; unreadable files are dropped. */
    size_t kept = 0;
    t->bytes = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct stat st;
        int err = stat(t->paths[i], &st) == 0 ? 0 : -errno;
        if (!err)
            err = digest_blocking(t->paths[i], serial_buf, &t->ref[kept]);
        if (err) {
            free(t->paths[i]);
            continue;
        }
        t->bytes += (uint64_t)st.st_size;
        t->paths[kept++] = t->paths[i];
    }
    t->n = kept;
    if (t->n == 0) {
        fprintf(stderr, "coldread: the %s tree has no readable files\n", t->name);
        return -1;
    }
    evict(t);
    t->resident = resident(t);
    return 0;
}

int main(int argc, char **argv)
{
    int reps = 5;
    const char *root = "/usr/include", *tmpbase = "/var/tmp", *drop = "auto";
    size_t gen_n = 0, large_n = 4, large_mib = 128;
    bool keep = false, do_small = true, do_large = true, do_warm = true, do_cold = true;
    for (int a = 1; a < argc; a++) {
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (strcmp(argv[a], "--reps") == 0 && v) {
            reps = atoi(v);
        } else if (strcmp(argv[a], "--root") == 0 && v) {
            root = v;
        } else if (strcmp(argv[a], "--gen-small") == 0 && v) {
            gen_n = strtoul(v, NULL, 10);
        } else if (strcmp(argv[a], "--large-files") == 0 && v) {
            large_n = strtoul(v, NULL, 10);
        } else if (strcmp(argv[a], "--large-mib") == 0 && v) {
            large_mib = strtoul(v, NULL, 10);
        } else if (strcmp(argv[a], "--depth") == 0 && v) {
            depth = strtoul(v, NULL, 10);
        } else if (strcmp(argv[a], "--hash-rounds") == 0 && v) {
            hash_rounds = atoi(v);
        } else if (strcmp(argv[a], "--tmpdir") == 0 && v) {
            tmpbase = v;
        } else if (strcmp(argv[a], "--trees") == 0 && v) {
            do_small = strstr(v, "small") != NULL;
            do_large = strstr(v, "large") != NULL;
        } else if (strcmp(argv[a], "--cache") == 0 && v) {
            do_warm = strstr(v, "warm") != NULL;
            do_cold = strstr(v, "cold") != NULL;
        } else if (strcmp(argv[a], "--drop-caches") == 0 && v) {
            drop = v;
        } else if (strcmp(argv[a], "--keep") == 0) {
            keep = true;
            continue;
        } else {
            usage();
            return 2;
        }
        a++;
    }
    if (reps < 1 || depth < 1 || depth > 1024 || hash_rounds < 1 || large_mib < 1 ||
        (strcmp(drop, "auto") && strcmp(drop, "yes") && strcmp(drop, "no")) ||
        (!do_small && !do_large) || (!do_warm && !do_cold)) {
        usage();
        return 2;
    }
    bool writable = access("/proc/sys/vm/drop_caches", W_OK) == 0;
    use_drop_caches = strcmp(drop, "no") != 0 && writable;
    if (strcmp(drop, "yes") == 0 && !writable)
        fprintf(stderr, "coldread: note: /proc/sys/vm/drop_caches is not writable: "
                        "fadvise only\n");
    serial_buf = malloc(BLOCK);
    if (!serial_buf)
        return 1;

    struct tree small = {.name = "small"}, large = {.name = "large"};
    char *small_dir = NULL, *large_dir = NULL;
    int rc = 1;
    if (do_small) {
        if (gen_n == 0 && access(root, R_OK) != 0) {
            fprintf(stderr, "coldread: note: %s is not readable: generating 8000 files\n",
                    root);
            gen_n = 8000;
        }
        if (gen_n) {
            if (!(small_dir = make_tmp(tmpbase, "small")) ||
                gen_small(&small, small_dir, gen_n) != 0) {
                fprintf(stderr, "coldread: cannot generate the small tree: %s\n",
                        strerror(errno));
                goto out;
            }
        } else {
            cur_tree = &small;
            if (nftw(root, ftw_add, 64, FTW_PHYS) != 0) {
                fprintf(stderr, "coldread: cannot list %s: %s\n", root, strerror(errno));
                goto out;
            }
        }
        if (prepare(&small) != 0)
            goto out;
    }
    if (do_large && large_n > 0) {
        if (!(large_dir = make_tmp(tmpbase, "large")) ||
            gen_large(&large, large_dir, large_n, large_mib) != 0) {
            fprintf(stderr, "coldread: cannot generate the large tree under %s: %s\n",
                    tmpbase, strerror(errno));
            goto out;
        }
        if (prepare(&large) != 0)
            goto out;
    }

    for (int b = 0; b < 2; b++) {
        for (unsigned w = 1; w <= 2; w++) {
            weft_pool_options o = {.threads = w, .flags = b ? WEFT_POOL_NO_URING : 0};
            int err = weft_pool_create(&pools[b][w - 1], &o);
            if (err) {
                fprintf(stderr, "coldread: pool of %u workers (%s): %s\n", w,
                        b ? "blocking" : "uring", strerror(-err));
                goto out;
            }
        }
    }
    printf("# coldread: %ld CPUs online; %d rounds; BLOCK %zu KiB; read-ahead depth %zu "
           "blocks; hash rounds %d; eviction: posix_fadvise(DONTNEED)%s\n",
           sysconf(_SC_NPROCESSORS_ONLN), reps, BLOCK >> 10, depth, hash_rounds,
           use_drop_caches ? " + drop_caches=3" : "");
    if (small.n)
        printf("# small tree: %s, %zu files, %.1f MiB\n", small_dir ? small_dir : root,
               small.n, (double)small.bytes / (1 << 20));
    if (large.n)
        printf("# large tree: %s, %zu files, %.1f MiB\n", large_dir, large.n,
               (double)large.bytes / (1 << 20));
    fflush(stdout);
    for (int cold = 0; cold < 2; cold++) {
        if ((cold && !do_cold) || (!cold && !do_warm))
            continue;
        if (small.n && measure(&small, cold, reps) != 0)
            goto out;
        if (large.n && measure(&large, cold, reps) != 0)
            goto out;
    }
    printf("targets: %s\n", verdict_missed ? "some missed (see above)" : "all met");
    rc = 0;
out:
    for (int b = 0; b < 2; b++)
        for (int w = 0; w < 2; w++)
            if (pools[b][w])
                weft_pool_destroy(pools[b][w]);
    if (!keep) {
        if (small_dir)
            nftw(small_dir, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
        if (large_dir)
            nftw(large_dir, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
    } else {
        if (small_dir)
            printf("# kept %s\n", small_dir);
        if (large_dir)
            printf("# kept %s\n", large_dir);
    }
    free(small_dir);
    free(large_dir);
    struct tree *ts[2] = {&small, &large};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < ts[k]->n; i++)
            free(ts[k]->paths[i]);
        free(ts[k]->paths);
        free(ts[k]->ref);
    }
    for (size_t i = 0; i < nbufs; i++)
        free(all_bufs[i]);
    free(all_bufs);
    free(serial_buf);
    return rc;
}
