/* SPDX-License-Identifier: MIT */
/*
 * A weft program for tests/test_jobserver_make.sh: runs ITEMS items on a pool of
 * THREADS workers, each item blocking its worker SLEEP_US microseconds, and counts
 * the items running at once, in this process and across all probes sharing
 * COUNTER_FILE (a MAP_SHARED file: a running count and its maximum).
 *
 *   js_probe COUNTER_FILE THREADS ITEMS SLEEP_US
 *
 * Prints "local_max=N tokens_peak=P tokens_now=T" and exits 0, or 1 when the pool
 * fails, or when a jobserver is in use (tokens_peak > 0) and more than 1 + P items
 * ran at once here, or tokens are still held after the pool went idle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"

struct shared {
    _Atomic(int) running, max;
};

static struct shared *shm;
static _Atomic(int) running, local_max;
static long sleep_us;

static void raise_max(_Atomic(int) *max, int v)
{
    int m = atomic_load_explicit(max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(max, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

static int item(void *ctx, size_t lo, size_t hi)
{
    (void)ctx;
    for (size_t i = lo; i < hi; i++) {
        raise_max(&local_max, atomic_fetch_add_explicit(&running, 1, memory_order_relaxed) + 1);
        if (shm)
            raise_max(&shm->max,
                      atomic_fetch_add_explicit(&shm->running, 1, memory_order_relaxed) + 1);
        struct timespec ts = {0, sleep_us * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        if (shm)
            atomic_fetch_sub_explicit(&shm->running, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&running, 1, memory_order_relaxed);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: js_probe COUNTER_FILE THREADS ITEMS SLEEP_US\n");
        return 2;
    }
    unsigned threads = (unsigned)atoi(argv[2]);
    size_t items = (size_t)atol(argv[3]);
    sleep_us = atol(argv[4]);
    int fd = open(argv[1], O_RDWR | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 4096) != 0) {
        perror(argv[1]);
        return 1;
    }
    shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (shm == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    weft_pool *pool;
    weft_pool_options o = {.threads = threads};
    int err = weft_pool_create(&pool, &o);
    if (err) {
        fprintf(stderr, "js_probe: weft_pool_create: %d\n", err);
        return 1;
    }
    err = weft_par_for(pool, items, 1, item, NULL);
    weft_stats st;
    weft_pool_stats(pool, &st);
    /* Idle now: the cached tokens go back within 100 ms (wait up to 10 s). */
    weft_stats idle = st;
    for (int k = 0; k < 1000 && idle.jobserver_tokens; k++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        weft_pool_stats(pool, &idle);
    }
    weft_pool_destroy(pool);
    int lm = atomic_load(&local_max);
    printf("local_max=%d tokens_peak=%llu tokens_now=%llu\n", lm,
           (unsigned long long)st.jobserver_tokens_peak,
           (unsigned long long)idle.jobserver_tokens);
    if (err) {
        fprintf(stderr, "js_probe: weft_par_for: %d\n", err);
        return 1;
    }
    if (st.jobserver_tokens_peak && (uint64_t)lm > 1 + st.jobserver_tokens_peak) {
        fprintf(stderr, "js_probe: %d items at once with at most %llu tokens\n", lm,
                (unsigned long long)st.jobserver_tokens_peak);
        return 1;
    }
    if (idle.jobserver_tokens) {
        fprintf(stderr, "js_probe: %llu tokens still held after 10 s idle\n",
                (unsigned long long)idle.jobserver_tokens);
        return 1;
    }
    return 0;
}
