/* SPDX-License-Identifier: MIT */
/*
 * Fibers: stacks for suspended tasks and the switch between them (design: fiber.c).
 * Present only where WEFT_HAVE_FIBERS is defined (x86-64 and aarch64); elsewhere the
 * scheduler has to do without them.
 *
 * Three layers, lowest first:
 *  - weft__ctx_*: the raw context switch in assembly (lib/arch/switch_<cpu>.S). No
 *    sanitizer knows about it: use it only through weft__fiber_*.
 *  - weft__stack_*: a cache of mmap'd stacks with a guard page, one per pool.
 *  - weft__fiber_*: a context plus its stack bounds and sanitizer handles. Every
 *    switch goes through weft__fiber_switch() or weft__fiber_exit(), which tell
 *    ASan, TSan and Valgrind, so a caller cannot forget to.
 *
 * THE HAZARD (DESIGN.md, "Invariants": code after a suspension point never reuses a
 * thread-local address). A fiber suspended on thread A may be resumed on thread B:
 * weft__fiber_switch() then returns on B. The compiler assumes a function stays on
 * one thread, so it may compute the address of a thread-local variable once and
 * reuse it after a call (GCC bug 26461): it keeps the thread pointer (tpidr_el0 on
 * aarch64, %fs:0 on x86-64) or the result of __tls_get_addr in a register across
 * calls, and glibc declares __errno_location() const, so errno read after the
 * switch may be thread A's. (Seen with GCC 12 -O2 when tests/test_fiber.c's
 * migration test read its thread-locals directly: after every move, on x86-64 the
 * address of a thread-local and errno were thread A's; on aarch64 the value of a
 * thread-local was.) So, after any call that may switch:
 *  - read thread-locals (weft__self, errno, ...) only through a function that is
 *    not inlined into the one that switched (WEFT__TLS_READER below), and
 *  - never use a thread-local address or a worker pointer computed before it.
 * weft__fiber_switch() itself keeps no thread-local state across the switch.
 */
#ifndef WEFT_FIBER_H
#define WEFT_FIBER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

struct weft__stack;
struct weft__stack_cache;

/* Sanitizers that must be told about stack switches. GCC defines __SANITIZE_*__;
 * clang answers __has_feature (nested #if: GCC 12 has no __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(WEFT__ASAN)
#define WEFT__ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(WEFT__TSAN)
#define WEFT__TSAN 1
#endif
#endif

/* For functions that read a thread-local after a possible switch: never inlined
 * (and, with GCC, not analysed across calls either), so every call recomputes the
 * thread pointer. */
#if defined(__clang__)
#define WEFT__TLS_READER __attribute__((noinline))
#else
#define WEFT__TLS_READER __attribute__((noinline, noipa))
#endif

/* Default usable size of a fiber stack (weft_pool_options.stack_size == 0). */
#define WEFT__STACK_DEFAULT ((size_t)256 * 1024)
/* Smaller requests are raised to this. */
#define WEFT__STACK_MIN ((size_t)16 * 1024)

/* ------------------------------------------------------------------------------
 * Raw context switch (assembly). Not for direct use: see weft__fiber_*.
 * ---------------------------------------------------------------------------- */

/* A suspended context: its stack pointer; the callee-saved registers (and the
 * MXCSR / x87 control word, or FPCR) are saved on that stack. */
struct weft__ctx {
    void *sp;
};

/* Entry of a fresh context: arg as given to weft__ctx_make(), msg as given to the
 * first switch into it. Must never return (a return calls abort()). */
typedef void (*weft__ctx_entry)(void *arg, void *msg);

/* Save the current context into *from and resume *to. Returns, when something
 * switches back to *from, the msg of that switch. from != to. */
void *weft__ctx_switch(struct weft__ctx *from, const struct weft__ctx *to, void *msg);

/* Prepare *ctx so that the first switch to it runs entry(arg, msg) on the stack
 * [stack_lo, stack_lo + size), with the caller's floating-point control state. */
void weft__ctx_make(struct weft__ctx *ctx, void *stack_lo, size_t size,
                    weft__ctx_entry entry, void *arg);

/* ------------------------------------------------------------------------------
 * Fibers
 * ---------------------------------------------------------------------------- */

/* Fiber states; only for assertions. */
enum { WEFT__FIBER_FRESH, WEFT__FIBER_RUNNING, WEFT__FIBER_SUSPENDED, WEFT__FIBER_EXITED };

/* A fiber: a context, the bounds of the stack it runs on, and the sanitizers'
 * handles. Either a thread's own stack (weft__fiber_init_thread(), record anywhere)
 * or a stack from the cache (weft__fiber_create(), record in the stack's header).
 * Plain fields: a suspended fiber belongs to whoever holds it; a scheduler that
 * hands one to another thread publishes it with a release/acquire pair (after the
 * switch away from it has finished: the msg of the switch says when). */
struct weft__fiber {
    struct weft__ctx ctx;
    void *stack_lo;                 /* usable stack; NULL: not known (a thread's) */
    size_t stack_size;
    struct weft__stack *stack;      /* the cache stack, or NULL (a thread's own) */
    void (*fn)(void *arg, void *msg);
    void *arg;
    void *msg;                      /* of the switch that last left this fiber */
    unsigned char state;            /* WEFT__FIBER_* */
#ifdef WEFT__ASAN
    void *asan_fake;                /* ASan's fake stack while suspended */
#endif
#ifdef WEFT__TSAN
    void *tsan;                     /* TSan's context of this fiber */
#endif
};

/* Make *self the record of the calling thread's current stack, so that the thread
 * can switch away from it and be switched back to. No resources to release. */
void weft__fiber_init_thread(struct weft__fiber *self);

/* Take a stack from c and prepare a fiber on it; the first switch to the fiber
 * runs fn(arg, msg) there, msg being that switch's. fn must never return: it ends
 * with weft__fiber_exit(). The record lives in the stack's header: *out is valid
 * until weft__fiber_destroy(). Any thread.
 * Returns 0, or -ENOMEM (no stack could be mapped; *out is untouched). */
int weft__fiber_create(struct weft__stack_cache *c, struct weft__fiber **out,
                       void (*fn)(void *arg, void *msg), void *arg);

/* Release a fiber that has exited or never ran, and return its stack to its cache.
 * Never the running fiber. A suspended one may be destroyed at teardown: its
 * frames are dropped without being unwound. Any thread. */
void weft__fiber_destroy(struct weft__fiber *f);

/* Make an exited cache fiber fresh again, on the same stack, with the same fn and
 * arg: the next switch to it starts fn anew. Saves a trip through the cache. */
void weft__fiber_reset(struct weft__fiber *f);

/* Suspend from (the running fiber, on this thread) and resume to (fresh or
 * suspended, on any thread before). Returns when something switches back to from,
 * possibly on another thread (see THE HAZARD above), with that switch's msg.
 * The receiving side gets msg after the switch has finished: only then may it let
 * another thread resume from (the "suspend, then publish" order of DESIGN.md's
 * suspension protocol), or recycle from's stack after weft__fiber_exit(). */
void *weft__fiber_switch(struct weft__fiber *from, struct weft__fiber *to, void *msg);

/* As weft__fiber_switch(), for the last time: from is never resumed, and whoever
 * receives msg may weft__fiber_destroy() it (pass from itself as msg, say). */
noreturn void weft__fiber_exit(struct weft__fiber *from, struct weft__fiber *to,
                               void *msg);

/* ------------------------------------------------------------------------------
 * Stack cache
 * ---------------------------------------------------------------------------- */

/* A stack: [lo, lo + size) usable, a PROT_NONE guard page just below lo, and this
 * header (with a fiber record) at the top of the same mapping, above lo + size. */
struct weft__stack {
    struct weft__stack *next, *prev;    /* all stacks of the cache (under mu) */
    struct weft__stack *next_free;      /* free list (under mu) */
    struct weft__stack_cache *cache;
    void *lo;
    size_t size;
    unsigned vg_id;                     /* Valgrind's id for the stack, or 0 */
    bool in_use;                        /* under mu; for assertions */
    struct weft__fiber fiber;           /* record of the fiber running on it */
};

/* One per pool. Stacks are mapped on demand and kept for reuse: up to max_free for
 * good, more for a while (weft__stack_cache_trim); get and put take a mutex (they are
 * not on the path of tasks that never wait). */
struct weft__stack_cache {
    pthread_mutex_t mu;
    struct weft__stack *all;            /* every mapped stack, free or not (mu) */
    struct weft__stack *free;           /* LIFO: the warmest stack first (mu) */
    size_t nfree, total;                /* (mu) */
    _Atomic(uint64_t) over_since;       /* when nfree last went over max_free, 0: not
                                           over (written under mu; read relaxed as a
                                           hint by trim) */
    size_t max_free;                    /* read-only after init */
    size_t size;                        /* usable bytes per stack; read-only */
    size_t guard;                       /* guard bytes below each stack (a page) */
    size_t map_size;                    /* bytes per mapping, guard included */
};

/* stack_size: usable bytes per stack (at least that many and WEFT__STACK_MIN;
 * rounded up to pages together with the header), 0 for WEFT__STACK_DEFAULT.
 * max_free: stacks kept mapped for reuse for good (0: no limit); more are kept
 * until weft__stack_cache_trim finds them unused for WEFT__STACK_TRIM_NS. Returns 0,
 * or -ENOMEM if the size cannot be mapped at all (overflows). */
int weft__stack_cache_init(struct weft__stack_cache *c, size_t stack_size,
                           size_t max_free);

/* Free stacks past max_free that have been so for WEFT__STACK_TRIM_NS are
 * unmapped, the coldest first. Called by a worker about to sleep (park.c): a burst
 * of waiting tasks (hundreds of yielders, say) reuses its stacks in the next burst
 * instead of mapping them again, and an idle pool gives them back. Any thread. */
#define WEFT__STACK_TRIM_NS 1000000000u
void weft__stack_cache_trim(struct weft__stack_cache *c);

/* Unmap every stack of the cache, also those still out (their fibers are dropped:
 * only at teardown, e.g. of a pool inherited across fork()). Then c is dead. */
void weft__stack_cache_destroy(struct weft__stack_cache *c);

/* As weft__stack_cache_destroy, in a forked child for a cache inherited from the
 * parent: its mutex may be held by a thread that does not exist here, and the
 * sanitizers know nothing of its fibers. */
void weft__stack_cache_abandon(struct weft__stack_cache *c);

/* A stack: the most recently returned free one, else a new mapping. Any thread.
 * Returns 0 and sets *out, or -ENOMEM (mmap failed; nothing changed). */
int weft__stack_get(struct weft__stack_cache *c, struct weft__stack **out);

/* Give s back to c (the cache it came from). Nothing may run on it any more. */
void weft__stack_put(struct weft__stack_cache *c, struct weft__stack *s);

/* Stacks kept free in the cache, and stacks mapped (free or in use). */
size_t weft__stack_cache_nfree(struct weft__stack_cache *c);
size_t weft__stack_cache_total(struct weft__stack_cache *c);

#endif
