/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bench_isolated(void (*fn)(void *arg, double *out, int max), void *arg,
                   double *out, int max)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        double *buf = calloc((size_t)max, sizeof(double));
        for (int i = 0; i < max; i++)
            buf[i] = -1;
        fn(arg, buf, max);
        int n = 0;
        while (n < max && buf[n] >= 0)
            n++;
        ssize_t want = (ssize_t)(n * sizeof(double));
        if (write(fds[1], buf, (size_t)want) != want)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], (char *)out + got, (size_t)max * sizeof(double) - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    return (int)(got / sizeof(double));
}

uint64_t bench_fnv_words(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    const uint64_t prime = 0x100000001b3u;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * prime;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i);
        h = (h ^ w) * prime;
    }
    return h;
}

uint64_t bench_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

uint64_t bench_hash_bytes(const void *data, size_t n)
{
    return bench_fmix64(bench_fnv_words(BENCH_FNV_BASIS, data, n) ^ (uint64_t)n);
}

int bench_run_capture(const char *path, char *const argv[], char *buf, size_t size)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    if (pid == 0) {
        close(fds[0]);
        if (dup2(fds[1], STDOUT_FILENO) < 0)
            _exit(127);
        close(fds[1]);
        execv(path, argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < size && (n = read(fds[0], buf + got, size - 1 - got)) > 0)
        got += (size_t)n;
    if (size)
        buf[got] = 0;
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}
