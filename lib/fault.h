/* SPDX-License-Identifier: MIT */
/*
 * Fault injection for tests: built only with -Dfault_inject=true (off by default
 * and in release builds; then WEFT__FAULT(site) is the constant 0 and costs
 * nothing). Every place where the library obtains a resource that can run out --
 * memory (malloc, calloc, realloc, aligned_alloc, posix_memalign, the frame slabs),
 * a fiber stack (mmap), an io_uring ring or an eventfd, a thread (pthread_create) --
 * asks WEFT__FAULT("site") first and behaves as if the call failed when it says so.
 * A test arms the counter with N (weft__fault_arm): the Nth check from then on, on
 * any thread, fails, and only that one (tests/test_fault.c walks N = 1, 2, ...).
 * Sites are named "<file>.<what>" in the checks themselves.
 */
#ifndef WEFT_FAULT_H
#define WEFT_FAULT_H

#ifdef WEFT_FAULT_INJECT
#include <stdbool.h>

bool weft__fault(const char *site);
/* Fail the nth check from now (n >= 1); 0 disarms. */
void weft__fault_arm(long n);
/* Disarm; returns how many checks ran while armed (>= n: the fault fired). */
long weft__fault_disarm(void);
/* The site of the fault that fired last, or NULL. */
const char *weft__fault_site(void);

#define WEFT__FAULT(site) weft__fault(site)
#else
#define WEFT__FAULT(site) 0
#endif

#endif
