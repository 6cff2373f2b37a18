/* SPDX-License-Identifier: MIT */
/*
 * An exhaustive interleaving check of the deque's batch claim (lib/deque.c,
 * weft__deque_steal_batch) against the owner's pop, in the style of
 * test_latch_model.c: every shared access of each party is one transition, and a
 * depth-first search with a visited set over whole states runs every interleaving.
 * Sequentially consistent: the fences of deque.c are what make the real code behave
 * so (its comments have the argument); what this checks is the protocol's logic, the
 * race of a claim checked against a split read before the owner retracted it.
 *
 * Parties, on a deque with WEFT__STEAL_MAX modelled as W = 2:
 *  - the owner, starting with 4 public jobs, runs the script pop, pop, push, pop, pop,
 *    pop, pop (the push reuses an index a pop freed);
 *  - a batch thief: two batch steals (top; split as a hint; claimers++; split; the
 *    slots one by one; CAS top; claimers--);
 *  - a single thief: two Chase-Lev steals (top; split; the slot; CAS top).
 *
 * Checked: no job is taken twice and no empty slot is taken (every transition); the
 * owner never leaves top past bottom; in every final state claimers is 0 and every
 * job was taken exactly once or is still in [top, bottom).
 * The same search with the owner's rule before the batch claim (take any public job
 * above top without waiting) and with the near-top wait removed must find a double
 * take: that shows the check can fail.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define W      2  /* WEFT__STEAL_MAX, modelled */
#define NIDX   8
#define NJOBS  5  /* ids 1..5: 4 at the start, one pushed */
#define SPINS  2  /* near-top spins before the owner gives up (deque.c: 256) */

enum rule { RULE_CURRENT, RULE_OLD, RULE_NO_WAIT };

enum { O_NEXT, O_READTOP, O_NEAR, O_REREAD, O_CAS, O_DONE };
enum { A_TOP, A_HINT, A_INC, A_SPLIT, A_SLOT, A_CAS, A_DEC, A_DONE };
enum { B_TOP, B_SPLIT, B_SLOT, B_CAS, B_DONE };

static const char script[] = "ppuPppp"; /* p: pop, u: push (P: pop, just named apart) */

struct st {
    uint8_t top, split, bottom, claimers;
    uint8_t slot[NIDX];
    uint8_t taken[NJOBS + 1];
    uint8_t o_pc, o_op, o_b, o_t, o_spins;
    uint8_t a_pc, a_left, a_t, a_s, a_n, a_k, a_got[W];
    uint8_t b_pc, b_left, b_t, b_job;
};

struct result {
    unsigned long states, finals;
    int doubles, garbage, past, bad_final;
    char first[1024];
};

struct model {
    enum rule rule;
    struct result *r;
    struct st *seen;
    size_t cap, used;
    const char *trace[128];
    int depth;
};

static uint64_t hash(const struct st *s)
{
    uint64_t h = 1469598103934665603ull;
    const uint8_t *b = (const uint8_t *)s;
    for (size_t i = 0; i < sizeof(*s); i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static bool is_zero(const struct st *s)
{
    static const struct st zero;
    return memcmp(s, &zero, sizeof(*s)) == 0;
}

/* States are never all zero (bottom > 0 throughout), so zero marks a free cell. */
static bool visit(struct model *m, const struct st *s)
{
    if (m->used * 2 >= m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1u << 16;
        struct st *n = calloc(ncap, sizeof(*n));
        cr_assert_not_null(n, "visited set of %zu states", ncap);
        for (size_t i = 0; i < m->cap; i++)
            if (!is_zero(&m->seen[i])) {
                size_t h = (size_t)hash(&m->seen[i]) & (ncap - 1);
                while (!is_zero(&n[h]))
                    h = (h + 1) & (ncap - 1);
                n[h] = m->seen[i];
            }
        free(m->seen);
        m->seen = n;
        m->cap = ncap;
    }
    size_t h = (size_t)hash(s) & (m->cap - 1);
    while (!is_zero(&m->seen[h])) {
        if (memcmp(&m->seen[h], s, sizeof(*s)) == 0)
            return false;
        h = (h + 1) & (m->cap - 1);
    }
    m->seen[h] = *s;
    m->used++;
    return true;
}

static void violation(struct model *m, int *counter, const char *what)
{
    if ((*counter)++ || m->r->first[0])
        return;
    size_t n = (size_t)snprintf(m->r->first, sizeof(m->r->first), "%s after:", what);
    for (int i = 0; i < m->depth && n < sizeof(m->r->first); i++)
        n += (size_t)snprintf(m->r->first + n, sizeof(m->r->first) - n, " %s;", m->trace[i]);
}

static void take(struct model *m, struct st *s, uint8_t id)
{
    if (id == 0 || id > NJOBS) {
        violation(m, &m->r->garbage, "an empty slot taken");
        return;
    }
    if (++s->taken[id] > 1)
        violation(m, &m->r->doubles, "a job taken twice");
}

/* The owner's pop ends: lost, or empty after a lost race for the last job. */
static void owner_lost(struct model *m, struct st *s)
{
    if (s->top > s->o_b + 1)
        violation(m, &m->r->past, "top past bottom");
    s->split = s->bottom = (uint8_t)(s->o_b + 1);
    s->o_pc = O_NEXT;
    s->o_op++;
}

static void owner_take(struct model *m, struct st *s)
{
    take(m, s, s->slot[s->o_b]);
    s->bottom = s->o_b;
    s->o_pc = O_NEXT;
    s->o_op++;
}

/* One step of the owner; false if it has none left. */
static bool owner_step(struct model *m, struct st *s)
{
    switch (s->o_pc) {
    case O_NEXT:
        if (script[s->o_op] == '\0') {
            s->o_pc = O_DONE;
            return true;
        }
        if (script[s->o_op] == 'u') { /* push, public: slot, bottom, then split */
            s->slot[s->bottom] = NJOBS;
            s->bottom++;
            s->split = s->bottom;
            s->o_op++;
            return true;
        }
        s->o_b = (uint8_t)(s->bottom - 1);
        if (s->bottom == 0 || s->top > s->o_b) { /* the early out: empty */
            s->o_op++;
            return true;
        }
        s->split = s->o_b; /* retract; the fence follows */
        s->o_pc = O_READTOP;
        return true;
    case O_READTOP:
        s->o_t = s->top;
        if (m->rule == RULE_OLD ? s->o_t < s->o_b : s->o_t + W <= s->o_b) {
            owner_take(m, s);
        } else if (s->o_t < s->o_b) {
            s->o_pc = m->rule == RULE_NO_WAIT ? O_REREAD : O_NEAR;
            s->o_spins = 0;
        } else if (s->o_t == s->o_b) {
            s->o_pc = O_CAS;
        } else {
            owner_lost(m, s);
        }
        return true;
    case O_NEAR:
        if (s->claimers == 0) {
            s->o_pc = O_REREAD;
        } else if (s->o_spins == SPINS) { /* give up: the job stays public */
            s->split = (uint8_t)(s->o_b + 1);
            s->o_pc = O_NEXT;
            s->o_op++;
        } else {
            s->o_spins++;
        }
        return true;
    case O_REREAD:
        s->o_t = s->top;
        if (s->o_t < s->o_b)
            owner_take(m, s);
        else if (s->o_t == s->o_b)
            s->o_pc = O_CAS;
        else
            owner_lost(m, s);
        return true;
    case O_CAS:
        if (s->top == s->o_b) {
            s->top++;
            take(m, s, s->slot[s->o_b]);
        }
        owner_lost(m, s); /* empty either way: split = bottom = b + 1 */
        return true;
    default:
        return false;
    }
}

static void a_end(struct st *s)
{
    s->a_left--;
    s->a_pc = s->a_left ? A_TOP : A_DONE;
}

static bool batch_thief_step(struct model *m, struct st *s)
{
    switch (s->a_pc) {
    case A_TOP:
        s->a_t = s->top;
        s->a_pc = A_HINT;
        return true;
    case A_HINT:
        if (s->a_t >= s->split)
            a_end(s);
        else
            s->a_pc = A_INC;
        return true;
    case A_INC:
        s->claimers++;
        s->a_pc = A_SPLIT;
        return true;
    case A_SPLIT:
        s->a_s = s->split;
        if (s->a_t < s->a_s) {
            unsigned half = (unsigned)(s->a_s - s->a_t + 1) / 2;
            s->a_n = (uint8_t)(half < W ? half : W);
            s->a_k = 0;
            s->a_pc = A_SLOT;
        } else {
            s->a_pc = A_DEC;
        }
        return true;
    case A_SLOT:
        s->a_got[s->a_k] = s->slot[s->a_t + s->a_k];
        if (++s->a_k == s->a_n)
            s->a_pc = A_CAS;
        return true;
    case A_CAS:
        if (s->top == s->a_t) {
            s->top = (uint8_t)(s->a_t + s->a_n);
            for (unsigned k = 0; k < s->a_n; k++)
                take(m, s, s->a_got[k]);
        }
        s->a_pc = A_DEC;
        return true;
    case A_DEC:
        s->claimers--;
        memset(s->a_got, 0, sizeof(s->a_got));
        s->a_t = s->a_s = s->a_n = s->a_k = 0;
        a_end(s);
        return true;
    default:
        return false;
    }
}

static void b_end(struct st *s)
{
    s->b_left--;
    s->b_pc = s->b_left ? B_TOP : B_DONE;
    s->b_t = s->b_job = 0;
}

static bool single_thief_step(struct model *m, struct st *s)
{
    switch (s->b_pc) {
    case B_TOP:
        s->b_t = s->top;
        s->b_pc = B_SPLIT;
        return true;
    case B_SPLIT:
        if (s->b_t >= s->split)
            b_end(s);
        else
            s->b_pc = B_SLOT;
        return true;
    case B_SLOT:
        s->b_job = s->slot[s->b_t];
        s->b_pc = B_CAS;
        return true;
    case B_CAS:
        if (s->top == s->b_t) {
            s->top++;
            take(m, s, s->b_job);
        }
        b_end(s);
        return true;
    default:
        return false;
    }
}

static void check_final(struct model *m, const struct st *s)
{
    m->r->finals++;
    if (s->claimers != 0)
        violation(m, &m->r->bad_final, "claimers left counted");
    for (unsigned id = 1; id <= NJOBS; id++) {
        unsigned left = 0;
        for (unsigned i = s->top; i < s->bottom; i++)
            left += s->slot[i] == id;
        if (s->taken[id] + left != 1)
            violation(m, &m->r->bad_final, "a job lost or kept twice");
    }
}

static const char *names[3] = {"owner", "batch thief", "single thief"};

static void dfs(struct model *m, const struct st *s)
{
    if (!visit(m, s))
        return;
    m->r->states++;
    bool moved = false;
    for (int p = 0; p < 3; p++) {
        struct st n = *s;
        bool ok = p == 0 ? owner_step(m, &n) : p == 1 ? batch_thief_step(m, &n)
                                                      : single_thief_step(m, &n);
        if (!ok)
            continue;
        moved = true;
        if (m->depth < (int)(sizeof(m->trace) / sizeof(m->trace[0])))
            m->trace[m->depth] = names[p];
        m->depth++;
        dfs(m, &n);
        m->depth--;
    }
    if (!moved)
        check_final(m, s);
}

static void run(enum rule rule, struct result *r)
{
    struct model m = {.rule = rule, .r = r};
    struct st s = {0};
    for (unsigned i = 0; i < 4; i++)
        s.slot[i] = (uint8_t)(i + 1);
    s.split = s.bottom = 4;
    s.a_left = 2;
    s.b_left = 2;
    dfs(&m, &s);
    free(m.seen);
}

Test(deque_model, batch_claims_and_pops_agree_in_every_interleaving)
{
    struct result r = {0};
    run(RULE_CURRENT, &r);
    cr_log_info("deque model: %lu states, %lu final", r.states, r.finals);
    cr_assert_gt(r.finals, 0, "the search reached no final state");
    cr_assert(r.doubles == 0 && r.garbage == 0 && r.past == 0 && r.bad_final == 0,
              "%d double, %d garbage, %d past, %d final: %s", r.doubles, r.garbage, r.past,
              r.bad_final, r.first);
}

Test(deque_model, the_old_pop_rule_takes_a_job_twice)
{
    struct result r = {0};
    run(RULE_OLD, &r);
    cr_log_info("old rule: %s", r.first);
    cr_assert_gt(r.doubles, 0, "the model found no double take with the old rule");
}

Test(deque_model, no_wait_near_top_takes_a_job_twice)
{
    struct result r = {0};
    run(RULE_NO_WAIT, &r);
    cr_log_info("no wait: %s", r.first);
    cr_assert_gt(r.doubles, 0, "the model found no double take without the near-top wait");
}
