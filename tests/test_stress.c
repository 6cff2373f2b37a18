/* SPDX-License-Identifier: MIT */
/*
 * Randomised, bounded stress. Several outside threads at once drive one pool (1, 2,
 * 4 or 8 workers on a small machine: oversubscribed) through a random mix of
 *   - weft_join trees of random shape (balanced, lopsided, deep), some leaves failing;
 *   - scopes whose tasks spawn more tasks, run joins, open nested scopes, under a
 *     random weft_scope_limit, sometimes with one failing task;
 *   - weft_par_for with random n and grain;
 * each from outside (weft_run / weft_scope_run / weft_par_for from the thread) or
 * from inside a task. Every shape comes from a seed, and a sequential walk of the
 * same seed gives the exact expected sums, counts and error codes.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"
#include "checks.h"

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void spin(uint64_t x)
{
    for (volatile unsigned k = 0; k < (unsigned)(x & 127); k++)
        ;
    if ((x >> 7) % 64 == 0)
        sched_yield();
}

/* ---- join trees ---------------------------------------------------------------- */

struct jt {
    uint64_t seed;
    uint32_t size, depth;
    uint32_t err_mod; /* 0: no leaf fails; else a leaf fails when mix % err_mod == 0 */
    uint64_t sum, count;
    _Atomic(uint64_t) *runs; /* every node counts itself: a job run twice shows here */
};

static uint32_t jt_split(uint64_t seed, uint32_t size, uint32_t depth)
{
    uint64_t x = mix(seed ^ 3);
    if (depth < 48 && (x & 15) == 0)
        return (x & 16) ? 1 : size - 1; /* lopsided: one leaf off one side */
    uint32_t k = size / 4 + (uint32_t)((x >> 8) % (size / 2 + 1));
    if (k < 1)
        k = 1;
    if (k > size - 1)
        k = size - 1;
    return k;
}

static int jt_leaf(struct jt *t)
{
    uint64_t x = mix(t->seed);
    t->sum = x & 0xffff;
    t->count = 1;
    if (t->err_mod && mix(t->seed ^ 0x55) % t->err_mod == 0)
        return -(int)(1 + t->seed % 100);
    return 0;
}

static int jt_run(void *p)
{
    struct jt *t = p;
    atomic_fetch_add_explicit(t->runs, 1, memory_order_relaxed);
    if (t->size == 1) {
        int r = jt_leaf(t);
        if ((t->seed & 7) == 0)
            spin(t->seed >> 3);
        return r;
    }
    uint32_t k = jt_split(t->seed, t->size, t->depth);
    struct jt a = {mix(t->seed ^ 1), k, t->depth + 1, t->err_mod, 0, 0, t->runs};
    struct jt b = {mix(t->seed ^ 2), t->size - k, t->depth + 1, t->err_mod, 0, 0, t->runs};
    int r = weft_join(jt_run, &a, jt_run, &b);
    t->sum = a.sum + b.sum;
    t->count = a.count + b.count;
    return r;
}

/* The same tree, sequentially: what jt_run must produce. */
static int jt_ref(struct jt *t)
{
    if (t->size == 1)
        return jt_leaf(t);
    uint32_t k = jt_split(t->seed, t->size, t->depth);
    struct jt a = {mix(t->seed ^ 1), k, t->depth + 1, t->err_mod, 0, 0, NULL};
    struct jt b = {mix(t->seed ^ 2), t->size - k, t->depth + 1, t->err_mod, 0, 0, NULL};
    int ra = jt_ref(&a), rb = jt_ref(&b);
    t->sum = a.sum + b.sum;
    t->count = a.count + b.count;
    return ra ? ra : rb; /* weft_join: a's error, else b's */
}

static void jt_make(struct jt *t, uint64_t seed)
{
    uint64_t x = mix(seed);
    memset(t, 0, sizeof(*t));
    t->seed = seed;
    t->size = 1 + (uint32_t)(x % ((x >> 40) % 4 == 0 ? 20000 : 2000));
    t->err_mod = (x >> 20) % 4 == 0 ? 1000 : 0;
}

/* ---- scope trees ---------------------------------------------------------------- */

struct sc {
    weft_scope *s;
    uint64_t seed;
    unsigned roots, maxdepth, limit;
    uint64_t fail_seed; /* the one task that fails (0: none) */
    _Atomic(uint64_t) sum, count;
};

struct sc_arg {
    struct sc *c;
    uint64_t seed;
    uint32_t depth;
};

static int sc_task(void *p);

/* An inner scope opened from a task: a few flat spawns. */
struct inner {
    uint64_t seed;
    _Atomic(uint64_t) sum;
};

struct inner_arg {
    struct inner *in;
    uint64_t k;
};

static int inner_task(void *p)
{
    struct inner *in = ((struct inner_arg *)p)->in;
    uint64_t k = ((struct inner_arg *)p)->k;
    atomic_fetch_add_explicit(&in->sum, mix(in->seed ^ k) & 0xff, memory_order_relaxed);
    return 0;
}

static int inner_body(weft_scope *s, void *arg)
{
    struct inner *in = arg;
    unsigned n = 1 + (unsigned)(mix(in->seed) % 16);
    for (uint64_t k = 0; k < n; k++) {
        struct inner_arg a = {in, k};
        /* -ECANCELED: the outer scope failed (without a failure the sums would
         * come out short). */
        int r = weft_spawn_copy(s, inner_task, &a, sizeof(a));
        TCHECK(r == 0 || r == -ECANCELED);
        if (r)
            break;
    }
    return 0;
}

static uint64_t inner_ref(uint64_t seed)
{
    unsigned n = 1 + (unsigned)(mix(seed) % 16);
    uint64_t sum = 0;
    for (uint64_t k = 0; k < n; k++)
        sum += mix(seed ^ k) & 0xff;
    return sum;
}

static unsigned sc_children(const struct sc *c, uint64_t seed, uint32_t depth)
{
    return depth < c->maxdepth ? (unsigned)(mix(seed ^ 7) % 4) : 0;
}

static int sc_task(void *p)
{
    struct sc_arg a = *(struct sc_arg *)p;
    struct sc *c = a.c;
    uint64_t x = mix(a.seed);
    uint64_t v = x & 0xffff;
    unsigned nch = sc_children(c, a.seed, a.depth);
    for (unsigned k = 0; k < nch; k++) {
        struct sc_arg ch = {c, mix(a.seed ^ (10 + k)), a.depth + 1};
        int r = weft_spawn_copy(c->s, sc_task, &ch, sizeof(ch));
        TCHECK(r == 0 || (r == -ECANCELED && c->fail_seed));
    }
    if ((x >> 20) % 8 == 0) { /* two join trees inside the task */
        _Atomic(uint64_t) runs = 0;
        struct jt t1 = {mix(a.seed ^ 98), 1 + (uint32_t)((x >> 24) % 64), 0, 0, 0, 0, &runs};
        struct jt t2 = {mix(a.seed ^ 99), 1 + (uint32_t)((x >> 44) % 64), 0, 0, 0, 0, &runs};
        TCHECK(weft_join(jt_run, &t1, jt_run, &t2) == 0);
        TCHECK(atomic_load(&runs) == 2 * (uint64_t)(t1.size + t2.size) - 2);
        v += t1.sum + t2.sum;
    }
    if ((x >> 30) % 16 == 0) { /* a nested scope inside the task */
        struct inner in = {mix(a.seed ^ 77), 0};
        /* A nested scope: cancelled with the outer one (weft.h). */
        int r = weft_scope_run(NULL, inner_body, &in);
        TCHECK(r == 0 || (r == -ECANCELED && c->fail_seed));
        v += atomic_load(&in.sum);
    }
    spin(x >> 36);
    atomic_fetch_add_explicit(&c->sum, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
    return a.seed == c->fail_seed ? -77 : 0;
}

/* Sequential walk of the tree under one task: adds its sum and count. */
static void sc_ref_node(const struct sc *c, uint64_t seed, uint32_t depth, uint64_t *sum,
                        uint64_t *count)
{
    uint64_t x = mix(seed);
    uint64_t v = x & 0xffff;
    unsigned nch = sc_children(c, seed, depth);
    for (unsigned k = 0; k < nch; k++)
        sc_ref_node(c, mix(seed ^ (10 + k)), depth + 1, sum, count);
    if ((x >> 20) % 8 == 0) {
        struct jt t1 = {mix(seed ^ 98), 1 + (uint32_t)((x >> 24) % 64), 0, 0, 0, 0, NULL};
        struct jt t2 = {mix(seed ^ 99), 1 + (uint32_t)((x >> 44) % 64), 0, 0, 0, 0, NULL};
        jt_ref(&t1);
        jt_ref(&t2);
        v += t1.sum + t2.sum;
    }
    if ((x >> 30) % 16 == 0)
        v += inner_ref(mix(seed ^ 77));
    *sum += v;
    *count += 1;
}

static uint64_t sc_root_seed(const struct sc *c, unsigned i)
{
    return mix(c->seed ^ (0x1000 + i));
}

static int sc_body(weft_scope *s, void *arg)
{
    struct sc *c = arg;
    c->s = s;
    if (c->limit)
        weft_scope_limit(s, c->limit);
    for (unsigned i = 0; i < c->roots; i++) {
        struct sc_arg a = {c, sc_root_seed(c, i), 0};
        int r = weft_spawn_copy(s, sc_task, &a, sizeof(a));
        TCHECK(r == 0 || (r == -ECANCELED && c->fail_seed));
        if (r)
            break;
    }
    return 0;
}

static int sc_in_task(void *arg)
{
    return weft_scope_run(NULL, sc_body, arg);
}

static void sc_make(struct sc *c, uint64_t seed)
{
    uint64_t x = mix(seed);
    memset(c, 0, sizeof(*c));
    c->seed = seed;
    c->roots = 1 + (unsigned)(x % 64);
    c->maxdepth = (unsigned)((x >> 8) % 6);
    c->limit = (x >> 16) % 4 == 0 ? 1 + (unsigned)((x >> 18) % 3) : 0;
    if ((x >> 24) % 8 == 0) /* one root fails */
        c->fail_seed = sc_root_seed(c, (unsigned)((x >> 32) % c->roots));
    atomic_init(&c->sum, 0);
    atomic_init(&c->count, 0);
}

/* ---- loops ------------------------------------------------------------------------ */

struct pf {
    size_t n, grain;
    _Atomic(uint64_t) sum, count;
};

static int pf_range(void *ctx, size_t lo, size_t hi)
{
    struct pf *f = ctx;
    TCHECK(lo < hi && hi <= f->n);
    TCHECK(!f->grain || hi - lo <= f->grain);
    uint64_t s = 0;
    for (size_t i = lo; i < hi; i++)
        s += i * 3 + 1;
    atomic_fetch_add_explicit(&f->sum, s, memory_order_relaxed);
    atomic_fetch_add_explicit(&f->count, hi - lo, memory_order_relaxed);
    return 0;
}

static int pf_in_task(void *arg)
{
    struct pf *f = arg;
    return weft_par_for(NULL, f->n, f->grain, pf_range, f);
}

/* ---- one round ---------------------------------------------------------------------- */

/* Runs one random piece of work on pool from the calling (outside) thread and checks
 * it. Returns the kind, for the statistics. */
static unsigned one_round(weft_pool *pool, uint64_t seed)
{
    uint64_t x = mix(seed);
    unsigned kind = (unsigned)(x % 6);
    switch (kind) {
    case 0:
    case 1: { /* join tree, through weft_run */
        struct jt t, ref;
        _Atomic(uint64_t) runs = 0;
        jt_make(&t, seed);
        ref = t;
        int want = jt_ref(&ref);
        t.runs = &runs;
        int got = weft_run(pool, jt_run, &t);
        TCHECK(got == want);
        TCHECK(t.sum == ref.sum);
        TCHECK(t.count == ref.count && t.count == t.size);
        TCHECK(atomic_load(&runs) == 2 * (uint64_t)t.size - 1); /* each node once */
        break;
    }
    case 2:
    case 3: { /* scope tree, body outside or in a task */
        struct sc *c = malloc(sizeof(*c));
        TCHECK(c != NULL);
        if (!c)
            break;
        sc_make(c, seed);
        int r = kind == 2 ? weft_scope_run(pool, sc_body, c) : weft_run(pool, sc_in_task, c);
        uint64_t sum = 0, count = 0;
        for (unsigned i = 0; i < c->roots; i++)
            sc_ref_node(c, sc_root_seed(c, i), 0, &sum, &count);
        if (c->fail_seed) {
            TCHECK(r == -77);
            TCHECK(atomic_load(&c->count) <= count);
        } else {
            TCHECK(r == 0);
            TCHECK(atomic_load(&c->sum) == sum);
            TCHECK(atomic_load(&c->count) == count);
        }
        free(c);
        break;
    }
    case 4:
    case 5: { /* par_for, from outside or in a task */
        struct pf f = {.n = (size_t)((x >> 8) % 50000)};
        f.grain = (x >> 30) % 3 == 0 ? 0 : 1 + (size_t)((x >> 32) % 2000);
        atomic_init(&f.sum, 0);
        atomic_init(&f.count, 0);
        int r = kind == 4 ? weft_par_for(pool, f.n, f.grain, pf_range, &f)
                          : weft_run(pool, pf_in_task, &f);
        TCHECK(r == 0);
        uint64_t n = f.n;
        TCHECK(atomic_load(&f.count) == n);
        TCHECK(atomic_load(&f.sum) == (n ? 3 * n * (n - 1) / 2 + n : 0));
        break;
    }
    }
    return kind;
}

struct driver {
    weft_pool *pool;
    unsigned rounds;
    uint64_t seed;
    unsigned kinds[6];
};

static void *driver_main(void *p)
{
    struct driver *d = p;
    for (unsigned r = 0; r < d->rounds; r++)
        d->kinds[one_round(d->pool, mix(d->seed + r))]++;
    return NULL;
}

#define DRIVERS 3

static void stress_on(weft_pool *pool, unsigned rounds, uint64_t seed)
{
    seed = wt_test_seed(seed);
    atomic_store(&bad_line, 0);
    pthread_t th[DRIVERS];
    struct driver d[DRIVERS];
    for (unsigned i = 0; i < DRIVERS; i++) {
        d[i] = (struct driver){pool, rounds, seed * 1000003u + i, {0}};
        cr_assert_eq(pthread_create(&th[i], NULL, driver_main, &d[i]), 0);
    }
    unsigned kinds[6] = {0};
    for (unsigned i = 0; i < DRIVERS; i++) {
        pthread_join(th[i], NULL);
        for (unsigned k = 0; k < 6; k++)
            kinds[k] += d[i].kinds[k];
    }
    int line = atomic_load(&bad_line);
    cr_assert_eq(line, 0, "check at test_stress.c:%d failed (seed %llu)", line,
                 (unsigned long long)seed);
    /* The mix the seed asks for ran, each round once: the same walk, sequentially. */
    unsigned want[6] = {0};
    for (unsigned i = 0; i < DRIVERS; i++)
        for (unsigned r = 0; r < rounds; r++)
            want[mix(mix(d[i].seed + r)) % 6]++;
    for (unsigned k = 0; k < 6; k++)
        cr_assert_eq(kinds[k], want[k], "kind %u ran %u times, the seed says %u (seed %llu)",
                     k, kinds[k], want[k], (unsigned long long)seed);
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_log_info("stress %u workers: join %u scope %u loop %u; spawns %llu steals %llu "
                "parks %llu",
                weft_pool_threads(pool), kinds[0] + kinds[1], kinds[2] + kinds[3],
                kinds[4] + kinds[5], (unsigned long long)st.spawns,
                (unsigned long long)st.steals, (unsigned long long)st.parks);
    /* Every scope round spawns at least its first root before anything can fail. How
     * many jobs were stolen depends on the scheduling alone: logged, not asserted
     * (test_park asserts steals where a thief must take the job). */
    cr_assert_geq(st.spawns, (uint64_t)(kinds[2] + kinds[3]), "spawns (seed %llu)",
                  (unsigned long long)seed);
    /* Afterwards the pool goes idle: every worker parks. */
    unsigned n = weft_pool_threads(pool);
    cr_assert(wt_wait_parked(pool, n, 10000), "after the stress only %llu of %u workers "
              "parked (seed %llu)", (unsigned long long)wt_parked(pool), n,
              (unsigned long long)seed);
}

static void stress_pool(unsigned threads, unsigned rounds, uint64_t seed)
{
    weft_pool *pool = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    stress_on(pool, rounds, seed);
    weft_pool_destroy(pool);
}

Test(stress, mixed_1_worker, .timeout = 300) { stress_pool(1, SCALED(1500), 1); }
Test(stress, mixed_2_workers, .timeout = 300) { stress_pool(2, SCALED(3000), 2); }
Test(stress, mixed_4_workers, .timeout = 300) { stress_pool(4, SCALED(3000), 3); }
Test(stress, mixed_8_workers, .timeout = 300) { stress_pool(8, SCALED(3000), 4); }

Test(stress, mixed_default_pool, .timeout = 300)
{
    weft_pool *d = weft_default_pool();
    cr_assert_not_null(d);
    stress_on(d, SCALED(1500), 5);
}

/* Two pools at once, and tasks of one pool calling into the other. */
struct cross {
    weft_pool *other;
    uint64_t seed;
};

static int cross_task(void *p)
{
    struct cross *c = p;
    one_round(c->other, c->seed); /* from a worker of another pool: an outside caller */
    return 0;
}

static void *cross_main(void *p)
{
    struct driver *d = p;
    struct cross c = {d->pool, 0};
    for (unsigned r = 0; r < d->rounds; r++) {
        c.seed = mix(d->seed + r);
        TCHECK(weft_run(NULL, cross_task, &c) == 0); /* default pool -> d->pool */
    }
    return NULL;
}

Test(stress, cross_pool, .timeout = 300)
{
    weft_pool *b = NULL;
    weft_pool_options o = {.threads = 3};
    cr_assert_eq(weft_pool_create(&b, &o), 0);
    atomic_store(&bad_line, 0);
    pthread_t th[2];
    struct driver d[2];
    for (unsigned i = 0; i < 2; i++) {
        d[i] = (struct driver){b, SCALED(1500), wt_test_seed(77 + i), {0}};
        cr_assert_eq(pthread_create(&th[i], NULL, cross_main, &d[i]), 0);
    }
    for (unsigned i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int line = atomic_load(&bad_line);
    cr_assert_eq(line, 0, "check at test_stress.c:%d failed (seeds %llu, %llu)", line,
                 (unsigned long long)d[0].seed, (unsigned long long)d[1].seed);
    weft_pool_destroy(b);
}

/* ---- flat spawn loops: batch steals against the spawner's own pops ---------------
 * A task spawns many small frames into one scope and returns; the spawner's worker
 * then pops its deque from the bottom while thieves take batches from the top
 * (lib/worker.c's steal_more: up to half of what is public, one steal each, pushed
 * public onto the thief's deque, where a third worker may steal them again). Every
 * item must run exactly once; every fourth round cancels halfway, so a batch may
 * hold frames of a cancelled scope (skipped, never run twice: the scope ends). */
struct flat_round {
    _Atomic(uint32_t) *runs;
    uint32_t n;
    uint64_t seed;
    _Atomic(uint64_t) ran;
    _Atomic(uint32_t) ran_on[8]; /* per weft_worker_index: thieves did take some */
    int body_on;                 /* the body's weft_worker_index */
    bool cancel;
    bool wait_thief;             /* the body waits until a thief has run an item */
};

struct flat_item {
    struct flat_round *r;
    uint32_t i;
};

static int flat_item_run(void *p);

/* Whether a worker other than the body's ran an item of this round. */
static bool ran_elsewhere(struct flat_round *r)
{
    for (int k = 0; k < 8; k++)
        if (k != r->body_on && atomic_load(&r->ran_on[k]) > 0)
            return true;
    return false;
}

static int flat_body(weft_scope *s, void *p)
{
    struct flat_round *r = p;
    for (uint32_t i = 0; i < r->n; i++) {
        struct flat_item it = {r, i};
        int e = weft_spawn_copy(s, flat_item_run, &it, sizeof(it));
        if (e == -ECANCELED)
            return 0;
        TCHECK(e == 0);
        if (r->cancel && i == r->n / 2)
            weft_scope_cancel(s, -ECANCELED);
    }
    r->body_on = weft_worker_index();
    /* Liveness, not timing: the body holds its worker until another worker has run
     * one of the items it published. Thieves must come (a push wakes a parked
     * worker, park.c) and take them; if they cannot, the test hangs here until its
     * timeout. Without this, a round could end before the others woke at all: the
     * owner runs 20 000 items in about a millisecond. */
    while (r->wait_thief && !ran_elsewhere(r))
        sched_yield();
    return 0;
}

static int flat_item_run(void *p)
{
    struct flat_item *it = p;
    struct flat_round *r = it->r;
    uint64_t x = mix(r->seed ^ it->i);
    atomic_fetch_add_explicit(&r->runs[it->i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->ran, 1, memory_order_relaxed);
    int k = weft_worker_index();
    if (k >= 0 && k < 8)
        atomic_fetch_add_explicit(&r->ran_on[k], 1, memory_order_relaxed);
    if ((x & 255) == 0)
        spin(x >> 8);
    return 0;
}

static int flat_task(void *p)
{
    struct flat_round *r = p;
    int e = weft_scope_run(NULL, flat_body, r);
    TCHECK(e == (r->cancel ? -ECANCELED : 0));
    return 0;
}

static void flat_on(unsigned threads)
{
    weft_pool *pool = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    atomic_store(&bad_line, 0);
    uint64_t seed = wt_test_seed(4242 + threads);
    uint32_t n = SCALED(20000);
    struct flat_round r;
    r.runs = calloc(n, sizeof(*r.runs));
    cr_assert_not_null(r.runs);
    unsigned rounds = SCALED(40), thief_rounds = 0;
    for (unsigned round = 0; round < rounds; round++) {
        memset(r.runs, 0, n * sizeof(*r.runs));
        r.n = n;
        r.seed = mix(seed + round);
        r.cancel = round % 4 == 3;
        r.wait_thief = round == 0;
        r.body_on = -1;
        atomic_store(&r.ran, 0);
        for (unsigned k = 0; k < 8; k++)
            atomic_store(&r.ran_on[k], 0);
        cr_assert_eq(weft_run(pool, flat_task, &r), 0);
        uint64_t ran = atomic_load(&r.ran);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t c = atomic_load(&r.runs[i]);
            cr_assert(c <= 1, "item %u ran %u times (round %u, seed %llu)", i, c, round,
                      (unsigned long long)seed);
            if (!r.cancel)
                cr_assert_eq(c, 1, "item %u never ran (round %u, seed %llu)", i, round,
                             (unsigned long long)seed);
        }
        if (!r.cancel)
            cr_assert_eq(ran, n);
        thief_rounds += ran_elsewhere(&r);
    }
    int line = atomic_load(&bad_line);
    cr_assert_eq(line, 0, "check at test_stress.c:%d failed (seed %llu)", line,
                 (unsigned long long)seed);
    /* That thieves took part, so the test exercised steals (a pool whose other
     * workers never ran an item would pass the counts above without testing them):
     * round 0 waits for it, so this holds whatever the timing. */
    cr_assert(thief_rounds > 0, "no round ran items on a worker other than the body's");
    weft_stats st;
    weft_pool_stats(pool, &st);
    cr_assert(st.steals > 0);
    free(r.runs);
    weft_pool_destroy(pool);
}

Test(stress, flat_batch_steals_2_workers, .timeout = 300) { flat_on(2); }
Test(stress, flat_batch_steals_4_workers, .timeout = 300) { flat_on(4); }
