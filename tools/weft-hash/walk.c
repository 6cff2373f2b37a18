/* SPDX-License-Identifier: MIT */
/*
 * Phase 1: find every regular file under the operands.
 *
 * Every directory is a task. The task that finds a subdirectory allocates a node for
 * it (its path, a link to the parent node), pushes the node on the walk's list of
 * nodes with one CAS, and spawns the task that will read it; the child writes what
 * it finds (file paths and errors) into its own node only. Nothing is shared per
 * file: the only contended word is the list head, touched once per directory, and
 * weft_scope_run's return orders every node's contents before the merge that
 * follows. Rejected: a lock-protected global vector (a lock per file) and per-worker
 * vectors (a task may resume on another worker once the reactor suspends it, so a
 * worker-indexed buffer is not safe to hold across an I/O call).
 *
 * Paths are built as find(1) prints them: operand + "/" + name, with no "/" added
 * when the parent path already ends in one. A node keeps its paths in one growing
 * arena, entries hold offsets into it until the merge turns them into pointers.
 *
 * Symbolic links: operands are followed (as find -H and xxhsum do); inside the trees
 * links are skipped unless -L, which follows them and then needs a loop check: each
 * directory opened under -L records its device and inode, and a link that leads to
 * the directory it sits in or to one of its ancestors is reported, not followed.
 *
 * --serial runs the same code with plain syscalls, directories taken from a stack.
 */
#define _GNU_SOURCE
#include "weft-hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <weft.h>

#define DENTS_BUF 32768

struct walk;

struct dirnode {
    struct dirnode *next;          /* every node of the walk (a Treiber stack) */
    struct dirnode *pending;       /* --serial: directories not read yet */
    const struct dirnode *parent;  /* ancestors, for the -L loop check */
    struct walk *w;
    char *path;                    /* this directory as printed; NULL for the root */
    size_t len;
    bool nofollow;                 /* open with O_NOFOLLOW */
    bool have_id;                  /* -L: dev and ino are set */
    uint32_t dev_major, dev_minor;
    uint64_t ino;
    /* What the directory's task found. path fields hold offsets into names. */
    struct wh_entry *ents;
    size_t n, cap;
    char *names;
    size_t nlen, ncap;
};

struct walk {
    const struct wh_opts *o;
    struct wh_progress *pg;
    weft_scope *s;                    /* NULL when serial */
    _Atomic(struct dirnode *) nodes;  /* every node, for the merge and for free() */
    struct dirnode *pending;          /* --serial */
    char *const *paths;
    size_t npaths;
};

static int io_open(const struct walk *w, const char *path, int flags)
{
    if (w->o->serial) {
        int fd = open(path, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
    return weft_open(path, flags, 0);
}

static int io_statx(const struct walk *w, int dirfd, const char *path, int flags,
                    struct statx *st)
{
    if (w->o->serial)
        return statx(dirfd, path, flags, STATX_TYPE | STATX_INO, st) < 0 ? -errno : 0;
    return weft_statx(dirfd, path, flags, STATX_TYPE | STATX_INO, st);
}

/* Append the path a[/b] to d's arena and an entry for it. b may be NULL: the entry is
 * a itself. */
static int push(struct dirnode *d, const char *a, size_t alen, const char *b,
                uint8_t what, int err, bool nofollow)
{
    size_t blen = b ? strlen(b) : 0;
    bool slash = b && alen > 0 && a[alen - 1] != '/';
    size_t need = alen + slash + blen + 1;
    if (d->nlen + need > d->ncap) {
        size_t ncap = d->ncap ? d->ncap * 2 : 1024;
        while (ncap < d->nlen + need)
            ncap *= 2;
        char *nn = realloc(d->names, ncap);
        if (!nn)
            return -ENOMEM;
        d->names = nn;
        d->ncap = ncap;
    }
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 16;
        struct wh_entry *ne = realloc(d->ents, ncap * sizeof(*ne));
        if (!ne)
            return -ENOMEM;
        d->ents = ne;
        d->cap = ncap;
    }
    char *p = d->names + d->nlen;
    memcpy(p, a, alen);
    if (slash)
        p[alen] = '/';
    if (blen)
        memcpy(p + alen + slash, b, blen);
    p[alen + slash + blen] = 0;
    d->ents[d->n++] = (struct wh_entry){
        .path = (const char *)(uintptr_t)d->nlen,
        .err = err,
        .what = what,
        .nofollow = nofollow,
    };
    d->nlen += need;
    return 0;
}

static void add_node(struct walk *w, struct dirnode *d)
{
    d->next = atomic_load_explicit(&w->nodes, memory_order_relaxed);
    /* Only atomicity is needed: the list is read after weft_scope_run returns, which
     * orders every task's writes before it. */
    while (!atomic_compare_exchange_weak_explicit(&w->nodes, &d->next, d,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

static int read_dir(struct walk *w, struct dirnode *d);

static int dir_task(void *arg)
{
    struct dirnode *d = arg;
    return read_dir(d->w, d);
}

/* A new directory to read: parent's path + "/" + name (or the operand itself when
 * parent is NULL). */
static int new_dir(struct walk *w, const struct dirnode *parent, const char *a,
                   size_t alen, const char *name, bool nofollow)
{
    struct dirnode *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    size_t blen = name ? strlen(name) : 0;
    bool slash = name && alen > 0 && a[alen - 1] != '/';
    d->path = malloc(alen + slash + blen + 1);
    if (!d->path) {
        free(d);
        return -ENOMEM;
    }
    memcpy(d->path, a, alen);
    if (slash)
        d->path[alen] = '/';
    if (blen)
        memcpy(d->path + alen + slash, name, blen);
    d->len = alen + slash + blen;
    d->path[d->len] = 0;
    d->parent = parent;
    d->w = w;
    d->nofollow = nofollow;
    add_node(w, d);  /* from here on the merge frees it, whether it runs or not */
    if (!w->s) {
        d->pending = w->pending;
        w->pending = d;
        return 0;
    }
    return weft_spawn(w->s, dir_task, d);
}

/* -L: whether (maj, min, ino) is d or one of its ancestors. */
static bool is_ancestor(const struct dirnode *d, const struct statx *st)
{
    for (; d; d = d->parent)
        if (d->have_id && d->ino == st->stx_ino && d->dev_major == st->stx_dev_major &&
            d->dev_minor == st->stx_dev_minor)
            return true;
    return false;
}

/* One directory entry. type is its d_type (DT_UNKNOWN when the file system does not
 * say). */
static int visit(struct walk *w, struct dirnode *d, int fd, const char *name,
                 unsigned char type, size_t *files)
{
    bool follow = w->o->follow;
    if (type == DT_UNKNOWN || (type == DT_LNK && follow)) {
        struct statx st;
        int err = io_statx(w, fd, name, follow ? 0 : AT_SYMLINK_NOFOLLOW, &st);
        if (err < 0)
            return push(d, d->path, d->len, name, type == DT_LNK ? WH_E_LINK : WH_E_ACCESS,
                        err, false);
        /* Under -L a directory reached through a link (also one the file system
         * reports as DT_UNKNOWN) may be an ancestor; without -L only a bind mount
         * could make it one, and this check does not run. */
        if (follow && S_ISDIR(st.stx_mode) && is_ancestor(d, &st))
            return push(d, d->path, d->len, name, WH_E_FSLOOP, 0, false);
        type = S_ISREG(st.stx_mode) ? DT_REG : S_ISDIR(st.stx_mode) ? DT_DIR
             : S_ISLNK(st.stx_mode) ? DT_LNK : DT_UNKNOWN;
    }
    if (type == DT_REG) {
        ++*files;
        return push(d, d->path, d->len, name, WH_FILE, 0, !follow);
    }
    if (type == DT_DIR)
        return new_dir(w, d, d->path, d->len, name, !follow);
    return 0;  /* links without -L, FIFOs, sockets, devices: not ours */
}

static int read_dir(struct walk *w, struct dirnode *d)
{
    int fd = io_open(w, d->path, O_RDONLY | O_DIRECTORY | O_NOCTTY |
                                 (d->nofollow ? O_NOFOLLOW : 0));
    if (fd < 0)
        return push(d, d->path, d->len, NULL, WH_E_OPENDIR, fd, false);
    int err = 0;
    if (w->o->follow) {
        struct statx st;
        err = io_statx(w, fd, "", AT_EMPTY_PATH, &st);
        if (err < 0) {
            err = push(d, d->path, d->len, NULL, WH_E_OPENDIR, err, false);
            goto out;
        }
        d->dev_major = st.stx_dev_major;
        d->dev_minor = st.stx_dev_minor;
        d->ino = st.stx_ino;
        d->have_id = true;
    }
    char *buf = malloc(DENTS_BUF);
    if (!buf) {
        err = -ENOMEM;
        goto out;
    }
    size_t files = 0;
    for (;;) {
        ssize_t n = getdents64(fd, buf, DENTS_BUF);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = push(d, d->path, d->len, NULL, WH_E_READDIR, -errno, false);
            break;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n && err == 0;) {
            struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
            off += e->d_reclen;
            const char *nm = e->d_name;
            if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0)))
                continue;
            err = visit(w, d, fd, nm, e->d_type, &files);
        }
        if (err)
            break;
    }
    free(buf);
    if (w->pg && files)
        atomic_fetch_add_explicit(&w->pg->found, files, memory_order_relaxed);
out:
    if (w->o->serial)
        close(fd);
    else
        weft_close(fd);
    return err;
}

/* The operands, on the calling thread; their directories become tasks. */
static int walk_operands(struct walk *w, struct dirnode *root)
{
    for (size_t i = 0; i < w->npaths; i++) {
        const char *p = w->paths[i];
        size_t len = strlen(p);
        struct statx st;
        int err = io_statx(w, AT_FDCWD, p, 0, &st);
        if (err < 0)
            err = push(root, p, len, NULL, WH_E_ACCESS, err, false);
        else if (S_ISREG(st.stx_mode))
            err = push(root, p, len, NULL, WH_FILE, 0, false);
        else if (S_ISDIR(st.stx_mode))
            err = new_dir(w, NULL, p, len, NULL, false);
        else
            err = push(root, p, len, NULL, WH_E_TYPE, 0, false);
        if (err)
            return err;
    }
    return 0;
}

static int scope_body(weft_scope *s, void *arg)
{
    struct walk *w = arg;
    w->s = s;
    struct dirnode *root = atomic_load_explicit(&w->nodes, memory_order_relaxed);
    return walk_operands(w, root);
}

static int merge(struct walk *w, struct wh_list *out)
{
    struct dirnode *head = atomic_load_explicit(&w->nodes, memory_order_relaxed);
    size_t n = 0;
    for (struct dirnode *d = head; d; d = d->next)
        n += d->n;
    out->nodes = head;
    out->n = 0;
    out->v = malloc((n ? n : 1) * sizeof(*out->v));
    if (!out->v)
        return -ENOMEM;
    for (struct dirnode *d = head; d; d = d->next) {
        for (size_t i = 0; i < d->n; i++) {
            struct wh_entry e = d->ents[i];
            e.path = d->names + (uintptr_t)e.path;
            out->v[out->n++] = e;
        }
        free(d->ents);
        d->ents = NULL;
        d->n = d->cap = 0;
    }
    return 0;
}

int wh_walk(const struct wh_opts *o, char *const *paths, size_t npaths,
            struct wh_progress *pg, struct wh_list *out)
{
    struct walk w = {.o = o, .pg = pg, .paths = paths, .npaths = npaths};
    atomic_init(&w.nodes, NULL);
    memset(out, 0, sizeof(*out));
    /* The root node holds the operands that are files or errors. */
    struct dirnode *root = calloc(1, sizeof(*root));
    if (!root)
        return -ENOMEM;
    root->w = &w;
    add_node(&w, root);
    int err;
    if (o->serial) {
        err = walk_operands(&w, root);
        while (err == 0 && w.pending) {
            struct dirnode *d = w.pending;
            w.pending = d->pending;
            err = read_dir(&w, d);
        }
    } else {
        err = weft_scope_run(NULL, scope_body, &w);
    }
    int merr = merge(&w, out);
    return err ? err : merr;
}

void wh_list_free(struct wh_list *l)
{
    struct dirnode *d = l->nodes;
    while (d) {
        struct dirnode *next = d->next;
        free(d->ents);
        free(d->names);
        free(d->path);
        free(d);
        d = next;
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}
