/* SPDX-License-Identifier: MIT */
/* Internal assertions and branch hints. */
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


#endif
