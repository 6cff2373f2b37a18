/* SPDX-License-Identifier: MIT */
/*
 * Test harness: Criterion, or (WEFT_PLAIN_TESTS) a stand-in with the same macros so
 * the same sources run as plain programs under ThreadSanitizer, where Debian's
 * Criterion 2.4.1 does not start (Criterion issue #274; see STYLE.md). The stand-in
 * runs every test of the file in order in one process and exits 0, or 1 on the first
 * failed assertion. Only the macros used by weft's tests are provided.
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
#define cr_skip_test(...)          do { fprintf(stderr, "skip: " __VA_ARGS__); fputc('\n', stderr); return; } while (0)

#endif /* WEFT_PLAIN_TESTS */
#endif
