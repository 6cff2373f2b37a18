/* SPDX-License-Identifier: MIT */
/* Parking: idle workers sleep without lost wake-ups (park.c). Included by pool.h. */
#ifndef WEFT_PARK_H
#define WEFT_PARK_H

#include <stdatomic.h>
#include <stdint.h>

#include "weft.h"

struct weft__worker;
struct weft__latch;

/* The parking word (weft_pool.sleep_state): low 16 bits searching workers, high 16
 * bits sleepers. */
#define WEFT__SEARCH_ONE 1u
#define WEFT__SLEEP_ONE  (1u << 16)
/* Parking word: a sleeper exists and nobody is searching. */
#define WEFT__NEED_WAKE(s) ((s) >= WEFT__SLEEP_ONE && ((s) & 0xffffu) == 0)

/* Sleep until woken. The caller is searching and found nothing; returns searching.
 * until: a latch whose setting ends the wait. Owner only. */
void weft__park(struct weft__worker *w, const struct weft__latch *until);
/* Wake one sleeper of the pool, if any (it wakes searching). Any thread. */
void weft__park_wake_one(weft_pool *pool);
/* Wake w if it sleeps (a latch it waits on was set, shutdown, I/O). Any thread. */
void weft__park_wake(struct weft__worker *w);
/* The caller starts / stops looking for work beyond its own deque. Owner only. */
void weft__park_search_begin(struct weft__worker *w);
void weft__park_search_end(struct weft__worker *w);
/* A push or injection happened (and was ordered before this): wake a sleeper if
 * nobody is searching. Any thread. */
void weft__park_notify(weft_pool *pool);
/* The futex system call on a 32-bit word (private futexes). */
void weft__futex_wait(_Atomic(uint32_t) *word, uint32_t val);
void weft__futex_wake(_Atomic(uint32_t) *word, int n);

#endif
