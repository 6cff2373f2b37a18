/* SPDX-License-Identifier: MIT */
/*
 * The library's spinlock: test-and-test-and-set on a 32-bit word, for critical
 * sections of a few loads and stores that are almost never contended (a worker's
 * ready queues, runq.c; a scope's lists, scope.c). A pthread mutex there costs a
 * function call and ~40 instructions per lock/unlock pair more (callgrind; runq.c's
 * and scope.c's essays have the figures). A waiter spins with pause 64 times, then
 * yields the CPU: the one long holder is a scope cancel walking its lists.
 *
 * waitq.h has a second shape on purpose: a lock *bit* in a word whose other bits an
 * event's state uses, taken with fetch_or (events set the word without the lock).
 */
#ifndef WEFT_SPIN_H
#define WEFT_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

/* The pause in a spin-wait loop. */
static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A full barrier (StoreLoad included), as atomic_thread_fence(memory_order_seq_cst),
 * for the library's Dekker-style pairs (deque.c's pop and steal, park.c, runq.c). On
 * x86-64 the C11 fence compiles to mfence, which costs ~16.5 ns on the EPYC VMs we
 * measure on against ~3.3 ns for a locked RMW of a stack word (a store, the barrier,
 * a load, in a loop). A locked instruction orders every earlier load and store
 * before every later one (Intel SDM vol. 3, 8.2.2: loads and stores are not
 * reordered with locked instructions), which is all these fences are for: the
 * library issues no non-temporal stores. Linux's smp_mb() on x86-64 made the same
 * choice. OR-ing 0 into the word at the stack pointer leaves it as it was. Under
 * TSan the C11 fence, which its model understands; elsewhere too. */
#if defined(__SANITIZE_THREAD__)
#define WEFT__FENCE_C11 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__FENCE_C11 1
#endif
#endif
static inline void weft__fence(void)
{
#if defined(__x86_64__) && !defined(WEFT__FENCE_C11)
    __asm__ __volatile__("lock orq $0, (%%rsp)" ::: "memory", "cc");
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline void weft__spin_acquire(_Atomic(uint32_t) *l)
{
    /* Acquire: pairs with the release store in weft__spin_release(). */
    while (atomic_exchange_explicit(l, 1, memory_order_acquire) != 0) {
        for (unsigned k = 0; atomic_load_explicit(l, memory_order_relaxed); k++) {
            if (k < 64)
                weft__cpu_relax();
            else
                sched_yield();
        }
    }
}

static inline void weft__spin_release(_Atomic(uint32_t) *l)
{
    /* Release: pairs with the acquire exchange in weft__spin_acquire(). */
    atomic_store_explicit(l, 0, memory_order_release);
}

#endif
