/* SPDX-License-Identifier: MIT */
/* main() for the plain (non-Criterion) build of a test file: see harness.h. */
#define WEFT_PLAIN_TESTS 1
#include "harness.h"

#include <string.h>

struct wt_test *wt_tests;
static struct wt_test **wt_tail = &wt_tests;

void wt_register(struct wt_test *t)
{
    *wt_tail = t; /* keep file order */
    wt_tail = &t->next;
}

int main(int argc, char **argv)
{
    int ran = 0;
    for (struct wt_test *t = wt_tests; t; t = t->next) {
        if (argc > 1 && strcmp(argv[1], t->name) != 0)
            continue;
        fprintf(stderr, "[ RUN  ] %s::%s\n", t->suite, t->name);
        t->fn();
        fprintf(stderr, "[ PASS ] %s::%s\n", t->suite, t->name);
        ran++;
    }
    printf("%d passed, 0 failed\n", ran);
    return ran ? 0 : 77;
}
