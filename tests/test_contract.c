/* SPDX-License-Identifier: MIT */
/*
 * Documented behaviour of include/weft.h that the module suites do not reach:
 *  - every I/O call made in a cancelled scope returns -ECANCELED and does nothing,
 *    and accept, recv and send in flight when the scope is cancelled return it too;
 *  - write -EFAULT and positional writes, fsync's success, recv/send -EFAULT,
 *    O_CREAT with a mode, non-blocking fds, the 0x7ffff000 cut;
 *  - pool options: ring_entries, WEFT_POOL_PIN on every worker, threads ==
 *    WEFT_MAX_THREADS, an oversized stack_size; weft_default_pool's NULL.
 * The I/O checks run inside tasks on both backends and outside any task.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checks.h"
#include "pool.h"
#include "topo.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#else
#define UNDER_TSAN 0
#endif

#define MS 1000000ull

static const unsigned backends[] = {0, WEFT_POOL_NO_URING};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))
#define BE(flags) ((flags) & WEFT_POOL_NO_URING ? "blocking" : "default")

#define ASSERT_CLEAN(what)                                                            \
    do {                                                                              \
        int l_ = atomic_exchange(&bad_line, 0);                                       \
        cr_assert_eq(l_, 0, "%s: check at %s:%d failed (got %lld, want %lld)", what,  \
                     __FILE__, l_, atomic_load(&bad_got), atomic_load(&bad_want));    \
    } while (0)

static weft_pool *pool_with(unsigned threads, unsigned flags)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads, .flags = flags};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    return p;
}

static char *tmpdir_new(void)
{
    char tmpl[] = "/tmp/weft-contract-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void path_in(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* A listening loopback TCP socket; *addr gets its address. */
static int listener(struct sockaddr_in *addr)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(l, 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*addr);
    cr_assert_eq(bind(l, (struct sockaddr *)addr, len), 0);
    cr_assert_eq(listen(l, 16), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    return l;
}

/* ------------------------------------------------------------------------------
 * A cancelled scope: every call returns -ECANCELED without doing anything.
 * ---------------------------------------------------------------------------- */

struct after_cancel {
    weft_scope *s;
    const char *newpath;         /* does not exist; O_CREAT must not create it */
    const char *file;            /* an existing empty file */
    int ffd;                     /* open on it, read-write */
    int pr;                      /* a pipe with one byte in it */
    int listen_fd;               /* a connection is pending on it */
    int csock;                   /* an unconnected TCP socket */
    struct sockaddr_in laddr;
    int sp[2];                   /* a socketpair with one byte readable at sp[0] */
    int sq[2];                   /* an empty socketpair (send on sq[0]) */
    _Atomic(int) ran;
};

static int cancelled_calls(void *p)
{
    struct after_cancel *a = p;
    weft_scope_cancel(a->s, 0); /* this task's own scope, from inside it */
    TCHECK(weft_scope_cancelled(a->s));
    char buf[8] = {0};
    VCHECK(weft_open(a->newpath, O_CREAT | O_WRONLY, 0600), -ECANCELED);
    VCHECK(weft_close(a->ffd), -ECANCELED);
    VCHECK(weft_read(a->pr, buf, 1, -1), -ECANCELED);
    VCHECK(weft_write(a->ffd, "data", 4, 0), -ECANCELED);
    VCHECK(weft_write(a->ffd, "data", 4, -1), -ECANCELED);
    struct statx st;
    memset(&st, 0xa5, sizeof(st));
    VCHECK(weft_statx(AT_FDCWD, a->file, 0, STATX_SIZE, &st), -ECANCELED);
    TCHECK(st.stx_size == 0xa5a5a5a5a5a5a5a5ull); /* untouched */
    VCHECK(weft_fsync(a->ffd), -ECANCELED);
    VCHECK(weft_accept(a->listen_fd, NULL, NULL, 0), -ECANCELED);
    VCHECK(weft_connect(a->csock, (struct sockaddr *)&a->laddr, sizeof(a->laddr)),
           -ECANCELED);
    VCHECK(weft_recv(a->sp[0], buf, 1, 0), -ECANCELED);
    VCHECK(weft_send(a->sq[0], "y", 1, 0), -ECANCELED);
    void *data = (void *)1;
    size_t size = 12345;
    VCHECK(weft_read_file(a->file, &data, &size), -ECANCELED);
    TCHECK(data == (void *)1 && size == 12345);
    double t0 = wt_now_ms();
    VCHECK(weft_sleep(10000 * MS), -ECANCELED);
    TCHECK(wt_now_ms() - t0 < 10000);
    VCHECK(weft_sleep(0), -ECANCELED); /* weft_sleep(0) is weft_yield() */
    VCHECK(weft_yield(), -ECANCELED);
    atomic_store(&a->ran, 1);
    return 0;
}

static int after_cancel_body(weft_scope *s, void *p)
{
    struct after_cancel *a = p;
    a->s = s;
    return weft_spawn(s, cancelled_calls, a);
}

/* Nothing the calls would have done happened. */
static void check_untouched(struct after_cancel *a)
{
    struct stat sb;
    cr_assert_eq(stat(a->newpath, &sb), -1, "weft_open created %s", a->newpath);
    cr_assert_eq(errno, ENOENT);
    cr_assert_neq(fcntl(a->ffd, F_GETFD), -1, "weft_close closed the fd");
    cr_assert_eq(fstat(a->ffd, &sb), 0);
    cr_assert_eq(sb.st_size, 0, "weft_write wrote");
    cr_assert_eq(lseek(a->ffd, 0, SEEK_CUR), 0, "the file position moved");
    char ch = 0;
    cr_assert_eq(read(a->pr, &ch, 1), 1, "weft_read consumed the pipe's byte");
    cr_assert_eq(ch, 'p');
    int c = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    cr_assert_geq(c, 0, "weft_accept took the pending connection (%s)", strerror(errno));
    close(c);
    struct sockaddr_in peer;
    socklen_t plen = sizeof(peer);
    cr_assert_eq(getpeername(a->csock, (struct sockaddr *)&peer, &plen), -1,
                 "weft_connect connected");
    cr_assert_eq(errno, ENOTCONN);
    cr_assert_eq(recv(a->sp[0], &ch, 1, MSG_DONTWAIT), 1, "weft_recv consumed the byte");
    cr_assert_eq(ch, 's');
    cr_assert_eq(recv(a->sq[1], &ch, 1, MSG_DONTWAIT), -1, "weft_send sent");
    cr_assert_eq(errno, EAGAIN);
}

Test(contract, cancelled_scope_io_does_nothing, .timeout = 60)
{
    char *dir = tmpdir_new();
    char newpath[256], file[256];
    path_in(newpath, sizeof(newpath), dir, "new");
    path_in(file, sizeof(file), dir, "file");
    for (size_t b = 0; b < NBACKENDS; b++) {
        weft_pool *pool = pool_with(2, backends[b]);
        struct after_cancel a = {.newpath = newpath, .file = file};
        a.ffd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(a.ffd, 0);
        int fds[2];
        cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
        a.pr = fds[0];
        cr_assert_eq(write(fds[1], "p", 1), 1);
        a.listen_fd = listener(&a.laddr);
        int pending = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(pending, (struct sockaddr *)&a.laddr, sizeof(a.laddr)), 0);
        a.csock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a.sp), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a.sq), 0);
        cr_assert_eq(send(a.sp[1], "s", 1, 0), 1);
        atomic_init(&a.ran, 0);
        int r = weft_scope_run(pool, after_cancel_body, &a);
        cr_assert_eq(r, -ECANCELED, "[%s] scope", BE(backends[b]));
        cr_assert_eq(atomic_load(&a.ran), 1, "[%s] the task did not run", BE(backends[b]));
        ASSERT_CLEAN(BE(backends[b]));
        check_untouched(&a);
        close(a.ffd);
        close(fds[0]);
        close(fds[1]);
        close(a.listen_fd);
        close(pending);
        close(a.csock);
        close(a.sp[0]);
        close(a.sp[1]);
        close(a.sq[0]);
        close(a.sq[1]);
        unlink(file);
        weft_pool_destroy(pool);
    }
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------
 * accept, recv and send in flight when the scope is cancelled.
 * ---------------------------------------------------------------------------- */

struct in_flight {
    weft_pool *pool;
    weft_scope *s;
    int listen_fd;               /* nobody connects */
    int rp[2];                   /* nothing is sent to rp[0] */
    int wp[2];                   /* wp[0]'s send buffer is full */
    _Atomic(unsigned) started;
    _Atomic(long long) acc, rcv, snd;
    _Atomic(bool) in_flight;
};

#define UNSET (-999999)

static int f_accept(void *p)
{
    struct in_flight *f = p;
    atomic_fetch_add(&f->started, 1);
    atomic_store(&f->acc, weft_accept(f->listen_fd, NULL, NULL, 0));
    return 0;
}

static int f_recv(void *p)
{
    struct in_flight *f = p;
    char ch;
    atomic_fetch_add(&f->started, 1);
    atomic_store(&f->rcv, weft_recv(f->rp[0], &ch, 1, 0));
    return 0;
}

static int f_send(void *p)
{
    struct in_flight *f = p;
    static const char big[65536];
    atomic_fetch_add(&f->started, 1);
    atomic_store(&f->snd, weft_send(f->wp[0], big, sizeof(big), 0));
    return 0;
}

static int in_flight_body(weft_scope *s, void *p)
{
    struct in_flight *f = p;
    f->s = s;
    int r = weft_spawn(s, f_accept, f);
    if (!r)
        r = weft_spawn(s, f_recv, f);
    if (!r)
        r = weft_spawn(s, f_send, f);
    if (r)
        return r;
    /* In flight: all three started, none returned, and both workers idle (so no
     * worker runs them: they are suspended in their calls). Waited for, not slept. */
    double end = wt_now_ms() + 10000.0 * WT_SLOW;
    while (atomic_load(&f->started) < 3 && wt_now_ms() < end)
        wt_poll_pause();
    bool idle = wt_wait_parked(f->pool, 2, 10000);
    atomic_store(&f->in_flight, idle && atomic_load(&f->started) == 3 &&
                                    atomic_load(&f->acc) == UNSET &&
                                    atomic_load(&f->rcv) == UNSET &&
                                    atomic_load(&f->snd) == UNSET);
    weft_scope_cancel(s, 0);
    return 0;
}

static void fill_send_buffer(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    cr_assert_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    char chunk[4096];
    memset(chunk, 7, sizeof(chunk));
    while (send(fd, chunk, sizeof(chunk), 0) > 0)
        ;
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(fcntl(fd, F_SETFL, fl), 0);
}

Test(contract, cancel_accept_recv_send_in_flight, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        struct in_flight f = {.pool = pool_with(2, backends[b])};
        struct sockaddr_in addr;
        f.listen_fd = listener(&addr);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f.rp), 0);
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f.wp), 0);
        fill_send_buffer(f.wp[0]);
        atomic_init(&f.started, 0);
        atomic_init(&f.acc, UNSET);
        atomic_init(&f.rcv, UNSET);
        atomic_init(&f.snd, UNSET);
        atomic_init(&f.in_flight, false);
        int r = weft_scope_run(f.pool, in_flight_body, &f);
        const char *be = BE(backends[b]);
        cr_assert_eq(r, -ECANCELED, "[%s] scope", be);
        cr_assert(atomic_load(&f.in_flight), "[%s] the calls were not all in flight when "
                  "the scope was cancelled", be);
        cr_assert_eq(atomic_load(&f.acc), -ECANCELED, "[%s] accept", be);
        cr_assert_eq(atomic_load(&f.rcv), -ECANCELED, "[%s] recv", be);
        cr_assert_eq(atomic_load(&f.snd), -ECANCELED, "[%s] send", be);
        close(f.listen_fd);
        close(f.rp[0]);
        close(f.rp[1]);
        close(f.wp[0]);
        close(f.wp[1]);
        weft_pool_destroy(f.pool);
    }
}

/* ------------------------------------------------------------------------------
 * Writes, fsync, open's O_CREAT and mode, -EFAULT from write/recv/send.
 * ---------------------------------------------------------------------------- */

struct files {
    const char *dir;
    int round;
};

static int file_calls(void *p)
{
    struct files *f = p;
    char path[256];
    snprintf(path, sizeof(path), "%s/f%d", f->dir, f->round);
    /* O_CREAT with a mode (the test set umask 022), O_EXCL refusing a second time. */
    int fd = weft_open(path, O_CREAT | O_EXCL | O_RDWR, 0640);
    TCHECK(fd >= 0);
    if (fd < 0)
        return 0;
    struct stat sb;
    TCHECK(fstat(fd, &sb) == 0 && (sb.st_mode & 0777) == 0640);
    VCHECK(weft_open(path, O_CREAT | O_EXCL | O_RDWR, 0640), -EEXIST);
    /* Positional writes leave the file position alone; off == -1 uses and advances
     * it. */
    VCHECK(weft_write(fd, "tail", 4, 10), 4);
    VCHECK(lseek(fd, 0, SEEK_CUR), 0);
    VCHECK(weft_write(fd, "he", 2, -1), 2);
    VCHECK(weft_write(fd, "ad", 2, -1), 2);
    VCHECK(lseek(fd, 0, SEEK_CUR), 4);
    VCHECK(weft_write(fd, "mid", 3, 5), 3);
    VCHECK(lseek(fd, 0, SEEK_CUR), 4);
    char buf[32] = {0};
    VCHECK(pread(fd, buf, sizeof(buf), 0), 14);
    TCHECK(memcmp(buf, "head\0mid\0\0tail", 14) == 0);
    VCHECK(weft_read(fd, buf, 4, 10), 4);
    TCHECK(memcmp(buf, "tail", 4) == 0);
    /* fsync's success path. */
    VCHECK(weft_fsync(fd), 0);
    /* A bad buffer is the syscall's -EFAULT. */
    VCHECK(weft_write(fd, (const void *)8, 16, 0), -EFAULT);
    VCHECK(weft_write(fd, (const void *)8, 16, -1), -EFAULT);
    int sp[2];
    TCHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
    VCHECK(weft_send(sp[0], (const void *)8, 16, 0), -EFAULT);
    TCHECK(send(sp[1], "abc", 3, 0) == 3);
    VCHECK(weft_recv(sp[0], (void *)8, 16, 0), -EFAULT);
    close(sp[0]);
    close(sp[1]);
    VCHECK(weft_close(fd), 0);
    VCHECK(weft_close(fd), -EBADF);
    unlink(path);
    return 0;
}

Test(contract, writes_fsync_open_mode_efault, .timeout = 60)
{
    char *dir = tmpdir_new();
    mode_t old = umask(022);
    struct files f = {dir, 0};
    for (size_t b = 0; b < NBACKENDS; b++) {
        weft_pool *pool = pool_with(2, backends[b]);
        f.round++;
        cr_assert_eq(weft_run(pool, file_calls, &f), 0);
        ASSERT_CLEAN(BE(backends[b]));
        weft_pool_destroy(pool);
    }
    f.round++;
    file_calls(&f); /* outside any task */
    ASSERT_CLEAN("outside a task");
    umask(old);
    rmdir(dir);
    free(dir);
}

/* ------------------------------------------------------------------------------
 * Non-blocking fds: the task waits for data (suspended), its worker does not.
 * ---------------------------------------------------------------------------- */

struct nb {
    int r[8], w[8];
    _Atomic(unsigned) waiting;
};

static int nb_reader(void *p)
{
    struct nb *n = p;
    unsigned k = atomic_fetch_add(&n->waiting, 1);
    char ch = 0;
    VCHECK(weft_read(n->r[k], &ch, 1, -1), 1);
    VCHECK(ch, 'a' + (int)k);
    return 0;
}

static int nb_body(weft_scope *s, void *p)
{
    struct nb *n = p;
    for (int k = 0; k < 8; k++)
        if (weft_spawn(s, nb_reader, n) != 0)
            return -1;
    /* Eight readers of empty non-blocking pipes on two workers: they can all wait at
     * once only if none holds its worker. */
    double end = wt_now_ms() + 10000.0 * WT_SLOW;
    while (atomic_load(&n->waiting) < 8 && wt_now_ms() < end)
        wt_poll_pause();
    TCHECK(atomic_load(&n->waiting) == 8);
    for (int k = 0; k < 8; k++) {
        char ch = (char)('a' + k);
        TCHECK(write(n->w[k], &ch, 1) == 1);
    }
    return 0;
}

Test(contract, nonblocking_fds_wait_in_the_task, .timeout = 60)
{
    for (size_t b = 0; b < NBACKENDS; b++) {
        weft_pool *pool = pool_with(2, backends[b]);
        struct nb n;
        for (int k = 0; k < 8; k++) {
            int fds[2];
            cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
            n.r[k] = fds[0];
            n.w[k] = fds[1];
        }
        atomic_init(&n.waiting, 0);
        cr_assert_eq(weft_scope_run(pool, nb_body, &n), 0);
        ASSERT_CLEAN(BE(backends[b]));
        for (int k = 0; k < 8; k++) {
            close(n.r[k]);
            close(n.w[k]);
        }
        weft_pool_destroy(pool);
    }
    /* Outside a task the calls are the plain syscalls: O_NONBLOCK holds. */
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    char ch;
    cr_assert_eq(weft_read(fds[0], &ch, 1, -1), -EAGAIN);
    close(fds[0]);
    close(fds[1]);
}

/* ------------------------------------------------------------------------------
 * Lengths above 0x7ffff000 are cut to that, as read(2) does. io_uring's lengths are
 * 32 bits, so without the cut a length of 4 GiB + 4 KiB would reach the kernel as
 * 4 KiB. Shown without touching gigabytes: the buffer is 5 GiB of reserved address
 * space (MAP_NORESERVE) of which only the first 8 KiB are ever written:
 *  - a read of len 4 GiB + 4 KiB from a pipe holding 8 KiB returns 8 KiB (cut: the
 *    pipe's 8 KiB; uncut: 4 KiB);
 *  - a write of len 5 GiB to /dev/null returns 0x7ffff000 (/dev/null reads nothing
 *    from the buffer; uncut, the ring would see 1 GiB).
 * ---------------------------------------------------------------------------- */

#define BIG_LEN ((size_t)5 << 30)
#define CUT 0x7ffff000

struct cut {
    char *buf;                   /* BIG_LEN of address space */
    int pr, pw, null_fd;
};

static int cut_calls(void *p)
{
    struct cut *c = p;
    char fill[8192];
    memset(fill, 'z', sizeof(fill));
    TCHECK(write(c->pw, fill, sizeof(fill)) == (ssize_t)sizeof(fill));
    VCHECK(weft_read(c->pr, c->buf, ((size_t)4 << 30) + 4096, -1), 8192);
    TCHECK(c->buf[0] == 'z' && c->buf[8191] == 'z');
    if (!UNDER_TSAN) /* (TSan's write interceptor would shadow-map 2 GiB) */
        VCHECK(weft_write(c->null_fd, c->buf, BIG_LEN, -1), CUT);
    return 0;
}

Test(contract, lengths_cut_at_0x7ffff000, .timeout = 60)
{
    struct cut c;
    c.buf = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c.buf == MAP_FAILED)
        cr_skip_test("cannot reserve 5 GiB of address space here");
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    cr_assert_geq(fcntl(fds[1], F_SETPIPE_SZ, 65536), 8192);
    c.pr = fds[0];
    c.pw = fds[1];
    c.null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(c.null_fd, 0);
    for (size_t b = 0; b < NBACKENDS; b++) {
        weft_pool *pool = pool_with(2, backends[b]);
        cr_assert_eq(weft_run(pool, cut_calls, &c), 0);
        ASSERT_CLEAN(BE(backends[b]));
        weft_pool_destroy(pool);
    }
    cut_calls(&c); /* outside any task: the kernel's own cut */
    ASSERT_CLEAN("outside a task");
    close(fds[0]);
    close(fds[1]);
    close(c.null_fd);
    munmap(c.buf, BIG_LEN);
}

/* ------------------------------------------------------------------------------
 * Pool options.
 * ---------------------------------------------------------------------------- */

struct many_reads {
    unsigned n;
    int r[64], w[64];
    _Atomic(unsigned) waiting;
};

static int mr_reader(void *p)
{
    struct many_reads *m = p;
    unsigned k = atomic_fetch_add(&m->waiting, 1);
    char ch;
    VCHECK(weft_read(m->r[k], &ch, 1, -1), 1);
    VCHECK(weft_sleep(100000), 0);
    return 0;
}

static int mr_body(weft_scope *s, void *p)
{
    struct many_reads *m = p;
    for (unsigned k = 0; k < m->n; k++)
        if (weft_spawn(s, mr_reader, m) != 0)
            return -1;
    double end = wt_now_ms() + 10000.0 * WT_SLOW;
    while (atomic_load(&m->waiting) < m->n && wt_now_ms() < end)
        wt_poll_pause();
    TCHECK(atomic_load(&m->waiting) == m->n);
    for (unsigned k = 0; k < m->n; k++)
        TCHECK(write(m->w[k], "x", 1) == 1);
    return 0;
}

/* ring_entries: a ring of 1 or 2 entries still carries 64 waits at once per pool (a
 * full submission queue is flushed, not an error); a size io_uring refuses (above
 * its 32768) makes the pool use the blocking backend, as weft.h says. */
Test(contract, ring_entries, .timeout = 60)
{
    static const unsigned sizes[] = {1, 2, 8, 1u << 20};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        weft_pool *p = NULL;
        weft_pool_options o = {.threads = 2, .ring_entries = sizes[k]};
        cr_assert_eq(weft_pool_create(&p, &o), 0, "ring_entries %u", sizes[k]);
        const char *be = weft__pool_io_backend(p);
        cr_log_info("ring_entries %u: %s backend", sizes[k], be);
        if (sizes[k] > 32768)
            cr_assert(strcmp(be, "blocking") == 0, "ring_entries %u: %s", sizes[k], be);
        struct many_reads m = {.n = 64};
        for (unsigned i = 0; i < m.n; i++) {
            int fds[2];
            cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
            m.r[i] = fds[0];
            m.w[i] = fds[1];
        }
        atomic_init(&m.waiting, 0);
        cr_assert_eq(weft_scope_run(p, mr_body, &m), 0, "ring_entries %u", sizes[k]);
        ASSERT_CLEAN(be);
        for (unsigned i = 0; i < m.n; i++) {
            close(m.r[i]);
            close(m.w[i]);
        }
        weft_pool_destroy(p);
    }
}

/* WEFT_POOL_PIN: worker i runs on the i-th CPU this process may use, for every i
 * (each task below holds its worker until every worker has one, so n tasks land on
 * n distinct workers), both by the flag and by WEFT_PIN=1. */
struct pins {
    weft_pool *pool;
    unsigned n;
    _Atomic(unsigned) seen;
    _Atomic(int) cpu_of[64];     /* the single CPU of worker i's mask, or -1 */
};

static int pin_task(void *p)
{
    struct pins *ps = p;
    struct weft__worker *w = weft__self;
    cpu_set_t set;
    CPU_ZERO(&set);
    TCHECK(sched_getaffinity(0, sizeof(set), &set) == 0);
    int cpu = -1;
    if (CPU_COUNT(&set) == 1)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set))
                cpu = c;
    TCHECK(w && w->id < ps->n);
    if (w && w->id < ps->n)
        atomic_store(&ps->cpu_of[w->id], cpu);
    atomic_fetch_add(&ps->seen, 1);
    double end = wt_now_ms() + 10000.0 * WT_SLOW;
    while (atomic_load(&ps->seen) < ps->n && wt_now_ms() < end)
        sched_yield();
    return 0;
}

static int pin_body(weft_scope *s, void *p)
{
    struct pins *ps = p;
    for (unsigned i = 0; i < ps->n; i++)
        if (weft_spawn(s, pin_task, ps) != 0)
            return -1;
    return 0;
}

static void check_pins(unsigned flags, bool env)
{
    struct weft__topo t;
    cr_assert_eq(weft__topo_init(&t), 0);
    unsigned n = t.ncpus < 64 ? t.ncpus : 64;
    if (env)
        setenv("WEFT_PIN", "1", 1);
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = n, .flags = flags};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    unsetenv("WEFT_PIN");
    struct pins ps = {.pool = p, .n = n};
    atomic_init(&ps.seen, 0);
    for (unsigned i = 0; i < 64; i++)
        atomic_init(&ps.cpu_of[i], -2);
    cr_assert_eq(weft_scope_run(p, pin_body, &ps), 0);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&ps.seen), n);
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&ps.cpu_of[i]), (int)t.cpus[i], "%s: worker %u's mask "
                     "(-1: not one CPU, -2: no task ran there)", env ? "WEFT_PIN=1" : "flag",
                     i);
    weft_pool_destroy(p);
    weft__topo_free(&t);
}

Test(contract, pin_every_worker, .timeout = 60)
{
    check_pins(WEFT_POOL_PIN, false);
    check_pins(0, true);
}

/* threads == WEFT_MAX_THREADS is accepted (and one more is not: test_badinput). */
static int count_range(void *ctx, size_t lo, size_t hi)
{
    atomic_fetch_add_explicit((_Atomic(size_t) *)ctx, hi - lo, memory_order_relaxed);
    return 0;
}

Test(contract, max_threads, .timeout = 120)
{
    weft_pool *p = NULL;
    /* The blocking backend: 1024 rings would lock memory, not test the count. */
    weft_pool_options o = {.threads = WEFT_MAX_THREADS, .flags = WEFT_POOL_NO_URING,
                           .stack_size = 16384 * (size_t)WT_SLOW};
    int r = weft_pool_create(&p, &o);
    if (r == -EAGAIN)
        cr_skip_test("this machine will not start %u threads (-EAGAIN)", WEFT_MAX_THREADS);
    cr_assert_eq(r, 0);
    cr_assert_eq(weft_pool_threads(p), WEFT_MAX_THREADS);
    _Atomic(size_t) sum = 0;
    cr_assert_eq(weft_par_for(p, 100000, 10, count_range, &sum), 0);
    cr_assert_eq(atomic_load(&sum), 100000);
    weft_pool_destroy(p);
}

/* stack_size: a size so large that a stack's mapping cannot even be described
 * (within a few pages of SIZE_MAX) is -EINVAL; one that merely cannot be mapped gives
 * a pool whose tasks do not suspend (the waits then hold their workers), with a
 * warning. */
static int sleep_in_task(void *p)
{
    (void)p;
    return weft_sleep(1000);
}

Test(contract, oversized_stack_size, .timeout = 60)
{
    static const size_t bad[] = {SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX - 8192};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        weft_pool *p = (weft_pool *)1;
        weft_pool_options o = {.threads = 1, .stack_size = bad[k]};
        cr_assert_eq(weft_pool_create(&p, &o), -EINVAL, "stack_size %#zx", bad[k]);
        cr_assert_null(p);
    }
    if (UNDER_SANITIZER)
        return; /* (their allocators abort on such a mapping request) */
    /* Describable but not mappable: the first worker stack cannot be made, and the
     * pool is not created (nothing leaks, and a smaller one works). */
    weft_pool *p = (weft_pool *)1;
    weft_pool_options o = {.threads = 1, .stack_size = SIZE_MAX / 2};
    cr_assert_eq(weft_pool_create(&p, &o), -ENOMEM);
    cr_assert_null(p);
    o.stack_size = 64 * 1024;
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    cr_assert_eq(weft_run(p, sleep_in_task, NULL), 0);
    weft_pool_destroy(p);
}

/* weft_default_pool() returns NULL when the pool cannot be created. Provoked in a
 * child process (no threads, no pool yet) under an address-space limit just above
 * what it uses: no worker stack can be mapped. The calls that need the default pool
 * then say -ENOMEM and call nothing (weft_run, weft_scope_run, the loops), and
 * weft_join from outside any task runs its two functions one after the other. Not under sanitizers: their runtimes reserve
 * terabytes of shadow memory and cannot run under such a limit. */
static int never_fn(void *p)
{
    (void)p;
    _exit(90);
}

static int never_body(weft_scope *s, void *p)
{
    (void)s;
    (void)p;
    _exit(91);
}

static int never_range(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    (void)lo;
    (void)hi;
    _exit(92);
}

static int never_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    (void)i;
    (void)slot;
    _exit(93);
}

static int never_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    (void)sctx;
    (void)first;
    (void)count;
    (void)slots;
    _exit(94);
}

static int set_flag(void *p)
{
    *(int *)p = 1;
    return 0;
}

static int fail_5(void *p)
{
    *(int *)p = 1;
    return 5;
}

static long vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%ld", &pages) != 1)
        pages = -1;
    fclose(f);
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

Test(contract, default_pool_null_when_it_cannot_be_created, .timeout = 60)
{
    if (UNDER_SANITIZER)
        cr_skip_test("sanitizer runtimes cannot run under RLIMIT_AS");
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        long vm = vm_bytes();
        if (vm < 0)
            _exit(2);
        /* Room for a little malloc, not for a thread's stack (8 MiB by default). */
        struct rlimit rl = {(rlim_t)vm + (4 << 20), (rlim_t)vm + (4 << 20)};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(3);
        if (weft_default_pool() != NULL)
            _exit(10);
        if (weft_run(NULL, never_fn, NULL) != -ENOMEM)
            _exit(11);
        if (weft_scope_run(NULL, never_body, NULL) != -ENOMEM)
            _exit(12);
        long out[4];
        if (weft_par_for(NULL, 4, 0, never_range, NULL) != -ENOMEM)
            _exit(14);
        if (weft_par_collect(NULL, 4, out, sizeof(out[0]), never_item, NULL) != -ENOMEM)
            _exit(15);
        if (weft_par_stream(NULL, 4, out, sizeof(out[0]), never_item, NULL, never_sink,
                            NULL, WEFT_ORDERED) != -ENOMEM)
            _exit(16);
        /* weft_join outside any task runs sequentially when there is no pool. */
        int a = 0, b = 0;
        if (weft_join(fail_5, &a, set_flag, &b) != 5 || !a || !b)
            _exit(17);
        if (weft_default_pool() != NULL) /* still NULL; no half-made pool */
            _exit(13);
        _exit(0);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died (status %#x)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "child check %d failed", WEXITSTATUS(status));
}
