/* SPDX-License-Identifier: MIT */
/*
 * I/O calls. This version runs every call as the plain blocking syscall, inside a
 * task as well as outside: correct results and errors (-errno), but a task that
 * reads blocks its worker. The io_uring reactor and task suspension (issue 4:
 * lib/fiber.c, one ring per worker, the blocking-thread fallback) replace the
 * bodies below without changing a signature.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void count_io(void)
{
    struct weft__worker *w = weft__self;
    if (w)
        WEFT__COUNT(w, io_ops);
}

#define RET(expr)                                                                     \
    do {                                                                              \
        count_io();                                                                   \
        long r_ = (long)(expr);                                                       \
        return r_ < 0 ? -errno : r_;                                                  \
    } while (0)

WEFT_API int weft_open(const char *path, int flags, mode_t mode)
{
    RET(open(path, flags | O_CLOEXEC, mode));
}

WEFT_API int weft_close(int fd)
{
    RET(close(fd));
}

WEFT_API ssize_t weft_read(int fd, void *buf, size_t len, off_t off)
{
    RET(off == -1 ? read(fd, buf, len) : pread(fd, buf, len, off));
}

WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len, off_t off)
{
    RET(off == -1 ? write(fd, buf, len) : pwrite(fd, buf, len, off));
}

WEFT_API int weft_statx(int dirfd, const char *path, int flags, unsigned mask,
                        struct statx *st)
{
    RET(statx(dirfd, path, flags, mask, st));
}

WEFT_API int weft_fsync(int fd)
{
    RET(fsync(fd));
}

WEFT_API int weft_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    RET(accept4(fd, addr, len, flags));
}

WEFT_API int weft_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    RET(connect(fd, addr, len));
}

WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags)
{
    RET(recv(fd, buf, len, flags));
}

WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags)
{
    RET(send(fd, buf, len, flags | MSG_NOSIGNAL));
}

WEFT_API int weft_read_file(const char *path, void **data, size_t *size)
{
    if (!path || !data || !size)
        return -EINVAL;
    int fd = weft_open(path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    size_t cap = 4096;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1; /* + 1: the read that sees EOF needs no growth */
    /* Files can shrink or grow while we read: read until EOF whatever stat said. */
    size_t len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        if (len == cap) {
            size_t ncap = cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = weft_read(fd, buf + len, cap - len, (off_t)len);
        if (r < 0) {
            if (r == -EINTR)
                continue;
            free(buf);
            close(fd);
            return (int)r;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    *data = buf;
    *size = len;
    return 0;
}

WEFT_API int weft_sleep(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

WEFT_API int weft_yield(void)
{
    sched_yield();
    return 0;
}
