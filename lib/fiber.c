/* SPDX-License-Identifier: MIT */
/*
 * Fibers: the stacks of suspended tasks, and the switch between stacks.
 *
 * What this file owns. A task that must wait hands its stack over (DESIGN.md,
 * "suspension"): the worker saves the task's context and goes on with its loop on
 * another stack. This file provides the pieces and nothing of the policy: the
 * context switch (lib/arch/switch_<cpu>.S, wrapped here so that every switch is
 * announced to ASan, TSan and Valgrind), and a per-pool cache of stacks.
 *
 * The switch. A suspended context is only its stack pointer; the callee-saved
 * registers are pushed on its own stack, so a switch is a dozen stores and loads and
 * no syscall (the fcontext design of Boost.Context, by Oliver Kowalke). Every switch
 * carries a message: weft__fiber_switch(from, to, msg) returns, when something
 * switches back to from, the msg of that switch, and a fresh fiber gets the msg of
 * the first switch into it as its function's second argument (Boost.Context's
 * transfer_t). This is what makes the suspension protocol safe: a fiber cannot make
 * itself resumable while it still runs on its stack (another worker could resume it
 * at once, and two threads would run on one stack), so it says "I am suspending" in
 * the message, and the side it switched to publishes it after the switch has
 * finished; likewise "I have exited, recycle my stack". Go's runtime does the same
 * with mcall(fn), which leaves the goroutine's stack and then calls fn(g) on g0.
 * The assembly passes one pointer across (the record of the fiber that switched);
 * the message itself travels in that record, not on the stack being left: ASan
 * with detect_stack_use_after_return keeps addressable locals on a "fake stack",
 * which it frees the moment a fiber leaves for good.
 *
 * Stacks. mmap'd with a PROT_NONE guard page just below, so an overflow faults
 * instead of corrupting the neighbour; the header (links, bounds, and the record of
 * the fiber that runs on it) sits at the top of the same mapping, so making a fiber
 * allocates nothing else. A cache per pool keeps returned stacks for reuse, LIFO
 * (the stack returned last has warm pages and TLB entries): up to a limit for good,
 * and past it until they have gone unused for a second, when a worker about to sleep
 * trims them (weft__stack_cache_trim); all under one mutex. (Unmapping each stack
 * past the limit as it came back made a burst of 200 yielding tasks map and unmap
 * 176 stacks per round, and on 2 workers every munmap's TLB shootdown interrupted
 * the other core: Tokio's yield_many port ran slower on 2 workers than on 1.) The
 * cache also links every stack it mapped, so its destruction unmaps them all,
 * including those of fibers still suspended (a pool inherited across fork(), which
 * is only freed). Only the pages a fiber touched cost memory.
 *
 * Invariants.
 *  - A fiber runs on at most one thread at a time: it is switched to only when
 *    fresh or suspended, and published to other threads only by the side it
 *    switched to, after the switch (see above). State asserts check the first part.
 *  - A thread-local address or worker pointer computed before a switch is never
 *    used after it (fiber.h, "THE HAZARD"); nothing here keeps one.
 *  - The sanitizers always know which stack runs: ASan's start/finish pair brackets
 *    every switch (a fiber leaving for good passes NULL, so ASan frees its fake
 *    stack); TSan gets one fiber context per cache fiber, switched to just before
 *    the stack is (with synchronisation: what a fiber did before it was suspended
 *    happens before what it does after it is resumed, on any thread); Valgrind has
 *    each cache stack registered, so it takes the jump for a stack switch and not
 *    for a huge alloca.
 *  - A stack goes back to the cache clean: ASan's poisoning of the frames left on
 *    it (a fiber that exits never unwinds) is cleared, or the next fiber on it, or
 *    the next mapping at that address, would report errors that are not there.
 *
 * Signals run on the stack of whatever fiber is running. A handler for an overflow
 * into the guard page needs sigaltstack(), as with threads.
 *
 * Rejected.
 *  - ucontext (swapcontext): a sigprocmask syscall on every switch, ten times the
 *    cost of this one (measured here: 125 ns against 12 ns per switch);
 *    makecontext passes only int arguments.
 *  - setjmp/longjmp onto another stack: undefined behaviour, and glibc's fortified
 *    longjmp aborts ("longjmp causes uninitialized stack frame") when the target
 *    lies below the current stack pointer, as another stack often does.
 *  - Saving all floating-point and vector state (xsave, all of v0-v31): the ABIs
 *    make it caller-saved, so a call (and a switch is a call) may clobber it.
 *  - Growable stacks: split stacks need every caller compiled for them; copying
 *    stacks (Go) needs to find every pointer into the stack. A fixed stack with a
 *    guard page is what threads have, and the size is an option.
 *  - MAP_GROWSDOWN: the kernel's stack guard gap rules make it unreliable outside
 *    the main thread's stack.
 *  - Per-worker free lists with a remote-free stack, as task.c has for frames: a
 *    stack is taken only when a task waits, which costs a submission and a switch
 *    anyway; an uncontended mutex is noise there.
 *  - madvise(MADV_FREE) on every put, to give touched pages back: a syscall and
 *    fresh page faults on reuse; the limit on free stacks bounds memory instead.
 */
#define _GNU_SOURCE
#include "fiber.h"
#include "debug.h"
#include "fault.h"
#include "list.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifdef WEFT__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif
#ifdef WEFT_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

/* The stack header at the top of each mapping, rounded to keep the stack top (just
 * below it) aligned to a cache line. */
#define HDR_SIZE ((sizeof(struct weft__stack) + 63) & ~(size_t)63)

/* ------------------------------------------------------------------------------
 * Stack cache
 * ---------------------------------------------------------------------------- */

/* Every stack of a cache (list.h), under its mu. */
WEFT__DLIST_DEFINE(stack_list, struct weft__stack, prev, next)

int weft__stack_cache_init(struct weft__stack_cache *c, size_t stack_size,
                           size_t max_free)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t page = ps > 0 ? (size_t)ps : 4096;

    if (stack_size == 0)
        stack_size = WEFT__STACK_DEFAULT;
    if (stack_size < WEFT__STACK_MIN)
        stack_size = WEFT__STACK_MIN;
    if (stack_size > SIZE_MAX - HDR_SIZE - 2 * page)
        return -ENOMEM;
    size_t body = (stack_size + HDR_SIZE + page - 1) & ~(page - 1);

    memset(c, 0, sizeof(*c));
    c->max_free = max_free;
    c->guard = page;
    c->size = body - HDR_SIZE;
    c->map_size = body + page;
    pthread_mutex_init(&c->mu, NULL);
    return 0;
}

/* s's poisoning by ASan cleared: the frames left on it are gone. */
static void stack_clean(struct weft__stack *s)
{
#ifdef WEFT__ASAN
    ASAN_UNPOISON_MEMORY_REGION(s->lo, s->size);
#else
    (void)s;
#endif
}

static void stack_unmap(struct weft__stack_cache *c, struct weft__stack *s)
{
#ifdef WEFT_HAVE_VALGRIND
    if (s->vg_id)
        VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
    stack_clean(s);
    void *map = (char *)s->lo - c->guard;
    munmap(map, c->map_size);   /* can fail only for bad arguments */
}

int weft__stack_get(struct weft__stack_cache *c, struct weft__stack **out)
{
    pthread_mutex_lock(&c->mu);
    struct weft__stack *s = c->free;
    if (s) {
        c->free = s->next_free;
        c->nfree--;
        s->in_use = true;
        pthread_mutex_unlock(&c->mu);
        memset(&s->fiber, 0, sizeof(s->fiber));
        *out = s;
        return 0;
    }
    pthread_mutex_unlock(&c->mu);

    /* A new mapping, outside the lock: two syscalls. MAP_STACK: no transparent
     * huge pages for it (Linux 6.7 and later), which a 256 KiB stack would waste. */
    char *map = WEFT__FAULT("fiber.mmap") ? MAP_FAILED
              : mmap(NULL, c->map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return -ENOMEM;
    if (mprotect(map, c->guard, PROT_NONE) != 0) {
        munmap(map, c->map_size);
        return -ENOMEM;
    }
    s = (struct weft__stack *)(void *)(map + c->map_size - HDR_SIZE);
    memset(s, 0, sizeof(*s));
    s->cache = c;
    s->lo = map + c->guard;
    s->size = c->size;
    s->in_use = true;
#ifdef WEFT_HAVE_VALGRIND
    s->vg_id = VALGRIND_STACK_REGISTER(s->lo, (char *)s->lo + s->size);
#endif

    pthread_mutex_lock(&c->mu);
    stack_list_insert(&c->all, NULL, s);
    c->total++;
    pthread_mutex_unlock(&c->mu);
    *out = s;
    return 0;
}

static uint64_t stack_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void weft__stack_put(struct weft__stack_cache *c, struct weft__stack *s)
{
    WEFT_ASSERT(s->cache == c);
    stack_clean(s);
    pthread_mutex_lock(&c->mu);
    WEFT_ASSERT(s->in_use);
    s->in_use = false;
    s->next_free = c->free;
    c->free = s;
    c->nfree++;
    /* Over the limit: kept for now, and timed for weft__stack_cache_trim. Relaxed:
     * the mutex orders it; trim's unlocked read is a hint. */
    if (c->max_free != 0 && c->nfree > c->max_free &&
        atomic_load_explicit(&c->over_since, memory_order_relaxed) == 0)
        atomic_store_explicit(&c->over_since, stack_now_ns(), memory_order_relaxed);
    pthread_mutex_unlock(&c->mu);
}

void weft__stack_cache_trim(struct weft__stack_cache *c)
{
    /* Relaxed: a hint; rechecked under the mutex. */
    uint64_t since = atomic_load_explicit(&c->over_since, memory_order_relaxed);
    if (since == 0 || stack_now_ns() - since < WEFT__STACK_TRIM_NS)
        return;
    struct weft__stack *drop = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->nfree > c->max_free) {
        /* Keep the max_free warmest (the LIFO's head); unlink the rest. */
        struct weft__stack **p = &c->free;
        for (size_t k = 0; k < c->max_free; k++)
            p = &(*p)->next_free;
        drop = *p;
        *p = NULL;
        for (struct weft__stack *s = drop; s; s = s->next_free) {
            stack_list_remove(&c->all, NULL, s);
            c->total--;
            c->nfree--;
        }
    }
    atomic_store_explicit(&c->over_since, 0, memory_order_relaxed);
    pthread_mutex_unlock(&c->mu);
    while (drop) {
        struct weft__stack *next = drop->next_free;
        stack_unmap(c, drop);
        drop = next;
    }
}

static void cache_destroy(struct weft__stack_cache *c, bool forked)
{
    struct weft__stack *s = c->all;
    while (s) {
        struct weft__stack *next = s->next;
#ifdef WEFT__TSAN
        /* A fiber still suspended here (teardown only): drop its TSan context;
         * not in a forked child, where TSan has no such contexts. */
        if (!forked && s->in_use && s->fiber.tsan)
            __tsan_destroy_fiber(s->fiber.tsan);
#endif
        stack_unmap(c, s);
        s = next;
    }
    c->all = c->free = NULL;
    c->nfree = c->total = 0;
    if (!forked)
        pthread_mutex_destroy(&c->mu);
}

void weft__stack_cache_destroy(struct weft__stack_cache *c)
{
    cache_destroy(c, false);
}

void weft__stack_cache_abandon(struct weft__stack_cache *c)
{
    cache_destroy(c, true);
}

size_t weft__stack_cache_nfree(struct weft__stack_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->nfree;
    pthread_mutex_unlock(&c->mu);
    return n;
}

size_t weft__stack_cache_total(struct weft__stack_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->total;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ------------------------------------------------------------------------------
 * Fibers
 * ---------------------------------------------------------------------------- */

/* Just before the stack changes: tell the sanitizers which stack comes next.
 * Always inlined: __tsan_switch_to_fiber makes the next fiber's TSan context
 * current, so a function that called it and then returned would pop that
 * context's shadow call stack, not its own (clang 14 left this one out of line in
 * weft__fiber_exit, and TSan then crashed on the underflow; so did Tencent/flare,
 * PR #197). */
#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE void switch_begin(struct weft__fiber *from, struct weft__fiber *to,
                                       bool exiting)
{
#ifdef WEFT__ASAN
    /* NULL when from leaves for good: ASan then frees its fake stack. */
    __sanitizer_start_switch_fiber(exiting ? NULL : &from->asan_fake, to->stack_lo,
                                   to->stack_size);
#else
    (void)from;
    (void)exiting;
#endif
#ifdef WEFT__TSAN
    /* Last thing before the switch, as TSan requires; flags 0: synchronise. */
    __tsan_switch_to_fiber(to->tsan, 0);
#else
    (void)to;
#endif
}

/* First thing on the resumed side. self: the fiber now running; fake: its fake
 * stack as saved when it switched away (NULL when fresh); prev: the fiber that
 * switched to it. Returns prev's message. */
static ALWAYS_INLINE void *switch_end(struct weft__fiber *self, void *fake,
                                      struct weft__fiber *prev)
{
#ifdef WEFT__ASAN
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(fake, &lo, &size);
    /* A thread's own stack: ASan knows its bounds; learn them for the way back. */
    if (!prev->stack_lo) {
        prev->stack_lo = (void *)(uintptr_t)lo;
        prev->stack_size = size;
    }
#else
    (void)fake;
#endif
    WEFT_ASSERT(self->state == WEFT__FIBER_RUNNING);
    return prev->msg;
}

/* Entry of every cache fiber (called by weft__ctx_start): arg is its record, prev
 * the fiber that switched to it first. */
static void fiber_start(void *arg, void *prev)
{
    struct weft__fiber *self = arg;
    void *m = switch_end(self, NULL, prev);
    self->fn(self->arg, m);
    fprintf(stderr, "weft: a fiber function returned (it must end with weft__fiber_exit)\n");
    abort();
}

void weft__fiber_init_thread(struct weft__fiber *self)
{
    memset(self, 0, sizeof(*self));
    self->state = WEFT__FIBER_RUNNING;
#ifdef WEFT__TSAN
    self->tsan = __tsan_get_current_fiber();   /* the thread's own: never destroyed */
#endif
}

int weft__fiber_create(struct weft__stack_cache *c, struct weft__fiber **out,
                       void (*fn)(void *arg, void *msg), void *arg)
{
    struct weft__stack *s;
    int err = weft__stack_get(c, &s);
    if (err)
        return err;
    struct weft__fiber *f = &s->fiber;
    memset(f, 0, sizeof(*f));
    f->stack = s;
    f->stack_lo = s->lo;
    f->stack_size = s->size;
    f->fn = fn;
    f->arg = arg;
    f->state = WEFT__FIBER_FRESH;
    weft__ctx_make(&f->ctx, s->lo, s->size, fiber_start, f);
#ifdef WEFT__TSAN
    f->tsan = __tsan_create_fiber(0);
#endif
    *out = f;
    return 0;
}

void weft__fiber_reset(struct weft__fiber *f)
{
    WEFT_ASSERT(f->stack && f->state == WEFT__FIBER_EXITED);
    stack_clean(f->stack);
#ifdef WEFT__TSAN
    /* A fresh TSan context: the old one's shadow stack holds frames never unwound. */
    if (f->tsan)
        __tsan_destroy_fiber(f->tsan);
    f->tsan = __tsan_create_fiber(0);
#endif
    f->state = WEFT__FIBER_FRESH;
    f->msg = NULL;
    weft__ctx_make(&f->ctx, f->stack_lo, f->stack_size, fiber_start, f);
}

void weft__fiber_destroy(struct weft__fiber *f)
{
    if (!f->stack)
        return;                     /* a thread's own stack: nothing owned */
    WEFT_ASSERT(f->state != WEFT__FIBER_RUNNING);
#ifdef WEFT__TSAN
    if (f->tsan)
        __tsan_destroy_fiber(f->tsan);
    f->tsan = NULL;
#endif
    weft__stack_put(f->stack->cache, f->stack);
}

void *weft__fiber_switch(struct weft__fiber *from, struct weft__fiber *to, void *msg)
{
    WEFT_ASSERT(from != to);
    WEFT_ASSERT(from->state == WEFT__FIBER_RUNNING);
    WEFT_ASSERT(to->state == WEFT__FIBER_FRESH || to->state == WEFT__FIBER_SUSPENDED);
    from->msg = msg;
    from->state = WEFT__FIBER_SUSPENDED;
    to->state = WEFT__FIBER_RUNNING;
    switch_begin(from, to, false);
    struct weft__fiber *prev = weft__ctx_switch(&from->ctx, &to->ctx, from);
    /* Resumed, perhaps on another thread: from is this fiber's record, which is
     * not thread-local; nothing thread-local was kept. */
#ifdef WEFT__ASAN
    return switch_end(from, from->asan_fake, prev);
#else
    return switch_end(from, NULL, prev);
#endif
}

noreturn void weft__fiber_exit(struct weft__fiber *from, struct weft__fiber *to, void *msg)
{
    WEFT_ASSERT(from != to);
    WEFT_ASSERT(from->state == WEFT__FIBER_RUNNING);
    WEFT_ASSERT(to->state == WEFT__FIBER_FRESH || to->state == WEFT__FIBER_SUSPENDED);
    from->msg = msg;
    from->state = WEFT__FIBER_EXITED;
    to->state = WEFT__FIBER_RUNNING;
    switch_begin(from, to, true);
    weft__ctx_switch(&from->ctx, &to->ctx, from);
    fprintf(stderr, "weft: an exited fiber was resumed\n");
    abort();
}
