/* SPDX-License-Identifier: MIT */
/*
 * --check FILE: verify a listing made by weft-hash or `xxhsum -H3`.
 *
 * A record is "XXH3 (" PATH ") = " 16 hex digits, at the end of a line. Neither tool
 * escapes anything in PATH (xxhsum 0.8.1 prints names with newlines as they are, and
 * cannot read them back), so a record whose first line does not end in ") = HASH"
 * continues on the next lines, as long as they do not start a record themselves;
 * the first line that ends in ") = HASH" closes it. A name that itself contains
 * ") = " + 16 hex digits + newline is therefore misread; nothing else is.
 *
 * The listed files are hashed as items of one weft_par_collect (links followed, as
 * xxhsum does), then reported in listing order:
 *   stdout  PATH: OK | PATH: FAILED | PATH: FAILED open or read
 *   stderr  the reason a file could not be read, malformed lines, and the counts.
 */
#define _GNU_SOURCE
#include "weft-hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft.h>

struct rec {
    const char *path;   /* NUL-terminated inside the listing's buffer */
    uint64_t want;
    size_t line;        /* where the record starts, from 1 */
};

struct check {
    const struct wh_opts *o;
    struct rec *v;
    size_t n;
    struct wh_result *res;
    struct wh_progress *pg;
};

/* Read FILE ('-': stdin) into a NUL-terminated buffer. */
static int read_listing(const char *file, char **data, size_t *size)
{
    if (strcmp(file, "-") != 0)
        return weft_read_file(file, (void **)data, size);
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int err = -errno;
            free(buf);
            return err;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = 0;
    *data = buf;
    *size = len;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Whether the line [p, e) ends in ") = " + 16 hex digits; if so, *h is the hash. */
static bool ends_in_hash(const char *p, const char *e, uint64_t *h)
{
    if (e - p < 20 || memcmp(e - 20, ") = ", 4) != 0)
        return false;
    uint64_t v = 0;
    for (const char *q = e - 16; q < e; q++) {
        int d = hexval(*q);
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *h = v;
    return true;
}

static const char tag[] = "XXH3 (";
#define TAGLEN (sizeof(tag) - 1)

/* Parse the listing in place. Returns the number of malformed lines, or -ENOMEM. */
static long parse(const char *file, char *buf, size_t size, struct check *c)
{
    size_t cap = 0;
    long bad = 0;
    size_t line = 1;
    char *p = buf, *end = buf + size;
    while (p < end) {
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e)
            e = end;
        if (e == p) {  /* an empty line */
            p = e + 1;
            line++;
            continue;
        }
        size_t first = line;
        uint64_t want = 0;
        bool ok = false;
        char *le = e;
        if ((size_t)(e - p) >= TAGLEN && memcmp(p, tag, TAGLEN) == 0) {
            /* Extend over continuation lines until one ends in ") = HASH". */
            size_t extra = 0;
            for (;;) {
                if (le - p > (ptrdiff_t)(TAGLEN + 20) && ends_in_hash(p, le, &want)) {
                    ok = true;
                    break;
                }
                if (le >= end)
                    break;
                if ((size_t)(end - le - 1) >= TAGLEN && memcmp(le + 1, tag, TAGLEN) == 0)
                    break;  /* the next line starts a record of its own */
                char *ne = memchr(le + 1, '\n', (size_t)(end - le - 1));
                le = ne ? ne : end;
                extra++;
            }
            if (ok)
                line += extra;
        }
        if (!ok) {
            fprintf(stderr, WH_NAME ": %s:%zu: improperly formatted line\n", file, first);
            bad++;
            p = e + 1;
            line++;
            continue;
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 1024;
            struct rec *nv = realloc(c->v, cap * sizeof(*nv));
            if (!nv)
                return -ENOMEM;
            c->v = nv;
        }
        le[-20] = 0;  /* the ')' before " = HASH" ends the path */
        c->v[c->n++] = (struct rec){.path = p + TAGLEN, .want = want, .line = first};
        p = le + 1;
        line++;
    }
    return bad;
}

static int check_item(void *ctx, size_t i, void *slot)
{
    const struct check *c = ctx;
    wh_hash_file(c->v[i].path, false, c->o->serial, c->pg, slot);
    return 0;
}

static int check_task(void *arg)
{
    struct check *c = arg;
    if (c->o->serial) {
        for (size_t i = 0; i < c->n; i++)
            check_item(c, i, &c->res[i]);
        return 0;
    }
    return weft_par_collect(NULL, c->n, c->res, sizeof(*c->res), check_item, c);
}

static void plural(const char *one, const char *many, unsigned long long n,
                   const char *rest)
{
    if (n)
        fprintf(stderr, WH_NAME ": WARNING: %llu %s %s\n", n, n == 1 ? one : many, rest);
}

int wh_check(const struct wh_opts *o)
{
    uint64_t t0 = wh_now_ns();
    char *buf;
    size_t size;
    int err = read_listing(o->check, &buf, &size);
    if (err) {
        fprintf(stderr, WH_NAME ": %s: cannot read: %s\n", o->check, wh_strerror(err));
        return WH_FATAL;
    }
    struct wh_progress pg = {0};
    struct check c = {.o = o, .pg = o->progress ? &pg : NULL};
    long bad = parse(o->check, buf, size, &c);
    int status = WH_OK;
    if (bad < 0 || !(c.res = malloc((c.n ? c.n : 1) * sizeof(*c.res)))) {
        fprintf(stderr, WH_NAME ": %s\n", strerror(ENOMEM));
        status = WH_FATAL;
        goto out;
    }
    uint64_t t1 = wh_now_ns();
    pg.total = c.n;
    wh_progress_start(&pg, o->progress);
    wh_progress_phase("check");
    err = wh_run(o->serial, check_task, &c);
    wh_progress_stop();
    if (err) {
        fprintf(stderr, WH_NAME ": %s\n", wh_strerror(err));
        status = WH_FATAL;
        goto out;
    }
    uint64_t t2 = wh_now_ns();
    unsigned long long ok = 0, failed = 0, unreadable = 0, bytes = 0;
    for (size_t i = 0; i < c.n; i++) {
        const struct rec *r = &c.v[i];
        const struct wh_result *res = &c.res[i];
        if (res->err) {
            fflush(stdout);
            fprintf(stderr, WH_NAME ": %s:%zu: %s: cannot read: %s\n", o->check, r->line,
                    r->path, wh_strerror(res->err));
            printf("%s: FAILED open or read\n", r->path);
            unreadable++;
        } else if (res->hash != r->want) {
            printf("%s: FAILED\n", r->path);
            failed++;
        } else {
            if (!o->quiet)
                printf("%s: OK\n", r->path);
            ok++;
        }
        bytes += res->bytes;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, WH_NAME ": cannot write the output: %s\n", strerror(errno));
        status = WH_FATAL;
        goto out;
    }
    plural("line is", "lines are", (unsigned long long)bad, "improperly formatted");
    plural("listed file", "listed files", unreadable, "could not be read");
    plural("computed checksum", "computed checksums", failed, "did NOT match");
    if (c.n == 0 && bad == 0)
        fprintf(stderr, WH_NAME ": %s: no XXH3 lines found\n", o->check);
    if (bad || unreadable || failed || c.n == 0)
        status = WH_FAILED;
    if (o->summary) {
        uint64_t t3 = wh_now_ns();
        double el = (double)(t3 - t0) / 1e9, mib = (double)bytes / 1048576.0;
        unsigned workers = wh_workers();
        fprintf(stderr,
                WH_NAME ": checked %zu files (%llu OK), %.1f MiB in %.3f s: %.1f MiB/s "
                "(%s, %u worker%s)\n",
                c.n, ok, mib, el, el > 0 ? mib / el : 0.0, o->serial ? "serial" : "weft",
                workers, workers == 1 ? "" : "s");
        fprintf(stderr, WH_NAME ": parse %.3f s, hash %.3f s, print %.3f s\n",
                (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9, (double)(t3 - t2) / 1e9);
        fprintf(stderr,
                "RESULT weft-hash-check mode=%s workers=%u files=%zu ok=%llu failed=%llu "
                "unreadable=%llu malformed=%ld bytes=%llu elapsed_ns=%llu\n",
                o->serial ? "serial" : "weft", workers, c.n, ok, failed, unreadable, bad,
                bytes, (unsigned long long)(t3 - t0));
    }
out:
    free(c.v);
    free(c.res);
    free(buf);
    return status;
}
