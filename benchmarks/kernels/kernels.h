/* SPDX-License-Identifier: MIT */
/*
 * The kernels benchmark's shared pieces: the UTS-shaped tree (so that the C
 * versions and the oneTBB / OpenMP peers walk the same tree) and the peers'
 * interface. The fib peers are benchmarks/fib's (fib_peers.h).
 */
#ifndef WEFT_BENCH_KERNELS_H
#define WEFT_BENCH_KERNELS_H

#include <math.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A UTS-shaped tree (Olivas et al., "UTS: An Unbalanced Tree Search Benchmark",
 * LCPC 2006), our own version of its geometric trees: a node is a 64-bit id; its
 * number of children is drawn from a geometric distribution with mean UTS_MEAN using
 * a hash of its id (splitmix64's finaliser), and child i's id is the hash of the
 * parent's id and i. Nodes at depth `depth_max` are leaves; the root has UTS_ROOT
 * children. The shape is fixed by (root id, depth_max) alone, but it is irregular:
 * subtrees differ in size by orders of magnitude, so a static split would not
 * balance it.
 */
#define UTS_MEAN 4.0
#define UTS_ROOT 26
#define UTS_MAX_CHILDREN 64 /* a cap on the draw, part of the tree's definition */
#define UTS_ROOT_ID 0x5eed5eed5eedull

static inline uint64_t uts_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t uts_child_id(uint64_t id, int i)
{
    return uts_mix(id ^ uts_mix((uint64_t)i + 1));
}

static inline int uts_num_children(uint64_t id, int depth, int depth_max)
{
    if (depth == 0)
        return UTS_ROOT;
    if (depth >= depth_max)
        return 0;
    /* Geometric with success probability p = 1 / (1 + mean): floor(log(1-u)/log(1-p)). */
    double u = (double)(uts_mix(id) >> 11) * 0x1.0p-53;
    double k = floor(log(1.0 - u) / log(1.0 - 1.0 / (1.0 + UTS_MEAN)));
    return k >= UTS_MAX_CHILDREN ? UTS_MAX_CHILDREN : (int)k;
}

/* The peers: each returns the tree's node count, on `workers` threads, and stores
 * the wall time of the walk (runtime start-up excluded) in *ns. */
long uts_tbb(int depth_max, int workers, double *ns);
long uts_omp(int depth_max, int workers, double *ns);

/* knapsack's items (kernels.c draws them). */
struct item {
    int weight, value;
};

/* Lace peers (kernels_lace.c, with -Dlace=DIR): fib(n), and the best value of the
 * knapsack over items[0, n) with capacity c; wall time of the run in *ns. */
long fib_lace(int n, int workers, double *ns);
int knap_lace(const struct item *items, int n, int capacity, int workers, double *ns);

#ifdef __cplusplus
}
#endif
#endif
