/* SPDX-License-Identifier: MIT */
/*
 * Checks for code running on worker (or helper) threads: assertions may only run on
 * the test's own thread, so other threads record the first failing line with
 * TCHECK and the test asserts it with ASSERT_NO_BAD (or reads bad_line itself).
 */
#ifndef WEFT_TEST_CHECKS_H
#define WEFT_TEST_CHECKS_H

#include <stdatomic.h>

#include "harness.h"
#include "weft.h"

static _Atomic(int) bad_line;

#define TCHECK(c)                                                                     \
    do {                                                                              \
        if (!(c)) {                                                                   \
            int zero_ = 0;                                                            \
            atomic_compare_exchange_strong(&bad_line, &zero_, __LINE__);              \
        }                                                                             \
    } while (0)

#define ASSERT_NO_BAD()                                                               \
    do {                                                                              \
        int l_ = atomic_exchange(&bad_line, 0);                                       \
        cr_assert_eq(l_, 0, "check at %s:%d failed on another thread", __FILE__, l_); \
    } while (0)

static inline weft_pool *mkpool(unsigned threads)
{
    weft_pool *p = NULL;
    weft_pool_options o = {.threads = threads};
    cr_assert_eq(weft_pool_create(&p, &o), 0);
    cr_assert_not_null(p);
    return p;
}

#endif
