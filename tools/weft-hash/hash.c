/* SPDX-License-Identifier: MIT */
/*
 * Phase 3: read and hash each file (XXH3-64, libxxhash).
 *
 * In weft mode every file is one item of weft_par_collect and every I/O call goes
 * through weft: weft_open, weft_statx on the descriptor, weft_read at explicit
 * offsets, weft_close. A call that would block suspends the task, not its worker
 * (on a warm cache they complete at once). Nothing below keeps a thread-local or
 * worker-local address across an I/O call, so a task may resume on another
 * worker.
 *
 * Why not weft_read_file: the walk already says the path was a regular file, but it
 * may have been replaced since; this code opens with O_NONBLOCK (a FIFO swapped in
 * must not hang the run) and, without -L, O_NOFOLLOW (a link swapped in is not
 * followed), checks the type on the descriptor, and sizes its buffer from that
 * statx, reading once more only to see EOF.
 *
 * Files up to WH_WHOLE_MAX are read whole into one buffer and hashed in one call;
 * larger files (or files that grow past their size while read) are streamed in
 * WH_CHUNK pieces through XXH3's streaming state, so memory stays bounded.
 * --serial: the same with open/fstat/read/close.
 */
#define _GNU_SOURCE
#include "weft-hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <weft.h>
#include <xxhash.h>

static int h_open(const char *path, int flags, bool serial)
{
    if (serial) {
        int fd = open(path, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
    return weft_open(path, flags, 0);
}

static void h_close(int fd, bool serial)
{
    if (serial)
        close(fd);
    else
        weft_close(fd);
}

/* Type and size of an open file. */
static int h_stat(int fd, bool serial, mode_t *mode, uint64_t *size)
{
    if (serial) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return -errno;
        *mode = st.st_mode;
        *size = (uint64_t)st.st_size;
        return 0;
    }
    struct statx stx;
    int err = weft_statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE, &stx);
    if (err < 0)
        return err;
    *mode = stx.stx_mode;
    *size = stx.stx_size;
    return 0;
}

/* Read up to len bytes at off (serial: at the file position, which is off). */
static ssize_t h_read(int fd, void *buf, size_t len, uint64_t off, bool serial)
{
    for (;;) {
        ssize_t r;
        if (serial) {
            r = read(fd, buf, len);
            if (r < 0)
                r = -errno;
        } else {
            r = weft_read(fd, buf, len, (off_t)off);
        }
        if (r != -EINTR)
            return r;
    }
}

static void progress_bytes(struct wh_progress *pg, uint64_t n)
{
    if (pg && n)
        atomic_fetch_add_explicit(&pg->bytes, n, memory_order_relaxed);
}

/* Stream the rest of the file from off into st. Returns bytes read or -errno. */
static int64_t stream(int fd, uint64_t off, bool serial, struct wh_progress *pg,
                      XXH3_state_t *st)
{
    char *buf = malloc(WH_CHUNK);
    if (!buf)
        return -ENOMEM;
    uint64_t start = off;
    int64_t ret;
    for (;;) {
        ssize_t r = h_read(fd, buf, WH_CHUNK, off, serial);
        if (r < 0) {
            ret = r;
            break;
        }
        if (r == 0) {
            ret = (int64_t)(off - start);
            break;
        }
        XXH3_64bits_update(st, buf, (size_t)r);
        off += (uint64_t)r;
        progress_bytes(pg, (uint64_t)r);
    }
    free(buf);
    return ret;
}

static int hash_fd(int fd, bool serial, struct wh_progress *pg, struct wh_result *r)
{
    mode_t mode;
    uint64_t size;
    int err = h_stat(fd, serial, &mode, &size);
    if (err < 0)
        return err;
    if (S_ISDIR(mode))
        return -EISDIR;
    if (!S_ISREG(mode))
        return WH_ENOTREG;

    XXH3_state_t *st = NULL;
    uint64_t got = 0;
    if (size <= WH_WHOLE_MAX) {
        /* One byte more than the size: a read that fills it means the file grew. */
        size_t cap = (size_t)size + 1;
        char *buf = malloc(cap);
        if (!buf)
            return -ENOMEM;
        while (got < cap) {
            ssize_t n = h_read(fd, buf + got, cap - got, got, serial);
            if (n < 0) {
                free(buf);
                return (int)n;
            }
            if (n == 0)
                break;
            got += (uint64_t)n;
        }
        progress_bytes(pg, got);
        if (got < cap) {
            r->hash = XXH3_64bits(buf, (size_t)got);
            r->bytes = got;
            free(buf);
            return 0;
        }
        st = XXH3_createState();
        if (!st) {
            free(buf);
            return -ENOMEM;
        }
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, buf, (size_t)got);
        free(buf);
    } else {
        st = XXH3_createState();
        if (!st)
            return -ENOMEM;
        XXH3_64bits_reset(st);
    }
    int64_t more = stream(fd, got, serial, pg, st);
    if (more >= 0) {
        r->hash = XXH3_64bits_digest(st);
        r->bytes = got + (uint64_t)more;
    }
    XXH3_freeState(st);
    return more < 0 ? (int)more : 0;
}

void wh_hash_file(const char *path, bool nofollow, bool serial, struct wh_progress *pg,
                  struct wh_result *r)
{
    r->hash = 0;
    r->bytes = 0;
    int fd = h_open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | (nofollow ? O_NOFOLLOW : 0),
                    serial);
    if (fd < 0) {
        r->err = fd;
    } else {
        r->err = hash_fd(fd, serial, pg, r);
        h_close(fd, serial);
    }
    if (pg)
        atomic_fetch_add_explicit(&pg->done, 1, memory_order_relaxed);
}

struct hash_ctx {
    const struct wh_list *l;
    bool serial;
    struct wh_progress *pg;
};

static int hash_item(void *ctx, size_t i, void *slot)
{
    const struct hash_ctx *c = ctx;
    const struct wh_entry *e = &c->l->v[i];
    struct wh_result *r = slot;
    if (e->what != WH_FILE)
        *r = (struct wh_result){.err = e->err};
    else
        wh_hash_file(e->path, e->nofollow, c->serial, c->pg, r);
    return 0;  /* a file's error is its slot's, never the loop's */
}

int wh_hash_all(const struct wh_list *l, struct wh_result *res, bool serial,
                struct wh_progress *pg)
{
    struct hash_ctx c = {l, serial, pg};
    if (serial) {
        for (size_t i = 0; i < l->n; i++)
            hash_item(&c, i, &res[i]);
        return 0;
    }
    return weft_par_collect(NULL, l->n, res, sizeof(*res), hash_item, &c);
}
