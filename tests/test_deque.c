/* SPDX-License-Identifier: MIT */
/*
 * The Chase-Lev deque (lib/deque.c) on its own: sequential semantics (LIFO pop, FIFO
 * steal, empty), growth across many resizes, and races between one owner that pushes
 * and pops and three thieves, where every item must be taken exactly once.
 * Jobs are only pointers here: the deque never calls them.
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
#include "deque.h"


static struct weft__deque *dq_new(void)
{
    weft__barrier_init();
    struct weft__deque *dq = aligned_alloc(64, sizeof(struct weft__deque));
    cr_assert_not_null(dq);
    memset(dq, 0, sizeof(*dq));
    cr_assert_eq(weft__deque_init(dq), 0);
    return dq;
}

static void dq_del(struct weft__deque *dq)
{
    weft__deque_free(dq);
    free(dq);
}

static struct weft__job *jobs_new(size_t n)
{
    struct weft__job *j = calloc(n, sizeof(*j));
    cr_assert_not_null(j, "calloc %zu jobs", n);
    for (size_t i = 0; i < n; i++)
        j[i].arg = (void *)(uintptr_t)i;
    return j;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

Test(deque, empty)
{
    struct weft__deque *dq = dq_new();
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    cr_assert(!weft__deque_looks_nonempty(dq));
    /* Still empty after failed pops (pop must restore bottom). */
    for (int i = 0; i < 10; i++)
        cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    struct weft__job j;
    cr_assert_eq(weft__deque_push(dq, &j, true), 0);
    cr_assert(weft__deque_looks_nonempty(dq));
    cr_assert_eq(weft__deque_pop(dq), &j);
    cr_assert(!weft__deque_looks_nonempty(dq));
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    dq_del(dq);
}

Test(deque, pop_is_lifo)
{
    struct weft__deque *dq = dq_new();
    struct weft__job *j = jobs_new(100);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(weft__deque_push(dq, &j[i], true), 0);
    for (int i = 99; i >= 0; i--)
        cr_assert_eq(weft__deque_pop(dq), &j[i], "pop %d", i);
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    free(j);
    dq_del(dq);
}

Test(deque, steal_is_fifo)
{
    struct weft__deque *dq = dq_new();
    struct weft__job *j = jobs_new(100);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(weft__deque_push(dq, &j[i], true), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(weft__deque_steal(dq), &j[i], "steal %d", i);
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    cr_assert_null(weft__deque_pop(dq));
    free(j);
    dq_del(dq);
}

Test(deque, pop_and_steal_mixed)
{
    struct weft__deque *dq = dq_new();
    struct weft__job *j = jobs_new(8);
    for (int i = 0; i < 4; i++)
        weft__deque_push(dq, &j[i], true);
    cr_assert_eq(weft__deque_steal(dq), &j[0]);
    cr_assert_eq(weft__deque_pop(dq), &j[3]);
    cr_assert_eq(weft__deque_steal(dq), &j[1]);
    /* One left: the pop takes the last-item (CAS) path. */
    cr_assert_eq(weft__deque_pop(dq), &j[2]);
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    /* Reusable after being emptied from both ends. */
    weft__deque_push(dq, &j[4], true);
    weft__deque_push(dq, &j[5], true);
    cr_assert_eq(weft__deque_steal(dq), &j[4]);
    cr_assert_eq(weft__deque_steal(dq), &j[5]);
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    cr_assert_null(weft__deque_pop(dq));
    weft__deque_push(dq, &j[6], true);
    cr_assert_eq(weft__deque_steal(dq), &j[6]);
    cr_assert_null(weft__deque_pop(dq));
    free(j);
    dq_del(dq);
}

/* Push far past the initial capacity (many doublings), then pop everything back. */
Test(deque, grow_then_pop_all)
{
    struct weft__deque *dq = dq_new();
    const size_t n = 300000; /* 256 -> 512K slots: 11 resizes */
    struct weft__job *j = jobs_new(n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(weft__deque_push(dq, &j[i], true), 0);
    for (size_t i = n; i-- > 0;) {
        struct weft__job *p = weft__deque_pop(dq);
        if (p != &j[i])
            cr_assert(0, "pop %zu: got %p, want %p", i, (void *)p, (void *)&j[i]);
        if ((uintptr_t)p->arg != i)
            cr_assert(0, "job %zu has arg %zu", i, (size_t)(uintptr_t)p->arg);
    }
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    free(j);
    dq_del(dq);
}

/* Growth when top has moved: the copy must keep indices modulo the new size. */
Test(deque, grow_with_moved_top_then_steal_all)
{
    struct weft__deque *dq = dq_new();
    const size_t n = 150000;
    struct weft__job *j = jobs_new(n);
    size_t pushed = 0, stolen = 0;
    /* Walk top and bottom around the initial array a few times. */
    for (int round = 0; round < 5; round++) {
        for (int k = 0; k < 200; k++)
            weft__deque_push(dq, &j[pushed++], true);
        for (int k = 0; k < 170; k++, stolen++)
            cr_assert_eq(weft__deque_steal(dq), &j[stolen]);
    }
    while (pushed < n)
        cr_assert_eq(weft__deque_push(dq, &j[pushed++], true), 0);
    /* Alternate thieves and the owner so that both ends are checked. */
    size_t bottom = n;
    while (stolen < bottom) {
        struct weft__job *p = weft__deque_steal(dq);
        cr_assert_eq(p, &j[stolen], "steal %zu", stolen);
        stolen++;
        if (stolen < bottom && stolen % 3 == 0) {
            bottom--;
            cr_assert_eq(weft__deque_pop(dq), &j[bottom], "pop %zu", bottom);
        }
    }
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    cr_assert_null(weft__deque_pop(dq));
    free(j);
    dq_del(dq);
}

/* The split: private jobs are invisible to thieves until published; the owner pops
 * them without touching top; a steal that finds only private jobs asks (poke). */
Test(deque, private_jobs_until_published)
{
    struct weft__deque *dq = dq_new();
    struct weft__job j[8];
    atomic_store(&dq->poke, 0);
    /* The first push onto an empty deque is published: the oldest is stealable. */
    cr_assert_eq(weft__deque_push(dq, &j[0], false), 0);
    cr_assert(weft__deque_looks_stealable(dq));
    for (int i = 1; i < 5; i++)
        cr_assert_eq(weft__deque_push(dq, &j[i], false), 0);
    int64_t top = atomic_load(&dq->top);
    /* Private pops: newest first, top untouched. */
    cr_assert_eq(weft__deque_pop(dq), &j[4]);
    cr_assert_eq(weft__deque_pop(dq), &j[3]);
    cr_assert_eq(atomic_load(&dq->top), top);
    /* A thief takes the public one, then finds only private jobs: empty, and it
     * asks the owner to publish. */
    cr_assert_eq(weft__deque_steal(dq), &j[0]);
    cr_assert_eq(atomic_load(&dq->poke), 0);
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    cr_assert_eq(atomic_load(&dq->poke), 1);
    /* The next push onto an empty public part publishes everything. */
    cr_assert_eq(weft__deque_push(dq, &j[5], false), 0);
    cr_assert_eq(weft__deque_steal(dq), &j[1]);
    /* Pop of a public job: the Chase-Lev path; then the rest. */
    cr_assert_eq(weft__deque_pop(dq), &j[5]);
    cr_assert_eq(weft__deque_pop(dq), &j[2]);
    cr_assert_null(weft__deque_pop(dq));
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    /* publish() hands over the private part at once. */
    cr_assert_eq(weft__deque_push(dq, &j[6], false), 0); /* published: empty before */
    cr_assert_eq(weft__deque_push(dq, &j[7], false), 0); /* private */
    cr_assert_eq(weft__deque_steal(dq), &j[6]);
    cr_assert_eq(weft__deque_steal(dq), WEFT__STEAL_EMPTY);
    weft__deque_publish(dq);
    cr_assert_eq(weft__deque_steal(dq), &j[7]);
    cr_assert_null(weft__deque_pop(dq));
    dq_del(dq);
}

/* ---- concurrent: one owner, three thieves ------------------------------------ */

#define THIEVES 3
#define MAGIC   0x5bd1e995u

struct race {
    struct weft__deque *dq;
    struct weft__job *jobs;
    size_t n;
    _Atomic(unsigned char) *taken;  /* per item: how many times taken */
    _Atomic(int) done;              /* owner has emptied the deque after its last push */
    /* per taker results (owner = index THIEVES) */
    uint64_t count[THIEVES + 1], sum[THIEVES + 1], aborts[THIEVES], batches[THIEVES];
    uint64_t seed;
    bool pops;                      /* the owner pops as well as pushes */
    bool batch;                     /* thieves also take batches (steal_batch) */
    _Atomic(uint64_t) stolen_live;  /* items thieves took so far (for the owner to see) */
    unsigned nthieves;              /* 1 .. THIEVES */
};

struct thief_arg {
    struct race *r;
    unsigned id;
};

static void take(struct race *r, unsigned who, struct weft__job *p)
{
    size_t i = (size_t)(p - r->jobs);
    TCHECK(p >= r->jobs && i < r->n);
    if (!(p >= r->jobs && i < r->n))
        return;
    /* The owner wrote arg before the push; the push publishes it. */
    TCHECK((uintptr_t)p->arg == (i ^ MAGIC));
    unsigned char prev = atomic_fetch_add_explicit(&r->taken[i], 1, memory_order_relaxed);
    TCHECK(prev == 0); /* taken twice */
    r->count[who]++;
    r->sum[who] += i;
    if (who < THIEVES)
        atomic_fetch_add_explicit(&r->stolen_live, 1, memory_order_relaxed);
}

/* Owner: wait until the thieves have taken at least one item, so that every race run
 * really races (a run where no thief ever stole would test only the owner). A
 * watchdog, not a timing assumption: the thieves spin on the deque. */
static void wait_first_steal(struct race *r)
{
    double end = wt_now_ms() + 10000.0 * WT_SLOW;
    while (atomic_load_explicit(&r->stolen_live, memory_order_relaxed) == 0) {
        if (wt_now_ms() > end) {
            TCHECK(!"no thief stole within 10 s");
            return;
        }
        sched_yield();
    }
}

static void noise(uint64_t *rng)
{
    uint64_t x = xorshift(rng);
    if ((x & 63) == 0)
        sched_yield();
    else
        for (unsigned k = 0; k < ((x >> 8) & 31); k++)
            __asm__ __volatile__("" ::: "memory");
}

static void *thief_main(void *p)
{
    struct thief_arg *a = p;
    struct race *r = a->r;
    uint64_t rng = r->seed * (a->id + 7) | 1;
    size_t last = 0;
    bool any = false;
    for (;;) {
        /* Acquire: pairs with the owner's release store of done. */
        bool fin = atomic_load_explicit(&r->done, memory_order_acquire);
        uint64_t y = xorshift(&rng);
        if (r->batch && (y & 1)) {
            /* A batch of 1 .. WEFT__STEAL_MAX, at random: oldest first, each once. */
            struct weft__job *got[WEFT__STEAL_MAX];
            int n = weft__deque_steal_batch(r->dq, got, 1 + (int)((y >> 1) % WEFT__STEAL_MAX));
            if (n < 0) {
                r->aborts[a->id]++;
                continue;
            }
            if (n == 0) {
                if (fin)
                    break;
                noise(&rng);
                continue;
            }
            for (int k = 0; k < n; k++) {
                take(r, a->id, got[k]);
                size_t i = (size_t)(got[k] - r->jobs);
                TCHECK(!any || i > last);
                last = i;
                any = true;
            }
            r->batches[a->id]++;
            continue;
        }
        struct weft__job *j = weft__deque_steal(r->dq);
        if (j == WEFT__STEAL_ABORT) {
            r->aborts[a->id]++;
            continue;
        }
        if (j == WEFT__STEAL_EMPTY) {
            if (fin)
                break;
            noise(&rng);
            continue;
        }
        take(r, a->id, j);
        /* Steals come from the top: one thief sees items in push order. */
        size_t i = (size_t)(j - r->jobs);
        TCHECK(!any || i > last);
        last = i;
        any = true;
        if ((xorshift(&rng) & 3) == 0)
            noise(&rng);
    }
    return NULL;
}

static void race_run(size_t n, bool pops, uint64_t seed, unsigned rounds_of_bursts,
                     bool batch_thieves)
{
    seed = wt_test_seed(seed);
    struct race *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    r->dq = dq_new();
    r->n = n;
    r->jobs = calloc(n, sizeof(*r->jobs));
    r->taken = calloc(n, sizeof(*r->taken));
    cr_assert(r->jobs && r->taken);
    r->seed = seed;
    r->pops = pops;
    r->batch = batch_thieves;
    r->nthieves = THIEVES;
    atomic_store(&bad_line, 0);

    pthread_t th[THIEVES];
    struct thief_arg ta[THIEVES];
    for (unsigned k = 0; k < r->nthieves; k++) {
        ta[k] = (struct thief_arg){r, k};
        cr_assert_eq(pthread_create(&th[k], NULL, thief_main, &ta[k]), 0);
    }

    /* The owner: random batches of pushes, random pops between, occasional bursts
     * large enough to force the array to grow while thieves are stealing. */
    uint64_t rng = seed | 1; /* xorshift never leaves 0 */
    size_t next = 0;
    unsigned bursts = 0;
    bool stole = false;
    while (next < n) {
        uint64_t x = xorshift(&rng);
        size_t batch = 1 + (x & 15);
        if (bursts < rounds_of_bursts && (x >> 20) % 512 == 0) {
            batch = (size_t)512 << bursts; /* grows the array each time */
            bursts++;
        }
        if (batch > n - next)
            batch = n - next;
        for (size_t k = 0; k < batch; k++, next++) {
            r->jobs[next].arg = (void *)(uintptr_t)(next ^ MAGIC);
            /* Private or public at random; publish at random too (deque.c). */
            TCHECK(weft__deque_push(r->dq, &r->jobs[next], (x >> (k & 31)) & 1) == 0);
        }
        if (!stole && next >= 64) { /* before any pop: the deque holds items now */
            wait_first_steal(r);
            stole = true;
        }
        if (pops) {
            size_t npop = (x >> 8) % (batch + 2);
            for (size_t k = 0; k < npop; k++) {
                struct weft__job *j = weft__deque_pop(r->dq);
                if (!j)
                    break;
                take(r, THIEVES, j);
            }
        }
        if (((x >> 12) & 7) == 0)
            noise(&rng);
        /* A thief's request, or now and then unasked, as the dispatch loop does. */
        if (atomic_exchange_explicit(&r->dq->poke, 0, memory_order_relaxed) || ((x >> 16) & 7) == 0)
            weft__deque_publish(r->dq);
    }
    /* Drain: after a NULL pop the deque is empty (a thief won the last item), or,
     * with batch thieves, one may be in the middle of a claim near the top: the pop
     * leaves the job public then (deque.c, near_top_is_ours), so look again. */
    if (pops) {
        struct weft__job *j;
        for (;;) {
            while ((j = weft__deque_pop(r->dq)) != NULL)
                take(r, THIEVES, j);
            if (!batch_thieves || !weft__deque_looks_nonempty(r->dq))
                break;
            sched_yield();
        }
    } else {
        weft__deque_publish(r->dq); /* the owner stops: everything to the thieves */
        while (weft__deque_looks_nonempty(r->dq))
            sched_yield();
    }
    /* Release: the thieves that see done also see the empty deque. */
    atomic_store_explicit(&r->done, 1, memory_order_release);
    for (unsigned k = 0; k < r->nthieves; k++)
        pthread_join(th[k], NULL);

    int line = atomic_load(&bad_line);
    cr_assert_eq(line, 0, "check at test_deque.c:%d failed on a racing thread (seed %llu)",
                 line, (unsigned long long)seed);
    uint64_t count = 0, sum = 0, stolen = 0;
    for (unsigned k = 0; k <= THIEVES; k++) {
        count += r->count[k];
        sum += r->sum[k];
        if (k < THIEVES)
            stolen += r->count[k];
    }
    cr_assert_eq(count, n, "items taken (seed %llu)", (unsigned long long)seed);
    cr_assert_eq(sum, (uint64_t)n * (n - 1) / 2, "checksum of taken indices (seed %llu)",
                 (unsigned long long)seed);
    for (size_t i = 0; i < n; i++)
        if (atomic_load_explicit(&r->taken[i], memory_order_relaxed) != 1)
            cr_assert(0, "item %zu taken %u times (seed %llu)", i, (unsigned)r->taken[i],
                      (unsigned long long)seed);
    /* Without owner pops every item leaves through the top; with them, the thieves
     * took at least the item wait_first_steal() waited for. (How many steals abort
     * on a lost CAS depends on the scheduling alone: logged, not asserted.) */
    if (pops)
        cr_assert_gt(stolen, 0, "no item was stolen (seed %llu)", (unsigned long long)seed);
    else
        cr_assert_eq(stolen, n, "the owner took items without popping");
    if (batch_thieves)
        cr_assert_gt(r->batches[0] + r->batches[1] + r->batches[2], 0,
                     "no batch was taken (seed %llu)", (unsigned long long)seed);
    cr_log_info("deque race: n=%zu pops=%d batch=%d stolen=%llu batches=%llu "
                "aborts=%llu/%llu/%llu bursts=%u", n, (int)pops, (int)batch_thieves,
                (unsigned long long)stolen,
                (unsigned long long)(r->batches[0] + r->batches[1] + r->batches[2]),
                (unsigned long long)r->aborts[0], (unsigned long long)r->aborts[1],
                (unsigned long long)r->aborts[2], bursts);
    dq_del(r->dq);
    free(r->jobs);
    free((void *)r->taken);
    free(r);
}

/* 1,000,000 items (SCALED: 1/2 under ASan, 1/4 under TSan, tests/meson.build): owner
 * pushes and pops, three thieves steal. */
Test(deque, steal_races_pop, .timeout = 240)
{
    race_run(SCALED(1000000), true, 0x9E3779B97F4A7C15ull, 6, false);
}

/* Only thieves take: every item leaves through the top, while the array grows. */
Test(deque, steal_races_grow, .timeout = 240)
{
    for (unsigned round = 0; round < 8; round++)
        race_run(SCALED(40000), false, 0x2545F4914F6CDD1Dull + round, 6, false);
}

/* Thieves that take batches (one claim for up to WEFT__STEAL_MAX jobs, one read of
 * split) beside single steals, against an owner that pushes and pops: the owner's
 * pops near top must wait out the claims in flight (deque.c). */
Test(deque, batch_steals_race_pop, .timeout = 240)
{
    race_run(SCALED(1000000), true, 0x51ED270B27F4A7C1ull, 6, true);
}

Test(deque, batch_steals_race_grow, .timeout = 240)
{
    for (unsigned round = 0; round < 8; round++)
        race_run(SCALED(40000), false, 0x7F4A7C15E5A3D2B1ull + round, 6, true);
}

/* The last item: owner pop and thieves contend for a deque of size one. With one
 * thief the two really run at once on a 2-core machine. */
static void last_item_race(unsigned nthieves)
{
    struct race *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    size_t n = SCALED(200000);
    r->dq = dq_new();
    r->n = n;
    r->jobs = calloc(n, sizeof(*r->jobs));
    r->taken = calloc(n, sizeof(*r->taken));
    cr_assert(r->jobs && r->taken);
    r->seed = wt_test_seed(12345 + nthieves);
    r->nthieves = nthieves;
    atomic_store(&bad_line, 0);
    pthread_t th[THIEVES];
    struct thief_arg ta[THIEVES];
    for (unsigned k = 0; k < nthieves; k++) {
        ta[k] = (struct thief_arg){r, k};
        cr_assert_eq(pthread_create(&th[k], NULL, thief_main, &ta[k]), 0);
    }
    uint64_t rng = r->seed * 31 + 99;
    for (size_t i = 0; i < n; i++) {
        r->jobs[i].arg = (void *)(uintptr_t)(i ^ MAGIC);
        uint64_t x = xorshift(&rng);
        /* The first push onto an empty deque is always published (deque.c). */
        weft__deque_push(r->dq, &r->jobs[i], (x >> 1) & 1);
        if ((x >> 2) & 1)
            weft__deque_publish(r->dq);
        if (i == 0)
            wait_first_steal(r);
        if (x & 1)
            noise(&rng);
        struct weft__job *j = weft__deque_pop(r->dq);
        if (j)
            take(r, THIEVES, j);
        /* Either way the deque is empty now. */
        TCHECK(weft__deque_pop(r->dq) == NULL);
    }
    atomic_store_explicit(&r->done, 1, memory_order_release); /* as in race_run */
    for (unsigned k = 0; k < nthieves; k++)
        pthread_join(th[k], NULL);
    int line = atomic_load(&bad_line);
    cr_assert_eq(line, 0, "check at test_deque.c:%d failed on a racing thread (seed %llu)",
                 line, (unsigned long long)r->seed);
    uint64_t count = 0, sum = 0;
    for (unsigned k = 0; k <= THIEVES; k++) {
        count += r->count[k];
        sum += r->sum[k];
    }
    cr_assert_eq(count, n);
    cr_assert_eq(sum, (uint64_t)n * (n - 1) / 2);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&r->taken[i]), 1, "item %zu", i);
    cr_log_info("last item race, %u thieves: owner took %llu of %zu", nthieves,
                (unsigned long long)r->count[THIEVES], n);
    /* Both sides won some: item 0 went to a thief (waited for); of the rest, most
     * pushes are popped before any thief looks (half of them with no noise between),
     * so an owner that never wins its own last item has a broken pop. */
    cr_assert_gt(r->count[THIEVES], 0, "the owner never won its own last item (seed %llu)",
                 (unsigned long long)r->seed);
    cr_assert_lt(r->count[THIEVES], n, "no thief ever took the last item");
    dq_del(r->dq);
    free(r->jobs);
    free((void *)r->taken);
    free(r);
}

Test(deque, last_item_race_1_thief, .timeout = 240) { last_item_race(1); }
Test(deque, last_item_race_3_thieves, .timeout = 240) { last_item_race(3); }
