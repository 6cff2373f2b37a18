/* SPDX-License-Identifier: MIT */
/*
 * Wake latency: the time from pushing a task onto an idle pool until it starts.
 *  - outside: an outside thread calls weft_run on a pool whose workers are all
 *    asleep (the injector path: push, then wake a parked worker);
 *  - worker:  a task on worker A spawns while worker B is asleep (the deque path:
 *    push, poke, wake);
 *  - floor:   a plain pthread condition variable wake of a sleeping thread, the
 *    operating system's own cost for the same thing.
 * Each sample first lets the workers go to sleep (they park after a ~50 us search),
 * so every sample measures a real wake-up. Prints medians and the ratio to the floor.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "../common/bench.h"

#define SAMPLES 300
#define IDLE_US 2000

static _Atomic(uint64_t) started;

static int stamp(void *arg)
{
    (void)arg;
    atomic_store_explicit(&started, bench_now_ns(), memory_order_release);
    return 0;
}

static double outside_wake(weft_pool *pool)
{
    double v[SAMPLES];
    for (int k = 0; k < SAMPLES; k++) {
        usleep(IDLE_US);
        uint64_t t0 = bench_now_ns();
        weft_run(pool, stamp, NULL);
        v[k] = (double)(atomic_load_explicit(&started, memory_order_acquire) - t0);
    }
    return bench_median(v, SAMPLES);
}

static _Atomic(uint64_t) pushed;

static int spawner(weft_scope *s, void *arg)
{
    (void)arg;
    usleep(IDLE_US);
    atomic_store_explicit(&started, 0, memory_order_relaxed);
    atomic_store_explicit(&pushed, bench_now_ns(), memory_order_relaxed);
    weft_spawn(s, stamp, NULL);
    /* Block (not spin) so this worker neither runs the task nor holds a CPU the
     * woken worker might need: on 2 cores that would measure the OS scheduler. */
    while (atomic_load_explicit(&started, memory_order_acquire) == 0)
        usleep(200);
    return 0;
}

static int run_spawner(void *arg)
{
    (void)arg;
    return weft_scope_run(NULL, spawner, NULL);
}

static double worker_wake(weft_pool *pool)
{
    double v[SAMPLES];
    for (int k = 0; k < SAMPLES; k++) {
        weft_run(pool, run_spawner, NULL);
        v[k] = (double)(atomic_load_explicit(&started, memory_order_acquire) -
                        atomic_load_explicit(&pushed, memory_order_relaxed));
    }
    return bench_median(v, SAMPLES);
}

/* Floor: condition-variable wake of a sleeping thread. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static int go, quit;

static void *sleeper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!go && !quit)
            pthread_cond_wait(&cv, &mu);
        if (quit)
            break;
        atomic_store_explicit(&started, bench_now_ns(), memory_order_release);
        go = 0;
        pthread_cond_signal(&done_cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static double floor_wake(void)
{
    pthread_t th;
    pthread_create(&th, NULL, sleeper, NULL);
    double v[SAMPLES];
    for (int k = 0; k < SAMPLES; k++) {
        usleep(IDLE_US);
        pthread_mutex_lock(&mu);
        uint64_t t0 = bench_now_ns();
        go = 1;
        pthread_cond_signal(&cv);
        while (go)
            pthread_cond_wait(&done_cv, &mu);
        pthread_mutex_unlock(&mu);
        v[k] = (double)(atomic_load_explicit(&started, memory_order_acquire) - t0);
    }
    pthread_mutex_lock(&mu);
    quit = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(th, NULL);
    return bench_median(v, SAMPLES);
}

int main(void)
{
    weft_pool *pool;
    weft_pool_options o = {.threads = 2};
    if (weft_pool_create(&pool, &o) != 0)
        return 1;
    double out = outside_wake(pool);
    double wk = worker_wake(pool);
    weft_stats st;
    weft_pool_stats(pool, &st);
    weft_pool_destroy(pool);
    double fl = floor_wake();
    printf("RESULT wake path=outside median_ns=%.0f\n", out);
    printf("RESULT wake path=worker median_ns=%.0f\n", wk);
    printf("RESULT wake path=condvar_floor median_ns=%.0f\n", fl);
    printf("\nwake-up latency, idle pool of 2 workers, %d samples, medians\n", SAMPLES);
    printf("%-34s %10s %8s\n", "path", "median us", "vs floor");
    printf("%-34s %10.2f %7.2fx\n", "weft_run from outside thread", out / 1e3, out / fl);
    printf("%-34s %10.2f %7.2fx\n", "weft_spawn from a worker", wk / 1e3, wk / fl);
    printf("%-34s %10.2f %7.2fx\n", "pthread condvar (OS floor)", fl / 1e3, 1.0);
    printf("(parks %llu, wakeups %llu during the weft runs)\n",
           (unsigned long long)st.parks, (unsigned long long)st.wakeups);
    return 0;
}
