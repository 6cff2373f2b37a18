/* SPDX-License-Identifier: MIT */
/* Internal assertions and the scheduling-noise hooks of the debug_sched build. */
#ifndef WEFT_DEBUG_H
#define WEFT_DEBUG_H

#include <stdio.h>
#include <stdlib.h>

/* A broken internal invariant is a bug: report it and abort (live unless NDEBUG). */
#ifdef NDEBUG
#define WEFT_ASSERT(c) ((void)0)
#else
#define WEFT_ASSERT(c)                                                               \
    ((c) ? (void)0                                                                   \
         : (fprintf(stderr, "weft: %s:%d: assertion failed: %s\n", __FILE__, __LINE__, \
                    #c),                                                             \
            abort()))
#endif

#define WEFT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define WEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* -Ddebug_sched=true: randomise victim order and yield at protocol points so tests
 * see many more interleavings. Compiles to nothing otherwise. */
#ifdef WEFT_DEBUG_SCHED
void weft__dbg_yield(void);
unsigned weft__dbg_rand(void);
#define WEFT_DBG_YIELD() weft__dbg_yield()
#else
#define WEFT_DBG_YIELD() ((void)0)
#endif

#endif
