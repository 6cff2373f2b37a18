/* SPDX-License-Identifier: MIT */
/*
 * weft: many small tasks on a few worker threads.
 *
 * Conventions (liburing's):
 *  - A function that can fail returns 0 (or a non-negative count) on success and a
 *    negative errno on failure. When a function that takes a callback fails, the
 *    callback is never called.
 *  - Every user callback returns int: 0 is success; anything else is an error that
 *    is handed to whoever waits (weft_run, weft_join, the scope, the loop).
 *  - Wherever a function takes a pool, NULL means the pool of the calling worker,
 *    or the default pool when called from outside any worker.
 *  - Thread context is stated per function: "any thread", "inside a task" (on a
 *    worker of a pool), or "outside any task".
 *
 * Environment (read once when a pool is created; garbage is ignored with a warning):
 *   WEFT_NUM_THREADS=N   worker count when weft_pool_options.threads is 0
 *   WEFT_PIN=1           pin one worker per core (as WEFT_POOL_PIN)
 *   WEFT_IO=blocking     force the blocking I/O backend (as WEFT_POOL_NO_URING)
 *   WEFT_SCHED=random:SEED  seeded randomised scheduling, for tests: steal victims
 *                        and the sleeper to wake are drawn at random, and workers yield
 *                        or spin at random at protocol points; every choice comes from a
 *                        generator per worker seeded from SEED and its index, so the
 *                        same seed makes the same choices. WEFT_SCHED=random picks a
 *                        seed; either way "weft: WEFT_SCHED=random:SEED" is printed on
 *                        stderr once per process, to replay a failure. Slower.
 *   WEFT_JOBSERVER=0     ignore make's jobserver (as WEFT_POOL_NO_JOBSERVER)
 *   MAKEFLAGS            a GNU make jobserver named here is used automatically
 *                        (see WEFT_POOL_NO_JOBSERVER)
 *   WEFT_TRACE=path      write a trace of each pool (as weft_pool_options.trace_path)
 *   WEFT_TRACE_MAX_MB=N  largest trace file, MiB (default 256): past it, stop recording
 */
#ifndef WEFT_H
#define WEFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <spawn.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#error "weft supports Linux only"
#endif

#define WEFT_API __attribute__((visibility("default")))

/* ------------------------------------------------------------------------------
 * Versions
 *
 * These three lines are the one definition of weft's version: meson.build reads them
 * for the project's version (weft.pc's, the shared library's file name) and for the
 * soname, so they are never restated anywhere else.
 * MAJOR.MINOR.PATCH: PATCH fixes; MINOR adds (new functions go into a new version
 * node of lib/weft.map); MAJOR breaks. The soname says which binaries may load the
 * library: libweft.so.MAJOR, and while MAJOR is 0 libweft.so.0.MINOR, so that every
 * 0.x release may break binaries built against an earlier one (0.2 did: fields were
 * added to weft_pool_options and weft_stats, which a 0.1 binary allocates shorter).
 * A changed layout of a struct defined in this header, the private weft__ ones that
 * the inline weft_join reads included, breaks binaries: it needs a new soname, and
 * tests/check_abi.sh fails until tests/abi_layout.txt records the layout under it.
 * ---------------------------------------------------------------------------- */

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 2
#define WEFT_VERSION_PATCH 0

#define WEFT__STR(x) #x
#define WEFT__XSTR(x) WEFT__STR(x)
/* The version this header belongs to, as a string: "0.2.0". */
#define WEFT_VERSION \
    WEFT__XSTR(WEFT_VERSION_MAJOR) "." WEFT__XSTR(WEFT_VERSION_MINOR) "." \
    WEFT__XSTR(WEFT_VERSION_PATCH)

/* The version of the library the program runs with (which may be newer than the
 * header it was compiled with, under the same soname): "MAJOR.MINOR.PATCH", a static
 * string, WEFT_VERSION of the weft.h the library was built from. Added in 0.2.
 * Thread context: any thread; it never fails. */
WEFT_API const char *weft_version(void);

/* ------------------------------------------------------------------------------
 * Pools
 * ---------------------------------------------------------------------------- */

typedef struct weft_pool weft_pool; /* opaque */

/* Pin worker i to the i-th core this process may use. */
#define WEFT_POOL_PIN       (1u << 0)
/* Never use io_uring: I/O runs on the blocking backend. */
#define WEFT_POOL_NO_URING  (1u << 1)
/* Ignore make's jobserver. Without this flag (and without WEFT_JOBSERVER=0), when
 * MAKEFLAGS names a GNU make jobserver (--jobserver-auth=fifo:PATH, make >= 4.4;
 * --jobserver-auth=R,W or --jobserver-fds=R,W, older makes; the last one wins) the
 * process's pools together run at most 1 + (tokens held) workers at once: one
 * worker runs on the process's implicit token, every other one reads a token (a
 * byte) from make before it runs work. Tokens are kept while workers are busy, go
 * back to make within 100 ms of a worker going to sleep, and all of them before
 * weft_pool_destroy returns and at exit; the byte read is the byte written back,
 * and a forked child gives back nothing it inherited. No worker ever blocks on
 * make's fds: one that has no token sleeps until one is free. Inherited fds that
 * are closed or not one pipe (a recipe without '+'), or a FIFO that cannot be
 * opened: one warning on stderr, and the pool runs without a jobserver. A dry run
 * (`make -n`) changes nothing: recipes that run under it run for real. MAKEFLAGS
 * is read when the first of the process's pools that use the jobserver is
 * created, and that client serves them until the last one is destroyed. The
 * workers of a pool use the jobserver from their start; the caller of
 * weft_pool_create needs nothing else. */
#define WEFT_POOL_NO_JOBSERVER (1u << 2)

/* Largest worker count weft_pool_create accepts. */
#define WEFT_MAX_THREADS 1024u

typedef struct weft_pool_options {
    unsigned threads;      /* 0: $WEFT_NUM_THREADS, else the cores this process may use */
    unsigned flags;        /* WEFT_POOL_PIN, WEFT_POOL_NO_URING, WEFT_POOL_NO_JOBSERVER */
    size_t   stack_size;   /* stacks tasks run on (workers run on them, and each
                              suspended task holds one); 0: 256 KiB. Pages cost
                              memory only once touched. A size the system cannot
                              map fails weft_pool_create with -ENOMEM. */
    unsigned ring_entries; /* io_uring entries per worker; 0: default. A size
                              io_uring refuses (above 32768) makes the pool use the
                              blocking backend, as where io_uring is unavailable. */
    /* Added in 0.2 (zero = off, so {0} and designated initialisers keep working). */
    /* Called on each worker thread with its index (0..threads-1) and hook_arg: start
     * before the worker takes any work, stop after its last task (while the pool is
     * destroyed), each exactly once. For per-worker setup and teardown (arenas, hash
     * states): a hook may call weft_worker_index, but must not hand work to the pool
     * or wait (spawns, joins, loops, weft_run, I/O): the worker is not running its
     * loop yet, or any more. */
    void (*on_worker_start)(unsigned index, void *hook_arg);
    void (*on_worker_stop)(unsigned index, void *hook_arg);
    void *hook_arg;
    /* Write a trace of this pool to this file (as WEFT_TRACE, which it overrides; ""
     * means no trace whatever WEFT_TRACE says; NULL: WEFT_TRACE decides). See
     * "Traces" below. */
    const char *trace_path;
} weft_pool_options;

/* Create a pool of worker threads. opts may be NULL (all defaults).
 * The default worker count is the number of cores this process may use: its CPU
 * affinity mask, further limited by a cgroup CPU quota (cpu.max) rounded up.
 * Thread context: any thread (also inside a task: pools nest).
 * Returns 0 and sets *pool, or:
 *   -EINVAL  pool is NULL, threads > WEFT_MAX_THREADS, unknown flags, or
 *            stack_size so large that no mapping of it can be described (within
 *            two pages and a header of SIZE_MAX);
 *   -ENOMEM  out of memory;
 *   -EAGAIN  a worker thread could not be started (the pool is not created);
 *   open(2)'s -errno for opts->trace_path (-ENOENT, -EACCES, ...). A WEFT_TRACE
 *            that cannot be opened only gets a warning: the pool runs untraced. */
WEFT_API int weft_pool_create(weft_pool **pool, const weft_pool_options *opts);

/* Wait for all work submitted to the pool, stop its workers and free it.
 * NULL is a no-op. Thread context: outside any task of this pool (called from one of
 * its own tasks it would wait for itself: it then prints a warning and returns
 * without destroying). In a forked child, an inherited pool is only freed. */
WEFT_API void weft_pool_destroy(weft_pool *pool);

/* Number of workers; 0 for NULL. Thread context: any thread. */
WEFT_API unsigned weft_pool_threads(const weft_pool *pool);

/* The index (0..threads-1) of the worker running the calling task, in that task's
 * pool; -1 outside any worker. A task may resume on another worker after any call
 * that can wait (I/O, weft_join, weft_scope_run, the loops, weft_yield): the index is
 * valid until then. Also valid in the worker hooks. Thread context: any thread. */
WEFT_API int weft_worker_index(void);

/* The process-wide pool: created with default options on first use, destroyed at
 * exit. Returns NULL only if it cannot be created (out of memory or threads).
 * In a forked child a fresh default pool is created on first use.
 * Thread context: any thread. */
WEFT_API weft_pool *weft_default_pool(void);

typedef int (*weft_fn)(void *arg);

/* Run fn(arg) on the pool and wait for it; returns fn's result.
 * From a worker of that pool it simply calls fn. From any other thread, fn is queued
 * on the pool's injector and the caller sleeps until it has run.
 * Thread context: any thread.
 * Errors: -EINVAL fn is NULL; -ECHILD pool was inherited across fork();
 *         -ENOMEM pool is NULL and the default pool cannot be created. */
WEFT_API int weft_run(weft_pool *pool, weft_fn fn, void *arg);

/* ------------------------------------------------------------------------------
 * Scoped spawn
 * ---------------------------------------------------------------------------- */

typedef struct weft_scope weft_scope;

/* Run body(s, arg) on the calling thread and return after it and every task spawned
 * into s (also from inside those tasks) have finished. Spawns from a worker go on its
 * own deque; from any other thread through the pool's injector. While it waits, a
 * worker runs other work; an outside thread sleeps.
 * The first nonzero result (body's, a task's, or weft_scope_cancel's) is returned and
 * cancels the scope: tasks not yet started are not run.
 * Thread context: any thread. From a worker of another pool, the scope's tasks run
 * on that other pool and the calling worker waits (sleeps) for them.
 * Opened inside a task (or body) of another scope, it is nested in that scope: see
 * "Nesting" below.
 * Errors: -EINVAL body is NULL; -ECHILD pool inherited across fork();
 *         -ENOMEM no default pool; -ECANCELED opened inside a task of a cancelled
 *         scope (body is not called); or the first error as above (-ETIMEDOUT
 *         from weft_scope_deadline, -ECANCELED when the scope it is nested in was
 *         cancelled). */
WEFT_API int weft_scope_run(weft_pool *pool, int (*body)(weft_scope *s, void *arg), void *arg);

/* Spawn fn(arg) into scope s. arg must stay valid until weft_scope_run returns.
 * Thread context: inside the scope's body or inside one of its tasks (any thread
 * that holds s while the scope is running).
 * Errors: -EINVAL s or fn is NULL; -ECANCELED s is cancelled (fn will not run);
 *         -ENOMEM no memory for the task's frame or to grow the deque (fn will not
 *         run; the scope is not cancelled by it). */
WEFT_API int weft_spawn(weft_scope *s, weft_fn fn, void *arg);

/* As weft_spawn, but copies size bytes from args into the task's frame; fn receives
 * a pointer to the copy (16-byte aligned), which lives until fn returns.
 * Errors: -EINVAL s or fn is NULL, size > 64, or args is NULL with size > 0;
 *         -ECANCELED s is cancelled; -ENOMEM as weft_spawn. */
WEFT_API int weft_spawn_copy(weft_scope *s, weft_fn fn, const void *args, size_t size);

/* Allow at most max_in_flight tasks of s to run at once (0: no limit, the default).
 * Tasks over the limit wait in the scope, not on a worker. Call it before spawning. */
WEFT_API void weft_scope_limit(weft_scope *s, unsigned max_in_flight);

/* Cancel s: tasks not yet started will not run. The scope returns err, unless an
 * earlier error was recorded; err == 0 records -ECANCELED. */
WEFT_API void weft_scope_cancel(weft_scope *s, int err);

/* Whether s has been cancelled (by weft_scope_cancel, a failed task, its deadline,
 * or the cancel of the scope it is nested in). */
WEFT_API bool weft_scope_cancelled(const weft_scope *s);

/* Deadline: timeout_ns from now, s is cancelled and returns -ETIMEDOUT, unless an
 * earlier error won; its in-flight I/O and waits return -ECANCELED, as with
 * weft_scope_cancel. timeout_ns == 0: at once. Called again, the earliest deadline
 * wins. It fires even while every worker runs CPU-bound tasks (they see the cancel
 * at their next spawn, wait, I/O call or weft_scope_cancelled). One timer thread
 * per pool serves every deadline (started on first use); a scope that finishes
 * first leaves nothing behind. A per-call timeout is a nested scope with a
 * deadline. If the deadline cannot be armed (the timer thread cannot start, or no
 * memory), s is cancelled at once with -EAGAIN or -ENOMEM: never left running
 * without its bound. NULL s: no-op.
 * Thread context: like weft_spawn (inside the scope's body or one of its tasks,
 * while the scope runs). */
WEFT_API void weft_scope_deadline(weft_scope *s, uint64_t timeout_ns);

/* Nesting: a scope opened (weft_scope_run) inside a task or the body of scope S is
 * nested in S: cancelling S (weft_scope_cancel, a failed task, its deadline)
 * cancels it too, and its nested scopes, to any depth; their waits in flight
 * return -ECANCELED, and S returns the error that cancelled it. A scope opened
 * inside an already cancelled scope does not start: weft_scope_run returns
 * -ECANCELED without calling body. The sides of a weft_join and the ranges of a
 * loop belong to the scope of the task that started them, on whichever worker
 * they run. */

/* ------------------------------------------------------------------------------
 * Data-parallel loops (grain 0 = adaptive)
 * ---------------------------------------------------------------------------- */

/* Call fn(ctx, lo, hi) over disjoint ranges covering [0, n). Ranges are split only
 * when another worker is hungry, so one worker runs close to a plain loop.
 * grain > 0: no range is longer than grain.
 * Returns 0, the first nonzero fn result (ranges not yet started are skipped), or
 * -EINVAL fn is NULL; -ECHILD; -ENOMEM. n == 0 returns 0 without calling fn.
 * Thread context: any thread. */
WEFT_API int weft_par_for(weft_pool *pool, size_t n, size_t grain,
                          int (*fn)(void *ctx, size_t lo, size_t hi), void *ctx);

/* Call fn(ctx, i, slot) once for each i in [0, n), where slot is
 * (char *)out + i * elem_size. No lock and no atomic per item.
 * Errors: -EINVAL fn NULL, elem_size 0, or out NULL with n > 0;
 *         -EOVERFLOW n * elem_size overflows; -ECHILD; -ENOMEM; or the first
 *         nonzero fn result (items not yet started are not run). */
WEFT_API int weft_par_collect(weft_pool *pool, size_t n, void *out, size_t elem_size,
                              int (*fn)(void *ctx, size_t i, void *slot), void *ctx);

#define WEFT_ORDERED 1u

/* As weft_par_collect; sink(sctx, first, count, slots) receives finished runs of
 * slots while the loop runs: with WEFT_ORDERED each call hands over the next
 * contiguous run in index order, else runs arrive as they finish. Sink calls never
 * overlap; every index is handed over exactly once when the loop succeeds. A nonzero
 * sink result cancels the loop like an item error and is returned.
 * Errors: as weft_par_collect, plus -EINVAL sink NULL or unknown flags. */
WEFT_API int weft_par_stream(weft_pool *pool, size_t n, void *out, size_t elem_size,
                             int (*fn)(void *ctx, size_t i, void *slot), void *ctx,
                             int (*sink)(void *sctx, size_t first, size_t count,
                                         const void *slots),
                             void *sctx, unsigned flags);

/* ------------------------------------------------------------------------------
 * I/O. Results as the syscalls, errors as -errno (the syscall's own: a bad fd gives
 * -EBADF, a NULL buffer -EFAULT, a missing path -ENOENT).
 * Inside a task the calling task waits and its worker runs other work: the task is
 * suspended on its worker's io_uring, or, where io_uring is unavailable or the pool
 * has WEFT_POOL_NO_URING (or WEFT_IO=blocking), the syscall runs on one of the
 * pool's blocking threads. Outside a task these are plain blocking calls.
 * Fds may be blocking or non-blocking; a task never blocks its worker either way.
 * Lengths above 0x7ffff000 bytes are cut to that, as read(2) does.
 * Cancellation: inside a task of a scope that gets cancelled, a call in flight
 * returns -ECANCELED (a call that completed first keeps its result), and a call
 * made after the cancel returns -ECANCELED without doing anything.
 * A task may resume on another worker thread after any of these calls (and after
 * weft_join, weft_scope_run and the loops): do not keep the address of a
 * thread-local variable, errno's included, across them.
 * ---------------------------------------------------------------------------- */

struct statx;

WEFT_API int     weft_open(const char *path, int flags, mode_t mode);
WEFT_API int     weft_close(int fd);
/* off == -1: use and advance the file position. */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t len, off_t off);
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len, off_t off);
WEFT_API int     weft_statx(int dirfd, const char *path, int flags, unsigned mask,
                            struct statx *st);
WEFT_API int     weft_fsync(int fd);
WEFT_API int     weft_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags);
WEFT_API int     weft_connect(int fd, const struct sockaddr *addr, socklen_t len);
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags);
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags);
/* Read a whole file into a malloc'd buffer (free() it; one spare NUL byte follows
 * the data). Errors: -EINVAL path, data or size NULL; -ENOMEM; the syscalls' -errno. */
WEFT_API int     weft_read_file(const char *path, void **data, size_t *size);
/* Sleep at least ns nanoseconds (a task: without holding its worker).
 * weft_sleep(0) is weft_yield(). Errors: -ECANCELED (a cancelled scope's task). */
WEFT_API int     weft_sleep(uint64_t ns);
/* Let other work run, then continue: the task goes behind the tasks that are ready
 * to resume, the jobs on its worker's deque and the work submitted from outside the
 * pool (weft_run, weft_scope_run, spawns from other threads), so a task that loops
 * on weft_yield never holds back anything runnable for more than one round of the
 * worker's queues. Outside a task: sched_yield().
 * Errors: -ECANCELED (a cancelled scope's task). */
WEFT_API int     weft_yield(void);

/* ------------------------------------------------------------------------------
 * Child processes and blocking calls
 * ---------------------------------------------------------------------------- */

/* waitpid(2) for one child: pid > 0, options 0 or WNOHANG. Inside a task the task
 * waits and its worker runs other work: the child's pidfd waits on the worker's
 * io_uring (on the blocking backend: in its one poller thread), so a thousand
 * children waited on cost no thread each; where pidfd_open is missing (before
 * Linux 5.3) a blocking thread waits. Outside a task it is waitpid(2) (EINTR
 * retried). Never touches SIGCHLD's disposition, never waits for -1 or a process
 * group, never reaps another child.
 * Returns the pid (0 with WNOHANG while the child runs) and stores a waitpid-style
 * status in *status (status may be NULL; use WIFEXITED, WIFSIGNALED, ...).
 * Errors: -EINVAL pid <= 0 or options other than WNOHANG; -ECHILD not a child of
 * this process, reaped elsewhere already, or SIGCHLD is SIG_IGN (the kernel reaps
 * it); -ECANCELED inside a task of a cancelled scope, or its scope was cancelled
 * while it waited: the child is left unreaped (reap it later). (Without pidfd a
 * cancelled wait returns only when the child exits, still unreaped.)
 * Thread context: any thread.
 *
 * The signal-mask trap: worker threads block asynchronous signals, and a child
 * inherits the mask of the thread that forks or spawns it. A child started from a
 * task with fork()/exec or posix_spawn() therefore starts with SIGINT, SIGTERM,
 * SIGHUP, SIGCHLD, ... blocked: it survives Ctrl-C and make's kill. Start children
 * from tasks with weft_posix_spawnp (below), or set the mask yourself (after fork,
 * sigprocmask in the child; posix_spawnattr_setsigmask). */
WEFT_API int weft_waitpid(pid_t pid, int *status, int options);

/* posix_spawnp(3), with its arguments, for programs that start children from
 * tasks: unless attr sets POSIX_SPAWN_SETSIGMASK, the child starts with the
 * signal mask of the thread that created the pool of the calling worker, not the
 * worker's (see the trap above). attr is never modified (a copy carries the mask).
 * Outside a task: posix_spawnp itself. The caller reaps the child (weft_waitpid).
 * Returns 0 and sets *pid (pid may be NULL); -EINVAL file or argv NULL; otherwise
 * posix_spawnp's error as -errno (-ENOENT no such program, -EACCES, -ENOMEM, ...).
 * Thread context: any thread. */
WEFT_API int weft_posix_spawnp(pid_t *pid, const char *file,
                               const posix_spawn_file_actions_t *fa,
                               const posix_spawnattr_t *attr, char *const argv[],
                               char *const envp[]);

/* Run fn(arg), a call that may block in the kernel (getaddrinfo, a database
 * client, a library doing its own I/O), on the pool's blocking threads while the
 * calling task waits without holding its worker; returns fn's result. The threads
 * start on demand, at least max(4, 2 x workers) of them can run at once, on either
 * I/O backend; more calls wait in a queue. They are for calls that block, not for
 * CPU work (run that as tasks), and on the blocking I/O backend they are the same
 * threads that run the I/O. fn runs with asynchronous signals blocked. Once fn
 * starts it runs to completion (cancelling the scope does not interrupt it; its
 * result is returned); a call still queued when the scope is cancelled does not run
 * and returns -ECANCELED. Outside a task: calls fn on the calling thread.
 * Errors: -EINVAL fn is NULL; -ECANCELED (a cancelled scope's task; fn not called).
 * Thread context: any thread. */
WEFT_API int weft_run_blocking(weft_fn fn, void *arg);

/* ------------------------------------------------------------------------------
 * Events and channels: waits that suspend the task, not the worker
 *
 * Inside a task a wait below suspends the task and its worker runs other work (so
 * 100 tasks may wait on one channel on a 1-worker pool and a 101st task that feeds
 * it still runs); outside any task it blocks the calling thread. Wakers may be on
 * any thread. Built on lib/latch.c's protocol (lib/event.c, lib/chan.c).
 * Cancellation: inside a task of a cancelled scope a wait below returns -ECANCELED
 * without doing anything; a wait in flight when the task's scope is cancelled
 * (weft_scope_cancel, a failed task) wakes and returns -ECANCELED. A wait that
 * completed first keeps its result. A task may resume on another worker thread
 * after any of these calls (see "I/O" above on thread-locals).
 * ---------------------------------------------------------------------------- */

#if !defined(__cplusplus) && !defined(__STDC_NO_ATOMICS__) && defined(__STDC_VERSION__) && \
    __STDC_VERSION__ >= 201112L
#define WEFT__ATOMIC(T) _Atomic(T)
#else
#define WEFT__ATOMIC(T) T /* the same layout; only the library touches the fields */
#endif

struct weft__waiter;

/* A one-shot flag tasks can wait for, e.g. "module A is parsed". It may be embedded
 * in any struct; all zero (static storage, memset, or WEFT_EVENT_INIT) is an unset
 * event with no waiters, and no destroy call is needed (none exists). The fields
 * are private to the library: never read or write them. */
typedef struct weft_event {
    WEFT__ATOMIC(unsigned) word_;     /* private: the set and lock bits */
    struct weft__waiter *waiters_;    /* private */
} weft_event;

#define WEFT_EVENT_INIT { 0, 0 }

/* Set e and wake every task and thread waiting on it. Setting a set event is a
 * no-op. Everything done before the set is visible to a waiter after its wait
 * returns 0. The set is the call's last access to e: a waiter may free the memory
 * holding e as soon as its wait returns (or weft_event_is_set says true), even while
 * this call still runs. NULL is a no-op. Thread context: any thread. */
WEFT_API void weft_event_set(weft_event *e);

/* Wait until e is set (at once if it is). Thread context: any thread; inside a task
 * the task suspends, outside one the thread sleeps.
 * Returns 0 once e is set, or:
 *   -EINVAL     e is NULL;
 *   -ECANCELED  the calling task's scope is (or, while it waits, gets) cancelled. */
WEFT_API int  weft_event_wait(weft_event *e);

/* Whether e is set (false for NULL). A true result orders as a wait that returned
 * 0: the setter's work before the set is visible. Thread context: any thread. */
WEFT_API bool weft_event_is_set(const weft_event *e);

/* Make e unset again, for reuse. Only while nobody waits on e (a waiter must have
 * returned from weft_event_wait first); NULL is a no-op. Thread context: any
 * thread. */
WEFT_API void weft_event_reset(weft_event *e);

/* A bounded multi-producer multi-consumer FIFO queue of fixed-size elements (copied
 * in and out by value), for pipelines with bounded memory: walker -> hasher -> writer.
 * Elements come out in the order they went in (so each producer's elements stay in
 * its order); waiting senders are served first-come first-served, and so are
 * waiting receivers. Opaque. */
typedef struct weft_chan weft_chan;

/* Create a channel holding at most capacity elements of elem_size bytes.
 * Thread context: any thread.
 * Returns 0 and sets *c, or:
 *   -EINVAL     c is NULL, capacity is 0 or elem_size is 0;
 *   -EOVERFLOW  capacity x elem_size does not fit in a size_t;
 *   -ENOMEM     out of memory. */
WEFT_API int  weft_chan_create(weft_chan **c, size_t capacity, size_t elem_size);

/* Free c (elements still inside are dropped). Only once nobody waits on it and no
 * call on it can start any more; NULL is a no-op. Thread context: any thread. */
WEFT_API void weft_chan_destroy(weft_chan *c);

/* Copy elem_size bytes from elem into c; while c is full, wait (inside a task the
 * task suspends, outside one the thread sleeps) until a receiver makes room.
 * Thread context: any thread.
 * Returns 0 once the element is in the channel, or (and then it is not):
 *   -EINVAL     c or elem is NULL;
 *   -EPIPE      c is closed, or was closed while this send waited;
 *   -ECANCELED  the calling task's scope is (or, while it waits, gets) cancelled. */
WEFT_API int  weft_chan_send(weft_chan *c, const void *elem);

/* Take the oldest element of c into elem (elem_size bytes); while c is empty, wait
 * (inside a task the task suspends, outside one the thread sleeps) until a sender
 * puts one in. After weft_chan_close, the elements left are still handed out; then
 * -EPIPE. Thread context: any thread.
 * Returns 0 and fills elem, or (and then nothing was taken from c):
 *   -EINVAL     c or elem is NULL;
 *   -EPIPE      c is closed and empty;
 *   -ECANCELED  the calling task's scope is (or, while it waits, gets) cancelled. */
WEFT_API int  weft_chan_recv(weft_chan *c, void *elem);

/* Close c: later sends return -EPIPE, senders waiting now wake with -EPIPE (their
 * elements not sent), receivers get what is left and then -EPIPE (receivers
 * waiting now on an empty channel wake with -EPIPE). Closing a closed channel is a
 * no-op; NULL is a no-op. Thread context: any thread. */
WEFT_API void weft_chan_close(weft_chan *c);

/* ------------------------------------------------------------------------------
 * Observability
 * ---------------------------------------------------------------------------- */

typedef struct weft_stats {
    uint64_t spawns;      /* weft_spawn/weft_spawn_copy calls that queued a task */
    uint64_t steals;      /* jobs taken from another worker's deque */
    uint64_t steal_fails; /* steal attempts on a non-empty-looking deque that lost a race */
    uint64_t parks;       /* times a worker went to sleep */
    uint64_t wakeups;     /* times a sleeping worker was woken */
    uint64_t io_ops;      /* I/O calls made from inside tasks */
    /* make's jobserver (WEFT_POOL_NO_JOBSERVER), 0 for a pool that does not use one.
     * The tokens belong to the process, shared by all its pools using the jobserver,
     * so every such pool reports the same figures: */
    uint64_t jobserver_tokens;      /* bytes read from make and not yet written back
                                       (held by awake workers or kept for reuse);
                                       the implicit token is not counted */
    uint64_t jobserver_tokens_peak; /* the most held at once since the first of the
                                       process's current pools attached */
    /* Added in 0.2. Times in nanoseconds since the workers started. */
    uint64_t busy_ns;        /* running work: neither looking for work nor parked
                                (the first look of each search counts as busy: the
                                clock is read only once a search has failed once; a
                                wait for a stolen job counts as looking) */
    uint64_t idle_ns;        /* parked (asleep) */
    /* Spawn-to-start latency of spawned tasks: median and 99th percentile
     * (nearest rank) over the last 256 samples of each worker; a worker samples one
     * spawn in 64 (every spawn while tracing). 0: no samples yet. Spawns from
     * outside threads are not sampled. */
    uint64_t latency_p50_ns;
    uint64_t latency_p99_ns;
} weft_stats;

/* Sum of the pool's counters and times (latency over all workers' samples). NULL:
 * the calling worker's pool, else the default pool if it exists, else all zero.
 * Thread context: any thread (the figures are a racy snapshot while the pool runs). */
WEFT_API void weft_pool_stats(const weft_pool *pool, weft_stats *out);

/* The figures of worker index alone: what it did (its spawns, steals, parks, ...,
 * I/O calls), its busy and idle time, and the latency of the tasks it started.
 * Spawns from outside threads are in weft_pool_stats only. pool NULL: as there.
 * Thread context: any thread (a racy snapshot while the pool runs).
 * Errors: -EINVAL out is NULL, or index >= the pool's threads (also: pool NULL
 * outside any worker with no default pool). */
WEFT_API int weft_pool_stats_worker(const weft_pool *pool, unsigned index, weft_stats *out);

/* Traces. With WEFT_TRACE=path (or weft_pool_options.trace_path) a pool writes a
 * Chrome trace-event JSON file, {"traceEvents":[...],"displayTimeUnit":"ns"}, which
 * Perfetto (ui.perfetto.dev, trace_processor) and chrome://tracing open, and
 * tools/weft-trace summarises. It is written when the pool is destroyed (the default
 * pool: at exit, unless exit is called from a task); one file per pool: path for the
 * first pool of the process traced there, then path.2, path.3, ...
 * pid is the process id, tid the worker index ("thread_name" events: weft-N).
 *  - "X" slices (cat "task"), ts/dur in microseconds: one per run of a task on the
 *    worker that ran it (a task that suspends has one slice per run); they never
 *    overlap on a worker: a job run inside a wait, a park or a suspension ends the
 *    running slice and a new one continues it. args.task: the task's id (the same
 *    for every run of one task); args.stolen_from: the worker it was stolen from.
 *    Names: "task" (spawned), "job" (weft_join's and weft_run's), "loop" (a piece
 *    of a loop), or weft_trace_label's.
 *  - "X" slices named "park": the worker slept.
 *  - Async "b"/"e" pairs (cat "wait", named read, open, sleep, yield, wait, ...): a
 *    task suspended; args.resumed_on says which worker resumed it.
 *  - Flows "s"/"f" (cat "steal"): from a spawn to the start of the task on the
 *    worker that stole it.
 *  - Counters "ready weft-N": a worker's queue of resumed tasks.
 * Recording stops past WEFT_TRACE_MAX_MB MiB (default 256) of JSON; the file then
 * ends with a metadata event "weft_trace_truncated" (args: max_mb, dropped_events).
 * Tracing costs a clock read per slice boundary and per spawn; off, it costs a
 * branch. */

/* Name the calling task's slices (this run and the next ones of the task) in the
 * trace. name is kept by pointer: a literal, or a string that outlives the pool.
 * No-op when the pool is not traced or outside a task. Inside weft_join's a or b
 * (when not stolen) it names the task that called weft_join.
 * Thread context: any thread. */
WEFT_API void weft_trace_label(const char *name);

/* ------------------------------------------------------------------------------
 * Fork-join
 * ---------------------------------------------------------------------------- */

/* Run a(arg_a) and b(arg_b), possibly in parallel; return a's error, else b's.
 * Inside a task: b is pushed on the worker's deque, a runs at once, then b runs
 * inline unless another worker took it meanwhile. The job lives on the caller's
 * stack: no allocation, no lock, no syscall (only when the deque is full does it
 * grow; with no memory for that, a and b run one after the other on the caller).
 * Outside any task: runs on the default pool (sequentially if it cannot be created).
 * Errors: -EINVAL a or b is NULL (neither is called); otherwise a's or b's result. */
#if defined(__cplusplus) || defined(WEFT_NO_INLINE) || defined(__STDC_NO_ATOMICS__) || \
    !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
WEFT_API int weft_join(weft_fn a, void *arg_a, weft_fn b, void *arg_b);
#else

/*
 * Below: the inline fast path of weft_join. Everything named weft__ is private to
 * the library: layouts may change with any release (the soname says when).
 * It lives here, the way liburing inlines its SQE helpers, so that the compiler can
 * call a and b directly and keep the push/pop in registers: fork-join then costs a
 * few stores and loads more than a plain call. See lib/deque.c for the protocol.
 */
#include <stdatomic.h>

struct weft__worker;

/* A completion latch: one word, the state in its low bits and the waiter above
 * them (lib/latch.c has the protocol). Zero is pending with nobody waiting. */
struct weft__latch {
    _Atomic(uintptr_t) word;
};

/* A unit of work as the deque holds it. Join jobs live on the joiner's stack; a
 * deque slot holding a spawned frame (which has a scope) has its low bit set. */
struct weft__job {
    weft_fn fn;
    void *arg;
    struct weft__latch latch;
    int result;
    _Atomic(int64_t) idx;       /* join jobs: the deque index it was pushed at;
                                   WEFT__IDX_TAKEN once someone else popped it */
    struct weft__job *next;     /* injector and free lists */
    struct weft_scope *scope;   /* frames: their scope; join jobs: the scope of the
                                   task that forked them (who else runs b runs it in
                                   that scope, so cancellation reaches b) */
};

/* A split work-stealing deque (lib/deque.c): jobs in [top, split) may be stolen,
 * jobs in [split, bottom) are the owner's alone. The owner's cache line, then the
 * thieves'. */
struct weft__deque {
    _Atomic(int64_t) bottom;             /* owner writes; others read it as a hint */
    _Atomic(int64_t) split;              /* owner writes; thieves read */
    int64_t limit;                       /* owner-private: pushes below it have room */
    _Atomic(struct weft__job *) *slots;  /* owner-private copy of buf->slots */
    int64_t mask;                        /* owner-private copy of buf->mask */
    _Atomic(uint32_t) poke;              /* set by a parking worker: check for sleepers */
    uint32_t fence_full;                 /* 1: no membarrier: pushes fence (park.c) */
    struct weft_scope *scope;            /* owner-private: the running task's scope
                                            (lib/scope.c); join jobs record it */
    char pad_[64 - 7 * 8];
    _Alignas(64) _Atomic(int64_t) top;   /* thieves CAS; owner CASes for the last item */
    _Atomic(uint32_t) claimers;          /* thieves taking a batch (lib/deque.c) */
    char pad2_[64 - 12];
    _Atomic(void *) buf;                 /* current array (struct in deque.h) */
};

extern WEFT_API __thread struct weft__worker *weft__self
    __attribute__((tls_model("initial-exec")));

WEFT_API int  weft__join_outside(weft_fn a, void *arg_a, weft_fn b, void *arg_b);
WEFT_API int  weft__join_finish(struct weft__worker *w, struct weft__job *job, int ra);
WEFT_API int  weft__deque_reserve(struct weft__worker *w);
WEFT_API void weft__push_poked(struct weft__worker *w);
WEFT_API struct weft__worker *weft__self_get(void);

/* The worker after a call that may have suspended the task and resumed it on another
 * thread. x86-64 reads a thread-local through the %fs segment on every access; other
 * CPUs compute its address from a thread register that the compiler may keep across
 * the call (GCC bug 26461), so there it is read out of line.
 * On x86-64 the read is written out (the initial-exec sequence the compiler emits
 * for weft__self, which the linker relaxes the same way in a static link): the
 * compiler otherwise keeps the variable's offset, loaded before the call, in a
 * callee-saved register across it, and every task that joins saves and restores
 * one more register on every call, leaves included (fib(35) in the struct form,
 * 1 worker: 104 -> 88 ms with the bottom re-read below; knapsack -15 %). Volatile,
 * and a memory clobber, so that it stays after the call. */
#if defined(__x86_64__) && defined(__LP64__) && defined(__GNUC__) && !defined(__TINYC__)
static inline struct weft__worker *weft__self_again(void)
{
    struct weft__worker *w;
    __asm__ __volatile__("movq weft__self@gottpoff(%%rip), %0\n\t"
                         "movq %%fs:(%0), %0"
                         : "=r"(w)
                         :
                         : "memory");
    return w;
}
#define WEFT__SELF_AGAIN() weft__self_again()
/* The address of a join job after the call, for the slow path: taken from the
 * job's memory operand there, so that the compiler does not keep the address it
 * stored in the deque slot in a callee-saved register across the call (fib(35), 1
 * worker: -10 %). Not volatile: the operand depends on the job's memory, which the
 * call may change, so it stays after the call. */
#define WEFT__ADDR_AGAIN(p, obj) __asm__("leaq %1, %0" : "=r"(p) : "m"(obj))
#elif defined(__x86_64__)
#define WEFT__SELF_AGAIN() weft__self
#define WEFT__ADDR_AGAIN(p, obj) ((p) = &(obj))
#else
#define WEFT__SELF_AGAIN() weft__self_get()
#define WEFT__ADDR_AGAIN(p, obj) ((p) = &(obj))
#endif

/* A join job's idx once a worker other than its joiner's frame took it to run
 * (lib/worker.c): no deque's bottom is ever idx + 1 then. */
#define WEFT__IDX_TAKEN INT64_MIN

/* The deque is the first member of struct weft__worker. */
#define WEFT__DQ(w) ((struct weft__deque *)(void *)(w))

/* After the owner's push onto its deque or ready queue (a join's job here, a
 * spawned frame, a task readied on its own worker): look at the poke. StoreLoad
 * between the push's stores and the poke load, on the parker's side only: the
 * compiler-only fence pairs with the membarrier() a parking worker runs after
 * poking every deque, before its last look (lib/park.c). A poke seen means a worker
 * went to sleep with nobody left searching: weft__push_poked wakes one if still so. */
static inline void weft__after_push(struct weft__worker *w)
{
    atomic_signal_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(&WEFT__DQ(w)->poke, memory_order_relaxed) != 0,
                         0))
        weft__push_poked(w);
}

static inline int weft_join(weft_fn a, void *arg_a, weft_fn b, void *arg_b)
{
    struct weft__worker *w = weft__self;
    if (__builtin_expect(w == NULL || a == NULL || b == NULL, 0))
        return weft__join_outside(a, arg_a, b, arg_b);
    struct weft__deque *dq = WEFT__DQ(w);

    int64_t i = atomic_load_explicit(&dq->bottom, memory_order_relaxed); /* owner's own */
    if (__builtin_expect(i >= dq->limit, 0)) {
        if (weft__deque_reserve(w) != 0) {
            int ra = a(arg_a), rb = b(arg_b); /* no memory to grow the deque: in order */
            return ra ? ra : rb;
        }
        /* Read again rather than kept across the call: a value live across a call
         * costs the caller a callee-saved register, saved and restored on every
         * call of the task, leaves included. */
        i = atomic_load_explicit(&dq->bottom, memory_order_relaxed);
    }
    struct weft__job job;
    job.fn = b;
    job.arg = arg_b;
    job.scope = dq->scope; /* same line as bottom: no extra miss */
    atomic_store_explicit(&job.idx, i, memory_order_relaxed);
    atomic_store_explicit(&job.latch.word, 0, memory_order_relaxed);
    atomic_store_explicit(&dq->slots[i & dq->mask], &job, memory_order_relaxed);
    /* The job goes in the owner's private part: no barrier, thieves cannot see it.
     * Relaxed: bottom is only a hint to other threads. */
    atomic_store_explicit(&dq->bottom, i + 1, memory_order_relaxed);
    int64_t s = atomic_load_explicit(&dq->split, memory_order_relaxed); /* owner's own */
    /* Nothing left to steal (thieves took all published jobs, or none were): publish
     * everything private, this job included, so that the oldest job is always
     * stealable. Relaxed load of top: a stale value only delays the publication to
     * the next push or to the parking protocol's poke. */
    if (__builtin_expect(atomic_load_explicit(&dq->top, memory_order_relaxed) == s, 0))
        /* Release: publishes the slots and the jobs' fields up to i; pairs with the
         * acquire load of split in weft__deque_steal(). */
        atomic_store_explicit(&dq->split, i + 1, memory_order_release);
    weft__after_push(w); /* the bottom/split stores vs the poke load */

    int ra = a(arg_a);

    /* Pop our job. Everything is re-read from memory rather than kept in registers
     * across the call: cheaper than saving them, and it re-reads the worker (a task
     * that suspended may have resumed on another worker). bottom == idx + 1 means
     * the job is still on top, with no extra check: every worker's deque counts in
     * its own range of indices (lib/pool.c), so another worker's bottom never
     * matches; and whoever else pops a join job (another fiber of this worker, a
     * wait) marks it taken first (lib/worker.c). At or above split it is private:
     * no thief can have it, so the pop is two plain stores' worth of work.
     * Otherwise the slow path sorts it out (lib/join.c). */
    w = WEFT__SELF_AGAIN();
    dq = WEFT__DQ(w);
    i = atomic_load_explicit(&job.idx, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&dq->bottom, memory_order_relaxed) == i + 1 &&
                         atomic_load_explicit(&dq->split, memory_order_relaxed) <= i, 1)) {
        atomic_store_explicit(&dq->bottom, i, memory_order_relaxed);
        int rb = b(job.arg);
        return ra ? ra : rb;
    }
    struct weft__job *jp;
    WEFT__ADDR_AGAIN(jp, job);
    return weft__join_finish(w, jp, ra);
}
#endif /* inline weft_join */

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
