/* SPDX-License-Identifier: MIT */
/*
 * Allocation failure, everywhere (built only with -Dfault_inject=true; tools/test
 * runs it in an ASan+UBSan build, so every path must also leak nothing).
 *
 * lib/fault.h makes the Nth resource check fail: malloc and friends, the frame
 * slabs, deque growth, fiber stacks (mmap), io_uring rings and eventfds, worker and
 * blocking threads. Each test walks N = 1, 2, 3, ... over one operation until a run
 * sees no injected failure, on a fresh pool each time (made before arming, so the
 * walk covers the operation, not the pool's own creation -- except in the pool
 * walks). Every run must
 *  - return success or the error weft.h documents (-ENOMEM, -EAGAIN), or succeed
 *    through a documented fallback (a join whose deque cannot grow runs inline, a
 *    wait with no stack to suspend to waits in place, a read without its buffer
 *    fails with -ENOMEM);
 *  - lose no accepted task: every spawn that returned 0 ran, and results of calls
 *    that succeeded are complete;
 *  - leave the pool usable: a small workload of every kind must then succeed;
 *  - leak nothing (ASan's leak check at exit).
 * At the end each test prints the sites its walk hit.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"
#include "fault.h"

#define MAX_N 20000

static long cur_n;
static const char *cur_walk;

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_fault: a run hung (watchdog); see the walk and N above\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing more to do */
    }
    abort();
}

/* Sites seen by a walk, for its summary line. */
struct sites {
    const char *name[64];
    unsigned n;
};

static void site_add(struct sites *s, const char *site)
{
    if (!site)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->name[i], site) == 0)
            return;
    if (s->n < 64)
        s->name[s->n++] = site;
}

static char data_path[256], small_path[300];
static char *data;
static size_t data_len = 200001; /* > the ring's one-submission guess: the long path */

static void data_setup(void)
{
    if (data)
        return;
    const char *tmp = getenv("TMPDIR");
    snprintf(data_path, sizeof(data_path), "%s/weft-fault-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(data_path);
    cr_assert_geq(fd, 0);
    data = malloc(data_len);
    for (size_t i = 0; i < data_len; i++)
        data[i] = (char)('A' + i % 23);
    cr_assert_eq(write(fd, data, data_len), (ssize_t)data_len);
    close(fd);
    snprintf(small_path, sizeof(small_path), "%s.small", data_path);
    fd = open(small_path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "open %s", small_path);
    cr_assert_eq(write(fd, data, 1000), 1000);
    close(fd);
}

static void data_teardown(void)
{
    unlink(data_path);
    unlink(small_path);
    free(data);
    data = NULL;
}

/* ---- the workload every pool must still run ------------------------------------ */

static _Atomic(unsigned) wl_ran;

static int wl_task(void *p)
{
    (void)p;
    atomic_fetch_add(&wl_ran, 1);
    return 0;
}

static int wl_body(weft_scope *s, void *p)
{
    (void)p;
    for (int i = 0; i < 100; i++) {
        int r = weft_spawn(s, wl_task, NULL);
        if (r)
            return r;
    }
    return 0;
}

static int wl_range(void *ctx, size_t lo, size_t hi)
{
    atomic_fetch_add((_Atomic(unsigned) *)ctx, (unsigned)(hi - lo));
    return 0;
}

static int wl_read(void *p)
{
    (void)p;
    void *buf;
    size_t size;
    int r = weft_read_file(data_path, &buf, &size);
    if (r)
        return r;
    r = size == data_len && memcmp(buf, data, size) == 0 ? 0 : -EIO;
    free(buf);
    return r;
}

/* A small file: the ring reads it in one submission and trims the buffer. */
static int wl_read_small(void *p)
{
    (void)p;
    void *buf;
    size_t size;
    int r = weft_read_file(small_path, &buf, &size);
    if (r)
        return r;
    r = size == 1000 && memcmp(buf, data, size) == 0 ? 0 : -EIO;
    free(buf);
    return r;
}

static int wl_sleep(void *p)
{
    (void)p;
    return weft_sleep(1000);
}

static void workload(weft_pool *pool)
{
    atomic_store(&wl_ran, 0);
    cr_assert_eq(weft_scope_run(pool, wl_body, NULL), 0, "%s N=%ld: scope after", cur_walk,
                 cur_n);
    cr_assert_eq(atomic_load(&wl_ran), 100u, "%s N=%ld: tasks lost after", cur_walk, cur_n);
    _Atomic(unsigned) items = 0;
    cr_assert_eq(weft_par_for(pool, 1000, 0, wl_range, &items), 0, "%s N=%ld: par_for after",
                 cur_walk, cur_n);
    cr_assert_eq(atomic_load(&items), 1000u, "%s N=%ld: items lost after", cur_walk, cur_n);
    cr_assert_eq(weft_run(pool, wl_read, NULL), 0, "%s N=%ld: read_file after", cur_walk,
                 cur_n);
    cr_assert_eq(weft_run(pool, wl_sleep, NULL), 0, "%s N=%ld: sleep after", cur_walk, cur_n);
}

/* ---- the walk ------------------------------------------------------------------ */

struct op {
    const char *name;
    unsigned threads, flags;
    /* Runs the operation on pool (NULL: creates its own); returns its result. */
    int (*run)(weft_pool *pool, void *ctx);
    void *ctx;
    bool own_pool;
};

static bool allowed(int r)
{
    return r == 0 || r == -ENOMEM || r == -EAGAIN;
}

static void walk(const struct op *op)
{
    struct sites seen = {{0}, 0};
    data_setup();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    cur_walk = op->name;
    long n;
    unsigned failures = 0;
    for (n = 1; n <= MAX_N; n++) {
        cur_n = n;
        weft_pool *pool = NULL;
        if (!op->own_pool) {
            weft_pool_options o = {.threads = op->threads, .flags = op->flags};
            cr_assert_eq(weft_pool_create(&pool, &o), 0);
        }
        alarm(20);
        weft__fault_arm(n);
        int r = op->run(pool, op->ctx);
        long checks = weft__fault_disarm();
        alarm(0);
        const char *site = weft__fault_site();
        bool fired = site != NULL;
        site_add(&seen, site);
        cr_assert(allowed(r), "%s N=%ld (site %s): returned %d", op->name, n,
                  site ? site : "none", r);
        cr_assert(fired || r == 0, "%s N=%ld: returned %d with no injected failure", op->name,
                  n, r);
        if (r)
            failures++;
        if (pool) {
            alarm(20);
            workload(pool);
            alarm(0);
            weft_pool_destroy(pool);
        }
        if (!fired || checks < n)
            break;
    }
    cr_assert_leq(n, MAX_N, "%s: the walk did not end", op->name);
    char list[1024] = "";
    for (unsigned i = 0; i < seen.n; i++) {
        strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
        strncat(list, seen.name[i], sizeof(list) - strlen(list) - 1);
    }
    fprintf(stderr, "fault %s: %ld runs, %u returned an error; sites: %s\n", op->name, n,
            failures, list);
    data_teardown();
}

/* ---- operations ------------------------------------------------------------------ */

static int op_pool(weft_pool *unused, void *ctx)
{
    (void)unused;
    const weft_pool_options *o = ctx;
    weft_pool *p = NULL;
    int r = weft_pool_create(&p, o);
    if (r) {
        cr_assert_null(p);
        return r;
    }
    long left = weft__fault_disarm(); /* the workload runs unarmed */
    (void)left;
    workload(p);
    weft_pool_destroy(p);
    return 0;
}

/* Scope + spawn: tasks spawn children (weft_spawn_copy) and grandchildren, more
 * than a deque's first array holds when run from a worker. */
/* A spawn that fails is not retried, and its spawner returns 0: so the scope does
 * not cancel itself, and every accepted task must run. */
struct sp {
    _Atomic(unsigned) accepted, ran;
    _Atomic(int) spawn_err;
    weft_scope *s;
};

struct sp_arg {
    struct sp *c;
    unsigned depth;
};

static int sp_task(void *p)
{
    struct sp_arg a = *(struct sp_arg *)p;
    atomic_fetch_add(&a.c->ran, 1);
    if (a.depth == 0)
        return 0;
    for (int i = 0; i < 3; i++) {
        struct sp_arg k = {a.c, a.depth - 1};
        int r = weft_spawn_copy(a.c->s, sp_task, &k, sizeof(k));
        if (r) {
            atomic_store(&a.c->spawn_err, r);
            return 0;
        }
        atomic_fetch_add(&a.c->accepted, 1);
    }
    return 0;
}

static int sp_body(weft_scope *s, void *p)
{
    struct sp *c = p;
    c->s = s;
    for (int i = 0; i < 300; i++) {
        struct sp_arg k = {c, i % 8 == 0 ? 2 : 0};
        int r = weft_spawn_copy(s, sp_task, &k, sizeof(k));
        if (r) {
            atomic_store(&c->spawn_err, r);
            return 0;
        }
        atomic_fetch_add(&c->accepted, 1);
    }
    return 0;
}

static int sp_check(struct sp *c, int r)
{
    cr_assert_eq(atomic_load(&c->ran), atomic_load(&c->accepted),
                 "%s N=%ld: %u spawns accepted, %u ran (scope returned %d)", cur_walk, cur_n,
                 atomic_load(&c->accepted), atomic_load(&c->ran), r);
    cr_assert_eq(r, 0, "%s N=%ld: the scope returned %d", cur_walk, cur_n, r);
    int e = atomic_load(&c->spawn_err);
    if (e == 0)
        cr_assert_eq(atomic_load(&c->accepted), 300u + 38u * 12u, "%s N=%ld: spawns missing",
                     cur_walk, cur_n);
    return e;
}

static int op_scope_outside(weft_pool *pool, void *ctx)
{
    (void)ctx;
    struct sp c = {0};
    return sp_check(&c, weft_scope_run(pool, sp_body, &c));
}

static int sp_inside(void *p)
{
    return weft_scope_run(NULL, sp_body, p);
}

static int op_scope_inside(weft_pool *pool, void *ctx)
{
    (void)ctx;
    struct sp c = {0};
    return sp_check(&c, weft_run(pool, sp_inside, &c));
}

/* weft_join deeper than a deque's first array, with halves to steal. */
struct jn {
    unsigned depth;
    _Atomic(unsigned) *leaves;
};

static int jn_leaf(void *p)
{
    struct jn *j = p;
    atomic_fetch_add(j->leaves, 1);
    for (volatile int k = 0; k < 50; k++)
        ;
    return 0;
}

static int jn_rec(void *p)
{
    struct jn *j = p;
    if (j->depth == 0)
        return jn_leaf(p);
    struct jn deeper = {j->depth - 1, j->leaves};
    struct jn leaf = {0, j->leaves};
    return weft_join(jn_rec, &deeper, jn_leaf, &leaf);
}

static int op_join(weft_pool *pool, void *ctx)
{
    (void)ctx;
    _Atomic(unsigned) leaves = 0;
    struct jn top = {400, &leaves};
    int r = weft_run(pool, jn_rec, &top);
    cr_assert_eq(r, 0, "%s N=%ld: weft_join returned %d", cur_walk, cur_n, r);
    cr_assert_eq(atomic_load(&leaves), 401u, "%s N=%ld: lost join halves", cur_walk, cur_n);
    return r;
}

/* Loops, from outside and from a task. */
#define LN 5000

struct ln {
    weft_pool *pool;
    _Atomic(unsigned) seen[LN];
    uint32_t out[LN];
    size_t next;
    bool ordered;
};

static int ln_range(void *ctx, size_t lo, size_t hi)
{
    struct ln *l = ctx;
    for (size_t i = lo; i < hi; i++)
        atomic_fetch_add(&l->seen[i], 1);
    return 0;
}

static int ln_item(void *ctx, size_t i, void *slot)
{
    (void)ctx;
    *(uint32_t *)slot = (uint32_t)(i * 2654435761u);
    return 0;
}

static int ln_sink(void *sctx, size_t first, size_t count, const void *slots)
{
    struct ln *l = sctx;
    if (l->ordered && first != l->next)
        return -EPROTO;
    l->next = first + count;
    const uint32_t *v = slots;
    for (size_t k = 0; k < count; k++) {
        if (v[k] != (uint32_t)((first + k) * 2654435761u))
            return -EPROTO;
        atomic_fetch_add(&l->seen[first + k], 1);
    }
    return 0;
}

static int ln_all(void *p)
{
    struct ln *l = p;
    weft_pool *pool = l->pool;
    memset(l->seen, 0, sizeof(l->seen));
    int r = weft_par_for(pool, LN, 0, ln_range, l);
    if (r)
        return r;
    for (size_t i = 0; i < LN; i++)
        if (atomic_load(&l->seen[i]) != 1)
            return -EPROTO;
    memset(l->out, 0, sizeof(l->out));
    r = weft_par_collect(pool, LN, l->out, sizeof(uint32_t), ln_item, NULL);
    if (r)
        return r;
    for (size_t i = 0; i < LN; i++)
        if (l->out[i] != (uint32_t)(i * 2654435761u))
            return -EPROTO;
    for (int ord = 0; ord < 2; ord++) {
        memset(l->seen, 0, sizeof(l->seen));
        l->next = 0;
        l->ordered = ord;
        r = weft_par_stream(pool, LN, l->out, sizeof(uint32_t), ln_item, NULL, ln_sink, l,
                            ord ? WEFT_ORDERED : 0);
        if (r)
            return r;
        for (size_t i = 0; i < LN; i++)
            if (atomic_load(&l->seen[i]) != 1)
                return -EPROTO;
    }
    return 0;
}

static int op_loops_outside(weft_pool *pool, void *ctx)
{
    (void)ctx;
    struct ln *l = calloc(1, sizeof(*l));
    l->pool = pool;
    int r = ln_all(l);
    free(l);
    cr_assert_neq(r, -EPROTO, "%s N=%ld: wrong loop results", cur_walk, cur_n);
    return r;
}

static int op_loops_inside(weft_pool *pool, void *ctx)
{
    (void)ctx;
    struct ln *l = calloc(1, sizeof(*l));
    l->pool = NULL;
    int r = weft_run(pool, ln_all, l);
    free(l);
    cr_assert_neq(r, -EPROTO, "%s N=%ld: wrong loop results", cur_walk, cur_n);
    return r;
}

/* weft_read_file from tasks (several at once, so that they suspend) and outside. */
static int rf_body(weft_scope *s, void *p)
{
    (void)p;
    for (int i = 0; i < 4; i++) {
        int r = weft_spawn(s, i == 3 ? wl_read_small : wl_read, NULL);
        if (r)
            return r;
    }
    return 0;
}

static int op_read_file(weft_pool *pool, void *ctx)
{
    (void)ctx;
    int r = weft_scope_run(pool, rf_body, NULL);
    if (r)
        return r;
    return wl_read(NULL); /* outside a task: the plain path */
}

static int op_read_one(weft_pool *pool, void *ctx)
{
    (void)ctx;
    return weft_run(pool, wl_read, NULL); /* alone: nothing else starts a thread */
}

static int op_sleep_one(weft_pool *pool, void *ctx)
{
    (void)ctx;
    return weft_run(pool, wl_sleep, NULL); /* the blocking backend's poller times it */
}

/* ---- tests --------------------------------------------------------------------- */

Test(fault, pool_create)
{
    weft_pool_options o = {.threads = 2};
    walk(&(struct op){"pool_create", 0, 0, op_pool, &o, true});
}

Test(fault, pool_create_blocking)
{
    weft_pool_options o = {.threads = 3, .flags = WEFT_POOL_NO_URING};
    walk(&(struct op){"pool_create_blocking", 0, 0, op_pool, &o, true});
}

Test(fault, scope_spawn)
{
    walk(&(struct op){"scope_spawn_outside", 2, 0, op_scope_outside, NULL, false});
    walk(&(struct op){"scope_spawn_inside", 2, 0, op_scope_inside, NULL, false});
    /* One worker runs every frame it spawns: they go back on its own list, and
     * the slabs and their batch records (task.slab, task.batch) run out. */
    walk(&(struct op){"scope_spawn_inside_1w", 1, 0, op_scope_inside, NULL, false});
}

Test(fault, join)
{
    walk(&(struct op){"join", 2, 0, op_join, NULL, false});
}

Test(fault, loops)
{
    walk(&(struct op){"loops_outside", 2, 0, op_loops_outside, NULL, false});
    walk(&(struct op){"loops_inside", 2, 0, op_loops_inside, NULL, false});
}

Test(fault, read_file)
{
    walk(&(struct op){"read_file", 2, 0, op_read_file, NULL, false});
    walk(&(struct op){"read_file_blocking", 2, WEFT_POOL_NO_URING, op_read_file, NULL, false});
    walk(&(struct op){"read_one_blocking", 2, WEFT_POOL_NO_URING, op_read_one, NULL, false});
    walk(&(struct op){"sleep_one_blocking", 2, WEFT_POOL_NO_URING, op_sleep_one, NULL, false});
}
