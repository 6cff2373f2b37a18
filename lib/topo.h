/* SPDX-License-Identifier: MIT */
/* Topology: how many cores this process may use, where workers go, who is near. */
#ifndef WEFT_TOPO_H
#define WEFT_TOPO_H

#include <stdbool.h>

struct weft__topo {
    unsigned ncpus;        /* CPUs in this process's affinity mask */
    unsigned *cpus;        /* their OS indices, ascending */
    unsigned quota;        /* cgroup CPU quota rounded up; 0: none */
    unsigned *level;       /* ncpus x ncpus distance classes; smaller is nearer */
};

int  weft__topo_init(struct weft__topo *t);
void weft__topo_free(struct weft__topo *t);
/* Default worker count: the affinity mask, limited by the quota. At least 1. */
unsigned weft__topo_default_threads(const struct weft__topo *t);
/* Distance class between the CPUs that workers a and b map to (worker i maps to
 * cpus[i % ncpus]); smaller is nearer. */
unsigned weft__topo_distance(const struct weft__topo *t, unsigned a, unsigned b);
/* Parse a cgroup v2 cpu.max line ("max 100000" or "200000 100000"): CPUs rounded
 * up, or 0 for no limit / garbage. Exposed for tests. */
unsigned weft__parse_cpu_max(const char *line);
/* Pin the calling thread to the CPU worker i maps to. Returns 0 or -errno. */
int weft__topo_pin(const struct weft__topo *t, unsigned i);

#endif
