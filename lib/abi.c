/* SPDX-License-Identifier: MIT */
/*
 * What binaries built against weft.h rely on, beyond the functions' behaviour.
 *
 * The version: weft.h's WEFT_VERSION_MAJOR/MINOR/PATCH are its one definition;
 * meson.build derives the project version, weft.pc's version and the soname from
 * them (the rule is in weft.h, "Versions"), and weft_version() reports the one this
 * library was compiled with, so a program can tell the library it runs with from the
 * header it was built against. tests/check_install.sh checks that the header, this
 * function, pkg-config and the soname agree.
 *
 * The layouts: every C11 caller compiles weft.h's inline weft_join, which reads and
 * writes the calling worker's deque and builds a job on its own stack, so the
 * library's structs must be what the header says they are. The assertions below are
 * all of those assumptions, each with what relies on it; a failing one means the
 * header and the library disagree (fix the one that is wrong), never "adjust the
 * number". What the header itself gives binaries (sizes, offsets, constants) is
 * recorded per soname in tests/abi_layout.txt and compared by tests/check_abi.sh,
 * so a layout change cannot ship under an old soname.
 */
#include "pool.h"

#include <stddef.h>

WEFT_API const char *weft_version(void)
{
    return WEFT_VERSION;
}

/* WEFT__DQ(w) in weft.h casts the worker to its deque: the deque is the first member
 * of struct weft__worker (pool.h). */
_Static_assert(offsetof(struct weft__worker, dq) == 0,
               "weft.h's WEFT__DQ(): the deque must be the first member of the worker");

/* struct weft__deque is split in two cache lines (weft.h; deque.c has the protocol):
 * the owner's line (bottom, split, limit, slots, mask, poke, fence_full, scope: all
 * read or written by the inline join's push and pop) and the thieves' (top, which
 * thieves CAS). A thief's CAS must never take the owner's line away, so top starts
 * the second line, and the deque (and so the worker) is aligned to lines. */
_Static_assert(offsetof(struct weft__deque, top) == 64,
               "weft__deque: top must start the second cache line");
_Static_assert(_Alignof(struct weft__deque) == 64 && _Alignof(struct weft__worker) >= 64,
               "weft__deque (and the worker that starts with it) are cache-line aligned");
_Static_assert(offsetof(struct weft__deque, scope) + sizeof(void *) <= 64,
               "weft.h's inline join reads dq->scope on the owner's line (no extra miss)");
#if UINTPTR_MAX == UINT64_MAX
/* The pad arithmetic (LP64): pad_ is 64 - 7 * 8 because the owner's fields are seven
 * 8-byte words (poke and fence_full share one), so the pad ends exactly where top
 * starts, with no padding the compiler adds; a field added to the owner's line must
 * shrink pad_ (or the line overflows and top moves). pad2_ likewise fills top's line,
 * so buf (which every steal reads) starts the third line and the thieves' CAS on top
 * shares its line with nothing. */
_Static_assert(offsetof(struct weft__deque, pad_) == 7 * 8 &&
                   offsetof(struct weft__deque, pad_) + sizeof(((struct weft__deque *)0)->pad_) ==
                       offsetof(struct weft__deque, top),
               "weft__deque: pad_ must be 64 - (the owner's fields), and they are 7 words");
_Static_assert(offsetof(struct weft__deque, pad2_) + sizeof(((struct weft__deque *)0)->pad2_) ==
                       offsetof(struct weft__deque, buf) &&
                   offsetof(struct weft__deque, buf) == 128,
               "weft__deque: pad2_ must fill top's line; buf starts the third");
#endif

/* Deque slots tag what they hold in their low bits (deque.h: WEFT__FRAME_TAG for
 * spawned frames; runq.h: WEFT__RESUME_TAG for resumed tasks); the inline join
 * stores an untagged pointer to a job on its stack, so a job's address must have
 * those bits clear. */
_Static_assert(_Alignof(struct weft__job) > WEFT__RESUME_TAG &&
                   (WEFT__RESUME_TAG & WEFT__FRAME_TAG) == WEFT__FRAME_TAG,
               "weft__job: its alignment must leave the slot tag bits clear");
/* The inline join initialises a job's latch with one relaxed store of 0 (pending,
 * nobody waiting: latch.c's states) to a word that holds a state and a pointer. */
_Static_assert(sizeof(struct weft__latch) == sizeof(uintptr_t) &&
                   sizeof(uintptr_t) == sizeof(void *),
               "weft__latch: one word, a pointer with the state in its low bits");

/* weft_event's fields are WEFT__ATOMIC(unsigned): _Atomic in C11, plain unsigned for
 * C++ and pre-C11 callers, which must see the same layout (and never touch them). */
_Static_assert(sizeof(_Atomic(unsigned)) == sizeof(unsigned) &&
                   _Alignof(_Atomic(unsigned)) == _Alignof(unsigned),
               "weft.h declares weft_event's words as plain unsigned for C++");
