/* SPDX-License-Identifier: MIT */
/*
 * Fault injection (-Dfault_inject=true only; see fault.h). One process-wide
 * countdown: every check while armed takes one from it, and the check that takes
 * the last one fails. Relaxed atomics throughout: which thread's check is the nth
 * is the schedule's business, and the test only needs each check counted once.
 */
#include "fault.h"

#include <stdatomic.h>
#include <stddef.h>

static _Atomic(bool) armed;
static _Atomic(long) countdown;
static _Atomic(long) checks;
static _Atomic(const char *) fired_site;

bool weft__fault(const char *site)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return false;
    atomic_fetch_add_explicit(&checks, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&countdown, 1, memory_order_relaxed) != 1)
        return false;
    atomic_store_explicit(&fired_site, site, memory_order_relaxed);
    return true;
}

void weft__fault_arm(long n)
{
    atomic_store_explicit(&countdown, n, memory_order_relaxed);
    atomic_store_explicit(&checks, 0, memory_order_relaxed);
    atomic_store_explicit(&fired_site, NULL, memory_order_relaxed);
    atomic_store_explicit(&armed, n > 0, memory_order_relaxed);
}

long weft__fault_disarm(void)
{
    atomic_store_explicit(&armed, false, memory_order_relaxed);
    return atomic_load_explicit(&checks, memory_order_relaxed);
}

const char *weft__fault_site(void)
{
    return atomic_load_explicit(&fired_site, memory_order_relaxed);
}
