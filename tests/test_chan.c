/* SPDX-License-Identifier: MIT */
/*
 * Events and channels: waiters suspend the task, not the worker (1 worker, 100 tasks
 * blocked, no deadlock), every waiter of an event wakes (tasks on several workers and
 * outside threads), channels are FIFO and lose or duplicate nothing (MPMC, outside
 * threads on either end), close and cancellation semantics (counted elements), bad
 * input. No test sleeps: "the waiters are blocked" is observed through the queues'
 * lengths (testing hooks), never assumed after a delay.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "checks.h"

/* Testing hooks (lib/waitq.h): waiters on the queues right now. */
size_t weft__event_waiters(weft_event *e);
void weft__chan_waiters(weft_chan *c, size_t *senders, size_t *receivers);

static size_t chan_senders(weft_chan *c)
{
    size_t s, r;
    weft__chan_waiters(c, &s, &r);
    return s;
}

static size_t chan_receivers(weft_chan *c)
{
    size_t s, r;
    weft__chan_waiters(c, &s, &r);
    return r;
}

/* Wait (on an outside thread) or yield (in a task) until pred(arg) >= n. */
static void until(size_t (*count)(void *), void *arg, size_t n)
{
    while (count(arg) < n)
        weft_yield(); /* outside a task: sched_yield() */
}

/* weft_scope_run with the body inside a task, so that its spawns go on the worker's
 * deque and a task that waits with weft_yield (until()) lets them run. (From an outside
 * thread spawns go through the injector, which a worker looks at only after its
 * yielded tasks: on one worker a yield loop would never let them start.) */
struct in_task {
    weft_pool *pool;
    int (*body)(weft_scope *, void *);
    void *arg;
};

static int in_task_fn(void *p)
{
    struct in_task *t = p;
    return weft_scope_run(t->pool, t->body, t->arg);
}

static int run_scope(weft_pool *pool, int (*body)(weft_scope *, void *), void *arg)
{
    struct in_task t = {pool, body, arg};
    return weft_run(pool, in_task_fn, &t);
}

static size_t ev_waiters(void *e) { return weft__event_waiters(e); }
static size_t ch_senders(void *c) { return chan_senders(c); }
static size_t ch_receivers(void *c) { return chan_receivers(c); }

/* ---- events: basics ------------------------------------------------------------ */

Test(event, basics)
{
    static weft_event zeroed; /* static storage: all zero is unset */
    weft_event init = WEFT_EVENT_INIT;
    weft_event *evs[] = {&zeroed, &init};
    for (int i = 0; i < 2; i++) {
        weft_event *e = evs[i];
        cr_assert(!weft_event_is_set(e));
        weft_event_set(e);
        cr_assert(weft_event_is_set(e));
        cr_assert_eq(weft_event_wait(e), 0);
        weft_event_set(e); /* again: a no-op */
        cr_assert(weft_event_is_set(e));
        weft_event_reset(e);
        cr_assert(!weft_event_is_set(e));
        weft_event_reset(e);
        cr_assert(!weft_event_is_set(e));
        weft_event_set(e);
        cr_assert_eq(weft_event_wait(e), 0);
    }
    weft_event m;
    memset(&m, 0, sizeof(m));
    cr_assert(!weft_event_is_set(&m));
    cr_assert_leq(sizeof(weft_event), 2 * sizeof(void *));
    /* NULL */
    cr_assert_eq(weft_event_wait(NULL), -EINVAL);
    cr_assert(!weft_event_is_set(NULL));
    weft_event_set(NULL);
    weft_event_reset(NULL);
}

/* ---- events: many waiters --------------------------------------------------------- */

struct evw {
    weft_event ev;
    int payload;            /* written before the set, read by waiters after the wait */
    _Atomic(int) woke, bad;
};

static int ev_wait_task(void *p)
{
    struct evw *x = p;
    int r = weft_event_wait(&x->ev);
    if (r != 0 || x->payload != 42)
        atomic_fetch_add(&x->bad, 1);
    atomic_fetch_add(&x->woke, 1);
    return 0;
}

static void *ev_wait_thread(void *p)
{
    ev_wait_task(p);
    return NULL;
}

struct evmany {
    struct evw *x;
    size_t tasks, waiters;  /* waiters: tasks + outside threads, all must be queued */
    bool set_inside;
};

static int ev_setter_task(void *p)
{
    struct evmany *m = p;
    until(ev_waiters, &m->x->ev, m->waiters);
    m->x->payload = 42;
    weft_event_set(&m->x->ev);
    return 0;
}

static int ev_many_body(weft_scope *s, void *arg)
{
    struct evmany *m = arg;
    for (size_t i = 0; i < m->tasks; i++)
        TCHECK(weft_spawn(s, ev_wait_task, m->x) == 0);
    if (m->set_inside)
        return weft_spawn(s, ev_setter_task, m);
    until(ev_waiters, &m->x->ev, m->waiters);
    TCHECK(atomic_load(&m->x->woke) == 0);
    m->x->payload = 42;
    weft_event_set(&m->x->ev);
    return 0;
}

static void ev_many(unsigned threads, size_t tasks, size_t outside, bool set_inside)
{
    weft_pool *pool = mkpool(threads);
    struct evw x = {.payload = 0};
    pthread_t th[8];
    for (size_t i = 0; i < outside; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, ev_wait_thread, &x), 0);
    struct evmany m = {&x, tasks, tasks + outside, set_inside};
    cr_assert_eq(run_scope(pool, ev_many_body, &m), 0);
    ASSERT_NO_BAD();
    for (size_t i = 0; i < outside; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&x.woke), (int)(tasks + outside));
    cr_assert_eq(atomic_load(&x.bad), 0);
    cr_assert_eq(weft__event_waiters(&x.ev), 0);
    weft_pool_destroy(pool);
}

Test(event, many_waiters_set_outside)
{
    ev_many(2, 200, 4, false);
}

Test(event, many_waiters_set_inside)
{
    ev_many(2, 200, 4, true);
}

/* One worker: 100 tasks suspended on the event, and the task that sets it still
 * runs (a wait that blocked the worker would deadlock here). */
Test(event, one_worker_hundred_waiters)
{
    ev_many(1, 100, 0, true);
    ev_many(1, 100, 2, true);
}

/* Reuse: set, reset once every waiter is back, wait again. */
Test(event, reset_and_reuse)
{
    weft_pool *pool = mkpool(2);
    for (int round = 0; round < 5; round++) {
        struct evw x = {.payload = 0};
        struct evmany m = {&x, 20, 20, round & 1};
        cr_assert_eq(run_scope(pool, ev_many_body, &m), 0);
    ASSERT_NO_BAD();
        cr_assert_eq(atomic_load(&x.woke), 20);
        weft_event_reset(&x.ev);
        cr_assert(!weft_event_is_set(&x.ev));
    }
    weft_pool_destroy(pool);
}

/* The set is the setter's last access: a waiter may free the event as soon as it sees
 * it set, and the receiver of a channel's last element may destroy the channel while
 * the sender is still returning (ASan checks both). */
struct freeing {
    weft_event *e;
    weft_chan *c;
};

static int set_it(void *p)
{
    weft_event_set(((struct freeing *)p)->e);
    return 0;
}

static int send_it(void *p)
{
    int v = 1;
    TCHECK(weft_chan_send(((struct freeing *)p)->c, &v) == 0);
    return 0;
}

static int free_body(weft_scope *s, void *arg)
{
    (void)arg;
    for (int i = 0; i < SCALED(300); i++) {
        struct freeing *f = malloc(sizeof(*f));
        weft_event *e = malloc(sizeof(*e));
        TCHECK(f && e);
        if (!f || !e)
            return -ENOMEM;
        *e = (weft_event)WEFT_EVENT_INIT;
        f->e = e;
        TCHECK(weft_chan_create(&f->c, 1, sizeof(int)) == 0);
        struct freeing copy = *f;
        TCHECK(weft_spawn_copy(s, set_it, &copy, sizeof(copy)) == 0);
        TCHECK(weft_spawn_copy(s, send_it, &copy, sizeof(copy)) == 0);
        if (i & 1)
            while (!weft_event_is_set(e))
                weft_yield();
        else
            TCHECK(weft_event_wait(e) == 0);
        free(e);
        int v = 0;
        TCHECK(weft_chan_recv(f->c, &v) == 0 && v == 1);
        weft_chan_destroy(f->c);
        free(f);
    }
    return 0;
}

static void *set_thread(void *p)
{
    set_it(p);
    return NULL;
}

static void *send_thread(void *p)
{
    int v = 1;
    if (weft_chan_send(((struct freeing *)p)->c, &v) != 0)
        TCHECK(0);
    return NULL;
}

Test(event, waiter_frees_after_set)
{
    /* Threads: the setter and the freeing waiter run at the same time. */
    for (int i = 0; i < SCALED(300); i++) {
        struct freeing f = {malloc(sizeof(weft_event)), NULL};
        cr_assert_not_null(f.e);
        *f.e = (weft_event)WEFT_EVENT_INIT;
        cr_assert_eq(weft_chan_create(&f.c, 1, sizeof(int)), 0);
        pthread_t a, b;
        cr_assert_eq(pthread_create(&a, NULL, set_thread, &f), 0);
        cr_assert_eq(pthread_create(&b, NULL, send_thread, &f), 0);
        if (i & 1)
            while (!weft_event_is_set(f.e))
                ;
        else
            cr_assert_eq(weft_event_wait(f.e), 0);
        free(f.e);
        int v = 0;
        cr_assert_eq(weft_chan_recv(f.c, &v), 0);
        cr_assert_eq(v, 1);
        weft_chan_destroy(f.c);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
    }
    ASSERT_NO_BAD();
    /* Tasks. */
    weft_pool *pool = mkpool(2);
    cr_assert_eq(run_scope(pool, free_body, NULL), 0);
    ASSERT_NO_BAD();
    weft_pool_destroy(pool);
}

/* An event shared between pools: a task of pool A waits, a task of pool B sets. The
 * waiter must resume on a worker of its own pool. */
struct cross {
    weft_pool *a, *b;
    weft_event ev;
    _Atomic(int) on_a;
};

static int probe_fn(void *p)
{
    *(pthread_t *)p = pthread_self();
    return 0;
}

/* weft_run from a worker of pool calls fn in place; from elsewhere fn runs on pool. */
static bool on_pool(weft_pool *pool)
{
    pthread_t t;
    return weft_run(pool, probe_fn, &t) == 0 && pthread_equal(t, pthread_self());
}

static int cross_wait(void *p)
{
    struct cross *x = p;
    TCHECK(on_pool(x->a));
    TCHECK(weft_event_wait(&x->ev) == 0);
    atomic_store(&x->on_a, on_pool(x->a) ? 1 : 2);
    return 0;
}

static int cross_set(void *p)
{
    struct cross *x = p;
    until(ev_waiters, &x->ev, 1);
    weft_event_set(&x->ev);
    return 0;
}

static void *cross_setter_thread(void *p)
{
    struct cross *x = p;
    weft_run(x->b, cross_set, x);
    return NULL;
}

Test(event, across_pools)
{
    struct cross x = {.a = mkpool(1), .b = mkpool(1)};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, cross_setter_thread, &x), 0);
    cr_assert_eq(weft_run(x.a, cross_wait, &x), 0);
    pthread_join(t, NULL);
    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&x.on_a), 1, "the waiter resumed on a worker of the other pool");
    weft_pool_destroy(x.a);
    weft_pool_destroy(x.b);
}

/* ---- channels: bad input ------------------------------------------------------------ */

Test(chan, bad_input)
{
    weft_chan *c = (weft_chan *)(uintptr_t)1;
    cr_assert_eq(weft_chan_create(NULL, 1, 1), -EINVAL);
    cr_assert_eq(weft_chan_create(&c, 0, 4), -EINVAL);
    cr_assert_eq(weft_chan_create(&c, 4, 0), -EINVAL);
    cr_assert_eq(weft_chan_create(&c, SIZE_MAX / 2 + 1, 2), -EOVERFLOW);
    cr_assert_eq(weft_chan_create(&c, 3, SIZE_MAX / 2), -EOVERFLOW);
    cr_assert_eq(weft_chan_create(&c, SIZE_MAX, 1), -EOVERFLOW);
    cr_assert_eq((uintptr_t)c, 1, "a failed create leaves *c alone");
    cr_assert_eq(weft_chan_create(&c, 2, sizeof(int)), 0);
    int v = 7;
    cr_assert_eq(weft_chan_send(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_send(c, NULL), -EINVAL);
    cr_assert_eq(weft_chan_recv(NULL, &v), -EINVAL);
    cr_assert_eq(weft_chan_recv(c, NULL), -EINVAL);
    cr_assert_eq(weft_chan_send(c, &v), 0);
    v = 0;
    cr_assert_eq(weft_chan_recv(c, &v), 0);
    cr_assert_eq(v, 7);
    weft_chan_close(NULL);
    weft_chan_destroy(NULL);
    weft_chan_destroy(c);
}

/* ---- channels: FIFO ------------------------------------------------------------------ */

Test(chan, fifo_single_thread)
{
    weft_chan *c;
    cr_assert_eq(weft_chan_create(&c, 5, sizeof(uint64_t)), 0);
    uint64_t next_in = 0, next_out = 0;
    /* Wrap the ring many times with varying fill levels. */
    for (int round = 0; round < 50; round++) {
        int k = 1 + round % 5;
        for (int i = 0; i < k; i++)
            cr_assert_eq(weft_chan_send(c, &(uint64_t){next_in++}), 0);
        for (int i = 0; i < k; i++) {
            uint64_t v;
            cr_assert_eq(weft_chan_recv(c, &v), 0);
            cr_assert_eq(v, next_out++);
        }
    }
    /* A larger element, copied whole. */
    weft_chan *big;
    char in[100], out[100];
    cr_assert_eq(weft_chan_create(&big, 1, sizeof(in)), 0);
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (char)i;
    cr_assert_eq(weft_chan_send(big, in), 0);
    cr_assert_eq(weft_chan_recv(big, out), 0);
    cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
    weft_chan_destroy(big);
    weft_chan_destroy(c);
}

struct item {
    uint32_t producer, seq;
};

struct pipe {
    weft_chan *c;
    unsigned producers, consumers;
    uint32_t per_producer;
    _Atomic(unsigned) producers_left;
    _Atomic(uint64_t) received;
    _Atomic(uint32_t) *seen;     /* producers x per_producer: times each item arrived */
    bool check_order;            /* one consumer: each producer's items in order */
    uint32_t *last;              /* check_order: next seq expected per producer */
    unsigned task_producers, task_consumers;  /* how many of each run as tasks */
    struct prod_arg {
        struct pipe *p;
        uint32_t id;
    } pa[8];
};

static int producer(void *a)
{
    struct pipe *p = ((struct prod_arg *)a)->p;
    uint32_t id = ((struct prod_arg *)a)->id;
    for (uint32_t i = 0; i < p->per_producer; i++) {
        struct item it = {id, i};
        TCHECK(weft_chan_send(p->c, &it) == 0);
    }
    if (atomic_fetch_sub(&p->producers_left, 1) == 1)
        weft_chan_close(p->c);
    return 0;
}

static int consumer(void *a)
{
    struct pipe *p = a;
    struct item it;
    int r;
    while ((r = weft_chan_recv(p->c, &it)) == 0) {
        TCHECK(it.producer < p->producers && it.seq < p->per_producer);
        if (it.producer >= p->producers || it.seq >= p->per_producer)
            continue;
        atomic_fetch_add(&p->seen[(size_t)it.producer * p->per_producer + it.seq], 1);
        atomic_fetch_add(&p->received, 1);
        if (p->check_order) {
            TCHECK(p->last[it.producer] == it.seq);
            p->last[it.producer] = it.seq + 1;
        }
    }
    TCHECK(r == -EPIPE);
    return 0;
}

static void *producer_thread(void *a)
{
    producer(a);
    return NULL;
}

static void *consumer_thread(void *a)
{
    consumer(a);
    return NULL;
}

static int pipe_body(weft_scope *s, void *arg)
{
    struct pipe *p = arg;
    /* Consumers first, so that on one worker they are queued before producers run. */
    for (unsigned i = 0; i < p->task_consumers; i++)
        cr_assert_eq(weft_spawn(s, consumer, p), 0);
    for (uint32_t i = 0; i < p->task_producers; i++)
        cr_assert_eq(weft_spawn(s, producer, &p->pa[i]), 0);
    return 0;
}

/* outside_prod / outside_cons: that end runs on outside threads instead of tasks. */
static void pipeline(unsigned threads, size_t cap, unsigned producers, unsigned consumers,
                     uint32_t per, bool outside_prod, bool outside_cons)
{
    cr_assert_leq(producers, 8);
    cr_assert_leq(consumers, 8);
    weft_pool *pool = mkpool(threads);
    struct pipe p = {.producers = producers, .consumers = consumers, .per_producer = per};
    cr_assert_eq(weft_chan_create(&p.c, cap, sizeof(struct item)), 0);
    atomic_init(&p.producers_left, producers);
    size_t n = (size_t)producers * per;
    p.seen = calloc(n, sizeof(*p.seen));
    p.check_order = consumers == 1;
    p.last = calloc(producers, sizeof(*p.last));
    cr_assert(p.seen && p.last);
    for (uint32_t i = 0; i < producers; i++)
        p.pa[i] = (struct prod_arg){&p, i};
    p.task_producers = outside_prod ? 0 : producers;
    p.task_consumers = outside_cons ? 0 : consumers;

    pthread_t pt[8], ct[8];
    for (unsigned i = 0; outside_prod && i < producers; i++)
        cr_assert_eq(pthread_create(&pt[i], NULL, producer_thread, &p.pa[i]), 0);
    for (unsigned i = 0; outside_cons && i < consumers; i++)
        cr_assert_eq(pthread_create(&ct[i], NULL, consumer_thread, &p), 0);
    cr_assert_eq(weft_scope_run(pool, pipe_body, &p), 0);
    for (unsigned i = 0; outside_prod && i < producers; i++)
        pthread_join(pt[i], NULL);
    for (unsigned i = 0; outside_cons && i < consumers; i++)
        pthread_join(ct[i], NULL);

    ASSERT_NO_BAD();
    cr_assert_eq(atomic_load(&p.received), n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&p.seen[i]), 1, "item %zu arrived %u times", i,
                     atomic_load(&p.seen[i]));
    if (p.check_order)
        for (uint32_t i = 0; i < producers; i++)
            cr_assert_eq(p.last[i], per);
    free(p.seen);
    free(p.last);
    weft_chan_destroy(p.c);
    weft_pool_destroy(pool);
}

Test(chan, fifo_per_producer)
{
    pipeline(2, 3, 6, 1, SCALED(2000), false, false);
    pipeline(1, 1, 4, 1, SCALED(500), false, false);
}

Test(chan, mpmc_tasks)
{
    pipeline(2, 4, 6, 6, SCALED(2000), false, false);
    pipeline(2, 64, 8, 3, SCALED(2000), false, false);
    pipeline(1, 2, 5, 5, SCALED(1000), false, false);
}

Test(chan, outside_threads)
{
    pipeline(2, 2, 3, 3, SCALED(2000), true, false);  /* threads -> tasks */
    pipeline(2, 2, 3, 3, SCALED(2000), false, true);  /* tasks -> threads */
    pipeline(2, 2, 3, 3, SCALED(2000), true, true);   /* threads only */
    pipeline(1, 1, 2, 1, SCALED(2000), true, false);  /* order, thread producers */
}

/* ---- channels: 1 worker, 100 tasks blocked ----------------------------------------- */

struct hundred {
    weft_chan *c;
    size_t n;
    _Atomic(uint64_t) sum;
    _Atomic(unsigned) done;
};

static int h_recv(void *a)
{
    struct hundred *h = a;
    uint64_t v;
    TCHECK(weft_chan_recv(h->c, &v) == 0);
    atomic_fetch_add(&h->sum, v);
    atomic_fetch_add(&h->done, 1);
    return 0;
}

static int h_send_all(void *a)
{
    struct hundred *h = a;
    until(ch_receivers, h->c, h->n); /* every receiver is suspended on the channel */
    for (uint64_t i = 1; i <= h->n; i++)
        TCHECK(weft_chan_send(h->c, &i) == 0);
    return 0;
}

static int h_send(void *a)
{
    struct hundred *h = a;
    uint64_t v = atomic_fetch_add(&h->done, 1) + 1;
    TCHECK(weft_chan_send(h->c, &v) == 0);
    return 0;
}

static int h_recv_all(void *a)
{
    struct hundred *h = a;
    /* Capacity 1: one sender got in, the others are suspended. */
    until(ch_senders, h->c, h->n - 1);
    for (size_t i = 0; i < h->n; i++) {
        uint64_t v;
        TCHECK(weft_chan_recv(h->c, &v) == 0);
        atomic_fetch_add(&h->sum, v);
    }
    return 0;
}

static int hundred_recv_body(weft_scope *s, void *arg)
{
    struct hundred *h = arg;
    for (size_t i = 0; i < h->n; i++)
        TCHECK(weft_spawn(s, h_recv, h) == 0);
    return weft_spawn(s, h_send_all, h);
}

static int hundred_send_body(weft_scope *s, void *arg)
{
    struct hundred *h = arg;
    for (size_t i = 0; i < h->n; i++)
        TCHECK(weft_spawn(s, h_send, h) == 0);
    return weft_spawn(s, h_recv_all, h);
}

Test(chan, one_worker_hundred_blocked)
{
    weft_pool *pool = mkpool(1);
    for (int side = 0; side < 2; side++) {
        struct hundred h = {.n = 100};
        cr_assert_eq(weft_chan_create(&h.c, 1, sizeof(uint64_t)), 0);
        cr_assert_eq(run_scope(pool, side ? hundred_send_body : hundred_recv_body, &h), 0);
        ASSERT_NO_BAD();
        cr_assert_eq(atomic_load(&h.sum), (uint64_t)h.n * (h.n + 1) / 2);
        cr_assert_eq(atomic_load(&h.done), h.n);
        weft_chan_destroy(h.c);
    }
    weft_pool_destroy(pool);
}

/* ---- channels: close ------------------------------------------------------------------ */

struct res {
    weft_chan *c;
    weft_event *e;
    uint64_t value;
    _Atomic(int) result;
    _Atomic(int) finished;
};

static int r_send(void *a)
{
    struct res *r = a;
    atomic_store(&r->result, weft_chan_send(r->c, &r->value));
    atomic_store(&r->finished, 1);
    return 0;
}

static int r_recv(void *a)
{
    struct res *r = a;
    uint64_t v = 0;
    int rc = weft_chan_recv(r->c, &v);
    if (rc == 0)
        r->value = v;
    atomic_store(&r->result, rc);
    atomic_store(&r->finished, 1);
    return 0;
}

static int r_wait(void *a)
{
    struct res *r = a;
    atomic_store(&r->result, weft_event_wait(r->e));
    atomic_store(&r->finished, 1);
    return 0;
}

static void *r_send_thread(void *a)
{
    r_send(a);
    return NULL;
}

static void *r_recv_thread(void *a)
{
    r_recv(a);
    return NULL;
}

#define NW 5

struct closing {
    weft_chan *c;
    struct res r[NW];
    size_t expect;              /* waiters (tasks and the thread) to see queued */
    bool senders;
};

static int close_body(weft_scope *s, void *arg)
{
    struct closing *k = arg;
    for (int i = 0; i < NW; i++)
        TCHECK(weft_spawn(s, k->senders ? r_send : r_recv, &k->r[i]) == 0);
    until(k->senders ? ch_senders : ch_receivers, k->c, k->expect);
    for (int i = 0; i < NW; i++)
        TCHECK(atomic_load(&k->r[i].finished) == 0);
    weft_chan_close(k->c);
    return 0;
}

Test(chan, close_wakes_senders)
{
    weft_pool *pool = mkpool(2);
    struct closing k = {.expect = NW + 1, .senders = true};
    cr_assert_eq(weft_chan_create(&k.c, 2, sizeof(uint64_t)), 0);
    cr_assert_eq(weft_chan_send(k.c, &(uint64_t){10}), 0);
    cr_assert_eq(weft_chan_send(k.c, &(uint64_t){11}), 0);
    for (int i = 0; i < NW; i++)
        k.r[i] = (struct res){.c = k.c, .value = 100 + (uint64_t)i};
    struct res th = {.c = k.c, .value = 99};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, r_send_thread, &th), 0);
    cr_assert_eq(run_scope(pool, close_body, &k), 0);
    ASSERT_NO_BAD();
    pthread_join(t, NULL);
    for (int i = 0; i < NW; i++)
        cr_assert_eq(atomic_load(&k.r[i].result), -EPIPE);
    cr_assert_eq(atomic_load(&th.result), -EPIPE);
    /* What was in the channel is still there; then -EPIPE, for good. */
    uint64_t v;
    cr_assert_eq(weft_chan_send(k.c, &(uint64_t){12}), -EPIPE);
    cr_assert_eq(weft_chan_recv(k.c, &v), 0);
    cr_assert_eq(v, 10);
    weft_chan_close(k.c); /* a second close: a no-op */
    cr_assert_eq(weft_chan_recv(k.c, &v), 0);
    cr_assert_eq(v, 11);
    cr_assert_eq(weft_chan_recv(k.c, &v), -EPIPE);
    cr_assert_eq(weft_chan_recv(k.c, &v), -EPIPE);
    cr_assert_eq(weft_chan_send(k.c, &v), -EPIPE);
    weft_chan_destroy(k.c);
    weft_pool_destroy(pool);
}

Test(chan, close_wakes_receivers)
{
    weft_pool *pool = mkpool(1);
    struct closing k = {.expect = NW + 1, .senders = false};
    cr_assert_eq(weft_chan_create(&k.c, 3, sizeof(uint64_t)), 0);
    for (int i = 0; i < NW; i++)
        k.r[i] = (struct res){.c = k.c, .value = 77};
    struct res th = {.c = k.c, .value = 77};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, r_recv_thread, &th), 0);
    cr_assert_eq(run_scope(pool, close_body, &k), 0);
    ASSERT_NO_BAD();
    pthread_join(t, NULL);
    for (int i = 0; i < NW; i++) {
        cr_assert_eq(atomic_load(&k.r[i].result), -EPIPE);
        cr_assert_eq(k.r[i].value, 77, "a receiver woken by close got nothing");
    }
    cr_assert_eq(atomic_load(&th.result), -EPIPE);
    weft_chan_destroy(k.c);
    weft_pool_destroy(pool);
}

/* ---- cancellation ------------------------------------------------------------------------ */

struct cancel_case {
    weft_chan *empty, *full;
    weft_event ev;
    struct res rx[NW], tx[NW], ew[NW];
    int fail_with;              /* 0: weft_scope_cancel from the body; else a task fails */
};

static int fail_task(void *a)
{
    struct cancel_case *k = a;
    until(ch_receivers, k->empty, NW);
    until(ch_senders, k->full, NW);
    until(ev_waiters, &k->ev, NW);
    return k->fail_with;
}

static int cancel_body(weft_scope *s, void *arg)
{
    struct cancel_case *k = arg;
    for (int i = 0; i < NW; i++) {
        TCHECK(weft_spawn(s, r_recv, &k->rx[i]) == 0);
        TCHECK(weft_spawn(s, r_send, &k->tx[i]) == 0);
        TCHECK(weft_spawn(s, r_wait, &k->ew[i]) == 0);
    }
    if (k->fail_with)
        return weft_spawn(s, fail_task, k);
    until(ch_receivers, k->empty, NW);
    until(ch_senders, k->full, NW);
    until(ev_waiters, &k->ev, NW);
    weft_scope_cancel(s, 0);
    return 0;
}

static void cancel_blocked(unsigned threads, int fail_with)
{
    weft_pool *pool = mkpool(threads);
    struct cancel_case k = {.fail_with = fail_with};
    cr_assert_eq(weft_chan_create(&k.empty, 4, sizeof(uint64_t)), 0);
    cr_assert_eq(weft_chan_create(&k.full, 1, sizeof(uint64_t)), 0);
    cr_assert_eq(weft_chan_send(k.full, &(uint64_t){7}), 0);
    for (int i = 0; i < NW; i++) {
        k.rx[i] = (struct res){.c = k.empty, .value = 55};
        k.tx[i] = (struct res){.c = k.full, .value = 200 + (uint64_t)i};
        k.ew[i] = (struct res){.e = &k.ev};
    }
    int r = run_scope(pool, cancel_body, &k);
    ASSERT_NO_BAD();
    cr_assert_eq(r, fail_with ? fail_with : -ECANCELED);
    for (int i = 0; i < NW; i++) {
        cr_assert_eq(atomic_load(&k.rx[i].result), -ECANCELED);
        cr_assert_eq(k.rx[i].value, 55);
        cr_assert_eq(atomic_load(&k.tx[i].result), -ECANCELED);
        cr_assert_eq(atomic_load(&k.ew[i].result), -ECANCELED);
    }
    cr_assert(!weft_event_is_set(&k.ev));
    cr_assert_eq(weft__event_waiters(&k.ev), 0);
    cr_assert_eq(chan_senders(k.full) + chan_receivers(k.empty), 0);
    /* Nothing enqueued by the cancelled senders, nothing taken by the receivers. */
    uint64_t v;
    weft_chan_close(k.full);
    cr_assert_eq(weft_chan_recv(k.full, &v), 0);
    cr_assert_eq(v, 7);
    cr_assert_eq(weft_chan_recv(k.full, &v), -EPIPE);
    cr_assert_eq(weft_chan_send(k.empty, &(uint64_t){1}), 0);
    cr_assert_eq(weft_chan_recv(k.empty, &v), 0);
    cr_assert_eq(v, 1);
    weft_chan_destroy(k.empty);
    weft_chan_destroy(k.full);
    weft_pool_destroy(pool);
}

Test(cancel, blocked_waits_by_cancel)
{
    cancel_blocked(2, 0);
    cancel_blocked(1, 0);
}

Test(cancel, blocked_waits_by_failed_task)
{
    cancel_blocked(2, -EIO);
    cancel_blocked(1, -EIO);
}

/* A task of a cancelled scope: every call returns -ECANCELED and does nothing, even
 * where it would not have to wait. */
struct already {
    weft_scope *s;
    weft_chan *c;
    weft_event ev;
    int rs, rr, rw;
};

static int already_task(void *a)
{
    struct already *k = a;
    weft_scope_cancel(k->s, 0);
    uint64_t v = 0;
    k->rs = weft_chan_send(k->c, &(uint64_t){5});
    k->rr = weft_chan_recv(k->c, &v);
    k->rw = weft_event_wait(&k->ev);
    TCHECK(v == 0);
    return 0;
}

static int already_body(weft_scope *s, void *arg)
{
    struct already *k = arg;
    k->s = s;
    return weft_spawn(s, already_task, k);
}

Test(cancel, already_cancelled)
{
    weft_pool *pool = mkpool(2);
    struct already k = {0};
    cr_assert_eq(weft_chan_create(&k.c, 2, sizeof(uint64_t)), 0);
    cr_assert_eq(weft_chan_send(k.c, &(uint64_t){3}), 0);
    weft_event_set(&k.ev);
    cr_assert_eq(weft_scope_run(pool, already_body, &k), -ECANCELED);
    ASSERT_NO_BAD();
    cr_assert_eq(k.rs, -ECANCELED);
    cr_assert_eq(k.rr, -ECANCELED);
    cr_assert_eq(k.rw, -ECANCELED);
    uint64_t v;
    weft_chan_close(k.c);
    cr_assert_eq(weft_chan_recv(k.c, &v), 0);
    cr_assert_eq(v, 3);
    cr_assert_eq(weft_chan_recv(k.c, &v), -EPIPE, "the cancelled send enqueued nothing");
    weft_chan_destroy(k.c);
    weft_pool_destroy(pool);
}

/* Cancel a running pipeline at a random point: every element a send put in is either
 * received or still in the channel, exactly once. */
struct flow {
    weft_chan *c;
    _Atomic(uint64_t) next;                 /* unique values to send */
    _Atomic(uint64_t) sent_n, sent_sum, recv_n, recv_sum;
    uint64_t stop_after;
};

static int flow_send(void *a)
{
    struct flow *f = a;
    for (;;) {
        uint64_t v = atomic_fetch_add(&f->next, 1) + 1;
        int r = weft_chan_send(f->c, &v);
        if (r) {
            TCHECK(r == -ECANCELED);
            return 0;
        }
        atomic_fetch_add(&f->sent_n, 1);
        atomic_fetch_add(&f->sent_sum, v);
    }
}

static int flow_recv(void *a)
{
    struct flow *f = a;
    for (;;) {
        uint64_t v;
        int r = weft_chan_recv(f->c, &v);
        if (r) {
            TCHECK(r == -ECANCELED);
            return 0;
        }
        atomic_fetch_add(&f->recv_sum, v);
        atomic_fetch_add(&f->recv_n, 1);
    }
}

static int flow_body(weft_scope *s, void *arg)
{
    struct flow *f = arg;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(weft_spawn(s, flow_send, f), 0);
        cr_assert_eq(weft_spawn(s, flow_recv, f), 0);
    }
    cr_assert_eq(weft_spawn(s, flow_send, f), 0);
    while (atomic_load(&f->recv_n) < f->stop_after)
        sched_yield();
    weft_scope_cancel(s, 0);
    return 0;
}

static void cancel_flow(unsigned threads, size_t cap, uint64_t stop_after)
{
    weft_pool *pool = mkpool(threads);
    struct flow f = {.stop_after = stop_after};
    cr_assert_eq(weft_chan_create(&f.c, cap, sizeof(uint64_t)), 0);
    cr_assert_eq(weft_scope_run(pool, flow_body, &f), -ECANCELED);
    ASSERT_NO_BAD();
    /* Drain what is left (outside any task: no scope, no cancel). */
    weft_chan_close(f.c);
    uint64_t v, left_n = 0, left_sum = 0;
    while (weft_chan_recv(f.c, &v) == 0) {
        left_n++;
        left_sum += v;
    }
    cr_assert_leq(left_n, cap);
    cr_assert_geq(atomic_load(&f.recv_n), stop_after);
    cr_assert_eq(atomic_load(&f.sent_n), atomic_load(&f.recv_n) + left_n);
    cr_assert_eq(atomic_load(&f.sent_sum), atomic_load(&f.recv_sum) + left_sum);
    weft_chan_destroy(f.c);
    weft_pool_destroy(pool);
}

Test(cancel, pipeline_loses_nothing)
{
    for (int round = 0; round < 10; round++) {
        cancel_flow(2, 1 + (size_t)round % 4, SCALED(3000) + (uint64_t)round * 37);
        cancel_flow(1, 2, SCALED(1000) + (uint64_t)round * 13);
    }
}
