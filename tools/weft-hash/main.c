/* SPDX-License-Identifier: MIT */
/*
 * weft-hash: hash every regular file under the given paths with XXH3-64 and print
 * the listing `xxhsum -H3` prints, sorted by path, in parallel on a weft pool.
 * Options, the pool, the four phases (weft-hash.h), the output, the progress line
 * and --summary live here.
 */
#define _GNU_SOURCE
#include "weft-hash.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <weft.h>

static weft_pool *g_pool;

static const char usage_text[] =
"Usage: weft-hash [OPTION]... PATH...\n"
"       weft-hash [OPTION]... --check FILE\n"
"Hash every regular file under each PATH with XXH3-64 and print one line per file,\n"
"  XXH3 (PATH/relative/name) = 0123456789abcdef\n"
"the format of `xxhsum -H3`, sorted by path (byte order) over all PATHs, each path\n"
"once. The output is the same whatever the number of threads.\n"
"\n"
"A PATH that is a regular file is printed as given; a directory is walked, and its\n"
"files are printed as PATH/relative/name, as `find PATH -type f` prints them.\n"
"Symbolic links given as PATH are followed; inside the trees they are skipped\n"
"unless -L. FIFOs, sockets and devices are skipped.\n"
"\n"
"Options:\n"
"  -j, --threads N  worker threads (default: $WEFT_NUM_THREADS, else the CPUs this\n"
"                   process may use); 0 means the default\n"
"  -L, --follow     follow symbolic links inside the trees; a dangling link, a link\n"
"                   loop and a link to an ancestor directory are reported as errors\n"
"      --serial     the same work on one thread with plain open/read and no weft\n"
"                   pool: the baseline for speedups (ignores --threads)\n"
"      --summary    after the run, print on stderr: files, bytes, elapsed time,\n"
"                   throughput, the time of each phase (start, walk, sort, hash,\n"
"                   print), the pool's counters, busy and parked time and\n"
"                   spawn-to-start latency (in all and per worker) and one\n"
"                   machine-readable RESULT line\n"
"  -c, --check FILE read a listing made by weft-hash or `xxhsum -H3` (FILE '-' is\n"
"                   stdin), hash the files it names and print PATH: OK, PATH: FAILED\n"
"                   (hash differs) or PATH: FAILED open or read (missing or\n"
"                   unreadable; the reason goes to stderr)\n"
"  -q, --quiet      with --check: do not print the OK lines\n"
"  -h, --help       print this help and exit\n"
"  -V, --version    print the version and exit\n"
"\n"
"Errors (unreadable files, directories that cannot be opened, with -L dangling\n"
"links and loops) are printed on stderr with the path and the reason; the run goes\n"
"on. When stderr is a terminal, a progress line shows files and bytes done, files/s,\n"
"MiB/s and an estimate of the time left.\n"
"\n"
"Exit status: 0 all files hashed (or all checked OK); 1 some file could not be\n"
"found, read or hashed, or --check found a mismatch or a malformed line; 2 bad\n"
"usage or a fatal error (out of memory, cannot write the output).\n"
"\n"
"Environment: WEFT_NUM_THREADS, WEFT_PIN, WEFT_IO, WEFT_TRACE (see weft(7) and the\n"
"README).\n";

__attribute__((format(printf, 1, 2), noreturn))
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, WH_NAME ": ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" WH_NAME " --help' for more information.\n");
    exit(WH_FATAL);
}

uint64_t wh_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *wh_strerror(int err)
{
    if (err == WH_ENOTREG)
        return "not a regular file";
    return strerror(-err);
}

void wh_err(const char *path, const char *what, int err)
{
    fflush(stdout);  /* keep the listing and the messages in order on a terminal */
    fprintf(stderr, WH_NAME ": %s: %s%s%s\n", path, what, err ? ": " : "",
            err ? wh_strerror(err) : "");
}

void wh_put_line(FILE *f, const char *path, uint64_t hash)
{
    static const char hex[] = "0123456789abcdef";
    char h[17];
    for (int i = 15; i >= 0; i--, hash >>= 4)
        h[i] = hex[hash & 15];
    h[16] = '\n';
    fputs_unlocked("XXH3 (", f);
    fputs_unlocked(path, f);
    fputs_unlocked(") = ", f);
    fwrite_unlocked(h, 1, sizeof(h), f);
}

/* ------------------------------------------------------------------------------
 * The progress line: a thread that redraws it every 200 ms while a run goes on.
 * ---------------------------------------------------------------------------- */

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool on, stop;
    const char *phase;          /* guarded by lock */
    struct wh_progress *pg;
    uint64_t start_ns;
} prog = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void progress_draw(const char *phase)
{
    struct wh_progress *pg = prog.pg;
    uint64_t found = atomic_load_explicit(&pg->found, memory_order_relaxed);
    uint64_t done = atomic_load_explicit(&pg->done, memory_order_relaxed);
    uint64_t bytes = atomic_load_explicit(&pg->bytes, memory_order_relaxed);
    double s = (double)(wh_now_ns() - prog.start_ns) / 1e9;
    double mib = (double)bytes / 1048576.0;
    if (strcmp(phase, "walk") == 0)
        fprintf(stderr, "\r\033[K" WH_NAME ": walking: %llu files found",
                (unsigned long long)found);
    else {
        /* The ETA from the rate of files so far: the walk does not stat, so the
         * bytes still to come are unknown. */
        double fps = s > 0 ? (double)done / s : 0.0;
        char eta[32] = "ETA --";
        if (fps > 0 && pg->total >= done) {
            double left = (double)(pg->total - done) / fps;
            if (left < 360000)
                snprintf(eta, sizeof(eta), "ETA %d:%02d", (int)left / 60, (int)left % 60);
        }
        fprintf(stderr,
                "\r\033[K" WH_NAME ": %s: %llu/%llu files, %.0f files/s, %.1f MiB, "
                "%.1f MiB/s, %s",
                phase, (unsigned long long)done, (unsigned long long)pg->total, fps, mib,
                s > 0 ? mib / s : 0.0, eta);
    }
}

static void *progress_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&prog.lock);
    while (!prog.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&prog.cond, &prog.lock, &ts);
        if (!prog.stop && prog.phase)
            progress_draw(prog.phase);
    }
    pthread_mutex_unlock(&prog.lock);
    return NULL;
}

void wh_progress_start(struct wh_progress *pg, bool on)
{
    prog.pg = pg;
    prog.start_ns = wh_now_ns();
    prog.on = on && pthread_create(&prog.thread, NULL, progress_main, NULL) == 0;
}

void wh_progress_phase(const char *phase)
{
    if (!prog.on)
        return;
    pthread_mutex_lock(&prog.lock);
    prog.phase = phase;
    if (strcmp(phase, "walk") != 0)
        prog.start_ns = wh_now_ns();  /* the rate counts the hashing only */
    pthread_mutex_unlock(&prog.lock);
}

void wh_progress_stop(void)
{
    if (!prog.on)
        return;
    pthread_mutex_lock(&prog.lock);
    prog.stop = true;
    pthread_cond_signal(&prog.cond);
    pthread_mutex_unlock(&prog.lock);
    pthread_join(prog.thread, NULL);
    fputs("\r\033[K", stderr);
    prog.on = false;
}

/* ------------------------------------------------------------------------------
 * Running on the pool
 * ---------------------------------------------------------------------------- */

int wh_run(bool serial, int (*fn)(void *), void *arg)
{
    return serial ? fn(arg) : weft_run(g_pool, fn, arg);
}

unsigned wh_workers(void)
{
    return g_pool ? weft_pool_threads(g_pool) : 1;
}

struct run {
    const struct wh_opts *o;
    char **paths;
    size_t npaths;
    struct wh_progress *pg;   /* NULL: no progress line */
    struct wh_list list;
    struct wh_result *res;
    uint64_t t_walk, t_sort, t_hash;
};

/* Phases 1-3, on a worker of the pool (or on this thread with --serial). */
static int run_task(void *arg)
{
    struct run *r = arg;
    uint64_t t0 = wh_now_ns();
    wh_progress_phase("walk");
    int err = wh_walk(r->o, r->paths, r->npaths, r->pg, &r->list);
    uint64_t t1 = wh_now_ns();
    r->t_walk = t1 - t0;
    if (err)
        return err;
    err = wh_sort(&r->list, r->o->serial);
    uint64_t t2 = wh_now_ns();
    r->t_sort = t2 - t1;
    if (err)
        return err;
    r->res = malloc((r->list.n ? r->list.n : 1) * sizeof(*r->res));
    if (!r->res)
        return -ENOMEM;
    if (r->pg)
        r->pg->total = r->list.n;
    wh_progress_phase("hash");
    err = wh_hash_all(&r->list, r->res, r->o->serial, r->pg);
    r->t_hash = wh_now_ns() - t2;
    return err;
}

static const char *what_text(uint8_t what)
{
    switch (what) {
    case WH_E_ACCESS:  return "cannot access";
    case WH_E_OPENDIR: return "cannot open directory";
    case WH_E_READDIR: return "cannot read directory";
    case WH_E_LINK:    return "cannot follow symbolic link";
    case WH_E_FSLOOP:  return "not followed: symbolic link to an ancestor directory "
                              "(file system loop)";
    case WH_E_TYPE:    return "not a regular file or directory";
    default:           return "cannot read";
    }
}

static int hash_paths(const struct wh_opts *o, char **paths, size_t npaths, uint64_t t_start)
{
    struct wh_progress pg = {0};
    struct run r = {.o = o, .paths = paths, .npaths = npaths, .pg = o->progress ? &pg : NULL};
    wh_progress_start(&pg, o->progress);
    uint64_t t0 = wh_now_ns();
    int err = wh_run(o->serial, run_task, &r);
    wh_progress_stop();
    if (err) {
        fprintf(stderr, WH_NAME ": %s\n", wh_strerror(err));
        wh_list_free(&r.list);
        free(r.res);
        return WH_FATAL;
    }

    /* Phase 4: print, in path order. */
    uint64_t t3 = wh_now_ns();
    uint64_t files = 0, bytes = 0, errors = 0;
    for (size_t i = 0; i < r.list.n; i++) {
        const struct wh_entry *e = &r.list.v[i];
        const struct wh_result *res = &r.res[i];
        if (e->what != WH_FILE || res->err) {
            wh_err(e->path, what_text(e->what), e->what != WH_FILE ? e->err : res->err);
            errors++;
        } else {
            wh_put_line(stdout, e->path, res->hash);
            files++;
            bytes += res->bytes;
        }
    }
    int status = errors ? WH_FAILED : WH_OK;
    if (errors)
        fprintf(stderr, WH_NAME ": WARNING: %llu path%s could not be hashed\n",
                (unsigned long long)errors, errors == 1 ? "" : "s");
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, WH_NAME ": cannot write the output: %s\n", strerror(errno));
        status = WH_FATAL;
    }
    uint64_t t4 = wh_now_ns();

    if (o->summary) {
        double el = (double)(t4 - t_start) / 1e9;
        double mib = (double)bytes / 1048576.0;
        unsigned workers = wh_workers();
        fprintf(stderr,
                WH_NAME ": %llu files, %.1f MiB in %.3f s: %.1f MiB/s, %llu errors "
                "(%s, %u worker%s)\n",
                (unsigned long long)files, mib, el, el > 0 ? mib / el : 0.0,
                (unsigned long long)errors, o->serial ? "serial" : "weft", workers,
                workers == 1 ? "" : "s");
        fprintf(stderr,
                WH_NAME ": start %.3f s, walk %.3f s, sort %.3f s, hash %.3f s, "
                "print %.3f s\n",
                (double)(t0 - t_start) / 1e9, (double)r.t_walk / 1e9,
                (double)r.t_sort / 1e9, (double)r.t_hash / 1e9, (double)(t4 - t3) / 1e9);
        if (g_pool) {
            weft_stats st;
            weft_pool_stats(g_pool, &st);
            fprintf(stderr,
                    WH_NAME ": pool: %llu spawns, %llu steals, %llu failed steals, "
                    "%llu parks, %llu wake-ups, %llu I/O calls\n",
                    (unsigned long long)st.spawns, (unsigned long long)st.steals,
                    (unsigned long long)st.steal_fails, (unsigned long long)st.parks,
                    (unsigned long long)st.wakeups, (unsigned long long)st.io_ops);
            fprintf(stderr,
                    WH_NAME ": pool: busy %.3f s, parked %.3f s; spawn-to-start latency "
                    "p50 %.1f us, p99 %.1f us\n",
                    (double)st.busy_ns / 1e9, (double)st.idle_ns / 1e9,
                    (double)st.latency_p50_ns / 1e3, (double)st.latency_p99_ns / 1e3);
            /* Under make -jN: the tokens this run took from make's jobserver beside
             * its implicit one (weft runs at most 1 + tokens workers at once). */
            fprintf(stderr, WH_NAME ": jobserver tokens held at most %llu\n",
                    (unsigned long long)st.jobserver_tokens_peak);
            for (unsigned i = 0; i < workers; i++) {
                weft_stats ws;
                if (weft_pool_stats_worker(g_pool, i, &ws) != 0)
                    break;
                fprintf(stderr,
                        WH_NAME ": weft-%u: busy %.3f s, parked %.3f s, %llu spawns, "
                        "%llu steals, %llu parks, %llu I/O calls, latency p50 %.1f us, "
                        "p99 %.1f us\n",
                        i, (double)ws.busy_ns / 1e9, (double)ws.idle_ns / 1e9,
                        (unsigned long long)ws.spawns, (unsigned long long)ws.steals,
                        (unsigned long long)ws.parks, (unsigned long long)ws.io_ops,
                        (double)ws.latency_p50_ns / 1e3, (double)ws.latency_p99_ns / 1e3);
            }
        }
        fprintf(stderr,
                "RESULT weft-hash mode=%s workers=%u files=%llu bytes=%llu errors=%llu "
                "elapsed_ns=%llu start_ns=%llu walk_ns=%llu sort_ns=%llu hash_ns=%llu "
                "print_ns=%llu\n",
                o->serial ? "serial" : "weft", workers, (unsigned long long)files,
                (unsigned long long)bytes, (unsigned long long)errors,
                (unsigned long long)(t4 - t_start), (unsigned long long)(t0 - t_start),
                (unsigned long long)r.t_walk, (unsigned long long)r.t_sort,
                (unsigned long long)r.t_hash, (unsigned long long)(t4 - t3));
    }
    wh_list_free(&r.list);
    free(r.res);
    return status;
}

int main(int argc, char **argv)
{
    uint64_t t_start = wh_now_ns();
    struct wh_opts o = {0};
    enum { OPT_SERIAL = 256, OPT_SUMMARY };
    static const struct option longs[] = {
        {"threads", required_argument, NULL, 'j'},
        {"follow", no_argument, NULL, 'L'},
        {"serial", no_argument, NULL, OPT_SERIAL},
        {"summary", no_argument, NULL, OPT_SUMMARY},
        {"check", required_argument, NULL, 'c'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:j:Lc:qhV", longs, NULL)) != -1) {
        switch (c) {
        case 'j': {
            char *end;
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-' || v > WEFT_MAX_THREADS)
                usage_error("--threads: not a number from 0 to 1024: '%s'", optarg);
            o.threads = (unsigned)v;
            break;
        }
        case 'L': o.follow = true; break;
        case OPT_SERIAL: o.serial = true; break;
        case OPT_SUMMARY: o.summary = true; break;
        case 'c': o.check = optarg; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage_text, stdout); return WH_OK;
        case 'V':
            printf(WH_NAME " " WH_VERSION " (weft %s, XXH3-64 from libxxhash)\n",
                   weft_version()); /* the library it runs with */
            return WH_OK;
        case ':':
            usage_error("option requires an argument: '%s'", argv[optind - 1]);
        default:
            usage_error("unknown option: '%s'", argv[optind - 1]);
        }
    }
    if (o.check && optind < argc)
        usage_error("--check takes a listing, not PATHs: '%s'", argv[optind]);
    if (!o.check && optind >= argc)
        usage_error("%s", "no PATH given");
    o.progress = isatty(STDERR_FILENO);

    static char outbuf[1 << 20];
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    /* glibc grows a thread's malloc arena (the workers') one mprotect per needed
     * page, with no padding: the walk's ~1 MiB of paths cost weft-hash -j1 over
     * /usr/include 300 mprotects, where --serial's main arena grew by brk, padded
     * 128 KiB at a time. A larger top pad maps a new arena's first 8 MiB at once
     * (and pads the main arena's brk the same way), for both modes: -j1 13
     * mprotects, --serial 3 brks instead of 15, and a quarter fewer page faults in
     * each (glibc 2.36). Only address space: pages are touched as before. */
    mallopt(M_TOP_PAD, 8 << 20);
    if (!o.serial) {
        weft_pool_options po = {.threads = o.threads};
        int err = weft_pool_create(&g_pool, &po);
        if (err) {
            fprintf(stderr, WH_NAME ": cannot start the worker pool: %s\n", strerror(-err));
            return WH_FATAL;
        }
    }
    int status = o.check ? wh_check(&o)
                         : hash_paths(&o, argv + optind, (size_t)(argc - optind), t_start);
    weft_pool_destroy(g_pool);
    return status;
}
