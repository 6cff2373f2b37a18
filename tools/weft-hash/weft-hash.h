/* SPDX-License-Identifier: MIT */
/*
 * weft-hash: the hashing phase of a build tool as a program. Shared declarations.
 *
 * A run has four phases:
 *   1. walk   every directory is a task (weft_spawn in one weft_scope_run); a task
 *             reads its directory with getdents64 and keeps the paths it finds in a
 *             node of its own, so the walk takes no lock per file;
 *   2. sort   all paths, by bytes (strcmp), with a parallel merge sort (weft_join);
 *   3. hash   weft_par_collect over the sorted list: item i opens, reads and hashes
 *             file i into slot i (XXH3-64);
 *   4. print  the slots in order: "XXH3 (PATH) = HASH" lines, the format of
 *             `xxhsum -H3`, so the output never depends on the worker count.
 * --serial runs the same phases on the calling thread with plain syscalls: the
 * baseline every speedup is measured against.
 */
#ifndef WEFT_HASH_H
#define WEFT_HASH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define WH_NAME "weft-hash"
#define WH_VERSION "0.1.0"

/* Files up to this size are read whole into one buffer; larger ones are streamed in
 * WH_CHUNK pieces through an XXH3 streaming state, so memory stays bounded. */
#define WH_WHOLE_MAX ((uint64_t)64 << 20)
#define WH_CHUNK ((size_t)4 << 20)

/* A result code outside the errno range: the path is no longer a regular file. */
#define WH_ENOTREG (-4096)

/* Exit statuses. */
enum { WH_OK = 0, WH_FAILED = 1, WH_FATAL = 2 };

struct wh_opts {
    unsigned threads;   /* 0: weft's default (WEFT_NUM_THREADS, else the usable cores) */
    bool follow;        /* -L: follow symbolic links inside the trees */
    bool serial;        /* --serial: one thread, plain syscalls */
    bool summary;       /* --summary on stderr */
    bool quiet;         /* --check: no "OK" lines */
    bool progress;      /* a progress line on stderr (only when stderr is a terminal) */
    const char *check;  /* --check FILE, or NULL */
};

/* Why an entry could not be hashed, when the walk already knows. */
enum wh_what {
    WH_FILE = 0,      /* a regular file to hash */
    WH_E_ACCESS,      /* an operand that cannot be looked up */
    WH_E_OPENDIR,     /* a directory that cannot be opened */
    WH_E_READDIR,     /* a directory that cannot be read to its end */
    WH_E_LINK,        /* -L: a link that cannot be followed (dangling, loop) */
    WH_E_FSLOOP,      /* -L: a directory that is its own ancestor */
    WH_E_TYPE,        /* an operand that is neither a regular file nor a directory */
};

/* One line of output: a path to hash, or an error found by the walk. 16 bytes, so the
 * sort moves little. */
struct wh_entry {
    const char *path;
    int32_t err;       /* -errno for the WH_E_* kinds, 0 otherwise */
    uint8_t what;      /* enum wh_what */
    uint8_t nofollow;  /* open with O_NOFOLLOW (found by the walk without -L) */
};

struct wh_list {
    struct wh_entry *v;
    size_t n;
    void *nodes;       /* walk.c's storage behind the paths */
};

/* The result of hashing one file (a weft_par_collect slot). */
struct wh_result {
    uint64_t hash;
    uint64_t bytes;
    int32_t err;       /* -errno, 0 on success */
};

/* Counters the progress line shows; the workers add to them only when it is on. */
struct wh_progress {
    _Atomic(uint64_t) found;   /* files found by the walk */
    _Atomic(uint64_t) done;    /* files hashed */
    _Atomic(uint64_t) bytes;   /* bytes hashed */
    uint64_t total;            /* files to hash (set before phase 3) */
};

/* walk.c: find every regular file under the operands. Returns 0 (per-path errors are
 * entries of the list) or a fatal -errno (-ENOMEM). */
int wh_walk(const struct wh_opts *o, char *const *paths, size_t npaths,
            struct wh_progress *pg, struct wh_list *out);
void wh_list_free(struct wh_list *l);

/* sort.c: sort by path (bytes) and drop repeated paths. */
int wh_sort(struct wh_list *l, bool serial);

/* hash.c: read and hash one file; serial uses plain syscalls. Never fails as a whole:
 * the error is in r->err. */
void wh_hash_file(const char *path, bool nofollow, bool serial, struct wh_progress *pg,
                  struct wh_result *r);
/* Hash every entry of l into res[i] (entries that are walk errors are skipped). */
int wh_hash_all(const struct wh_list *l, struct wh_result *res, bool serial,
                struct wh_progress *pg);

/* check.c: --check FILE. Returns the exit status. */
int wh_check(const struct wh_opts *o);

/* main.c helpers shared by the phases. */
uint64_t wh_now_ns(void);
const char *wh_strerror(int err);                         /* err: -errno or WH_ENOTREG */
void wh_err(const char *path, const char *what, int err);  /* "weft-hash: path: what: reason" */
void wh_put_line(FILE *f, const char *path, uint64_t hash);  /* "XXH3 (path) = hash\n" */
void wh_progress_start(struct wh_progress *pg, bool on);
void wh_progress_phase(const char *phase); /* "walk", "hash", "check": what the line shows */
void wh_progress_stop(void);
/* Runs fn(arg) on the pool (or directly, serially). */
int wh_run(bool serial, int (*fn)(void *), void *arg);
unsigned wh_workers(void);

#endif /* WEFT_HASH_H */
