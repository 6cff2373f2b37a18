/* SPDX-License-Identifier: MIT */
/* I/O calls: results equal the plain syscalls', errors are the syscalls' -errno. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft.h"

static char *make_file(size_t size, unsigned seed)
{
    char tmpl[] = "/tmp/weft-io-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert_geq(fd, 0);
    char *buf = malloc(size ? size : 1);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < size; i++)
        buf[i] = (char)(i * 131u + seed);
    cr_assert_eq(write(fd, buf, size), (ssize_t)size);
    close(fd);
    free(buf);
    return strdup(tmpl);
}

struct rf {
    const char *path;
    size_t size;
    int err;
    int same;
    size_t usable;
};

static int read_one(void *arg)
{
    struct rf *r = arg;
    void *data = NULL;
    size_t size = 0;
    r->err = weft_read_file(r->path, &data, &size);
    if (r->err)
        return 0;
    /* Compare with pread of the same file. */
    char *want = malloc(r->size + 1);
    int fd = open(r->path, O_RDONLY);
    ssize_t got = pread(fd, want, r->size, 0);
    close(fd);
    r->same = got == (ssize_t)r->size && size == r->size &&
              memcmp(want, data, r->size) == 0 && ((char *)data)[size] == 0;
    r->usable = malloc_usable_size(data);
    free(want);
    free(data);
    return 0;
}

Test(io, read_file_equals_pread)
{
    static const size_t sizes[] = {0, 1, 4095, 4096, 4097, 1 << 20, (3 << 20) + 17};
    weft_pool *pool;
    weft_pool_options o = {.threads = 2};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        char *path = make_file(sizes[k], (unsigned)k);
        struct rf r = {path, sizes[k], -1, 0, 0};
        cr_assert_eq(weft_run(pool, read_one, &r), 0); /* inside a task */
        cr_assert_eq(r.err, 0, "size %zu: %d", sizes[k], r.err);
        cr_assert(r.same, "size %zu differs", sizes[k]);
        /* One buffer of the file's size (+ the NUL), not a doubled one. */
        cr_assert_leq(r.usable, sizes[k] + 4096 + 64, "size %zu usable %zu", sizes[k],
                      r.usable);
        r.err = -1;
        read_one(&r); /* outside any task: a plain blocking call */
        cr_assert(r.err == 0 && r.same);
        unlink(path);
        free(path);
    }
    weft_pool_destroy(pool);
}

Test(io, errors_are_the_syscalls)
{
    void *data = NULL;
    size_t size = 0;
    cr_assert_eq(weft_read_file("/nonexistent/weft", &data, &size), -ENOENT);
    cr_assert_eq(weft_read_file(NULL, &data, &size), -EINVAL);
    cr_assert_eq(weft_read_file("/etc/hostname", NULL, &size), -EINVAL);
    cr_assert_eq(weft_read_file("/etc/hostname", &data, NULL), -EINVAL);
    cr_assert_eq(weft_read_file("/tmp", &data, &size), -EISDIR);
    char buf[8];
    cr_assert_eq(weft_read(-1, buf, sizeof(buf), 0), -EBADF);
    cr_assert_eq(weft_write(-1, buf, sizeof(buf), 0), -EBADF);
    cr_assert_eq(weft_close(-1), -EBADF);
    cr_assert_eq(weft_fsync(-1), -EBADF);
    cr_assert_eq(weft_open("/nonexistent/weft", O_RDONLY, 0), -ENOENT);
    struct statx st;
    cr_assert_eq(weft_statx(AT_FDCWD, "/nonexistent/weft", 0, STATX_SIZE, &st), -ENOENT);
    cr_assert_eq(weft_statx(AT_FDCWD, "/tmp", 0, STATX_TYPE, &st), 0);
    cr_assert(S_ISDIR(st.stx_mode));
}
