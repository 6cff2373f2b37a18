/* SPDX-License-Identifier: MIT */
/*
 * Intrusive lists: the links live in the elements, so putting an element on a list
 * never allocates, and an element may sit on several lists through several links.
 * Two shapes cover every hand-linked list in lib/:
 *
 *  - WEFT__FIFO_DEFINE: singly linked, with a head and a tail; push at the tail, pop
 *    at the head, remove (a linear walk) for the rare cancel. The injector and the
 *    ready and yield queues (runq.c), a limited scope's deferred frames (scope.c),
 *    the blocking threads' queue (blocking.c), a trace buffer's chunks (trace.c).
 *  - WEFT__DLIST_DEFINE: doubly linked and NULL-terminated, from a head pointer and,
 *    for a list that keeps one, a tail pointer (NULL where it keeps none); insert at
 *    the head or append at the tail, remove from anywhere in O(1). A scope's I/O,
 *    waits and kids (scope.c), a ring's cancel inbox (uring.c), the stack cache
 *    (fiber.c), the jobserver's waiters (jobserver.c).
 *
 * Each macro defines typed static inline functions for one element type and link
 * field, after BSD's <sys/queue.h> and jemalloc's ql.h, but as functions: their
 * arguments are type-checked and a debugger can step into them. None of them locks
 * anything or touches an atomic: the caller holds whatever guards the list. Walks
 * (for k = head; k; k = k->next) stay open-coded at their call sites.
 *
 * Rejected: one untyped link struct embedded everywhere plus container_of: it would
 * change struct weft__job's layout, which weft.h's inline join depends on, and make
 * every element access a cast.
 */
#ifndef WEFT_LIST_H
#define WEFT_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* Each list type gets every function; most use only some (no unused warnings). */
#define WEFT__LIST_FN static inline __attribute__((unused))

/* struct name { type *head, *tail; }, linked through type's link field; all-zero is
 * an empty queue. name_push leaves x->link NULL; name_pop does not clear it.
 * WEFT__FIFO_STRUCT and WEFT__FIFO_FUNCS are its two halves, for a queue embedded
 * where its element type is still incomplete (the functions then follow the
 * element's definition). */
#define WEFT__FIFO_DEFINE(name, type, link)                                           \
    WEFT__FIFO_STRUCT(name, type)                                                     \
    WEFT__FIFO_FUNCS(name, type, link)

#define WEFT__FIFO_STRUCT(name, type)                                                 \
    struct name {                                                                     \
        type *head, *tail;                                                            \
    };

#define WEFT__FIFO_FUNCS(name, type, link)                                            \
    WEFT__LIST_FN bool name##_empty(const struct name *q)                             \
    {                                                                                 \
        return q->head == NULL;                                                       \
    }                                                                                 \
    WEFT__LIST_FN void name##_push(struct name *q, type *x)                           \
    {                                                                                 \
        x->link = NULL;                                                               \
        if (q->tail)                                                                  \
            q->tail->link = x;                                                        \
        else                                                                          \
            q->head = x;                                                              \
        q->tail = x;                                                                  \
    }                                                                                 \
    WEFT__LIST_FN type *name##_pop(struct name *q)                                    \
    {                                                                                 \
        type *x = q->head;                                                            \
        if (x) {                                                                      \
            q->head = x->link;                                                        \
            if (!q->head)                                                             \
                q->tail = NULL;                                                       \
        }                                                                             \
        return x;                                                                     \
    }                                                                                 \
    /* Take x off q wherever it is (a walk from the head). false: not on q. */        \
    WEFT__LIST_FN bool name##_remove(struct name *q, type *x)                         \
    {                                                                                 \
        type *before = NULL;                                                          \
        for (type **pp = &q->head; *pp; before = *pp, pp = &(*pp)->link)              \
            if (*pp == x) {                                                           \
                *pp = x->link;                                                        \
                if (q->tail == x)                                                     \
                    q->tail = before;                                                 \
                return true;                                                          \
            }                                                                         \
        return false;                                                                 \
    }

/* Functions on a list whose first element is *head (NULL: empty) and, if the list
 * keeps one, whose last is *tail; tail NULL: the list keeps no tail. Linked through
 * type's prev and next fields. name_remove leaves x's own links as they were. */
#define WEFT__DLIST_DEFINE(name, type, prev, next)                                    \
    WEFT__LIST_FN void name##_insert(type **head, type **tail, type *x)               \
    {                                                                                 \
        x->prev = NULL;                                                               \
        x->next = *head;                                                              \
        if (*head)                                                                    \
            (*head)->prev = x;                                                        \
        else if (tail)                                                                \
            *tail = x;                                                                \
        *head = x;                                                                    \
    }                                                                                 \
    WEFT__LIST_FN void name##_append(type **head, type **tail, type *x)               \
    {                                                                                 \
        x->next = NULL;                                                               \
        x->prev = *tail;                                                              \
        if (*tail)                                                                    \
            (*tail)->next = x;                                                        \
        else                                                                          \
            *head = x;                                                                \
        *tail = x;                                                                    \
    }                                                                                 \
    WEFT__LIST_FN void name##_remove(type **head, type **tail, type *x)               \
    {                                                                                 \
        if (x->prev)                                                                  \
            x->prev->next = x->next;                                                  \
        else                                                                          \
            *head = x->next;                                                          \
        if (x->next)                                                                  \
            x->next->prev = x->prev;                                                  \
        else if (tail)                                                                \
            *tail = x->prev;                                                          \
    }

#endif
