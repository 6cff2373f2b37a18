/* SPDX-License-Identifier: MIT */
/*
 * Test harness: Criterion, or (WEFT_PLAIN_TESTS) a stand-in with the same macros so
 * the same sources run as plain programs under ThreadSanitizer, where Debian's
 * Criterion 2.4.1 does not start (Criterion issue #274; see STYLE.md). The stand-in
 * (harness_main.c) runs every test of the file in a process of its own, as Criterion
 * does, and reports TAP; a failed assertion exits that process with 1, a skip
 * (cr_skip_test) with 77. Only the macros used by weft's tests are provided.
 * Both builds print TAP on stdout (Criterion: --tap, tests/meson.build), so meson and
 * tools/test count every test, skips included.
 */
#ifndef WEFT_TEST_HARNESS_H
#define WEFT_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Scale for loop counts: 1 normally, smaller under sanitizers that slow things 10x. */
#ifndef WEFT_TEST_SCALE_DIV
#define WEFT_TEST_SCALE_DIV 1
#endif
#define SCALED(n) ((n) / WEFT_TEST_SCALE_DIV > 0 ? (n) / WEFT_TEST_SCALE_DIV : 1)

/* The seed of a randomised test: $WEFT_TEST_SEED if set (a number, or "random" for
 * one drawn from the clock), else def. Logged, so that a failing run's output says
 * how to replay it (meson prints a failed test's stderr). */
static inline uint64_t wt_test_seed(uint64_t def);

#ifndef WEFT_PLAIN_TESTS
#include <criterion/criterion.h>
#else

struct wt_test {
    const char *suite, *name;
    void (*fn)(void);
    struct wt_test *next;
};
extern struct wt_test *wt_tests;
void wt_register(struct wt_test *t);

struct wt_opts {
    int timeout, exit_code, signal;
    void (*init)(void), (*fini)(void);
};

#define Test(suite, name, ...)                                                        \
    static void suite##_##name(void);                                                 \
    static struct wt_test wt_##suite##_##name = {#suite, #name, suite##_##name, NULL}; \
    __attribute__((constructor)) static void wt_reg_##suite##_##name(void)            \
    {                                                                                 \
        wt_register(&wt_##suite##_##name);                                            \
    }                                                                                 \
    static void suite##_##name(void)

#define WT_FAIL(...)                                                                  \
    do {                                                                              \
        fprintf(stderr, "%s:%d: assertion failed: ", __FILE__, __LINE__);             \
        fprintf(stderr, "" __VA_ARGS__);                                              \
        fprintf(stderr, "\n");                                                        \
        exit(1);                                                                      \
    } while (0)

#define cr_assert(cond, ...)  do { if (!(cond)) WT_FAIL(__VA_ARGS__); } while (0)
#define cr_expect(cond, ...)  cr_assert(cond, __VA_ARGS__)
#define cr_fail(...)          WT_FAIL(__VA_ARGS__)
#define WT_CMP(a, op, b, ...)                                                         \
    do {                                                                              \
        if (!((a)op(b))) {                                                            \
            fprintf(stderr, "%s:%d: %s " #op " %s: %lld vs %lld\n", __FILE__, __LINE__, \
                    #a, #b, (long long)(a), (long long)(b));                          \
            WT_FAIL(__VA_ARGS__);                                                     \
        }                                                                             \
    } while (0)
#define cr_assert_eq(a, b, ...)  WT_CMP(a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) WT_CMP(a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)  WT_CMP(a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) WT_CMP(a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)  WT_CMP(a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) WT_CMP(a, >=, b, __VA_ARGS__)
#define cr_assert_null(p, ...)     cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_log_info(...)           (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...)                                                             \
    do {                                                                              \
        printf("" __VA_ARGS__);                                                       \
        printf("\n");                                                                 \
        fflush(stdout);                                                               \
        exit(77);                                                                     \
    } while (0)

#endif /* WEFT_PLAIN_TESTS */

#include <string.h>
#include <time.h>

static inline uint64_t wt_test_seed(uint64_t def)
{
    static uint64_t seed;
    static int done;
    if (done)
        return seed + def;
    const char *e = getenv("WEFT_TEST_SEED");
    seed = 0;
    if (e && strcmp(e, "random") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
    } else if (e && *e) {
        char *end;
        seed = strtoull(e, &end, 0);
        if (*end)
            fprintf(stderr, "WEFT_TEST_SEED=%s is not a number: using 0\n", e), seed = 0;
    }
    done = 1;
    if (seed)
        fprintf(stderr, "WEFT_TEST_SEED=%llu (replay a failure with that value)\n",
                (unsigned long long)seed);
    return seed + def;
}
#endif
