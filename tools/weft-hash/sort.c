/* SPDX-License-Identifier: MIT */
/*
 * Phase 2: sort the entries by path, byte by byte (strcmp compares as unsigned char),
 * so the output is the same whatever order the walk found the files in. A merge sort
 * whose halves are sorted in parallel with weft_join; short runs go to qsort. Then
 * repeated paths (an operand given twice, or a file under two operands) are dropped:
 * each printed path appears once.
 */
#include "weft-hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define SORT_CUTOFF 4096

struct msort {
    struct wh_entry *a, *tmp;
    size_t n;
};

static int cmp_entry(const void *x, const void *y)
{
    const struct wh_entry *a = x, *b = y;
    return strcmp(a->path, b->path);
}

static int msort_task(void *arg)
{
    struct msort *m = arg;
    if (m->n <= SORT_CUTOFF) {
        qsort(m->a, m->n, sizeof(*m->a), cmp_entry);
        return 0;
    }
    size_t h = m->n / 2;
    struct msort l = {m->a, m->tmp, h};
    struct msort r = {m->a + h, m->tmp + h, m->n - h};
    int err = weft_join(msort_task, &l, msort_task, &r);
    if (err)
        return err;
    size_t i = 0, j = h, k = 0;
    while (i < h && j < m->n)
        m->tmp[k++] = strcmp(m->a[j].path, m->a[i].path) < 0 ? m->a[j++] : m->a[i++];
    while (i < h)
        m->tmp[k++] = m->a[i++];
    while (j < m->n)
        m->tmp[k++] = m->a[j++];
    memcpy(m->a, m->tmp, m->n * sizeof(*m->a));
    return 0;
}

int wh_sort(struct wh_list *l, bool serial)
{
    if (l->n < 2)
        return 0;
    if (serial || l->n <= SORT_CUTOFF) {
        qsort(l->v, l->n, sizeof(*l->v), cmp_entry);
    } else {
        struct msort m = {l->v, malloc(l->n * sizeof(*l->v)), l->n};
        if (!m.tmp)
            return -ENOMEM;
        int err = msort_task(&m);  /* inside a task: the joins fork onto the pool */
        free(m.tmp);
        if (err)
            return err;
    }
    size_t k = 1;
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(l->v[i].path, l->v[k - 1].path) != 0)
            l->v[k++] = l->v[i];
    l->n = k;
    return 0;
}
