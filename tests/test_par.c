/* SPDX-License-Identifier: MIT */
/*
 * Data-parallel loops: weft_par_for, weft_par_collect, weft_par_stream.
 *
 * Every check counts calls per index (an atomic counter per index) on a buffer that
 * starts as a sentinel and has guard regions on both sides, so a slot written twice,
 * never, or out of bounds shows up as a count or a byte, not as a lucky sum.
 * Callbacks never assert (they may run on a worker thread, where a failed Criterion
 * assertion cannot unwind): they count what they see and the test thread asserts.
 */
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "checks.h"

#define SENT  0xA5u             /* sentinel byte: no pattern byte ever equals it */
#define GUARD 64                /* guard bytes before and after every buffer */
#define NO_FAIL SIZE_MAX
#define ERR_BASE 100000         /* item i fails with -(ERR_BASE + i): names its item */

static const size_t sizes[] = {0, 1, 2, 3, 7, 64, 1000, 1000003};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* The biggest n is scaled down under sanitizers (SCALED); the rest are kept. */
static size_t size_at(size_t k)
{
    return sizes[k] > 1000 ? (size_t)SCALED(sizes[k]) : sizes[k];
}

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Byte j of slot i: derived from i (and j), never the sentinel. */
static inline uint8_t pat(uint64_t h, size_t j)
{
    uint8_t b = (uint8_t)((h >> ((j & 7) * 8)) + (j >> 3) * 17u);
    return b == SENT ? 0x5A : b;
}

static inline uint64_t seed(size_t i)
{
    return mix((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
}

static weft_pool *make_pool(unsigned threads)
{
    weft_pool *pool = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&pool, &o), 0);
    cr_assert_eq(weft_pool_threads(pool), threads);
    return pool;
}

/* ------------------------------------------------------------------------------
 * A checked buffer: sentinel-filled slots between two guard regions, a call count
 * per index, and the failure plan of the items.
 * ---------------------------------------------------------------------------- */

struct buf {
    unsigned char *mem;         /* GUARD + n * es + GUARD bytes */
    unsigned char *out;         /* mem + GUARD */
    size_t n, es;
    _Atomic(uint32_t) *calls;   /* per index */
    _Atomic(uint32_t) bad;      /* slot pointer or index wrong */
    _Atomic(uint64_t) ran;      /* item calls in all */
    size_t fail_at;             /* this item fails (NO_FAIL: none) */
    size_t fail_mod;            /* and every i with i % fail_mod == fail_mod - 1 (0: none) */
};

static void buf_init(struct buf *b, size_t n, size_t es)
{
    memset(b, 0, sizeof(*b));
    b->n = n;
    b->es = es;
    b->mem = malloc(2 * GUARD + n * es);
    cr_assert_not_null(b->mem);
    memset(b->mem, SENT, 2 * GUARD + n * es);
    b->out = b->mem + GUARD;
    b->calls = calloc(n ? n : 1, sizeof(*b->calls));
    cr_assert_not_null(b->calls);
    atomic_init(&b->bad, 0);
    atomic_init(&b->ran, 0);
    b->fail_at = NO_FAIL;
}

static void buf_free(struct buf *b)
{
    free(b->mem);
    free(b->calls);
}

static bool item_fails(const struct buf *b, size_t i)
{
    return i == b->fail_at || (b->fail_mod && i % b->fail_mod == b->fail_mod - 1);
}

static bool slot_is(const struct buf *b, size_t i, bool written)
{
    const unsigned char *s = b->out + i * b->es;
    uint64_t h = seed(i);
    for (size_t j = 0; j < b->es; j++)
        if (s[j] != (written ? pat(h, j) : SENT))
            return false;
    return true;
}

static int item(void *ctx, size_t i, void *slot)
{
    struct buf *b = ctx;
    if (i >= b->n || (unsigned char *)slot != b->out + i * b->es) {
        atomic_fetch_add_explicit(&b->bad, 1, memory_order_relaxed);
        return -ERANGE;
    }
    atomic_fetch_add_explicit(&b->calls[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->ran, 1, memory_order_relaxed);
    if (item_fails(b, i))
        return -(int)(ERR_BASE + i); /* leaves its slot alone */
    unsigned char *s = slot;
    uint64_t h = seed(i);
    for (size_t j = 0; j < b->es; j++)
        s[j] = pat(h, j);
    return 0;
}

static void check_guards(const struct buf *b)
{
    for (size_t j = 0; j < GUARD; j++) {
        cr_assert_eq(b->mem[j], SENT, "guard before the buffer hit at -%zu", GUARD - j);
        cr_assert_eq(b->out[b->n * b->es + j], SENT,
                     "guard after the buffer hit at +%zu (n %zu, elem %zu)", j, b->n, b->es);
    }
}

/* After a successful loop: every slot written exactly once with its pattern. */
static void check_all_once(const struct buf *b)
{
    cr_assert_eq(atomic_load(&b->bad), 0, "an item got a wrong slot or index");
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = atomic_load_explicit(&b->calls[i], memory_order_relaxed);
        cr_assert_eq(c, 1, "item %zu of %zu (elem %zu) ran %u times", i, b->n, b->es, c);
        cr_assert(slot_is(b, i, true), "slot %zu of %zu (elem %zu) has the wrong value",
                  i, b->n, b->es);
    }
    cr_assert_eq(atomic_load(&b->ran), b->n);
    check_guards(b);
}

/* After a failed loop: each item ran at most once; a slot is written iff its item ran
 * and did not fail; the returned error names an item that ran and failed. Returns
 * the number of items that ran. */
static size_t check_failed(const struct buf *b, int ret)
{
    cr_assert_eq(atomic_load(&b->bad), 0, "an item got a wrong slot or index");
    cr_assert_leq(ret, -ERR_BASE, "loop returned %d, not an item's error", ret);
    size_t who = (size_t)(-(long)ret) - ERR_BASE;
    cr_assert_lt(who, b->n);
    cr_assert(item_fails(b, who), "returned error of item %zu, which did not fail", who);
    cr_assert_eq(atomic_load(&b->calls[who]), 1, "returned error of item %zu, which did not run",
                 who);
    size_t ran = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = atomic_load_explicit(&b->calls[i], memory_order_relaxed);
        cr_assert_leq(c, 1, "item %zu ran %u times", i, c);
        ran += c;
        bool written = c == 1 && !item_fails(b, i);
        cr_assert(slot_is(b, i, written), "slot %zu: %s", i,
                  written ? "wrong value" : "touched although its item did not finish");
    }
    cr_assert_eq(atomic_load(&b->ran), ran);
    check_guards(b);
    return ran;
}

/* ------------------------------------------------------------------------------
 * weft_par_collect
 * ---------------------------------------------------------------------------- */

static void collect_sizes(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    for (size_t k = 0; k < NSIZES; k++) {
        struct buf b;
        buf_init(&b, size_at(k), sizeof(uint64_t));
        cr_assert_eq(weft_par_collect(pool, b.n, b.out, b.es, item, &b), 0, "n %zu", b.n);
        check_all_once(&b);
        buf_free(&b);
    }
    weft_pool_destroy(pool);
}

Test(par, collect_1_worker) { collect_sizes(1); }
Test(par, collect_2_workers) { collect_sizes(2); }
Test(par, collect_4_workers) { collect_sizes(4); }
Test(par, collect_8_workers) { collect_sizes(8); }

/* Every element size from 1 to 128 bytes: slot i is out + i * es, whole slots are
 * written, nothing outside [out, out + n * es) is. */
static void elem_sizes(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    for (size_t es = 1; es <= 128; es++) {
        struct buf b;
        buf_init(&b, 1000, es);
        cr_assert_eq(weft_par_collect(pool, b.n, b.out, es, item, &b), 0, "elem %zu", es);
        check_all_once(&b);
        buf_free(&b);
    }
    weft_pool_destroy(pool);
}

Test(par, elem_sizes_1_worker) { elem_sizes(1); }
Test(par, elem_sizes_2_workers) { elem_sizes(2); }
Test(par, elem_sizes_8_workers) { elem_sizes(8); }

/* ------------------------------------------------------------------------------
 * weft_par_for
 * ---------------------------------------------------------------------------- */

struct ranges {
    size_t n, grain;
    _Atomic(uint32_t) *calls;
    _Atomic(uint32_t) bad;      /* empty, out of [0, n), or longer than grain */
    _Atomic(uint64_t) nranges;
    size_t fail_at;             /* the range holding this index fails */
};

static int range_fn(void *ctx, size_t lo, size_t hi)
{
    struct ranges *r = ctx;
    atomic_fetch_add_explicit(&r->nranges, 1, memory_order_relaxed);
    if (lo >= hi || hi > r->n || (r->grain && hi - lo > r->grain)) {
        atomic_fetch_add_explicit(&r->bad, 1, memory_order_relaxed);
        return -ERANGE;
    }
    for (size_t i = lo; i < hi; i++)
        atomic_fetch_add_explicit(&r->calls[i], 1, memory_order_relaxed);
    if (r->fail_at >= lo && r->fail_at < hi)
        return -(int)(ERR_BASE + r->fail_at);
    return 0;
}

static void ranges_init(struct ranges *r, size_t n, size_t grain)
{
    memset(r, 0, sizeof(*r));
    r->n = n;
    r->grain = grain;
    r->calls = calloc(n ? n : 1, sizeof(*r->calls));
    cr_assert_not_null(r->calls);
    atomic_init(&r->bad, 0);
    atomic_init(&r->nranges, 0);
    r->fail_at = NO_FAIL;
}

static void for_sizes(unsigned threads)
{
    static const size_t grains[] = {0, 1, 3, 64, 1000};
    weft_pool *pool = make_pool(threads);
    for (size_t g = 0; g < sizeof(grains) / sizeof(grains[0]); g++) {
        for (size_t k = 0; k < NSIZES; k++) {
            struct ranges r;
            ranges_init(&r, size_at(k), grains[g]);
            /* grain 1 on the biggest n is a million calls: keep it, it is cheap. */
            cr_assert_eq(weft_par_for(pool, r.n, r.grain, range_fn, &r), 0, "n %zu grain %zu",
                         r.n, r.grain);
            cr_assert_eq(atomic_load(&r.bad), 0, "a range was empty, out of bounds or over grain "
                         "%zu (n %zu)", r.grain, r.n);
            for (size_t i = 0; i < r.n; i++)
                cr_assert_eq(atomic_load_explicit(&r.calls[i], memory_order_relaxed), 1,
                             "index %zu of %zu (grain %zu) covered %u times", i, r.n, r.grain,
                             atomic_load_explicit(&r.calls[i], memory_order_relaxed));
            if (r.n == 0)
                cr_assert_eq(atomic_load(&r.nranges), 0);
            if (r.grain)
                cr_assert_geq(atomic_load(&r.nranges), (r.n + r.grain - 1) / r.grain);
            free(r.calls);
        }
    }
    weft_pool_destroy(pool);
}

Test(par, for_1_worker) { for_sizes(1); }
Test(par, for_2_workers) { for_sizes(2); }
Test(par, for_4_workers) { for_sizes(4); }
Test(par, for_8_workers) { for_sizes(8); }

/* ------------------------------------------------------------------------------
 * weft_par_stream
 * ---------------------------------------------------------------------------- */

struct stream {
    struct buf b;
    bool ordered;
    _Atomic(uint32_t) *handed;  /* per index: times handed to the sink */
    _Atomic(int) in_sink;       /* set around the sink body */
    _Atomic(uint32_t) overlaps; /* sink calls that found another one running */
    _Atomic(uint32_t) bad;      /* wrong order, bad run, or unfinished slots */
    size_t next;                /* ordered: where the next run must start (sink only) */
    uint64_t ncalls;            /* sink calls (sink only; plain: TSan sees overlaps) */
    uint64_t fail_call;         /* this sink call (1-based) fails; 0: none */
    int sink_err;
};

static int sink(void *sctx, size_t first, size_t count, const void *slots)
{
    struct stream *st = sctx;
    if (atomic_exchange_explicit(&st->in_sink, 1, memory_order_acquire))
        atomic_fetch_add_explicit(&st->overlaps, 1, memory_order_relaxed);
    /* Widen the window in which an overlapping call would find the flag set. */
    for (int k = 0; k < 200; k++)
        relax();
    st->ncalls++;
    const struct buf *b = &st->b;
    if (count == 0 || first >= b->n || count > b->n - first ||
        (const unsigned char *)slots != b->out + first * b->es ||
        (st->ordered && first != st->next))
        atomic_fetch_add_explicit(&st->bad, 1, memory_order_relaxed);
    else {
        st->next = first + count;
        for (size_t i = first; i < first + count; i++) {
            atomic_fetch_add_explicit(&st->handed[i], 1, memory_order_relaxed);
            /* The item finished (once, without failing) and its value is there. */
            if (atomic_load_explicit(&b->calls[i], memory_order_relaxed) != 1 ||
                item_fails(b, i) || !slot_is(b, i, true))
                atomic_fetch_add_explicit(&st->bad, 1, memory_order_relaxed);
        }
    }
    int r = st->fail_call && st->ncalls == st->fail_call ? st->sink_err : 0;
    atomic_store_explicit(&st->in_sink, 0, memory_order_release);
    return r;
}

static void stream_init(struct stream *st, size_t n, size_t es, bool ordered)
{
    memset(st, 0, sizeof(*st));
    buf_init(&st->b, n, es);
    st->ordered = ordered;
    st->handed = calloc(n ? n : 1, sizeof(*st->handed));
    cr_assert_not_null(st->handed);
    atomic_init(&st->in_sink, 0);
    atomic_init(&st->overlaps, 0);
    atomic_init(&st->bad, 0);
}

static void stream_free(struct stream *st)
{
    buf_free(&st->b);
    free(st->handed);
}

static int stream_run(weft_pool *pool, struct stream *st)
{
    return weft_par_stream(pool, st->b.n, st->b.out, st->b.es, item, &st->b, sink, st,
                           st->ordered ? WEFT_ORDERED : 0);
}

static void check_stream_common(struct stream *st)
{
    cr_assert_eq(atomic_load(&st->in_sink), 0, "a sink call still runs after the loop returned");
    cr_assert_eq(atomic_load(&st->overlaps), 0, "%u sink calls overlapped another",
                 atomic_load(&st->overlaps));
    cr_assert_eq(atomic_load(&st->bad), 0, "%u bad sink runs (order, bounds or unfinished "
                 "slots; ordered %d)", atomic_load(&st->bad), st->ordered);
}

static void check_stream_ok(struct stream *st)
{
    check_all_once(&st->b);
    check_stream_common(st);
    for (size_t i = 0; i < st->b.n; i++)
        cr_assert_eq(atomic_load_explicit(&st->handed[i], memory_order_relaxed), 1,
                     "index %zu of %zu handed to the sink %u times (ordered %d)", i, st->b.n,
                     atomic_load_explicit(&st->handed[i], memory_order_relaxed), st->ordered);
    if (st->ordered)
        cr_assert_eq(st->next, st->b.n);
    if (st->b.n == 0)
        cr_assert_eq(st->ncalls, 0);
}

static void stream_sizes(unsigned threads, bool ordered)
{
    weft_pool *pool = make_pool(threads);
    for (size_t k = 0; k < NSIZES; k++) {
        struct stream st;
        stream_init(&st, size_at(k), sizeof(uint64_t), ordered);
        cr_assert_eq(stream_run(pool, &st), 0, "n %zu", st.b.n);
        check_stream_ok(&st);
        stream_free(&st);
    }
    /* Odd element sizes: the sink's slots pointer is out + first * elem_size. */
    static const size_t odd[] = {1, 3, 24, 100, 128};
    for (size_t k = 0; k < sizeof(odd) / sizeof(odd[0]); k++) {
        struct stream st;
        stream_init(&st, 5000, odd[k], ordered);
        cr_assert_eq(stream_run(pool, &st), 0, "elem %zu", odd[k]);
        check_stream_ok(&st);
        stream_free(&st);
    }
    weft_pool_destroy(pool);
}

Test(par, stream_ordered_1_worker) { stream_sizes(1, true); }
Test(par, stream_ordered_2_workers) { stream_sizes(2, true); }
Test(par, stream_ordered_4_workers) { stream_sizes(4, true); }
Test(par, stream_ordered_8_workers) { stream_sizes(8, true); }
Test(par, stream_unordered_1_worker) { stream_sizes(1, false); }
Test(par, stream_unordered_2_workers) { stream_sizes(2, false); }
Test(par, stream_unordered_4_workers) { stream_sizes(4, false); }
Test(par, stream_unordered_8_workers) { stream_sizes(8, false); }

/* Runs pile up while the sink or the first item is slow: the ordered heap and the
 * unordered queue grow (and the queue compacts) with the sink still never
 * overlapping and every index handed over once. */
struct slow {
    struct stream st;
    unsigned slow_sink_calls;   /* the first this many sink calls sleep */
    bool slow_first_item;       /* item 0 sleeps */
};

static int slow_item(void *ctx, size_t i, void *slot)
{
    struct slow *s = ctx;
    if (i == 0 && s->slow_first_item) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return item(&s->st.b, i, slot);
}

static int slow_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    struct slow *s = sctx;
    if (s->st.ncalls < s->slow_sink_calls) {
        struct timespec ts = {0, 300 * 1000};
        nanosleep(&ts, NULL);
    }
    return sink(&s->st, first, count, slots);
}

static void stream_slow(unsigned threads, bool ordered, bool slow_first)
{
    weft_pool *pool = make_pool(threads);
    struct slow *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    stream_init(&s->st, (size_t)SCALED(300000), 8, ordered);
    s->slow_sink_calls = slow_first ? 0 : 30;
    s->slow_first_item = slow_first;
    cr_assert_eq(weft_par_stream(pool, s->st.b.n, s->st.b.out, 8, slow_item, s, slow_sink, s,
                                 ordered ? WEFT_ORDERED : 0), 0);
    check_stream_ok(&s->st);
    stream_free(&s->st);
    free(s);
    weft_pool_destroy(pool);
}

Test(par, stream_slow_sink_ordered) { stream_slow(2, true, false); stream_slow(4, true, false); }
Test(par, stream_slow_sink_unordered) { stream_slow(2, false, false); stream_slow(4, false, false); }
Test(par, stream_slow_first_item_ordered) { stream_slow(2, true, true); stream_slow(8, true, true); }
Test(par, stream_slow_first_item_unordered) { stream_slow(2, false, true); stream_slow(8, false, true); }

/* ------------------------------------------------------------------------------
 * Errors: the first error stops the loop and is returned; what did not run is
 * untouched.
 * ---------------------------------------------------------------------------- */

/* Most items run after an early failure only on a buggy loop: one worker runs the
 * loop front to back, so it may finish at most the chunk the failure is in. */
static void assert_stopped_early(unsigned threads, size_t ran, size_t n)
{
    if (threads == 1)
        cr_assert_lt(ran, 200, "1 worker: %zu of %zu items ran after item 10 failed", ran, n);
    else
        cr_assert_lt(ran, n, "%u workers: every item ran although item 10 failed", threads);
}

static void collect_errors(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    size_t n = (size_t)SCALED(1000003);

    /* One early failure. */
    struct buf b;
    buf_init(&b, n, sizeof(uint64_t));
    b.fail_at = 10;
    int r = weft_par_collect(pool, n, b.out, b.es, item, &b);
    cr_assert_eq(r, -(ERR_BASE + 10), "got %d", r);
    size_t ran = check_failed(&b, r);
    assert_stopped_early(threads, ran, n);
    buf_free(&b);

    /* Many failures: one of them is returned; on one worker the first. */
    buf_init(&b, 100000, 24);
    b.fail_mod = 997;
    r = weft_par_collect(pool, b.n, b.out, b.es, item, &b);
    check_failed(&b, r);
    if (threads == 1)
        cr_assert_eq(r, -(ERR_BASE + 996), "1 worker: got %d, want item 996's error", r);
    buf_free(&b);

    /* The last item fails: everything else ran (nothing could stop it earlier on one
     * worker) and the error still comes back. */
    buf_init(&b, 5000, 8);
    b.fail_at = 4999;
    r = weft_par_collect(pool, b.n, b.out, b.es, item, &b);
    cr_assert_eq(r, -(ERR_BASE + 4999));
    ran = check_failed(&b, r);
    if (threads == 1)
        cr_assert_eq(ran, 5000);
    buf_free(&b);
    weft_pool_destroy(pool);
}

Test(par, collect_error_1_worker) { collect_errors(1); }
Test(par, collect_error_2_workers) { collect_errors(2); }
Test(par, collect_error_4_workers) { collect_errors(4); }
Test(par, collect_error_8_workers) { collect_errors(8); }

static void for_errors(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    static const size_t grains[] = {0, 1, 16};
    for (size_t g = 0; g < 3; g++) {
        struct ranges r;
        ranges_init(&r, (size_t)SCALED(1000003), grains[g]);
        r.fail_at = 10;
        int ret = weft_par_for(pool, r.n, r.grain, range_fn, &r);
        cr_assert_eq(ret, -(ERR_BASE + 10), "grain %zu: got %d", r.grain, ret);
        cr_assert_eq(atomic_load(&r.bad), 0);
        size_t ran = 0;
        for (size_t i = 0; i < r.n; i++) {
            uint32_t c = atomic_load_explicit(&r.calls[i], memory_order_relaxed);
            cr_assert_leq(c, 1, "index %zu covered %u times", i, c);
            ran += c;
        }
        cr_assert_eq(atomic_load(&r.calls[10]), 1);
        assert_stopped_early(threads, ran, r.n);
        free(r.calls);
    }
    weft_pool_destroy(pool);
}

Test(par, for_error_1_worker) { for_errors(1); }
Test(par, for_error_2_workers) { for_errors(2); }
Test(par, for_error_8_workers) { for_errors(8); }

/* After a failed stream: what the sink got ran and finished; nothing twice. */
static void check_stream_failed(struct stream *st)
{
    check_stream_common(st);
    for (size_t i = 0; i < st->b.n; i++) {
        uint32_t h = atomic_load_explicit(&st->handed[i], memory_order_relaxed);
        cr_assert_leq(h, 1, "index %zu handed over %u times", i, h);
    }
}

static void stream_errors(unsigned threads, bool ordered)
{
    weft_pool *pool = make_pool(threads);
    size_t n = (size_t)SCALED(1000003);

    /* An early item fails. */
    struct stream st;
    stream_init(&st, n, sizeof(uint64_t), ordered);
    st.b.fail_at = 10;
    int r = stream_run(pool, &st);
    cr_assert_eq(r, -(ERR_BASE + 10), "got %d", r);
    size_t ran = check_failed(&st.b, r);
    check_stream_failed(&st);
    assert_stopped_early(threads, ran, n);
    if (ordered)
        cr_assert_leq(st.next, 10, "ordered: handed over up to %zu, past the failed item 10",
                      st.next);
    stream_free(&st);

    /* The sink fails on its first call. */
    stream_init(&st, n, sizeof(uint64_t), ordered);
    st.fail_call = 1;
    st.sink_err = -EPIPE;
    r = stream_run(pool, &st);
    cr_assert_eq(r, -EPIPE, "got %d", r);
    check_stream_failed(&st);
    cr_assert_eq(st.ncalls, 1, "the sink was called %llu times after it failed",
                 (unsigned long long)st.ncalls);
    ran = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = atomic_load_explicit(&st.b.calls[i], memory_order_relaxed);
        cr_assert_leq(c, 1);
        ran += c;
        cr_assert(slot_is(&st.b, i, c == 1), "slot %zu", i);
    }
    assert_stopped_early(threads, ran, n);
    stream_free(&st);

    /* The sink fails later, with a positive code (any nonzero int is an error). */
    stream_init(&st, 50000, 16, ordered);
    st.fail_call = 5;
    st.sink_err = 12345;
    r = stream_run(pool, &st);
    cr_assert_eq(r, 12345, "got %d", r);
    check_stream_failed(&st);
    cr_assert_eq(st.ncalls, 5, "the sink was called %llu times; it failed on call 5",
                 (unsigned long long)st.ncalls);
    stream_free(&st);
    weft_pool_destroy(pool);
}

Test(par, stream_error_ordered_1_worker) { stream_errors(1, true); }
Test(par, stream_error_ordered_2_workers) { stream_errors(2, true); }
Test(par, stream_error_ordered_8_workers) { stream_errors(8, true); }
Test(par, stream_error_unordered_1_worker) { stream_errors(1, false); }
Test(par, stream_error_unordered_2_workers) { stream_errors(2, false); }
Test(par, stream_error_unordered_8_workers) { stream_errors(8, false); }

/* ------------------------------------------------------------------------------
 * Nesting
 * ---------------------------------------------------------------------------- */

struct sum {
    _Atomic(uint64_t) sum;
    _Atomic(uint64_t) count;
};

static int sum_range(void *ctx, size_t lo, size_t hi)
{
    struct sum *s = ctx;
    uint64_t acc = 0;
    for (size_t i = lo; i < hi; i++)
        acc += i + 1;
    atomic_fetch_add_explicit(&s->sum, acc, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, hi - lo, memory_order_relaxed);
    return 0;
}

/* Item i: a weft_par_for over 300 + i indices; the slot gets its sum and count. */
static int item_with_for(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    struct sum s;
    atomic_init(&s.sum, 0);
    atomic_init(&s.count, 0);
    int r = weft_par_for(NULL, 300 + i, i % 3 == 0 ? 0 : 7, sum_range, &s);
    uint64_t *o = slot;
    o[0] = atomic_load(&s.sum);
    o[1] = atomic_load(&s.count);
    return r;
}

static void nested_for(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    size_t n = 200;
    uint64_t (*out)[2] = calloc(n, sizeof(*out));
    cr_assert_not_null(out);
    cr_assert_eq(weft_par_collect(pool, n, out, sizeof(*out), item_with_for, NULL), 0);
    for (size_t i = 0; i < n; i++) {
        uint64_t m = 300 + i;
        cr_assert_eq(out[i][1], m, "item %zu: inner loop covered %llu of %llu", i,
                     (unsigned long long)out[i][1], (unsigned long long)m);
        cr_assert_eq(out[i][0], m * (m + 1) / 2, "item %zu: inner sum", i);
    }
    free(out);
    weft_pool_destroy(pool);
}

Test(par, nested_for_in_collect_1_worker) { nested_for(1); }
Test(par, nested_for_in_collect_2_workers) { nested_for(2); }
Test(par, nested_for_in_collect_8_workers) { nested_for(8); }

struct parts {
    size_t i;
    uint64_t part[4];
};

static int part_task(void *arg)
{
    uint64_t *p = arg;
    /* The part's index lives in its own slot until the task replaces it. */
    *p = mix(*p);
    return 0;
}

static int parts_body(weft_scope *s, void *arg)
{
    struct parts *p = arg;
    for (int k = 0; k < 4; k++) {
        p->part[k] = p->i * 4 + (size_t)k;
        int r = weft_spawn(s, part_task, &p->part[k]);
        if (r)
            return r;
    }
    return 0;
}

/* Item i: a scope with four spawned tasks; the slot gets their combined result. */
static int item_with_scope(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    struct parts p = {.i = i};
    int r = weft_scope_run(NULL, parts_body, &p);
    uint64_t v = 0;
    for (int k = 0; k < 4; k++)
        v ^= p.part[k] * (uint64_t)(k + 1);
    *(uint64_t *)slot = v;
    return r;
}

static void nested_scope(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    size_t n = (size_t)SCALED(3000);
    uint64_t *out = calloc(n, sizeof(*out));
    cr_assert_not_null(out);
    cr_assert_eq(weft_par_collect(pool, n, out, sizeof(*out), item_with_scope, NULL), 0);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        for (uint64_t k = 0; k < 4; k++)
            v ^= mix(i * 4 + k) * (k + 1);
        cr_assert_eq(out[i], v, "item %zu", i);
    }
    free(out);
    weft_pool_destroy(pool);
}

Test(par, nested_scope_in_collect_1_worker) { nested_scope(1); }
Test(par, nested_scope_in_collect_2_workers) { nested_scope(2); }
Test(par, nested_scope_in_collect_8_workers) { nested_scope(8); }

/* A loop inside a task spawned into a scope: collect, stream or for by task number. */
struct loop_task {
    struct stream st;
    struct ranges r;
    int kind;
    int ret;
};

static int loop_task_fn(void *arg)
{
    struct loop_task *t = arg;
    switch (t->kind) {
    case 0:
        t->ret = weft_par_collect(NULL, t->st.b.n, t->st.b.out, t->st.b.es, item, &t->st.b);
        break;
    case 1:
    case 2:
        t->ret = weft_par_stream(NULL, t->st.b.n, t->st.b.out, t->st.b.es, item, &t->st.b,
                                 sink, &t->st, t->st.ordered ? WEFT_ORDERED : 0);
        break;
    default:
        t->ret = weft_par_for(NULL, t->r.n, t->r.grain, range_fn, &t->r);
        break;
    }
    return t->ret;
}

#define NLOOPS 12

static int spawn_loops(weft_scope *s, void *arg)
{
    struct loop_task *t = arg;
    for (int k = 0; k < NLOOPS; k++) {
        int r = weft_spawn(s, loop_task_fn, &t[k]);
        if (r)
            return r;
    }
    return 0;
}

static void loops_in_tasks(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    struct loop_task *t = calloc(NLOOPS, sizeof(*t));
    cr_assert_not_null(t);
    for (int k = 0; k < NLOOPS; k++) {
        t[k].kind = k % 4;
        stream_init(&t[k].st, (size_t)SCALED(20000) + (size_t)k, 8, t[k].kind == 1);
        ranges_init(&t[k].r, (size_t)SCALED(20000) + (size_t)k, (size_t)k);
    }
    cr_assert_eq(weft_scope_run(pool, spawn_loops, t), 0);
    for (int k = 0; k < NLOOPS; k++) {
        cr_assert_eq(t[k].ret, 0, "loop %d", k);
        if (t[k].kind == 0) {
            check_all_once(&t[k].st.b);
        } else if (t[k].kind < 3) {
            check_stream_ok(&t[k].st);
        } else {
            cr_assert_eq(atomic_load(&t[k].r.bad), 0);
            for (size_t i = 0; i < t[k].r.n; i++)
                cr_assert_eq(atomic_load(&t[k].r.calls[i]), 1, "loop %d index %zu", k, i);
        }
        stream_free(&t[k].st);
        free(t[k].r.calls);
    }
    free(t);
    weft_pool_destroy(pool);
}

Test(par, loops_in_spawned_tasks_1_worker) { loops_in_tasks(1); }
Test(par, loops_in_spawned_tasks_2_workers) { loops_in_tasks(2); }
Test(par, loops_in_spawned_tasks_8_workers) { loops_in_tasks(8); }

/* A stream whose items each run a collect of their own. */
struct inner {
    size_t m;
};

static int inner_item(void *ctx, size_t j, void *slot)
{
    (void)ctx;
    *(uint64_t *)slot = mix(j + 7);
    return 0;
}

static int item_with_collect(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    size_t m = 50 + i % 200;
    uint64_t tmp[256];
    int r = weft_par_collect(NULL, m, tmp, sizeof(tmp[0]), inner_item, NULL);
    uint64_t acc = 0;
    for (size_t j = 0; j < m; j++)
        acc += tmp[j];
    *(uint64_t *)slot = acc;
    return r;
}

struct sum_sink {
    const uint64_t *out;
    size_t next;
    _Atomic(uint32_t) bad;
};

static int check_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    struct sum_sink *s = sctx;
    if (first != s->next || (const uint64_t *)slots != s->out + first)
        atomic_fetch_add_explicit(&s->bad, 1, memory_order_relaxed);
    s->next = first + count;
    return 0;
}

static void nested_collect_in_stream(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    size_t n = (size_t)SCALED(2000);
    uint64_t *out = calloc(n, sizeof(*out));
    cr_assert_not_null(out);
    struct sum_sink s = {.out = out};
    atomic_init(&s.bad, 0);
    cr_assert_eq(weft_par_stream(pool, n, out, 8, item_with_collect, NULL, check_sink, &s,
                                 WEFT_ORDERED), 0);
    cr_assert_eq(atomic_load(&s.bad), 0);
    cr_assert_eq(s.next, n);
    for (size_t i = 0; i < n; i++) {
        uint64_t acc = 0;
        for (size_t j = 0; j < 50 + i % 200; j++)
            acc += mix(j + 7);
        cr_assert_eq(out[i], acc, "item %zu", i);
    }
    free(out);
    weft_pool_destroy(pool);
}

Test(par, nested_collect_in_stream_1_worker) { nested_collect_in_stream(1); }
Test(par, nested_collect_in_stream_2_workers) { nested_collect_in_stream(2); }
Test(par, nested_collect_in_stream_4_workers) { nested_collect_in_stream(4); }

/* ------------------------------------------------------------------------------
 * Callers: outside threads at once, inside a task, the default pool, another pool.
 * ---------------------------------------------------------------------------- */

struct caller {
    weft_pool *pool;            /* NULL: the calling worker's or the default pool */
    int rounds;
    int failed;                 /* what went wrong, for the test thread to report */
    size_t where;
};

/* One of each loop, verified here; returns 0 or a code saying what failed. */
static int one_of_each(weft_pool *pool, size_t n, size_t *where)
{
    struct buf b;
    memset(&b, 0, sizeof(b));
    b.n = n;
    b.es = 8;
    b.fail_at = NO_FAIL;
    b.mem = malloc(2 * GUARD + n * 8);
    b.calls = calloc(n, sizeof(*b.calls));
    if (!b.mem || !b.calls)
        return 1;
    b.out = b.mem + GUARD;
    memset(b.mem, SENT, 2 * GUARD + n * 8);
    atomic_init(&b.bad, 0);
    atomic_init(&b.ran, 0);
    int code = 0;
    if (weft_par_collect(pool, n, b.out, 8, item, &b) != 0)
        code = 2;
    for (size_t i = 0; i < n && !code; i++)
        if (atomic_load(&b.calls[i]) != 1 || !slot_is(&b, i, true)) {
            *where = i;
            code = 3;
        }

    struct stream *st = calloc(1, sizeof(*st));
    if (!st)
        return 1;
    st->b = b;
    st->ordered = true;
    st->handed = calloc(n, sizeof(*st->handed));
    if (!st->handed)
        return 1;
    memset(b.mem, SENT, 2 * GUARD + n * 8);
    for (size_t i = 0; i < n; i++)
        atomic_store(&b.calls[i], 0);
    if (!code && weft_par_stream(pool, n, b.out, 8, item, &st->b, sink, st, WEFT_ORDERED) != 0)
        code = 4;
    if (!code && (atomic_load(&st->overlaps) || atomic_load(&st->bad) || st->next != n))
        code = 5;
    for (size_t i = 0; i < n && !code; i++)
        if (atomic_load(&st->handed[i]) != 1) {
            *where = i;
            code = 6;
        }
    free(st->handed);
    free(st);

    struct ranges r;
    memset(&r, 0, sizeof(r));
    r.n = n;
    r.grain = 5;
    r.calls = b.calls;
    r.fail_at = NO_FAIL;
    for (size_t i = 0; i < n; i++)
        atomic_store(&b.calls[i], 0);
    if (!code && weft_par_for(pool, n, r.grain, range_fn, &r) != 0)
        code = 7;
    for (size_t i = 0; i < n && !code; i++)
        if (atomic_load(&r.calls[i]) != 1 || atomic_load(&r.bad)) {
            *where = i;
            code = 8;
        }
    free(b.mem);
    free(b.calls);
    return code;
}

static void *outside_thread(void *p)
{
    struct caller *c = p;
    for (int k = 0; k < c->rounds && !c->failed; k++)
        c->failed = one_of_each(c->pool, 1000 + (size_t)k * 3333, &c->where);
    return NULL;
}

static void outside_threads(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    enum { T = 3 };
    pthread_t th[T];
    struct caller c[T];
    for (int k = 0; k < T; k++) {
        c[k] = (struct caller){.pool = pool, .rounds = SCALED(10)};
        cr_assert_eq(pthread_create(&th[k], NULL, outside_thread, &c[k]), 0);
    }
    for (int k = 0; k < T; k++) {
        pthread_join(th[k], NULL);
        cr_assert_eq(c[k].failed, 0, "thread %d: check %d failed at index %zu", k,
                     c[k].failed, c[k].where);
    }
    weft_pool_destroy(pool);
}

Test(par, outside_threads_1_worker) { outside_threads(1); }
Test(par, outside_threads_2_workers) { outside_threads(2); }
Test(par, outside_threads_8_workers) { outside_threads(8); }

static int inside_task(void *p)
{
    struct caller *c = p;
    for (int k = 0; k < c->rounds && !c->failed; k++)
        c->failed = one_of_each(c->pool, 1000 + (size_t)k * 3333, &c->where);
    return 0;
}

static void from_task(unsigned threads)
{
    weft_pool *pool = make_pool(threads);
    /* pool NULL inside a task: the calling worker's pool. */
    struct caller c = {.pool = NULL, .rounds = SCALED(10)};
    cr_assert_eq(weft_run(pool, inside_task, &c), 0);
    cr_assert_eq(c.failed, 0, "check %d failed at index %zu", c.failed, c.where);
    /* And the pool named explicitly. */
    c = (struct caller){.pool = pool, .rounds = SCALED(10)};
    cr_assert_eq(weft_run(pool, inside_task, &c), 0);
    cr_assert_eq(c.failed, 0, "check %d failed at index %zu", c.failed, c.where);
    weft_pool_destroy(pool);
}

Test(par, from_task_1_worker) { from_task(1); }
Test(par, from_task_2_workers) { from_task(2); }
Test(par, from_task_8_workers) { from_task(8); }

/* A task of pool a runs loops on pool b (the worker of a sleeps meanwhile). */
static void cross_pool(unsigned ta, unsigned tb)
{
    weft_pool *a = make_pool(ta), *b = make_pool(tb);
    struct caller c = {.pool = b, .rounds = SCALED(6)};
    cr_assert_eq(weft_run(a, inside_task, &c), 0);
    cr_assert_eq(c.failed, 0, "check %d failed at index %zu", c.failed, c.where);
    weft_pool_destroy(b);
    weft_pool_destroy(a);
}

Test(par, from_task_of_other_pool) { cross_pool(2, 2); cross_pool(1, 4); }

Test(par, default_pool)
{
    struct caller c = {.pool = NULL, .rounds = SCALED(6)};
    outside_thread(&c);
    cr_assert_eq(c.failed, 0, "check %d failed at index %zu", c.failed, c.where);
}

/* ------------------------------------------------------------------------------
 * Bad input: a clear error, no callback.
 * ---------------------------------------------------------------------------- */

static _Atomic(unsigned) never_calls;

static int never_item(void *ctx, size_t i, void *slot)
{
    atomic_fetch_add(&never_calls, 1);
    return -EFAULT;
}

static int never_range(void *ctx, size_t lo, size_t hi)
{
    atomic_fetch_add(&never_calls, 1);
    return -EFAULT;
}

static int never_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    atomic_fetch_add(&never_calls, 1);
    return -EFAULT;
}

static void bad_input_on(weft_pool *pool)
{
    uint64_t buf[4];
    int (*nofn)(void *, size_t, void *) = NULL;
    int (*norange)(void *, size_t, size_t) = NULL;
    int (*nosink)(void *, size_t, size_t, const void *) = NULL;
    atomic_store(&never_calls, 0);

    /* par_collect */
    cr_assert_eq(weft_par_collect(pool, 4, NULL, 8, never_item, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(pool, 4, buf, 0, never_item, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(pool, 4, buf, 8, nofn, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(pool, 0, buf, 8, nofn, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(pool, 0, buf, 0, never_item, NULL), -EINVAL);
    cr_assert_eq(weft_par_collect(pool, SIZE_MAX / 8 + 1, buf, 8, never_item, NULL), -EOVERFLOW);
    cr_assert_eq(weft_par_collect(pool, SIZE_MAX, buf, 2, never_item, NULL), -EOVERFLOW);
    cr_assert_eq(weft_par_collect(pool, 3, buf, SIZE_MAX / 2, never_item, NULL), -EOVERFLOW);
    cr_assert_eq(weft_par_collect(pool, 0, buf, 8, never_item, NULL), 0);
    cr_assert_eq(weft_par_collect(pool, 0, NULL, 8, never_item, NULL), 0);
    cr_assert_eq(weft_par_collect(pool, 0, NULL, SIZE_MAX, never_item, NULL), 0);

    /* par_stream: as collect, plus the sink and the flags */
    cr_assert_eq(weft_par_stream(pool, 4, NULL, 8, never_item, NULL, never_sink, NULL, 0),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 0, never_item, NULL, never_sink, NULL, 0),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, nofn, NULL, never_sink, NULL, 0), -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, never_item, NULL, nosink, NULL, 0), -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, never_item, NULL, nosink, NULL, WEFT_ORDERED),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, never_item, NULL, never_sink, NULL, 2u),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, never_item, NULL, never_sink, NULL,
                                 WEFT_ORDERED | 0x80000000u), -EINVAL);
    cr_assert_eq(weft_par_stream(pool, 4, buf, 8, never_item, NULL, never_sink, NULL, ~0u),
                 -EINVAL);
    cr_assert_eq(weft_par_stream(pool, SIZE_MAX / 8 + 1, buf, 8, never_item, NULL, never_sink,
                                 NULL, WEFT_ORDERED), -EOVERFLOW);
    cr_assert_eq(weft_par_stream(pool, 0, buf, 8, never_item, NULL, never_sink, NULL, 0), 0);
    cr_assert_eq(weft_par_stream(pool, 0, NULL, 8, never_item, NULL, never_sink, NULL,
                                 WEFT_ORDERED), 0);

    /* par_for */
    cr_assert_eq(weft_par_for(pool, 10, 0, norange, NULL), -EINVAL);
    cr_assert_eq(weft_par_for(pool, 0, 0, norange, NULL), -EINVAL);
    cr_assert_eq(weft_par_for(pool, 0, 0, never_range, NULL), 0);
    cr_assert_eq(weft_par_for(pool, 0, 5, never_range, NULL), 0);

    cr_assert_eq(atomic_load(&never_calls), 0, "a callback ran on bad input or n == 0");
}

Test(par, bad_input)
{
    weft_pool *pool = make_pool(2);
    bad_input_on(pool);
    weft_pool_destroy(pool);
}

Test(par, bad_input_default_pool) { bad_input_on(NULL); }

static int bad_input_task(void *p)
{
    bad_input_on(NULL);
    return 0;
}

Test(par, bad_input_from_task)
{
    weft_pool *pool = make_pool(1);
    cr_assert_eq(weft_run(pool, bad_input_task, NULL), 0);
    weft_pool_destroy(pool);
}

/* A pool inherited across fork() is dead: the loops say -ECHILD and call nothing. */
Test(par, forked_child_gets_echild)
{
    weft_pool *pool = make_pool(2);
    uint64_t buf[8];
    atomic_store(&never_calls, 0);
    /* Fork only while the workers sleep (the policy of test_lifecycle.c, for ASan's
     * allocator locks): the pool has started both and they park. */
    cr_assert(wt_wait_parked(pool, 2, 10000), "the workers did not park before fork()");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int code = 0;
        if (weft_par_collect(pool, 8, buf, 8, never_item, NULL) != -ECHILD)
            code |= 1;
        if (weft_par_stream(pool, 8, buf, 8, never_item, NULL, never_sink, NULL, 0) != -ECHILD)
            code |= 2;
        if (weft_par_for(pool, 8, 0, never_range, NULL) != -ECHILD)
            code |= 4;
        if (atomic_load(&never_calls))
            code |= 8;
        _exit(code);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died (status %#x)", status);
    cr_assert_eq(WEXITSTATUS(status), 0, "child: bit 1 collect, 2 stream, 4 for, 8 called");
    weft_pool_destroy(pool);
}
