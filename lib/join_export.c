/* SPDX-License-Identifier: MIT */
/* The exported, out-of-line weft_join: for C++ and pre-C11 callers, and for anyone
 * taking its address. C11 callers get the inline version from weft.h; this is the
 * same code compiled once, under another name, then exported as weft_join. */
#define weft_join weft__join_inline
#include "weft.h"
#undef weft_join

WEFT_API int weft_join(weft_fn a, void *arg_a, weft_fn b, void *arg_b);

WEFT_API int weft_join(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    return weft__join_inline(a, arg_a, b, arg_b);
}
