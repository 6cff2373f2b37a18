/* SPDX-License-Identifier: MIT */
#ifndef FIB_PEERS_H
#define FIB_PEERS_H
#ifdef __cplusplus
extern "C" {
#endif
/* Each returns fib(n) computed with every call forked, on `workers` threads, and
 * stores the wall time of the computation (excluding runtime start-up) in *ns. */
long fib_tbb(int n, int workers, double *ns);
long fib_omp(int n, int workers, double *ns);
#ifdef __cplusplus
}
#endif
#endif
