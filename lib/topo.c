/* SPDX-License-Identifier: MIT */
/*
 * Topology. The default worker count is what this process may really use: the CPUs
 * in its affinity mask (taskset, cpusets), further limited by a cgroup CPU quota
 * (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us; the tightest along
 * the path to the root), rounded up -- the way Go's runtime sizes GOMAXPROCS, so a
 * container limited to 2 CPUs gets 2 workers, not one per host core.
 * Steal order comes from hwloc when weft is built with it: two workers are as near as
 * the deepest object (core, L2, L3, package, NUMA node) that holds both their CPUs.
 * Without hwloc every other CPU is equally far.
 */
#define _GNU_SOURCE
#include "topo.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef WEFT_HAVE_HWLOC
#include <hwloc.h>
#endif

unsigned weft__parse_cpu_max(const char *line)
{
    char quota[32];
    unsigned long long period;
    if (sscanf(line, "%31s %llu", quota, &period) != 2 || period == 0)
        return 0;
    if (strcmp(quota, "max") == 0)
        return 0;
    char *end;
    unsigned long long q = strtoull(quota, &end, 10);
    if (*end || q == 0)
        return 0;
    unsigned long long n = (q + period - 1) / period;
    return n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

static bool read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    return ok;
}

static unsigned min_quota(unsigned a, unsigned b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

/* The CPU quota of this process's cgroup and its ancestors, or 0. */
static unsigned cgroup_quota(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return 0;
    char line[4096], path[4200], buf[128];
    unsigned q = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *ctrl = c1 + 1;
        char *cg = c2 + 1;
        bool v2 = *ctrl == 0;
        bool v1cpu = !v2 && (strstr(ctrl, "cpu,") || strcmp(ctrl, "cpu") == 0 ||
                             strstr(ctrl, ",cpu"));
        if (!v2 && !v1cpu)
            continue;
        /* Walk from the process's cgroup up to the root. */
        for (;;) {
            if (v2) {
                snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max",
                         strcmp(cg, "/") ? cg : "");
                if (read_line(path, buf, sizeof(buf)))
                    q = min_quota(q, weft__parse_cpu_max(buf));
            } else {
                static const char *const roots[] = {"/sys/fs/cgroup/cpu,cpuacct",
                                                    "/sys/fs/cgroup/cpu"};
                for (size_t r = 0; r < 2; r++) {
                    char pbuf[64];
                    snprintf(path, sizeof(path), "%s%s/cpu.cfs_quota_us", roots[r],
                             strcmp(cg, "/") ? cg : "");
                    if (!read_line(path, buf, sizeof(buf)))
                        continue;
                    long long quota = atoll(buf);
                    snprintf(path, sizeof(path), "%s%s/cpu.cfs_period_us", roots[r],
                             strcmp(cg, "/") ? cg : "");
                    if (quota > 0 && read_line(path, pbuf, sizeof(pbuf))) {
                        char l[96];
                        snprintf(l, sizeof(l), "%lld %s", quota, pbuf);
                        q = min_quota(q, weft__parse_cpu_max(l));
                    }
                    break;
                }
            }
            char *slash = strrchr(cg, '/');
            if (!slash || (slash == cg && cg[1] == 0))
                break;
            if (slash == cg)
                cg[1] = 0;
            else
                *slash = 0;
        }
    }
    fclose(f);
    return q;
}

#ifdef WEFT_HAVE_HWLOC
static void fill_levels(struct weft__topo *t)
{
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0)
        return;
    /* Only CPUs and caches matter here: skipping I/O devices, instruction caches
     * and misc objects makes the first pool cheaper to create. */
    hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_NONE);
    hwloc_topology_set_icache_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_NONE);
    hwloc_topology_set_type_filter(topo, HWLOC_OBJ_MISC, HWLOC_TYPE_FILTER_KEEP_NONE);
    if (hwloc_topology_load(topo) < 0) {
        hwloc_topology_destroy(topo);
        return;
    }
    int maxdepth = hwloc_topology_get_depth(topo);
    for (unsigned i = 0; i < t->ncpus; i++) {
        hwloc_obj_t a = hwloc_get_pu_obj_by_os_index(topo, t->cpus[i]);
        for (unsigned j = 0; j < t->ncpus; j++) {
            hwloc_obj_t b = hwloc_get_pu_obj_by_os_index(topo, t->cpus[j]);
            unsigned lvl = (unsigned)maxdepth;
            if (a && b) {
                /* Deeper common ancestor (core < L2 < L3 < package) = nearer. */
                hwloc_obj_t c = hwloc_get_common_ancestor_obj(topo, a, b);
                lvl = (unsigned)(maxdepth - (c ? c->depth : 0));
            }
            t->level[i * t->ncpus + j] = lvl;
        }
    }
    hwloc_topology_destroy(topo);
}
#else
static void fill_levels(struct weft__topo *t)
{
    (void)t; /* level[] stays "all equally far" */
}
#endif

int weft__topo_init(struct weft__topo *t)
{
    memset(t, 0, sizeof(*t));
    cpu_set_t set;
    CPU_ZERO(&set);
    unsigned n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    if (n == 0) {
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        n = 1;
    }
    t->cpus = calloc(n, sizeof(*t->cpus));
    t->level = calloc((size_t)n * n, sizeof(*t->level));
    if (!t->cpus || !t->level) {
        weft__topo_free(t);
        return -ENOMEM;
    }
    for (unsigned c = 0, k = 0; c < CPU_SETSIZE && k < n; c++)
        if (CPU_ISSET(c, &set))
            t->cpus[k++] = c;
    t->ncpus = n;
    for (unsigned i = 0; i < n * n; i++)
        t->level[i] = (i / n == i % n) ? 0 : 1;
    /* With two CPUs or fewer every worker has one kind of neighbour: the steal order
     * needs no topology, and loading hwloc's (~3 ms, ~150 files opened) is skipped. */
    if (n > 2)
        fill_levels(t);
    t->quota = cgroup_quota();
    return 0;
}

void weft__topo_free(struct weft__topo *t)
{
    free(t->cpus);
    free(t->level);
    t->cpus = NULL;
    t->level = NULL;
}

unsigned weft__topo_default_threads(const struct weft__topo *t)
{
    unsigned n = t->ncpus ? t->ncpus : 1;
    if (t->quota && t->quota < n)
        n = t->quota;
    return n;
}

unsigned weft__topo_distance(const struct weft__topo *t, unsigned a, unsigned b)
{
    return t->level[(a % t->ncpus) * t->ncpus + (b % t->ncpus)];
}

int weft__topo_pin(const struct weft__topo *t, unsigned i)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(t->cpus[i % t->ncpus], &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}
