/* SPDX-License-Identifier: MIT */
/*
 * An exhaustive interleaving check of the latch protocol (lib/latch.c), in the spirit
 * of loom or a TLA+ model: every atomic step of each party is one transition, and a
 * depth-first search runs every interleaving (with a visited set over the packed
 * state, so each reachable state is expanded once).
 *
 * Parties:
 *  - a setter (weft__latch_set);
 *  - a waiter that registers on worker A, may move (the job it helped with suspended
 *    and resumed elsewhere) to C and then D, re-registering each time (at most
 *    twice), and at any point may park in place (park.c: announce, last look, sleep
 *    until woken, look again) or suspend (latch_suspended: the after action of its
 *    switch registers the wait record, or readies it if the latch is set);
 *  - a spurious waker that unparks any worker (a push's notify, another latch's
 *    setter) up to twice.
 * park/unpark are modelled as park.c has them: announcing and waking are atomic under
 * idle_mu; a wake takes the worker off the idle stack and leaves a token it consumes.
 *
 * Checked in every state: the suspended task is made ready at most once (no double
 * wake), the waiter never returns before the latch is set, and the setter never reads
 * a plain field while the waiter may be writing it (a data race). Checked in every
 * final state (nothing can move): the waiter has returned (no lost wake-up).
 *
 * Both protocols are modelled: the current one (one word, exchange to set, CAS to
 * register) must pass; the one before issue 9 (state word + plain waiter field,
 * re-registration 2 -> 0 -> 2) must fail, which shows the check can fail.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { A, C, D, NWORK, TASKREC = 3, NOBODY = 4 };

/* The latch word, new protocol: tag + who. Old protocol: state 0..3 + waiter field. */
enum { PENDING = 0, SET = 1, WORKER = 2, TASK = 3 };

enum wpc {
    W_START, W_START2, W_LOOP, W_MOVE, W_MOVE2, W_MOVE3, W_PARK, W_LOOK, W_SLEEP,
    W_SUSP, W_SUSP2, W_SUSP3, W_SUSPENDED, W_RESUMED, W_DONE,
};
enum spc { S_START, S_ACT, S_OLD_CAS0, S_OLD_READ, S_OLD_CAS2, S_OLD_TASK, S_DONE };

struct st {
    uint8_t tag, who;          /* the word (new) / state + waiter field (old) */
    uint8_t parked[NWORK], token[NWORK];
    uint8_t ready;             /* times the suspended task was made ready */
    uint8_t w_pc, w_at, w_moves, w_writing; /* waiter; writing: mid plain write (old) */
    uint8_t s_pc, s_tag, s_who;             /* setter and what it loaded/swapped */
    uint8_t z_left;                          /* spurious wakes left */
};

struct result {
    unsigned long states, finals;
    unsigned long edges;
    int lost, double_wake, early_return, race;
    char first[2048];          /* the first violation's trace */
    char first_lost[2048];     /* the first lost wake-up's trace */
};

struct model {
    bool old;
    struct result *r;
    /* visited set: open addressing over packed states */
    uint64_t *seen;
    size_t cap, used;
    const char *trace[256];
    int depth;
};

static uint64_t pack(const struct st *s)
{
    uint64_t k = 0;
    const uint8_t *b = (const uint8_t *)s;
    for (size_t i = 0; i < sizeof(*s); i++)
        k = k * 16 + (b[i] & 15);
    return k + 1;
}

static bool visit(struct model *m, const struct st *s)
{
    uint64_t k = pack(s);
    if (m->used * 2 >= m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1u << 16;
        uint64_t *n = calloc(ncap, sizeof(*n));
        cr_assert_not_null(n);
        for (size_t i = 0; i < m->cap; i++)
            if (m->seen[i]) {
                size_t h = (size_t)(m->seen[i] * 0x9e3779b97f4a7c15ull) & (ncap - 1);
                while (n[h])
                    h = (h + 1) & (ncap - 1);
                n[h] = m->seen[i];
            }
        free(m->seen);
        m->seen = n;
        m->cap = ncap;
    }
    size_t h = (size_t)(k * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
    while (m->seen[h]) {
        if (m->seen[h] == k)
            return false;
        h = (h + 1) & (m->cap - 1);
    }
    m->seen[h] = k;
    m->used++;
    return true;
}

static void record(struct model *m, char *buf, size_t size, const char *what)
{
    size_t n = (size_t)snprintf(buf, size, "%s after:", what);
    for (int i = 0; i < m->depth && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, " %s;", m->trace[i]);
}

static void violation(struct model *m, int *counter, const char *what)
{
    if (counter == &m->r->lost && !m->r->first_lost[0])
        record(m, m->r->first_lost, sizeof(m->r->first_lost), what);
    if ((*counter)++ || m->r->first[0])
        return;
    record(m, m->r->first, sizeof(m->r->first), what);
}

static void unpark(struct st *s, int x)
{
    if (x < NWORK && s->parked[x]) {
        s->parked[x] = 0;
        s->token[x] = 1;
    }
}

static bool latch_set(const struct model *m, const struct st *s)
{
    return s->tag == SET;
}

static void dfs(struct model *m, const struct st *s);

/* Apply one step: label for the trace, then explore. */
static void go(struct model *m, const struct st *n, const char *label)
{
    m->r->edges++;
    m->trace[m->depth++] = label;
    dfs(m, n);
    m->depth--;
}

/* The waiter's steps. Each enabled choice is explored. */
static bool waiter_steps(struct model *m, const struct st *s)
{
    struct st n;
    bool moved = false;
#define NEXT(pc_, label_, ...)                                                        \
    do {                                                                              \
        n = *s;                                                                       \
        __VA_ARGS__;                                                                  \
        n.w_pc = (pc_);                                                               \
        go(m, &n, label_);                                                            \
        moved = true;                                                                 \
    } while (0)
    int to = s->w_at == A ? C : D;
    switch (s->w_pc) {
    case W_START: /* new: CAS PENDING -> WORKER(A); old: waiter = A (plain) */
        if (!m->old) {
            if (s->tag == PENDING)
                NEXT(W_LOOP, "waiter: CAS 0 -> A|2", n.tag = WORKER, n.who = A, n.w_at = A);
            else
                NEXT(W_DONE, "waiter: CAS fails (set)", (void)0);
        } else {
            NEXT(W_START2, "waiter: waiter = A", n.who = A, n.w_at = A, n.w_writing = 1);
        }
        break;
    case W_START2: /* old: CAS 0 -> 2 */
        if (s->tag == PENDING)
            NEXT(W_LOOP, "waiter: CAS 0 -> 2", n.tag = WORKER, n.w_writing = 0);
        else
            NEXT(W_DONE, "waiter: CAS 0 -> 2 fails", n.w_writing = 0);
        break;
    case W_LOOP: /* the helping loop: look, then move, park or suspend */
        if (latch_set(m, s)) {
            NEXT(W_DONE, "waiter: sees set", (void)0);
            break;
        }
        if (s->w_moves < 2)
            NEXT(W_MOVE, "waiter: helped job resumed elsewhere", (void)0);
        NEXT(W_PARK, "waiter: nothing to run, parks", (void)0);
        NEXT(W_SUSP, "waiter: suspends", (void)0);
        break;
    case W_MOVE:
        if (!m->old) { /* CAS WORKER(at) -> WORKER(to) */
            if (s->tag == WORKER && s->who == s->w_at)
                NEXT(W_LOOP, "waiter: CAS at|2 -> to|2", n.who = (uint8_t)to, n.w_at = (uint8_t)to,
                     n.w_moves++);
            else
                NEXT(W_DONE, "waiter: re-register fails (set)", (void)0);
        } else { /* CAS 2 -> 0 */
            if (s->tag == WORKER)
                NEXT(W_MOVE2, "waiter: CAS 2 -> 0", n.tag = PENDING, n.w_writing = 1);
            else
                NEXT(W_DONE, "waiter: CAS 2 -> 0 fails", (void)0);
        }
        break;
    case W_MOVE2: /* old: waiter = to */
        NEXT(W_MOVE3, "waiter: waiter = to", n.who = (uint8_t)to, n.w_at = (uint8_t)to, n.w_moves++);
        break;
    case W_MOVE3: /* old: CAS 0 -> 2 */
        if (s->tag == PENDING)
            NEXT(W_LOOP, "waiter: CAS 0 -> 2", n.tag = WORKER, n.w_writing = 0);
        else
            NEXT(W_DONE, "waiter: CAS 0 -> 2 fails", n.w_writing = 0);
        break;
    case W_PARK: /* announce under idle_mu: on the idle stack, wake word cleared */
        NEXT(W_LOOK, "waiter: announces parked", n.parked[s->w_at] = 1, n.token[s->w_at] = 0);
        break;
    case W_LOOK: /* last look at the latch after the heavy barrier */
        if (latch_set(m, s))
            NEXT(W_LOOP, "waiter: last look sees set, leaves idle", n.parked[s->w_at] = 0);
        else
            NEXT(W_SLEEP, "waiter: last look: pending, sleeps", (void)0);
        break;
    case W_SLEEP: /* blocked until its worker is woken */
        if (s->token[s->w_at])
            NEXT(W_LOOP, "waiter: woken", n.token[s->w_at] = 0);
        break;
    case W_SUSP: /* after action: new: load then CAS to TASK; old: CAS 2 -> 0 */
        if (!m->old) {
            if (s->tag == SET)
                NEXT(W_SUSPENDED, "waiter: after action sees set, readies itself", n.ready++);
            else
                NEXT(W_SUSP2, "waiter: after action loads word", (void)0);
        } else {
            if (s->tag == WORKER)
                NEXT(W_SUSP2, "waiter: after_latch CAS 2 -> 0", n.tag = PENDING, n.w_writing = 1);
            else
                NEXT(W_SUSPENDED, "waiter: after_latch CAS fails, readies itself", n.ready++);
        }
        break;
    case W_SUSP2:
        if (!m->old) { /* CAS WORKER(at) -> TASK */
            if (s->tag == WORKER && s->who == s->w_at)
                NEXT(W_SUSPENDED, "waiter: CAS at|2 -> wt|3", n.tag = TASK, n.who = TASKREC);
            else
                NEXT(W_SUSPENDED, "waiter: CAS fails, readies itself", n.ready++);
        } else { /* waiter = wt */
            NEXT(W_SUSP3, "waiter: waiter = wt", n.who = TASKREC);
        }
        break;
    case W_SUSP3: /* old: CAS 0 -> 3 */
        if (s->tag == PENDING)
            NEXT(W_SUSPENDED, "waiter: CAS 0 -> 3", n.tag = TASK, n.w_writing = 0);
        else
            NEXT(W_SUSPENDED, "waiter: CAS 0 -> 3 fails, readies itself", n.ready++,
                 n.w_writing = 0);
        break;
    case W_SUSPENDED: /* runs again once made ready */
        if (s->ready)
            NEXT(W_RESUMED, "waiter: resumed", (void)0);
        break;
    case W_RESUMED:
        NEXT(W_DONE, "waiter: returns", (void)0);
        break;
    default:
        break;
    }
    return moved;
}

static bool setter_steps(struct model *m, const struct st *s)
{
    struct st n;
    bool moved = false;
#define SNEXT(pc_, label_, ...)                                                       \
    do {                                                                              \
        n = *s;                                                                       \
        __VA_ARGS__;                                                                  \
        n.s_pc = (pc_);                                                               \
        go(m, &n, label_);                                                            \
        moved = true;                                                                 \
    } while (0)
    switch (s->s_pc) {
    case S_START:
        if (!m->old) /* exchange(word, SET): keep what was swapped out */
            SNEXT(S_ACT, "setter: exchange -> 1", n.s_tag = s->tag, n.s_who = s->who,
                  n.tag = SET, n.who = NOBODY);
        else /* s = load(state) */
            SNEXT(S_ACT, "setter: load state", n.s_tag = s->tag);
        break;
    case S_ACT:
        if (!m->old) {
            if (s->s_tag == WORKER)
                SNEXT(S_DONE, "setter: unpark the worker it swapped out", unpark(&n, s->s_who));
            else if (s->s_tag == TASK)
                SNEXT(S_DONE, "setter: ready the task", n.ready++);
            else
                SNEXT(S_DONE, "setter: nobody to wake", (void)0);
        } else if (s->s_tag == PENDING) {
            SNEXT(S_OLD_CAS0, "setter: saw 0", (void)0);
        } else if (s->s_tag == TASK) {
            SNEXT(S_OLD_TASK, "setter: saw 3, reads waiter", n.s_who = s->who);
        } else {
            SNEXT(S_OLD_CAS2, "setter: saw 2, reads waiter", n.s_who = s->who);
        }
        break;
    case S_OLD_CAS0: /* CAS 0 -> 1; failure reloads */
        if (s->tag == PENDING)
            SNEXT(S_DONE, "setter: CAS 0 -> 1", n.tag = SET);
        else
            SNEXT(S_ACT, "setter: CAS 0 -> 1 fails, reloads", n.s_tag = s->tag);
        break;
    case S_OLD_CAS2: /* CAS 2 -> 1, then unpark the waiter it read */
        if (s->tag == WORKER)
            SNEXT(S_DONE, "setter: CAS 2 -> 1, unparks the waiter it read", n.tag = SET,
                  unpark(&n, s->s_who));
        else
            SNEXT(S_ACT, "setter: CAS 2 -> 1 fails, reloads", n.s_tag = s->tag);
        break;
    case S_OLD_TASK: /* store 1, ready the task */
        SNEXT(S_DONE, "setter: store 1, ready", n.tag = SET, n.ready++);
        break;
    default:
        break;
    }
    return moved;
}

static bool spurious_steps(struct model *m, const struct st *s)
{
    static const char *label[NWORK] = {"spurious: unpark A", "spurious: unpark C",
                                       "spurious: unpark D"};
    if (!s->z_left)
        return false;
    for (int x = 0; x < NWORK; x++) {
        struct st n = *s;
        n.z_left--;
        unpark(&n, x);
        go(m, &n, label[x]);
    }
    return true;
}

static void dfs(struct model *m, const struct st *s)
{
    if (!visit(m, s))
        return;
    struct result *r = m->r;
    r->states++;
    if (s->ready > 1)
        violation(m, &r->double_wake, "double wake (task made ready twice)");
    if (s->w_pc == W_DONE && s->tag != SET)
        violation(m, &r->early_return, "waiter returned before the latch was set");
    /* The old setter reads the plain waiter field in S_ACT -> S_OLD_*: a read while the
     * waiter is between its two CASes (writing the field) is a data race. */
    if (m->old && (s->s_pc == S_OLD_CAS2 || s->s_pc == S_OLD_TASK) && s->w_writing)
        violation(m, &r->race, "setter read the waiter field while the waiter wrote it");
    bool any = waiter_steps(m, s);
    any |= setter_steps(m, s);
    any |= spurious_steps(m, s);
    if (!any) {
        r->finals++;
        if (s->w_pc != W_DONE)
            violation(m, &r->lost, "lost wake-up (waiter asleep, latch set, nothing left to wake it)");
    }
}

static struct result check(bool old)
{
    static struct result r;
    memset(&r, 0, sizeof(r));
    struct model m = {.old = old, .r = &r};
    struct st s;
    memset(&s, 0, sizeof(s));
    s.tag = PENDING;
    s.who = NOBODY;
    s.w_pc = W_START;
    s.s_pc = S_START;
    s.z_left = 2;
    dfs(&m, &s);
    free(m.seen);
    return r;
}

Test(latch_model, current_protocol_is_correct_in_every_interleaving)
{
    struct result r = check(false);
    fprintf(stderr, "latch model (current): %lu states, %lu transitions, %lu final\n",
            r.states, r.edges, r.finals);
    cr_assert_gt(r.states, 200, "the model explored too little to mean anything");
    cr_assert_gt(r.finals, 10);
    cr_assert_eq(r.lost, 0, "%s", r.first);
    cr_assert_eq(r.double_wake, 0, "%s", r.first);
    cr_assert_eq(r.early_return, 0, "%s", r.first);
    cr_assert_eq(r.race, 0, "%s", r.first);
}

/* The protocol before issue 9: the same check finds its lost wake-up and its race. */
Test(latch_model, old_protocol_loses_a_wakeup)
{
    struct result r = check(true);
    fprintf(stderr, "latch model (old): %lu states, %lu final, %d lost, %d races\n  %s\n",
            r.states, r.finals, r.lost, r.race, r.first_lost);
    cr_assert_gt(r.lost, 0, "the check must find the old protocol's lost wake-up");
    cr_assert_gt(r.race, 0, "the check must find the old protocol's data race");
    cr_assert_eq(r.double_wake, 0);
    cr_assert_eq(r.early_return, 0);
}
